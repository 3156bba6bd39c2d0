//! # empf-core
//!
//! The `no_std` heart of empf: the model file format and the meaning of a model. Every other
//! engine (host evaluation, edge, ONNX, firmware) is tested against this crate.
//!
//! * [`format`]: a 16-byte header (magic `EMPF`, version, body length, CRC-32) and a postcard body
//!   of [`format::Layer`]s. Byte tables: `core/spec/format.md`.
//! * [`Model::decode`] validates a file once and borrows every weight from its bytes; after it
//!   succeeds inference cannot panic. Arbitrary bytes give a typed [`Error`].
//! * Inference is `out = Σ_t logits[t]` over `T` steps of the EM-PF network
//!   (`m = λ_t·v + I`, `s = max(m − θ_t, 0)`, `v = m − s`): [`Model::infer_float`] is the
//!   semantic reference, [`Model::infer_fixed`] the integer path (8-bit spikes, i32 sums from
//!   packed bits, fixed-point requantisation, no float instructions), each in
//!   [`Mode::Sequential`] (step-major) or [`Mode::Parallel`] (layer-major, all `T` steps batched).
//! * [`idx`]: the idx (MNIST) header and item slices, without allocation, shared by the trainer
//!   and the edge runner.
//! * The caller owns the only memory: an arena of [`Model::arena_words_for`] `u32` words.
//! * Feature `alloc`: [`format::encode_model`] and the integer-path calibration [`quant`].
//!   Feature `defmt`: `defmt::Format` on public types.
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! use empf_core::{format::*, Mode, Model};
//! // A 1-step model: linear 2 → 2 classes.
//! let w: Vec<u8> = [1.0f32, 0.0, 0.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let b: Vec<u8> = [0.5f32, -0.5].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let meta = ModelMeta { time_steps: 1, input: Shape3 { c: 2, h: 1, w: 1 }, classes: 2,
//!                        encoding: InputEncoding::Direct, fixed: None };
//! let layers = [Layer::Linear(Linear { out_features: 2, in_features: 2, weight: Blob(&w[..]),
//!                                      bias: Blob(&b[..]), fixed: None })];
//! let bytes = encode_model(&meta, &layers).unwrap();
//! let model = Model::decode(&bytes).unwrap();
//! let mut arena = vec![0u32; model.arena_words_for(Mode::Sequential)];
//! let mut out = [0.0f32; 2];
//! model.infer_float(&[1.0, 2.0], Mode::Sequential, &mut arena, &mut out).unwrap();
//! assert_eq!(out, [1.5, 1.5]);
//! # }
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod bits;
mod crc32;
mod error;
pub mod format;
pub mod idx;
pub mod infer;
mod le;
mod model;
mod pixel;
#[cfg(feature = "alloc")]
pub mod quant;

pub use crc32::crc32;
pub use error::Error;
pub use infer::top_k;
pub use model::{
    Layers, Mode, Model, Shape, ACT_LIMIT, MAX_NUMEL, MAX_TIME_STEPS, MEMBRANE_FRAC_BITS, SPIKE_MAX,
};
pub use pixel::PixelNorm;

/// Most layers a model may have.
pub const MAX_LAYERS: usize = 4096;
/// Number of residual slots (`Save`/`Swap`/`Add`).
pub const MAX_SLOTS: usize = 4;
