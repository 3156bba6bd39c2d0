//! Algorithm 1 (spec §4): online training with a loss and a backward at every time step, random
//! back-propagation, and evaluation by the cumulative sum of the per-step logits.
//!
//! Online means the membrane state is a constant to the backward pass: step `t`'s graph is
//! spatial only, so it is dropped after its backward and training memory does not grow with `T`.
//! With random BP one step `r` per batch is drawn; steps before `r` run with nothing kept for
//! backward, steps after `r` are not computed at all.

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::net::Net;
use crate::optim::{OptimError, Optimizer, OptimizerConfig, TensorSpec};
use crate::tensor::ParamKind;

/// Errors of a training step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The network refused the batch (shape, label, step order).
    #[error(transparent)]
    Net(#[from] crate::error::Error),
    /// The optimiser refused the update.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at time step {step}: training diverged (lower the learning rate)")]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The time step.
        step: usize,
    },
    /// A parameter or buffer became NaN or infinite although the loss is finite (BN running
    /// variances overflow first when a run diverges: training uses batch statistics, so the loss
    /// stays finite while the running ones, which export and evaluation use, are lost).
    #[error("{name}[{index}] became {value}: training diverged (lower the learning rate)")]
    NonFiniteParameter {
        /// The tensor.
        name: String,
        /// Index of its first non-finite value.
        index: usize,
        /// That value.
        value: f32,
    },
}

/// The first NaN or infinite value among `net`'s parameters and buffers, as
/// [`TrainError::NonFiniteParameter`] (downloads the arenas: for the rare path and for loading).
pub fn check_finite<B: Backend>(net: &Net<B>) -> Result<(), TrainError> {
    match net.first_non_finite()? {
        Some((name, index, value)) => Err(TrainError::NonFiniteParameter { name, index, value }),
        None => Ok(()),
    }
}

/// How per-step gradients become updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateRule {
    /// One optimiser step after every time step's backward (the reference code).
    PerStep,
    /// Sum the per-step gradients, one optimiser step per batch (OTTT/SLTT convention).
    Accumulate,
}

/// What one batch produced.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// The loss whose gradient was applied (cross-entropy against the labels, or against the
    /// soft targets of [`OnlineTrainer::train_batch_with`]): that of the back-propagated step
    /// (random BP), the mean over steps of the per-step cross-entropies (per-step updates: each
    /// step's gradient is applied on its own), or their SUM Σ_t CE_t (accumulate mode, whose one
    /// update applies the gradient of that sum; spec §6: no averaging over T).
    pub loss: f64,
    /// Samples whose cumulative-logit argmax at the last computed step was right.
    pub correct: usize,
    /// Samples in the batch.
    pub count: usize,
}

