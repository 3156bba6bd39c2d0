//! A training session (spec Algorithm 1 over epochs): the run directory and its lock, resume
//! from the checkpoint, the epoch loop with its learning-rate schedule and random-BP steps,
//! evaluation on the test split after every epoch, the checkpoint and the metric views.
//!
//! `host-train train` resolves its flags and recipe into a [`SessionConfig`] and calls
//! [`run`]; everything after that lives here, so another front end (a notebook binding, a sweep
//! driver) trains the same way. What the user watches goes through [`Progress`].
//!
//! Invariants: nothing under `out` is touched before the configuration, both data splits and
//! the augmentation have been checked; the checkpoint is only ever replaced by a complete,
//! finite one (written to a temporary file and renamed); a resumed run continues with the same
//! data order, schedule and random-BP steps as an uninterrupted one.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::data::augment::AugmentConfig;
use crate::data::sets::Source;
use crate::data::{BatchLoader, ChannelNorm, DataError, LoaderConfig};
use crate::metrics::{EpochRecord, MetricsError, MetricsLog};
use crate::net::{Net, NetConfig};
use crate::optim::{CosineSchedule, OptimError, OptimizerConfig};
use crate::run_dir::{remove_stale_temps, RunDirError, RunLock};
use crate::train::{check_finite, random_bp_step, OnlineTrainer, TrainError, UpdateRule};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The checkpoint's file name inside the run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// When the cosine learning-rate schedule moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrSchedule {
    /// Once per epoch (PyTorch `CosineAnnealingLR` stepped per epoch, spec §6).
    PerEpoch,
    /// Every batch, on the same curve (smooth; reaches 0 at the end).
    PerBatch,
}

/// Legacy model metadata the checkpoint carries next to the serialized description, so that
/// tools reading only those keys (and older readers) still see what was trained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLabels {
    /// `--arch` name (`bench`, `resnet18`, …).
    pub arch: String,
    /// Neuron version name (`empf`, `membn`, `parallel`).
    pub neuron: String,
    /// Whether SECA is on.
    pub seca: bool,
}

