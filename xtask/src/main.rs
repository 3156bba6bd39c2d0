//! `cargo xtask <task>`: plain-Rust automation, one local command that does what CI does.
//!
//! * `ci`          — fmt check, clippy -D warnings, all tests, docs -D warnings, no_std builds
//! * `check-nostd` — builds empf-core for the three Cortex-M targets, per feature set
//! * `bench-core`  — the empf-core float/integer/dense benchmark

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::Instant;

const NOSTD_TARGETS: [&str; 3] = [
    "thumbv6m-none-eabi",
    "thumbv7m-none-eabi",
    "thumbv7em-none-eabihf",
];

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let start = Instant::now();
    println!("[xtask] cargo {}", args.join(" "));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    println!("[xtask]   ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn check_nostd() -> Result<()> {
    for target in NOSTD_TARGETS {
        for features in ["", "alloc", "defmt", "alloc,defmt"] {
            let mut args = vec!["build", "-q", "-p", "empf-core", "--target", target];
            if !features.is_empty() {
                args.extend(["--features", features]);
            }
            cargo(&args, &[])?;
        }
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &[
            "clippy",
            "-p",
            "empf-core",
            "--features",
            "std",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    check_nostd()?;
    cargo(&["test", "--workspace", "--release", "--all-features"], &[])?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "ci" => ci(),
        "check-nostd" => check_nostd(),
        "bench-core" => cargo(
            &[
                "run",
                "--release",
                "-p",
                "empf-core",
                "--features",
                "std",
                "--example",
                "bench",
            ],
            &[],
        ),
        _ => {
            eprintln!("usage: cargo xtask <ci | check-nostd | bench-core>");
            std::process::exit(2)
        }
    }
}
