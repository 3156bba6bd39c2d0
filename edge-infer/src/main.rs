//! `edge-infer`: run and benchmark `.empf` models.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use empf_core::Mode;
use empf_edge_infer::bench::{self, Measurement};
use empf_edge_infer::input::{load_input, Normalize};
use empf_edge_infer::{decode_model, infer_native, read_model, Scores};

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
        /// Use only the first N images.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Latency, throughput and peak memory of the native paths.
    Bench {
        /// Model file (.empf).
        model: PathBuf,
        /// Total measuring time in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Export the float path as an ONNX model.
    ToOnnx {
        /// Model file (.empf).
        model: PathBuf,
        /// Output file (.onnx).
        #[arg(short, long)]
        output: PathBuf,
    },
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
        } => run(model, input, index, engine, ep, path, mode, normalize),
        Cmd::Bench { model, seconds } => bench_cmd(model, seconds),
        Cmd::Eval {
            model,
            images,
            labels,
            normalize,
            limit,
        } => eval_cmd(model, images, labels, normalize, limit),
        Cmd::ToOnnx { model, output } => {
            let bytes = read_model(&model)?;
            let m = decode_model(&model, &bytes)?;
            let onnx = empf_edge_infer::onnx::to_onnx(&m)
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
) -> Result<()> {
    let bytes = read_model(&model_path)?;
    let model = decode_model(&model_path, &bytes)?;
    let norm = match normalize {
        NormArg::FashionMnist => Normalize::FashionMnist,
        NormArg::Mnist => Normalize::Mnist,
        NormArg::None => Normalize::None,
    };
    let x = load_input(&input, index, model.input_shape(), norm)?;
    let mode = match mode {
        ModeArg::Sequential => Mode::Sequential,
        ModeArg::Parallel => Mode::Parallel,
    };
    if let Engine::Ort = engine {
        if matches!(path, PathArg::Integer) {
            bail!("--path integer runs natively only: the ONNX graph is the float path");
        }
        let logits = ort_logits(&model_path, &model, &x, 1, ep)?;
        println!(
            "model: {} (engine: ort, ep: {})",
            model_path.display(),
            ep_name(ep)
        );
        let scores = Scores::Float(logits);
        println!("class: {}", scores.class());
        println!("scores:");
        if let Scores::Float(v) = &scores {
            for (i, x) in v.iter().enumerate() {
                println!("  {i}: {x:.6}");
            }
        }
        let top: Vec<String> = scores
            .top3()
            .iter()
            .map(|(i, v)| format!("{i} ({v:.4})"))
            .collect();
        println!("top-3: {}", top.join(", "));
        return Ok(());
    }
    let integer = matches!(path, PathArg::Integer);
    let scores = infer_native(&model_path, &model, &x, integer, mode)
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
    Ok(())
}

fn ep_name(ep: Ep) -> &'static str {
    match ep {
        Ep::Cpu => "cpu",
        Ep::Cuda => "cuda",
        Ep::Tensorrt => "tensorrt",
    }
}

/// Σ_t logits of `n` inputs through ONNX Runtime (the model exported with `to_onnx`).
#[cfg(feature = "ort")]
fn ort_logits(
    path: &std::path::Path,
    model: &empf_core::Model<'_>,
    x: &[f32],
    n: usize,
    ep: Ep,
) -> Result<Vec<f32>> {
    use empf_edge_infer::ort_engine::{ExecutionProvider, OrtModel};
    let onnx = empf_edge_infer::onnx::to_onnx(model)
        .with_context(|| format!("{}: cannot export to ONNX", path.display()))?;
    let ep = match ep {
        Ep::Cpu => ExecutionProvider::Cpu,
        Ep::Cuda => ExecutionProvider::Cuda,
        Ep::Tensorrt => ExecutionProvider::TensorRt,
    };
    let mut m = OrtModel::load(&onnx, ep).context("loading the model into ONNX Runtime")?;
    // One session, batches of at most ORT_BATCH so activations stay small for any n.
    let per = x.len() / n.max(1);
    let mut out = Vec::new();
    for start in (0..n).step_by(ORT_BATCH) {
        let b = ORT_BATCH.min(n - start);
        out.extend(
            m.run(&x[start * per..(start + b) * per], b)
                .context("running ONNX Runtime")?,
        );
    }
    Ok(out)
}

