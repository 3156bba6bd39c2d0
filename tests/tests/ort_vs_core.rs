//! ONNX export (`empf_edge_infer::onnx::to_onnx`) run through ONNX Runtime agrees with `core`
//! float inference, and every exported graph passes `onnx.checker.check_model(full_check=True)`.
//!
//! Cases cover every neuron mix: all sequential, all parallel and mixed. The export runs every
//! stateless layer once on all `T` steps (one `[T·N, …]` tensor) and unrolls only the update of
//! the sequential neurons, whose steps are split from and joined back into the batched tensor;
//! `batched_export_has_no_per_step_convs` checks that structure and needs no ONNX Runtime.
//!
//! The integer graph (`to_onnx_integer`) is checked the same way against `core`'s integer path,
//! for exact equality of the int32 logits (`*_ort_integer_equals_core_fixed`).
//!
//! Needs `ORT_DYLIB_PATH` (libonnxruntime) and `EMPF_PYTHON` (a Python with `onnx`), both set by
//! `source scripts/setup.sh`. Without them the tests print `skipped: …` and pass, unless
//! `EMPF_REQUIRE_ORT=1`.
use std::path::{Path, PathBuf};
use std::process::Command;

use empf_conformance::{random_case, randomize, DescribeOnFailure, Rng, HOST_VS_CORE_REL};
use empf_core::format::{
    encode_model, BinaryConv2d, BinaryLinear, Blob, Conv2d, InputEncoding, Layer, Linear, MaxPool,
    ModelMeta, Neuron, NeuronMode, Seca, Shape3,
};
use empf_core::{Mode, Model};
use empf_edge_infer::onnx::{to_onnx, to_onnx_integer, to_onnx_proto, to_onnx_qdq, QdqActivations};
use empf_edge_infer::ort_engine::{ExecutionProvider, OrtError, OrtModel};
use empf_host_train::export::export_float;
use empf_host_train::net::{BenchOptions, LayerSpec, Net, NetConfig, NeuronKind};

/// What the ORT tests need, or why they are skipped.
struct Env {
    python: PathBuf,
}

fn env_or_skip() -> Option<Env> {
    let lib = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty());
    let py = std::env::var_os("EMPF_PYTHON").filter(|v| !v.is_empty());
    let reason = match (&lib, &py) {
        (None, _) => Some("ORT_DYLIB_PATH is not set (source scripts/setup.sh)".to_string()),
        (_, None) => Some("EMPF_PYTHON is not set (source scripts/setup.sh)".to_string()),
        (Some(l), Some(p)) => {
            if !Path::new(l).is_file() {
                Some(format!(
                    "ORT_DYLIB_PATH={} does not exist",
                    Path::new(l).display()
                ))
            } else if !Path::new(p).is_file() {
                Some(format!(
                    "EMPF_PYTHON={} does not exist",
                    Path::new(p).display()
                ))
            } else {
                None
            }
        }
    };
    match reason {
        None => Some(Env {
            python: PathBuf::from(py.unwrap()),
        }),
        Some(r) => {
            if std::env::var("EMPF_REQUIRE_ORT").as_deref() == Ok("1") {
                panic!("EMPF_REQUIRE_ORT=1 but {r}");
            }
            println!("skipped: {r}");
            None
        }
    }
}

