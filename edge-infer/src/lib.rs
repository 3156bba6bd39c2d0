//! Edge inference. Filled by the edge-infer issue; for now a thin re-export of `empf-core`.
pub use empf_core as core_engine;
