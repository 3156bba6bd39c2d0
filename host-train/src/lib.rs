//! Online EM-PF trainer. See the crate README and `docs/architecture.md`.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod export;
pub mod gemm;
#[cfg(test)]
mod gradcheck;
pub mod layers;
pub mod metrics;
pub mod net;
pub mod optim;
pub mod params;
pub mod rng;
pub mod tensor;
pub mod train;