fn f32s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn rand_f32s(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<u8> {
    f32s((0..n).map(|_| rng.range(lo, hi)))
}

fn rand_signs(rng: &mut Rng, rows: usize, k: usize) -> Vec<u8> {
    let rb = k.div_ceil(8);
    let mut v = vec![0u8; rows * rb];
    for r in 0..rows {
        for i in 0..k {
            if rng.below(2) == 1 {
                v[r * rb + i / 8] |= 1 << (i % 8);
            }
        }
    }
    v
}

/// A random neuron over `c` channels; optional gain/bias arrays left empty at random.
fn rand_neuron(rng: &mut Rng, t: usize, c: usize, mode: NeuronMode) -> Layer<Vec<u8>> {
    let per_channel = rng.below(2) == 0;
    let n = if per_channel { t * c } else { t };
    let opt = |rng: &mut Rng, lo: f32, hi: f32| {
        if rng.below(3) == 0 {
            Vec::new()
        } else {
            rand_f32s(rng, n, lo, hi)
        }
    };
    Layer::Neuron(Neuron {
        mode,
        per_channel,
        leak: Blob(match mode {
            NeuronMode::Sequential => rand_f32s(rng, n, 0.2, 1.0),
            NeuronMode::Parallel => Vec::new(),
        }),
        threshold: Blob(rand_f32s(rng, n, 0.1, 1.0)),
        input_gain: Blob(opt(rng, 0.5, 1.5)),
        input_bias: Blob(opt(rng, -0.3, 0.3)),
        fixed: None,
    })
}

/// Hand-written core models for what the trainer's generator does not emit: residual
/// `Save`/`Swap`/`Add`, SECA_II (`add_slot`), `Flatten`, neurons after `Flatten`, per-channel
/// and empty neuron arrays, and a network without neurons (time-invariant output). A 3×3
/// max pool (stride 1, pad 1) follows the first conv (time-invariant currents) in every third
/// model and the first neuron (spikes) in the next.
fn handmade(seed: u64) -> Vec<u8> {
    handmade_with(seed, None, false)
}

/// [`handmade`] with the modes of its four neurons (`None`: sequential, parallel, random,
/// sequential; the network without neurons keeps only the last) and, with `same_steps`, every
/// neuron array equal to its step 0 at every step.
fn handmade_with(seed: u64, modes: Option<[NeuronMode; 4]>, same_steps: bool) -> Vec<u8> {
    let mode = |i: usize, default: NeuronMode| modes.map_or(default, |m| m[i]);
    let mut rng = Rng(seed);
    let t = 1 + rng.below(4);
    let (c, h, w) = (1 + rng.below(3), 4 + rng.below(5), 4 + rng.below(5));
    let classes = 2 + rng.below(4);
    let f = 2 + rng.below(3);
    let mut layers: Vec<Layer<Vec<u8>>> = vec![Layer::Conv2d(Conv2d {
        out_channels: f as u16,
        in_channels: c as u16,
        kernel: 3,
        stride: 1,
        padding: 1,
        weight: Blob(rand_f32s(&mut rng, f * c * 9, -0.6, 0.6)),
        bias: Blob(rand_f32s(&mut rng, f, -0.3, 0.3)),
        fixed: None,
    })];
    let (oh, ow) = (h / 2, w / 2);
    let pool = Layer::MaxPool(MaxPool {
        kernel: 3,
        stride: 1,
        padding: 1,
    });
    if seed % 3 == 0 {
        layers.push(pool.clone());
    }
    if seed % 5 == 4 {
        // No neuron: every step is the same.
        layers.push(Layer::AvgPool2);
        layers.push(Layer::Flatten);
    } else {
        layers.push(Layer::Save { slot: 0 });
        layers.push(rand_neuron(&mut rng, t, f, mode(0, NeuronMode::Sequential)));
        if seed % 3 == 1 {
            layers.push(pool);
        }
        layers.push(Layer::BinaryConv2d(BinaryConv2d {
            out_channels: f as u16,
            in_channels: f as u16,
            kernel: 3,
            stride: 1,
            padding: 1,
            signs: Blob(rand_signs(&mut rng, f, f * 9)),
            gain: Blob(rand_f32s(&mut rng, f, 0.05, 0.3)),
            bias: Blob(rand_f32s(&mut rng, f, -0.3, 0.3)),
            fixed: None,
        }));
        layers.push(Layer::Add {
            slot: 0,
            fixed: None,
        });
        layers.push(Layer::Save { slot: 1 });
        layers.push(rand_neuron(&mut rng, t, f, mode(1, NeuronMode::Parallel)));
        layers.push(Layer::Seca(Seca {
            add_slot: Some(1),
            weight: Blob(rand_f32s(&mut rng, 5, -1.0, 1.0)),
            bias: rng.range(-0.5, 0.5),
            fixed: None,
        }));
        layers.push(Layer::Swap { slot: 1 });
        layers.push(Layer::Add {
            slot: 1,
            fixed: None,
        });
        layers.push(Layer::AvgPool2);
        layers.push(Layer::Flatten);
        let third = if rng.below(2) == 0 {
            NeuronMode::Sequential
        } else {
            NeuronMode::Parallel
        };
        layers.push(rand_neuron(&mut rng, t, f * oh * ow, mode(2, third)));
    }
    let hidden = 3 + rng.below(4);
    layers.push(Layer::BinaryLinear(BinaryLinear {
        out_features: hidden as u32,
        in_features: (f * oh * ow) as u32,
        signs: Blob(rand_signs(&mut rng, hidden, f * oh * ow)),
        gain: Blob(rand_f32s(&mut rng, hidden, 0.05, 0.3)),
        bias: Blob(rand_f32s(&mut rng, hidden, -0.3, 0.3)),
        fixed: None,
    }));
    layers.push(rand_neuron(
        &mut rng,
        t,
        hidden,
        mode(3, NeuronMode::Sequential),
    ));
    if same_steps {
        for l in &mut layers {
            if let Layer::Neuron(n) = l {
                for arr in [
                    &mut n.leak,
                    &mut n.threshold,
                    &mut n.input_gain,
                    &mut n.input_bias,
                ] {
                    let step = arr.0.len() / t;
                    let first = arr.0[..step].to_vec();
                    arr.0 = first.repeat(t);
                }
            }
        }
    }
    layers.push(Layer::Linear(Linear {
        out_features: classes as u32,
        in_features: hidden as u32,
        weight: Blob(rand_f32s(&mut rng, classes * hidden, -0.6, 0.6)),
        bias: Blob(rand_f32s(&mut rng, classes, -0.3, 0.3)),
        fixed: None,
    }));
    let meta = ModelMeta {
        time_steps: t as u16,
        input: Shape3 {
            c: c as u16,
            h: h as u16,
            w: w as u16,
        },
        classes: classes as u16,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    encode_model(&meta, &layers).expect("encode handmade model")
}

/// `config` with the neuron kinds `kind(i)` (i-th neuron), built and randomized from `seed`.
fn trainer_model(config: &NetConfig, seed: u64, kind: impl Fn(usize) -> NeuronKind) -> Vec<u8> {
    let mut config = config.clone();
    let mut i = 0;
    for l in &mut config.layers {
        if let LayerSpec::Neuron(k) = l {
            *k = kind(i);
            i += 1;
        }
    }
    let mut net = Net::new(config, seed).expect("valid net");
    randomize(&mut net, &mut Rng(seed ^ 0x0A11_5EED));
    export_float(&net).expect("export")
}

/// The bench topology (conv-N1-bconv-N2-pool-bconv-N3-pool-bconv-N4-GAP-linear) on `size`²
/// inputs, 4 classes.
fn bench_model(t: usize, size: usize, seca: bool, neurons: [NeuronKind; 4], seed: u64) -> Vec<u8> {
    let config = NetConfig::bench_sized(1, size, size, 4, t, &BenchOptions { neurons, seca });
    trainer_model(&config, seed, |i| neurons[i])
}

fn check_with_onnx_checker(py: &Path, onnx: &[u8], tag: &str) {
    let path = std::env::temp_dir().join(format!(
        "empf_ort_vs_core_{}_{tag}.onnx",
        std::process::id()
    ));
    std::fs::write(&path, onnx).unwrap();
    let out = Command::new(py)
        .arg("-c")
        .arg("import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)")
        .arg(&path)
        .output()
        .expect("run EMPF_PYTHON");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{tag}: onnx.checker rejected the model:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exports `bytes` to ONNX, checks it, runs a batch through ORT and compares with core.
fn compare(py: &Path, bytes: &[u8], tag: &str, seed: u64) {
    let model = Model::decode(bytes).unwrap_or_else(|e| panic!("{tag}: decode: {e}"));
    let onnx = to_onnx(&model).unwrap_or_else(|e| panic!("{tag}: to_onnx: {e}"));
    check_with_onnx_checker(py, &onnx, tag);
    let mut ort = OrtModel::load(&onnx, ExecutionProvider::Cpu)
        .unwrap_or_else(|e| panic!("{tag}: ORT load: {e}"));
    let n = model.input_shape().numel();
    let k = model.classes();
    let batch = 3;
    let mut rng = Rng(seed ^ 0x5EED);
    let x: Vec<f32> = (0..batch * n).map(|_| rng.range(-1.0, 2.0)).collect();
    let y = ort
        .run(&x, batch)
        .unwrap_or_else(|e| panic!("{tag}: ORT run: {e}"));
    assert_eq!(y.len(), batch * k, "{tag}: ORT output length");
    let mut arena = vec![0u32; model.arena_bytes() / 4];
    for (b, mode) in (0..batch).flat_map(|b| [(b, Mode::Sequential), (b, Mode::Parallel)]) {
        let mut core = vec![0.0f32; k];
        model
            .infer_float(&x[b * n..(b + 1) * n], mode, &mut arena, &mut core)
            .unwrap();
        let o = &y[b * k..(b + 1) * k];
        let scale = core.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
        let tol = HOST_VS_CORE_REL * scale;
        for (j, (&c, &ov)) in core.iter().zip(o).enumerate() {
            assert!(
                ((c - ov) as f64).abs() <= tol,
                "{tag} sample {b} ({mode:?}) logit {j}: core {c} ort {ov} (tol {tol})\ncore {core:?}\nort  {o:?}"
            );
        }
        let argmax =
            |v: &[f32]| (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best });
        let mut sorted = core.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted.len() < 2 || (sorted[0] - sorted[1]) as f64 > tol {
            assert_eq!(argmax(o), argmax(&core), "{tag} sample {b}: argmax");
        }
    }
}

#[test]
fn trainer_cases_ort_equals_core_float() {
    let Some(env) = env_or_skip() else { return };
    for seed in 0..48u64 {
        let net = random_case(seed);
        let _describe = DescribeOnFailure::of(&format!("random_case({seed})"), &net);
        let bytes = export_float(&net).expect("export");
        compare(&env.python, &bytes, &format!("random_case({seed})"), seed);
    }
}

#[test]
fn handmade_cases_ort_equals_core_float() {
    let Some(env) = env_or_skip() else { return };
    for seed in 0..20u64 {
        let bytes = handmade(seed);
        compare(&env.python, &bytes, &format!("handmade({seed})"), seed);
    }
}

/// A neuron mode per neuron from `rng`, with at least one of each.
fn mixed_modes(rng: &mut Rng) -> [NeuronMode; 4] {
    loop {
        let m = [0; 4].map(|_| {
            if rng.below(2) == 0 {
                NeuronMode::Sequential
            } else {
                NeuronMode::Parallel
            }
        });
        if m.contains(&NeuronMode::Sequential) && m.contains(&NeuronMode::Parallel) {
            return m;
        }
    }
}

#[test]
fn handmade_parallel_and_mixed_cases_ort_equals_core_float() {
    let Some(env) = env_or_skip() else { return };
    for seed in 0..20u64 {
        // Every third all-parallel case has parameters that are the same at every step.
        let bytes = handmade_with(seed, Some([NeuronMode::Parallel; 4]), seed % 3 == 0);
        compare(
            &env.python,
            &bytes,
            &format!("handmade parallel({seed})"),
            seed,
        );
        let modes = mixed_modes(&mut Rng(seed ^ 0x0D0E5));
        let bytes = handmade_with(seed, Some(modes), seed % 4 == 1);
        compare(
            &env.python,
            &bytes,
            &format!("handmade mixed({seed}, {modes:?})"),
            seed,
        );
    }
}

#[test]
fn trainer_parallel_and_mixed_cases_ort_equals_core_float() {
    let Some(env) = env_or_skip() else { return };
    use NeuronKind::{EmPf, MemBn, Parallel};
    for seed in 0..16u64 {
        // The random trainer topologies with every neuron parallel.
        let config = random_case(seed).config().clone();
        let _describe = DescribeOnFailure(format!("random_case({seed}) parallel: {config:?}"));
        let bytes = trainer_model(&config, seed, |_| Parallel);
        compare(
            &env.python,
            &bytes,
            &format!("random_case({seed}) parallel"),
            seed,
        );
    }
    for (i, neurons) in [
        [Parallel; 4],
        [EmPf, Parallel, EmPf, Parallel],
        [Parallel, MemBn, Parallel, EmPf],
        [MemBn, MemBn, Parallel, Parallel],
    ]
    .into_iter()
    .enumerate()
    {
        for t in [1, 3] {
            let seed = 100 + 2 * i as u64 + t as u64;
            let bytes = bench_model(t, 10, i % 2 == 0, neurons, seed);
            compare(
                &env.python,
                &bytes,
                &format!("bench {neurons:?} T={t}"),
                seed,
            );
        }
    }
}

/// Conv layers of a model (FP, binary and SECA's conv1d) and its sequential neuron layers.
fn conv_and_sequential_layers(bytes: &[u8]) -> (usize, usize) {
    let model = Model::decode(bytes).unwrap();
    let (mut convs, mut seq) = (0, 0);
    for l in model.layers() {
        match l.unwrap() {
            Layer::Conv2d(_) | Layer::BinaryConv2d(_) | Layer::Seca(_) => convs += 1,
            Layer::Neuron(n) if n.mode == NeuronMode::Sequential => seq += 1,
            _ => {}
        }
    }
    (convs, seq)
}

/// Count of each op type in the exported graph of `bytes`.
fn op_counts(bytes: &[u8]) -> std::collections::BTreeMap<String, usize> {
    let model = Model::decode(bytes).unwrap();
    let g = to_onnx_proto(&model).unwrap().graph.unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for n in &g.node {
        *counts.entry(n.op_type.clone().unwrap()).or_insert(0) += 1;
    }
    counts
}

/// Every stateless layer runs once on all `T` steps (batched), whatever the neurons; only the
/// sequential neurons' elementwise update is unrolled. Invariant, for every neuron mix:
/// `Conv` nodes = conv layers (FP, binary, SECA's conv1d), and `Concat` ≤ sequential neuron
/// layers, `Split` ≤ sequential neuron layers (one of each at most per sequential neuron: join
/// its spikes into the batched run, split its batched input; the output sum adds a sequential
/// last layer's steps with `Sum`, so it needs no `Concat`). A model without sequential neurons
/// has neither.
#[test]
fn batched_export_has_no_per_step_convs() {
    use NeuronKind::{EmPf, MemBn, Parallel};
    let t = 4;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, neurons) in [
        [Parallel; 4],
        [EmPf; 4],
        [MemBn; 4],
        [EmPf, Parallel, EmPf, Parallel],
        [Parallel, MemBn, Parallel, EmPf],
        [MemBn, EmPf, Parallel, EmPf],
    ]
    .into_iter()
    .enumerate()
    {
        for seca in [false, true] {
            let tag = format!("bench{} {neurons:?}", if seca { "+SECA" } else { "" });
            cases.push((tag, bench_model(t, 28, seca, neurons, 1 + i as u64)));
        }
    }
    for seed in 0..8u64 {
        let case = random_case(seed);
        cases.push((
            format!("random_case({seed})"),
            export_float(&case).expect("export"),
        ));
        let config = case.config().clone();
        cases.push((
            format!("random_case({seed}) parallel"),
            trainer_model(&config, seed, |_| Parallel),
        ));
        cases.push((format!("handmade({seed})"), handmade(seed)));
        cases.push((
            format!("handmade({seed}) parallel"),
            handmade_with(seed, Some([NeuronMode::Parallel; 4]), seed % 2 == 0),
        ));
        cases.push((
            format!("handmade({seed}) sequential"),
            handmade_with(seed, Some([NeuronMode::Sequential; 4]), seed % 2 == 1),
        ));
        let modes = mixed_modes(&mut Rng(seed ^ 0x0D0E5));
        cases.push((
            format!("handmade({seed}) {modes:?}"),
            handmade_with(seed, Some(modes), false),
        ));
    }
    let mut seen_seq_t = false;
    for (tag, bytes) in &cases {
        let steps = Model::decode(bytes).unwrap().time_steps();
        let ops = op_counts(bytes);
        let (convs, seq) = conv_and_sequential_layers(bytes);
        let n = |op: &str| ops.get(op).copied().unwrap_or(0);
        assert_eq!(n("Conv"), convs, "{tag}, T={steps}: {ops:?}");
        assert!(
            n("Concat") <= seq,
            "{tag}, T={steps}: {seq} sequential, {ops:?}"
        );
        assert!(
            n("Split") <= seq,
            "{tag}, T={steps}: {seq} sequential, {ops:?}"
        );
        seen_seq_t |= seq > 0 && steps > 1;
        if tag.starts_with("bench") && !tag.contains("SECA") {
            println!("{tag}, T={steps}: {ops:?}");
        }
    }
    assert!(seen_seq_t, "some case has sequential neurons over T > 1");
}

#[test]
fn missing_or_corrupt_library_is_a_typed_error() {
    // Any valid ONNX graph will do; the library fails before it is read.
    let bytes = handmade(4);
    let model = Model::decode(&bytes).unwrap();
    let onnx = to_onnx(&model).unwrap();
    let absent = Path::new("/nonexistent/empf/libonnxruntime.so.1.31.1");
    match OrtModel::load_with_library(absent, &onnx, ExecutionProvider::Cpu) {
        Err(OrtError::LibraryMissing { path }) => assert_eq!(path, absent),
        other => panic!("expected LibraryMissing, got {other:?}"),
    }
    let corrupt = std::env::temp_dir().join(format!(
        "empf_corrupt_libonnxruntime_{}.so",
        std::process::id()
    ));
    std::fs::write(&corrupt, b"this is not a shared library").unwrap();
    let r = OrtModel::load_with_library(&corrupt, &onnx, ExecutionProvider::Cpu);
    let _ = std::fs::remove_file(&corrupt);
    match r {
        // Not yet loaded: dlopen fails. Already loaded (another test ran first): refused.
        Err(OrtError::LibraryLoad { .. }) | Err(OrtError::OtherLibraryLoaded { .. }) => {}
        other => panic!("expected LibraryLoad or OtherLibraryLoaded, got {other:?}"),
    }
}

#[test]
fn gpu_providers_give_a_named_error_when_unavailable() {
    let Some(_env) = env_or_skip() else { return };
    let bytes = handmade(4);
    let model = Model::decode(&bytes).unwrap();
    let onnx = to_onnx(&model).unwrap();
    for (ep, name) in [
        (ExecutionProvider::Cuda, "CUDAExecutionProvider"),
        (ExecutionProvider::TensorRt, "TensorrtExecutionProvider"),
    ] {
        match OrtModel::load(&onnx, ep) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains(name), "{e}"),
        }
    }
}

