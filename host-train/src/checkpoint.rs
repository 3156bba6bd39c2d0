//! Checkpoints: named `f32` tensors with shapes plus a string metadata map, stored as a
//! safetensors file and written atomically.
//!
//! * Save: the whole file is serialised in memory, written to a fresh temporary file in the
//!   target's directory (`.<name>.tmp.<pid>.<n>`), `fsync`ed, renamed over the target, and the
//!   directory is `fsync`ed (best effort). A failure at any point removes the temporary file and
//!   leaves the previous checkpoint untouched.
//! * Load: the safetensors header is validated by the `safetensors` crate (lengths, offsets,
//!   overlaps); every tensor must be `F32` ([`CheckpointError::WrongDtype`] names it otherwise).
//!   [`Checkpoint::validate_tensors`] / [`Checkpoint::load_expected`] then check the set of names
//!   and the shapes against what the model expects, naming the offending tensor.
//!
//! Conventional metadata keys are the `META_*` constants; optimiser state goes in under a prefix
//! with [`Checkpoint::insert_optimizer_state`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::optim::OptimizerState;

/// Metadata key: epochs completed.
pub const META_EPOCH: &str = "epoch";
/// Metadata key: optimiser steps completed.
pub const META_STEP: &str = "step";
/// Metadata key: run seed.
pub const META_SEED: &str = "seed";
/// Metadata key: the training config as JSON.
pub const META_CONFIG: &str = "config";
/// Metadata key: RNG state (see [`crate::rng::RngState`]'s text form).
pub const META_RNG: &str = "rng";

