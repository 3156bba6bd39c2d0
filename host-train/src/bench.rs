//! Training benchmark behind `host-train bench`: throughput of full online training versus random
//! BP, and peak RSS against the number of time steps `T`.
//!
//! Every configuration `(T, mode)` runs in its own child process, `host-train bench-one …`
//! ([`run_bench_one`]), because peak RSS (`VmHWM`) only ever grows inside one process. The child
//! prints one machine-readable line ([`BenchOneResult::to_line`]):
//!
//! ```text
//! BENCH_ONE t=<T> mode=<full|random> images_per_s=<f> peak_rss_kb=<n>
//! ```
//!
//! and [`run_bench`] (the parent) runs the children one after another, parses those lines and
//! prints the tables. Throughput and RSS therefore come from the same child runs.
//!
//! Measurement protocol of one child:
//! 1. build the input pool (Fashion-MNIST training images, or synthetic images), the bench
//!    network ([`NetConfig::bench`]) and the trainer (SGD, paper settings, lr [`BENCH_LR`]); the
//!    full dataset is dropped once the pool is copied out of it;
//! 2. reset the peak-RSS mark to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0),
//!    so the transient memory of decoding the dataset does not mask the training peak (if the
//!    reset is refused, a note goes to stderr and the peak includes the set-up);
//! 3. `warmup` untimed batches, then `batches` timed batches;
//! 4. images/s = `batches · batch_size / elapsed`, peak RSS = `VmHWM` after the timed batches.
//!
//! Zoo networks (`host-train bench --arch resnet18 --image-size 32`, [`ZooBench`]): the same
//! protocol on synthetic `C×S×S` images, one `T`, and every parallel share (0, 50, 100 % of the
//! neurons in Version III) in both modes; the child line then carries `parallel=<P>`.
//!
//! Modes: *full online* is a loss, a backward and an optimiser step at every time step
//! ([`UpdateRule::PerStep`], `random_step = None`); *random BP* back-propagates one step per
//! batch, drawn by [`random_bp_step`]`(seed, 0, batch_index, T)`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::data::DataError;
use crate::error::Error as NetError;
use crate::train::TrainError;

use crate::data::{epoch_order, idx, Dataset, Normalization, Split};
use crate::net::zoo::{zoo, Arch, SecaVariant, ZooOptions};
use crate::net::{BenchOptions, Net, NetConfig, NeuronKind};
use crate::optim::{OptimizerConfig, SgdConfig};
use crate::rng::Rng;
use crate::train::{random_bp_step, OnlineTrainer, UpdateRule};

/// Why a benchmark could not run or report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Bad arguments, or a child's result line that does not parse (the text says which).
    #[error("{0}")]
    Invalid(String),
    /// Loading the images.
    #[error("{what}: {source}")]
    Data {
        /// What was being loaded.
        what: String,
        /// The data error.
        source: DataError,
    },
    /// Building the network or the trainer.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A training step failed.
    #[error("{what}: {source}")]
    Train {
        /// Which batch and configuration.
        what: String,
        /// The trainer's error.
        source: TrainError,
    },
    /// A child process could not run, or it failed.
    #[error("{0}")]
    Child(String),
    /// Writing the report.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

/// The benchmark's results.
pub type Result<T> = std::result::Result<T, BenchError>;

/// `return Err(BenchError::Invalid(format!(…)))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(BenchError::Invalid(format!($($arg)*)))
    };
}

/// `Option`/`Result` → [`BenchError::Invalid`] with a message (the library's `context`).
trait OrInvalid<T> {
    fn or_invalid(self, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T> OrInvalid<T> for Option<T> {
    fn or_invalid(self, message: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| BenchError::Invalid(message()))
    }
}

impl<T, E: std::fmt::Display> OrInvalid<T> for std::result::Result<T, E> {
    fn or_invalid(self, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BenchError::Invalid(format!("{}: {e}", message())))
    }
}

/// Learning rate of the benchmark's SGD steps (the paper's initial lr, spec §6).
pub const BENCH_LR: f64 = 0.01;

/// Pass mark of the memory check: peak RSS at the largest `T` over peak RSS at the smallest `T`
/// (full online) must be at most this.
pub const RSS_RATIO_LIMIT: f64 = 1.10;

/// Prefix of the machine-readable result line of a child run.
pub const BENCH_ONE_PREFIX: &str = "BENCH_ONE";

const IMAGE_SIDE: usize = 28;
const IMAGE_LEN: usize = IMAGE_SIDE * IMAGE_SIDE;
const CLASSES: u64 = 10;

/// A zoo network to benchmark instead of the bench network (Version I stateful neurons, no
/// SECA: the paper's CIFAR rows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZooBench {
    /// The architecture.
    pub arch: Arch,
    /// Input channels.
    pub in_channels: usize,
    /// Input height = width.
    pub image_size: usize,
    /// Classes.
    pub classes: usize,
    /// Share of parallel neurons (0, 50 or 100; [`run_bench`] measures all three).
    pub parallel_percent: u8,
    /// Channel multiplier.
    pub width: f32,
}

impl ZooBench {
    /// The network's description at `t` time steps.
    pub fn config(&self, t: usize) -> Result<NetConfig> {
        let o = ZooOptions {
            time_steps: t,
            in_channels: self.in_channels,
            image_size: self.image_size,
            classes: self.classes,
            neuron: NeuronKind::EmPf,
            parallel_percent: self.parallel_percent,
            seca: SecaVariant::Off,
            width: self.width,
        };
        zoo(self.arch, &o)
            .map_err(|e| BenchError::Invalid(format!("bench --arch {}: {e}", self.arch.name())))
    }
}

/// The zoo architecture called `name` (its `--arch` name).
pub fn arch_named(name: &str) -> Option<Arch> {
    [
        Arch::Resnet18,
        Arch::Resnet19,
        Arch::Resnet34,
        Arch::Vgg13,
        Arch::VggSnn,
    ]
    .into_iter()
    .find(|a| a.name() == name)
}

