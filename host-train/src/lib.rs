//! Online EM-PF trainer. See the crate README and `docs/architecture.md`.

pub mod checkpoint;
pub mod data;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod rng;
pub mod backend;
pub mod bench;
pub mod error;
#[cfg(test)]
mod gradcheck;
pub mod layers;
pub mod net;
pub mod tensor;
pub mod train;
pub mod export;
