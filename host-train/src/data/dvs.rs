//! CIFAR10-DVS (Li et al. 2017) as distributed: one folder per class (`airplane/`, …, `truck/`)
//! of AEDAT files (`cifar10_airplane_0.aedat`, …), 128×128 polarity events ([`super::aedat`]).
//!
//! Each sample is read and integrated in the loader's workers: `T` frames by event count
//! (SpikingJelly `split_by='number'`), 2 polarity channels, each plane resized 128 → `size`
//! (48 in the paper) with the antialiased bilinear filter of [`super::image`] (event counts,
//! not rounded). Frames are used as counts: the loader does not normalise them.
//!
//! Classes: the class folders in sorted order (the CIFAR-10 order for the official names).
//! Split, deterministic and stated: within each class the files are ordered by the number in
//! their name (`…_7.aedat` before `…_10.aedat`); the first 90 % (rounded down) are the training
//! split, the rest the test split — SpikingJelly's `split_to_train_test_set(0.9, …,
//! random_split=False)`.

use std::path::{Path, PathBuf};

use super::{aedat, image, DataError, RawSample, SampleShape, SampleSource, Split, MAX_CLASSES};

/// Sensor side of the DVS128.
pub const SENSOR: usize = 128;

/// Largest event file read (the official files are a few MB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The CIFAR10-DVS files of one split.
#[derive(Debug, Clone)]
pub struct CifarDvs {
    files: Vec<PathBuf>,
    labels: Vec<u16>,
    classes: Vec<String>,
    frames: usize,
    size: usize,
}

/// The number in a file name's stem after its last `_` (files without one sort first).
fn file_number(p: &Path) -> (u64, String) {
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let n = stem
        .rsplit('_')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    (n, stem.to_owned())
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: dir.to_path_buf(),
                also_tried_gz: false,
            }
        } else {
            DataError::Read {
                path: dir.to_path_buf(),
                source,
            }
        }
    })?;
    let mut out = Vec::new();
    for e in rd {
        out.push(
            e.map_err(|source| DataError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path(),
        );
    }
    out.sort();
    Ok(out)
}

impl CifarDvs {
    /// Lists `root`'s class folders and picks `split`'s files; `frames` = T, `size` = output
    /// side (48).
    pub fn new(root: &Path, split: Split, frames: usize, size: usize) -> Result<Self, DataError> {
        if !(1..=1024).contains(&frames) || !(1..=1024).contains(&size) {
            return Err(DataError::InvalidConfig(format!(
                "CIFAR10-DVS with {frames} frames of {size}x{size}"
            )));
        }
        let class_dirs: Vec<PathBuf> = list(root)?.into_iter().filter(|p| p.is_dir()).collect();
        if class_dirs.is_empty() || class_dirs.len() > MAX_CLASSES {
            return Err(DataError::Format {
                path: root.to_path_buf(),
                reason: format!("{} class folders", class_dirs.len()),
            });
        }
        let (mut files, mut labels, mut classes) = (Vec::new(), Vec::new(), Vec::new());
        for (k, d) in class_dirs.iter().enumerate() {
            let mut f: Vec<PathBuf> = list(d)?
                .into_iter()
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "aedat"))
                .collect();
            if f.is_empty() {
                return Err(DataError::Format {
                    path: d.clone(),
                    reason: "no .aedat files".into(),
                });
            }
            f.sort_by_key(|p| file_number(p));
            let n_train = f.len() * 9 / 10;
            let chosen = match split {
                Split::Train => &f[..n_train],
                Split::Test => &f[n_train..],
            };
            labels.extend(std::iter::repeat_n(k as u16, chosen.len()));
            files.extend_from_slice(chosen);
            classes.push(
                d.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("?")
                    .to_owned(),
            );
        }
        Ok(CifarDvs {
            files,
            labels,
            classes,
            frames,
            size,
        })
    }

    /// The files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Reads and integrates one file into `[T][2][size][size]`.
    pub fn frames_of(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        let bytes = super::read_bounded(path, MAX_FILE_BYTES)?;
        let events = aedat::parse_events(&bytes, SENSOR as u16, SENSOR as u16, path)?;
        let full = aedat::integrate_by_count(&events, self.frames, SENSOR, SENSOR);
        let plane = SENSOR * SENSOR;
        let mut out = Vec::with_capacity(self.frames * 2 * self.size * self.size);
        for p in full.chunks_exact(plane) {
            out.extend(image::resize_plane_f32(
                p, SENSOR, SENSOR, self.size, self.size,
            ));
        }
        Ok(out)
    }
}

