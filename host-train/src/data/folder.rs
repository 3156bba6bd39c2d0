//! Tiny-ImageNet and ImageNet-1k as distributed: folders of JPEG (or PNG) files, listed once and
//! decoded lazily in the loader's workers (ImageNet does not fit in memory).
//!
//! Class order is the sorted list of WordNet ids (what torchvision's `ImageFolder` does), so
//! label `k` is the `k`-th wnid in byte order.
//!
//! Tiny-ImageNet (`tiny-imagenet-200/`, or its parent): `wnids.txt` (200 ids),
//! `train/<wnid>/images/*.JPEG`, `val/images/*.JPEG` with `val/val_annotations.txt` (tab-separated
//! `file wnid x0 y0 x1 y1`). The unlabelled `test/` is not used: [`Split::Test`] is `val`.
//!
//! ImageNet-1k (the folder holding `train/` and `val/`): `train/<wnid>/*.JPEG`; `val/` either as
//! class folders `val/<wnid>/*.JPEG`, or flat `val/*.JPEG` with a labels file: `LOC_val_solution.csv`
//! (Kaggle: `ImageId,<wnid> …` after a header line) or `val_labels.txt` (`<file> <wnid>` a line,
//! space-, tab- or comma-separated), looked for in the root and in `val/`; file names match with or
//! without their extension.
//!
//! Every sample is fitted to `size × size` by the loader ([`super::AugmentConfig::fit`]):
//! RandomResizedCrop when on, else resize + centre crop.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{image, DataError, RawSample, SampleShape, SampleSource, Split, MAX_CLASSES};

/// A labelled list of image files.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    files: Vec<PathBuf>,
    labels: Vec<u16>,
    wnids: Vec<String>,
    size: usize,
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = fs::read_dir(dir).map_err(|source| {
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
    for e in entries {
        let e = e.map_err(|source| DataError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpeg" | "jpg" | "png"))
        && p.is_file()
}

fn images_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| is_image(p))
        .collect())
}

/// A small text file (at most 64 MiB, which ImageNet's label files are far below).
fn read_text(path: &Path) -> Result<String, DataError> {
    let f = fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
                also_tried_gz: false,
            }
        } else {
            DataError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let mut s = String::new();
    f.take(64 << 20)
        .read_to_string(&mut s)
        .map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(s)
}

fn format_error(path: &Path, reason: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason,
    }
}

impl ImageFolder {
    /// Builds a source from files and labels (labels index `wnids`).
    pub fn new(
        files: Vec<PathBuf>,
        labels: Vec<u16>,
        wnids: Vec<String>,
        size: usize,
        root: &Path,
    ) -> Result<Self, DataError> {
        if wnids.is_empty() || wnids.len() > MAX_CLASSES {
            return Err(format_error(root, format!("{} classes", wnids.len())));
        }
        if size == 0 || size > 4096 {
            return Err(DataError::InvalidConfig(format!("image size {size}")));
        }
        if files.len() != labels.len() || labels.iter().any(|&l| usize::from(l) >= wnids.len()) {
            return Err(format_error(root, "inconsistent file list".into()));
        }
        if files.is_empty() {
            return Err(format_error(root, "no images".into()));
        }
        Ok(ImageFolder {
            files,
            labels,
            wnids,
            size,
        })
    }

    /// The files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The labels.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// The sorted wnids (label order).
    pub fn wnids(&self) -> &[String] {
        &self.wnids
    }

