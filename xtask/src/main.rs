//! `cargo xtask <task>`: plain-Rust automation, one local command that does what CI does.
//!
//! * `ci`          — fmt check, clippy -D warnings, all tests, docs -D warnings, no_std builds
//! * `check-nostd` — builds empf-core for the three Cortex-M targets, per feature set
//! * `bench-core`  — the empf-core float/integer/dense benchmark
//! * `qemu`        — builds the lm3s6965 firmware with a model, runs it in QEMU, checks every
//!   logit against empf-core on the host, prints the size report
//! * `qemu-run`    — runs a firmware ELF in QEMU and decodes its defmt output (cargo runner)
//! * `size`        — builds every firmware in `boards/` and prints flash and RAM use

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use xtask::board;

const NOSTD_TARGETS: [&str; 3] = [
    "thumbv6m-none-eabi",
    "thumbv7m-none-eabi",
    "thumbv7em-none-eabihf",
];

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    cargo_in(&board::repo_root(), args, env)
}

/// `cargo <args>` run in `dir` (firmware crates must be built from their own directory so that
/// their `.cargo/config.toml` picks the target).
fn cargo_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let start = Instant::now();
    println!("[xtask] ({}) cargo {}", dir.display(), args.join(" "));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir).args(args);
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
fn cargo_test(dir: &std::path::Path, args: &[&str]) -> Result<(u64, u64, u64)> {
    use std::io::{BufRead, BufReader};
    println!("[xtask] ({}) cargo {}", dir.display(), args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
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
    let root = board::repo_root();
    let (mut passed, mut failed, mut ignored) = cargo_test(
        &root,
        &["test", "--workspace", "--release", "--all-features"],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The firmware workspace: format, lints (host and each firmware target), the board logic's
    // mock tests, then the size report of every firmware with the committed model.
    let boards = root.join("boards");
    cargo_in(&boards, &["fmt", "--all", "--check"], &[])?;
    let app = boards.join("app");
    cargo_in(
        &app,
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        &[],
    )?;
    let (p, f, i) = cargo_test(&app, &["test"])?;
    (passed, failed, ignored) = (passed + p, failed + f, ignored + i);
    for fw in board::FIRMWARES {
        cargo_in(
            &boards.join(fw.dir),
            &["clippy", "--release", "--", "-D", "warnings"],
            &[],
        )?;
    }
    size(&[])?;
    // One closing line for the whole run (the per-crate lines end with doc-test crates of 0).
    println!("ci: {passed} passed, {failed} failed, {ignored} skipped");
    Ok(())
}

/// `--model`, `--images`, `--labels` overrides of the committed board inputs.
fn board_inputs(args: &[String]) -> Result<board::Inputs> {
    let mut inputs = board::Inputs::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a path"))?;
        let slot = match flag.as_str() {
            "--model" => &mut inputs.model,
            "--images" => &mut inputs.images,
            "--labels" => &mut inputs.labels,
            other => bail!("unknown option {other:?} (expected --model, --images, --labels)"),
        };
        *slot = PathBuf::from(value);
    }
    Ok(inputs)
}

const QEMU_TIMEOUT: Duration = Duration::from_secs(300);

fn qemu(args: &[String]) -> Result<()> {
    let inputs = board_inputs(args)?;
    let (run, n, size) = board::qemu_check(&inputs, QEMU_TIMEOUT)?;
    let correct = board::parse_predictions(&run.lines)?
        .iter()
        .filter(|p| p.class == usize::from(p.label))
        .count();
    println!(
        "qemu lm3s6965: {n} images, {correct} correct, every logit equal to empf-core on the host ({:.1} s in QEMU)",
        run.elapsed.as_secs_f64()
    );
    println!("{size}");
    Ok(())
}

fn qemu_run(args: &[String]) -> Result<()> {
    let elf = args
        .first()
        .context("usage: cargo xtask qemu-run <firmware ELF>")?;
    let run = board::run_lm3s6965(std::path::Path::new(elf), QEMU_TIMEOUT)?;
    for l in &run.lines {
        println!("{l}");
    }
    match run.exit {
        Some(code) => std::process::exit(code),
        None => bail!("firmware did not finish within {QEMU_TIMEOUT:?}"),
    }
}

fn size(args: &[String]) -> Result<()> {
    let inputs = board_inputs(args)?;
    println!("firmware size report (model {})", inputs.model.display());
    for (i, fw) in board::FIRMWARES.iter().enumerate() {
        let elf = board::build(fw, &inputs)?;
        let mut r = board::size_report(fw, &elf, &inputs, i == 0)?;
        if i == 0 && board::qemu_binary().is_ok() {
            let run = board::run_lm3s6965(&elf, QEMU_TIMEOUT)?;
            r.stack_used = board::stack_used(&run.lines);
        }
        println!("{r}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().cloned().unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match task.as_str() {
        "ci" => ci(),
        "qemu" => qemu(rest),
        "qemu-run" => qemu_run(rest),
        "size" => size(rest),
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
            eprintln!(
                "usage: cargo xtask <ci | check-nostd | bench-core | qemu | qemu-run | size>"
            );
            std::process::exit(2)
        }
    }
}
