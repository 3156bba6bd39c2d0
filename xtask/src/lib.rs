//! Library half of `cargo xtask`: the firmware tooling in [`board`] is shared with the
//! QEMU conformance test in `tests/`.

pub mod board;
