//! Online EM-PF trainer. See the crate README and `docs/architecture.md`.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod gemm;
#[cfg(test)]
mod gradcheck;
pub mod layers;
pub mod metrics;
pub mod model_file;
pub mod net;
pub mod optim;
pub mod params;
pub mod recipes;
pub mod rng;
pub mod run_dir;
pub mod session;
pub mod tensor;
pub mod tensorboard;
pub mod threads;
pub mod train;
