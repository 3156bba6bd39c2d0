//! `edge-infer`: run and benchmark `.empf` models.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use empf_core::Mode;
use empf_edge_infer::bench::{self, Measurement};
use empf_edge_infer::input::{load_input, read_idx, Normalize, MAX_IDX_BYTES};
use empf_edge_infer::{
    arena_words_capped, check_threads, decode_model, infer_many, infer_native, read_model,
    thread_pool, Scores,
};

#[derive(Parser)]
#[command(name = "edge-infer", version, about = "Run and benchmark empf models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    Native,
    Ort,
}

#[derive(Clone, Copy, ValueEnum)]
enum Ep {
    Cpu,
    Cuda,
    Tensorrt,
}

#[derive(Clone, Copy, ValueEnum)]
enum PathArg {
    Float,
    Integer,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Sequential,
    Parallel,
}

#[derive(Clone, Copy, ValueEnum)]
enum NormArg {
    FashionMnist,
    Mnist,
    None,
}

#[derive(Subcommand)]
enum Cmd {
    /// Classify one input (IDX3 images, .npy float32, or raw .f32).
    Run {
        /// Model file (.empf).
        model: PathBuf,
        /// Input file.
        #[arg(long)]
        input: PathBuf,
        /// Image index in IDX3 files and (N,C,H,W) arrays.
        #[arg(long)]
        index: Option<usize>,
        #[arg(long, value_enum, default_value = "native")]
        engine: Engine,
        #[arg(long, value_enum, default_value = "cpu")]
        ep: Ep,
        #[arg(long, value_enum, default_value = "float")]
        path: PathArg,
        #[arg(long, value_enum, default_value = "sequential")]
        mode: ModeArg,
        /// Normalisation of IDX3 u8 pixels (float inputs are used as they are).
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        normalize: NormArg,
        /// Cap on the inference arena, MiB.
        #[arg(long, default_value_t = empf_edge_infer::DEFAULT_MAX_ARENA_MIB)]
        max_arena_mib: u64,
    },
    /// Test-set accuracy through every engine: native float, native integer and ONNX Runtime.
    Eval {
        /// Model file (.empf).
        model: PathBuf,
        /// idx3 images (raw or .gz).
        #[arg(
            long,
            default_value = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
        )]
        images: PathBuf,
        /// idx1 labels (raw or .gz).
        #[arg(
            long,
            default_value = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
        )]
        labels: PathBuf,
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        normalize: NormArg,
        /// Use only the first N images (at least 1).
        #[arg(long)]
        limit: Option<usize>,
        /// Native threads (default: every core; at most the available parallelism).
        #[arg(long)]
        threads: Option<usize>,
        /// Cap on the inference arenas of all threads together, MiB.
        #[arg(long, default_value_t = empf_edge_infer::DEFAULT_MAX_ARENA_MIB)]
        max_arena_mib: u64,
        /// The 8-bit ONNX graphs to run through ONNX Runtime (comma-separated; `none` for none).
        #[arg(
            long = "ort-8bit",
            value_enum,
            value_delimiter = ',',
            default_value = "integer,qdq-uint8,qdq-int8"
        )]
        ort_8bit: Vec<Ort8Arg>,
    },
    /// Latency, throughput and peak memory of the native paths.
    Bench {
        /// Model file (.empf).
        model: PathBuf,
        /// Total measuring time in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Threads of the "all threads" measurements (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// Cap on the inference arenas of all threads together, MiB.
        #[arg(long, default_value_t = empf_edge_infer::DEFAULT_MAX_ARENA_MIB)]
        max_arena_mib: u64,
    },
    /// Export the model as an ONNX graph: the float path, or with --integer the integer path.
    ToOnnx {
        /// Model file (.empf).
        model: PathBuf,
        /// Output file (.onnx).
        #[arg(short, long)]
        output: PathBuf,
        /// Write the integer path (8-bit spikes, int8 ±1 weights, ConvInteger/MatMulInteger,
        /// int64 requantisation): int32 logits equal to empf-core's integer path.
        #[arg(long, conflicts_with = "qdq")]
        integer: bool,
        /// Write the integer path as a QDQ graph (QuantizeLinear/DequantizeLinear around the ±1
        /// layers, int8 weights with per-channel scales, float requantisation and neurons):
        /// `uint8` spikes for ONNX Runtime, `int8` spikes (scale 2) for TensorRT. Int32 logits
        /// within the README's bound of empf-core's integer path.
        #[arg(long, value_enum)]
        qdq: Option<QdqArg>,
    },
}

