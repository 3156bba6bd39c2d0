//! The QEMU board (`boards/qemu-lm3s6965`, Cortex-M3, integer path): the firmware built with the
//! committed Fashion-MNIST MCU model classifies 32 test images in `qemu-system-arm -machine
//! lm3s6965evb`, and every logit it prints equals `empf-core`'s integer path on the host, bit for
//! bit (also with the wide MCU preset); the same firmware linked for `mps2-an385` does the same
//! with the bench model and with a narrow ResNet-34 of the model zoo (residual slots, max-pool
//! stem, binary 1×1 downsample shortcuts). A corrupted model in flash is reported and the
//! firmware exits; it does not hang.
//!
//! Without `qemu-system-arm` the tests print `skipped: …` and return; `EMPF_REQUIRE_QEMU=1`
//! (set by the README's test command) turns that into a failure.

use empf_core::format::Layer;
use empf_core::quant::{calibrate, quantize};
use empf_core::{Model, PixelNorm};
use empf_host_train::export::export_float;
use empf_host_train::net::zoo::{zoo, Arch, SecaVariant, ZooOptions};
use empf_host_train::net::{Net, NeuronKind};
use empf_host_train::optim::{OptimizerConfig, SgdConfig};
use empf_host_train::train::{random_bp_step, OnlineTrainer, UpdateRule};
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
/// The DSP-extension kernel (empf-dsp's `uxtab16` loop, selected on the Cortex-M4F and the
/// Cortex-M33 built with `+dsp`) gives every logit of `empf-core` on the host, bit for bit: the
/// MCU model and the wide MCU model, integer path, both modes, 32 images each, and the bench
/// model on the Cortex-M4F.
#[test]
fn dsp_kernel_on_cortex_m4f_and_m33_equals_core_bit_for_bit() {
    if !qemu_available() {
        return;
    }
    for machine in [board::MPS2_AN386, board::MPS2_AN505] {
        for model in [
            Inputs::default(),
            Inputs::with_model(board::repo_root().join("boards/models/fmnist-mcu-wide.empf")),
        ] {
            for mode in [Mode::Sequential, Mode::Parallel] {
                let (run, n, _) = board::qemu_check(
                    &model,
                    &machine,
                    Path::Integer,
                    mode,
                    Duration::from_secs(600),
                )
                .expect("QEMU check");
                assert_eq!(n, 32);
                // The DSP assembly itself, against plain sums and maxima, on this core.
                let checked = "kernel self-check: dsp kernel equals the plain sums";
                assert!(
                    run.lines.iter().any(|l| l.to_string().contains(checked)),
                    "no DSP self-check line from {}",
                    machine.name
                );
                println!(
                    "{} {} {:?}: 32 images equal ({:.1} s)",
                    machine.name,
                    model.model.display(),
                    mode,
                    run.elapsed.as_secs_f64()
                );
            }
        }
    }
    // The bench model: its 28×28 binary conv on spikes, and the two after average pools on
    // 16-bit pooled sums.
    let (_, n, _) = board::qemu_check(
        &Inputs::bench_model(),
        &board::MPS2_AN386,
        Path::Integer,
        Mode::Sequential,
        Duration::from_secs(900),
    )
    .expect("QEMU check");
    assert_eq!(n, 32);
}

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

/// A narrow ResNet-34 of the model zoo (width 0.125: 8/16/32/64 channels) for 1×28×28
/// Fashion-MNIST, trained a few batches on the 32 committed test images and calibrated on the
/// first 16: its ImageNet stem (conv7×7 s2 + BN + max-pool 3×3 s2) takes 28² to 14² to 7²,
/// then 16 residual blocks (Save/Swap/Add slots, binary 1×1 downsample shortcuts) run on
/// 7²/4²/2²/1². Returns the `.empf` bytes (integer path included).
fn zoo_resnet34_with_max_pool_stem(pixels: &[u8], labels: &[u8]) -> Vec<u8> {
    let options = ZooOptions {
        time_steps: 4,
        in_channels: 1,
        image_size: 28,
        classes: 10,
        neuron: NeuronKind::EmPf,
        parallel_percent: 50,
        seca: SecaVariant::Off,
        width: 0.125,
    };
    let config = zoo(Arch::Resnet34, &options).expect("zoo");
    let net = Net::new(config, 11).expect("build");
    let mut x = vec![0f32; pixels.len()];
    PixelNorm::FASHION_MNIST.apply_all(pixels, &mut x).unwrap();
    let y: Vec<u16> = labels.iter().map(|&l| l as u16).collect();
    let n = net.input_len();
    assert_eq!(n * labels.len(), x.len(), "28×28×1 images");
    // A few batches of 8, so the BN statistics and weights are trained ones, not the init.
    let mut trainer = OnlineTrainer::new(net, OptimizerConfig::Sgd(SgdConfig::paper())).unwrap();
    for (i, (xb, yb)) in x.chunks(8 * n).zip(y.chunks(8)).enumerate() {
        let step = Some(random_bp_step(11, 0, i, options.time_steps));
        trainer
            .train_batch(xb, yb, step, UpdateRule::PerStep, 0.05)
            .unwrap_or_else(|e| panic!("batch {i}: {e}"));
    }
    let float = export_float(&trainer.net).expect("export");
    let model = Model::decode(&float).expect("decode the float model");
    let cal = calibrate(&model, x.chunks(n).take(16)).unwrap();
    quantize(&model, &cal).expect("quantize")
}

