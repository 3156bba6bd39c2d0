//! Online EM-PF trainer. See the crate README and `docs/architecture.md`.