/// An 8-bit ONNX graph of `eval --ort-8bit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Ort8Arg {
    /// `to-onnx --integer` (bit-exact).
    Integer,
    /// `to-onnx --qdq uint8`.
    QdqUint8,
    /// `to-onnx --qdq int8`.
    QdqInt8,
    /// No 8-bit graph.
    None,
}

impl Ort8Arg {
    fn graph(self) -> Option<Graph> {
        use empf_edge_infer::onnx::QdqActivations as A;
        match self {
            Ort8Arg::Integer => Some(Graph::Integer),
            Ort8Arg::QdqUint8 => Some(Graph::Qdq(A::Uint8)),
            Ort8Arg::QdqInt8 => Some(Graph::Qdq(A::Int8)),
            Ort8Arg::None => None,
        }
    }
}

/// Activation type of the QDQ graph.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum QdqArg {
    /// uint8 spikes, scale 1 (exact spikes; ONNX Runtime).
    Uint8,
    /// int8 spikes, scale 2, zero point 0 (TensorRT's int8 activations).
    Int8,
}

impl QdqArg {
    fn act(self) -> empf_edge_infer::onnx::QdqActivations {
        match self {
            QdqArg::Uint8 => empf_edge_infer::onnx::QdqActivations::Uint8,
            QdqArg::Int8 => empf_edge_infer::onnx::QdqActivations::Int8,
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            model,
            input,
            index,
            engine,
            ep,
            path,
            mode,
            normalize,
            max_arena_mib,
        } => run(
            model,
            input,
            index,
            engine,
            ep,
            path,
            mode,
            normalize,
            max_arena_mib,
        ),
        Cmd::Bench {
            model,
            seconds,
            threads,
            max_arena_mib,
        } => bench_cmd(model, seconds, threads, max_arena_mib),
        Cmd::Eval {
            model,
            images,
            labels,
            normalize,
            limit,
            threads,
            max_arena_mib,
            ort_8bit,
        } => eval_cmd(
            model,
            images,
            labels,
            normalize,
            limit,
            threads,
            max_arena_mib,
            &ort_8bit,
        ),
        Cmd::ToOnnx {
            model,
            output,
            integer,
            qdq,
        } => {
            let bytes = read_model(&model)?;
            let m = decode_model(&model, &bytes)?;
            let onnx = if let Some(q) = qdq {
                empf_edge_infer::onnx::to_onnx_qdq(&m, q.act())
            } else if integer {
                empf_edge_infer::onnx::to_onnx_integer(&m)
            } else {
                empf_edge_infer::onnx::to_onnx(&m)
            }
            .with_context(|| format!("{}: cannot export to ONNX", model.display()))?;
            std::fs::write(&output, &onnx)
                .with_context(|| format!("{}: cannot write ONNX file", output.display()))?;
            println!("wrote {} ({} bytes)", output.display(), onnx.len());
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    model_path: PathBuf,
    input: PathBuf,
    index: Option<usize>,
    engine: Engine,
    ep: Ep,
    path: PathArg,
    mode: ModeArg,
    normalize: NormArg,
    max_arena_mib: u64,
) -> Result<()> {
    let bytes = read_model(&model_path)?;
    let model = decode_model(&model_path, &bytes)?;
    let norm = norm_of(normalize);
    let x = load_input(&input, index, model.input_shape(), norm)?;
    let mode = match mode {
        ModeArg::Sequential => Mode::Sequential,
        ModeArg::Parallel => Mode::Parallel,
    };
    if let Engine::Ort = engine {
        let integer = matches!(path, PathArg::Integer);
        let scores = if integer {
            let fm = model.fixed_meta().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: model has no integer path (not calibrated/quantised)",
                    model_path.display()
                )
            })?;
            Scores::Integer {
                logits: ort_logits_integer(&model_path, &model, &x, 1, ep, None, Graph::Integer)?,
                logit_scale: fm.logit_scale,
            }
        } else {
            Scores::Float(ort_logits(&model_path, &model, &x, 1, ep, None)?)
        };
        println!(
            "model: {} (engine: ort, ep: {}, path: {})",
            model_path.display(),
            ep_name(ep),
            if integer { "integer" } else { "float" }
        );
        print_scores(&scores);
        return Ok(());
    }
    let integer = matches!(path, PathArg::Integer);
    let scores = infer_native(&model_path, &model, &x, integer, mode, max_arena_mib)
        .with_context(|| format!("running {}", model_path.display()))?;
    let s = model.input_shape();
    println!(
        "model: {} (T={}, input {}x{}x{}, {} classes)",
        model_path.display(),
        model.time_steps(),
        s.c,
        s.h,
        s.w,
        model.classes()
    );
    println!(
        "engine: native, path: {}, mode: {:?}",
        if integer { "integer" } else { "float" },
        mode
    );
    print_scores(&scores);
    Ok(())
}

