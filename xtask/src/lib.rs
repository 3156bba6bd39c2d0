//! Library half of `cargo xtask`: the firmware tooling in [`board`] is shared with the
//! QEMU conformance test in `tests/`; [`mcu_bench`] counts instructions per layer under QEMU.

pub mod board;
pub mod mcu_bench;
