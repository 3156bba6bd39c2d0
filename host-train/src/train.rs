//! Algorithm 1 (spec §4): online training with a loss and a backward at every time step, random
//! back-propagation, and evaluation by the cumulative sum of the per-step logits.
//!
//! Online means the membrane state is a constant to the backward pass: step `t`'s graph is
//! spatial only, so it is dropped after its backward and training memory does not grow with `T`.
//! With random BP one step `r` per batch is drawn; steps before `r` run with nothing kept for
//! backward, steps after `r` are not computed at all.

use crate::layers::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use crate::net::Net;
use crate::optim::{OptimError, Optimizer, OptimizerConfig, ParamMut, TensorSpec};
use crate::tensor::Param;

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
/// [`TrainError::NonFiniteParameter`].
pub fn check_finite(net: &Net) -> Result<(), TrainError> {
    for p in net.params() {
        if let Some((index, &value)) = p.value.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(TrainError::NonFiniteParameter {
                name: p.name.clone(),
                index,
                value,
            });
        }
    }
    Ok(())
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
    /// Mean loss over the steps that ran a backward.
    pub loss: f64,
    /// Samples whose cumulative-logit argmax at the last computed step was right.
    pub correct: usize,
    /// Samples in the batch.
    pub count: usize,
}

/// The step `r` that random BP back-propagates for batch `batch` of `epoch`: uniform on
/// `0..T`, a pure function of `(seed, epoch, batch)` so a resumed run draws the same steps.
pub fn random_bp_step(seed: u64, epoch: u64, batch: usize, time_steps: usize) -> usize {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (batch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % time_steps as u64) as usize
}

/// A network with its optimiser and the per-batch scratch of the loss.
pub struct OnlineTrainer {
    /// The network.
    pub net: Net,
    /// The optimiser over the trainable tensors, in `net.params()` order.
    pub optimizer: Optimizer,
    probs: Vec<f32>,
    dlogits: Vec<f32>,
    cumulative: Vec<f32>,
    targets: Vec<usize>,
}

fn trainable_specs(net: &Net) -> Vec<TensorSpec> {
    net.params()
        .into_iter()
        .filter(|p| p.is_trainable())
        .map(|p| TensorSpec::new(p.name.clone(), p.value.len()))
        .collect()
}

impl OnlineTrainer {
    /// Wraps `net` with a fresh optimiser.
    pub fn new(net: Net, config: OptimizerConfig) -> Result<Self, TrainError> {
        let optimizer = Optimizer::new(config, trainable_specs(&net))?;
        Ok(OnlineTrainer {
            net,
            optimizer,
            probs: vec![],
            dlogits: vec![],
            cumulative: vec![],
            targets: vec![],
        })
    }

    fn prepare(&mut self, labels: &[u8]) -> Result<usize, TrainError> {
        let b = labels.len();
        self.net.reset_state(b)?;
        let k = self.net.num_classes();
        self.targets.clear();
        self.targets.extend(labels.iter().map(|&l| l as usize));
        self.probs.resize(b * k, 0.0);
        self.dlogits.resize(b * k, 0.0);
        self.cumulative.clear();
        self.cumulative.resize(b * k, 0.0);
        Ok(k)
    }

    fn optimizer_step(&mut self, lr: f64) -> Result<(), TrainError> {
        let mut params: Vec<&mut Param> = self
            .net
            .params_mut()
            .into_iter()
            .filter(|p| p.is_trainable())
            .collect();
        let mut views: Vec<ParamMut<'_>> = params
            .iter_mut()
            .map(|p| {
                let Param { value, grad, .. } = &mut **p;
                ParamMut {
                    param: value.as_mut_slice(),
                    grad: grad.as_slice(),
                }
            })
            .collect();
        self.optimizer.step(&mut views, lr)?;
        Ok(())
    }

    /// Trains on one batch (`x`: `[B][C][H][W]`, the same image at every step: direct encoding).
    ///
    /// `random_step = Some(r)`: steps `0..r` forward only, step `r` forward + loss + backward +
    /// update, later steps skipped. `None`: loss and backward at every step, updated per `rule`.
    pub fn train_batch(
        &mut self,
        x: &[f32],
        labels: &[u8],
        random_step: Option<usize>,
        rule: UpdateRule,
        lr: f64,
    ) -> Result<BatchStats, TrainError> {
        let k = self.prepare(labels)?;
        let t_steps = self.net.time_steps();
        let last = random_step.map_or(t_steps - 1, |r| r.min(t_steps - 1));
        let (mut loss_sum, mut losses) = (0.0f64, 0usize);
        if rule == UpdateRule::Accumulate || random_step.is_some() {
            self.net.zero_grad();
        }
        for t in 0..=last {
            let backprop = random_step.is_none() || t == last;
            let logits = self.net.forward_step(t, x, true, backprop)?;
            self.cumulative
                .iter_mut()
                .zip(logits)
                .for_each(|(c, l)| *c += l);
            if !backprop {
                continue;
            }
            let loss = cross_entropy_forward(k, logits, &self.targets, &mut self.probs)?;
            if !loss.is_finite() {
                return Err(TrainError::NonFiniteLoss { loss, step: t });
            }
            loss_sum += loss as f64;
            losses += 1;
            self.dlogits.fill(0.0);
            cross_entropy_backward(k, &self.probs, &self.targets, &mut self.dlogits)?;
            if rule == UpdateRule::PerStep && random_step.is_none() {
                self.net.zero_grad();
            }
            self.net.backward_step(&self.dlogits)?;
            if rule == UpdateRule::PerStep || random_step.is_some() {
                self.optimizer_step(lr)?;
            }
        }
        if rule == UpdateRule::Accumulate && random_step.is_none() {
            self.optimizer_step(lr)?;
        }
        // Once per batch (one pass over the values, small next to the batch's convolutions):
        // a diverged update must stop the run before a checkpoint can hold it.
        check_finite(&self.net)?;
        Ok(BatchStats {
            loss: loss_sum / losses.max(1) as f64,
            correct: count_correct(&self.cumulative, labels, k),
            count: labels.len(),
        })
    }

    /// Evaluates one batch: all `T` steps, BN in eval mode, prediction = argmax of Σ_t logits.
    pub fn eval_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<usize, TrainError> {
        let k = self.prepare(labels)?;
        for t in 0..self.net.time_steps() {
            let logits = self.net.forward_step(t, x, false, false)?;
            self.cumulative
                .iter_mut()
                .zip(logits)
                .for_each(|(c, l)| *c += l);
        }
        Ok(count_correct(&self.cumulative, labels, k))
    }

    /// Σ_t logits of the last batch run (`[B][classes]`).
    pub fn cumulative_logits(&self) -> &[f32] {
        &self.cumulative
    }
}

/// Samples whose argmax (first maximum) equals the label.
pub fn count_correct(logits: &[f32], labels: &[u8], classes: usize) -> usize {
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
mod tests {
    use super::*;
    use crate::net::{LayerSpec, NetConfig, NeuronKind};
    use crate::optim::SgdConfig;

    fn tiny(t: usize) -> NetConfig {
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

    fn data(n: usize) -> (Vec<f32>, Vec<u8>) {
        // Three separable classes: bright top, bright bottom, bright left.
        let mut x = vec![0.0f32; n * 36];
        let mut y = vec![0u8; n];
        for i in 0..n {
            let c = (i % 3) as u8;
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
                .clone();
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
            .clone();
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
            .clone();
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