/// Arguments of `host-train bench`.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchArgs {
    /// Time-step counts to measure (default `[2, 4, 8, 16]`).
    pub time_steps: Vec<usize>,
    /// Samples per batch (default 64).
    pub batch_size: usize,
    /// Timed batches per configuration (default 6).
    pub batches: usize,
    /// Untimed warm-up batches per configuration (default 1).
    pub warmup: usize,
    /// Fashion-MNIST directory; `None`, a missing directory or missing training files mean
    /// synthetic data (the output says which was used).
    pub data: Option<PathBuf>,
    /// Seed of the network initialisation, the data and the random-BP steps.
    pub seed: u64,
    /// A zoo network instead of the bench network (synthetic data; `time_steps[0]` only).
    pub zoo: Option<ZooBench>,
    /// Each child also prints where its timed batches spent their time, per layer.
    pub profile: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            time_steps: vec![2, 4, 8, 16],
            batch_size: 64,
            batches: 6,
            warmup: 1,
            data: None,
            seed: 0,
            zoo: None,
            profile: false,
        }
    }
}

/// Arguments of one child run, `host-train bench-one …`.
///
/// Command line (the argv after `bench-one`, as produced by [`BenchOneArgs::to_args`] and read
/// back by [`BenchOneArgs::parse_args`]):
///
/// ```text
/// --time-steps <T> --batch-size <B> --batches <N> --warmup <W> --mode <full|random>
/// --seed <S> [--data <DIR>]
/// [--arch <NAME> --in-channels <C> --image-size <S> --classes <K> --parallel <P> --width <W>]
/// ```
///
/// `--mode full` is full online training, `--mode random` random BP. `--data` is omitted for
/// synthetic data.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOneArgs {
    /// Time steps `T`.
    pub time_steps: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Timed batches.
    pub batches: usize,
    /// Untimed warm-up batches.
    pub warmup: usize,
    /// Random BP (`--mode random`) instead of full online (`--mode full`).
    pub random_bp: bool,
    /// Seed of the network initialisation, the data and the random-BP steps.
    pub seed: u64,
    /// Fashion-MNIST directory (`None`: synthetic data).
    pub data: Option<PathBuf>,
    /// A zoo network instead of the bench network (always synthetic data).
    pub zoo: Option<ZooBench>,
    /// Print the timed batches' per-layer profile to stderr ([`render_profile`]).
    pub profile: bool,
}

/// `"random"` or `"full"`, the `--mode` value and the `mode=` field.
fn mode_name(random_bp: bool) -> &'static str {
    if random_bp {
        "random"
    } else {
        "full"
    }
}

fn parse_mode(s: &str) -> Result<bool> {
    match s {
        "full" => Ok(false),
        "random" => Ok(true),
        other => invalid!("unknown mode {other:?} (expected full or random)"),
    }
}

impl BenchOneArgs {
    /// The argv after `bench-one` (see the type's docs for the flags). A non-UTF-8 `data` path
    /// is converted lossily.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--time-steps".to_string(),
            self.time_steps.to_string(),
            "--batch-size".to_string(),
            self.batch_size.to_string(),
            "--batches".to_string(),
            self.batches.to_string(),
            "--warmup".to_string(),
            self.warmup.to_string(),
            "--mode".to_string(),
            mode_name(self.random_bp).to_string(),
            "--seed".to_string(),
            self.seed.to_string(),
        ];
        if let Some(dir) = &self.data {
            v.push("--data".to_string());
            v.push(dir.to_string_lossy().into_owned());
        }
        if self.profile {
            v.push("--profile".to_string());
            v.push("1".to_string());
        }
        if let Some(z) = &self.zoo {
            for (flag, value) in [
                ("--arch", z.arch.name().to_string()),
                ("--in-channels", z.in_channels.to_string()),
                ("--image-size", z.image_size.to_string()),
                ("--classes", z.classes.to_string()),
                ("--parallel", z.parallel_percent.to_string()),
                ("--width", z.width.to_string()),
            ] {
                v.push(flag.to_string());
                v.push(value);
            }
        }
        v
    }

    /// Parses the argv after `bench-one` (the inverse of [`BenchOneArgs::to_args`]). All flags
    /// but `--data` are required; `--warmup` defaults to 1.
    pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Self> {
        let (mut t, mut b, mut n, mut w, mut mode, mut seed, mut data) =
            (None, None, None, None, None, None, None);
        let (mut arch, mut channels, mut size, mut classes, mut parallel, mut width) =
            (None, None, None, None, None, None);
        let mut profile = false;
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(flag) = it.next() {
            let value = it.next().or_invalid(|| format!("{flag} needs a value"))?;
            let num = |what: &str| -> Result<usize> {
                value
                    .parse()
                    .or_invalid(|| format!("{what} {value:?} is not a number"))
            };
            match flag {
                "--time-steps" => t = Some(num(flag)?),
                "--batch-size" => b = Some(num(flag)?),
                "--batches" => n = Some(num(flag)?),
                "--warmup" => w = Some(num(flag)?),
                "--mode" => mode = Some(parse_mode(value)?),
                "--seed" => {
                    seed = Some(
                        value
                            .parse()
                            .or_invalid(|| format!("--seed {value:?} is not a number"))?,
                    )
                }
                "--data" => data = Some(PathBuf::from(value)),
                "--profile" => {
                    profile = match value {
                        "0" => false,
                        "1" => true,
                        other => invalid!("--profile {other:?} is neither 0 nor 1"),
                    }
                }
                "--arch" => {
                    arch = Some(
                        arch_named(value)
                            .or_invalid(|| format!("--arch {value:?} is not a zoo network"))?,
                    )
                }
                "--in-channels" => channels = Some(num(flag)?),
                "--image-size" => size = Some(num(flag)?),
                "--classes" => classes = Some(num(flag)?),
                "--parallel" => {
                    parallel = Some(
                        value
                            .parse::<u8>()
                            .or_invalid(|| format!("--parallel {value:?} is not 0 to 255"))?,
                    )
                }
                "--width" => {
                    width = Some(
                        value
                            .parse::<f32>()
                            .or_invalid(|| format!("--width {value:?} is not a number"))?,
                    )
                }
                other => invalid!("unknown bench-one flag {other:?}"),
            }
        }
        let zoo = match arch {
            None => None,
            Some(arch) => Some(ZooBench {
                arch,
                in_channels: channels.or_invalid(|| "--arch needs --in-channels".into())?,
                image_size: size.or_invalid(|| "--arch needs --image-size".into())?,
                classes: classes.or_invalid(|| "--arch needs --classes".into())?,
                parallel_percent: parallel.or_invalid(|| "--arch needs --parallel".into())?,
                width: width.or_invalid(|| "--arch needs --width".into())?,
            }),
        };
        Ok(BenchOneArgs {
            zoo,
            time_steps: t.or_invalid(|| "--time-steps is required".into())?,
            batch_size: b.or_invalid(|| "--batch-size is required".into())?,
            batches: n.or_invalid(|| "--batches is required".into())?,
            warmup: w.unwrap_or(1),
            random_bp: mode.or_invalid(|| "--mode is required".into())?,
            seed: seed.or_invalid(|| "--seed is required".into())?,
            data,
            profile,
        })
    }

    fn validate(&self) -> Result<()> {
        if self.time_steps == 0 || self.batch_size == 0 || self.batches == 0 {
            invalid!(
                "bench needs T, batch size and timed batches > 0 (got T={}, batch size {}, batches {})",
                self.time_steps,
                self.batch_size,
                self.batches
            );
        }
        Ok(())
    }
}

