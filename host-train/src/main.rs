//! `host-train`: train EM-PF networks online, inspect them, and benchmark training.

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use empf_host_train::checkpoint::Checkpoint;
use empf_host_train::data::augment::{AugmentConfig, Cutout, RandomCrop};
use empf_host_train::data::sets::Source;
use empf_host_train::data::{idx, BatchLoader, Dataset, DatasetKind, LoaderConfig, Split};
use empf_host_train::metrics::EpochRecord;
use empf_host_train::net::{BenchOptions, LayerSpec, Net, NetConfig, NeuronKind};
use empf_host_train::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use empf_host_train::session::{
    self, EpochProgress, LrSchedule, ModelLabels, Progress, SessionConfig, SessionStart,
};
use empf_host_train::train::UpdateRule;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "host-train",
    version,
    about = "Online EM-PF trainer (spec: shared/spec/EMPF.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DatasetArg {
    FashionMnist,
    Mnist,
    /// CIFAR-10 binary version (`--data` holds `cifar-10-batches-bin/` or the official tar.gz).
    Cifar10,
    /// CIFAR-100 binary version (`cifar-100-binary/` or the official tar.gz).
    Cifar100,
    /// Tiny-ImageNet (`tiny-imagenet-200/`), 3×64×64, 200 classes.
    TinyImagenet,
    /// ImageNet-1k folders, 3×224×224, 1000 classes (`info` only: labels above 255 need the trainer's wider labels).
    Imagenet,
    /// CIFAR10-DVS AEDAT files, 2×48×48 frames, 10 classes, T = 10 (one integrated frame per time step).
    Cifar10Dvs,
}