fn print_scores(scores: &Scores) {
    println!("class: {}", scores.class());
    println!("scores:");
    match &scores {
        Scores::Float(v) => {
            for (i, x) in v.iter().enumerate() {
                println!("  {i}: {x:.6}");
            }
        }
        Scores::Integer {
            logits,
            logit_scale,
        } => {
            println!("  (integer logits; real = q * logit_scale {logit_scale:e})");
            for (i, &q) in logits.iter().enumerate() {
                println!("  {i}: {q} ({:.6})", q as f32 * logit_scale);
            }
        }
    }
    let top: Vec<String> = scores
        .top3()
        .iter()
        .map(|(i, v)| format!("{i} ({v:.4})"))
        .collect();
    println!("top-3: {}", top.join(", "));
}

fn ep_name(ep: Ep) -> &'static str {
    match ep {
        Ep::Cpu => "cpu",
        Ep::Cuda => "cuda",
        Ep::Tensorrt => "tensorrt",
    }
}

/// Which ONNX graph ORT runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Graph {
    Float,
    Integer,
    /// The QDQ graph.
    Qdq(empf_edge_infer::onnx::QdqActivations),
}

impl Graph {
    /// The 8-bit graphs, as `eval --ort-8bit` and `bench` name them.
    fn label(self) -> &'static str {
        use empf_edge_infer::onnx::QdqActivations as A;
        match self {
            Graph::Float => "ort float",
            Graph::Integer => "ort 8-bit integer",
            Graph::Qdq(A::Uint8) => "ort 8-bit qdq uint8",
            Graph::Qdq(A::Int8) => "ort 8-bit qdq int8",
        }
    }
}

/// A session of the model's float or integer graph (`threads`: ORT intra-op threads).
#[cfg(feature = "ort")]
fn ort_session(
    path: &std::path::Path,
    model: &empf_core::Model<'_>,
    graph: Graph,
    ep: Ep,
    threads: Option<usize>,
) -> Result<empf_edge_infer::ort_engine::OrtModel> {
    use empf_edge_infer::ort_engine::{ExecutionProvider, OrtModel};
    let onnx = match graph {
        Graph::Float => empf_edge_infer::onnx::to_onnx(model),
        Graph::Integer => empf_edge_infer::onnx::to_onnx_integer(model),
        Graph::Qdq(act) => empf_edge_infer::onnx::to_onnx_qdq(model, act),
    }
    .with_context(|| format!("{}: cannot export to ONNX", path.display()))?;
    let ep = match ep {
        Ep::Cpu => ExecutionProvider::Cpu,
        Ep::Cuda => ExecutionProvider::Cuda,
        Ep::Tensorrt => ExecutionProvider::TensorRt,
    };
    match threads {
        Some(t) => OrtModel::load_with_threads(&onnx, ep, t),
        None => OrtModel::load(&onnx, ep),
    }
    .context("loading the model into ONNX Runtime")
}

