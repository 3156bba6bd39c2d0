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

/// Runs `cargo test …`, echoing its output, and returns the (passed, failed, ignored) totals of
/// all its `test result:` lines, so CI can close on one summary line.
fn cargo_test(args: &[&str]) -> Result<(u64, u64, u64)> {
    use std::io::{BufRead, BufReader};
    println!("[xtask] cargo {}", args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let num = |key: &str| -> u64 {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .strip_suffix(key)
                                .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                        })
                        .unwrap_or(0)
                };
                passed += num(" passed");
                failed += num(" failed");
                ignored += num(" ignored");
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "cargo {} failed ({status}): {passed} passed, {failed} failed",
            args.join(" ")
        );
    }
    println!("[xtask]   ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok((passed, failed, ignored))
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
    let (passed, failed, ignored) =
        cargo_test(&["test", "--workspace", "--release", "--all-features"])?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // One closing line for the whole run (the per-crate lines end with doc-test crates of 0).
    println!("ci: {passed} passed, {failed} failed, {ignored} skipped");
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