impl DatasetArg {
    /// `(channels, image size, classes)` of the data set.
    fn geometry(self) -> (usize, usize, usize) {
        match self {
            DatasetArg::FashionMnist | DatasetArg::Mnist => (1, 28, 10),
            DatasetArg::Cifar10 => (3, 32, 10),
            DatasetArg::Cifar100 => (3, 32, 100),
            DatasetArg::TinyImagenet => (3, 64, 200),
            DatasetArg::Imagenet => (3, 224, 1000),
            DatasetArg::Cifar10Dvs => (2, 48, 10),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OptimArg {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum ScheduleArg {
    /// lr = base·½(1 + cos(π·e/E)) with e the fractional epoch, updated every batch.
    Batch,
    /// The same curve stepped once per epoch (PyTorch CosineAnnealingLR, T_max = epochs).
    Epoch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum NeuronArg {
    /// Version I: learnable per-step leak and threshold.
    Empf,
    /// Version II: Version I + per-step membrane BatchNorm.
    Membn,
    /// Version III: stateless, all steps independent.
    Parallel,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ArchArg {
    /// conv(1→32)-bconv(32→64)-pool-bconv(64→128)-pool-bconv(128→128)-GAP-fc.
    Bench,
    /// conv(1→8, s2)-bconv(8→32, s2)-bconv(32→48)-GAP-fc: fits a 64 KB-RAM Cortex-M3.
    Mcu,
    /// conv(1→16, s2)-bconv(16→64, s2)-bconv(64→128, s2)-GAP-fc: 2× wider, 64 KB with 8-bit spikes.
    McuWide,
    /// ResNet-18 (spec §5.3): conv3×3 stem, `[2,2,2,2]` paper blocks, real-valued residual stream.
    Resnet18,
    /// ResNet-19: `[3,3,2]` blocks of 128/256/512, head FC-neuron-FC.
    Resnet19,
    /// ResNet-34: ImageNet stem conv7×7 s2 + BN + max-pool 3×3 s2, `[3,4,6,3]` blocks.
    Resnet34,
    /// VGG-13 (Tiny-ImageNet): 10 convs, average pools, GAP, FC.
    Vgg13,
    /// VGG-SNN (DVS): binary first conv, 8 convs, flatten, FC.
    VggSnn,
}

#[derive(clap::Args, Clone, Debug)]
struct ModelArgs {
    /// Network: `bench` (the paper-style bench net) or `mcu` (sized for 64 KB-RAM microcontrollers).
    #[arg(long, value_enum, default_value = "bench")]
    arch: ArchArg,
    /// Time steps T.
    #[arg(long, short = 'T', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    time_steps: u16,
    /// Neuron version of every neuron layer.
    #[arg(long, value_enum, default_value = "empf")]
    neuron: NeuronArg,
    /// Insert SECA after the BN of each binary conv (`--seca-version` says which).
    #[arg(long)]
    seca: bool,
    /// Zoo networks: SECA_I (1) or SECA_II (2, the ResNet block's, spec §2.11).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    seca_version: u8,
    /// Zoo networks: share of parallel (Version III) neurons, 0, 50 (the second neuron of each
    /// block) or 100 %.
    #[arg(long, default_value_t = 50)]
    parallel: u8,
    /// Zoo networks: classes (default: the data set's).
    #[arg(long)]
    classes: Option<usize>,
    /// Zoo networks: input height = width (default: the data set's).
    #[arg(long)]
    image_size: Option<usize>,
    /// Zoo networks: channel multiplier (narrow versions of the same topology).
    #[arg(long, default_value_t = 1.0)]
    width: f32,
}

/// Training-set augmentation (spec §6); each off unless given.
#[derive(clap::Args, Clone, Debug, Default)]
struct AugmentArgs {
    /// Random crop after zero padding by this many pixels per side (4 for CIFAR).
    #[arg(long, value_name = "PAD")]
    random_crop: Option<usize>,
    /// Horizontal flip with probability ½.
    #[arg(long)]
    hflip: bool,
    /// Cutout squares of this side length (16 for CIFAR-10, 8 for CIFAR-100).
    #[arg(long, value_name = "LENGTH")]
    cutout: Option<usize>,
    /// Number of Cutout squares.
    #[arg(long, default_value_t = 1, requires = "cutout")]
    cutout_holes: usize,
    /// Label smoothing ε in [0, 1) (soft-target cross-entropy; timm's `label_smoothing`).
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f32>,
    /// Replace the recipe's augmentation with this comma-separated list (the flags above then
    /// add to it): `none`, `paper` (the data set's set of spec §6), `crop=P`, `flip`,
    /// `cutout=L` or `NxL`, `autoaugment=cifar10|imagenet`, `rrc`, `mixup` (Mixup/CutMix, timm's
    /// settings), `smoothing=E`, `dvs`.
    #[arg(long, value_name = "LIST")]
    augment: Option<String>,
}

/// The augmentation in words, for the run's log.
fn describe_augment(a: &AugmentConfig) -> String {
    let mut parts = Vec::new();
    if let Some(c) = a.random_crop {
        parts.push(format!("random crop (pad {})", c.padding));
    }
    if a.hflip {
        parts.push("horizontal flip".to_string());
    }
    if let Some(c) = a.cutout {
        parts.push(format!("cutout {}x{}", c.holes, c.length));
    }
    if let Some(p) = a.auto_augment {
        parts.push(format!("AutoAugment ({p:?} policy)"));
    }
    if a.random_resized_crop.is_some() {
        parts.push("random resized crop".to_string());
    }
    if a.dvs.is_some() {
        parts.push("DVS flip/roll/rotate/cutout".to_string());
    }
    if let Some(m) = a.mix {
        parts.push(format!("Mixup/CutMix ({m:?})"));
    }
    if a.label_smoothing > 0.0 {
        parts.push(format!("label smoothing {}", a.label_smoothing));
    }
    parts.join(", ")
}

impl AugmentArgs {
    /// `base` (a recipe's augmentation, or none) — or the `--augment` list instead, where
    /// `paper` means `paper` — with every single augmentation flag given applied on top.
    fn config_over(&self, base: AugmentConfig, paper: AugmentConfig) -> Result<AugmentConfig> {
        let base = match self.augment.as_deref() {
            None => base,
            Some(list) => {
                let mut cfg = AugmentConfig::none();
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let more = if item == "paper" {
                        paper.clone()
                    } else {
                        AugmentConfig::parse(item).map_err(|e| anyhow::anyhow!("--augment: {e}"))?
                    };
                    cfg = if item == "none" {
                        AugmentConfig::none()
                    } else {
                        merge_augment(cfg, more)
                    };
                }
                cfg
            }
        };
        Ok(AugmentConfig {
            label_smoothing: self.label_smoothing.unwrap_or(base.label_smoothing),
            random_crop: self
                .random_crop
                .map(|padding| RandomCrop { padding })
                .or(base.random_crop),
            hflip: self.hflip || base.hflip,
            cutout: self
                .cutout
                .map(|length| Cutout {
                    holes: self.cutout_holes,
                    length,
                })
                .or(base.cutout),
            ..base
        })
    }
}

/// `a` with every augmentation that `b` turns on turned on (`b`'s settings win).
fn merge_augment(a: AugmentConfig, b: AugmentConfig) -> AugmentConfig {
    AugmentConfig {
        random_crop: b.random_crop.or(a.random_crop),
        hflip: a.hflip || b.hflip,
        cutout: b.cutout.or(a.cutout),
        auto_augment: b.auto_augment.or(a.auto_augment),
        random_resized_crop: b.random_resized_crop.or(a.random_resized_crop),
        mix: b.mix.or(a.mix),
        label_smoothing: if b.label_smoothing != 0.0 {
            b.label_smoothing
        } else {
            a.label_smoothing
        },
        dvs: b.dvs.or(a.dvs),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a network (spec Algorithm 1) and write metrics, plot and checkpoints.
    Train {
        /// A row of the paper's Table S1 or `fashion-mnist` (`host-train recipes` lists them):
        /// sets data set, network, T, batch, epochs, lr, schedule and augmentation; any of those
        /// flags given as well overrides the recipe.
        #[arg(long)]
        recipe: Option<String>,
        /// Directory with the idx files (raw or .gz).
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        dataset: DatasetArg,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        augment: AugmentArgs,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        epochs: u64,
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
        batch_size: u32,
        /// Initial learning rate (cosine-annealed to 0 over the epochs).
        #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
        lr: f64,
        #[arg(long, value_enum, default_value = "sgd")]
        optimizer: OptimArg,
        /// Cosine annealing per batch (smooth, reaches 0 at the end) or per epoch (spec §6).
        #[arg(long, value_enum, default_value = "batch")]
        schedule: ScheduleArg,
        /// SGD momentum (Nesterov unless --no-nesterov).
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        #[arg(long)]
        no_nesterov: bool,
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f64,
        /// Back-propagate every step instead of one random step per batch.
        #[arg(long)]
        no_random_bp: bool,
        /// Without random BP: sum the per-step gradients and update once per batch.
        #[arg(long)]
        accumulate: bool,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory: checkpoint.safetensors, metrics.csv/json, curves.png.
        #[arg(long, default_value = "runs/default")]
        out: PathBuf,
        /// Continue from `OUT/checkpoint.safetensors`.
        #[arg(long)]
        resume: bool,
        /// Use only the first N training images (quick runs; N ≥ 1).
        #[arg(long)]
        limit_train: Option<usize>,
        /// Use only the first N test images (N ≥ 1).
        #[arg(long)]
        limit_test: Option<usize>,
        /// Worker threads, 1 to the available parallelism (default: all of it).
        #[arg(long)]
        threads: Option<usize>,
        /// Stop after this many epochs of the schedule, as an interruption would (tests resume).
        #[arg(long, hide = true)]
        stop_after_epoch: Option<u64>,
        /// Stop after N training batches in all (smoke runs, profiling): the epoch then in
        /// progress is evaluated and checkpointed as if it had ended, and training stops.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_steps: Option<u64>,
    },
    /// The training recipes (`train --recipe NAME`) with the paper's accuracy for each.
    Recipes,
    /// Parameter count and parameter memory (paper rule §5.5, and at 1 bit per binary weight).
    Info {
        /// Network: the bench net.
        #[arg(long, default_value = "bench")]
        model: String,
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        dataset: DatasetArg,
        #[command(flatten)]
        net: ModelArgs,
    },
    /// Training images/s at several T, full online vs random BP, and peak RSS per T; with
    /// `--arch resnet18|…` a zoo network at one T, every parallel share in both modes.
    Bench {
        /// T values (default 2,4,8,16; a zoo network takes the first, default 4).
        #[arg(long, value_delimiter = ',')]
        time_steps: Vec<usize>,
        /// Samples per batch (default 64; 16 for a zoo network).
        #[arg(long)]
        batch_size: Option<usize>,
        /// `bench` (default) or a zoo network: resnet18, resnet19, resnet34, vgg13, vgg-snn.
        #[arg(long, default_value = "bench")]
        arch: String,
        /// Zoo network: input height = width.
        #[arg(long, default_value_t = 32)]
        image_size: usize,
        /// Zoo network: input channels.
        #[arg(long, default_value_t = 3)]
        in_channels: usize,
        /// Zoo network: classes.
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Zoo network: channel multiplier.
        #[arg(long, default_value_t = 1.0)]
        width: f32,
        #[arg(long, default_value_t = 6)]
        batches: usize,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also print, per configuration, where the timed batches spent their time (per layer,
        /// forward and backward ms per batch and share of the step).
        #[arg(long)]
        profile: bool,
    },
    /// Loader throughput: samples/s the data loader delivers for a data set and augmentation at
    /// each worker count (nothing is trained).
    BenchLoader {
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        dataset: DatasetArg,
        /// The data set's files (training split); without it, synthetic images of its shape.
        #[arg(long)]
        data: Option<PathBuf>,
        /// `none`, `paper` (the spec §6 preset of the data set) or a list such as
        /// `crop=4,flip,cutout=1x16` (see `AugmentConfig::parse`).
        #[arg(long, default_value = "none")]
        augment: String,
        /// Worker counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Batches per measurement (default: one epoch).
        #[arg(long)]
        batches: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Export a checkpoint to an empf-core model file (float + calibrated integer path).
    Export {
        /// Checkpoint written by `train`.
        checkpoint: PathBuf,
        /// Output model file.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Calibration images (from the training set) for the integer path.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=60000))]
        calib: u32,
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        dataset: DatasetArg,
    },
    /// Evaluate an exported model through empf-core (float and integer) on the test set.
    Eval {
        /// Model file written by `export`.
        #[arg(long)]
        model: PathBuf,
        /// Also evaluate this checkpoint on the host and compare predictions image by image.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "fashion-mnist")]
        dataset: DatasetArg,
        /// Evaluate only the first N test images (N ≥ 1).
        #[arg(long)]
        limit_test: Option<usize>,
        /// Worker threads, 1 to the available parallelism (default: all of it); one
        /// empf-core arena each.
        #[arg(long)]
        threads: Option<usize>,
        /// Refuse a model whose arenas (one per thread) need more than this many MiB.
        #[arg(long, default_value_t = 1024)]
        max_arena_mib: u64,
    },
    /// (internal) one bench configuration in a fresh process, for its peak RSS. Its argv is
    /// `BenchOneArgs::to_args`'s and is read by `BenchOneArgs::parse_args` alone (one parser,
    /// the one the round-trip test covers).
    #[command(hide = true)]
    BenchOne {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn net_config(m: &ModelArgs, dataset: DatasetArg) -> Result<NetConfig> {
    use empf_host_train::net::zoo::{zoo, Arch, SecaVariant, ZooOptions};
    let n = match m.neuron {
        NeuronArg::Empf => NeuronKind::EmPf,
        NeuronArg::Membn => NeuronKind::MemBn,
        NeuronArg::Parallel => NeuronKind::Parallel,
    };
    let opts = BenchOptions {
        neurons: [n; 4],
        seca: m.seca,
    };
    let t = m.time_steps as usize;
    let arch = match m.arch {
        ArchArg::Bench => return Ok(NetConfig::bench(t, &opts)),
        ArchArg::Mcu => return Ok(NetConfig::mcu(t, &opts)),
        ArchArg::McuWide => return Ok(NetConfig::mcu_wide(t, &opts)),
        ArchArg::Resnet18 => Arch::Resnet18,
        ArchArg::Resnet19 => Arch::Resnet19,
        ArchArg::Resnet34 => Arch::Resnet34,
        ArchArg::Vgg13 => Arch::Vgg13,
        ArchArg::VggSnn => Arch::VggSnn,
    };
    let (c, size, classes) = dataset.geometry();
    let o = ZooOptions {
        time_steps: t,
        in_channels: c,
        image_size: m.image_size.unwrap_or(size),
        classes: m.classes.unwrap_or(classes),
        neuron: n,
        parallel_percent: m.parallel,
        seca: match (m.seca, m.seca_version) {
            (false, _) => SecaVariant::Off,
            (true, 1) => SecaVariant::One,
            (true, _) => SecaVariant::Two,
        },
        width: m.width,
    };
    zoo(arch, &o).map_err(|e| anyhow::anyhow!("--arch {}: {e}", arch.name()))
}

/// The description of a network to build.
fn buildable_config(m: &ModelArgs, dataset: DatasetArg) -> Result<NetConfig> {
    net_config(m, dataset)
}

const CKPT: &str = session::CHECKPOINT_FILE;

/// "checkpoint PATH: " + `e`, for errors of the checkpoint's content (which do not name it).
fn in_checkpoint(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("checkpoint {}: {e}", path.display())
}

#[allow(clippy::too_many_arguments)]
fn train(
    data: &Path,
    dataset: DatasetArg,
    model: &ModelArgs,
    epochs: u64,
    batch_size: usize,
    lr: f64,
    optim: OptimizerConfig,
    random_bp: bool,
    rule: UpdateRule,
    seed: u64,
    out: &Path,
    resume: bool,
    limits: (Option<usize>, Option<usize>),
    stop_after: Option<u64>,
    max_steps: Option<u64>,
    schedule: ScheduleArg,
    augment: AugmentConfig,
    recipe: Option<&str>,
) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number, got {lr}");
    }
    for (flag, n) in [("--limit-train", limits.0), ("--limit-test", limits.1)] {
        if n == Some(0) {
            bail!("{flag} must be at least 1 (it is a number of images; leave it out to use them all)");
        }
    }
    let limit = |d: Dataset, n: Option<usize>| -> Result<Dataset> {
        match n {
            Some(n) => Ok(d.truncated(n)),
            None => Ok(d),
        }
    };
    let config = buildable_config(model, dataset)?;
    // Both splits against the network before anything is trained or written: a wrong image
    // size would otherwise surface as the network's internal shape error, or after an epoch.
    let load_split = |split: Split, n: Option<usize>, what: &str| -> Result<Dataset> {
        let set = limit(Dataset::load(data, split)?, n)?;
        let images_name = split.file_names().0;
        let file = idx::find_file(data, images_name).unwrap_or_else(|_| data.join(images_name));
        let net_in = (config.in_channels, config.height, config.width);
        if net_in != (1, set.height(), set.width()) {
            bail!(
                "{}: {what} images are {}x{}, the {:?} network expects {}x{}x{} inputs",
                file.display(),
                set.height(),
                set.width(),
                model.arch,
                net_in.0,
                net_in.1,
                net_in.2
            );
        }
        if set.is_empty() {
            bail!("{}: no {what} images", file.display());
        }
        Ok(set)
    };
    let (train_set, test_set): (Source, Source) = match dataset {
        DatasetArg::FashionMnist | DatasetArg::Mnist => (
            Arc::new(load_split(Split::Train, limits.0, "training")?),
            Arc::new(load_split(Split::Test, limits.1, "test")?),
        ),
        other => open_image_sets(other, data, &config, limits)?,
    };
    let cfg = SessionConfig {
        net: config,
        optimizer: optim,
        random_bp,
        rule,
        batch_size,
        epochs,
        lr,
        schedule: match schedule {
            ScheduleArg::Epoch => LrSchedule::PerEpoch,
            ScheduleArg::Batch => LrSchedule::PerBatch,
        },
        augment,
        normalization: data_set(dataset).normalization(),
        seed,
        out: out.to_path_buf(),
        resume,
        stop_after_epoch: stop_after,
        max_steps,
        recipe: recipe.map(str::to_owned),
        labels: ModelLabels {
            arch: format!("{:?}", model.arch).to_lowercase(),
            neuron: format!("{:?}", model.neuron).to_lowercase(),
            seca: model.seca,
        },
    };
    let mut progress = TerminalProgress {
        model,
        augment: &cfg.augment,
        random_bp,
        batch_size,
        epochs,
        bar: None,
    };
    let summary = session::run(&cfg, train_set, test_set, &mut progress)?;
    if let (Some(reason), Some(last)) = (&summary.stopped_early, summary.records.last()) {
        println!("stopping after epoch {} as asked ({reason})", last.epoch);
        return Ok(());
    }
    println!(
        "wrote {}, metrics.csv, metrics.json, the plot and TensorBoard events ({}) in {}",
        CKPT,
        empf_host_train::tensorboard::EVENTS_FILE,
        out.display()
    );
    Ok(())
}

/// `host-train train`'s view of a session: its log lines and a progress bar per epoch.
struct TerminalProgress<'a> {
    model: &'a ModelArgs,
    augment: &'a AugmentConfig,
    random_bp: bool,
    batch_size: usize,
    epochs: u64,
    bar: Option<ProgressBar>,
}

impl Progress for TerminalProgress<'_> {
    fn message(&mut self, line: &str) {
        println!("{line}");
    }

    fn session_started(&mut self, start: &SessionStart) {
        if !self.augment.is_none() {
            println!("augmentation: {}", describe_augment(self.augment));
        }
        let m = self.model;
        println!(
            "training {:?} net: T={}, neuron {:?}, SECA {}, {} images, batch {}, {}, random BP {}, {} threads",
            m.arch,
            m.time_steps,
            m.neuron,
            m.seca,
            start.samples_per_epoch,
            self.batch_size,
            start.optimizer,
            if self.random_bp { "on" } else { "off" },
            start.threads
        );
    }

    fn epoch_started(&mut self, epoch: u64, epochs: u64, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, p: &EpochProgress) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                p.loss,
                100.0 * p.accuracy,
                p.images_per_s
            ));
            bar.inc(1);
        }
    }

    fn epoch_training_ended(&mut self, finished: bool) {
        if let Some(bar) = self.bar.take() {
            if finished {
                bar.finish();
            } else {
                bar.abandon();
            }
        }
    }

    fn epoch_done(&mut self, r: &EpochRecord) {
        println!(
            "epoch {}/{}: train loss {:.4}, train acc {:.2}%, test acc {:.2}%, {:.1} img/s, {:.1}s",
            r.epoch,
            self.epochs,
            r.train_loss,
            100.0 * r.train_acc,
            100.0 * r.test_acc,
            r.images_per_s,
            r.wall_s
        );
    }
}

fn dataset_kind(d: DatasetArg) -> Result<DatasetKind> {
    match d {
        DatasetArg::FashionMnist => Ok(DatasetKind::FashionMnist),
        DatasetArg::Mnist => Ok(DatasetKind::Mnist),
        other => bail!(
            "--dataset {}: its loader is not in the trainer yet (Fashion-MNIST and MNIST are); `host-train info` knows its geometry",
            format!("{other:?}").to_lowercase()
        ),
    }
}

/// Rebuilds the trained network from a checkpoint: architecture from its metadata, every tensor
/// by name and shape (a missing or mis-shaped tensor is named in the error).
fn net_from_checkpoint(path: &Path) -> Result<(Net, ModelArgs, Option<f64>)> {
    let mut ck =
        Checkpoint::load(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let meta = |key: &str| -> Result<String> {
        ck.meta(key)
            .map(str::to_owned)
            .map_err(|e| in_checkpoint(path, e))
    };
    // The same range as `--time-steps`: a crafted 0 or 70000 is named here, not deep in the net.
    let t_text = meta("model.time_steps")?;
    let t: u16 = match t_text.parse() {
        Ok(t) if (1..=64).contains(&t) => t,
        _ => bail!(
            "checkpoint {}: model.time_steps = {t_text:?} is not a time-step count from 1 to 64",
            path.display()
        ),
    };
    let neuron = match meta("model.neuron")?.as_str() {
        "empf" => NeuronArg::Empf,
        "membn" => NeuronArg::Membn,
        "parallel" => NeuronArg::Parallel,
        other => bail!(
            "checkpoint {}: unknown model.neuron {other:?}",
            path.display()
        ),
    };
    let seca = match meta("model.seca")?.as_str() {
        "true" => true,
        "false" => false,
        other => bail!(
            "checkpoint {}: model.seca = {other:?} is neither true nor false",
            path.display()
        ),
    };
    // Checkpoints written before `--arch` existed are bench nets.
    // The name `train` wrote: the variant's name in lower case (see `ModelLabels`), so every
    // architecture `--arch` knows is read back.
    let arch_name = ck.meta("model.arch").ok().unwrap_or("bench");
    let arch = ArchArg::value_variants()
        .iter()
        .copied()
        .find(|a| format!("{a:?}").to_lowercase() == arch_name)
        .with_context(|| {
            format!(
                "checkpoint {}: unknown model.arch {arch_name:?}",
                path.display()
            )
        })?;
    let args = ModelArgs {
        arch,
        time_steps: t,
        neuron,
        seca,
        seca_version: 1,
        parallel: 50,
        classes: None,
        image_size: None,
        width: 1.0,
    };
    // Checkpoints store the description (`model.config`); older ones name a preset.
    let config = match ck.meta("model.config") {
        Ok(json) => serde_json::from_str::<NetConfig>(json).map_err(|e| {
            in_checkpoint(
                path,
                format!("model.config is not a network description: {e}"),
            )
        })?,
        Err(_) => net_config(&args, DatasetArg::FashionMnist)?,
    };
    if config.time_steps != t as usize {
        return Err(in_checkpoint(
            path,
            format!(
                "model.config has T = {} but model.time_steps = {t}",
                config.time_steps
            ),
        ));
    }
    let mut net = Net::new(config, 0)
        .map_err(|e| in_checkpoint(path, format!("model.config cannot be built: {e}")))?;
    let names: Vec<(String, Vec<usize>)> = net
        .params()
        .iter()
        .map(|p| (p.name.to_string(), p.shape.to_vec()))
        .collect();
    for (name, shape) in names {
        let data = ck
            .take(&name, &shape)
            .with_context(|| format!("checkpoint {}", path.display()))?;
        let p = net.param_mut(&name).context("parameter vanished")?;
        // `take` checked the shape, so the lengths agree.
        p.value.copy_from_slice(&data);
    }
    session::check_loaded_finite(path, &net)?;
    let acc = ck.meta("test_acc").ok().and_then(|v| v.parse().ok());
    Ok((net, args, acc))
}

fn export(
    ckpt: &Path,
    output: &Path,
    calib: usize,
    data: &Path,
    dataset: DatasetArg,
) -> Result<()> {
    use empf_core::{Mode, Model};
    let (net, args, _) = net_from_checkpoint(ckpt)?;
    let float = empf_host_train::export::export_float(&net).context("exporting")?;
    let model = Model::decode(&float).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut frames = 1;
    let samples: Vec<Vec<f32>> = match dataset {
        DatasetArg::FashionMnist | DatasetArg::Mnist => {
            let train_set = Dataset::load(data, Split::Train)?;
            let norm = dataset_kind(dataset)?.normalization();
            let n = calib.min(train_set.len());
            (0..n)
                .filter_map(|i| train_set.image(i).map(|im| norm.normalize(im)))
                .collect()
        }
        other => {
            // The first `calib` training images, normalised as in training, unaugmented.
            let (train_set, _) =
                open_image_sets(other, data, net.config(), (Some(calib), Some(1)))?;
            let loader = BatchLoader::from_source(
                train_set,
                LoaderConfig {
                    shuffle: false,
                    ..LoaderConfig::new(calib, 0, data_set(other).normalization())
                },
            )?;
            let mut samples = Vec::new();
            for batch in loader.epoch(0)? {
                let batch = batch?;
                let len = batch.channels * batch.height * batch.width;
                // Event data: every frame of every sample is a calibration input, so the
                // ranges cover all time steps.
                for t in 0..batch.frames {
                    let frame = batch.frame(t).context("a batch frame")?;
                    samples.extend(frame.chunks_exact(len).map(<[f32]>::to_vec));
                }
                frames = batch.frames;
            }
            samples
        }
    };
    let n = samples.len();
    let cal = empf_core::quant::calibrate(&model, samples.iter().map(|v| v.as_slice()))
        .map_err(|e| anyhow::anyhow!("calibration: {e}"))?;
    let bytes = empf_core::quant::quantize(&model, &cal)
        .map_err(|e| anyhow::anyhow!("quantisation: {e}"))?;
    empf_host_train::checkpoint::atomic_write(output, &bytes)
        .with_context(|| format!("writing {}", output.display()))?;
    let m = Model::decode(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "exported {} ({:?} net, T={}, neuron {:?}, SECA {}) to {}",
        ckpt.display(),
        args.arch,
        args.time_steps,
        args.neuron,
        args.seca,
        output.display()
    );
    let report = empf_host_train::net::zoo::report_of(net.tensors());
    println!("parameter memory (paper rule, §5.5): {} bytes; at 1 bit/weight: {} bytes; file: {} bytes (float + integer path)", report.paper_bytes(), report.packed_bytes(), bytes.len());
    println!(
        "arena: {} bytes sequential, {} bytes parallel",
        4 * m.arena_words_for(Mode::Sequential),
        4 * m.arena_words_for(Mode::Parallel)
    );
    if frames > 1 {
        println!(
            "calibration: {n} inputs ({} training samples x {frames} frames)",
            n / frames
        );
        println!("note: the trainer feeds frame t to step t; empf-core runs one input at every step (per-step input is not in its format yet), so this model deploys with one frame per inference");
    } else {
        println!("calibration: {n} training images");
    }
    println!(
        "{:>3} {:<10} {:>14} {:>9} {:>12} {:>9}",
        "#", "kind", "output", "bytes", "MACs/step", "zeros"
    );
    for (i, info) in m.layer_infos().enumerate() {
        let info = info.map_err(|e| anyhow::anyhow!("{e}"))?;
        let zeros = if info.kind.starts_with("neuron") {
            format!("{:.1}%", 100.0 * cal.layer_zero_fraction[i])
        } else {
            "-".into()
        };
        let shape = format!("{}x{}x{}", info.output.c, info.output.h, info.output.w);
        println!(
            "{i:>3} {:<10} {shape:>14} {:>9} {:>12} {zeros:>9}",
            info.kind, info.param_bytes, info.macs
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval(
    model_path: &Path,
    ckpt: Option<&Path>,
    data: &Path,
    dataset: DatasetArg,
    limit: Option<usize>,
    threads: usize,
    max_arena_mib: u64,
) -> Result<()> {
    use empf_core::Model;
    use empf_host_train::eval::{arena_bytes_per_thread, check_same_network, eval_core, EvalError};
    if max_arena_mib == 0 {
        bail!("--max-arena-mib must be at least 1");
    }
    if limit == Some(0) {
        bail!("--limit-test must be at least 1 (it is a number of images; leave it out to use them all)");
    }
    // Size checked against the header before the file is read (a huge or sparse file is not
    // loaded), arenas against the cap before they are allocated.
    let bytes = empf_host_train::model_file::read_model_file(model_path)?;
    let m = Model::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let per_thread = arena_bytes_per_thread(&m) as u64;
    let total = per_thread.saturating_mul(threads as u64);
    if total > max_arena_mib.saturating_mul(1 << 20) {
        let s = m.input_shape();
        bail!(
            "{}: the model (input {}x{}x{}, T={}) needs a {:.1} MiB empf-core arena per thread, {:.1} MiB for {threads} thread(s), more than --max-arena-mib {max_arena_mib}; raise --max-arena-mib or use fewer --threads",
            model_path.display(),
            s.c,
            s.h,
            s.w,
            m.time_steps(),
            mib(per_thread),
            mib(total)
        );
    }
    // The checkpoint first: a mismatch is reported before the test set is evaluated.
    let host = match ckpt {
        Some(ck) => {
            let (net, _, _) = net_from_checkpoint(ck)?;
            check_same_network(&m, &net).map_err(|e| match e {
                EvalError::NetworkMismatch(what) => anyhow::anyhow!(
                    "{} and {} describe different networks ({what}); give the checkpoint the model was exported from",
                    model_path.display(),
                    ck.display()
                ),
                e => in_checkpoint(ck, e),
            })?;
            Some((ck, net))
        }
        None => None,
    };
    // In-memory test sets: idx files, or CIFAR's binary batches.
    let (test, test_file) = match dataset {
        DatasetArg::FashionMnist | DatasetArg::Mnist => {
            let images_name = Split::Test.file_names().0;
            let file = idx::find_file(data, images_name).unwrap_or_else(|_| data.join(images_name));
            (Dataset::load(data, Split::Test)?, file)
        }
        DatasetArg::Cifar10 | DatasetArg::Cifar100 => {
            use empf_host_train::data::cifar::{self, CifarKind};
            let kind = if dataset == DatasetArg::Cifar10 {
                CifarKind::Cifar10
            } else {
                CifarKind::Cifar100
            };
            (cifar::load(data, kind, Split::Test)?, data.to_path_buf())
        }
        other => bail!(
            "eval --dataset {}: eval reads in-memory test sets (fashion-mnist, mnist, cifar10, cifar100); evaluate image folders through train's per-epoch test accuracy",
            format!("{other:?}").to_lowercase()
        ),
    };
    let s = m.input_shape();
    let found = (test.channels(), test.height(), test.width());
    if (s.c as usize, s.h as usize, s.w as usize) != found {
        bail!(
            "{}: the model expects {}x{}x{} inputs, but the test images in {} are {}x{}x{}",
            model_path.display(),
            s.c,
            s.h,
            s.w,
            test_file.display(),
            found.0,
            found.1,
            found.2
        );
    }
    if test.is_empty() {
        bail!("{}: no test images", test_file.display());
    }
    let norm = data_set(dataset).normalization();
    let plane = test.height() * test.width();
    let n = limit.unwrap_or(test.len()).min(test.len());
    let classes = m.classes();
    let started = Instant::now();
    let per_image = eval_core(&m, &test, n, norm, threads)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let labels = &test.labels()[..n];
    let float_ok = per_image
        .iter()
        .zip(labels)
        .filter(|(p, &l)| p.float_class == l as usize)
        .count();
    println!(
        "{}: {n} test images in {secs:.1}s ({threads} thread(s))",
        model_path.display()
    );
    println!("core float:   {:.2}%", 100.0 * float_ok as f64 / n as f64);
    if m.fixed_meta().is_some() {
        let q_ok = per_image
            .iter()
            .zip(labels)
            .filter(|(p, &l)| p.fixed_class == Some(l as usize))
            .count();
        println!("core integer: {:.2}%", 100.0 * q_ok as f64 / n as f64);
    }
    if let Some((ck, mut net)) = host {
        let argmax = |v: &[f32]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
        let batch = 100;
        let (mut host_ok, mut differ, mut worst_margin) = (0usize, 0usize, 0.0f32);
        for start in (0..n).step_by(batch) {
            let b = batch.min(n - start);
            let mut x = Vec::with_capacity(b * s.numel());
            for i in start..start + b {
                x.extend(norm.normalize_chw(test.image(i).unwrap_or(&[]), plane));
            }
            let logits = empf_host_train::export::host_logits(&mut net, &x, b)
                .map_err(|e| in_checkpoint(ck, e))?;
            // `check_same_network` made the class counts equal: one row per image.
            for (j, row) in logits.chunks_exact(classes).enumerate().take(b) {
                let p = argmax(row);
                let core = per_image[start + j];
                host_ok += (p == labels[start + j] as usize) as usize;
                if p != core.float_class {
                    differ += 1;
                    worst_margin = worst_margin.max(core.float_margin);
                }
            }
        }
        println!(
            "host (checkpoint): {:.2}%",
            100.0 * host_ok as f64 / n as f64
        );
        println!("host vs core float: {differ} of {n} predictions differ (largest core top-2 margin among them: {worst_margin:.2e})");
    }
    Ok(())
}

/// `host-train bench-loader`: one epoch (or `batches`) of the training loader per worker count.
fn bench_loader(
    dataset: DatasetArg,
    data: Option<&Path>,
    augment: &str,
    workers: &[usize],
    batch_size: usize,
    batches: Option<usize>,
    seed: u64,
) -> Result<()> {
    use empf_host_train::data::bench::{loader_images_per_second, synthetic_dataset};
    use empf_host_train::data::sets::{self, DataSet};
    use empf_host_train::data::{SampleShape, SampleSource};
    let set = match dataset {
        DatasetArg::FashionMnist => DataSet::FashionMnist,
        DatasetArg::Mnist => DataSet::Mnist,
        DatasetArg::Cifar10 => DataSet::Cifar10,
        DatasetArg::Cifar100 => DataSet::Cifar100,
        DatasetArg::TinyImagenet => DataSet::TinyImageNet,
        DatasetArg::Imagenet => DataSet::ImageNet,
        DatasetArg::Cifar10Dvs => DataSet::Cifar10Dvs,
    };
    let aug = match augment {
        "paper" => set.paper_augment(),
        spec => AugmentConfig::parse(spec).map_err(|e| anyhow::anyhow!("--augment: {e}"))?,
    };
    let source: Arc<dyn SampleSource> = match data {
        Some(dir) => sets::open(set, dir, Split::Train, set.default_options())?,
        None => {
            let (channels, size, classes) = dataset.geometry();
            let shape = SampleShape {
                channels,
                height: size,
                width: size,
                frames: 1,
                classes,
            };
            // About 256 MiB of synthetic pixels at most (ImageNet-sized images are large).
            let n = ((256usize << 20) / shape.frame_len()).clamp(256, 10_000);
            synthetic_dataset(shape, n, seed)?
        }
    };
    println!(
        "{} ({}), {} samples of {:?}, batch {batch_size}, augmentation: {augment}",
        format!("{dataset:?}").to_lowercase(),
        data.map_or("synthetic".to_string(), |d| d.display().to_string()),
        source.len(),
        source.shape()
    );
    for &w in workers {
        let loader = BatchLoader::from_source(
            source.clone(),
            LoaderConfig {
                workers: w,
                prefetch: 2 * w,
                augment: aug.clone(),
                ..LoaderConfig::new(batch_size, seed, set.normalization())
            },
        )?;
        let r = loader_images_per_second(&loader, 0, batches)?;
        println!(
            "workers {w:>3}: {:>10.0} samples/s ({} samples in {:.2}s)",
            r.images_per_second, r.images, r.seconds
        );
    }
    Ok(())
}

fn info(net: &ModelArgs, dataset: DatasetArg) -> Result<()> {
    use empf_host_train::net::zoo::count_params;
    let config = net_config(net, dataset)?;
    let r = count_params(&config, config.time_steps);
    println!(
        "{} on {} ({}x{}x{} input, {} classes), T={}, neuron {:?}, SECA {}",
        format!("{:?}", net.arch).to_lowercase(),
        format!("{dataset:?}").to_lowercase(),
        config.in_channels,
        config.height,
        config.width,
        config
            .layers
            .iter()
            .rev()
            .find_map(|l| match l {
                LayerSpec::Linear { out_features, .. }
                | LayerSpec::BinaryLinear { out_features, .. } => Some(*out_features),
                _ => None,
            })
            .unwrap_or(0),
        net.time_steps,
        net.neuron,
        if net.seca {
            (if net.seca_version == 1 { "I" } else { "II" }).to_string()
        } else {
            "off".into()
        },
    );
    println!("{r}");
    println!(
        "Param.(B) (paper, binary at 2 bits): {:.2}M   FP32: {:.2}M   at 1 bit per binary weight: {:.2} MB",
        r.paper_bytes() / 1e6,
        r.fp32_bytes() as f64 / 1e6,
        r.packed_bytes() / 1e6
    );
    match buildable_config(net, dataset) {
        Ok(config) => {
            let n = Net::new(config, 0)?;
            let bytes = empf_host_train::export::export_float(&n).context("exporting")?;
            println!(
                "empf-core model file: {} bytes (float path; signs packed 1 bit per weight, BN and α folded)",
                bytes.len()
            );
        }
        Err(e) => println!("empf-core model file: not exportable yet ({e})"),
    }
    Ok(())
}

/// Applies the `--threads` rule (1 to the available parallelism) and sizes rayon's pool by it;
/// returns the thread count.
fn set_threads(requested: Option<usize>) -> Result<usize> {
    use empf_host_train::threads;
    let n = threads::resolve(requested, threads::available())?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("setting --threads")?;
    Ok(n)
}

/// Fills the training flags the user did not give from the recipe (`given` says which were
/// given on the command line); returns the augmentation the recipe asks for, before the
/// augmentation flags are applied on top.
#[allow(clippy::too_many_arguments)]
fn apply_recipe(
    r: &empf_host_train::recipes::Recipe,
    given: &dyn Fn(&str) -> bool,
    dataset: &mut DatasetArg,
    model: &mut ModelArgs,
    epochs: &mut u64,
    batch_size: &mut u32,
    lr: &mut f64,
    schedule: &mut ScheduleArg,
) -> Result<AugmentConfig> {
    use empf_host_train::recipes::{RecipeAugment, RecipeData, RecipeSchedule};
    let recipe_dataset = match r.data {
        RecipeData::FashionMnist => DatasetArg::FashionMnist,
        RecipeData::Cifar10 => DatasetArg::Cifar10,
        RecipeData::Cifar100 => DatasetArg::Cifar100,
        RecipeData::TinyImageNet => DatasetArg::TinyImagenet,
        RecipeData::ImageNet => DatasetArg::Imagenet,
        RecipeData::Cifar10Dvs => DatasetArg::Cifar10Dvs,
    };
    if !given("dataset") {
        *dataset = recipe_dataset;
    }
    if !given("arch") {
        model.arch = ArchArg::from_str(r.arch, false)
            .map_err(|e| anyhow::anyhow!("recipe {}: arch {}: {e}", r.name, r.arch))?;
    }
    if !given("neuron") {
        model.neuron = match r.neuron {
            NeuronKind::MemBn => NeuronArg::Membn,
            NeuronKind::Parallel => NeuronArg::Parallel,
            NeuronKind::EmPf => NeuronArg::Empf,
        };
    }
    if !given("parallel") {
        model.parallel = r.parallel_percent;
    }
    if !given("seca") && !given("seca_version") {
        model.seca = r.seca > 0;
        model.seca_version = r.seca.max(1);
    }
    if !given("time_steps") {
        model.time_steps = r.time_steps;
    }
    if !given("batch_size") {
        *batch_size = r.batch_size;
    }
    if !given("epochs") {
        *epochs = r.epochs;
    }
    if !given("lr") {
        *lr = r.lr;
    }
    if !given("schedule") {
        *schedule = match r.schedule {
            RecipeSchedule::CosinePerEpoch => ScheduleArg::Epoch,
            RecipeSchedule::CosinePerBatch => ScheduleArg::Batch,
        };
    }
    Ok(match r.augment {
        RecipeAugment::Off => AugmentConfig::none(),
        RecipeAugment::LabelSmoothing { epsilon } => AugmentConfig {
            label_smoothing: epsilon,
            ..AugmentConfig::none()
        },
        RecipeAugment::CropFlip { padding } => AugmentConfig {
            random_crop: Some(RandomCrop { padding }),
            hflip: true,
            ..AugmentConfig::none()
        },
        RecipeAugment::Paper => data_set(*dataset).paper_augment(),
    })
}

/// Both splits of a CIFAR / Tiny-ImageNet / ImageNet / CIFAR10-DVS directory, checked against
/// the network (input shape, classes) and truncated to `limits` (`--limit-train/--limit-test`).
fn open_image_sets(
    dataset: DatasetArg,
    data: &Path,
    config: &NetConfig,
    limits: (Option<usize>, Option<usize>),
) -> Result<(Source, Source)> {
    use empf_host_train::data::sets::{limited, open_train_test};
    let set = data_set(dataset);
    let mut opts = set.default_options();
    opts.image_size = config.height;
    if opts.frames > 1 {
        // Event data: one integrated frame per time step (spec §5.4: T = 10 for CIFAR10-DVS).
        opts.frames = config.time_steps;
    }
    let (train, test) = open_train_test(set, data, opts)
        .with_context(|| format!("--dataset {dataset:?} in {}", data.display()))?;
    let name = format!("{dataset:?}").to_lowercase();
    for (src, what) in [(&train, "training"), (&test, "test")] {
        let s = src.shape();
        if s.frames > 1 && s.frames != config.time_steps {
            bail!(
                "{}: {name} samples are {} event frames each, the network runs T = {} steps (one frame per step)",
                data.display(),
                s.frames,
                config.time_steps
            );
        }
        let net_in = (config.in_channels, config.height, config.width);
        if (s.channels, s.height, s.width) != net_in {
            bail!(
                "{}: {name} {what} images are {}x{}x{}, the network expects {}x{}x{} inputs",
                data.display(),
                s.channels,
                s.height,
                s.width,
                net_in.0,
                net_in.1,
                net_in.2
            );
        }
        let net_classes = config.layers.iter().rev().find_map(|l| match l {
            LayerSpec::Linear { out_features, .. }
            | LayerSpec::BinaryLinear { out_features, .. } => Some(*out_features),
            _ => None,
        });
        if net_classes.is_some_and(|k| s.classes > k) {
            bail!(
                "{}: {name} has {} classes, the network has {} outputs (set --classes)",
                data.display(),
                s.classes,
                net_classes.unwrap_or(0)
            );
        }
        if src.is_empty() {
            bail!("{}: no {name} {what} samples", data.display());
        }
    }
    Ok((limited(train, limits.0), limited(test, limits.1)))
}

/// The data module's name for a `--dataset`.
fn data_set(d: DatasetArg) -> empf_host_train::data::sets::DataSet {
    use empf_host_train::data::sets::DataSet;
    match d {
        DatasetArg::FashionMnist => DataSet::FashionMnist,
        DatasetArg::Mnist => DataSet::Mnist,
        DatasetArg::Cifar10 => DataSet::Cifar10,
        DatasetArg::Cifar100 => DataSet::Cifar100,
        DatasetArg::TinyImagenet => DataSet::TinyImageNet,
        DatasetArg::Imagenet => DataSet::ImageNet,
        DatasetArg::Cifar10Dvs => DataSet::Cifar10Dvs,
    }
}

fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut recipe_augment = None;
    if let Command::Train {
        recipe: Some(name),
        dataset,
        model,
        epochs,
        batch_size,
        lr,
        schedule,
        ..
    } = &mut cli.command
    {
        let r = empf_host_train::recipes::recipe(name).with_context(|| {
            format!(
                "--recipe {name:?}: not a recipe (the recipes are {})",
                empf_host_train::recipes::recipe_names()
            )
        })?;
        let sub = matches
            .subcommand_matches("train")
            .context("train's arguments")?;
        let given = |id: &str| sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        recipe_augment = Some(apply_recipe(
            r, &given, dataset, model, epochs, batch_size, lr, schedule,
        )?);
    }
    match cli.command {
        Command::Recipes => {
            print!("{}", empf_host_train::recipes::render_recipes());
            Ok(())
        }
        Command::Train {
            recipe,
            data,
            dataset,
            model,
            augment,
            epochs,
            batch_size,
            lr,
            optimizer,
            momentum,
            no_nesterov,
            weight_decay,
            no_random_bp,
            accumulate,
            seed,
            out,
            resume,
            limit_train,
            limit_test,
            threads,
            stop_after_epoch,
            max_steps,
            schedule,
        } => {
            set_threads(threads)?;
            let optim = match optimizer {
                OptimArg::Sgd => OptimizerConfig::Sgd(SgdConfig {
                    momentum,
                    dampening: 0.0,
                    weight_decay,
                    nesterov: !no_nesterov && momentum > 0.0,
                }),
                OptimArg::Adam => OptimizerConfig::Adam(AdamConfig {
                    weight_decay,
                    ..AdamConfig::adam()
                }),
                OptimArg::Adamw => OptimizerConfig::Adam(AdamConfig {
                    weight_decay,
                    ..AdamConfig::adamw()
                }),
            };
            let rule = if accumulate {
                UpdateRule::Accumulate
            } else {
                UpdateRule::PerStep
            };
            if accumulate && !no_random_bp {
                bail!("--accumulate applies to full online training: add --no-random-bp");
            }
            train(
                &data,
                dataset,
                &model,
                epochs,
                batch_size as usize,
                lr,
                optim,
                !no_random_bp,
                rule,
                seed,
                &out,
                resume,
                (limit_train, limit_test),
                stop_after_epoch,
                max_steps,
                schedule,
                augment.config_over(
                    recipe_augment.unwrap_or_default(),
                    data_set(dataset).paper_augment(),
                )?,
                recipe.as_deref(),
            )
        }
        Command::Export {
            checkpoint,
            output,
            calib,
            data,
            dataset,
        } => export(&checkpoint, &output, calib as usize, &data, dataset),
        Command::Eval {
            model,
            checkpoint,
            data,
            dataset,
            limit_test,
            threads,
            max_arena_mib,
        } => {
            let threads = set_threads(threads)?;
            eval(
                &model,
                checkpoint.as_deref(),
                &data,
                dataset,
                limit_test,
                threads,
                max_arena_mib,
            )
        }
        Command::Info {
            model,
            dataset,
            net,
        } => {
            if model != "bench" {
                bail!("unknown --model {model:?}: the trainer knows `bench`");
            }
            info(&net, dataset)
        }
        Command::BenchLoader {
            dataset,
            data,
            augment,
            workers,
            batch_size,
            batches,
            seed,
        } => bench_loader(
            dataset,
            data.as_deref(),
            &augment,
            &workers,
            batch_size,
            batches,
            seed,
        ),
        Command::Bench {
            time_steps,
            batch_size,
            batches,
            data,
            seed,
            arch,
            image_size,
            in_channels,
            classes,
            width,
            profile,
        } => {
            use empf_host_train::bench::{arch_named, ZooBench};
            let zoo = match arch.as_str() {
                "bench" => None,
                name => Some(ZooBench {
                    arch: arch_named(name).with_context(|| {
                        format!("--arch {name:?}: bench takes bench, resnet18, resnet19, resnet34, vgg13 or vgg-snn")
                    })?,
                    in_channels,
                    image_size,
                    classes,
                    parallel_percent: 0,
                    width,
                }),
            };
            let time_steps = match (time_steps.is_empty(), zoo.is_some()) {
                (false, _) => time_steps,
                (true, false) => vec![2, 4, 8, 16],
                (true, true) => vec![4],
            };
            let batch_size = batch_size.unwrap_or(if zoo.is_some() { 16 } else { 64 });
            if time_steps.contains(&0) || batch_size == 0 || batches == 0 {
                bail!("--time-steps, --batch-size and --batches must be positive");
            }
            empf_host_train::bench::run_bench(&empf_host_train::bench::BenchArgs {
                time_steps,
                batch_size,
                batches,
                warmup: 1,
                data,
                seed,
                zoo,
                profile,
            })?;
            Ok(())
        }
        Command::BenchOne { args } => {
            let args = empf_host_train::bench::BenchOneArgs::parse_args(&args)?;
            empf_host_train::bench::run_bench_one(&args)?;
            Ok(())
        }
    }
}