/// The result of one child run (one `BENCH_ONE` line).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchOneResult {
    /// Time steps `T`.
    pub time_steps: usize,
    /// Random BP (`mode=random`) or full online (`mode=full`).
    pub random_bp: bool,
    /// Training images per second over the timed batches.
    pub images_per_s: f64,
    /// Peak resident set size in KiB (`VmHWM`).
    pub peak_rss_kb: u64,
    /// Share of parallel neurons of a zoo network (`None` for the bench network).
    pub parallel_percent: Option<u8>,
}

impl BenchOneResult {
    /// `BENCH_ONE t=<T> mode=<full|random> images_per_s=<f> peak_rss_kb=<n>`.
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{BENCH_ONE_PREFIX} t={} mode={} images_per_s={:.3} peak_rss_kb={}",
            self.time_steps,
            mode_name(self.random_bp),
            self.images_per_s,
            self.peak_rss_kb
        );
        if let Some(p) = self.parallel_percent {
            let _ = write!(line, " parallel={p}");
        }
        line
    }

    /// Parses a `BENCH_ONE` line (surrounding whitespace and unknown extra `key=value` fields
    /// are ignored). `None` when `line` is not a `BENCH_ONE` line; an error when it is one but
    /// a field is missing or malformed.
    pub fn parse_line(line: &str) -> Option<Result<Self>> {
        let mut words = line.split_whitespace();
        if words.next() != Some(BENCH_ONE_PREFIX) {
            return None;
        }
        let parse = || -> Result<Self> {
            let (mut t, mut mode, mut ips, mut rss, mut parallel) = (None, None, None, None, None);
            for word in line.split_whitespace().skip(1) {
                let (key, value) = word
                    .split_once('=')
                    .or_invalid(|| format!("field {word:?} is not key=value"))?;
                let bad = || format!("bad {key}={value:?} in {line:?}");
                match key {
                    "t" => t = Some(value.parse::<usize>().or_invalid(bad)?),
                    "mode" => mode = Some(parse_mode(value)?),
                    "images_per_s" => ips = Some(value.parse::<f64>().or_invalid(bad)?),
                    "peak_rss_kb" => rss = Some(value.parse::<u64>().or_invalid(bad)?),
                    "parallel" => parallel = Some(value.parse::<u8>().or_invalid(bad)?),
                    _ => {}
                }
            }
            let missing = |k: &str| format!("{k} missing in {line:?}");
            Ok(BenchOneResult {
                time_steps: t.or_invalid(|| missing("t"))?,
                random_bp: mode.or_invalid(|| missing("mode"))?,
                images_per_s: ips.or_invalid(|| missing("images_per_s"))?,
                peak_rss_kb: rss.or_invalid(|| missing("peak_rss_kb"))?,
                parallel_percent: parallel,
            })
        };
        Some(parse())
    }
}

/// Peak resident set size of this process in KiB (`VmHWM` of `/proc/self/status`); `None` where
/// that is unavailable (not Linux).
pub fn peak_rss_kb() -> Option<u64> {
    proc_status_kb("VmHWM:")
}

/// Current resident set size of this process in KiB (`VmRSS`).
pub fn current_rss_kb() -> Option<u64> {
    proc_status_kb("VmRSS:")
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, key)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix(key))?;
    let mut words = rest.split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n)
}

/// Resets this process's peak-RSS mark (`VmHWM`) to the current RSS by writing `5` to
/// `/proc/self/clear_refs` (Linux ≥ 4.0). Returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Where the bench images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// The Fashion-MNIST training split in this directory.
    FashionMnist(PathBuf),
    /// Uniform random pixels normalised with the Fashion-MNIST mean/std, uniform random labels;
    /// the string says why.
    Synthetic(String),
}

impl DataSource {
    /// Fashion-MNIST when `dir` is given and holds both training files (raw or `.gz`), else
    /// synthetic with the reason.
    pub fn resolve(dir: Option<&Path>) -> Self {
        let Some(dir) = dir else {
            return DataSource::Synthetic("no --data directory given".into());
        };
        let (images, labels) = Split::Train.file_names();
        for name in [images, labels] {
            if let Err(e) = idx::find_file(dir, name) {
                return DataSource::Synthetic(format!("{e}"));
            }
        }
        DataSource::FashionMnist(dir.to_path_buf())
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            DataSource::FashionMnist(dir) => format!("Fashion-MNIST training split from {}", dir.display()),
            DataSource::Synthetic(why) => format!(
                "SYNTHETIC 1x28x28 images (uniform random pixels, Fashion-MNIST normalisation) with random labels ({why})"
            ),
        }
    }
}

