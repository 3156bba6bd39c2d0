//! The QEMU board (`boards/qemu-lm3s6965`, Cortex-M3, integer path): the firmware built with the
//! committed Fashion-MNIST MCU model classifies 32 test images in `qemu-system-arm -machine
//! lm3s6965evb`, and every logit it prints equals `empf-core`'s integer path on the host, bit for
//! bit (also with the wide MCU preset); the same firmware linked for `mps2-an385` does the same
//! with the bench model. A
//! corrupted model in flash is reported and the firmware exits; it does not hang.
//!
//! Without `qemu-system-arm` the tests print `skipped: …` and return; `EMPF_REQUIRE_QEMU=1`
//! (set by the README's test command) turns that into a failure.

use std::time::Duration;
use xtask::board::{self, Inputs, Mode, NumPath as Path};

fn qemu_available() -> bool {
    match board::qemu_binary() {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("EMPF_REQUIRE_QEMU").as_deref() == Ok("1") {
                panic!("EMPF_REQUIRE_QEMU=1 but {e}");
            }
            println!("skipped: {e}");
            false
        }
    }
}

#[test]
fn bench_model_on_mps2_an385_equals_core_bit_for_bit() {
    if !qemu_available() {
        return;
    }
    // The bench network's ~930 KiB arena needs more than the LM3S6965's 64 KiB: the same
    // Cortex-M3 firmware, linked for QEMU's mps2-an385 (4 MiB RAM).
    let (run, n, size) = board::qemu_check(
        &Inputs::bench_model(),
        &board::MPS2_AN385,
        Path::Integer,
        Mode::Sequential,
        Duration::from_secs(900),
    )
    .expect("QEMU check");
    assert_eq!(n, 32);
    println!(
        "{size} (bench model, {:.1} s in QEMU)",
        run.elapsed.as_secs_f64()
    );
    assert!(size.arena > 64 * 1024, "the bench model is the large one");
}

#[test]
fn firmware_logits_equal_core_on_the_host_bit_for_bit() {
    if !qemu_available() {
        return;
    }
    let (run, n, size) = board::qemu_check(
        &Inputs::default(),
        &board::LM3S6965,
        Path::Integer,
        Mode::Sequential,
        Duration::from_secs(300),
    )
    .expect("QEMU check");
    assert_eq!(n, 32, "the firmware embeds 32 test images");
    // Integer path on an FPU-less core: no float kernel, no soft-float routine was linked.
    let float = board::float_symbols(&run.elf).unwrap();
    assert!(
        float.is_empty(),
        "float code in the integer firmware: {float:?}"
    );
    assert!(run.lines.iter().any(|l| l.text.starts_with("done: ")));
    println!("{size}");
    assert!(size.flash_used <= size.flash_total && size.ram_static <= size.ram_total);
    let used = size
        .stack_used
        .expect("the firmware reports its stack high-water mark");
    assert!(
        used > 0 && used < size.stack_free,
        "stack {used} of {}",
        size.stack_free
    );
}

/// The wide MCU preset (`host-train train --arch mcu-wide`, 2× the MCU net's channels) on the
/// 64 KiB LM3S6965: it links (arena + statics fit the RAM), runs within its stack, and every
/// logit equals the host's.
#[test]
fn wide_mcu_model_on_lm3s6965_equals_core_bit_for_bit() {
    if !qemu_available() {
        return;
    }
    let inputs = Inputs::with_model(board::repo_root().join("boards/models/fmnist-mcu-wide.empf"));
    let (run, n, size) = board::qemu_check(
        &inputs,
        &board::LM3S6965,
        Path::Integer,
        Mode::Sequential,
        Duration::from_secs(300),
    )
    .expect("QEMU check");
    assert_eq!(n, 32);
    println!(
        "{size} (wide MCU model, {:.1} s in QEMU)",
        run.elapsed.as_secs_f64()
    );
    assert!(size.ram_static <= size.ram_total && size.ram_total <= 64 * 1024);
    let used = size.stack_used.expect("stack high-water mark");
    assert!(
        used > 0 && used < size.stack_free,
        "stack {used} of {}",
        size.stack_free
    );
}

/// The paths and mode the real boards run (float parallel on the M4F, integer parallel on the
/// RP2040), on a Cortex-M3 with enough RAM for the parallel arena: integers equal, and the float
/// path's soft-float results equal the host's f32 bit for bit (IEEE-754 on both).
#[test]
fn parallel_mode_and_float_path_on_cortex_m3_equal_core_bit_for_bit() {
    if !qemu_available() {
        return;
    }
    for path in [Path::Integer, Path::Float] {
        let (run, n, size) = board::qemu_check(
            &Inputs::default(),
            &board::MPS2_AN385,
            path,
            Mode::Parallel,
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("{path:?} parallel: {e:#}"));
        assert_eq!(n, 32);
        println!("{size} ({:.1} s in QEMU)", run.elapsed.as_secs_f64());
        // The float build does contain float code (so the integer check above can fail).
        let float = board::float_symbols(&run.elf).unwrap();
        assert_eq!(
            path == Path::Float,
            float.iter().any(|n| n.contains("FloatKernels")),
            "{path:?}: {float:?}"
        );
        let preds = board::parse_predictions(&run.lines).unwrap();
        assert!(preds.iter().all(|p| match path {
            Path::Integer => p.logits.len() == 10 && p.float_bits.is_empty(),
            Path::Float => p.float_bits.len() == 10 && p.logits.is_empty(),
        }));
    }
}

/// Corrupts the model, builds the firmware with it, and returns what the firmware said.
fn run_with_model(tag: &str, corrupt: impl Fn(&mut Vec<u8>)) -> board::QemuRun {
    let inputs = Inputs::default();
    let mut bytes = std::fs::read(&inputs.model).unwrap();
    corrupt(&mut bytes);
    let dir = std::env::temp_dir().join(format!("empf-qemu-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.empf");
    std::fs::write(&model, &bytes).unwrap();
    let inputs = Inputs { model, ..inputs }.for_machine(&board::LM3S6965);
    let elf = board::build(&board::FIRMWARES[0], &inputs).expect("build");
    let run = board::run_qemu(&elf, &board::LM3S6965, Duration::from_secs(60)).expect("qemu");
    std::fs::remove_dir_all(&dir).ok();
    run
}

#[test]
fn malformed_model_in_flash_is_reported_not_a_hang() {
    if !qemu_available() {
        return;
    }
    type Case = (&'static str, &'static str, fn(&mut Vec<u8>));
    let cases: [Case; 2] = [
        ("crc", "DecodeBadCrc", |b| {
            let i = b.len() / 2;
            b[i] ^= 0x10;
        }),
        ("truncated", "DecodeLengthMismatch", |b| {
            b.truncate(b.len() - 100);
        }),
    ];
    for (tag, want, corrupt) in cases {
        let run = run_with_model(tag, corrupt);
        for l in &run.lines {
            println!("[{tag}] {l}");
        }
        assert_eq!(
            run.exit,
            Some(2),
            "{tag}: exit code (None = hung until the timeout)"
        );
        let err = run
            .lines
            .iter()
            .find(|l| l.level == "ERROR")
            .unwrap_or_else(|| panic!("{tag}: no error line"));
        assert!(
            err.text.contains("model rejected") && err.text.contains(want),
            "{tag}: {}",
            err.text
        );
        assert!(board::parse_predictions(&run.lines).unwrap().is_empty());
    }
}