/// Everything a training session needs, resolved (no defaults are applied here).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The network to build (checked by `Net::new` through `core`).
    pub net: NetConfig,
    /// Optimiser.
    pub optimizer: OptimizerConfig,
    /// One random back-propagated step per batch (spec §2.4) instead of every step.
    pub random_bp: bool,
    /// Without random BP: one update per step or the summed gradient once per batch.
    pub rule: UpdateRule,
    /// Batch size (≥ 1).
    pub batch_size: usize,
    /// Epochs of the schedule (≥ 1).
    pub epochs: u64,
    /// Initial learning rate (> 0), cosine-annealed to 0 over `epochs`.
    pub lr: f64,
    /// When the schedule moves.
    pub schedule: LrSchedule,
    /// Training-set augmentation (checked against the image size before anything is written).
    pub augment: AugmentConfig,
    /// Per-channel input normalisation (the data set's, as in evaluation and export).
    pub normalization: ChannelNorm,
    /// Seed of initialisation, data order, augmentation and random-BP steps.
    pub seed: u64,
    /// Run directory: checkpoint, metrics, plot, TensorBoard events.
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors` (its configuration and seed must match).
    pub resume: bool,
    /// Stop once this many epochs are done, as an interruption would (tests resume).
    pub stop_after_epoch: Option<u64>,
    /// Stop after this many training batches in all; the epoch then in progress is evaluated
    /// and checkpointed as if it had ended.
    pub max_steps: Option<u64>,
    /// Recipe name, recorded in the checkpoint's configuration.
    pub recipe: Option<String>,
    /// The model metadata written next to the description.
    pub labels: ModelLabels,
}

impl SessionConfig {
    /// The configuration string the checkpoint records and a resume must match.
    pub fn fingerprint(&self) -> String {
        let SessionConfig {
            net,
            optimizer,
            random_bp,
            rule,
            batch_size,
            lr,
            epochs,
            schedule,
            augment,
            recipe,
            ..
        } = self;
        // The schedule's name as `host-train`'s flag spells it, so checkpoints written before
        // this type existed still resume.
        let schedule = match schedule {
            LrSchedule::PerEpoch => "Epoch",
            LrSchedule::PerBatch => "Batch",
        };
        let mut s = format!("{net:?} optim={optimizer:?} random_bp={random_bp} rule={rule:?} batch={batch_size} lr={lr} epochs={epochs} schedule={schedule}");
        if !augment.is_none() {
            // Only when on, so that checkpoints written before augmentation existed still resume.
            s.push_str(&format!(" augment={augment:?}"));
        }
        if let Some(name) = recipe {
            s.push_str(&format!(" recipe={name}"));
        }
        s
    }
}

/// Errors of a training session; each names what was wrong and, where one is involved, the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A configuration value no run can use.
    #[error("{0}")]
    Config(String),
    /// The augmentation does not fit the images.
    #[error("augmentation: {0}")]
    Augment(String),
    /// Creating the run directory failed.
    #[error("creating {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run directory's lock or temporary files.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// `--resume` without a checkpoint.
    #[error("nothing to resume: {} does not exist (no epoch of a run in {} has finished yet); run the same command without --resume to start training", checkpoint.display(), checkpoint.parent().unwrap_or(Path::new(".")).display())]
    NothingToResume {
        /// The checkpoint that is missing.
        checkpoint: PathBuf,
    },
    /// A fresh run would overwrite a checkpoint.
    #[error("{} exists: pass --resume to continue it, or choose another --out", checkpoint.display())]
    CheckpointExists {
        /// The checkpoint.
        checkpoint: PathBuf,
    },
    /// Reading or writing the checkpoint failed.
    #[error("{what} checkpoint {}: {source}", path.display())]
    CheckpointIo {
        /// `reading` or `writing`.
        what: &'static str,
        /// The checkpoint.
        path: PathBuf,
        /// What failed.
        source: CheckpointError,
    },
    /// The checkpoint's content cannot be used.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint was trained with another configuration.
    #[error("checkpoint {} was trained with a different configuration:\n  checkpoint: {found}\n  now:        {now}", path.display())]
    ConfigMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Its configuration.
        found: String,
        /// This run's.
        now: String,
    },
    /// The loss became non-finite; the last good checkpoint is untouched.
    #[error("loss became {loss} at epoch {epoch}, batch {batch}, step {step}: training stopped. The last good checkpoint ({}) is untouched; try a lower --lr.", shown(last_good))]
    LossDiverged {
        /// The loss.
        loss: f32,
        /// Time step.
        step: usize,
        /// Epoch, from 1.
        epoch: u64,
        /// Batch index within the epoch.
        batch: usize,
        /// The checkpoint left as it was, if one exists.
        last_good: Option<PathBuf>,
    },
    /// A parameter became non-finite while the loss was finite.
    #[error("{name}[{index}] became {value} at epoch {epoch}, batch {batch} (the loss was still finite): training stopped. The last good checkpoint ({}) is untouched; try a lower --lr.", shown(last_good))]
    ParameterDiverged {
        /// The parameter tensor.
        name: String,
        /// Element index.
        index: usize,
        /// Its value.
        value: f32,
        /// Epoch, from 1.
        epoch: u64,
        /// Batch index within the epoch.
        batch: usize,
        /// The checkpoint left as it was, if one exists.
        last_good: Option<PathBuf>,
    },
    /// Data loading.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The trainer.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The optimiser or schedule.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// Building the network.
    #[error(transparent)]
    Net(#[from] crate::error::Error),
    /// Metrics files.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A checkpoint path for a message, or "none yet".
fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or("none yet".to_string(), |p| p.display().to_string())
}

/// Running figures of the epoch in progress, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochProgress {
    /// Batches done in this epoch.
    pub batches: usize,
    /// Mean training loss so far.
    pub loss: f64,
    /// Training accuracy so far, 0..1.
    pub accuracy: f64,
    /// Training images per second so far.
    pub images_per_s: f64,
}

/// What a session knows once its data and network are ready, before the first batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStart {
    /// Training images per epoch (the loader drops a last incomplete batch).
    pub samples_per_epoch: usize,
    /// Training batches per epoch.
    pub batches_per_epoch: usize,
    /// The optimiser's name (`sgd`, `adam`, `adamw`).
    pub optimizer: &'static str,
    /// Worker threads of the step.
    pub threads: usize,
}

/// What a front end shows while a session runs. Every method has an empty default.
pub trait Progress {
    /// A line for the run's log.
    fn message(&mut self, _line: &str) {}
    /// Data, network and (on resume) checkpoint are ready; training starts.
    fn session_started(&mut self, _start: &SessionStart) {}
    /// Epoch `epoch` (from 1) of `epochs` starts with `batches` batches.
    fn epoch_started(&mut self, _epoch: u64, _epochs: u64, _batches: usize) {}
    /// A batch finished.
    fn batch_done(&mut self, _progress: &EpochProgress) {}
    /// The epoch's training part ended (normally or by `max_steps`), or was abandoned on an
    /// error (`finished` false).
    fn epoch_training_ended(&mut self, _finished: bool) {}
    /// The epoch was evaluated and checkpointed.
    fn epoch_done(&mut self, _record: &EpochRecord) {}
}

/// A [`Progress`] that prints nothing.
pub struct Silent;

impl Progress for Silent {}

/// How a session ended.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    /// The epoch the run resumed after (0 for a fresh run).
    pub resumed_after: u64,
    /// Epochs trained in this call.
    pub records: Vec<EpochRecord>,
    /// Training batches in this call.
    pub steps: u64,
    /// Why it stopped early, if it did (`--stop-after-epoch`, `--max-steps`).
    pub stopped_early: Option<String>,
    /// The checkpoint written.
    pub checkpoint: PathBuf,
}

/// Trains `cfg.net` on `train`, evaluates on `test` after every epoch, and keeps the run
/// directory `cfg.out` (checkpoint, metrics, plot, TensorBoard events) up to date.
pub fn run(
    cfg: &SessionConfig,
    train: Source,
    test: Source,
    progress: &mut dyn Progress,
) -> Result<SessionSummary, SessionError> {
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(SessionError::Config(format!(
            "--lr must be a positive number, got {}",
            cfg.lr
        )));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(SessionError::Config(format!(
            "batch size ({}) and epochs ({}) must be at least 1",
            cfg.batch_size, cfg.epochs
        )));
    }
    let shape = train.shape();
    cfg.augment
        .validate(shape.height, shape.width)
        .map_err(SessionError::Augment)?;
    let out = cfg.out.as_path();
    std::fs::create_dir_all(out).map_err(|source| SessionError::CreateDir {
        path: out.to_path_buf(),
        source,
    })?;
    // Held until this returns: a second run on the same directory stops here, before it
    // touches the metrics or the checkpoint.
    let _lock = RunLock::acquire(out)?;
    let ckpt = out.join(CHECKPOINT_FILE);
    let stale = remove_stale_temps(&ckpt)?;
    if !stale.is_empty() {
        progress.message(&format!(
            "removed {} temporary file(s) of an interrupted checkpoint write in {}",
            stale.len(),
            out.display()
        ));
    }
    if cfg.resume && !ckpt.exists() {
        return Err(SessionError::NothingToResume { checkpoint: ckpt });
    }
    let fingerprint = cfg.fingerprint();
    let net = Net::new(cfg.net.clone(), cfg.seed)?;
    let (data_classes, net_classes) = (shape.classes, net.num_classes());
    if data_classes > net_classes {
        return Err(SessionError::Config(format!(
            "the data set has {data_classes} classes, the network {net_classes} outputs"
        )));
    }
    let mut tr = OnlineTrainer::new(net, cfg.optimizer)?;
    let mut log = MetricsLog::open(out)?;
    let start_epoch = if cfg.resume {
        let e = load_checkpoint(&ckpt, &mut tr, cfg.seed, &fingerprint, cfg.epochs)?;
        // Rows are numbered from 1: keep epochs 1..=e, drop what an interrupted epoch wrote.
        log.truncate_from(e + 1)?;
        progress.message(&format!("resumed from {} after epoch {e}", ckpt.display()));
        e
    } else {
        if ckpt.exists() {
            return Err(SessionError::CheckpointExists { checkpoint: ckpt });
        }
        log.truncate_from(0)?;
        0
    };
    let sched = CosineSchedule::new(cfg.lr, cfg.epochs)?;
    let loader = BatchLoader::from_source(
        train,
        LoaderConfig {
            augment: cfg.augment.clone(),
            ..LoaderConfig::new(cfg.batch_size, cfg.seed, cfg.normalization)
        },
    )?;
    let test_loader = BatchLoader::from_source(
        test,
        LoaderConfig {
            shuffle: false,
            ..LoaderConfig::new(cfg.batch_size, cfg.seed, cfg.normalization)
        },
    )?;
    let t_steps = cfg.net.time_steps;
    progress.session_started(&SessionStart {
        samples_per_epoch: loader.samples_per_epoch(),
        batches_per_epoch: loader.batches_per_epoch(),
        optimizer: tr.optimizer.config().kind(),
        threads: rayon::current_num_threads(),
    });
    let mut summary = SessionSummary {
        resumed_after: start_epoch,
        records: Vec::new(),
        steps: 0,
        stopped_early: None,
        checkpoint: ckpt.clone(),
    };
    let epochs = cfg.epochs;
    let nb = loader.batches_per_epoch() as f64;
    for epoch in start_epoch..epochs {
        let lr_e = sched.lr_at(epoch);
        let started = Instant::now();
        progress.epoch_started(epoch + 1, epochs, loader.batches_per_epoch());
        let (mut loss_sum, mut correct, mut seen, mut batches) = (0.0f64, 0usize, 0usize, 0usize);
        let trained = (|| -> Result<(), SessionError> {
            for batch in loader.epoch(epoch)? {
                let batch = batch?;
                if cfg.max_steps.is_some_and(|m| summary.steps >= m) {
                    break;
                }
                summary.steps += 1;
                let r = cfg
                    .random_bp
                    .then(|| random_bp_step(cfg.seed, epoch, batch.index, t_steps));
                let lr_b = match cfg.schedule {
                    LrSchedule::PerEpoch => lr_e,
                    LrSchedule::PerBatch => {
                        cfg.lr
                            * 0.5
                            * (1.0
                                + (std::f64::consts::PI * (epoch as f64 + batch.index as f64 / nb)
                                    / epochs as f64)
                                    .cos())
                    }
                };
                // Mixup/CutMix and label smoothing: the loader's soft targets are the loss's,
                // widened with zeros when the network has more outputs than the data classes.
                let widened;
                let targets = match batch.soft_targets.as_deref() {
                    Some(q) if data_classes < net_classes => {
                        widened = widen_targets(q, data_classes, net_classes);
                        Some(widened.as_slice())
                    }
                    q => q,
                };
                let labels = &batch.labels;
                let stats = tr
                    .train_batch_with(&batch.images, labels, targets, r, cfg.rule, lr_b)
                    .map_err(|e| {
                        let (epoch, batch) = (epoch + 1, batch.index);
                        let last_good = ckpt.exists().then(|| ckpt.clone());
                        match e {
                            TrainError::NonFiniteLoss { loss, step } => {
                                SessionError::LossDiverged {
                                    loss,
                                    step,
                                    epoch,
                                    batch,
                                    last_good,
                                }
                            }
                            TrainError::NonFiniteParameter { name, index, value } => {
                                SessionError::ParameterDiverged {
                                    name,
                                    index,
                                    value,
                                    epoch,
                                    batch,
                                    last_good,
                                }
                            }
                            other => SessionError::Train(other),
                        }
                    })?;
                loss_sum += stats.loss;
                correct += stats.correct;
                seen += stats.count;
                batches += 1;
                progress.batch_done(&EpochProgress {
                    batches,
                    loss: loss_sum / batches as f64,
                    accuracy: correct as f64 / seen.max(1) as f64,
                    images_per_s: seen as f64 / started.elapsed().as_secs_f64(),
                });
            }
            Ok(())
        })();
        progress.epoch_training_ended(trained.is_ok());
        trained?;
        let train_secs = started.elapsed().as_secs_f64();
        let (mut test_correct, mut test_seen) = (0usize, 0usize);
        // Firing rate per neuron layer over the test split: spikes / (samples · T · elements).
        let per_sample = tr.net.spike_elements_per_sample();
        let mut spikes = vec![0.0f64; per_sample.len()];
        tr.net.set_spike_counting(true);
        let evaluated = (|| -> Result<(), SessionError> {
            for batch in test_loader.epoch(0)? {
                let batch = batch?;
                test_correct += tr.eval_batch(&batch.images, &batch.labels)?;
                test_seen += batch.labels.len();
                for (sum, &c) in spikes.iter_mut().zip(tr.net.spike_counts()) {
                    *sum += f64::from(c);
                }
            }
            Ok(())
        })();
        tr.net.set_spike_counting(false);
        evaluated?;
        let steps_seen = (test_seen * t_steps).max(1) as f64;
        let spike_rates = spikes
            .iter()
            .zip(&per_sample)
            .map(|(&s, &e)| s / (steps_seen * e.max(1) as f64))
            .collect();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / batches.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            test_acc: test_correct as f64 / test_seen.max(1) as f64,
            lr: lr_e,
            images_per_s: seen as f64 / train_secs,
            wall_s: started.elapsed().as_secs_f64(),
            spike_rates,
        };
        save_checkpoint(
            &ckpt,
            &tr,
            epoch + 1,
            cfg.seed,
            &fingerprint,
            &cfg.labels,
            record.test_acc,
        )?;
        log.push(record.clone())?;
        progress.epoch_done(&record);
        summary.records.push(record);
        let stop = if cfg.stop_after_epoch == Some(epoch + 1) {
            Some("--stop-after-epoch".to_string())
        } else if cfg.max_steps.is_some_and(|m| summary.steps >= m) {
            Some(format!("--max-steps: {} batches", summary.steps))
        } else {
            None
        };
        if stop.is_some() {
            summary.stopped_early = stop;
            break;
        }
    }
    Ok(summary)
}

/// `[B][from]` target rows as `[B][to]` (`to ≥ from`), the extra classes at probability 0.
fn widen_targets(q: &[f32], from: usize, to: usize) -> Vec<f32> {
    let mut out = vec![0.0; q.len() / from.max(1) * to];
    for (dst, src) in out.chunks_exact_mut(to).zip(q.chunks_exact(from.max(1))) {
        dst[..from].copy_from_slice(src);
    }
    out
}

/// Writes the trainer's parameters and optimiser state with the run's metadata to `path`
/// (atomically; a non-finite tensor is refused and the previous checkpoint stays).
pub fn save_checkpoint(
    path: &Path,
    tr: &OnlineTrainer,
    epoch_done: u64,
    seed: u64,
    config: &str,
    labels: &ModelLabels,
    test_acc: f64,
) -> Result<(), SessionError> {
    let io = |source| SessionError::CheckpointIo {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut ck = Checkpoint::new();
    ck.set_meta("model.arch", &labels.arch);
    ck.set_meta("model.time_steps", tr.net.config().time_steps);
    ck.set_meta("model.neuron", &labels.neuron);
    ck.set_meta("model.seca", labels.seca);
    // The description itself, so any network (zoo options included) is rebuilt exactly.
    let description = serde_json::to_string(tr.net.config())
        .map_err(|e| SessionError::Config(format!("serialising the network description: {e}")))?;
    ck.set_meta("model.config", description);
    ck.set_meta("test_acc", test_acc);
    for p in tr.net.params() {
        ck.insert(p.name.to_string(), p.shape.to_vec(), p.value.to_vec())
            .map_err(io)?;
    }
    ck.insert_optimizer_state("optim.", &tr.optimizer.export_state(tr.net.backend())?)
        .map_err(io)?;
    ck.set_meta("epoch", epoch_done);
    ck.set_meta("seed", seed);
    ck.set_meta("config", config);
    // The per-batch check makes this unreachable in a run; it stays so that no code path can
    // replace a good checkpoint with one that export and evaluation would refuse.
    if let Some((name, i, v)) = ck.first_non_finite() {
        return Err(SessionError::Config(format!(
            "refusing to write checkpoint {}: tensor {name}[{i}] is {v}; the previous checkpoint is untouched",
            path.display()
        )));
    }
    ck.save(path).map_err(io)?;
    // Under the run lock every other temporary file of the checkpoint is a leftover of a write
    // that was killed (in this run or an earlier one).
    remove_stale_temps(path)?;
    Ok(())
}

/// Refuses a loaded network holding NaN or ∞ (crafted, or written before the trainer checked).
pub fn check_loaded_finite(path: &Path, net: &Net) -> Result<(), SessionError> {
    match check_finite(net) {
        Err(TrainError::NonFiniteParameter { name, index, value }) => Err(SessionError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("tensor {name}[{index}] is {value}; a checkpoint holding non-finite values cannot be resumed, exported or evaluated"),
        }),
        other => Ok(other?),
    }
}

/// Loads parameters and optimiser state from `path` into `tr` after checking that it was
/// written by the same configuration and seed; returns the epochs it had finished.
pub fn load_checkpoint(
    path: &Path,
    tr: &mut OnlineTrainer,
    seed: u64,
    config: &str,
    epochs: u64,
) -> Result<u64, SessionError> {
    let bad = |reason: String| SessionError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let named = |e: CheckpointError| bad(e.to_string());
    let mut ck = Checkpoint::load(path).map_err(|source| SessionError::CheckpointIo {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let found = ck.meta("config").map_err(named)?;
    if found != config {
        return Err(SessionError::ConfigMismatch {
            path: path.to_path_buf(),
            found: found.to_string(),
            now: config.to_string(),
        });
    }
    let found = ck.meta_u64("seed").map_err(named)?;
    if found != seed {
        return Err(SessionError::Config(format!(
            "checkpoint {} used --seed {found}, not {seed}",
            path.display()
        )));
    }
    let epoch = ck.meta_u64("epoch").map_err(named)?;
    if epoch > epochs {
        return Err(bad(format!(
            "epoch = {epoch} is past the run's last epoch (--epochs {epochs})"
        )));
    }
    let names: Vec<(String, Vec<usize>)> = tr
        .net
        .params()
        .iter()
        .map(|p| (p.name.to_string(), p.shape.to_vec()))
        .collect();
    for (name, shape) in names {
        let data = ck.take(&name, &shape).map_err(named)?;
        let p = tr
            .net
            .param_mut(&name)
            .ok_or_else(|| bad(format!("parameter {name} vanished")))?;
        // `take` checked the shape, so the lengths agree.
        p.value.copy_from_slice(&data);
    }
    check_loaded_finite(path, &tr.net)?;
    let state = ck.take_optimizer_state("optim.");
    if let Some((name, (i, v))) = state.tensors.iter().find_map(|(name, t)| {
        t.iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .map(|(i, v)| (name, (i, *v)))
    }) {
        return Err(bad(format!("optimizer tensor optim.{name}[{i}] is {v}")));
    }
    let be = tr.net.backend();
    tr.optimizer
        .load_state(be, &state)
        .map_err(|e| bad(format!("optimizer state: {e}")))?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::net::LayerSpec;
    use crate::optim::SgdConfig;
    use std::sync::Arc;

    /// Three separable classes of 6×6 images: bright top rows, bright bottom rows, bright left
    /// columns, with a little deterministic noise.
    fn images(n: usize, salt: u64) -> Source {
        let mut rng = crate::rng::InitRng::new(salt);
        let (mut px, mut labels) = (Vec::new(), Vec::new());
        for i in 0..n {
            let class = (i % 3) as u8;
            for y in 0..6 {
                for x in 0..6 {
                    let on = match class {
                        0 => y < 2,
                        1 => y > 3,
                        _ => x < 2,
                    };
                    let noise = (rng.next_u64() % 40) as u8;
                    px.push(if on { 200 + noise / 4 } else { noise });
                }
            }
            labels.push(class);
        }
        let labels = labels.into_iter().map(u16::from).collect();
        Arc::new(Dataset::with_shape(px, labels, 1, 6, 6, 3).expect("valid set"))
    }

    fn config(out: &Path) -> SessionConfig {
        SessionConfig {
            net: crate::train::tests::tiny(2),
            optimizer: OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                dampening: 0.0,
                weight_decay: 0.0,
                nesterov: true,
            }),
            random_bp: true,
            rule: UpdateRule::PerStep,
            batch_size: 8,
            epochs: 3,
            lr: 0.05,
            schedule: LrSchedule::PerEpoch,
            augment: AugmentConfig::default(),
            normalization: ChannelNorm::UNIT,
            seed: 7,
            out: out.to_path_buf(),
            resume: false,
            stop_after_epoch: None,
            max_steps: None,
            recipe: None,
            labels: ModelLabels {
                arch: "tiny".into(),
                neuron: "empf".into(),
                seca: false,
            },
        }
    }

    /// Records what a front end would be shown.
    #[derive(Default)]
    struct Recorder {
        starts: Vec<SessionStart>,
        epochs: Vec<u64>,
        batches: usize,
        ended: Vec<bool>,
        messages: Vec<String>,
    }

    impl Progress for Recorder {
        fn message(&mut self, line: &str) {
            self.messages.push(line.to_string());
        }
        fn session_started(&mut self, start: &SessionStart) {
            self.starts.push(*start);
        }
        fn epoch_started(&mut self, epoch: u64, _epochs: u64, _batches: usize) {
            self.epochs.push(epoch);
        }
        fn batch_done(&mut self, _p: &EpochProgress) {
            self.batches += 1;
        }
        fn epoch_training_ended(&mut self, finished: bool) {
            self.ended.push(finished);
        }
    }

    /// Every parameter tensor of `net`'s layout as `path` stores it.
    fn params(path: &Path, net: &NetConfig) -> Vec<(String, Vec<f32>)> {
        let mut ck = Checkpoint::load(path).expect("checkpoint");
        let net = Net::new(net.clone(), 0).expect("net");
        net.params()
            .iter()
            .map(|p| {
                let v = ck.take(p.name, p.shape).expect("tensor");
                (p.name.to_string(), v)
            })
            .collect()
    }

    #[test]
    fn a_session_learns_and_an_interrupted_one_resumes_to_the_same_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (train, test) = (images(48, 1), images(24, 2));

        let whole = config(&dir.path().join("whole"));
        let mut rec = Recorder::default();
        let s = run(&whole, train.clone(), test.clone(), &mut rec).expect("session");
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.resumed_after, 0);
        assert_eq!(s.steps, 18, "48 images in batches of 8 over 3 epochs");
        assert!(s.stopped_early.is_none());
        assert_eq!(rec.epochs, [1, 2, 3]);
        assert_eq!(rec.ended, [true, true, true]);
        assert_eq!(rec.batches, 18);
        assert_eq!(
            rec.starts,
            [SessionStart {
                samples_per_epoch: 48,
                batches_per_epoch: 6,
                optimizer: "sgd",
                threads: rayon::current_num_threads()
            }]
        );
        let (first, last) = (s.records[0].clone(), s.records[2].clone());
        assert!(
            last.train_loss < first.train_loss,
            "loss fell: {first:?} → {last:?}"
        );
        assert!(last.test_acc > 0.6, "separable classes learnt: {last:?}");
        // Firing rates of the two neuron layers on the test split, in the metrics and events.
        assert_eq!(last.spike_rates.len(), 2, "{last:?}");
        assert!(
            last.spike_rates.iter().all(|r| *r > 0.0 && *r <= 1.0),
            "{last:?}"
        );
        let events = std::fs::read(whole.out.join(crate::tensorboard::EVENTS_FILE)).unwrap();
        for tag in ["test/spike_rate/neuron0", "test/spike_rate/neuron1"] {
            assert!(
                events.windows(tag.len()).any(|w| w == tag.as_bytes()),
                "{tag}"
            );
        }
        let csv = crate::metrics::read_csv(&whole.out.join("metrics.csv")).unwrap();
        assert_eq!(csv[2].spike_rates, last.spike_rates);

        // Same run, stopped after epoch 1 and resumed: the same final weights, bit for bit.
        let mut split = config(&dir.path().join("split"));
        split.stop_after_epoch = Some(1);
        let s1 = run(&split, train.clone(), test.clone(), &mut Silent).expect("first part");
        assert_eq!(s1.stopped_early.as_deref(), Some("--stop-after-epoch"));
        assert_eq!(s1.records.len(), 1);
        split.stop_after_epoch = None;
        split.resume = true;
        let mut rec = Recorder::default();
        let s2 = run(&split, train, test, &mut rec).expect("resumed part");
        assert_eq!(s2.resumed_after, 1);
        assert_eq!(rec.epochs, [2, 3]);
        assert!(rec.messages.iter().any(|m| m.contains("resumed from")));
        assert_eq!(s2.records[1].test_acc, last.test_acc);
        let stored = params(&s.checkpoint, &whole.net);
        assert!(!stored.is_empty());
        assert_eq!(stored, params(&s2.checkpoint, &whole.net));
    }

    /// Soft targets of a data set with fewer classes than the network has outputs (a subset
    /// of a data set's class folders) are widened with zeros, not refused; more classes than
    /// outputs is a configuration error.
    #[test]
    fn soft_targets_of_fewer_classes_than_outputs_train() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(&dir.path().join("wide"));
        if let Some(LayerSpec::Linear { out_features, .. }) = cfg.net.layers.last_mut() {
            *out_features = 5;
        }
        cfg.augment.label_smoothing = 0.1;
        cfg.epochs = 2;
        let s = run(&cfg, images(24, 1), images(12, 2), &mut Silent).expect("session");
        assert!(
            s.records[1].train_loss < s.records[0].train_loss,
            "{:?}",
            s.records
        );
        assert_eq!(
            widen_targets(&[0.9, 0.1, 0.2, 0.8], 2, 3),
            [0.9, 0.1, 0.0, 0.2, 0.8, 0.0]
        );

        let mut cfg = config(&dir.path().join("narrow"));
        if let Some(LayerSpec::Linear { out_features, .. }) = cfg.net.layers.last_mut() {
            *out_features = 2;
        }
        let e = run(&cfg, images(24, 1), images(12, 2), &mut Silent).unwrap_err();
        assert!(
            e.to_string().contains("3 classes, the network 2 outputs"),
            "{e}"
        );
    }

    #[test]
    fn bad_sessions_are_refused_before_the_run_directory_is_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run");
        let (train, test) = (images(16, 1), images(8, 2));

        let mut cfg = config(&out);
        cfg.lr = f64::NAN;
        let e = run(&cfg, train.clone(), test.clone(), &mut Silent).unwrap_err();
        assert!(
            e.to_string().contains("--lr must be a positive number"),
            "{e}"
        );

        let mut cfg = config(&out);
        cfg.augment.random_crop = Some(crate::data::augment::RandomCrop { padding: 7 });
        let e = run(&cfg, train.clone(), test.clone(), &mut Silent).unwrap_err();
        assert!(matches!(e, SessionError::Augment(_)), "{e}");
        assert!(!out.exists(), "nothing written for a refused configuration");

        let mut cfg = config(&out);
        cfg.resume = true;
        let e = run(&cfg, train.clone(), test.clone(), &mut Silent).unwrap_err();
        assert!(matches!(e, SessionError::NothingToResume { .. }), "{e}");

        // A finished run is not overwritten by a fresh one, and a changed configuration does
        // not resume it.
        let mut cfg = config(&out);
        cfg.epochs = 1;
        run(&cfg, train.clone(), test.clone(), &mut Silent).expect("session");
        let e = run(&cfg, train.clone(), test.clone(), &mut Silent).unwrap_err();
        assert!(matches!(e, SessionError::CheckpointExists { .. }), "{e}");
        cfg.resume = true;
        cfg.lr = 0.01;
        let e = run(&cfg, train, test, &mut Silent).unwrap_err();
        assert!(matches!(e, SessionError::ConfigMismatch { .. }), "{e}");
        assert!(e.to_string().contains("lr=0.01"), "{e}");
    }
}