/// `bytes` calibrated on 16 random inputs and quantised by `empf_core::quant`, or why not.
fn calibrated(bytes: &[u8], seed: u64) -> Result<Vec<u8>, empf_core::Error> {
    let model = Model::decode(bytes).expect("decode");
    let n = model.input_shape().numel();
    let mut rng = Rng(seed ^ 0xCA11_B8A7);
    let samples: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..n).map(|_| rng.range(-1.0, 2.0)).collect())
        .collect();
    let cal = empf_core::quant::calibrate(&model, samples.iter().map(|s| s.as_slice()))?;
    empf_core::quant::quantize(&model, &cal)
}

/// Runs `onnx.checker.check_model(full_check=True)` on every file in one Python process.
fn check_all_with_onnx_checker(py: &Path, files: &[(String, Vec<u8>)]) {
    // One directory per call: the integer and QDQ tests run in parallel in one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("empf_ort_int_{}_{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for (i, (_, onnx)) in files.iter().enumerate() {
        let p = dir.join(format!("{i}.onnx"));
        std::fs::write(&p, onnx).unwrap();
        paths.push(p);
    }
    let out = Command::new(py)
        .arg("-c")
        .arg(
            "import onnx,sys\nfor f in sys.argv[1:]:\n    \
             onnx.checker.check_model(onnx.load(f), full_check=True)\nprint(len(sys.argv)-1)",
        )
        .args(&paths)
        .output()
        .expect("run EMPF_PYTHON");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "onnx.checker rejected an integer or QDQ graph ({} files):\n{}",
        files.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exports the integer path of calibrated `bytes`, runs a batch through ORT and requires the
