//! CUDA backend (feature `cuda`): a stub today.
//!
//! It compiles without any CUDA toolkit and never touches a driver; [`CudaBackend::probe`]
//! returns [`Error::CudaUnavailable`]. The GPU issue implements [`super::Backend`] with cudarc
//! (cuBLAS GEMMs, NVRTC kernels for im2col/BN/neurons/loss/optimiser) and a run-time device
//! probe; the trait already covers the whole step, so nothing else in the trainer changes.

use crate::error::{Error, Result};

/// Placeholder for the CUDA backend; cannot be constructed yet.
#[derive(Debug)]
pub struct CudaBackend {
    _private: (),
}

impl CudaBackend {
    /// Whether a CUDA device can be used: always [`Error::CudaUnavailable`] today.
    pub fn probe() -> Result<()> {
        Err(Error::CudaUnavailable(
            "the CUDA backend is not implemented yet (stub)".to_string(),
        ))
    }
}