/// Errors of this module; every tensor-level variant names the tensor, every file-level one the
/// file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading, writing, syncing or renaming failed.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid safetensors file (truncated, garbage header, bad offsets…).
    #[error("{}: not a valid safetensors checkpoint: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// Serialising failed (e.g. the header would be too large).
    #[error("cannot encode checkpoint: {0}")]
    Encode(String),
    /// A tensor name that cannot be stored (empty, or the reserved `__metadata__`).
    #[error("tensor name {0:?} is not allowed")]
    InvalidName(String),
    /// A tensor whose shape does not match its data length.
    #[error("tensor {name:?}: shape {shape:?} does not hold {len} values")]
    ShapeDataMismatch {
        /// Tensor name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its data length.
        len: usize,
    },
    /// A stored tensor is not `F32`.
    #[error("tensor {name:?}: dtype {dtype}, expected F32")]
    WrongDtype {
        /// Tensor name.
        name: String,
        /// Dtype found.
        dtype: String,
    },
    /// An expected tensor is absent.
    #[error("tensor {name:?} is missing from the checkpoint")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },
    /// The checkpoint holds a tensor nobody expects.
    #[error("unexpected tensor {name:?} in the checkpoint")]
    UnexpectedTensor {
        /// Tensor name.
        name: String,
    },
    /// A tensor's shape differs from the expected one.
    #[error("tensor {name:?}: shape {found:?}, expected {expected:?}")]
    WrongShape {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A metadata key is absent.
    #[error("metadata key {key:?} is missing")]
    MissingMetadata {
        /// Key.
        key: String,
    },
    /// A metadata value does not parse.
    #[error("metadata {key:?} = {value:?}: {reason}")]
    BadMetadata {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// A dense `f32` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions (empty = scalar).
    pub shape: Vec<usize>,
    /// Row-major values; length = product of `shape`.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A 1-D tensor.
    pub fn vector(data: Vec<f32>) -> Self {
        Tensor {
            shape: vec![data.len()],
            data,
        }
    }
}

/// A set of named tensors plus string metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Metadata (epoch, step, seed, config JSON, RNG state, …).
    pub metadata: BTreeMap<String, String>,
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn check_entry(name: &str, tensor: &Tensor) -> Result<(), CheckpointError> {
    if name.is_empty() || name == "__metadata__" {
        return Err(CheckpointError::InvalidName(name.into()));
    }
    if numel(&tensor.shape) != Some(tensor.data.len()) {
        return Err(CheckpointError::ShapeDataMismatch {
            name: name.into(),
            shape: tensor.shape.clone(),
            len: tensor.data.len(),
        });
    }
    Ok(())
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a tensor, checking that `shape` holds `data.len()` values.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<(), CheckpointError> {
        let name = name.into();
        let tensor = Tensor { shape, data };
        check_entry(&name, &tensor)?;
        self.tensors.insert(name, tensor);
        Ok(())
    }

    /// Sets a metadata entry.
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl ToString) {
        self.metadata.insert(key.into(), value.to_string());
    }

    /// A metadata entry.
    pub fn meta(&self, key: &str) -> Result<&str, CheckpointError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckpointError::MissingMetadata { key: key.into() })
    }

    /// A metadata entry parsed as `u64`.
    pub fn meta_u64(&self, key: &str) -> Result<u64, CheckpointError> {
        let value = self.meta(key)?;
        value.parse().map_err(|e| CheckpointError::BadMetadata {
            key: key.into(),
            value: value.into(),
            reason: format!("not an unsigned integer: {e}"),
        })
    }

    /// Removes and returns tensor `name`'s data after checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let found = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor { name: name.into() })?;
        if found.shape != shape {
            return Err(CheckpointError::WrongShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: found.shape.clone(),
            });
        }
        Ok(self
            .tensors
            .remove(name)
            .map(|t| t.data)
            .unwrap_or_default())
    }

    /// Checks that the tensors are exactly `expected` (name, shape): a missing tensor, then a
    /// wrong shape (both in `expected` order), then an unexpected tensor is reported.
    pub fn validate_tensors<'a>(
        &self,
        expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<(), CheckpointError> {
        let mut names = BTreeSet::new();
        for (name, shape) in expected {
            let found = self
                .tensors
                .get(name)
                .ok_or_else(|| CheckpointError::MissingTensor { name: name.into() })?;
            if found.shape != shape {
                return Err(CheckpointError::WrongShape {
                    name: name.into(),
                    expected: shape.to_vec(),
                    found: found.shape.clone(),
                });
            }
            names.insert(name);
        }
        if let Some(extra) = self.tensors.keys().find(|k| !names.contains(k.as_str())) {
            return Err(CheckpointError::UnexpectedTensor {
                name: extra.clone(),
            });
        }
        Ok(())
    }

    /// Stores optimiser state: tensors as `<prefix><name>`, metadata as `<prefix><key>`.
    pub fn insert_optimizer_state(
        &mut self,
        prefix: &str,
        state: &OptimizerState,
    ) -> Result<(), CheckpointError> {
        for (name, data) in &state.tensors {
            self.insert(format!("{prefix}{name}"), vec![data.len()], data.clone())?;
        }
        for (key, value) in &state.metadata {
            self.metadata
                .insert(format!("{prefix}{key}"), value.clone());
        }
        Ok(())
    }

    /// Removes and returns the optimiser state stored under `prefix` (tensors and metadata whose
    /// names start with it, prefix stripped). The optimiser's `load_state` validates it.
    pub fn take_optimizer_state(&mut self, prefix: &str) -> OptimizerState {
        let mut state = OptimizerState::default();
        let names: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for name in names {
            if let Some(t) = self.tensors.remove(&name) {
                state
                    .tensors
                    .insert(name[prefix.len()..].to_owned(), t.data);
            }
        }
        let keys: Vec<String> = self
            .metadata
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for key in keys {
            if let Some(v) = self.metadata.remove(&key) {
                state.metadata.insert(key[prefix.len()..].to_owned(), v);
            }
        }
        state
    }

    /// The first tensor holding a NaN or infinite value: `(name, index, value)`. Checkpoints
    /// themselves store any `f32`; the trainer refuses to write one that fails this check.
    pub fn first_non_finite(&self) -> Option<(&str, usize, f32)> {
        self.tensors.iter().find_map(|(name, t)| {
            t.data
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
                .map(|(i, &v)| (name.as_str(), i, v))
        })
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let mut raw: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(self.tensors.len());
        for (name, tensor) in &self.tensors {
            check_entry(name, tensor)?;
            let bytes: Vec<u8> = tensor.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            raw.push((name, &tensor.shape, bytes));
        }
        let mut views = Vec::with_capacity(raw.len());
        for (name, shape, bytes) in &raw {
            let view = TensorView::new(Dtype::F32, shape.to_vec(), bytes)
                .map_err(|e| CheckpointError::Encode(format!("tensor {name:?}: {e}")))?;
            views.push((*name, view));
        }
        let metadata: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        safetensors::tensor::serialize(views, Some(metadata))
            .map_err(|e| CheckpointError::Encode(e.to_string()))
    }

    /// Parses safetensors bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| CheckpointError::Format {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut ckpt = Checkpoint::new();
        if let Some(meta) = header.metadata() {
            ckpt.metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for (name, view) in st.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(CheckpointError::WrongDtype {
                    name: name.into(),
                    dtype: view.dtype().to_string(),
                });
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let tensor = Tensor {
                shape: view.shape().to_vec(),
                data,
            };
            check_entry(name, &tensor)?;
            ckpt.tensors.insert(name.to_owned(), tensor);
        }
        Ok(ckpt)
    }

    /// Writes the checkpoint atomically (see the module docs).
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self.to_bytes()?;
        atomic_write(path, &bytes)
    }

    /// Reads a checkpoint (all tensors must be F32).
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// [`Checkpoint::load`] followed by [`Checkpoint::validate_tensors`].
    pub fn load_expected<'a>(
        path: &Path,
        expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<Self, CheckpointError> {
        let ckpt = Self::load(path)?;
        ckpt.validate_tensors(expected)?;
        Ok(ckpt)
    }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, `fsync`, rename, then