/// Largest batch handed to ONNX Runtime in one run.
#[cfg(feature = "ort")]
const ORT_BATCH: usize = 100;

#[cfg(not(feature = "ort"))]
fn ort_logits(
    _: &std::path::Path,
    _: &empf_core::Model<'_>,
    _: &[f32],
    _: usize,
    _: Ep,
) -> Result<Vec<f32>> {
    bail!("engine ort: this binary was built without the `ort` feature (cargo build -p empf-edge-infer --features ort)")
}

/// ORT images/s on batches of `bench::BATCH` synthetic inputs (session created once, untimed).
#[cfg(feature = "ort")]
fn ort_throughput(
    path: &std::path::Path,
    model: &empf_core::Model<'_>,
    seconds: f64,
) -> Result<f64> {
    use empf_edge_infer::ort_engine::{ExecutionProvider, OrtModel};
    let onnx = empf_edge_infer::onnx::to_onnx(model)
        .with_context(|| format!("{}: cannot export to ONNX", path.display()))?;
    let mut m = OrtModel::load(&onnx, ExecutionProvider::Cpu)
        .context("loading the model into ONNX Runtime")?;
    let x: Vec<f32> = bench::synthetic_inputs(model.input_shape().numel(), bench::BATCH).concat();
    m.run(&x, bench::BATCH)?; // warm-up
    let (t0, mut images) = (std::time::Instant::now(), 0usize);
    while images == 0 || t0.elapsed().as_secs_f64() < seconds.max(0.05) {
        m.run(&x, bench::BATCH)?;
        images += bench::BATCH;
    }
    Ok(images as f64 / t0.elapsed().as_secs_f64())
}

#[cfg(not(feature = "ort"))]
fn ort_throughput(_: &std::path::Path, _: &empf_core::Model<'_>, _: f64) -> Result<f64> {
    bail!("this binary was built without the `ort` feature")
}

/// Reads an idx file (raw or gzip by its `.gz` name), checks magic and length, returns (dims, data).
fn read_idx(path: &std::path::Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    use std::io::Read;
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not valid gzip", path.display()))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != magic {
        bail!(
            "{}: not an idx file with magic {magic:#010x}",
            path.display()
        );
    }
    let nd = (magic & 0xFF) as usize;
    if bytes.len() < 4 + 4 * nd {
        bail!("{}: truncated idx header", path.display());
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    let data = &bytes[4 + 4 * nd..];
    if data.len() != n {
        bail!(
            "{}: header says {n} bytes of data, file has {}",
            path.display(),
            data.len()
        );
    }
    Ok((dims, data.to_vec()))
}

