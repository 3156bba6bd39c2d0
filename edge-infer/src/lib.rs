//! Edge inference: runs `.empf` models natively through `empf-core` (float and integer paths) on
//! IDX3 / `.npy` / `.f32` inputs, and benchmarks them (`edge-infer` binary).
pub use empf_core as core_engine;

pub mod bench;
pub mod input;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_engine;

use std::path::{Path, PathBuf};

use empf_core::{Mode, Model};

/// Errors of loading a model file or running it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file cannot be read.
    #[error("{path}: cannot read model file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The bytes are not a valid model.
    #[error("{path}: invalid model file: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Decoder error.
        source: empf_core::Error,
    },
    /// Inference failed.
    #[error("inference failed: {source}")]
    Infer {
        /// Engine error.
        source: empf_core::Error,
    },
    /// The header's body length differs from the file's size (checked before reading the body).
    #[error("{path}: the header announces a {announced}-byte body, the file has {found} bytes after the 16-byte header")]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// Body length in the header.
        announced: u64,
        /// Bytes after the header.
        found: u64,
    },
    /// The arenas would exceed the memory cap.
    #[error("{path}: {threads} inference arena(s) for {mode:?} mode need {needed_mib} MiB, more than --max-arena-mib {cap_mib}; raise it with --max-arena-mib if the machine has the memory")]
    ArenaTooLarge {
        /// The model file.
        path: PathBuf,
        /// Mode asked for.
        mode: Mode,
        /// Arenas (one per thread).
        threads: usize,
        /// Needed, MiB.
        needed_mib: u64,
        /// The cap, MiB.
        cap_mib: u64,
    },
    /// The integer path was asked of a model without integer parameters.
    #[error("{path}: model has no integer path (not calibrated/quantised)")]
    NoIntegerPath {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a model file and checks that it decodes; the bytes are returned for [`Model::decode`].
///
/// The 16-byte header is read first and the body length it announces is compared with the
/// file's size before the body is read, so a huge file that is not the model its header
/// describes is refused without reading it.
pub fn read_model(path: &Path) -> Result<Vec<u8>, ModelError> {
    use std::io::Read;
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let hl = empf_core::format::HEADER_LEN;
    let mut head = Vec::with_capacity(hl);
    (&mut f)
        .take(hl as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.len() == hl {
        // Magic, version and flags are fine; only the (absent) body is missing. (Bad magic,
        // version or flags, or an empty body, are reported by the decoder below.)
        if let Err(empf_core::Error::DecodeLengthMismatch) = empf_core::format::split_header(&head)
        {
            let announced = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64;
            if size != hl as u64 + announced {
                return Err(ModelError::LengthMismatch {
                    path: path.to_path_buf(),
                    announced,
                    found: size.saturating_sub(hl as u64),
                });
            }
            (&mut f)
                .take(announced)
                .read_to_end(&mut head)
                .map_err(io)?;
        }
    }
    decode_model(path, &head)?;
    Ok(head)
}

/// Default cap on the inference arenas of one command (`--max-arena-mib`).
pub const DEFAULT_MAX_ARENA_MIB: u64 = 1024;

/// Checks that `threads` arenas of `model` in `mode` fit `max_mib` MiB; returns the words of one.
pub fn arena_words_capped(
    path: &Path,
    model: &Model<'_>,
    mode: Mode,
    threads: usize,
    max_mib: u64,
) -> Result<usize, ModelError> {
    let words = model.arena_words_for(mode);
    let needed = (words as u64)
        .saturating_mul(4)
        .saturating_mul(threads.max(1) as u64);
    let cap = max_mib.saturating_mul(1 << 20);
    if needed > cap {
        return Err(ModelError::ArenaTooLarge {
            path: path.to_path_buf(),
            mode,
            threads: threads.max(1),
            needed_mib: needed.div_ceil(1 << 20),
            cap_mib: max_mib,
        });
    }
    Ok(words)
}

/// Why `edge-infer bench` could not measure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Inference failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The thread pools could not be made.
    #[error(transparent)]
    Threads(#[from] ThreadsError),
}

/// Why a `--threads` value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    Zero,
    /// More threads than the machine runs at once.
    #[error("--threads {asked} is more than the {available} this machine runs in parallel")]
    TooMany {
        /// The value given.
        asked: usize,
        /// `std::thread::available_parallelism`.
        available: usize,
    },
    /// The thread pool could not be built.
    #[error("cannot start {threads} threads: {reason}")]
    Pool {
        /// Threads asked for.
        threads: usize,
        /// Why.
        reason: String,
    },
}

/// Threads this machine runs in parallel (1 if unknown).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads`: `None` = every core; 0 and more than [`available_threads`] are errors.
pub fn check_threads(asked: Option<usize>) -> Result<usize, ThreadsError> {
    let available = available_threads();
    match asked {
        None => Ok(available),
        Some(0) => Err(ThreadsError::Zero),
        Some(n) if n > available => Err(ThreadsError::TooMany {
            asked: n,
            available,
        }),
        Some(n) => Ok(n),
    }
}

/// A rayon pool of `threads` workers.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, ThreadsError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ThreadsError::Pool {
            threads,
            reason: e.to_string(),
        })
}