/// Σ_t logits of `n` inputs through ONNX Runtime (the model exported with `to_onnx`).
#[cfg(feature = "ort")]
fn ort_logits(
    path: &std::path::Path,
    model: &empf_core::Model<'_>,
    x: &[f32],
    n: usize,
    ep: Ep,
    threads: Option<usize>,
) -> Result<Vec<f32>> {
    let mut m = ort_session(path, model, Graph::Float, ep, threads)?;
    ort_batches(x, n, |xb, b| Ok(m.run(xb, b)?))
}

/// Integer logits of `n` inputs through ONNX Runtime (the graph of `to_onnx_integer`).
#[cfg(feature = "ort")]
fn ort_logits_integer(
    path: &std::path::Path,
    model: &empf_core::Model<'_>,
    x: &[f32],
    n: usize,
    ep: Ep,
    threads: Option<usize>,
    graph: Graph,
) -> Result<Vec<i32>> {
    let mut m = ort_session(path, model, graph, ep, threads)?;
    ort_batches(x, n, |xb, b| Ok(m.run_integer(xb, b)?))
}

/// Runs `n` inputs in batches of at most ORT_BATCH so activations stay small for any n.
#[cfg(feature = "ort")]
fn ort_batches<T>(
    x: &[f32],
    n: usize,
    mut run: impl FnMut(&[f32], usize) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let per = x.len() / n.max(1);
    let mut out = Vec::new();
    for start in (0..n).step_by(ORT_BATCH) {
        let b = ORT_BATCH.min(n - start);
        out.extend(run(&x[start * per..(start + b) * per], b).context("running ONNX Runtime")?);
    }
    Ok(out)
}

/// Largest batch handed to ONNX Runtime in one run.
#[cfg(feature = "ort")]
const ORT_BATCH: usize = 100;

#[cfg(not(feature = "ort"))]
const NO_ORT: &str = "this binary was built without the `ort` feature (cargo build -p empf-edge-infer --features ort)";

#[cfg(not(feature = "ort"))]
fn ort_logits(
    _: &std::path::Path,
    _: &empf_core::Model<'_>,
    _: &[f32],
    _: usize,
    _: Ep,
    _: Option<usize>,
) -> Result<Vec<f32>> {
    bail!("engine ort: {NO_ORT}")
}

#[cfg(not(feature = "ort"))]
fn ort_logits_integer(
    _: &std::path::Path,
    _: &empf_core::Model<'_>,
    _: &[f32],
    _: usize,
    _: Ep,
    _: Option<usize>,
    _: Graph,
) -> Result<Vec<i32>> {
    bail!("engine ort: {NO_ORT}")
}

/// ORT images/s on batches of `bench::BATCH` synthetic inputs (session created once, untimed).
#[cfg(feature = "ort")]
fn ort_throughput(
    path: &std::path::Path,
    model: &empf_core::Model<'_>,
    graph: Graph,
    seconds: f64,
    threads: usize,
) -> Result<f64> {
    let mut m = ort_session(path, model, graph, Ep::Cpu, Some(threads))?;
    let x: Vec<f32> = bench::synthetic_inputs(model.input_shape().numel(), bench::BATCH).concat();
    let once = |m: &mut empf_edge_infer::ort_engine::OrtModel| -> Result<()> {
        match graph {
            Graph::Float => drop(m.run(&x, bench::BATCH)?),
            Graph::Integer | Graph::Qdq(_) => drop(m.run_integer(&x, bench::BATCH)?),
        }
        Ok(())
    };
    once(&mut m)?; // warm-up
    let (t0, mut images) = (std::time::Instant::now(), 0usize);
    while images == 0 || t0.elapsed().as_secs_f64() < seconds.max(0.05) {
        once(&mut m)?;
        images += bench::BATCH;
    }
    Ok(images as f64 / t0.elapsed().as_secs_f64())
}