    /// Tiny-ImageNet from `root` (`tiny-imagenet-200/` or its parent).
    pub fn tiny_imagenet(root: &Path, split: Split, size: usize) -> Result<Self, DataError> {
        let root = if root.join("wnids.txt").is_file() {
            root.to_path_buf()
        } else {
            root.join("tiny-imagenet-200")
        };
        let wnids_path = root.join("wnids.txt");
        let mut wnids: Vec<String> = read_text(&wnids_path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        wnids.sort();
        let n = wnids.len();
        wnids.dedup();
        if wnids.len() != n {
            return Err(format_error(&wnids_path, "a wnid is listed twice".into()));
        }
        let index: HashMap<&str, u16> = wnids
            .iter()
            .enumerate()
            .map(|(i, w)| (w.as_str(), i as u16))
            .collect();
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        match split {
            Split::Train => {
                for (k, w) in wnids.iter().enumerate() {
                    let found = images_in(&root.join("train").join(w).join("images"))?;
                    labels.extend(std::iter::repeat_n(k as u16, found.len()));
                    files.extend(found);
                }
            }
            Split::Test => {
                let ann = root.join("val").join("val_annotations.txt");
                for (line_no, line) in read_text(&ann)?.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let mut parts = line.split('\t');
                    let (Some(file), Some(wnid)) = (parts.next(), parts.next()) else {
                        return Err(format_error(
                            &ann,
                            format!("line {}: expected `file<TAB>wnid …`", line_no + 1),
                        ));
                    };
                    let &label = index.get(wnid).ok_or_else(|| {
                        format_error(
                            &ann,
                            format!(
                                "line {}: wnid {wnid:?} is not in {}",
                                line_no + 1,
                                wnids_path.display()
                            ),
                        )
                    })?;
                    let path = root.join("val").join("images").join(file);
                    if !path.is_file() {
                        return Err(format_error(
                            &ann,
                            format!("line {}: {} does not exist", line_no + 1, path.display()),
                        ));
                    }
                    files.push(path);
                    labels.push(label);
                }
            }
        }
        Self::new(files, labels, wnids, size, &root)
    }

    /// ImageNet-1k from `root` (the folder with `train/` and `val/`).
    pub fn imagenet(root: &Path, split: Split, size: usize) -> Result<Self, DataError> {
        let train = root.join("train");
        let wnids: Vec<String> = read_dir_sorted(&train)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect();
        if wnids.is_empty() {
            return Err(format_error(&train, "no class folders".into()));
        }
        let (mut files, mut labels) = (Vec::new(), Vec::new());
        let val = root.join("val");
        match split {
            Split::Train => {
                for (k, w) in wnids.iter().enumerate() {
                    let found = images_in(&train.join(w))?;
                    labels.extend(std::iter::repeat_n(k as u16, found.len()));
                    files.extend(found);
                }
            }
            Split::Test if wnids.iter().any(|w| val.join(w).is_dir()) => {
                for (k, w) in wnids.iter().enumerate() {
                    let d = val.join(w);
                    if d.is_dir() {
                        let found = images_in(&d)?;
                        labels.extend(std::iter::repeat_n(k as u16, found.len()));
                        files.extend(found);
                    }
                }
                if let Some(extra) = read_dir_sorted(&val)?
                    .into_iter()
                    .find(|p| p.is_dir() && !wnids.iter().any(|w| p.ends_with(w)))
                {
                    return Err(format_error(
                        &extra,
                        format!(
                            "a validation class folder with no training folder in {}",
                            train.display()
                        ),
                    ));
                }
            }
            Split::Test => {
                let labels_file = [
                    root.join("LOC_val_solution.csv"),
                    val.join("LOC_val_solution.csv"),
                    root.join("val_labels.txt"),
                    val.join("val_labels.txt"),
                ]
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format_error(
                        &val,
                        "flat validation folder without a labels file (LOC_val_solution.csv or val_labels.txt in the root or val/)".into(),
                    )
                })?;
                let index: HashMap<&str, u16> = wnids
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.as_str(), i as u16))
                    .collect();
                let by_stem: HashMap<String, PathBuf> = images_in(&val)?
                    .into_iter()
                    .filter_map(|p| {
                        let stem = p.file_stem()?.to_str()?.to_owned();
                        Some((stem, p))
                    })
                    .collect();
                let csv = labels_file.extension().is_some_and(|e| e == "csv");
                let mut rows: Vec<(PathBuf, u16)> = Vec::new();
                for (line_no, line) in read_text(&labels_file)?.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || (csv && line_no == 0 && line.starts_with("ImageId")) {
                        continue;
                    }
                    let mut parts = line.split([',', '\t', ' ']).filter(|s| !s.is_empty());
                    let (Some(file), Some(wnid)) = (parts.next(), parts.next()) else {
                        return Err(format_error(
                            &labels_file,
                            format!("line {}: expected `<file> <wnid>`", line_no + 1),
                        ));
                    };
                    let stem = Path::new(file)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or(file);
                    let &label = index.get(wnid).ok_or_else(|| {
                        format_error(
                            &labels_file,
                            format!(
                                "line {}: wnid {wnid:?} has no folder in {}",
                                line_no + 1,
                                train.display()
                            ),
                        )
                    })?;
                    let path = by_stem.get(stem).ok_or_else(|| {
                        format_error(
                            &labels_file,
                            format!(
                                "line {}: no image {file:?} in {}",
                                line_no + 1,
                                val.display()
                            ),
                        )
                    })?;
                    rows.push((path.clone(), label));
                }
                // Sample order = file name order, whatever the labels file's order.
                rows.sort();
                for (p, l) in rows {
                    files.push(p);
                    labels.push(l);
                }
            }
        }
        Self::new(files, labels, wnids, size, root)
    }
}