/// int32 logits to equal `core`'s `infer_fixed` exactly (both modes). Returns the ONNX bytes.
fn compare_integer(bytes: &[u8], tag: &str, seed: u64) -> Vec<u8> {
    let model = Model::decode(bytes).unwrap_or_else(|e| panic!("{tag}: decode: {e}"));
    let onnx = to_onnx_integer(&model).unwrap_or_else(|e| panic!("{tag}: to_onnx_integer: {e}"));
    let mut ort = OrtModel::load(&onnx, ExecutionProvider::Cpu)
        .unwrap_or_else(|e| panic!("{tag}: ORT load: {e}"));
    let n = model.input_shape().numel();
    let k = model.classes();
    let scale = model.fixed_meta().unwrap().input_scale;
    let mut rng = Rng(seed ^ 0x1A7E);
    // Random inputs, plus one at exact rounding ties (x / scale = j + 0.5) and one far out of
    // range (clamped to ±127).
    let mut x: Vec<f32> = (0..3 * n).map(|_| rng.range(-1.0, 2.0)).collect();
    x.extend((0..n).map(|j| ((j % 7) as f32 - 3.0 + 0.5) * scale));
    x.extend((0..n).map(|j| if j % 2 == 0 { 1e6 } else { -1e6 }));
    let batch = x.len() / n;
    let y = ort
        .run_integer(&x, batch)
        .unwrap_or_else(|e| panic!("{tag}: ORT run: {e}"));
    assert_eq!(y.len(), batch * k, "{tag}: ORT output length");
    let mut arena = vec![0u32; model.arena_bytes() / 4];
    let mut q = vec![0i8; n];
    for b in 0..batch {
        model
            .quantize_input(&x[b * n..(b + 1) * n], &mut q)
            .unwrap();
        for mode in [Mode::Sequential, Mode::Parallel] {
            let mut core = vec![0i32; k];
            model.infer_fixed(&q, mode, &mut arena, &mut core).unwrap();
            assert_eq!(
                &y[b * k..(b + 1) * k],
                &core[..],
                "{tag} sample {b} ({mode:?}): ORT integer graph vs core infer_fixed"
            );
        }
    }
    onnx
}