impl SampleSource for CifarDvs {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn shape(&self) -> SampleShape {
        SampleShape {
            channels: 2,
            height: self.size,
            width: self.size,
            frames: self.frames,
            classes: self.classes.len(),
        }
    }

    fn label(&self, i: usize) -> Option<u16> {
        self.labels.get(i).copied()
    }

    fn load(&self, i: usize) -> Result<RawSample, DataError> {
        let path = self.files.get(i).ok_or_else(|| {
            DataError::InvalidDataset(format!("sample {i} of {}", self.files.len()))
        })?;
        Ok(RawSample::Frames(self.frames_of(path)?))
    }

    fn class_names(&self) -> Option<&[String]> {
        Some(&self.classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::aedat::fixture;
    use crate::data::{AugmentConfig, BatchLoader, LoaderConfig, Normalization};
    use std::sync::Arc;

    fn tree(root: &Path, per_class: usize) {
        for (k, c) in ["airplane", "automobile", "bird"].iter().enumerate() {
            let d = root.join(c);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..per_class {
                let ev = fixture::events(200 + 10 * i, (k * 100 + i) as u64);
                std::fs::write(
                    d.join(format!("cifar10_{c}_{i}.aedat")),
                    fixture::aedat31(&ev, 50),
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn split_is_90_10_per_class_by_file_number_and_frames_keep_the_events() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 12);
        let train = CifarDvs::new(dir.path(), Split::Train, 4, 48).unwrap();
        let test = CifarDvs::new(dir.path(), Split::Test, 4, 48).unwrap();
        assert_eq!((train.len(), test.len()), (30, 6));
        // Numeric order: _0 … _9, _10 train; _11 … test (10 of 12 → 10 train, 2 test).
        assert!(train.files()[9].ends_with("airplane/cifar10_airplane_9.aedat"));
        assert!(train.files()[10].ends_with("automobile/cifar10_automobile_0.aedat"));
        assert!(test.files()[0].ends_with("airplane/cifar10_airplane_10.aedat"));
        assert_eq!(
            test.class_names().unwrap(),
            ["airplane", "automobile", "bird"]
        );
        let f = train.frames_of(&train.files()[0]).unwrap();
        assert_eq!(f.len(), 4 * 2 * 48 * 48);
        // Resizing keeps the event mass up to the filter's edge normalisation.
        let total: f32 = f.iter().sum();
        assert!(
            (total - 200.0 * (48.0 * 48.0) / (128.0 * 128.0)).abs() < 5.0,
            "{total}"
        );
    }

    #[test]
    fn dvs_batches_are_time_major_and_thread_independent() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), 3);
        let src: Arc<dyn SampleSource> =
            Arc::new(CifarDvs::new(dir.path(), Split::Train, 3, 16).unwrap());
        let cfg = |workers| LoaderConfig {
            workers,
            augment: AugmentConfig::dvs(),
            ..LoaderConfig::new(2, 4, Normalization::UNIT)
        };
        let run = |w| -> Vec<crate::data::Batch> {
            BatchLoader::from_source(src.clone(), cfg(w))
                .unwrap()
                .epoch(1)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let one = run(1);
        assert_eq!(one.len(), 3);
        let b = &one[0];
        assert_eq!((b.frames, b.channels, b.height), (3, 2, 16));
        assert_eq!(b.images.len(), 3 * 2 * 2 * 16 * 16);
        assert_eq!(b.frame(2).unwrap().len(), 2 * 2 * 16 * 16);
        assert!(b.frame(3).is_none());
        assert!(b.soft_targets.is_some());
        assert_eq!(run(2), one);
    }

    #[test]
    fn bad_trees_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(CifarDvs::new(dir.path(), Split::Train, 10, 48).is_err());
        tree(dir.path(), 2);
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let err = CifarDvs::new(dir.path(), Split::Train, 10, 48).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::remove_dir(dir.path().join("empty")).unwrap();
        let ds = CifarDvs::new(dir.path(), Split::Test, 10, 48).unwrap();
        let victim = ds.files()[0].clone();
        let bytes = std::fs::read(&victim).unwrap();
        std::fs::write(&victim, &bytes[..bytes.len() - 5]).unwrap();
        let err = ds.load(0).unwrap_err();
        assert!(
            err.to_string().contains(&victim.display().to_string()),
            "{err}"
        );
    }
}
