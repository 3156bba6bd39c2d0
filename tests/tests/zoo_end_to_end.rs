//! Every network of the model zoo (spec §5; ResNet-34 with its max-pool stem), at a narrow width, trains end to end: a few online
//! steps on generated data with the loss falling, export through `core`'s encoder, and the same
//! logits from host evaluation, `core` float (sequential and parallel), `core` integer and ONNX
//! Runtime, each within the conformance suite's tolerance.
//!
//! The data are generated so that a few batches can learn them: class `k` of `K` lights a
//! square at its own position (plus uniform noise), in every input channel.
//!
//! ONNX Runtime needs `ORT_DYLIB_PATH` (set by `source scripts/setup.sh`); without it that part
//! prints `skipped: …`, unless `EMPF_REQUIRE_ORT=1`.
use empf_conformance::{Rng, HOST_VS_CORE_REL};
use empf_core::quant::{calibrate, quantize};
use empf_core::{Mode, Model};
use empf_edge_infer::onnx::to_onnx;
use empf_edge_infer::ort_engine::{ExecutionProvider, OrtModel};
use empf_host_train::export::{export_float, host_logits};
use empf_host_train::net::zoo::{zoo, Arch, SecaVariant, ZooOptions};
use empf_host_train::net::{Net, NeuronKind};
use empf_host_train::optim::{OptimizerConfig, SgdConfig};
use empf_host_train::train::{random_bp_step, OnlineTrainer, UpdateRule};

/// Classes of the generated data.
const CLASSES: usize = 4;

/// Integer path vs float, per logit, relative to the largest float logit of the sample: the
/// bound `tests/tests/host_vs_core.rs` states for random networks.
const INTEGER_VS_FLOAT_REL: f64 = 0.15;

/// `n` images `[n][c][s][s]` and their labels: class `k` brightens the `k`-th of four
/// quadrant squares.
fn generated(rng: &mut Rng, n: usize, c: usize, s: usize) -> (Vec<f32>, Vec<u16>) {
    let (mut x, mut y) = (Vec::with_capacity(n * c * s * s), Vec::with_capacity(n));
    let half = s / 2;
    for _ in 0..n {
        let k = rng.below(CLASSES);
        let (r0, c0) = ((k / 2) * half, (k % 2) * half);
        for _ in 0..c {
            for r in 0..s {
                for col in 0..s {
                    let inside = (r0..r0 + half).contains(&r) && (c0..c0 + half).contains(&col);
                    x.push(rng.range(-0.5, 0.5) + if inside { 1.5 } else { 0.0 });
                }
            }
        }
        y.push(k as u16);
    }
    (x, y)
}

/// One zoo case: architecture and options.
struct Case {
    tag: &'static str,
    arch: Arch,
    in_channels: usize,
    image_size: usize,
    neuron: NeuronKind,
    parallel_percent: u8,
    seca: SecaVariant,
    width: f32,
}

// One positional row per case keeps the table in `cases` readable at a glance.
#[allow(clippy::too_many_arguments)]
const fn case(
    tag: &'static str,
    arch: Arch,
    in_channels: usize,
    image_size: usize,
    neuron: NeuronKind,
    parallel_percent: u8,
    seca: SecaVariant,
    width: f32,
) -> Case {
    Case {
        tag,
        arch,
        in_channels,
        image_size,
        neuron,
        parallel_percent,
        seca,
        width,
    }
}

/// The zoo at narrow widths: every architecture, both stems of ResNet-18, every neuron version,
/// every parallel share and both SECA variants appear at least once.
fn cases() -> Vec<Case> {
    use NeuronKind::{EmPf, MemBn};
    use SecaVariant::{Off, One, Two};
    vec![
        case(
            "resnet18-cifar-I+III",
            Arch::Resnet18,
            3,
            16,
            EmPf,
            50,
            Off,
            0.125,
        ),
        case(
            "resnet18-cifar-II+III-seca2",
            Arch::Resnet18,
            3,
            16,
            MemBn,
            50,
            Two,
            0.125,
        ),
        case(
            "resnet18-dvs-II+III",
            Arch::Resnet18,
            2,
            16,
            MemBn,
            50,
            Off,
            0.125,
        ),
        case(
            "resnet18-100%-parallel",
            Arch::Resnet18,
            3,
            16,
            EmPf,
            100,
            Off,
            0.125,
        ),
        case(
            "resnet19-I-seca1",
            Arch::Resnet19,
            3,
            16,
            EmPf,
            0,
            One,
            0.0625,
        ),
        // ImageNet stem (conv7×7 s2 + BN + max-pool 3×3 s2): 32 → 16 → 8, then 8/4/2/1.
        case(
            "resnet34-imagenet-stem-I+III",
            Arch::Resnet34,
            3,
            32,
            EmPf,
            50,
            Off,
            0.0625,
        ),
        case("vgg13-II", Arch::Vgg13, 3, 16, MemBn, 0, Off, 0.125),
        case("vgg13-I-seca1", Arch::Vgg13, 3, 16, EmPf, 50, One, 0.125),
        case("vgg-snn-II", Arch::VggSnn, 2, 16, MemBn, 0, Off, 0.125),
    ]
}

fn ort_or_skip() -> bool {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        Some(p) if std::path::Path::new(&p).is_file() => true,
        other => {
            let why = match other {
                None => "ORT_DYLIB_PATH is not set (source scripts/setup.sh)".to_string(),
                Some(p) => format!("ORT_DYLIB_PATH={} does not exist", p.to_string_lossy()),
            };
            if std::env::var("EMPF_REQUIRE_ORT").as_deref() == Ok("1") {
                panic!("EMPF_REQUIRE_ORT=1 but {why}");
            }
            println!("skipped (ONNX Runtime part): {why}");
            false
        }
    }
}