/// `count` normalised images (`[count][1][28][28]`) and their labels.
fn input_pool(source: &DataSource, count: usize, seed: u64) -> Result<(Vec<f32>, Vec<u16>)> {
    let norm = Normalization::FASHION_MNIST;
    match source {
        DataSource::FashionMnist(dir) => {
            let ds = Dataset::load(dir, Split::Train).map_err(|source| BenchError::Data {
                what: format!("loading Fashion-MNIST from {}", dir.display()),
                source,
            })?;
            if (ds.height(), ds.width()) != (IMAGE_SIDE, IMAGE_SIDE) {
                invalid!(
                    "{}: images are {}x{}, the bench network takes 28x28",
                    dir.display(),
                    ds.height(),
                    ds.width()
                );
            }
            let order = epoch_order(ds.len(), seed, 0, true);
            let mut images = vec![0.0f32; count * IMAGE_LEN];
            let mut labels = Vec::with_capacity(count);
            for (i, dst) in images.chunks_exact_mut(IMAGE_LEN).enumerate() {
                let j = order[i % order.len()];
                // `j < ds.len()`: both lookups succeed on a validated dataset.
                norm.normalize_into(ds.image(j).or_invalid(|| "image index".into())?, dst);
                labels.push(ds.label(j).or_invalid(|| "label index".into())?);
            }
            Ok((images, labels))
        }
        DataSource::Synthetic(_) => {
            let mut rng = Rng::for_stream(seed, 0xBE4C);
            let pixels: Vec<u8> = (0..count * IMAGE_LEN)
                .map(|_| (rng.next_u32() >> 24) as u8)
                .collect();
            let labels = (0..count).map(|_| rng.below(CLASSES) as u16).collect();
            Ok((norm.normalize(&pixels), labels))
        }
    }
}

/// `count` synthetic images of `image_len` values (standard-normal-like: uniform with unit
/// variance, as normalised pixels) and uniform labels below `classes`.
fn synthetic_pool(
    count: usize,
    image_len: usize,
    classes: usize,
    seed: u64,
) -> Result<(Vec<f32>, Vec<u16>)> {
    if classes == 0 || classes > 1 << 16 {
        invalid!("the bench draws labels of 1 to 65536 classes (the trainer's labels are 16-bit), got {classes}");
    }
    let mut rng = Rng::for_stream(seed, 0x200B);
    let half_width = 3f32.sqrt();
    let images = (0..count * image_len)
        .map(|_| ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * half_width)
        .collect();
    let labels = (0..count)
        .map(|_| rng.below(classes as u64) as u16)
        .collect();
    Ok((images, labels))
}

/// Runs one configuration in this process and returns its result (images/s over the timed
/// batches, `VmHWM` after them; 0 where `VmHWM` is unavailable). Notes go to stderr.
pub fn measure_one(args: &BenchOneArgs) -> Result<BenchOneResult> {
    args.validate()?;
    let source = DataSource::resolve(args.data.as_deref());
    let total = args.warmup + args.batches;
    let (config, (images, labels)) = match &args.zoo {
        None => (
            NetConfig::bench(args.time_steps, &BenchOptions::default()),
            input_pool(&source, total * args.batch_size, args.seed)?,
        ),
        Some(z) => (
            z.config(args.time_steps)?,
            synthetic_pool(
                total * args.batch_size,
                z.in_channels * z.image_size * z.image_size,
                z.classes,
                args.seed,
            )?,
        ),
    };
    let image_len = images.len() / (total * args.batch_size);
    let net = Net::new(config, args.seed)?;
    let mut trainer =
        OnlineTrainer::new(net, OptimizerConfig::Sgd(SgdConfig::paper())).map_err(|source| {
            BenchError::Train {
                what: "building the trainer".into(),
                source,
            }
        })?;
    if !reset_peak_rss() {
        eprintln!(
            "bench-one: note: cannot reset the peak-RSS mark; the peak includes data loading"
        );
    }

    let batch_len = args.batch_size * image_len;
    let run_batch = |trainer: &mut OnlineTrainer, i: usize| -> Result<()> {
        let x = &images[i * batch_len..(i + 1) * batch_len];
        let y = &labels[i * args.batch_size..(i + 1) * args.batch_size];
        let step = args
            .random_bp
            .then(|| random_bp_step(args.seed, 0, i, args.time_steps));
        trainer
            .train_batch(x, y, step, UpdateRule::PerStep, BENCH_LR)
            .map_err(|source| BenchError::Train {
                what: format!(
                    "training batch {i} (T={}, mode {})",
                    args.time_steps,
                    mode_name(args.random_bp)
                ),
                source,
            })?;
        Ok(())
    };
    for i in 0..args.warmup {
        run_batch(&mut trainer, i)?;
    }
    trainer.net.reset_timings();
    let start = Instant::now();
    for i in args.warmup..total {
        run_batch(&mut trainer, i)?;
    }
    let secs = start.elapsed().as_secs_f64();
    if args.profile {
        eprint!(
            "{}",
            render_profile(
                &format!(
                    "T={} {}{}",
                    args.time_steps,
                    mode_name(args.random_bp),
                    args.zoo.map_or(String::new(), |z| format!(
                        ", {} % parallel",
                        z.parallel_percent
                    ))
                ),
                &trainer.net.layer_timings(),
                args.batches,
                secs
            )
        );
    }
    Ok(BenchOneResult {
        time_steps: args.time_steps,
        random_bp: args.random_bp,
        images_per_s: (args.batches * args.batch_size) as f64 / secs.max(1e-9),
        peak_rss_kb: peak_rss_kb().unwrap_or(0),
        parallel_percent: args.zoo.map(|z| z.parallel_percent),
    })
}