/// The step `r` that random BP back-propagates for batch `batch` of `epoch`: uniform on
/// `0..T`, a pure function of `(seed, epoch, batch)` so a resumed run draws the same steps.
pub fn random_bp_step(seed: u64, epoch: u64, batch: usize, time_steps: usize) -> usize {
    let z = crate::rng::mix64(
        seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (batch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    (z % time_steps as u64) as usize
}

/// A network with its optimiser, both on backend `B`.
pub struct OnlineTrainer<B: Backend = CpuBackend> {
    /// The network.
    pub net: Net<B>,
    /// The optimiser over the trainable tensors, in `net.tensors()` order (the arena's).
    pub optimizer: Optimizer<B>,
}

fn trainable_specs<B: Backend>(net: &Net<B>) -> Vec<TensorSpec> {
    net.tensors()
        .iter()
        .filter(|m| m.kind == ParamKind::Trainable)
        .map(|m| TensorSpec::new(m.name.clone(), m.span.len))
        .collect()
}

impl<B: Backend> OnlineTrainer<B> {
    /// Wraps `net` with a fresh optimiser on the same backend.
    pub fn new(net: Net<B>, config: OptimizerConfig) -> Result<Self, TrainError> {
        let specs = trainable_specs(&net);
        // The optimiser lays its tensors out in the order given; that must be the arena's.
        let mut at = 0;
        for m in net
            .tensors()
            .iter()
            .filter(|m| m.kind == ParamKind::Trainable)
        {
            debug_assert_eq!(
                m.span.off, at,
                "{} is not where the optimiser expects it",
                m.name
            );
            at = m.span.end();
        }
        let optimizer = Optimizer::new_on(net.backend(), config, specs)?;
        Ok(OnlineTrainer { net, optimizer })
    }

    /// Trains on one batch (`x`: `[B][C][H][W]`, the same image at every step: direct encoding).
    ///
    /// `random_step = Some(r)`: steps `0..r` forward only, step `r` forward + loss + backward +
    /// update, later steps skipped. `None`: loss and backward at every step, updated per `rule`.
    /// One upload of the images and labels, one download of the statistics (losses, correct
    /// count, divergence flag); a NaN/∞ loss or parameter is reported after the batch, before
    /// anything can be saved. The loss takes the hard labels; see
    /// [`OnlineTrainer::train_batch_with`] for soft targets.
    pub fn train_batch(
        &mut self,
        x: &[f32],
        labels: &[u16],
        random_step: Option<usize>,
        rule: UpdateRule,
        lr: f64,
    ) -> Result<BatchStats, TrainError> {
        self.train_batch_with(x, labels, None, random_step, rule, lr)
    }

    /// [`OnlineTrainer::train_batch`] with optional soft targets (`[B][K]`, a loader's
    /// `Batch::soft_targets`: Mixup/CutMix mixes, label smoothing folded in). With
    /// `Some(targets)` every step's loss is the soft cross-entropy `−Σ_k q_k log softmax(z)_k`
    /// and one more upload (the target matrix) crosses per batch; `labels` still give the
    /// correct count (for Mixup/CutMix: the first image's label, see [`Net::load_batch_soft`]).
    /// `None` is exactly `train_batch`; one-hot targets give the same result bit for bit.
    /// Bad targets are [`TrainError::Net`] with `Error::ShapeMismatch` or
    /// `Error::TargetInvalid`, before any work.
    pub fn train_batch_with(
        &mut self,
        x: &[f32],
        labels: &[u16],
        targets: Option<&[f32]>,
        random_step: Option<usize>,
        rule: UpdateRule,
        lr: f64,
    ) -> Result<BatchStats, TrainError> {
        let net = &mut self.net;
        match targets {
            None => net.load_batch(x, labels)?,
            Some(q) => net.load_batch_soft(x, labels, q)?,
        }
        let t_steps = net.time_steps();
        let last = random_step.map_or(t_steps - 1, |r| r.min(t_steps - 1));
        if rule == UpdateRule::Accumulate || random_step.is_some() {
            net.zero_grad()?;
        }
        for t in 0..=last {
            let backprop = random_step.is_none() || t == last;
            net.forward(t, true, backprop)?;
            net.loss_step(t, backprop)?;
            if !backprop {
                continue;
            }
            if rule == UpdateRule::PerStep && random_step.is_none() {
                net.zero_grad()?;
            }
            net.backward()?;
            if rule == UpdateRule::PerStep || random_step.is_some() {
                net.optimizer_step(&mut self.optimizer, lr)?;
            }
        }
        if rule == UpdateRule::Accumulate && random_step.is_none() {
            net.optimizer_step(&mut self.optimizer, lr)?;
        }
        let out = net.finish_batch()?;
        if let Some((step, loss)) = out.non_finite_loss {
            return Err(TrainError::NonFiniteLoss { loss, step });
        }
        let (loss_sum, losses) = (out.loss_sum, out.losses);
        // A diverged update must stop the run before a checkpoint can hold it.
        if out.non_finite {
            check_finite(net)?;
        }
        let loss = if rule == UpdateRule::Accumulate && random_step.is_none() {
            loss_sum
        } else {
            loss_sum / losses.max(1) as f64
        };
        Ok(BatchStats {
            loss,
            correct: out.correct,
            count: labels.len(),
        })
    }

    /// Evaluates one batch: all `T` steps, BN in eval mode, prediction = argmax of Σ_t logits
    /// against the hard labels (evaluation never takes soft targets).
    pub fn eval_batch(&mut self, x: &[f32], labels: &[u16]) -> Result<usize, TrainError> {
        let net = &mut self.net;
        net.load_batch(x, labels)?;
        for t in 0..net.time_steps() {
            net.forward(t, false, false)?;
            net.loss_step(t, false)?;
        }
        Ok(net.finish_batch()?.correct)
    }
}

impl OnlineTrainer<CpuBackend> {
    /// Σ_t logits of the last batch run (`[B][classes]`).
    pub fn cumulative_logits(&self) -> &[f32] {
        self.net.cumulative_logits()
    }
}

/// Samples whose argmax (first maximum) equals the label.
pub fn count_correct(logits: &[f32], labels: &[u16], classes: usize) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best == l as usize
        })
        .count()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::{LayerSpec, NetConfig, NeuronKind};
    use crate::optim::SgdConfig;

    /// conv 1→4, BN, neuron, bconv 4→6, BN, neuron, GAP, linear → 3, on 6×6 inputs (also the
    /// session tests' network).
    pub(crate) fn tiny(t: usize) -> NetConfig {
        NetConfig {
            in_channels: 1,
            height: 6,
            width: 6,
            time_steps: t,
            layers: vec![
                LayerSpec::Conv2d {
                    out_channels: 4,
                    kernel: 3,
                    stride: 1,
                    pad: 1,
                    bias: false,
                },
                LayerSpec::BatchNorm2d,
                LayerSpec::Neuron(NeuronKind::EmPf),
                LayerSpec::BinaryConv2d {
                    out_channels: 6,
                    kernel: 3,
                    stride: 1,
                    pad: 1,
                },
                LayerSpec::BatchNorm2d,
                LayerSpec::Neuron(NeuronKind::EmPf),
                LayerSpec::GlobalAvgPool,
                LayerSpec::Linear {
                    out_features: 3,
                    bias: true,
                },
            ],
        }
    }

    fn data(n: usize) -> (Vec<f32>, Vec<u16>) {
        // Three separable classes: bright top, bright bottom, bright left.
        let mut x = vec![0.0f32; n * 36];
        let mut y = vec![0u16; n];
        for i in 0..n {
            let c = (i % 3) as u16;
            y[i] = c;
            for p in 0..36 {
                let (r, col) = (p / 6, p % 6);
                let on = match c {
                    0 => r < 3,
                    1 => r >= 3,
                    _ => col < 3,
                };
                x[i * 36 + p] = if on { 1.5 } else { -0.5 }
                    + 0.1 * (((i * 7 + p * 13) % 11) as f32 / 11.0 - 0.5);
            }
        }
        (x, y)
    }

    #[test]
    fn random_bp_steps_are_uniform_and_reproducible() {
        let mut hist = [0usize; 4];
        for b in 0..4000 {
            let r = random_bp_step(42, 3, b, 4);
            assert_eq!(r, random_bp_step(42, 3, b, 4));
            hist[r] += 1;
        }
        assert!(hist.iter().all(|&h| (850..1150).contains(&h)), "{hist:?}");
        assert_ne!(
            (0..64)
                .map(|b| random_bp_step(42, 3, b, 4))
                .collect::<Vec<_>>(),
            (0..64)
                .map(|b| random_bp_step(42, 4, b, 4))
                .collect::<Vec<_>>()
        );
    }

    /// Labels past 255 (ImageNet-1k's 1000 classes) train and count: the toy task's three
    /// classes relabelled 997..=999 of a 1000-way classifier learn as well as 0..=2 of a 3-way
    /// one, and a label of 1000 is refused naming its sample.
    #[test]
    fn a_thousand_class_net_trains_on_wide_labels() {
        let (x, y) = data(24);
        let wide: Vec<u16> = y.iter().map(|&l| 997 + l).collect();
        let mut cfg = tiny(2);
        if let Some(LayerSpec::Linear { out_features, .. }) = cfg.layers.last_mut() {
            *out_features = 1000;
        }
        let mut tr = OnlineTrainer::new(
            Net::new(cfg, 5).unwrap(),
            OptimizerConfig::Sgd(SgdConfig {
                momentum: 0.9,
                ..SgdConfig::default()
            }),
        )
        .unwrap();
        let first = tr
            .train_batch(&x, &wide, None, UpdateRule::PerStep, 0.05)
            .unwrap();
        let mut last = first;
        for _ in 0..40 {
            last = tr
                .train_batch(&x, &wide, None, UpdateRule::PerStep, 0.05)
                .unwrap();
        }
        assert!(last.loss < first.loss, "{first:?} → {last:?}");
        assert!(
            tr.eval_batch(&x, &wide).unwrap() >= 20,
            "learnt the relabelled classes"
        );
        let mut bad = wide.clone();
        bad[5] = 1000;
        let e = tr
            .train_batch(&x, &bad, None, UpdateRule::PerStep, 0.05)
            .unwrap_err();
        assert!(
            matches!(
                e,
                TrainError::Net(crate::error::Error::LabelOutOfRange {
                    index: 5,
                    label: 1000,
                    classes: 1000
                })
            ),
            "{e:?}"
        );
    }

    /// Training reduces the loss and learns a separable toy task, with and without random BP,
    /// and the same seed gives the same weights.
    #[test]
    fn online_training_learns_and_is_deterministic() {
        let (x, y) = data(24);
        let run = |random: bool, rule: UpdateRule| {
            let net = Net::new(tiny(3), 5).unwrap();
            let mut tr = OnlineTrainer::new(
                net,
                OptimizerConfig::Sgd(SgdConfig {
                    momentum: 0.9,
                    ..SgdConfig::default()
                }),
            )
            .unwrap();
            let first = tr
                .train_batch(&x, &y, random.then_some(2), rule, 0.05)
                .unwrap()
                .loss;
            let mut last = first;
            for b in 0..60 {
                let r = random.then(|| random_bp_step(1, 0, b, 3));
                last = tr.train_batch(&x, &y, r, rule, 0.05).unwrap().loss;
            }
            let acc = tr.eval_batch(&x, &y).unwrap();
            let w = tr
                .net
                .param("conv0.weight")
                .or_else(|| tr.net.params().into_iter().next())
                .unwrap()
                .value
                .to_vec();
            (first, last, acc, w)
        };
        for (random, rule) in [
            (false, UpdateRule::PerStep),
            (false, UpdateRule::Accumulate),
            (true, UpdateRule::PerStep),
        ] {
            let (first, last, acc, w) = run(random, rule);
            assert!(
                last < first * 0.7,
                "random={random} {rule:?}: loss {first} -> {last}"
            );
            assert!(acc >= 20, "random={random} {rule:?}: {acc}/24 correct");
            assert_eq!(w, run(random, rule).3, "not deterministic");
        }
    }

    /// Per batch: one upload of the images, one of the labels, one download of the statistics,
    /// in every mode, for training and evaluation.
    #[test]
    fn one_upload_of_images_and_labels_and_one_download_per_batch() {
        let (x, y) = data(12);
        let mut tr = OnlineTrainer::new(
            Net::new(tiny(3), 2).unwrap(),
            OptimizerConfig::Sgd(SgdConfig::paper()),
        )
        .unwrap();
        for (random, rule) in [
            (None, UpdateRule::PerStep),
            (None, UpdateRule::Accumulate),
            (Some(1), UpdateRule::PerStep),
        ] {
            let before = tr.net.transfers();
            tr.train_batch(&x, &y, random, rule, 0.01).unwrap();
            let after = tr.net.transfers();
            assert_eq!(
                (
                    after.uploads - before.uploads,
                    after.downloads - before.downloads
                ),
                (2, 1),
                "{random:?} {rule:?}"
            );
            assert_eq!(after.bytes - before.bytes, 4 * 12 * 36 + 2 * 12 + 4 * 6);
        }
        let before = tr.net.transfers();
        tr.eval_batch(&x, &y).unwrap();
        let after = tr.net.transfers();
        assert_eq!(
            (
                after.uploads - before.uploads,
                after.downloads - before.downloads
            ),
            (2, 1)
        );
    }

    fn one_hot(y: &[u16], classes: usize, epsilon: f32) -> Vec<f32> {
        crate::layers::soft_cross_entropy::smoothed_one_hot(y, classes, epsilon).unwrap()
    }

    fn sgd_trainer(seed: u64) -> OnlineTrainer {
        let sgd = OptimizerConfig::Sgd(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        });
        OnlineTrainer::new(Net::new(tiny(3), seed).unwrap(), sgd).unwrap()
    }

    fn bits(tr: &OnlineTrainer) -> Vec<Vec<u32>> {
        tr.net
            .params()
            .iter()
            .flat_map(|p| [p.value, p.grad])
            .map(|v| v.iter().map(|f| f.to_bits()).collect())
            .collect()
    }

    /// One-hot soft targets are the hard-label path BIT FOR BIT (loss, correct count, every
    /// parameter, gradient and BN statistic after two momentum-SGD batches, in every mode):
    /// the soft loss shares the softmax, multiplies by an exact 1, skips the zeros and runs its
    /// backward in the same f32 order (`layers::soft_cross_entropy`), so no tolerance is
    /// needed. A hard batch after a soft one takes the labels again (no stale targets).
    #[test]
    fn one_hot_targets_train_exactly_as_hard_labels() {
        let (x, y) = data(12);
        let (q1, q_smooth) = (one_hot(&y, 3, 0.0), one_hot(&y, 3, 0.1));
        for (random, rule) in [
            (None, UpdateRule::PerStep),
            (None, UpdateRule::Accumulate),
            (Some(1), UpdateRule::PerStep),
        ] {
            let (mut hard, mut soft) = (sgd_trainer(7), sgd_trainer(7));
            for _ in 0..2 {
                let a = hard.train_batch(&x, &y, random, rule, 0.05).unwrap();
                let b = soft
                    .train_batch_with(&x, &y, Some(&q1), random, rule, 0.05)
                    .unwrap();
                assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{random:?} {rule:?}");
                assert_eq!((a.correct, a.count), (b.correct, b.count));
                assert_eq!(bits(&hard), bits(&soft), "{random:?} {rule:?}");
            }
            // Smoothed targets train differently; a hard batch afterwards is hard again.
            let a = hard
                .train_batch_with(&x, &y, Some(&q_smooth), random, rule, 0.05)
                .unwrap();
            let b = soft
                .train_batch_with(&x, &y, Some(&q_smooth), random, rule, 0.05)
                .unwrap();
            assert_eq!(a.loss.to_bits(), b.loss.to_bits());
            let a = hard.train_batch(&x, &y, random, rule, 0.05).unwrap();
            let b = soft
                .train_batch_with(&x, &y, Some(&q1), random, rule, 0.05)
                .unwrap();
            assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "stale soft targets");
            assert_eq!(bits(&hard), bits(&soft));
        }
        // And the smoothed loss is not the hard one (the targets do reach the loss).
        let (mut hard, mut soft) = (sgd_trainer(7), sgd_trainer(7));
        let a = hard.train_batch(&x, &y, None, UpdateRule::PerStep, 0.05);
        let b = soft.train_batch_with(&x, &y, Some(&q_smooth), None, UpdateRule::PerStep, 0.05);
        assert_ne!(b.unwrap().loss.to_bits(), a.unwrap().loss.to_bits());
    }

    /// With soft targets a batch moves images, labels and the `[B][K]` targets up (three
    /// uploads) and the statistics record down (one download); evaluation stays hard-label.
    #[test]
    fn soft_targets_add_one_upload_per_batch() {
        let (x, y) = data(12);
        let q = one_hot(&y, 3, 0.1);
        let mut tr = sgd_trainer(2);
        for (random, rule) in [
            (None, UpdateRule::PerStep),
            (None, UpdateRule::Accumulate),
            (Some(1), UpdateRule::PerStep),
        ] {
            let before = tr.net.transfers();
            tr.train_batch_with(&x, &y, Some(&q), random, rule, 0.01)
                .unwrap();
            let after = tr.net.transfers();
            assert_eq!(
                (
                    after.uploads - before.uploads,
                    after.downloads - before.downloads
                ),
                (3, 1),
                "{random:?} {rule:?}"
            );
            assert_eq!(
                after.bytes - before.bytes,
                4 * 12 * 36 + 2 * 12 + 4 * 12 * 3 + 4 * 6
            );
        }
        let before = tr.net.transfers();
        tr.eval_batch(&x, &y).unwrap();
        let after = tr.net.transfers();
        assert_eq!(
            (
                after.uploads - before.uploads,
                after.downloads - before.downloads
            ),
            (2, 1)
        );
    }

    /// Through `Net`: with smoothed (and Mixup-style) targets the reported loss is the
    /// reference `soft_cross_entropy_forward` of the very logits (the same bits: the backend
    /// calls it), the parameter gradients are those of back-propagating the reference
    /// backward's `dlogits` (the same bits), and the classifier's gradient agrees with central
    /// finite differences of the loss the network reports.
    #[test]
    fn soft_loss_through_net_is_the_reference_and_passes_finite_differences() {
        use crate::gradcheck::{check_grad, Tol};
        use crate::layers::soft_cross_entropy::{
            soft_cross_entropy_backward, soft_cross_entropy_forward,
        };
        let (x, y) = data(6);
        let (b, k) = (6, 3);
        let smooth = one_hot(&y, k, 0.1);
        // Mixup of each sample with the next one, λ = 0.7, then smoothing folded in.
        let shifted: Vec<u16> = (0..b).map(|i| y[(i + 1) % b]).collect();
        let other = one_hot(&shifted, k, 0.1);
        let mixup: Vec<f32> = smooth
            .iter()
            .zip(&other)
            .map(|(a, o)| 0.7 * a + 0.3 * o)
            .collect();
        for q in [smooth, mixup] {
            let mut net = Net::new(tiny(2), 3).unwrap();
            net.load_batch_soft(&x, &y, &q).unwrap();
            net.zero_grad().unwrap();
            net.forward(0, true, true).unwrap();
            net.loss_step(0, true).unwrap();
            let logits = net.logits().to_vec();
            let mut probs = vec![0.0; b * k];
            let want = soft_cross_entropy_forward(k, &logits, &q, &mut probs).unwrap();
            let mut d = vec![0.0; b * k];
            soft_cross_entropy_backward(k, &probs, &q, &mut d).unwrap();
            net.backward().unwrap();
            let got = net.finish_batch().unwrap();
            assert_eq!(
                got.loss_sum,
                f64::from(want),
                "the reference loss, same bits"
            );
            assert_eq!(got.losses, 1);
            let grads: Vec<Vec<f32>> = net.params().iter().map(|p| p.grad.to_vec()).collect();

            let mut reference = Net::new(tiny(2), 3).unwrap();
            reference.reset_state(b).unwrap();
            reference.zero_grad().unwrap();
            reference.forward_step(0, &x, true, true).unwrap();
            reference.backward_step(&d).unwrap();
            let want_grads: Vec<Vec<f32>> =
                reference.params().iter().map(|p| p.grad.to_vec()).collect();
            assert_eq!(grads, want_grads, "gradient of the reference dlogits");

            // Finite differences of the reported loss w.r.t. the classifier (the loss is
            // smooth in it; the spikes before it do not move).
            let names: Vec<String> = net
                .params()
                .iter()
                .filter(|p| p.is_trainable() && p.name.starts_with("fc"))
                .map(|p| p.name.to_string())
                .collect();
            assert_eq!(names.len(), 2, "{names:?}");
            for name in names {
                let (value, grad) = {
                    let p = net.param(&name).unwrap();
                    (p.value.to_vec(), p.grad.to_vec())
                };
                assert!(grad.iter().any(|&g| g != 0.0), "{name}");
                check_grad(&name, &value, &grad, Tol::SMOOTH, 18, |v| {
                    net.param_mut(&name).unwrap().value.copy_from_slice(v);
                    net.load_batch_soft(&x, &y, &q).unwrap();
                    net.forward(0, true, false).unwrap();
                    net.loss_step(0, true).unwrap();
                    net.finish_batch().unwrap().loss_sum
                })
                .unwrap();
                net.param_mut(&name).unwrap().value.copy_from_slice(&value);
            }
        }
    }

    /// A target matrix of the wrong length, or a NaN / infinite / negative entry, is a typed
    /// error naming it, raised before anything is uploaded; the trainer stays usable.
    #[test]
    fn bad_soft_targets_are_typed_errors() {
        use crate::error::Error;
        let (x, y) = data(12);
        let q = one_hot(&y, 3, 0.1);
        let mut tr = sgd_trainer(1);
        let before = tr.net.transfers();
        let err = tr
            .train_batch_with(&x, &y, Some(&q[..35]), None, UpdateRule::PerStep, 0.1)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TrainError::Net(Error::ShapeMismatch {
                    what: "net.load_batch_soft.targets",
                    expected: 36,
                    got: 35
                })
            ),
            "{err}"
        );
        for (at, value) in [(7, f32::NAN), (30, f32::INFINITY), (2, -0.25)] {
            let mut bad = q.clone();
            bad[at] = value;
            let err = tr
                .train_batch_with(&x, &y, Some(&bad), Some(0), UpdateRule::PerStep, 0.1)
                .unwrap_err();
            match &err {
                TrainError::Net(Error::TargetInvalid {
                    index,
                    class,
                    value_bits,
                }) => {
                    assert_eq!((*index, *class), (at / 3, at % 3));
                    assert_eq!(*value_bits, value.to_bits());
                }
                e => panic!("expected TargetInvalid, got {e}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("class {} at batch index {}", at % 3, at / 3)),
                "{msg}"
            );
        }
        assert_eq!(tr.net.transfers(), before, "refused before any upload");
        tr.train_batch_with(&x, &y, Some(&q), None, UpdateRule::PerStep, 0.1)
            .unwrap();
    }

    /// The accumulate mode applies the gradient of Σ_t CE_t and reports that same sum (spec §6:
    /// no averaging over T); per-step and random BP report the mean of what they applied.
    #[test]
    fn accumulate_mode_reports_the_loss_whose_gradient_it_applies() {
        let (x, y) = data(9);
        let labels: Vec<usize> = y.iter().map(|&l| l as usize).collect();
        let tt = 3;
        // Reference: the per-step losses and summed gradients at the initial weights.
        let mut net = Net::new(tiny(tt), 4).unwrap();
        net.reset_state(9).unwrap();
        let (mut sum, mut probs) = (0.0f64, vec![0.0; 27]);
        for t in 0..tt {
            let logits = net.forward_step(t, &x, true, true).unwrap().to_vec();
            sum += crate::layers::cross_entropy::cross_entropy_forward(
                3, &logits, &labels, &mut probs,
            )
            .unwrap() as f64;
            let mut d = vec![0.0; 27];
            crate::layers::cross_entropy::cross_entropy_backward(3, &probs, &labels, &mut d)
                .unwrap();
            net.backward_step(&d).unwrap();
        }
        let want_grads: Vec<Vec<f32>> = net.params().iter().map(|p| p.grad.to_vec()).collect();
        // lr 0 leaves the weights, so the arena still holds the applied gradient.
        let plain = OptimizerConfig::Sgd(SgdConfig::default());
        let mut tr = OnlineTrainer::new(Net::new(tiny(tt), 4).unwrap(), plain).unwrap();
        let got = tr
            .train_batch(&x, &y, None, UpdateRule::Accumulate, 0.0)
            .unwrap();
        assert!(
            (got.loss - sum).abs() <= 1e-6 * sum,
            "{} vs Σ_t CE_t {sum}",
            got.loss
        );
        let grads: Vec<Vec<f32>> = tr.net.params().iter().map(|p| p.grad.to_vec()).collect();
        assert_eq!(
            grads, want_grads,
            "the applied gradient is that of Σ_t CE_t"
        );
        let mut tr = OnlineTrainer::new(Net::new(tiny(tt), 4).unwrap(), plain).unwrap();
        let per_step = tr
            .train_batch(&x, &y, None, UpdateRule::PerStep, 0.0)
            .unwrap();
        assert!(
            (per_step.loss - sum / tt as f64).abs() <= 1e-6 * sum,
            "mean over steps"
        );
    }

    #[test]
    fn non_finite_loss_is_reported() {
        // (A NaN pixel does not do it: the neuron's max(m − θ, 0) maps NaN to 0.) A poisoned
        // classifier weight, as a diverged update would leave it, must stop training.
        let (x, y) = data(6);
        let mut net = Net::new(tiny(2), 1).unwrap();
        let name = net
            .params()
            .into_iter()
            .rfind(|p| p.is_trainable())
            .unwrap()
            .name
            .to_string();
        net.param_mut(&name).unwrap().value[0] = f32::INFINITY;
        let mut tr = OnlineTrainer::new(net, OptimizerConfig::Sgd(SgdConfig::default())).unwrap();
        let err = tr
            .train_batch(&x, &y, None, UpdateRule::PerStep, 0.1)
            .unwrap_err();
        assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    }

    #[test]
    fn non_finite_buffer_with_finite_loss_is_reported() {
        // An overflowed BN running variance, as `--arch mcu --lr 30` left it: the training
        // forward normalises with batch statistics, so the loss stays finite and only the
        // parameter check can stop the run.
        let (x, y) = data(6);
        let mut net = Net::new(tiny(2), 1).unwrap();
        let name = net
            .params()
            .into_iter()
            .find(|p| p.name.ends_with("running_var"))
            .expect("a BN running variance")
            .name
            .to_string();
        net.param_mut(&name).unwrap().value[1] = f32::INFINITY;
        let mut tr = OnlineTrainer::new(net, OptimizerConfig::Sgd(SgdConfig::default())).unwrap();
        let err = tr
            .train_batch(&x, &y, None, UpdateRule::PerStep, 0.1)
            .unwrap_err();
        match err {
            TrainError::NonFiniteParameter {
                name: n,
                index,
                value,
            } => {
                assert_eq!((n.as_str(), index), (name.as_str(), 1));
                assert!(value.is_infinite());
            }
            e => panic!("expected NonFiniteParameter, got {e}"),
        }
        assert!(check_finite(&tr.net).is_err());
    }
}
