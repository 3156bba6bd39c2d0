//! CUDA backend (feature `cuda`): a stub today.
//!
//! It compiles without any CUDA toolkit and never touches a driver; [`CudaBackend::new`] returns
//! [`Error::CudaUnavailable`]. A later issue implements the [`Backend`] ops with cudarc (cuBLAS
//! GEMMs, NVRTC kernels for im2col/BN/neurons) and a run-time device probe.

use super::Backend;
use crate::error::{Error, Result};
use crate::layers::conv2d::{Conv2dGeom, Conv2dGrads};
use crate::layers::linear::{LinearGeom, LinearGrads};

/// Placeholder for the CUDA backend; cannot be constructed yet.
#[derive(Debug)]
pub struct CudaBackend {
    _private: (),
}

impl CudaBackend {
    /// Always fails today with [`Error::CudaUnavailable`].
    pub fn new() -> Result<Self> {
        Err(Error::CudaUnavailable(
            "the CUDA backend is not implemented yet (stub)".to_string(),
        ))
    }

    fn unavailable() -> Error {
        Error::CudaUnavailable("stub backend".to_string())
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn conv2d_forward(
        &self,
        _g: &Conv2dGeom,
        _x: &[f32],
        _w: &[f32],
        _bias: Option<&[f32]>,
        _y: &mut [f32],
        _col: &mut [f32],
    ) -> Result<()> {
        Err(Self::unavailable())
    }

    fn conv2d_backward(
        &self,
        _g: &Conv2dGeom,
        _x: &[f32],
        _w: &[f32],
        _dy: &[f32],
        _grads: Conv2dGrads<'_>,
        _col: &mut [f32],
    ) -> Result<()> {
        Err(Self::unavailable())
    }

    fn linear_forward(
        &self,
        _g: &LinearGeom,
        _x: &[f32],
        _w: &[f32],
        _bias: Option<&[f32]>,
        _y: &mut [f32],
    ) -> Result<()> {
        Err(Self::unavailable())
    }

    fn linear_backward(
        &self,
        _g: &LinearGeom,
        _x: &[f32],
        _w: &[f32],
        _dy: &[f32],
        _grads: LinearGrads<'_>,
    ) -> Result<()> {
        Err(Self::unavailable())
    }
}