/// Where the timed batches' time went, per layer: forward and backward milliseconds per batch
/// and each layer's share of the step (the rest — loss, optimiser, transfers — is the last
/// row). Layers are named by their description's variant.
pub fn render_profile(
    title: &str,
    timings: &[crate::net::LayerTiming],
    batches: usize,
    total_s: f64,
) -> String {
    use std::fmt::Write as _;
    let per_batch = |s: f64| 1e3 * s / batches.max(1) as f64;
    let share = |s: f64| 100.0 * s / total_s.max(1e-12);
    let mut out = format!(
        "profile ({title}), per batch:\n{:>5} {:<16} {:>10} {:>10} {:>7}\n",
        "layer", "kind", "fwd ms", "bwd ms", "share"
    );
    let mut layers_s = 0.0;
    for t in timings {
        let kind = format!("{:?}", t.spec);
        let kind = kind
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default();
        let s = t.forward_s + t.backward_s;
        layers_s += s;
        let _ = writeln!(
            out,
            "{:>5} {:<16} {:>10.2} {:>10.2} {:>6.1}%",
            t.index,
            kind,
            per_batch(t.forward_s),
            per_batch(t.backward_s),
            share(s)
        );
    }
    let rest = (total_s - layers_s).max(0.0);
    let _ = writeln!(
        out,
        "{:>5} {:<16} {:>21.2} {:>6.1}%",
        "-",
        "loss, optimiser",
        per_batch(rest),
        share(rest)
    );
    out
}

/// `host-train bench-one`: runs one configuration and prints its `BENCH_ONE` line on stdout.
pub fn run_bench_one(args: &BenchOneArgs) -> Result<()> {
    let result = measure_one(args)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", result.to_line())?;
    out.flush()?;
    Ok(())
}

/// Peak-RSS ratio between the largest and the smallest `T` (full online) and whether it
/// passes ([`RSS_RATIO_LIMIT`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RssCheck {
    /// Smallest `T`.
    pub t_min: usize,
    /// Largest `T`.
    pub t_max: usize,
    /// Peak RSS (KiB) at `t_min`.
    pub rss_min_t: u64,
    /// Peak RSS (KiB) at `t_max`.
    pub rss_max_t: u64,
    /// `rss_max_t / rss_min_t`.
    pub ratio: f64,
    /// `ratio <= RSS_RATIO_LIMIT` (false when either RSS is unknown, i.e. 0).
    pub pass: bool,
}

/// The RSS check over the full-online results (`None` when there are none).
pub fn rss_check(results: &[BenchOneResult]) -> Option<RssCheck> {
    let full: Vec<&BenchOneResult> = results.iter().filter(|r| !r.random_bp).collect();
    let lo = full.iter().min_by_key(|r| r.time_steps)?;
    let hi = full.iter().max_by_key(|r| r.time_steps)?;
    let known = lo.peak_rss_kb > 0 && hi.peak_rss_kb > 0;
    let ratio = if known {
        hi.peak_rss_kb as f64 / lo.peak_rss_kb as f64
    } else {
        f64::NAN
    };
    Some(RssCheck {
        t_min: lo.time_steps,
        t_max: hi.time_steps,
        rss_min_t: lo.peak_rss_kb,
        rss_max_t: hi.peak_rss_kb,
        ratio,
        pass: known && ratio <= RSS_RATIO_LIMIT,
    })
}

/// Random-BP speed-up at `t`: images/s of random BP over images/s of full online.
pub fn speedup(results: &[BenchOneResult], t: usize) -> Option<f64> {
    let find = |random: bool| {
        results
            .iter()
            .find(|r| r.time_steps == t && r.random_bp == random)
    };
    let (full, random) = (find(false)?, find(true)?);
    (full.images_per_s > 0.0).then(|| random.images_per_s / full.images_per_s)
}

fn fmt_opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// The report's tables for `results` measured over `time_steps` (pure; [`run_bench`] prints it).
pub fn render_tables(time_steps: &[usize], results: &[BenchOneResult]) -> String {
    let find = |t: usize, random: bool| {
        results
            .iter()
            .find(|r| r.time_steps == t && r.random_bp == random)
    };
    let mut s = String::new();
    let _ = writeln!(s, "Training throughput (images/s)");
    let _ = writeln!(s, "{:>4}  {:>14}  {:>14}", "T", "full online", "random BP");
    for &t in time_steps {
        let ips = |random| fmt_opt(find(t, random), |r| format!("{:.1}", r.images_per_s));
        let _ = writeln!(s, "{t:>4}  {:>14}  {:>14}", ips(false), ips(true));
    }
    let _ = writeln!(
        s,
        "\nRandom-BP speed-up (random BP images/s / full online images/s)"
    );
    let _ = writeln!(s, "{:>4}  {:>9}", "T", "speed-up");
    for &t in time_steps {
        let _ = writeln!(
            s,
            "{t:>4}  {:>9}",
            fmt_opt(speedup(results, t), |x| format!("{x:.2}x"))
        );
    }
    let _ = writeln!(s, "\nPeak RSS (KiB, VmHWM of a fresh process per config)");
    let _ = writeln!(s, "{:>4}  {:>14}  {:>14}", "T", "full online", "random BP");
    for &t in time_steps {
        let rss = |random| fmt_opt(find(t, random), |r| r.peak_rss_kb.to_string());
        let _ = writeln!(s, "{t:>4}  {:>14}  {:>14}", rss(false), rss(true));
    }
    match rss_check(results) {
        Some(c) => {
            let _ = writeln!(
                s,
                "\nRSS(T={})/RSS(T={}) full online = {}/{} = {:.4} -> {} (limit <= {:.2})",
                c.t_max,
                c.t_min,
                c.rss_max_t,
                c.rss_min_t,
                c.ratio,
                if c.pass { "PASS" } else { "FAIL" },
                RSS_RATIO_LIMIT
            );
        }
        None => {
            let _ = writeln!(s, "\nRSS check: no full-online results -> FAIL");
        }
    }
    s
}

/// Runs one configuration in a fresh child process (`<current exe> bench-one …`) and parses
/// its `BENCH_ONE` line. The child's stderr goes to ours.
fn spawn_one(exe: &Path, one: &BenchOneArgs) -> Result<BenchOneResult> {
    let output = Command::new(exe)
        .arg("bench-one")
        .args(one.to_args())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| BenchError::Child(format!("cannot run {}: {e}", exe.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Child(format!(
            "`bench-one {}` failed ({}); stdout:\n{stdout}",
            one.to_args().join(" "),
            output.status
        )));
    }
    let result = stdout
        .lines()
        .find_map(BenchOneResult::parse_line)
        .or_invalid(|| {
            format!(
                "`bench-one {}` printed no {BENCH_ONE_PREFIX} line; stdout:\n{stdout}",
                one.to_args().join(" ")
            )
        })??;
    if result.time_steps != one.time_steps
        || result.random_bp != one.random_bp
        || result.parallel_percent != one.zoo.map(|z| z.parallel_percent)
    {
        invalid!(
            "`bench-one {}` reported another configuration: {}",
            one.to_args().join(" "),
            result.to_line()
        );
    }
    Ok(result)
}