fn eval_cmd(
    model_path: PathBuf,
    images: PathBuf,
    labels: PathBuf,
    normalize: NormArg,
    limit: Option<usize>,
) -> Result<()> {
    use rayon::prelude::*;
    let bytes = read_model(&model_path)?;
    let model = decode_model(&model_path, &bytes)?;
    let (dims, pixels) = read_idx(&images, 0x0803)?;
    let (ldims, lab) = read_idx(&labels, 0x0801)?;
    let numel = model.input_shape().numel();
    if dims.len() != 3 || dims[1] * dims[2] != numel || ldims[0] != dims[0] {
        bail!("{} / {}: {dims:?} images with {ldims:?} labels do not fit the model's {numel}-value input", images.display(), labels.display());
    }
    let n = limit.unwrap_or(dims[0]).min(dims[0]);
    let norm = match normalize {
        NormArg::FashionMnist => Normalize::FashionMnist,
        NormArg::Mnist => Normalize::Mnist,
        NormArg::None => Normalize::None,
    }
    .pixel_norm();
    let x: Vec<f32> = pixels[..n * numel].iter().map(|&p| norm.apply(p)).collect();
    let labels = &lab[..n];
    let classes = model.classes();
    let t0 = std::time::Instant::now();
    let native: Vec<(usize, Option<usize>)> = (0..n)
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![0u32; model.arena_bytes() / 4],
                    vec![0.0f32; classes],
                    vec![0i32; classes],
                    vec![0i8; numel],
                )
            },
            |(arena, out, q, xq), i| {
                let xi = &x[i * numel..(i + 1) * numel];
                let f = model
                    .infer_float(xi, Mode::Sequential, arena, out)
                    .map(|_| empf_core::top_k::<1, f32>(out)[0].0)
                    .unwrap_or(usize::MAX);
                let int = model.fixed_meta().and_then(|_| {
                    model.quantize_input(xi, xq).ok()?;
                    model.infer_fixed(xq, Mode::Sequential, arena, q).ok()?;
                    Some(empf_core::top_k::<1, i32>(q)[0].0)
                });
                (f, int)
            },
        )
        .collect();
    let native_s = t0.elapsed().as_secs_f64();
    let acc = |pred: &mut dyn Iterator<Item = Option<usize>>| -> f64 {
        100.0
            * pred
                .zip(labels)
                .filter(|(p, &l)| *p == Some(l as usize))
                .count() as f64
            / n as f64
    };
    println!("{}: {n} images", model_path.display());
    println!(
        "native float:   {:.2}%  ({:.0} images/s, float and integer together)",
        acc(&mut native.iter().map(|p| Some(p.0))),
        n as f64 / native_s
    );
    if model.fixed_meta().is_some() {
        println!(
            "native integer: {:.2}%",
            acc(&mut native.iter().map(|p| p.1))
        );
    }
    let t1 = std::time::Instant::now();
    let ort = ort_logits(&model_path, &model, &x, n, Ep::Cpu).map(|logits| {
        logits
            .chunks(classes)
            .map(|r| empf_core::top_k::<1, f32>(r)[0].0)
            .collect::<Vec<_>>()
    });
    match ort {
        Ok(ort_pred) => {
            let differ = ort_pred
                .iter()
                .zip(&native)
                .filter(|(o, p)| **o != p.0)
                .count();
            println!(
                "ort (cpu):      {:.2}%  ({:.0} images/s incl. one session setup)",
                acc(&mut ort_pred.iter().map(|&p| Some(p))),
                n as f64 / t1.elapsed().as_secs_f64()
            );
            println!("ort vs native float: {differ} of {n} predictions differ");
        }
        Err(e) => println!("ort: skipped: {e:#}"),
    }
    Ok(())
}

fn find(ms: &[Measurement], path: bench::Path, mode: Mode) -> Option<&Measurement> {
    ms.iter().find(|m| m.path == path && m.mode == mode)
}

fn bench_cmd(model_path: PathBuf, seconds: f64) -> Result<()> {
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("--seconds must be a non-negative number");
    }
    let bytes = read_model(&model_path)?;
    let model = decode_model(&model_path, &bytes)?;
    println!(
        "bench: {} ({} rayon threads, batch {})",
        model_path.display(),
        rayon::current_num_threads(),
        bench::BATCH
    );
    let ms = bench::run_native(&model, seconds)?;
    for m in &ms {
        let name = match m.path {
            bench::Path::Float => "float",
            bench::Path::Integer => "integer",
        };
        println!(
            "{name:<7} {:<10} latency p50 {:.4} ms  p99 {:.4} ms  ({} calls)",
            format!("{:?}", m.mode).to_lowercase(),
            m.p50_ms,
            m.p99_ms,
            m.calls
        );
        println!(
            "{name:<7} {:<10} throughput {:.1} images/s (batch {})",
            format!("{:?}", m.mode).to_lowercase(),
            m.images_per_s,
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
    match ort_throughput(&model_path, &model, seconds / 4.0) {
        Ok(r) => {
            let native = find(&ms, bench::Path::Float, Mode::Sequential)
                .map_or(f64::NAN, |m| m.images_per_s);
            println!(
                "ort     cpu        throughput {r:.1} images/s (batch {})",
                bench::BATCH
            );
            println!("ratio ort/native-float throughput {:.3}x", r / native);
        }
        Err(e) => println!("ort: skipped: {e:#}"),
    }
    Ok(())
}
