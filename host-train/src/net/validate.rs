//! The trainer never builds a network `core` cannot run: [`validate`] exports the description
//! with placeholder parameters through the real export path and `core`'s encoder, then decodes
//! the bytes with `core`'s validating decoder (shapes, arena plan, every layer's rules).
//!
//! Why through the bytes and not a separate rule list: the export path and `core` are the single
//! source of truth for what a model file may hold; a second copy of those rules here would drift.
//! The cost is one encode + decode of a model whose tensors are all the same value, once per
//! build (binary weights are bit-packed, so even ResNet-34 encodes to a few MB).

use super::{ActShape, NetConfig};
use crate::error::Error;
use crate::export::{export_layers_from, ExportError, ParamSource};

/// Every placeholder tensor element: finite and non-zero, so folds that divide or scale by a
/// parameter (BN, Mem-BN input gain, sigmoid leak) stay well defined.
const PLACEHOLDER: f32 = 0.5;

/// Checks that `core` accepts the network `cfg` whose per-layer shapes are `shapes` (the input,
/// then every layer's output). The error names the layer and what `core` refused.
pub(crate) fn validate(cfg: &NetConfig, shapes: &[ActShape]) -> Result<(), Error> {
    let refused = |layer: usize, why: String| Error::ConfigInvalid {
        layer,
        detail: format!("empf-core cannot run this network: {why}"),
    };
    let whole = cfg.layers.len();
    let (meta, layers) = export_layers_from(cfg, shapes, ParamSource::Placeholder(PLACEHOLDER))
        .map_err(|e| match e {
            ExportError::Unsupported { index, what, why } => {
                refused(index, format!("{what}: {why}"))
            }
            other => refused(whole, other.to_string()),
        })?;
    let bytes = empf_core::format::encode_model(&meta, &layers)
        .map_err(|e| refused(whole, format!("the encoder refused it: {e}")))?;
    empf_core::Model::decode(&bytes).map_err(|e| {
        refused(
            whole,
            format!("the decoder refused it ({e}; core numbers its layers after the BN folds)"),
        )
    })?;
    Ok(())
}
