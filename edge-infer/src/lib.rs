//! Edge inference: runs `.empf` models natively through `empf-core` (float and integer paths) on
//! IDX3 / `.npy` / `.f32` inputs, and benchmarks them (`edge-infer` binary).
pub use empf_core as core_engine;

pub mod bench;
pub mod input;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_engine;

use std::path::{Path, PathBuf};

use empf_core::{Mode, Model};

/// Errors of loading a model file or running it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file cannot be read.
    #[error("{path}: cannot read model file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The bytes are not a valid model.
    #[error("{path}: invalid model file: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Decoder error.
        source: empf_core::Error,
    },
    /// Inference failed.
    #[error("inference failed: {source}")]
    Infer {
        /// Engine error.
        source: empf_core::Error,
    },
    /// The integer path was asked of a model without integer parameters.
    #[error("{path}: model has no integer path (not calibrated/quantised)")]
    NoIntegerPath {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a model file and checks that it decodes; the bytes are returned for [`Model::decode`].
pub fn read_model(path: &Path) -> Result<Vec<u8>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_model(path, &bytes)?;
    Ok(bytes)
}

/// [`Model::decode`] with the file named in the error.
pub fn decode_model<'a>(path: &Path, bytes: &'a [u8]) -> Result<Model<'a>, ModelError> {
    Model::decode(bytes).map_err(|source| ModelError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Scores of one native inference.
#[derive(Clone, Debug, PartialEq)]
pub enum Scores {
    /// Float path: summed logits.
    Float(Vec<f32>),
    /// Integer path: summed integer logits and `logit_scale`.
    Integer {
        /// Summed logits in units of `logit_scale`.
        logits: Vec<i32>,
        /// Real value of one logit step.
        logit_scale: f32,
    },
}

impl Scores {
    /// Real-valued scores.
    pub fn real(&self) -> Vec<f32> {
        match self {
            Scores::Float(v) => v.clone(),
            Scores::Integer {
                logits,
                logit_scale,
            } => logits.iter().map(|&q| q as f32 * logit_scale).collect(),
        }
    }

    /// Best three `(class, real score)`, best first (via [`empf_core::top_k`]).
    pub fn top3(&self) -> Vec<(usize, f32)> {
        match self {
            Scores::Float(v) => empf_core::top_k::<3, f32>(v).iter().copied().collect(),
            Scores::Integer {
                logits,
                logit_scale,
            } => empf_core::top_k::<3, i32>(logits)
                .iter()
                .map(|&(i, q)| (i, q as f32 * logit_scale))
                .collect(),
        }
    }

    /// Predicted class.
    pub fn class(&self) -> usize {
        self.top3().first().map_or(0, |p| p.0)
    }
}

/// One native inference of `input` on the float (`integer = false`) or integer path.
pub fn infer_native(
    path: &Path,
    model: &Model<'_>,
    input: &[f32],
    integer: bool,
    mode: Mode,
) -> Result<Scores, ModelError> {
    let mut arena = vec![0u32; model.arena_words_for(mode)];
    let infer = |source| ModelError::Infer { source };
    if integer {
        let fm = model
            .fixed_meta()
            .ok_or_else(|| ModelError::NoIntegerPath {
                path: path.to_path_buf(),
            })?;
        let mut q = vec![0i8; input.len()];
        model.quantize_input(input, &mut q).map_err(infer)?;
        let mut out = vec![0i32; model.classes()];
        model
            .infer_fixed(&q, mode, &mut arena, &mut out)
            .map_err(infer)?;
        Ok(Scores::Integer {
            logits: out,
            logit_scale: fm.logit_scale,
        })
    } else {
        let mut out = vec![0.0f32; model.classes()];
        model
            .infer_float(input, mode, &mut arena, &mut out)
            .map_err(infer)?;
        Ok(Scores::Float(out))
    }
}
