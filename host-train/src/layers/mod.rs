//! Layer kernels, llm.c style: one file per layer, each with a shape-vocabulary comment at the
//! top and `<layer>_forward` / `<layer>_backward` free functions on plain slices.
//!
//! Conventions shared by every layer:
//! * f32 everywhere; spatial activations are CBHW (`[C][B·H·W]`), features after `gap` are
//! ```text
//!   batch-major `[B][F]`.
//! ```
//! * Backward functions ACCUMULATE (`+=`) into every gradient they are given, parameter and
//! ```text
//!   input gradients alike; callers zero them.
//! ```
//! * What a backward needs from its forward is explicit: the forward input/output slices plus a
//! ```text
//!   small `*Saved` struct where needed (BN statistics, SECA scores, Mem-BN potential).
//! ```
//! * Reductions are done in f64 and in a fixed order (parallel over independent outputs only),
//! ```text
//!   so results do not depend on rayon's scheduling.
//! ```

pub mod avgpool2;
pub mod batchnorm2d;
pub mod binary_conv2d;
pub mod binary_linear;
pub mod conv2d;
pub mod cross_entropy;
pub mod flatten;
pub mod gap;
pub mod im2col;
pub mod linear;
pub mod maxpool;
pub mod membn_neuron;
pub mod neuron;
pub mod parallel_neuron;
pub mod residual_add;
pub mod seca;
pub mod soft_cross_entropy;
