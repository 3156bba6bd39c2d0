//! Runs an ONNX model (from [`crate::onnx::to_onnx`]) through ONNX Runtime via `ort`.
//!
//! The runtime library is loaded at run time (`load-dynamic`) from `ORT_DYLIB_PATH`; nothing is
//! linked or downloaded at build time. A missing library is a typed [`OrtError`], never a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;

/// Where a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT.
    TensorRt,
}

impl ExecutionProvider {
    /// The provider's name, as ONNX Runtime spells it.
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "CPUExecutionProvider",
            ExecutionProvider::Cuda => "CUDAExecutionProvider",
            ExecutionProvider::TensorRt => "TensorrtExecutionProvider",
        }
    }
}

/// Errors of loading ONNX Runtime, building a session or running it.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    /// `ORT_DYLIB_PATH` is not set.
    #[error("ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (source scripts/setup.sh)")]
    LibraryUnset,
    /// The library file does not exist.
    #[error("ONNX Runtime library not found at {path}")]
    LibraryMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The file exists but could not be loaded as ONNX Runtime (not a library, wrong version).
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    LibraryLoad {
        /// The path given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A different ONNX Runtime library is already loaded in this process (it can load one).
    #[error("ONNX Runtime is already loaded from {loaded}; cannot load {requested} as well")]
    OtherLibraryLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
    /// The execution provider cannot be registered.
    #[error("execution provider {ep} is not available: {reason}")]
    ProviderUnavailable {
        /// The provider's name.
        ep: &'static str,
        /// Why.
        reason: String,
    },
    /// Building the session from the model bytes failed.
    #[error("ONNX Runtime rejected the model: {0}")]
    Session(String),
    /// Running the session failed.
    #[error("ONNX Runtime run failed: {0}")]
    Run(String),
    /// The input length is not `n ·` the model's input size.
    #[error("input has {got} values, expected {expected} ({n} samples)")]
    InputLength {
        /// Values given.
        got: usize,
        /// Values expected.
        expected: usize,
        /// Samples.
        n: usize,
    },
}

/// The process-wide ONNX Runtime environment and the library it came from.
static ENV: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic while loading ONNX Runtime".into())
}

/// Loads ONNX Runtime from `path` once per process and returns its environment.
fn environment(path: &Path) -> Result<ort::environment::Environment, OrtError> {
    if !path.is_file() {
        return Err(OrtError::LibraryMissing {
            path: path.to_path_buf(),
        });
    }
    let requested = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded, env)) = ENV.get() {
        return if *loaded == requested {
            Ok(env.clone())
        } else {
            Err(OrtError::OtherLibraryLoaded {
                loaded: loaded.clone(),
                requested,
            })
        };
    }
    let load_err = |reason: String| OrtError::LibraryLoad {
        path: path.to_path_buf(),
        reason,
    };
    // ort panics (instead of erroring) when the runtime's API version is too old.
    let env = catch_unwind(AssertUnwindSafe(|| {
        ort::init_from(&requested)
            .map_err(|e| e.to_string())?
            .with_name("empf")
            .build()
            .map_err(|e| e.to_string())
    }))
    .map_err(|p| load_err(panic_text(&*p)))?
    .map_err(load_err)?;
    let _ = ENV.set((requested, env.clone()));
    Ok(env)
}

/// An ONNX Runtime session of one model, with its input/output sizes.
pub struct OrtModel {
    session: Session,
    input_dims: Vec<usize>,
    ep: ExecutionProvider,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("input_dims", &self.input_dims)
            .field("ep", &self.ep)
            .finish_non_exhaustive()
    }
}

impl OrtModel {
    /// Builds a session from ONNX bytes, loading ONNX Runtime from `ORT_DYLIB_PATH`.
    pub fn load(onnx_bytes: &[u8], ep: ExecutionProvider) -> Result<OrtModel, OrtError> {
        let path = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .ok_or(OrtError::LibraryUnset)?;
        OrtModel::load_with_library(Path::new(&path), onnx_bytes, ep)
    }