/// a best-effort `fsync` of the directory. On error the temp file is removed and `path` is
/// untouched.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    atomic_write_with(path, |f| f.write_all(bytes))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), CheckpointError> {
    let io_err = |p: &Path, op, source| CheckpointError::Io {
        path: p.to_path_buf(),
        op,
        source,
    };
    let Some(file_name) = path.file_name() else {
        return Err(io_err(
            path,
            "save",
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        ));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{n}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, "create temporary file", e))?;
    let written = write(&mut file)
        .map_err(|e| io_err(&tmp, "write", e))
        .and_then(|()| file.sync_all().map_err(|e| io_err(&tmp, "fsync", e)));
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, "rename temporary file over", e));
    }
    // Persist the rename. Some file systems refuse fsync on directories; the data itself is
    // already durable, so this is best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Optimizer, OptimizerConfig, SgdConfig, TensorSpec};

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new();
        c.insert(
            "conv1.weight",
            vec![2, 1, 3, 3],
            (0..18).map(|i| i as f32 * 0.5).collect(),
        )
        .expect("insert");
        c.insert("bn1.running_mean", vec![2], vec![f32::NAN, -0.0])
            .expect("insert");
        c.insert("neuron.lambda", vec![], vec![0.25])
            .expect("insert");
        c.insert("empty", vec![0, 4], vec![]).expect("insert");
        c.set_meta(META_EPOCH, 7);
        c.set_meta(META_STEP, 5470);
        c.set_meta(META_SEED, 42);
        c.set_meta(META_CONFIG, r#"{"lr":0.01,"epochs":300}"#);
        c.set_meta(META_RNG, "pcg32:0123456789abcdef:0000000000000001");
        c
    }

    fn same_bits(a: &Checkpoint, b: &Checkpoint) -> bool {
        a.metadata == b.metadata
            && a.tensors.len() == b.tensors.len()
            && a.tensors
                .iter()
                .zip(&b.tensors)
                .all(|((na, ta), (nb, tb))| {
                    na == nb
                        && ta.shape == tb.shape
                        && ta
                            .data
                            .iter()
                            .map(|x| x.to_bits())
                            .eq(tb.data.iter().map(|x| x.to_bits()))
                })
    }

    #[test]
    fn first_non_finite_names_the_tensor() {
        let mut c = sample();
        let (name, i, v) = c.first_non_finite().expect("sample holds a NaN");
        assert_eq!((name, i), ("bn1.running_mean", 0));
        assert!(v.is_nan());
        c.insert("bn1.running_mean", vec![2], vec![0.0, 1.0])
            .unwrap();
        assert_eq!(c.first_non_finite(), None);
        c.insert("z", vec![3], vec![1.0, 2.0, f32::NEG_INFINITY])
            .unwrap();
        assert_eq!(c.first_non_finite(), Some(("z", 2, f32::NEG_INFINITY)));
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ckpt.safetensors");
        let c = sample();
        c.save(&path).expect("save");
        let back = Checkpoint::load(&path).expect("load");
        assert!(same_bits(&c, &back));
        assert_eq!(back.meta_u64(META_EPOCH).expect("epoch"), 7);
        assert!(matches!(
            back.meta_u64(META_CONFIG),
            Err(CheckpointError::BadMetadata { .. })
        ));
        assert!(matches!(
            back.meta("nope"),
            Err(CheckpointError::MissingMetadata { .. })
        ));
        // Overwrite in place; no temporary files left behind.
        let mut c2 = c.clone();
        c2.set_meta(META_EPOCH, 8);
        c2.save(&path).expect("save again");
        assert_eq!(
            Checkpoint::load(&path)
                .expect("load")
                .meta_u64(META_EPOCH)
                .expect("epoch"),
            8
        );
        let entries: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn validation_names_the_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.safetensors");
        sample().save(&path).expect("save");
        let full: Vec<(&str, &[usize])> = vec![
            ("conv1.weight", &[2, 1, 3, 3]),
            ("bn1.running_mean", &[2]),
            ("neuron.lambda", &[]),
            ("empty", &[0, 4]),
        ];
        Checkpoint::load_expected(&path, full.clone()).expect("all present");

        let mut missing = full.clone();
        missing.push(("fc.weight", &[10, 2]));
        let err = Checkpoint::load_expected(&path, missing).expect_err("missing");
        assert!(matches!(&err, CheckpointError::MissingTensor { name } if name == "fc.weight"));
        assert!(err.to_string().contains("fc.weight"));

        let err = Checkpoint::load_expected(&path, full[1..].to_vec()).expect_err("unexpected");
        assert!(
            matches!(&err, CheckpointError::UnexpectedTensor { name } if name == "conv1.weight")
        );

        let mut shape = full.clone();
        shape[1] = ("bn1.running_mean", &[1, 2]);
        let err = Checkpoint::load_expected(&path, shape).expect_err("shape");
        assert!(
            matches!(&err, CheckpointError::WrongShape { name, .. } if name == "bn1.running_mean")
        );
        assert!(err.to_string().contains("bn1.running_mean"));

        let mut c = Checkpoint::load(&path).expect("load");
        assert!(matches!(
            c.take("conv1.weight", &[18]),
            Err(CheckpointError::WrongShape { .. })
        ));
        assert_eq!(c.take("neuron.lambda", &[]).expect("take"), [0.25]);
    }

    #[test]
    fn wrong_dtype_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i32.safetensors");
        let data = [1u8, 0, 0, 0, 2, 0, 0, 0];
        let ok = [0u8; 4];
        let views = vec![
            (
                "counts",
                TensorView::new(Dtype::I32, vec![2], &data).expect("view"),
            ),
            (
                "w",
                TensorView::new(Dtype::F32, vec![1], &ok).expect("view"),
            ),
        ];
        let bytes = safetensors::tensor::serialize(views, None).expect("serialize");
        fs::write(&path, bytes).expect("write");
        let err = Checkpoint::load(&path).expect_err("dtype");
        assert!(matches!(&err, CheckpointError::WrongDtype { name, .. } if name == "counts"));
        assert!(err.to_string().contains("counts") && err.to_string().contains("I32"));
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = sample().to_bytes().expect("encode");
        for cut in [0, 1, 7, 8, 9, bytes.len() / 2, bytes.len() - 1] {
            let path = dir.path().join(format!("cut{cut}.safetensors"));
            fs::write(&path, &bytes[..cut]).expect("write");
            let err = Checkpoint::load(&path).expect_err("truncated");
            assert!(
                matches!(err, CheckpointError::Format { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        let mut garbage = bytes.clone();
        for b in garbage.iter_mut().skip(8).take(20) {
            *b = b'#';
        }
        assert!(matches!(
            Checkpoint::from_bytes(&garbage, Path::new("g")),
            Err(CheckpointError::Format { .. })
        ));
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Checkpoint::from_bytes(&huge, Path::new("h")).is_err());
        let mut extra = bytes;
        extra.push(0);
        assert!(Checkpoint::from_bytes(&extra, Path::new("x")).is_err());
        assert!(matches!(
            Checkpoint::load(&dir.path().join("absent")),
            Err(CheckpointError::Io { op: "read", .. })
        ));
    }

    #[test]
    fn failed_save_keeps_previous_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ckpt.safetensors");
        let c = sample();
        c.save(&path).expect("save");
        let before = fs::read(&path).expect("read");

        // A write error half-way through the new file.
        let err = atomic_write_with(&path, |f| {
            f.write_all(&before[..before.len() / 2])?;
            Err(io::Error::other("disk full (simulated)"))
        })
        .expect_err("simulated failure");
        assert!(matches!(err, CheckpointError::Io { op: "write", .. }));
        assert_eq!(fs::read(&path).expect("read"), before);
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "temp file left behind"
        );

        // The target's directory does not exist.
        let err = c
            .save(&dir.path().join("no-such-dir").join("ckpt.safetensors"))
            .expect_err("no dir");
        assert!(matches!(err, CheckpointError::Io { .. }));

        // The target is a directory: rename fails, the temp file is cleaned up.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        fs::write(sub.join("x"), b"x").expect("write");
        assert!(c.save(&sub).is_err());
        assert_eq!(fs::read(&path).expect("read"), before);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 2);

        // An invalid tensor fails before anything is written.
        let mut bad = c.clone();
        bad.tensors.insert(
            "w".into(),
            Tensor {
                shape: vec![3],
                data: vec![1.0],
            },
        );
        assert!(matches!(
            bad.save(&path),
            Err(CheckpointError::ShapeDataMismatch { .. })
        ));
        assert_eq!(fs::read(&path).expect("read"), before);
    }

    #[test]
    fn insert_rejects_bad_entries() {
        let mut c = Checkpoint::new();
        assert!(matches!(
            c.insert("__metadata__", vec![1], vec![0.0]),
            Err(CheckpointError::InvalidName(_))
        ));
        assert!(matches!(
            c.insert("x", vec![usize::MAX, 2], vec![]),
            Err(CheckpointError::ShapeDataMismatch { .. })
        ));
    }

    #[test]
    fn optimizer_state_round_trips_through_a_checkpoint() {
        let specs = [TensorSpec::new("w", 3)];
        let cfg = OptimizerConfig::Sgd(SgdConfig::paper());
        let mut opt = Optimizer::new(cfg, specs.clone()).expect("opt");
        let mut w = vec![1.0f32, 2.0, 3.0];
        opt.step_tensor(0, &mut w, &[0.1, 0.2, 0.3], 0.01)
            .expect("step");
        let mut c = Checkpoint::new();
        c.insert("w", vec![3], w).expect("insert");
        c.insert_optimizer_state(
            "optim.",
            &opt.export_state(&crate::backend::cpu::CpuBackend::default())
                .expect("export"),
        )
        .expect("insert state");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.safetensors");
        c.save(&path).expect("save");
        let mut back = Checkpoint::load(&path).expect("load");
        let state = back.take_optimizer_state("optim.");
        let mut restored = Optimizer::new(cfg, specs).expect("opt");
        restored
            .load_state(&crate::backend::cpu::CpuBackend::default(), &state)
            .expect("load state");
        let be = crate::backend::cpu::CpuBackend::default();
        assert_eq!(
            restored.export_state(&be).unwrap(),
            opt.export_state(&be).unwrap()
        );
        back.validate_tensors([("w", &[3usize][..])])
            .expect("only params left");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Checkpoint::from_bytes(&bytes, Path::new("fuzz"));
        }

        #[test]
        fn mutated_checkpoints_never_panic(pos in 0usize..400, val in proptest::num::u8::ANY) {
            let mut bytes = sample().to_bytes().expect("encode");
            let n = bytes.len();
            bytes[pos % n] = val;
            let _ = Checkpoint::from_bytes(&bytes, Path::new("fuzz"));
        }
    }
}
