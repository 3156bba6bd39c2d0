//! `edge-infer bench`: batch-1 latency and batch-64 throughput (on 1 thread and on every
//! thread asked for) of the native float and integer paths in both [`Mode`]s, plus peak RSS.

use std::time::{Duration, Instant};

use empf_core::{Mode, Model};
use rayon::prelude::*;

use crate::ModelError;

/// Images per throughput batch.
pub const BATCH: usize = 64;

/// Native path measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `infer_float`.
    Float,
    /// `infer_fixed`.
    Integer,
}

/// One measured (path, mode) pair.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Path.
    pub path: Path,
    /// Mode.
    pub mode: Mode,
    /// Batch-1 latency median, ms.
    pub p50_ms: f64,
    /// Batch-1 latency 99th percentile, ms.
    pub p99_ms: f64,
    /// Single calls timed.
    pub calls: usize,
    /// Batch-64 throughput on one thread, images/s.
    pub images_per_s_1: f64,
    /// Batch-64 throughput over `threads` threads (one arena each), images/s.
    pub images_per_s: f64,
    /// Threads of `images_per_s`.
    pub threads: usize,
}

/// Deterministic pseudo-random inputs in `[-1, 1]`.
pub fn synthetic_inputs(numel: usize, count: usize) -> Vec<Vec<f32>> {
    let mut s = 0x9E37_79B9_u32;
    (0..count)
        .map(|_| {
            (0..numel)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s as f32 / u32::MAX as f32) * 2.0 - 1.0
                })
                .collect()
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn one(
    model: &Model<'_>,
    path: Path,
    mode: Mode,
    x: &[f32],
    xq: &[i8],
    arena: &mut [u32],
    of: &mut [f32],
    oi: &mut [i32],
) -> Result<(), empf_core::Error> {
    match path {
        Path::Float => model.infer_float(x, mode, arena, of),
        Path::Integer => model.infer_fixed(xq, mode, arena, oi),
    }
}

/// Images/s of batches of [`BATCH`] on `pool` for about `budget`, one arena per worker.
#[allow(clippy::too_many_arguments)]
fn throughput(
    model: &Model<'_>,
    path: Path,
    mode: Mode,
    inputs: &[Vec<f32>],
    quant: &[Vec<i8>],
    words: usize,
    pool: &rayon::ThreadPool,
    budget: Duration,
) -> Result<f64, empf_core::Error> {
    let classes = model.classes();
    pool.install(|| {
        let start = Instant::now();
        let mut images = 0usize;
        while images == 0 || start.elapsed() < budget {
            (0..BATCH).into_par_iter().try_for_each_init(
                || {
                    (
                        vec![0u32; words],
                        vec![0.0f32; classes],
                        vec![0i32; classes],
                    )
                },
                |(a, f, q), k| {
                    let i = k % inputs.len();
                    one(model, path, mode, &inputs[i], &quant[i], a, f, q)
                },
            )?;
            images += BATCH;
        }
        Ok(images as f64 / start.elapsed().as_secs_f64())
    })
}

/// Measures one (path, mode) for about `budget`: half batch-1 latency, a quarter throughput on
/// one thread (`single`), a quarter on every thread of `all`.
pub fn measure(
    model: &Model<'_>,
    path: Path,
    mode: Mode,
    inputs: &[Vec<f32>],
    budget: Duration,
    single: &rayon::ThreadPool,
    all: &rayon::ThreadPool,
) -> Result<Measurement, empf_core::Error> {
    let quant: Vec<Vec<i8>> = match path {
        Path::Float => vec![Vec::new(); inputs.len()],
        Path::Integer => inputs
            .iter()
            .map(|x| {
                let mut q = vec![0i8; x.len()];
                model.quantize_input(x, &mut q).map(|_| q)
            })
            .collect::<Result<_, _>>()?,
    };
    let words = model.arena_words_for(mode);
    let classes = model.classes();
    let mut arena = vec![0u32; words];
    let mut of = vec![0.0f32; classes];
    let mut oi = vec![0i32; classes];
    // Warm-up, then batch-1 latency.
    one(
        model, path, mode, &inputs[0], &quant[0], &mut arena, &mut of, &mut oi,
    )?;
    let half = budget / 2;
    let start = Instant::now();
    let mut lat = Vec::new();
    while lat.len() < 5 || (start.elapsed() < half && lat.len() < 1_000_000) {
        let i = lat.len() % inputs.len();
        let t = Instant::now();
        one(
            model, path, mode, &inputs[i], &quant[i], &mut arena, &mut of, &mut oi,
        )?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let (p50_ms, p99_ms) = (pct(0.50), pct(0.99));
    let quarter = budget / 4;
    let images_per_s_1 = throughput(model, path, mode, inputs, &quant, words, single, quarter)?;
    let images_per_s = throughput(model, path, mode, inputs, &quant, words, all, quarter)?;
    Ok(Measurement {
        path,
        mode,
        p50_ms,
        p99_ms,
        calls: lat.len(),
        images_per_s_1,
        images_per_s,
        threads: all.current_num_threads(),
    })
}

/// Peak resident set size in KiB (`VmHWM` of `/proc/self/status`), when available.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Every native measurement: float then integer (when calibrated), sequential then parallel;
/// throughput on 1 thread and on `threads` threads.
pub fn run_native(
    model: &Model<'_>,
    seconds: f64,
    threads: usize,
) -> Result<Vec<Measurement>, crate::BenchError> {
    let inputs = synthetic_inputs(model.input_shape().numel(), BATCH);
    let paths: &[Path] = if model.fixed_meta().is_some() {
        &[Path::Float, Path::Integer]
    } else {
        &[Path::Float]
    };
    let single = crate::thread_pool(1)?;
    let all = crate::thread_pool(threads)?;
    let n = (paths.len() * 2) as f64;
    let budget = Duration::from_secs_f64((seconds.max(0.0)) / n);
    let mut out = Vec::new();
    for &p in paths {
        for mode in [Mode::Sequential, Mode::Parallel] {
            out.push(
                measure(model, p, mode, &inputs, budget, &single, &all)
                    .map_err(|source| ModelError::Infer { source })?,
            );
        }
    }
    Ok(out)
}
