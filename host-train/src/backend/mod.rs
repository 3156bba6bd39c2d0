//! The backend boundary: the heavy, GEMM-shaped ops of training (convolution and linear layers,
//! forward and backward) go through [`Backend`], so a GPU implementation can replace them.
//!
//! * [`cpu::CpuBackend`] is always compiled and is the reference every other backend is tested
//!   against.
//! * `cuda` (feature `cuda`) is a stub today: [`cuda_backend`] returns
//!   [`crate::error::Error::CudaNotCompiled`] without the feature and
//!   [`crate::error::Error::CudaUnavailable`] with it.
//!
//! The light element-wise ops (BN, neurons, pooling, SECA, loss) run on the CPU directly from
//! `layers`; they are cheap next to the GEMMs. The boundary is on host slices today; a device
//! backend that keeps activations resident will widen it.
//!
//! All `*_backward` methods ACCUMULATE into the gradient buffers they are given (llm.c style).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::error::Result;
use crate::layers::conv2d::{Conv2dGeom, Conv2dGrads};
use crate::layers::linear::{LinearGeom, LinearGrads};

/// Heavy ops of the training step. Shapes and layouts are those of `layers::conv2d` and
/// `layers::linear`; see there.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Short name for logs (`"cpu"`, `"cuda"`).
    fn name(&self) -> &'static str;

    /// `y = conv(x, w) (+ bias)`; `col` is scratch of at least `g.col_len()` elements.
    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        col: &mut [f32],
    ) -> Result<()>;

    /// Accumulates `dw`, `dbias` and (if given) `dx` from `dy`; `col` is scratch.
    fn conv2d_backward(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        grads: Conv2dGrads<'_>,
        col: &mut [f32],
    ) -> Result<()>;

    /// `y = x · wᵀ (+ bias)`.
    fn linear_forward(
        &self,
        g: &LinearGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()>;

    /// Accumulates `dw`, `dbias` and (if given) `dx` from `dy`.
    fn linear_backward(
        &self,
        g: &LinearGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        grads: LinearGrads<'_>,
    ) -> Result<()>;
}

/// The CPU backend, boxed.
pub fn cpu_backend() -> Box<dyn Backend> {
    Box::new(cpu::CpuBackend)
}

/// The CUDA backend if it is compiled in and usable.
///
/// Without the `cuda` feature this is always `Err(Error::CudaNotCompiled)`; with it, the stub in
/// `backend::cuda` currently answers `Err(Error::CudaUnavailable(..))` (see [`crate::error::Error`]).
pub fn cuda_backend() -> Result<Box<dyn Backend>> {
    #[cfg(feature = "cuda")]
    {
        cuda::CudaBackend::new().map(|b| Box::new(b) as Box<dyn Backend>)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(crate::error::Error::CudaNotCompiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn cuda_backend_reports_typed_error_without_device_code() {
        match cuda_backend() {
            Ok(b) => panic!("unexpected CUDA backend {}", b.name()),
            Err(Error::CudaNotCompiled) if !cfg!(feature = "cuda") => {}
            Err(Error::CudaUnavailable(_)) if cfg!(feature = "cuda") => {}
            Err(e) => panic!("unexpected error {e}"),
        }
        assert_eq!(cpu_backend().name(), "cpu");
    }
}