/// The report's settings line (backend, threads, batches, optimiser, seed).
fn write_settings(out: &mut impl std::io::Write, backend: &str, args: &BenchArgs) -> Result<()> {
    writeln!(
        out,
        "backend {backend}, {} rayon threads, batch size {}, {} timed + {} warm-up batches per config, SGD (paper) lr {BENCH_LR}, seed {}",
        rayon::current_num_threads(),
        args.batch_size,
        args.batches,
        args.warmup,
        args.seed
    )?;
    Ok(())
}

/// `host-train bench`: measures every `(T, mode)` in a fresh child process, one after another,
/// and prints throughput, random-BP speed-up, peak RSS and the RSS check. A FAIL of the check is
/// reported in the output, not as an error.
pub fn run_bench(args: &BenchArgs) -> Result<()> {
    if args.time_steps.is_empty() {
        invalid!("bench needs at least one T");
    }
    if let Some(z) = args.zoo {
        return run_zoo_bench(args, z);
    }
    let source = DataSource::resolve(args.data.as_deref());
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Child(format!("cannot locate the host-train executable: {e}")))?;
    let backend = Net::new(
        NetConfig::bench(args.time_steps[0], &BenchOptions::default()),
        args.seed,
    )?
    .backend_name();

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "EM-PF training benchmark (bench network, 1x28x28 -> 10 classes)"
    )?;
    write_settings(&mut out, backend, args)?;
    writeln!(out, "data: {}", source.describe())?;
    writeln!(out, "each (T, mode) runs in its own child process; peak RSS is VmHWM after the timed batches, with the mark reset after set-up")?;
    writeln!(out)?;
    out.flush()?;

    let data = match &source {
        DataSource::FashionMnist(dir) => Some(dir.clone()),
        DataSource::Synthetic(_) => None,
    };
    let mut results = Vec::new();
    for &t in &args.time_steps {
        for random_bp in [false, true] {
            let one = BenchOneArgs {
                time_steps: t,
                batch_size: args.batch_size,
                batches: args.batches,
                warmup: args.warmup,
                random_bp,
                seed: args.seed,
                data: data.clone(),
                zoo: None,
                profile: args.profile,
            };
            one.validate()?;
            let r = spawn_one(&exe, &one)?;
            writeln!(
                out,
                "  T={t:<3} {:<6}  {:>10.1} images/s  peak RSS {} KiB",
                mode_name(random_bp),
                r.images_per_s,
                r.peak_rss_kb
            )?;
            out.flush()?;
            results.push(r);
        }
    }
    writeln!(out)?;
    write!(out, "{}", render_tables(&args.time_steps, &results))?;
    out.flush()?;
    Ok(())
}

/// The zoo report for `results` (pure): one row per parallel share, images/s of both modes,
/// the random-BP speed-up and the peak RSS of both modes.
pub fn render_zoo_table(results: &[BenchOneResult]) -> String {
    let find = |p: u8, random: bool| {
        results
            .iter()
            .find(|r| r.parallel_percent == Some(p) && r.random_bp == random)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>9}  {:>12}  {:>12}  {:>9}  {:>16}  {:>16}",
        "parallel", "full img/s", "random img/s", "speed-up", "full RSS KiB", "random RSS KiB"
    );
    for p in [0u8, 50, 100] {
        let ips = |random| fmt_opt(find(p, random), |r| format!("{:.2}", r.images_per_s));
        let rss = |random| fmt_opt(find(p, random), |r| r.peak_rss_kb.to_string());
        let speed = match (find(p, false), find(p, true)) {
            (Some(f), Some(r)) if f.images_per_s > 0.0 => {
                format!("{:.2}x", r.images_per_s / f.images_per_s)
            }
            _ => "-".to_string(),
        };
        let _ = writeln!(
            s,
            "{:>8}%  {:>12}  {:>12}  {:>9}  {:>16}  {:>16}",
            p,
            ips(false),
            ips(true),
            speed,
            rss(false),
            rss(true)
        );
    }
    let base = find(0, false).filter(|r| r.images_per_s > 0.0);
    if let Some(base) = base {
        let _ = writeln!(s, "\nimages/s relative to 0 % parallel, full online:");
        for p in [0u8, 50, 100] {
            for random in [false, true] {
                if let Some(r) = find(p, random) {
                    let _ = writeln!(
                        s,
                        "  {p:>3} % {:<6} {:.2}x",
                        mode_name(random),
                        r.images_per_s / base.images_per_s
                    );
                }
            }
        }
    }
    s
}