    /// [`OrtModel::load`] with ONNX Runtime's intra-op thread count set to `threads`.
    pub fn load_with_threads(
        onnx_bytes: &[u8],
        ep: ExecutionProvider,
        threads: usize,
    ) -> Result<OrtModel, OrtError> {
        let path = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .ok_or(OrtError::LibraryUnset)?;
        OrtModel::build(Path::new(&path), onnx_bytes, ep, Some(threads))
    }

    /// [`OrtModel::load`] with an explicit library path.
    pub fn load_with_library(
        library: &Path,
        onnx_bytes: &[u8],
        ep: ExecutionProvider,
    ) -> Result<OrtModel, OrtError> {
        OrtModel::build(library, onnx_bytes, ep, None)
    }

    fn build(
        library: &Path,
        onnx_bytes: &[u8],
        ep: ExecutionProvider,
        threads: Option<usize>,
    ) -> Result<OrtModel, OrtError> {
        let env = environment(library)?;
        let session_err = |e: ort::Error| OrtError::Session(e.to_string());
        let builder = Session::builder(&env).map_err(session_err)?;
        let builder = match threads {
            Some(n) => builder
                .with_intra_threads(n)
                .map_err(|e| OrtError::Session(e.to_string()))?,
            None => builder,
        };
        // GPU providers (Jetson: CUDA, TensorRT) are registered by name at run time; with
        // `error_on_failure` a runtime without them (like the PyPI CPU wheel) gives a named
        // error instead of silently falling back to the CPU.
        let provider =
            |e: ort::Error<ort::session::builder::SessionBuilder>| OrtError::ProviderUnavailable {
                ep: ep.name(),
                reason: e.to_string(),
            };
        let mut builder = match ep {
            ExecutionProvider::Cpu => builder,
            ExecutionProvider::Cuda => builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(provider)?,
            ExecutionProvider::TensorRt => builder
                .with_execution_providers([ort::ep::TensorRT::default().build().error_on_failure()])
                .map_err(provider)?,
        };
        let session = builder
            .commit_from_memory(onnx_bytes)
            .map_err(|e| OrtError::Session(e.to_string()))?;
        let input_dims = match session.inputs().first().map(|i| i.dtype()) {
            Some(ort::value::ValueType::Tensor { shape, .. }) => {
                shape.iter().skip(1).map(|&d| d.max(0) as usize).collect()
            }
            _ => return Err(OrtError::Session("model has no tensor input".into())),
        };
        Ok(OrtModel {
            session,
            input_dims,
            ep,
        })
    }

    /// Runs `n` samples (`x` = `n` inputs of `C·H·W` values) through a float graph
    /// ([`crate::onnx::to_onnx`]); returns `[n][classes]`, row-major.
    pub fn run(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>, OrtError> {
        self.run_typed::<f32>(x, n)
    }

    /// [`OrtModel::run`] for an integer graph ([`crate::onnx::to_onnx_integer`]): the int32
    /// summed logits, in units of the model's `logit_scale`.
    pub fn run_integer(&mut self, x: &[f32], n: usize) -> Result<Vec<i32>, OrtError> {
        self.run_typed::<i32>(x, n)
    }

    fn run_typed<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone>(
        &mut self,
        x: &[f32],
        n: usize,
    ) -> Result<Vec<T>, OrtError> {
        let per: usize = self.input_dims.iter().product();
        if x.len() != n * per {
            return Err(OrtError::InputLength {
                got: x.len(),
                expected: n * per,
                n,
            });
        }
        let run_err = |e: ort::Error| OrtError::Run(e.to_string());
        let mut shape = vec![n];
        shape.extend_from_slice(&self.input_dims);
        let t = Tensor::from_array((shape, x.to_vec())).map_err(run_err)?;
        let out = self.session.run(ort::inputs!["x" => t]).map_err(run_err)?;
        let (_, y) = out["y"].try_extract_tensor::<T>().map_err(run_err)?;
        Ok(y.to_vec())
    }
}