/// The conformance models, calibrated: random trainer nets, the handmade residual/SECA_II nets
/// (default, all-parallel and mixed neurons) and bench topologies with and without SECA.
fn integer_cases() -> Vec<(String, Vec<u8>, u64)> {
    use NeuronKind::{EmPf, MemBn, Parallel};
    let mut cases = Vec::new();
    for seed in 0..24u64 {
        let net = random_case(seed);
        cases.push((
            // The description, so that a failing integer or QDQ case names its network.
            format!("random_case({seed}) {:?}", net.config()),
            export_float(&net).expect("export"),
            seed,
        ));
    }
    for seed in 0..12u64 {
        cases.push((format!("handmade({seed})"), handmade(seed), seed));
        cases.push((
            format!("handmade parallel({seed})"),
            handmade_with(seed, Some([NeuronMode::Parallel; 4]), seed % 3 == 0),
            seed,
        ));
        let modes = mixed_modes(&mut Rng(seed ^ 0x0D0E5));
        cases.push((
            format!("handmade mixed({seed})"),
            handmade_with(seed, Some(modes), seed % 4 == 1),
            seed,
        ));
    }
    for (i, neurons) in [
        [EmPf; 4],
        [Parallel; 4],
        [EmPf, Parallel, MemBn, Parallel],
        [MemBn, MemBn, Parallel, EmPf],
    ]
    .into_iter()
    .enumerate()
    {
        for t in [1, 3] {
            let seed = 200 + 2 * i as u64 + t as u64;
            cases.push((
                format!("bench {neurons:?} T={t}"),
                bench_model(t, 10, i % 2 == 1, neurons, seed),
                seed,
            ));
        }
    }
    cases
}