#[cfg(not(feature = "ort"))]
fn ort_throughput(
    _: &std::path::Path,
    _: &empf_core::Model<'_>,
    _: Graph,
    _: f64,
    _: usize,
) -> Result<f64> {
    bail!("{NO_ORT}")
}

fn norm_of(normalize: NormArg) -> Normalize {
    match normalize {
        NormArg::FashionMnist => Normalize::FashionMnist,
        NormArg::Mnist => Normalize::Mnist,
        NormArg::None => Normalize::None,
    }
}

#[allow(clippy::too_many_arguments)]
fn eval_cmd(
    model_path: PathBuf,
    images: PathBuf,
    labels: PathBuf,
    normalize: NormArg,
    limit: Option<usize>,
    threads: Option<usize>,
    max_arena_mib: u64,
    ort_8bit: &[Ort8Arg],
) -> Result<()> {
    if limit == Some(0) {
        bail!("--limit 0: nothing to evaluate (give at least 1)");
    }
    let threads = check_threads(threads)?;
    let bytes = read_model(&model_path)?;
    let model = decode_model(&model_path, &bytes)?;
    let img = read_idx(&images, 0x0803, MAX_IDX_BYTES)?;
    let lab = read_idx(&labels, 0x0801, MAX_IDX_BYTES)?;
    let (dims, ldims) = (&img.dims, &lab.dims);
    let numel = model.input_shape().numel();
    if dims.len() != 3 || dims[1] * dims[2] != numel || ldims[0] != dims[0] {
        bail!("{} / {}: {dims:?} images with {ldims:?} labels do not fit the model's {numel}-value input", images.display(), labels.display());
    }
    if dims[0] == 0 {
        bail!("{}: the file holds no images", images.display());
    }
    let classes = model.classes();
    if let Some((i, &l)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        bail!(
            "{}: label {l} of image {i} is outside the model's {classes} classes (0..={})",
            labels.display(),
            classes - 1
        );
    }
    let n = limit.unwrap_or(dims[0]).min(dims[0]);
    let norm = norm_of(normalize).pixel_norm();
    let x: Vec<f32> = img.data[..n * numel]
        .iter()
        .map(|&p| norm.apply(p))
        .collect();
    let labels = &lab.data[..n];
    let words = arena_words_capped(
        &model_path,
        &model,
        Mode::Sequential,
        threads,
        max_arena_mib,
    )?;
    let pool = thread_pool(threads)?;
    let t0 = std::time::Instant::now();
    let float = infer_many(
        &model_path,
        &model,
        &x,
        false,
        Mode::Sequential,
        &pool,
        words,
    )?;
    let native_s = t0.elapsed().as_secs_f64();
    let float: Vec<usize> = float.iter().map(Scores::class).collect();
    let integer = if model.fixed_meta().is_some() {
        let t = std::time::Instant::now();
        let s = infer_many(
            &model_path,
            &model,
            &x,
            true,
            Mode::Sequential,
            &pool,
            words,
        )?;
        Some((s, t.elapsed().as_secs_f64()))
    } else {
        None
    };
    let acc = |pred: &mut dyn Iterator<Item = usize>| -> f64 {
        100.0 * pred.zip(labels).filter(|(p, &l)| *p == l as usize).count() as f64 / n as f64
    };
    println!(
        "{}: {n} images, {threads} native threads",
        model_path.display()
    );
    println!(
        "native float:   {:.2}%  ({:.0} images/s)",
        acc(&mut float.iter().copied()),
        n as f64 / native_s
    );
    if let Some((s, secs)) = &integer {
        println!(
            "native integer: {:.2}%  ({:.0} images/s)",
            acc(&mut s.iter().map(Scores::class)),
            n as f64 / secs
        );
    }
    let t1 = std::time::Instant::now();
    let ort = ort_logits(&model_path, &model, &x, n, Ep::Cpu, Some(threads)).map(|logits| {
        logits
            .chunks(classes)
            .map(|r| empf_core::top_k::<1, f32>(r)[0].0)
            .collect::<Vec<_>>()
    });
    match ort {
        Ok(ort_pred) => {
            let differ = ort_pred.iter().zip(&float).filter(|(o, p)| o != p).count();
            println!(
                "ort (cpu):      {:.2}%  ({:.0} images/s incl. one session setup)",
                acc(&mut ort_pred.iter().copied()),
                n as f64 / t1.elapsed().as_secs_f64()
            );
            println!("ort vs native float: {differ} of {n} predictions differ");
        }
        Err(e) => println!("ort: skipped: {e:#}"),
    }
    let native_pred: Option<Vec<usize>> = integer
        .as_ref()
        .map(|(s, _)| s.iter().map(Scores::class).collect());
    let native_int = integer.as_ref().map(|(s, _)| s);
    let graphs = ort_8bit.iter().filter_map(|g| g.graph());
    for (graph, native_int) in graphs.filter_map(|g| native_int.map(|s| (g, s))) {
        let label = graph.label();
        let t2 = std::time::Instant::now();
        match ort_logits_integer(&model_path, &model, &x, n, Ep::Cpu, Some(threads), graph) {
            Ok(logits) => {
                let secs = t2.elapsed().as_secs_f64();
                let pred: Vec<usize> = logits
                    .chunks(classes)
                    .map(|r| empf_core::top_k::<1, i32>(r)[0].0)
                    .collect();
                let mut logit_differ = 0usize;
                let mut max_diff = 0i64;
                for (o, s) in logits.chunks(classes).zip(native_int) {
                    if let Scores::Integer { logits: q, .. } = s {
                        let d = o
                            .iter()
                            .zip(q)
                            .map(|(a, b)| (*a as i64 - *b as i64).abs())
                            .max()
                            .unwrap_or(0);
                        logit_differ += usize::from(d != 0);
                        max_diff = max_diff.max(d);
                    }
                }
                let pred_differ = native_pred
                    .as_ref()
                    .map_or(0, |np| np.iter().zip(&pred).filter(|(a, b)| a != b).count());
                println!(
                    "{label} (cpu): {:.2}%  ({:.0} images/s incl. one session setup)",
                    acc(&mut pred.iter().copied()),
                    n as f64 / secs
                );
                println!(
                    "{label} vs native integer: {logit_differ} of {n} images differ in some logit (max |diff| {max_diff}), {pred_differ} predictions differ"
                );
            }
            Err(e) => println!("{label}: skipped: {e:#}"),
        }
    }
    Ok(())
}