/// A residual zoo network with a max-pool stem (ResNet-34's ImageNet stem, narrow) in the
/// Cortex-M3 firmware on `mps2-an385`: every integer logit of the 32 images equals the host's
/// `empf-core` (sequential and parallel), and so does every float logit, bit for bit.
#[test]
fn zoo_resnet34_max_pool_stem_on_mps2_an385_equals_core_bit_for_bit() {
    if !qemu_available() {
        return;
    }
    let base = Inputs::default();
    let (px, pixels, labels) = board::read_idx(&base.images, &base.labels).unwrap();
    assert_eq!((px, labels.len()), (28 * 28, 32));
    let bytes = zoo_resnet34_with_max_pool_stem(&pixels, &labels);

    // The encoded model really is residual, max-pooled and calibrated: no plain model passes.
    let model = Model::decode(&bytes).expect("decode");
    assert!(
        model.fixed_meta().is_some(),
        "calibrated for the integer path"
    );
    let layers: Vec<_> = model.layers().map(Result::unwrap).collect();
    let count = |f: fn(&Layer<&[u8]>) -> bool| layers.iter().filter(|l| f(l)).count();
    let kinds: Vec<&str> = layers.iter().map(Layer::kind).collect();
    let first = |f: fn(&Layer<&[u8]>) -> bool| layers.iter().position(f);
    let pool =
        first(|l| matches!(l, Layer::MaxPool(p) if (p.kernel, p.stride, p.padding) == (3, 2, 1)));
    assert!(
        matches!(layers[0], Layer::Conv2d(_))
            && pool.is_some()
            && pool < first(|l| matches!(l, Layer::Save { .. }))
            && count(|l| matches!(l, Layer::MaxPool(_))) == 1,
        "stem conv, then one 3×3 s2 max-pool before the first block: {kinds:?}"
    );
    assert_eq!(count(|l| matches!(l, Layer::Save { .. })), 16, "{kinds:?}");
    assert_eq!(
        count(|l| matches!(l, Layer::Add { fixed: Some(_), .. })),
        16,
        "{kinds:?}"
    );
    assert_eq!(
        count(|l| matches!(l, Layer::Swap { .. })),
        3,
        "one shortcut per stage change: {kinds:?}"
    );
    assert_eq!(
        count(|l| matches!(l, Layer::BinaryConv2d(c) if c.kernel == 1 && c.stride == 2)),
        3,
        "binary 1×1 s2 downsample convs: {kinds:?}"
    );
    println!(
        "ResNet-34 ×0.125, {} layers, {} B: {kinds:?}",
        layers.len(),
        bytes.len()
    );

    let dir = std::env::temp_dir().join(format!("empf-qemu-{}-resnet34", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.empf");
    std::fs::write(&path, &bytes).unwrap();
    let inputs = Inputs::with_model(path);
    for (path, mode) in [
        (Path::Integer, Mode::Sequential),
        (Path::Integer, Mode::Parallel),
        (Path::Float, Mode::Sequential),
    ] {
        let (run, n, size) = board::qemu_check(
            &inputs,
            &board::MPS2_AN385,
            path,
            mode,
            Duration::from_secs(300),
        )
        .unwrap_or_else(|e| panic!("{path:?} {mode:?}: {e:#}"));
        assert_eq!(n, 32);
        println!(
            "{size} (ResNet-34 ×0.125, {:.1} s in QEMU)",
            run.elapsed.as_secs_f64()
        );
        // The logits carry the image: equal outputs everywhere would make the check vacuous.
        let preds = board::parse_predictions(&run.lines).unwrap();
        let outputs: Vec<_> = preds
            .iter()
            .map(|p| match path {
                Path::Integer => p.logits.iter().map(|&v| v as u32).collect(),
                Path::Float => p.float_bits.clone(),
            })
            .collect();
        assert!(outputs.iter().all(|o| o.len() == 10), "{path:?}");
        let distinct: std::collections::BTreeSet<_> = outputs.iter().collect();
        assert!(
            distinct.len() > 16,
            "{path:?} {mode:?}: only {} distinct logit vectors",
            distinct.len()
        );
        assert!(
            outputs
                .iter()
                .flatten()
                .any(|&v| v != 0 && v != 0x8000_0000),
            "{path:?} {mode:?}: all logits zero"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
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