#[test]
fn conformance_models_ort_integer_equals_core_fixed() {
    let Some(env) = env_or_skip() else { return };
    let mut exported = Vec::new();
    let mut skipped = Vec::new();
    for (tag, bytes, seed) in integer_cases() {
        match calibrated(&bytes, seed) {
            Ok(q) => exported.push((tag.clone(), compare_integer(&q, &tag, seed))),
            // The quantiser's own limits (not the exporter's): reported, and bounded below.
            Err(e) => skipped.push(format!("{tag}: {e}")),
        }
    }
    println!(
        "{} calibrated models: ORT integer graph == core infer_fixed, bit for bit; {} not quantisable: {skipped:?}",
        exported.len(),
        skipped.len()
    );
    assert!(
        skipped.len() * 10 <= exported.len(),
        "too many models failed to quantise: {skipped:?}"
    );
    check_all_with_onnx_checker(&env.python, &exported);
}

/// How far a QDQ graph's int32 logits are from `core`'s `infer_fixed` on one model.
#[derive(Default, Debug, Clone, Copy)]
struct QdqStats {
    /// Largest |qdq − core| over the batch, over the model's logit range (max − min of `core`'s
    /// logits over the batch).
    max_rel: f64,
    /// Median of the per-logit relative differences.
    median_rel: f64,
    /// Samples whose `core` top-1 margin exceeds 10 % of the logit range.
    clear: usize,
    /// Of those, samples where the QDQ graph picks another class.
    clear_differ: usize,
}