fn assert_close(tag: &str, what: &str, got: &[f32], want: &[f32], rel: f64) {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((g - w) as f64).abs() <= rel * scale,
            "{tag}: {what} logit {j}: {g} vs {w} (tolerance {})\n{got:?}\n{want:?}",
            rel * scale
        );
    }
}

/// Trains `case` for a few batches, then checks every engine against host evaluation.
fn run(case: &Case, with_ort: bool) {
    let tag = case.tag;
    let t = 2;
    let options = ZooOptions {
        time_steps: t,
        in_channels: case.in_channels,
        image_size: case.image_size,
        classes: CLASSES,
        neuron: case.neuron,
        parallel_percent: case.parallel_percent,
        seca: case.seca,
        width: case.width,
    };
    let config = zoo(case.arch, &options).unwrap_or_else(|e| panic!("{tag}: {e}"));
    let net = Net::new(config, 7).unwrap_or_else(|e| panic!("{tag}: build: {e}"));
    let n = net.input_len();
    let mut trainer = OnlineTrainer::new(net, OptimizerConfig::Sgd(SgdConfig::paper()))
        .unwrap_or_else(|e| panic!("{tag}: trainer: {e}"));
    let mut rng = Rng(0x200 ^ case.image_size as u64);
    let (batch, batches) = (16, 48);
    let mut losses = Vec::with_capacity(batches);
    for i in 0..batches {
        let (x, y) = generated(&mut rng, batch, case.in_channels, case.image_size);
        let step = Some(random_bp_step(7, 0, i, t));
        let stats = trainer
            .train_batch(&x, &y, step, UpdateRule::PerStep, 0.05)
            .unwrap_or_else(|e| panic!("{tag}: batch {i}: {e}"));
        losses.push(stats.loss);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..6]), mean(&losses[batches - 6..]));
    assert!(
        last < 0.9 * first,
        "{tag}: the loss did not fall: first 6 batches {first:.4}, last 6 {last:.4} ({losses:?})"
    );

    println!("{tag}: loss {first:.3} -> {last:.3} (mean of the first / last 6 batches)");

    // Export; host evaluation vs core float, both modes.
    let mut net = trainer.net;
    let bytes = export_float(&net).unwrap_or_else(|e| panic!("{tag}: export: {e}"));
    let model = Model::decode(&bytes).unwrap_or_else(|e| panic!("{tag}: decode: {e}"));
    let eval_batch = 4;
    let (x, _) = generated(&mut rng, eval_batch, case.in_channels, case.image_size);
    let host = host_logits(&mut net, &x, eval_batch).unwrap();
    let mut arena = vec![0u32; model.arena_bytes() / 4];
    let mut core_float = vec![0.0f32; eval_batch * CLASSES];
    for b in 0..eval_batch {
        for mode in [Mode::Sequential, Mode::Parallel] {
            let out = &mut core_float[b * CLASSES..(b + 1) * CLASSES];
            model
                .infer_float(&x[b * n..(b + 1) * n], mode, &mut arena, out)
                .unwrap_or_else(|e| panic!("{tag}: core float ({mode:?}): {e}"));
            let h = &host[b * CLASSES..(b + 1) * CLASSES];
            assert_close(
                tag,
                &format!("core float {mode:?} vs host, sample {b}"),
                out,
                h,
                HOST_VS_CORE_REL,
            );
        }
    }

    // Integer path, calibrated on generated images, near float.
    let samples: Vec<Vec<f32>> = (0..32)
        .map(|_| generated(&mut rng, 1, case.in_channels, case.image_size).0)
        .collect();
    let cal = calibrate(&model, samples.iter().map(Vec::as_slice)).unwrap();
    let q = quantize(&model, &cal).unwrap_or_else(|e| panic!("{tag}: quantize: {e}"));
    let qm = Model::decode(&q).unwrap();
    let scale = qm.fixed_meta().unwrap().logit_scale as f64;
    let mut arena = vec![0u32; qm.arena_bytes() / 4];
    let (mut xq, mut qo) = (vec![0i8; n], vec![0i32; CLASSES]);
    for b in 0..eval_batch {
        qm.quantize_input(&x[b * n..(b + 1) * n], &mut xq).unwrap();
        qm.infer_fixed(&xq, Mode::Sequential, &mut arena, &mut qo)
            .unwrap_or_else(|e| panic!("{tag}: core integer: {e}"));
        let as_float: Vec<f32> = qo.iter().map(|&v| (v as f64 * scale) as f32).collect();
        let f = &core_float[b * CLASSES..(b + 1) * CLASSES];
        assert_close(
            tag,
            &format!("core integer vs float, sample {b}"),
            &as_float,
            f,
            INTEGER_VS_FLOAT_REL,
        );
    }

    // ONNX Runtime vs core float.
    if with_ort {
        let onnx = to_onnx(&model).unwrap_or_else(|e| panic!("{tag}: to_onnx: {e}"));
        let mut ort = OrtModel::load(&onnx, ExecutionProvider::Cpu)
            .unwrap_or_else(|e| panic!("{tag}: ORT load: {e}"));
        let y = ort
            .run(&x, eval_batch)
            .unwrap_or_else(|e| panic!("{tag}: ORT run: {e}"));
        assert_close(tag, "ORT vs core float", &y, &core_float, HOST_VS_CORE_REL);
    }
}

#[test]
fn every_zoo_network_trains_exports_and_agrees_across_engines() {
    let with_ort = ort_or_skip();
    for case in cases() {
        run(&case, with_ort);
    }
}
