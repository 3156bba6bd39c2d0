//! `cargo xtask <task>`: plain-Rust automation, one local command that does what CI does.
//!
//! * `ci`          — fmt check, clippy -D warnings, all tests, docs -D warnings, no_std builds
//! * `check-nostd` — builds empf-core for the three Cortex-M targets, per feature set
//! * `bench-core`  — the empf-core float/integer/dense benchmark
//! * `qemu`        — builds the Cortex-M3 firmware with a model (`--machine lm3s6965evb|mps2-an385`,
//!   `--path integer|float`, `--mode sequential|parallel`), runs it in QEMU, checks every logit
//!   against empf-core on the host, prints the size report
//! * `qemu-run`    — runs a firmware ELF in QEMU and decodes its defmt output (cargo runner)
//! * `size`        — builds every firmware in `boards/` and prints flash and RAM use
//! * `mcu-bench`   — instructions per inference, per layer and per MAC, under QEMU `-icount` on
//!   Cortex-M3/M4F/M33 (`--model M`, `--machine mps2-an385|mps2-an386|mps2-an505`, repeatable)

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
    // Every crate's tests build on their own, without the features workspace unification
    // would turn on for them (`cargo test -p <crate>` alone must work).
    for krate in [
        "empf-core",
        "empf-dsp",
        "empf-host-train",
        "empf-edge-infer",
        "empf-conformance",
        "xtask",
    ] {
        cargo(&["test", "-q", "-p", krate, "--no-run"], &[])?;
    }
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

/// Options of `qemu` and `size`: `--model`, `--images`, `--labels` (board inputs),
/// `--machine` (QEMU machine), `--bench-model` (the model for the mps2-an385 row of `size`).
struct BoardArgs {
    inputs: board::Inputs,
    machine: board::Machine,
    bench_model: PathBuf,
    path: empf_board_app::Path,
    mode: empf_board_app::Mode,
}

fn board_args(args: &[String]) -> Result<BoardArgs> {
    let mut a = BoardArgs {
        inputs: board::Inputs::default(),
        machine: board::LM3S6965,
        bench_model: board::Inputs::bench_model().model,
        path: empf_board_app::Path::Integer,
        mode: empf_board_app::Mode::Sequential,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => a.inputs.model = PathBuf::from(value),
            "--images" => a.inputs.images = PathBuf::from(value),
            "--labels" => a.inputs.labels = PathBuf::from(value),
            "--bench-model" => a.bench_model = PathBuf::from(value),
            "--machine" => a.machine = board::Machine::by_name(value)?,
            "--path" => {
                a.path = match value.as_str() {
                    "integer" => empf_board_app::Path::Integer,
                    "float" => empf_board_app::Path::Float,
                    other => bail!("--path {other:?}: expected integer or float"),
                }
            }
            "--mode" => {
                a.mode = match value.as_str() {
                    "sequential" => empf_board_app::Mode::Sequential,
                    "parallel" => empf_board_app::Mode::Parallel,
                    other => bail!("--mode {other:?}: expected sequential or parallel"),
                }
            }
            other => bail!(
                "unknown option {other:?} (expected --model, --images, --labels, --machine, --path, --mode, --bench-model)"
            ),
        }
    }
    Ok(a)
}

const QEMU_TIMEOUT: Duration = Duration::from_secs(600);

fn qemu(args: &[String]) -> Result<()> {
    let a = board_args(args)?;
    let (run, n, size) = board::qemu_check(&a.inputs, &a.machine, a.path, a.mode, QEMU_TIMEOUT)?;
    let correct = board::parse_predictions(&run.lines)?
        .iter()
        .filter(|p| p.class == usize::from(p.label))
        .count();
    println!(
        "qemu {} ({} {}): {n} images, {correct} correct, every logit equal to empf-core on the host, bit for bit ({:.1} s in QEMU)",
        a.machine.name,
        board::path_name(a.path),
        board::mode_name(a.mode),
        run.elapsed.as_secs_f64()
    );
    println!("{size}");
    Ok(())
}

fn qemu_run(args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask qemu-run [--machine lm3s6965evb|mps2-an385] <firmware ELF>";
    let (machine, elf) = match args {
        [flag, name, elf] if flag == "--machine" => (board::Machine::by_name(name)?, elf),
        [elf] => (board::LM3S6965, elf),
        _ => bail!(usage),
    };
    let run = board::run_qemu(std::path::Path::new(elf), &machine, QEMU_TIMEOUT)?;
    for l in &run.lines {
        println!("{l}");
    }
    match run.exit {
        Some(code) => std::process::exit(code),
        None => bail!("firmware did not finish within {QEMU_TIMEOUT:?}"),
    }
}

/// Every firmware with the MCU model, plus the QEMU Cortex-M3 firmware with the bench model on
/// mps2-an385 (the bench model's arena does not fit any of the small boards).
fn size(args: &[String]) -> Result<()> {
    let a = board_args(args)?;
    println!(
        "firmware size report (MCU model {}, bench model {})",
        a.inputs.model.display(),
        a.bench_model.display()
    );
    let qemu_ok = board::qemu_binary().is_ok();
    for (i, fw) in board::FIRMWARES.iter().enumerate() {
        let inputs = if i == 0 {
            a.inputs.clone().for_machine(&board::LM3S6965)
        } else {
            a.inputs.clone()
        };
        let elf = board::build(fw, &inputs)?;
        let mut r = board::size_report(fw, &elf, &inputs, i == 0)?;
        // FPU-less integer firmware must not carry float code (kernels or soft-float).
        let float = board::float_symbols(&elf)?;
        if fw.path == empf_board_app::Path::Integer && !float.is_empty() {
            bail!(
                "{}: float code linked into integer firmware: {float:?}",
                fw.dir
            );
        }
        if i == 0 && qemu_ok {
            let run = board::run_qemu(&elf, &board::LM3S6965, QEMU_TIMEOUT)?;
            r.stack_used = board::stack_used(&run.lines);
        }
        println!("{r}");
        println!(
            "  float code: {}",
            if float.is_empty() {
                "none (integer path, pixel table precomputed)".to_string()
            } else {
                format!("{} symbols (float path)", float.len())
            }
        );
    }
    let bench = board::Inputs::with_model(a.bench_model.clone()).for_machine(&board::MPS2_AN385);
    let fw = &board::FIRMWARES[0];
    let elf = board::build(fw, &bench)?;
    let mut r = board::size_report(fw, &elf, &bench, true)?;
    r.board = board::MPS2_AN385.board;
    println!("{r} (bench model)");
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
        "mcu-bench" => xtask::mcu_bench::main(rest),
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
                "usage: cargo xtask <ci | check-nostd | bench-core | qemu | qemu-run | size | mcu-bench>"
            );
            std::process::exit(2)
        }
    }
}