/// Exports the QDQ graph of calibrated `bytes`, runs 16 inputs (14 random, one at rounding ties,
/// one far out of range) through ORT and compares the int32 logits with `core`'s `infer_fixed`
/// (sequential mode; both modes are equal, see above). Returns the ONNX bytes and the stats.
fn compare_qdq(bytes: &[u8], tag: &str, seed: u64, act: QdqActivations) -> (Vec<u8>, QdqStats) {
    let model = Model::decode(bytes).unwrap_or_else(|e| panic!("{tag}: decode: {e}"));
    let onnx = to_onnx_qdq(&model, act).unwrap_or_else(|e| panic!("{tag}: to_onnx_qdq: {e}"));
    let mut ort = OrtModel::load(&onnx, ExecutionProvider::Cpu)
        .unwrap_or_else(|e| panic!("{tag}: ORT load: {e}"));
    let n = model.input_shape().numel();
    let k = model.classes();
    let scale = model.fixed_meta().unwrap().input_scale;
    let mut rng = Rng(seed ^ 0x0D0D);
    let mut x: Vec<f32> = (0..14 * n).map(|_| rng.range(-1.0, 2.0)).collect();
    x.extend((0..n).map(|j| ((j % 7) as f32 - 3.0 + 0.5) * scale));
    x.extend((0..n).map(|j| if j % 2 == 0 { 1e6 } else { -1e6 }));
    let batch = x.len() / n;
    let y = ort
        .run_integer(&x, batch)
        .unwrap_or_else(|e| panic!("{tag}: ORT run: {e}"));
    assert_eq!(y.len(), batch * k, "{tag}: ORT output length");
    let mut arena = vec![0u32; model.arena_bytes() / 4];
    let mut q = vec![0i8; n];
    let mut core = vec![0i32; batch * k];
    for b in 0..batch {
        model
            .quantize_input(&x[b * n..(b + 1) * n], &mut q)
            .unwrap();
        model
            .infer_fixed(
                &q,
                Mode::Sequential,
                &mut arena,
                &mut core[b * k..(b + 1) * k],
            )
            .unwrap();
    }
    let (lo, hi) = core
        .iter()
        .fold((i32::MAX, i32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let range = ((hi as i64 - lo as i64) as f64).max(1.0);
    let mut rel: Vec<f64> = y
        .iter()
        .zip(&core)
        .map(|(&a, &c)| (a as i64 - c as i64).abs() as f64 / range)
        .collect();
    rel.sort_by(f64::total_cmp);
    let mut s = QdqStats {
        max_rel: *rel.last().unwrap(),
        median_rel: rel[rel.len() / 2],
        ..Default::default()
    };
    let top = |r: &[i32]| empf_core::top_k::<2, i32>(r);
    for b in 0..batch {
        let c = &core[b * k..(b + 1) * k];
        if k < 2 {
            continue;
        }
        let t = top(c);
        let margin = (t[0].1 as i64 - t[1].1 as i64) as f64;
        if margin > 0.1 * range {
            s.clear += 1;
            s.clear_differ += usize::from(top(&y[b * k..(b + 1) * k])[0].0 != t[0].0);
        }
    }
    (onnx, s)
}

#[test]
fn conformance_models_ort_qdq_within_bound_of_core_fixed() {
    let Some(env) = env_or_skip() else { return };
    for act in [QdqActivations::Uint8, QdqActivations::Int8] {
        let mut exported = Vec::new();
        let mut stats = Vec::new();
        for (tag, bytes, seed) in integer_cases() {
            // Models the quantiser refuses are counted in the integer test above.
            if let Ok(q) = calibrated(&bytes, seed) {
                let (onnx, s) = compare_qdq(&q, &tag, seed, act);
                stats.push((tag.clone(), s));
                exported.push((tag, onnx));
            }
        }
        let mut worst: Vec<&(String, QdqStats)> = stats.iter().collect();
        worst.sort_by(|a, b| b.1.max_rel.total_cmp(&a.1.max_rel));
        let mut med: Vec<f64> = stats.iter().map(|(_, s)| s.median_rel).collect();
        med.sort_by(f64::total_cmp);
        let clear: usize = stats.iter().map(|(_, s)| s.clear).sum();
        let clear_differ: usize = stats.iter().map(|(_, s)| s.clear_differ).sum();
        println!(
            "{act:?}: {} models; max |qdq − core| / logit range: worst {:.4} ({}), median over models of the per-model median {:.4}; top-1 differs on {clear_differ} of {clear} samples with a margin > 10 % of the range",
            stats.len(),
            worst[0].1.max_rel,
            worst[0].0,
            med[med.len() / 2],
        );
        for (tag, s) in worst.iter().take(5) {
            println!("  {tag}: {s:?}");
        }
        assert!(stats.len() >= 60, "too few quantisable models");
        let (max_bound, median_bound) = match act {
            QdqActivations::Uint8 => (QDQ_UINT8_MAX_REL, QDQ_MEDIAN_REL),
            QdqActivations::Int8 => (QDQ_INT8_MAX_REL, QDQ_MEDIAN_REL),
        };
        for (tag, s) in &stats {
            assert!(
                s.max_rel <= max_bound,
                "{act:?} {tag}: max |qdq − core| is {:.4} of the logit range (bound {max_bound})",
                s.max_rel
            );
        }
        assert!(
            med[med.len() / 2] <= median_bound,
            "{act:?}: median relative difference {:.4} (bound {median_bound})",
            med[med.len() / 2]
        );
        assert!(
            clear_differ * 100 <= clear,
            "{act:?}: top-1 differs on {clear_differ} of {clear} clear samples (bound 1 %)"
        );
        check_all_with_onnx_checker(&env.python, &exported);
    }
}

/// Bounds of the QDQ graphs against `core`'s integer path on the conformance models (random,
/// untrained, calibrated on 16 random inputs): per model, the largest |difference| of a logit
/// over the model's logit range (measured worst: 0.48 uint8, 0.58 int8, both on the T = 1 Mem-BN
/// bench net); the median over models of each model's median difference (measured 0.0007 and
/// 0.0008). The int8 currents after each ±1 layer (127 steps over the calibrated range) and the
/// rounded pool means are what moves a logit; the top-1 class of every clear sample stays.
const QDQ_UINT8_MAX_REL: f64 = 0.6;
const QDQ_INT8_MAX_REL: f64 = 0.7;
const QDQ_MEDIAN_REL: f64 = 0.005;