impl SampleSource for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn shape(&self) -> SampleShape {
        SampleShape {
            channels: 3,
            height: self.size,
            width: self.size,
            frames: 1,
            classes: self.wnids.len(),
        }
    }

    fn label(&self, i: usize) -> Option<u16> {
        self.labels.get(i).copied()
    }

    fn load(&self, i: usize) -> Result<RawSample, DataError> {
        let path = self.files.get(i).ok_or_else(|| {
            DataError::InvalidDataset(format!("sample {i} of {}", self.files.len()))
        })?;
        Ok(RawSample::Image(image::decode_file(path, 3)?))
    }

    fn class_names(&self) -> Option<&[String]> {
        Some(&self.wnids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{AugmentConfig, BatchLoader, ChannelNorm, LoaderConfig};
    use std::sync::Arc;

    fn jpeg(w: u16, h: u16, shade: u8) -> Vec<u8> {
        let rgb: Vec<u8> = (0..w as usize * h as usize)
            .flat_map(|i| [shade, (i % 200) as u8, 255 - shade])
            .collect();
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 90)
            .encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let px: Vec<u8> = (0..w * h * 3).map(|i| (i % 256) as u8).collect();
            enc.write_header().unwrap().write_image_data(&px).unwrap();
        }
        out
    }

    /// A Tiny-ImageNet tree: 3 classes (listed unsorted), 2 training images each, 3 val images.
    fn tiny_tree(root: &Path) -> PathBuf {
        let t = root.join("tiny-imagenet-200");
        let wnids = ["n02", "n01", "n03"];
        fs::create_dir_all(t.join("val/images")).unwrap();
        fs::write(t.join("wnids.txt"), wnids.join("\n") + "\n").unwrap();
        for (k, w) in wnids.iter().enumerate() {
            let d = t.join("train").join(w).join("images");
            fs::create_dir_all(&d).unwrap();
            for j in 0..2 {
                fs::write(
                    d.join(format!("{w}_{j}.JPEG")),
                    jpeg(64, 64, (40 * k + j) as u8),
                )
                .unwrap();
            }
        }
        let mut ann = String::new();
        for (j, w) in ["n03", "n01", "n02"].iter().enumerate() {
            fs::write(t.join(format!("val/images/val_{j}.JPEG")), jpeg(64, 64, 9)).unwrap();
            ann += &format!("val_{j}.JPEG\t{w}\t0\t0\t10\t10\n");
        }
        fs::write(t.join("val/val_annotations.txt"), ann).unwrap();
        t
    }

    #[test]
    fn tiny_imagenet_lists_sorted_classes_and_loads_batches() {
        let dir = tempfile::tempdir().unwrap();
        let t = tiny_tree(dir.path());
        let train = ImageFolder::tiny_imagenet(dir.path(), Split::Train, 64).unwrap();
        assert_eq!(train.wnids(), ["n01", "n02", "n03"]);
        assert_eq!(train.len(), 6);
        assert_eq!(train.labels(), &[0, 0, 1, 1, 2, 2]);
        assert!(train.files()[0].ends_with("train/n01/images/n01_0.JPEG"));
        let val = ImageFolder::tiny_imagenet(&t, Split::Test, 64).unwrap();
        assert_eq!(val.labels(), &[2, 0, 1]);
        // Through the loader: RandomResizedCrop + policy to 32×32, deterministic per worker count.
        let src: Arc<dyn SampleSource> = Arc::new(train);
        let cfg = |workers| LoaderConfig {
            workers,
            augment: AugmentConfig::tiny_imagenet(),
            ..LoaderConfig::new(4, 1, ChannelNorm::IMAGENET)
        };
        let run = |workers| -> Vec<crate::data::Batch> {
            BatchLoader::from_source(src.clone(), cfg(workers))
                .unwrap()
                .epoch(0)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let one = run(1);
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].shape(), [4, 3, 64, 64]);
        assert_eq!(one[0].classes, 3);
        assert_eq!(run(3), one);
    }

    #[test]
    fn tiny_imagenet_bad_trees_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let t = tiny_tree(dir.path());
        // Unknown wnid in the annotations.
        let ann = t.join("val/val_annotations.txt");
        fs::write(&ann, "val_0.JPEG\tn99\t0\t0\t1\t1\n").unwrap();
        let err = ImageFolder::tiny_imagenet(&t, Split::Test, 64).unwrap_err();
        assert!(
            err.to_string().contains(&ann.display().to_string()) && err.to_string().contains("n99"),
            "{err}"
        );
        fs::write(&ann, "just-one-field\n").unwrap();
        assert!(ImageFolder::tiny_imagenet(&t, Split::Test, 64).is_err());
        // A missing class folder.
        fs::remove_dir_all(t.join("train/n02")).unwrap();
        let err = ImageFolder::tiny_imagenet(&t, Split::Train, 64).unwrap_err();
        assert!(err.to_string().contains("n02"), "{err}");
        // No wnids.txt at all.
        let err =
            ImageFolder::tiny_imagenet(&dir.path().join("nowhere"), Split::Train, 64).unwrap_err();
        assert!(err.to_string().contains("wnids.txt"), "{err}");
    }

    #[test]
    fn imagenet_val_as_folders_or_flat_with_labels_and_a_corrupt_image() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for (k, w) in ["n0002", "n0001"].iter().enumerate() {
            let d = r.join("train").join(w);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("a.JPEG"), jpeg(40 + 10 * k as u16, 30, 50)).unwrap();
            fs::write(d.join("b.png"), png(20, 33)).unwrap();
            fs::write(d.join("notes.txt"), "not an image").unwrap();
        }
        // Flat val with a Kaggle-style labels file (listed out of order).
        fs::create_dir_all(r.join("val")).unwrap();
        fs::write(r.join("val/ILSVRC2012_val_00000002.JPEG"), jpeg(50, 60, 1)).unwrap();
        fs::write(r.join("val/ILSVRC2012_val_00000001.JPEG"), jpeg(70, 30, 2)).unwrap();
        fs::write(
            r.join("LOC_val_solution.csv"),
            "ImageId,PredictionString\nILSVRC2012_val_00000002,n0001 1 2 3 4\nILSVRC2012_val_00000001,n0002 5 6 7 8\n",
        )
        .unwrap();
        let train = ImageFolder::imagenet(r, Split::Train, 24).unwrap();
        assert_eq!(train.wnids(), ["n0001", "n0002"]);
        assert_eq!(train.labels(), &[0, 0, 1, 1]);
        let val = ImageFolder::imagenet(r, Split::Test, 24).unwrap();
        assert_eq!(val.labels(), &[1, 0]);
        // Evaluation geometry: any size in, 24×24 out.
        let loader = BatchLoader::from_source(
            Arc::new(val),
            LoaderConfig::new(2, 0, ChannelNorm::IMAGENET),
        )
        .unwrap();
        let b = loader.make_batch(0, 0).unwrap();
        assert_eq!(b.shape(), [2, 3, 24, 24]);
        // Class folders win over the flat files.
        fs::create_dir_all(r.join("val/n0002")).unwrap();
        fs::write(r.join("val/n0002/x.JPEG"), jpeg(30, 30, 3)).unwrap();
        let val = ImageFolder::imagenet(r, Split::Test, 24).unwrap();
        assert_eq!(val.labels(), &[1]);
        // A corrupt training image: the loader's epoch ends with an error naming it.
        let bad = r.join("train/n0001/a.JPEG");
        fs::write(&bad, b"\xff\xd8garbage").unwrap();
        let loader = BatchLoader::from_source(
            Arc::new(ImageFolder::imagenet(r, Split::Train, 24).unwrap()),
            LoaderConfig {
                shuffle: false,
                workers: 2,
                ..LoaderConfig::new(1, 0, ChannelNorm::IMAGENET)
            },
        )
        .unwrap();
        let results: Vec<_> = loader.epoch(0).unwrap().collect();
        assert_eq!(results.len(), 1, "the epoch stops at the first error");
        let err = results.into_iter().next().unwrap().unwrap_err();
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
        // Flat val whose labels name a missing image.
        fs::remove_dir_all(r.join("val/n0002")).unwrap();
        fs::write(
            r.join("LOC_val_solution.csv"),
            "ImageId,PredictionString\nmissing,n0001 1\n",
        )
        .unwrap();
        let err = ImageFolder::imagenet(r, Split::Test, 24).unwrap_err();
        assert!(err.to_string().contains("LOC_val_solution.csv"), "{err}");
    }
}