fn find(ms: &[Measurement], path: bench::Path, mode: Mode) -> Option<&Measurement> {
    ms.iter().find(|m| m.path == path && m.mode == mode)
}

fn bench_cmd(
    model_path: PathBuf,
    seconds: f64,
    threads: Option<usize>,
    max_arena_mib: u64,
) -> Result<()> {
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("--seconds must be a non-negative number");
    }
    let threads = check_threads(threads)?;
    let bytes = read_model(&model_path)?;
    let model = decode_model(&model_path, &bytes)?;
    arena_words_capped(&model_path, &model, Mode::Parallel, threads, max_arena_mib)?;
    println!(
        "bench: {} ({} threads for \"all threads\", batch {})",
        model_path.display(),
        threads,
        bench::BATCH
    );
    // Native gets 3/5 of the time; ORT float and the three 8-bit graphs 1/10 each.
    let ms = bench::run_native(&model, seconds * 0.6, threads)?;
    for m in &ms {
        let name = match m.path {
            bench::Path::Float => "float",
            bench::Path::Integer => "integer",
        };
        let mode = format!("{:?}", m.mode).to_lowercase();
        println!(
            "native {name:<7} {mode:<10} latency p50 {:.4} ms  p99 {:.4} ms  ({} calls)",
            m.p50_ms, m.p99_ms, m.calls
        );
        println!(
            "native {name:<7} {mode:<10} throughput {:.1} images/s on 1 thread, {:.1} images/s on {} threads (batch {})",
            m.images_per_s_1,
            m.images_per_s,
            m.threads,
            bench::BATCH
        );
    }
    if model.fixed_meta().is_none() {
        println!("integer: skipped: model has no integer path");
    }
    for mode in [Mode::Sequential, Mode::Parallel] {
        if let (Some(f), Some(i)) = (
            find(&ms, bench::Path::Float, mode),
            find(&ms, bench::Path::Integer, mode),
        ) {
            println!(
                "ratio integer/float {:<10} p50 latency {:.3}x  throughput {:.3}x",
                format!("{mode:?}").to_lowercase(),
                i.p50_ms / f.p50_ms,
                i.images_per_s / f.images_per_s
            );
        }
    }
    for p in [bench::Path::Float, bench::Path::Integer] {
        if let (Some(s), Some(par)) = (find(&ms, p, Mode::Sequential), find(&ms, p, Mode::Parallel))
        {
            println!(
                "ratio parallel/sequential {:<7} p50 latency {:.3}x  throughput {:.3}x",
                format!("{p:?}").to_lowercase(),
                par.p50_ms / s.p50_ms,
                par.images_per_s / s.images_per_s
            );
        }
    }
    match bench::peak_rss_kib() {
        Some(k) => println!("peak rss: {:.1} MiB (VmHWM {k} kB)", k as f64 / 1024.0),
        None => println!("peak rss: unavailable (no /proc/self/status)"),
    }
    // The summary: images/s of each engine at batch 64, against native float on one thread.
    let mut rows: Vec<(String, f64)> = Vec::new();
    if let Some(m) = find(&ms, bench::Path::Float, Mode::Sequential) {
        rows.push(("native float, 1 thread".into(), m.images_per_s_1));
        rows.push((format!("native float, {threads} threads"), m.images_per_s));
    }
    if let Some(m) = find(&ms, bench::Path::Integer, Mode::Sequential) {
        rows.push(("native integer, 1 thread".into(), m.images_per_s_1));
        rows.push((format!("native integer, {threads} threads"), m.images_per_s));
    }
    match ort_throughput(&model_path, &model, Graph::Float, seconds / 10.0, threads) {
        Ok(r) => {
            println!(
                "ort     float      throughput {r:.1} images/s (batch {}, {threads} threads)",
                bench::BATCH
            );
            rows.push((format!("ort float, {threads} threads"), r));
        }
        Err(e) => println!("ort: skipped: {e:#}"),
    }
    if model.fixed_meta().is_some() {
        use empf_edge_infer::onnx::QdqActivations as A;
        for graph in [Graph::Integer, Graph::Qdq(A::Uint8), Graph::Qdq(A::Int8)] {
            let label = graph.label();
            match ort_throughput(&model_path, &model, graph, seconds / 10.0, threads) {
                Ok(r) => {
                    println!(
                        "{label:<20} throughput {r:.1} images/s (batch {}, {threads} threads)",
                        bench::BATCH
                    );
                    rows.push((format!("{label}, {threads} threads"), r));
                }
                Err(e) => println!("{label}: skipped: {e:#}"),
            }
        }
    }
    if let Some(&(_, base)) = rows.first() {
        println!(
            "summary (batch {}, sequential mode for native):",
            bench::BATCH
        );
        for (name, r) in &rows {
            println!(
                "  {name:<32} {r:>9.1} images/s  {:>6.2}x native float 1 thread",
                r / base
            );
        }
        if let Some((_, ort)) = rows.iter().find(|(n, _)| n.starts_with("ort float")) {
            println!("ratio ort/native-float throughput {:.3}x", ort / base);
        }
    }
    Ok(())
}
