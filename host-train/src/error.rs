//! The error type of the training engine (layers, backends, network).
//!
//! One flat `#[non_exhaustive]` enum; variant names start with the phase that failed
//! (`Shape…` for slice-length checks, `Config…` for network descriptions, `Step…` for the
//! online step protocol, `Cuda…` for the GPU backend).

/// Errors of the training engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A slice passed to a kernel has the wrong length for the stated shape.
    #[error("shape mismatch in {what}: expected {expected} elements, got {got}")]
    ShapeMismatch {
        /// Which argument (e.g. `"conv2d.x"`).
        what: &'static str,
        /// Length implied by the shape arguments.
        expected: usize,
        /// Length of the slice that was passed.
        got: usize,
    },
    /// A shape argument is invalid (zero size, kernel larger than the padded input, …).
    #[error("invalid shape in {what}: {detail}")]
    ShapeInvalid {
        /// Which kernel or layer.
        what: &'static str,
        /// Human-readable reason.
        detail: String,
    },
    /// A class label is not below the number of classes.
    #[error("label {label} at batch index {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// Position in the batch.
        index: usize,
        /// The offending label.
        label: usize,
        /// Number of classes (logits per sample).
        classes: usize,
    },
    /// A soft-target entry (`[B][K]`, see `Net::load_batch_soft`) is NaN, infinite or
    /// negative: targets are class weights, finite and ≥ 0.
    #[error(
        "soft target of class {class} at batch index {index} is {}: targets must be finite and non-negative",
        f32::from_bits(*value_bits)
    )]
    TargetInvalid {
        /// Position in the batch.
        index: usize,
        /// The class (column) of the entry.
        class: usize,
        /// The entry's bits (`f32::to_bits`; the enum stays `Eq`).
        value_bits: u32,
    },
    /// A network description cannot be built (layer order, unsupported combination, …).
    #[error("invalid network configuration at layer {layer}: {detail}")]
    ConfigInvalid {
        /// Index of the offending layer spec (or the number of layers for whole-net checks).
        layer: usize,
        /// Human-readable reason.
        detail: String,
    },
    /// `forward_step` was called before `reset_state` (no batch size known).
    #[error("no batch size set: call reset_state(batch) before forward_step")]
    StepNoBatch,
    /// The time-step index is not the next one in the sequence started by `reset_state`.
    #[error("time-step {got} out of order: expected step {expected} (of {time_steps})")]
    StepOutOfOrder {
        /// The step that was requested.
        got: usize,
        /// The step that must come next.
        expected: usize,
        /// Number of time-steps `T` of the network.
        time_steps: usize,
    },
    /// `backward_step` was called without a preceding `forward_step(.., keep_for_backward = true)`
    /// (or after a later forward step overwrote what it saved).
    #[error("nothing saved for backward: run forward_step with keep_for_backward = true first")]
    StepNoTape,
    /// The crate was built without the `cuda` feature.
    #[error("CUDA backend not compiled in: rebuild with `--features cuda`")]
    CudaNotCompiled,
    /// The `cuda` feature is on but no usable device/driver/implementation was found.
    #[error("CUDA backend unavailable: {0}")]
    CudaUnavailable(String),
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that `got == expected`, naming the argument on failure.
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            got,
        })
    }
}