/// Native inference of `n = x.len() / C·H·W` inputs spread over `pool`'s threads, one arena of
/// `arena_words` per thread (from [`arena_words_capped`]); scores in input order. The results do
/// not depend on the thread count: each image runs alone in its own arena.
pub fn infer_many(
    path: &Path,
    model: &Model<'_>,
    x: &[f32],
    integer: bool,
    mode: Mode,
    pool: &rayon::ThreadPool,
    arena_words: usize,
) -> Result<Vec<Scores>, ModelError> {
    use rayon::prelude::*;
    let numel = model.input_shape().numel();
    let classes = model.classes();
    let fm = if integer {
        Some(
            model
                .fixed_meta()
                .ok_or_else(|| ModelError::NoIntegerPath {
                    path: path.to_path_buf(),
                })?,
        )
    } else {
        None
    };
    let infer = |source| ModelError::Infer { source };
    pool.install(|| {
        x.par_chunks(numel.max(1))
            .map_init(
                || (vec![0u32; arena_words], vec![0i8; numel]),
                |(arena, q), xi| match fm {
                    Some(fm) => {
                        model.quantize_input(xi, q).map_err(infer)?;
                        let mut out = vec![0i32; classes];
                        model.infer_fixed(q, mode, arena, &mut out).map_err(infer)?;
                        Ok(Scores::Integer {
                            logits: out,
                            logit_scale: fm.logit_scale,
                        })
                    }
                    None => {
                        let mut out = vec![0.0f32; classes];
                        model
                            .infer_float(xi, mode, arena, &mut out)
                            .map_err(infer)?;
                        Ok(Scores::Float(out))
                    }
                },
            )
            .collect()
    })
}

/// [`Model::decode`] with the file named in the error.
pub fn decode_model<'a>(path: &Path, bytes: &'a [u8]) -> Result<Model<'a>, ModelError> {
    Model::decode(bytes).map_err(|source| ModelError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Scores of one native inference.
#[derive(Clone, Debug, PartialEq)]
pub enum Scores {
    /// Float path: summed logits.
    Float(Vec<f32>),
    /// Integer path: summed integer logits and `logit_scale`.
    Integer {
        /// Summed logits in units of `logit_scale`.
        logits: Vec<i32>,
        /// Real value of one logit step.
        logit_scale: f32,
    },
}

impl Scores {
    /// Real-valued scores.
    pub fn real(&self) -> Vec<f32> {
        match self {
            Scores::Float(v) => v.clone(),
            Scores::Integer {
                logits,
                logit_scale,
            } => logits.iter().map(|&q| q as f32 * logit_scale).collect(),
        }
    }

    /// Best three `(class, real score)`, best first (via [`empf_core::top_k`]).
    pub fn top3(&self) -> Vec<(usize, f32)> {
        match self {
            Scores::Float(v) => empf_core::top_k::<3, f32>(v).iter().copied().collect(),
            Scores::Integer {
                logits,
                logit_scale,
            } => empf_core::top_k::<3, i32>(logits)
                .iter()
                .map(|&(i, q)| (i, q as f32 * logit_scale))
                .collect(),
        }
    }

    /// Predicted class.
    pub fn class(&self) -> usize {
        self.top3().first().map_or(0, |p| p.0)
    }
}

/// One native inference of `input` on the float (`integer = false`) or integer path, its arena
/// capped at `max_arena_mib` MiB ([`arena_words_capped`]).
pub fn infer_native(
    path: &Path,
    model: &Model<'_>,
    input: &[f32],
    integer: bool,
    mode: Mode,
    max_arena_mib: u64,
) -> Result<Scores, ModelError> {
    let mut arena = vec![0u32; arena_words_capped(path, model, mode, 1, max_arena_mib)?];
    let infer = |source| ModelError::Infer { source };
    if integer {
        let fm = model
            .fixed_meta()
            .ok_or_else(|| ModelError::NoIntegerPath {
                path: path.to_path_buf(),
            })?;
        let mut q = vec![0i8; input.len()];
        model.quantize_input(input, &mut q).map_err(infer)?;
        let mut out = vec![0i32; model.classes()];
        model
            .infer_fixed(&q, mode, &mut arena, &mut out)
            .map_err(infer)?;
        Ok(Scores::Integer {
            logits: out,
            logit_scale: fm.logit_scale,
        })
    } else {
        let mut out = vec![0.0f32; model.classes()];
        model
            .infer_float(input, mode, &mut arena, &mut out)
            .map_err(infer)?;
        Ok(Scores::Float(out))
    }
}