/// `host-train bench --arch …`: a zoo network at `args.time_steps[0]`, every parallel share in
/// both modes, each in a fresh child process.
fn run_zoo_bench(args: &BenchArgs, z: ZooBench) -> Result<()> {
    let t = args.time_steps[0];
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Child(format!("cannot locate the host-train executable: {e}")))?;
    let probe = Net::new(z.config(t)?, args.seed)?;
    let params: usize = probe
        .tensors()
        .iter()
        .filter(|m| m.kind == crate::tensor::ParamKind::Trainable)
        .map(|m| m.span.len)
        .sum();
    let backend = probe.backend_name();
    drop(probe);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "EM-PF training benchmark: {} (width x{}, {}x{}x{} -> {} classes, {:.2} M trainable values), T = {t}",
        z.arch.name(),
        z.width,
        z.in_channels,
        z.image_size,
        z.image_size,
        z.classes,
        params as f64 / 1e6
    )?;
    write_settings(&mut out, backend, args)?;
    writeln!(out, "data: SYNTHETIC images (uniform, unit variance) with random labels; stateful neurons Version I, no SECA")?;
    writeln!(out, "each (parallel share, mode) runs in its own child process; peak RSS is VmHWM after the timed batches, with the mark reset after set-up")?;
    writeln!(out)?;
    out.flush()?;
    let mut results = Vec::new();
    for parallel_percent in [0u8, 50, 100] {
        for random_bp in [false, true] {
            let one = BenchOneArgs {
                time_steps: t,
                batch_size: args.batch_size,
                batches: args.batches,
                warmup: args.warmup,
                random_bp,
                seed: args.seed,
                data: None,
                zoo: Some(ZooBench {
                    parallel_percent,
                    ..z
                }),
                profile: args.profile,
            };
            one.validate()?;
            let r = spawn_one(&exe, &one)?;
            writeln!(
                out,
                "  parallel {parallel_percent:>3} % {:<6}  {:>8.2} images/s  peak RSS {} KiB",
                mode_name(random_bp),
                r.images_per_s,
                r.peak_rss_kb
            )?;
            out.flush()?;
            results.push(r);
        }
    }
    writeln!(out)?;
    write!(out, "{}", render_zoo_table(&results))?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(t: usize, random_bp: bool, ips: f64, rss: u64) -> BenchOneResult {
        BenchOneResult {
            time_steps: t,
            random_bp,
            images_per_s: ips,
            peak_rss_kb: rss,
            parallel_percent: None,
        }
    }

    #[test]
    fn line_round_trip_and_parse() {
        let r = res(16, true, 123.456, 98765);
        let line = r.to_line();
        assert_eq!(
            line,
            "BENCH_ONE t=16 mode=random images_per_s=123.456 peak_rss_kb=98765"
        );
        assert_eq!(BenchOneResult::parse_line(&line).unwrap().unwrap(), r);
        let p = BenchOneResult::parse_line(
            "  BENCH_ONE t=2 mode=full images_per_s=1e3 peak_rss_kb=7 extra=1\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p, res(2, false, 1000.0, 7));
        assert!(BenchOneResult::parse_line("bench-one: note").is_none());
        assert!(BenchOneResult::parse_line("BENCH_ONEx t=2").is_none());
        assert!(
            BenchOneResult::parse_line("BENCH_ONE t=2 mode=full images_per_s=1")
                .unwrap()
                .is_err()
        );
        assert!(
            BenchOneResult::parse_line("BENCH_ONE t=2 mode=half images_per_s=1 peak_rss_kb=3")
                .unwrap()
                .is_err()
        );
        assert!(
            BenchOneResult::parse_line("BENCH_ONE t=x mode=full images_per_s=1 peak_rss_kb=3")
                .unwrap()
                .is_err()
        );
    }

    /// The profile names every layer with its forward/backward time per batch, and the rest
    /// of the step (loss, optimiser) is what the layers did not take.
    #[test]
    fn profile_rows_split_the_step() {
        use crate::net::{LayerSpec, LayerTiming};
        let timings = [
            LayerTiming {
                index: 0,
                spec: LayerSpec::BatchNorm2d,
                forward_s: 0.2,
                backward_s: 0.4,
                forward_calls: 2,
                backward_calls: 2,
            },
            LayerTiming {
                index: 1,
                spec: LayerSpec::GlobalAvgPool,
                forward_s: 0.1,
                backward_s: 0.1,
                forward_calls: 2,
                backward_calls: 2,
            },
        ];
        let text = render_profile("T=4 full", &timings, 2, 1.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "profile (T=4 full), per batch:");
        assert!(
            lines[2].contains("BatchNorm2d") && lines[2].contains("100.00"),
            "{text}"
        );
        assert!(
            lines[2].contains("200.00") && lines[2].ends_with("60.0%"),
            "{text}"
        );
        assert!(
            lines[3].contains("GlobalAvgPool") && lines[3].ends_with("20.0%"),
            "{text}"
        );
        assert!(
            lines[4].contains("loss, optimiser") && lines[4].ends_with("20.0%"),
            "{text}"
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn to_args_format_and_round_trip() {
        let mut a = BenchOneArgs {
            time_steps: 8,
            batch_size: 64,
            batches: 6,
            warmup: 1,
            random_bp: false,
            seed: 42,
            data: None,
            zoo: None,
            profile: false,
        };
        assert_eq!(
            a.to_args(),
            [
                "--time-steps",
                "8",
                "--batch-size",
                "64",
                "--batches",
                "6",
                "--warmup",
                "1",
                "--mode",
                "full",
                "--seed",
                "42"
            ]
        );
        assert_eq!(BenchOneArgs::parse_args(&a.to_args()).unwrap(), a);
        a.random_bp = true;
        a.data = Some(PathBuf::from("/some dir/fmnist"));
        let argv = a.to_args();
        assert_eq!(
            &argv[8..],
            [
                "--mode",
                "random",
                "--seed",
                "42",
                "--data",
                "/some dir/fmnist"
            ]
        );
        assert_eq!(BenchOneArgs::parse_args(&argv).unwrap(), a);
        a.profile = true;
        let argv = a.to_args();
        assert_eq!(&argv[argv.len() - 2..], ["--profile", "1"]);
        assert_eq!(BenchOneArgs::parse_args(&argv).unwrap(), a);
        let mut bad = argv.clone();
        *bad.last_mut().unwrap() = "yes".into();
        assert!(BenchOneArgs::parse_args(&bad).is_err());
        assert!(BenchOneArgs::parse_args(&["--time-steps", "2"]).is_err());
        assert!(BenchOneArgs::parse_args(&["--mode"]).is_err());
        assert!(BenchOneArgs::parse_args(&["--bogus", "1"]).is_err());
        a.data = None;
        a.zoo = Some(ZooBench {
            arch: Arch::Resnet18,
            in_channels: 3,
            image_size: 32,
            classes: 10,
            parallel_percent: 50,
            width: 0.25,
        });
        let argv = a.to_args();
        assert_eq!(BenchOneArgs::parse_args(&argv).unwrap(), a);
        let mut partial = argv.clone();
        partial.truncate(argv.len() - 2); // without --width
        let e = BenchOneArgs::parse_args(&partial).unwrap_err().to_string();
        assert!(e.contains("--width"), "{e}");
    }

    #[test]
    fn zoo_lines_and_table() {
        let mut r = res(4, true, 12.5, 777);
        r.parallel_percent = Some(100);
        let line = r.to_line();
        assert!(line.ends_with(" parallel=100"), "{line}");
        assert_eq!(BenchOneResult::parse_line(&line).unwrap().unwrap(), r);
        let mut rows = Vec::new();
        for (p, full, random) in [(0u8, 2.0, 5.0), (50, 3.0, 6.0), (100, 4.0, 8.0)] {
            for (rb, ips) in [(false, full), (true, random)] {
                let mut x = res(4, rb, ips, 1000 + p as u64);
                x.parallel_percent = Some(p);
                rows.push(x);
            }
        }
        let table = render_zoo_table(&rows);
        assert!(
            table.contains("     100%          4.00          8.00      2.00x"),
            "{table}"
        );
        assert!(table.contains("  50 % random 3.00x"), "{table}");
    }

    #[test]
    fn zoo_measure_one_small_real_run() {
        let a = BenchOneArgs {
            time_steps: 2,
            batch_size: 2,
            batches: 1,
            warmup: 0,
            random_bp: true,
            seed: 3,
            data: None,
            zoo: Some(ZooBench {
                arch: Arch::Resnet18,
                in_channels: 3,
                image_size: 8,
                classes: 4,
                parallel_percent: 100,
                width: 0.0625,
            }),
            profile: true,
        };
        let r = measure_one(&a).unwrap();
        assert_eq!(r.parallel_percent, Some(100));
        assert!(r.images_per_s > 0.0);
    }

    #[test]
    fn rss_ratio_and_verdict() {
        let mut rs = vec![
            res(4, false, 10.0, 105_000),
            res(2, false, 20.0, 100_000),
            res(2, true, 50.0, 999_999),
            res(16, false, 2.0, 110_000),
            res(16, true, 16.0, 1),
        ];
        let c = rss_check(&rs).unwrap();
        assert_eq!(
            (c.t_min, c.t_max, c.rss_min_t, c.rss_max_t),
            (2, 16, 100_000, 110_000)
        );
        assert!((c.ratio - 1.1).abs() < 1e-12);
        assert!(c.pass, "exactly 1.10 passes");
        rs[3].peak_rss_kb = 110_001;
        assert!(!rss_check(&rs).unwrap().pass);
        rs[3].peak_rss_kb = 0;
        assert!(!rss_check(&rs).unwrap().pass, "unknown RSS fails");
        assert!(rss_check(&rs[2..3]).is_none());
        assert_eq!(speedup(&rs, 2), Some(2.5));
        assert_eq!(speedup(&rs, 16), Some(8.0));
        assert_eq!(speedup(&rs, 4), None);
        rs[3].peak_rss_kb = 120_000;
        let table = render_tables(&[2, 4, 16], &rs);
        assert!(
            table.contains("RSS(T=16)/RSS(T=2) full online = 120000/100000 = 1.2000 -> FAIL"),
            "{table}"
        );
        assert!(
            table.contains("2.50x") && table.contains("8.00x"),
            "{table}"
        );
    }

    #[test]
    fn status_parsing() {
        let st = "Name:\tx\nVmHWM:\t  208892 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kb(st, "VmHWM:"), Some(208_892));
        assert_eq!(parse_status_kb(st, "VmRSS:"), Some(1000));
        assert_eq!(parse_status_kb(st, "VmPeak:"), None);
    }

    #[test]
    fn synthetic_pool_is_normalised_and_labelled() {
        let src = DataSource::resolve(Some(Path::new("/nonexistent/empf-bench-dir")));
        assert!(matches!(src, DataSource::Synthetic(_)));
        assert!(src.describe().contains("SYNTHETIC"));
        let (x, y) = input_pool(&src, 3, 7).unwrap();
        assert_eq!((x.len(), y.len()), (3 * IMAGE_LEN, 3));
        assert!(y.iter().all(|&l| u64::from(l) < CLASSES));
        let lo = Normalization::FASHION_MNIST.apply(0);
        let hi = Normalization::FASHION_MNIST.apply(255);
        assert!(x.iter().all(|&v| (lo..=hi).contains(&v)));
        assert_eq!(input_pool(&src, 3, 7).unwrap(), (x, y), "deterministic");
    }

    #[test]
    fn measure_one_rejects_zero_sizes() {
        let a = BenchOneArgs {
            time_steps: 2,
            batch_size: 0,
            batches: 1,
            warmup: 0,
            random_bp: false,
            seed: 0,
            data: None,
            zoo: None,
            profile: false,
        };
        assert!(measure_one(&a).is_err());
    }

    /// A tiny real run of both modes (slow in debug builds: `--release -- --ignored`).
    #[test]
    #[ignore]
    fn measure_one_small_real_run() {
        for random_bp in [false, true] {
            let a = BenchOneArgs {
                time_steps: 2,
                batch_size: 4,
                batches: 2,
                warmup: 1,
                random_bp,
                seed: 1,
                data: None,
                zoo: None,
                profile: false,
            };
            let r = measure_one(&a).unwrap();
            assert_eq!((r.time_steps, r.random_bp), (2, random_bp));
            assert!(r.images_per_s.is_finite() && r.images_per_s > 0.0, "{r:?}");
            assert!(r.peak_rss_kb > 0, "{r:?}");
        }
    }

    /// The Fashion-MNIST pool, where the Debian dataset is installed (loads 60 000 images).
    #[test]
    #[ignore]
    fn fashion_mnist_pool_when_available() {
        let dir = Path::new(crate::data::DEFAULT_FASHION_MNIST_DIR);
        let src = DataSource::resolve(Some(dir));
        if !dir.is_dir() {
            assert!(matches!(src, DataSource::Synthetic(_)));
            return;
        }
        assert_eq!(src, DataSource::FashionMnist(dir.to_path_buf()));
        let (x, y) = input_pool(&src, 5, 3).unwrap();
        assert_eq!((x.len(), y.len()), (5 * IMAGE_LEN, 5));
        assert!(x.iter().any(|&v| v != x[0]));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_is_positive() {
        let peak = peak_rss_kb().expect("VmHWM readable on Linux");
        assert!(peak > 0);
        assert!(current_rss_kb().unwrap() > 0);
    }
}
