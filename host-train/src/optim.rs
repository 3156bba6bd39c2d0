//! Optimisers (SGD with momentum/Nesterov, Adam, AdamW) and learning-rate schedules, with
//! PyTorch's exact update rules.
//!
//! An [`Optimizer`] is built for a fixed list of named flat tensors ([`TensorSpec`]); the trainer
//! then calls [`Optimizer::step`] with one [`ParamMut`] (parameter slice + gradient slice) per
//! tensor, in the same order, or [`Optimizer::step_tensor`] for one tensor at a time. Each tensor
//! keeps its own step count, like PyTorch's per-parameter `state['step']`.
//!
//! Update rules (g = gradient, p = parameter, all element-wise; scalars in `f64` as in PyTorch's
//! Python code, element arithmetic in `f32`):
//!
//! * SGD (`torch.optim.SGD`, `maximize=False`):
//!   `g ← g + wd·p`; with momentum μ: `b ← g` on a tensor's first step, else
//!   `b ← μ·b + (1 − dampening)·g`; then `g ← g + μ·b` (Nesterov) or `g ← b`; `p ← p − lr·g`.
//! * Adam (`torch.optim.Adam`, `amsgrad=False`): `t ← t + 1`; `g ← g + wd·p` (L2, Adam only);
//!   `m ← m + (1 − β1)(g − m)`; `v ← β2·v + (1 − β2)·g²`;
//!   `p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)`.
//! * AdamW (`torch.optim.AdamW`): as Adam but with decoupled decay `p ← p·(1 − lr·wd)` before the
//!   moment updates instead of the L2 term.
//!
//! Schedules: [`CosineSchedule`] is `CosineAnnealingLR`'s closed form, optionally preceded by a
//! `LinearLR` warm-up joined as `SequentialLR` does (the cosine restarts at the milestone).
//!
//! Checkpointing: [`Optimizer::export_state`] gives the moment buffers as named flat tensors
//! (`<tensor>.momentum_buffer`, `<tensor>.exp_avg`, `<tensor>.exp_avg_sq`) and the step counts and
//! optimiser kind as string metadata (`optimizer`, `step.<tensor>`); [`Optimizer::load_state`]
//! validates all of it before changing anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, Span};

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyper-parameter is out of range (message says which).
    #[error("invalid optimiser config: {0}")]
    InvalidConfig(String),
    /// Two tensors share a name.
    #[error("duplicate tensor name {0:?}")]
    DuplicateName(String),
    /// `step` got a different number of tensors than the optimiser was built for.
    #[error("step got {found} tensors, the optimiser has {expected}")]
    StepTensorCount {
        /// Tensors the optimiser holds.
        expected: usize,
        /// Tensors passed.
        found: usize,
    },
    /// A tensor index past the end.
    #[error("tensor index {index} out of range (the optimiser has {len} tensors)")]
    StepIndex {
        /// The index given.
        index: usize,
        /// Number of tensors.
        len: usize,
    },
    /// Parameter or gradient length differs from the tensor's size.
    #[error("tensor {name:?}: param has {param} elements and grad {grad}, expected {expected}")]
    StepLength {
        /// Tensor name.
        name: String,
        /// Its registered size.
        expected: usize,
        /// Parameter slice length.
        param: usize,
        /// Gradient slice length.
        grad: usize,
    },
    /// Loaded state is for another optimiser kind.
    #[error("optimiser state is for {found:?}, this optimiser is {expected:?}")]
    StateKind {
        /// This optimiser's kind.
        expected: String,
        /// Kind in the state (empty if absent).
        found: String,
    },
    /// Loaded state lacks a tensor or a step count.
    #[error("optimiser state: missing {0:?}")]
    StateMissing(String),
    /// Loaded state has a tensor or key this optimiser does not know.
    #[error("optimiser state: unexpected {0:?}")]
    StateUnexpected(String),
    /// Loaded state tensor has the wrong number of elements.
    #[error("optimiser state: {name:?} has {found} elements, expected {expected}")]
    StateLength {
        /// State tensor name.
        name: String,
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A step count that is not a non-negative integer.
    #[error("optimiser state: {key:?} = {value:?} is not a step count")]
    StateBadStep {
        /// Metadata key.
        key: String,
        /// Its value.
        value: String,
    },
    /// Learning-rate schedule settings out of range.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
}

/// A named flat tensor the optimiser updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Unique name (used for state keys).
    pub name: String,
    /// Number of elements.
    pub numel: usize,
}

impl TensorSpec {
    /// New spec.
    pub fn new(name: impl Into<String>, numel: usize) -> Self {
        TensorSpec {
            name: name.into(),
            numel,
        }
    }
}

/// A parameter slice and its gradient, for one [`Optimizer::step`].
#[derive(Debug)]
pub struct ParamMut<'a> {
    /// The parameter, updated in place.
    pub param: &'a mut [f32],
    /// Its gradient (same length).
    pub grad: &'a [f32],
}

/// `torch.optim.SGD` hyper-parameters (`Default` is PyTorch's defaults: all zero, no Nesterov).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SgdConfig {
    /// Momentum μ (≥ 0).
    pub momentum: f64,
    /// Dampening (must be 0 with Nesterov).
    pub dampening: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum (needs μ > 0 and dampening 0).
    pub nesterov: bool,
}

impl SgdConfig {
    /// The paper's code (spec §6): momentum 0.9, Nesterov, weight decay 5e-4.
    pub fn paper() -> Self {
        SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 5e-4,
            nesterov: true,
        }
    }
}

/// Adam/AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε, added to the bias-corrected √v.
    pub eps: f64,
    /// Weight decay: L2 on the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// `true` = AdamW's decoupled decay `p ← p·(1 − lr·wd)`.
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam` defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn adam() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }

    /// `torch.optim.AdamW` defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 0.01 (decoupled).
    pub fn adamw() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            decoupled_weight_decay: true,
            ..Self::adam()
        }
    }
}

/// Which optimiser, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// SGD (optionally with momentum / Nesterov).
    Sgd(SgdConfig),
    /// Adam or AdamW.
    Adam(AdamConfig),
}

impl OptimizerConfig {
    /// `"sgd"`, `"adam"` or `"adamw"`: the `optimizer` value in exported state.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(c) if c.decoupled_weight_decay => "adamw",
            OptimizerConfig::Adam(_) => "adam",
        }
    }

    fn validate(&self) -> Result<(), OptimError> {
        let bad = |m: String| Err(OptimError::InvalidConfig(m));
        match *self {
            OptimizerConfig::Sgd(c) => {
                if !(c.momentum.is_finite() && c.momentum >= 0.0) {
                    return bad(format!("momentum {} must be finite and >= 0", c.momentum));
                }
                if !c.dampening.is_finite() {
                    return bad(format!("dampening {} must be finite", c.dampening));
                }
                if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
                    return bad(format!("weight_decay {} must be >= 0", c.weight_decay));
                }
                if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
                    return bad("Nesterov momentum requires a momentum and zero dampening".into());
                }
            }
            OptimizerConfig::Adam(c) => {
                for (name, b) in [("beta1", c.beta1), ("beta2", c.beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return bad(format!("{name} {b} must be in [0, 1)"));
                    }
                }
                if !(c.eps.is_finite() && c.eps >= 0.0) {
                    return bad(format!("eps {} must be finite and >= 0", c.eps));
                }
                if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
                    return bad(format!("weight_decay {} must be >= 0", c.weight_decay));
                }
            }
        }
        Ok(())
    }

    /// Names of the per-tensor state buffers.
    fn buffer_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerConfig::Sgd(c) if c.momentum != 0.0 => &["momentum_buffer"],
            OptimizerConfig::Sgd(_) => &[],
            OptimizerConfig::Adam(_) => &["exp_avg", "exp_avg_sq"],
        }
    }
}

/// Exported optimiser state: named flat tensors plus string metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimizerState {
    /// `<tensor>.<buffer>` → values.
    pub tensors: BTreeMap<String, Vec<f32>>,
    /// `optimizer` → kind; `step.<tensor>` → step count.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Slot {
    name: String,
    /// Where the tensor lies in the flat arenas (parameters, gradients, moments).
    span: Span,
    step: u64,
}

/// An optimiser over a fixed list of named tensors laid out one after another in flat arenas;
/// see the module docs. Its moment buffers are arenas of the backend `B` with the parameter
/// arena's layout, so one update is one pass over each arena ([`Optimizer::step_arena`]).
#[derive(Debug)]
pub struct Optimizer<B: Backend = CpuBackend> {
    config: OptimizerConfig,
    slots: Vec<Slot>,
    /// One arena per name in `OptimizerConfig::buffer_names`, each of `numel` elements.
    moments: Vec<B::Buf>,
    numel: usize,
}

impl Optimizer<CpuBackend> {
    /// Builds a CPU optimiser for `tensors` (unique names), with zeroed state and step 0.
    pub fn new(
        config: OptimizerConfig,
        tensors: impl IntoIterator<Item = TensorSpec>,
    ) -> Result<Self, OptimError> {
        Self::new_on(&CpuBackend::default(), config, tensors)
    }

    /// One step over all tensors (same order as at construction), each given as its own
    /// parameter and gradient slice. All lengths are checked before anything is updated, so an
    /// error leaves parameters and state untouched.
    pub fn step(&mut self, params: &mut [ParamMut<'_>], lr: f64) -> Result<(), OptimError> {
        if params.len() != self.slots.len() {
            return Err(OptimError::StepTensorCount {
                expected: self.slots.len(),
                found: params.len(),
            });
        }
        for (slot, p) in self.slots.iter().zip(params.iter()) {
            check_len(slot, p.param, p.grad)?;
        }
        for (index, p) in params.iter_mut().enumerate() {
            self.update_host(index, p.param, p.grad, lr);
        }
        Ok(())
    }

    /// One step of tensor `index` only.
    pub fn step_tensor(
        &mut self,
        index: usize,
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
    ) -> Result<(), OptimError> {
        let len = self.slots.len();
        let slot = self
            .slots
            .get(index)
            .ok_or(OptimError::StepIndex { index, len })?;
        check_len(slot, param, grad)?;
        self.update_host(index, param, grad, lr);
        Ok(())
    }

    /// The update of one tensor given as host slices; lengths are already checked.
    fn update_host(&mut self, index: usize, param: &mut [f32], grad: &[f32], lr: f64) {
        let slot = &mut self.slots[index];
        let r = slot.span.range();
        match self.config {
            OptimizerConfig::Sgd(c) => {
                let momentum = self.moments.first_mut().map(|m| &mut m[r]);
                sgd_update_slices(&c, slot.step == 0, lr, param, grad, momentum);
            }
            OptimizerConfig::Adam(c) => {
                if let [m, v] = &mut self.moments[..] {
                    let t = slot.step.saturating_add(1);
                    adam_update_slices(&c, t, lr, param, grad, &mut m[r.clone()], &mut v[r]);
                }
            }
        }
        slot.step = slot.step.saturating_add(1);
    }
}

impl<B: Backend> Optimizer<B> {
    /// Builds an optimiser on backend `be` for `tensors` (unique names), laid out in the given
    /// order in the arenas, with zeroed state and step 0.
    pub fn new_on(
        be: &B,
        config: OptimizerConfig,
        tensors: impl IntoIterator<Item = TensorSpec>,
    ) -> Result<Self, OptimError> {
        config.validate()?;
        let mut seen = BTreeSet::new();
        let mut slots = Vec::new();
        let mut numel = 0;
        for t in tensors {
            if !seen.insert(t.name.clone()) {
                return Err(OptimError::DuplicateName(t.name));
            }
            slots.push(Slot {
                name: t.name,
                span: Span::new(numel, t.numel),
                step: 0,
            });
            numel += t.numel;
        }
        let moments = (0..config.buffer_names().len())
            .map(|_| be.alloc(numel))
            .collect::<crate::error::Result<Vec<_>>>()
            .map_err(|e| OptimError::InvalidConfig(format!("moment arenas: {e}")))?;
        Ok(Optimizer {
            config,
            slots,
            moments,
            numel,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the optimiser holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Elements of the arenas it updates.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Tensor names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Index of the tensor called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    /// Steps taken by tensor `index`.
    pub fn step_count(&self, index: usize) -> Option<u64> {
        self.slots.get(index).map(|s| s.step)
    }

    /// One step over the whole parameter arena `params` with its gradient arena `grads` (both
    /// laid out as the tensors were given at construction). When every tensor has taken the
    /// same number of steps (always, in training) this is one backend update over the whole
    /// arena; otherwise one per tensor. Element for element the arithmetic is the per-tensor
    /// update's, so both give the same bits.
    pub fn step_arena(
        &mut self,
        be: &B,
        params: &mut B::Buf,
        grads: &B::Buf,
        lr: f64,
    ) -> Result<(), OptimError> {
        for (what, len) in [("parameter", be.len(params)), ("gradient", be.len(grads))] {
            if len < self.numel {
                return Err(OptimError::StepLength {
                    name: format!("the {what} arena"),
                    expected: self.numel,
                    param: be.len(params),
                    grad: be.len(grads),
                });
            }
        }
        let uniform = self.slots.windows(2).all(|w| w[0].step == w[1].step);
        let runs: Vec<(Span, u64)> = if uniform {
            let step = self.slots.first().map_or(0, |s| s.step);
            vec![(Span::new(0, self.numel), step)]
        } else {
            self.slots.iter().map(|s| (s.span, s.step)).collect()
        };
        let config = self.config;
        for (span, step) in runs {
            let r = match config {
                OptimizerConfig::Sgd(c) => be.sgd_update(
                    &c,
                    step == 0,
                    lr,
                    params,
                    grads,
                    self.moments.first_mut(),
                    span,
                ),
                OptimizerConfig::Adam(c) => match &mut self.moments[..] {
                    [m, v] => {
                        be.adam_update(&c, step.saturating_add(1), lr, params, grads, m, v, span)
                    }
                    _ => Ok(()),
                },
            };
            r.map_err(|e| OptimError::InvalidConfig(format!("update failed: {e}")))?;
        }
        for slot in &mut self.slots {
            slot.step = slot.step.saturating_add(1);
        }
        Ok(())
    }

    /// The state as named flat tensors and metadata (see the module docs for the names); one
    /// download per moment arena.
    pub fn export_state(&self, be: &B) -> crate::error::Result<OptimizerState> {
        let mut state = OptimizerState::default();
        state
            .metadata
            .insert("optimizer".into(), self.config.kind().into());
        let mut host = vec![0.0f32; self.numel];
        for slot in &self.slots {
            state
                .metadata
                .insert(format!("step.{}", slot.name), slot.step.to_string());
        }
        for (buf_name, arena) in self.config.buffer_names().iter().zip(&self.moments) {
            be.download(arena, &mut host)?;
            for slot in &self.slots {
                state.tensors.insert(
                    format!("{}.{buf_name}", slot.name),
                    host[slot.span.range()].to_vec(),
                );
            }
        }
        Ok(state)
    }

    /// Restores a state from [`Optimizer::export_state`] of an optimiser of the same kind and
    /// tensors. Everything is validated first; on error nothing changes.
    pub fn load_state(&mut self, be: &B, state: &OptimizerState) -> Result<(), OptimError> {
        let kind = self.config.kind();
        let found = state.metadata.get("optimizer").cloned().unwrap_or_default();
        if found != kind {
            return Err(OptimError::StateKind {
                expected: kind.into(),
                found,
            });
        }
        let mut steps = Vec::with_capacity(self.slots.len());
        let mut expected_tensors = BTreeSet::new();
        for slot in &self.slots {
            let key = format!("step.{}", slot.name);
            let value = state
                .metadata
                .get(&key)
                .ok_or_else(|| OptimError::StateMissing(key.clone()))?;
            let step = value.parse::<u64>().map_err(|_| OptimError::StateBadStep {
                key: key.clone(),
                value: value.clone(),
            })?;
            steps.push(step);
            for buf_name in self.config.buffer_names() {
                let name = format!("{}.{buf_name}", slot.name);
                let data = state
                    .tensors
                    .get(&name)
                    .ok_or_else(|| OptimError::StateMissing(name.clone()))?;
                if data.len() != slot.span.len {
                    return Err(OptimError::StateLength {
                        name,
                        expected: slot.span.len,
                        found: data.len(),
                    });
                }
                expected_tensors.insert(name);
            }
        }
        if let Some(extra) = state
            .tensors
            .keys()
            .find(|k| !expected_tensors.contains(*k))
        {
            return Err(OptimError::StateUnexpected(extra.clone()));
        }
        if let Some(extra) = state.metadata.keys().find(|k| {
            k.as_str() != "optimizer"
                && !k
                    .strip_prefix("step.")
                    .is_some_and(|n| self.slots.iter().any(|s| s.name == n))
        }) {
            return Err(OptimError::StateUnexpected(extra.clone()));
        }
        let mut host = vec![0.0f32; self.numel];
        let buffer_names = self.config.buffer_names();
        for (buf_name, arena) in buffer_names.iter().zip(self.moments.iter_mut()) {
            for slot in &self.slots {
                if let Some(data) = state.tensors.get(&format!("{}.{buf_name}", slot.name)) {
                    host[slot.span.range()].copy_from_slice(data);
                }
            }
            be.upload(&host, arena)
                .map_err(|e| OptimError::InvalidConfig(format!("moment upload: {e}")))?;
        }
        for (slot, step) in self.slots.iter_mut().zip(steps) {
            slot.step = step;
        }
        Ok(())
    }
}

fn check_len(slot: &Slot, param: &[f32], grad: &[f32]) -> Result<(), OptimError> {
    if param.len() != slot.span.len || grad.len() != slot.span.len {
        return Err(OptimError::StepLength {
            name: slot.name.clone(),
            expected: slot.span.len,
            param: param.len(),
            grad: grad.len(),
        });
    }
    Ok(())
}

/// SGD on one range (the reference kernel every backend's `sgd_update` is tested against):
/// `first` is the tensors' first step, which initialises the momentum buffer as PyTorch does.
pub fn sgd_update_slices(
    c: &SgdConfig,
    first: bool,
    lr: f64,
    param: &mut [f32],
    grad: &[f32],
    momentum: Option<&mut [f32]>,
) {
    let (wd, mu, damp) = (
        c.weight_decay as f32,
        c.momentum as f32,
        1.0 - c.dampening as f32,
    );
    let lr = lr as f32;
    match momentum {
        Some(buf) => {
            for ((p, &g0), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
                let g = if wd != 0.0 { g0 + wd * *p } else { g0 };
                *b = if first { g } else { mu * *b + damp * g };
                let d = if c.nesterov { g + mu * *b } else { *b };
                *p -= lr * d;
            }
        }
        None => {
            for (p, &g0) in param.iter_mut().zip(grad) {
                let g = if wd != 0.0 { g0 + wd * *p } else { g0 };
                *p -= lr * g;
            }
        }
    }
}

/// Adam / AdamW step number `t` (1-based) on one range (the reference kernel).
pub fn adam_update_slices(
    c: &AdamConfig,
    t: u64,
    lr: f64,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    // Bias corrections in f64, as PyTorch computes them in Python floats.
    let exponent = i32::try_from(t).unwrap_or(i32::MAX);
    let bc1 = 1.0 - c.beta1.powi(exponent);
    let bc2 = 1.0 - c.beta2.powi(exponent);
    let step_size = (lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let (w1, b2, w2, eps) = (
        (1.0 - c.beta1) as f32,
        c.beta2 as f32,
        (1.0 - c.beta2) as f32,
        c.eps as f32,
    );
    let (l2, decay) = if c.weight_decay == 0.0 {
        (0.0f32, 1.0f32)
    } else if c.decoupled_weight_decay {
        (0.0, (1.0 - lr * c.weight_decay) as f32)
    } else {
        (c.weight_decay as f32, 1.0)
    };
    for (((p, &g0), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        if decay != 1.0 {
            *p *= decay;
        }
        let g = if l2 != 0.0 { g0 + l2 * *p } else { g0 };
        *m += w1 * (g - *m);
        *v = b2 * *v + w2 * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p -= step_size * (*m / denom);
    }
}

/// Linear warm-up (`torch.optim.lr_scheduler.LinearLR` with `end_factor = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearWarmup {
    /// Warm-up length in epochs (`total_iters`).
    pub epochs: u64,
    /// Factor of the base lr at epoch 0 (`start_factor`, in `(0, 1]`).
    pub start_factor: f64,
}

/// Cosine annealing (`CosineAnnealingLR` closed form), optionally after a linear warm-up.
///
/// Without warm-up: `lr(e) = η_min + (lr₀ − η_min)·(1 + cos(π·e/T_max))/2`.
/// With a warm-up of `w` epochs: `lr(e) = lr₀·(s + (1 − s)·e/w)` for `e < w`, then the cosine
/// evaluated at `e − w` (what `SequentialLR(milestones=[w])` does: the cosine restarts at step 0).
/// Past `T_max` the closed form keeps following the cosine, as PyTorch's does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    base_lr: f64,
    eta_min: f64,
    t_max: u64,
    warmup: Option<LinearWarmup>,
}

impl CosineSchedule {
    /// Cosine from `base_lr` to 0 over `t_max` (> 0) epochs.
    pub fn new(base_lr: f64, t_max: u64) -> Result<Self, OptimError> {
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(OptimError::InvalidSchedule(format!(
                "base lr {base_lr} must be finite and >= 0"
            )));
        }
        if t_max == 0 {
            return Err(OptimError::InvalidSchedule("T_max must be > 0".into()));
        }
        Ok(CosineSchedule {
            base_lr,
            eta_min: 0.0,
            t_max,
            warmup: None,
        })
    }

    /// Sets the final learning rate `eta_min`.
    pub fn with_eta_min(mut self, eta_min: f64) -> Result<Self, OptimError> {
        if !eta_min.is_finite() {
            return Err(OptimError::InvalidSchedule(format!(
                "eta_min {eta_min} must be finite"
            )));
        }
        self.eta_min = eta_min;
        Ok(self)
    }

    /// Adds a linear warm-up (`epochs == 0` means none).
    pub fn with_warmup(mut self, warmup: LinearWarmup) -> Result<Self, OptimError> {
        if !(warmup.start_factor > 0.0 && warmup.start_factor <= 1.0) {
            return Err(OptimError::InvalidSchedule(format!(
                "warm-up start factor {} must be in (0, 1]",
                warmup.start_factor
            )));
        }
        self.warmup = (warmup.epochs > 0).then_some(warmup);
        Ok(self)
    }

    /// The base (initial) learning rate.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// Learning rate for epoch (or iteration) `epoch`, counting from 0.
    pub fn lr_at(&self, epoch: u64) -> f64 {
        let mut e = epoch;
        if let Some(w) = self.warmup {
            if e < w.epochs {
                let frac = e as f64 / w.epochs as f64;
                return self.base_lr * (w.start_factor + (1.0 - w.start_factor) * frac);
            }
            e -= w.epochs;
        }
        let phase = std::f64::consts::PI * e as f64 / self.t_max as f64;
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64, tol: f64) -> bool {
        (f64::from(a) - b).abs() <= tol * (1.0 + b.abs())
    }

    fn one(config: OptimizerConfig, n: usize) -> Optimizer {
        Optimizer::new(config, [TensorSpec::new("w", n)]).expect("valid optimiser")
    }

    #[test]
    fn sgd_nesterov_hand_values() {
        // p = 1, g = 0.5 every step, lr 0.1, μ 0.9, wd 0.1.
        // step 1: g' = 0.5 + 0.1·1 = 0.6; b = 0.6; d = 0.6 + 0.9·0.6 = 1.14; p = 0.886
        // step 2: g' = 0.5 + 0.0886 = 0.5886; b = 0.54 + 0.5886 = 1.1286;
        //         d = 0.5886 + 1.01574 = 1.60434; p = 0.886 − 0.160434 = 0.725566
        let cfg = SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.1,
            nesterov: true,
        };
        let mut opt = one(OptimizerConfig::Sgd(cfg), 1);
        let mut p = [1.0f32];
        opt.step_tensor(0, &mut p, &[0.5], 0.1).expect("step");
        assert!(close(p[0], 0.886, 1e-6), "{}", p[0]);
        opt.step_tensor(0, &mut p, &[0.5], 0.1).expect("step");
        assert!(close(p[0], 0.725566, 1e-6), "{}", p[0]);
        assert_eq!(opt.step_count(0), Some(2));
    }

    /// PyTorch's SGD formula, in f64, for a sequence of gradients.
    fn sgd_reference(c: &SgdConfig, p0: &[f64], grads: &[Vec<f64>], lrs: &[f64]) -> Vec<f64> {
        let mut p = p0.to_vec();
        let mut b: Option<Vec<f64>> = None;
        for (g, &lr) in grads.iter().zip(lrs) {
            let g: Vec<f64> = g
                .iter()
                .zip(&p)
                .map(|(g, p)| g + c.weight_decay * p)
                .collect();
            let d = if c.momentum != 0.0 {
                let nb: Vec<f64> = match &b {
                    None => g.clone(),
                    Some(b) => b
                        .iter()
                        .zip(&g)
                        .map(|(b, g)| c.momentum * b + (1.0 - c.dampening) * g)
                        .collect(),
                };
                let d = if c.nesterov {
                    g.iter().zip(&nb).map(|(g, b)| g + c.momentum * b).collect()
                } else {
                    nb.clone()
                };
                b = Some(nb);
                d
            } else {
                g
            };
            for (p, d) in p.iter_mut().zip(&d) {
                *p -= lr * d;
            }
        }
        p
    }

    /// PyTorch's Adam/AdamW formula, in f64.
    fn adam_reference(c: &AdamConfig, p0: &[f64], grads: &[Vec<f64>], lrs: &[f64]) -> Vec<f64> {
        let mut p = p0.to_vec();
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (t, (g, &lr)) in grads.iter().zip(lrs).enumerate() {
            let t = (t + 1) as i32;
            for i in 0..p.len() {
                let mut gi = g[i];
                if c.decoupled_weight_decay {
                    p[i] *= 1.0 - lr * c.weight_decay;
                } else {
                    gi += c.weight_decay * p[i];
                }
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                let mhat = m[i] / (1.0 - c.beta1.powi(t));
                let denom = v[i].sqrt() / (1.0 - c.beta2.powi(t)).sqrt() + c.eps;
                p[i] -= lr * mhat / denom;
            }
        }
        p
    }

    fn grads(steps: usize, n: usize) -> Vec<Vec<f64>> {
        (0..steps)
            .map(|s| {
                (0..n)
                    .map(|i| ((s * 7 + i * 3) % 11) as f64 / 5.0 - 1.0)
                    .collect()
            })
            .collect()
    }

    fn run(opt: &mut Optimizer, p0: &[f64], grads: &[Vec<f64>], lrs: &[f64]) -> Vec<f32> {
        let mut p: Vec<f32> = p0.iter().map(|&x| x as f32).collect();
        for (g, &lr) in grads.iter().zip(lrs) {
            let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            opt.step(
                &mut [ParamMut {
                    param: &mut p,
                    grad: &g,
                }],
                lr,
            )
            .expect("step");
        }
        p
    }

    #[test]
    fn sgd_variants_match_reference() {
        let p0 = [0.5, -1.25, 2.0, 0.0, 3.5];
        let g = grads(6, 5);
        let lrs = [0.1, 0.09, 0.08, 0.05, 0.02, 0.01];
        for cfg in [
            SgdConfig::default(),
            SgdConfig {
                weight_decay: 5e-4,
                ..SgdConfig::default()
            },
            SgdConfig {
                momentum: 0.9,
                dampening: 0.1,
                weight_decay: 1e-2,
                nesterov: false,
            },
            SgdConfig::paper(),
        ] {
            let mut opt = one(OptimizerConfig::Sgd(cfg), 5);
            let got = run(&mut opt, &p0, &g, &lrs);
            let want = sgd_reference(&cfg, &p0, &g, &lrs);
            for (a, b) in got.iter().zip(&want) {
                assert!(close(*a, *b, 1e-5), "{cfg:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn adam_hand_values() {
        // Step 1 of Adam moves by lr·sign(g) (up to ε): m = 0.05, v = 0.00025, bias-corrected
        // m̂ = 0.5, √v̂ = 0.5, p = 1 − 0.1·0.5/(0.5 + 1e-8).
        let mut opt = one(OptimizerConfig::Adam(AdamConfig::adam()), 1);
        let mut p = [1.0f32];
        opt.step_tensor(0, &mut p, &[0.5], 0.1).expect("step");
        assert!(close(p[0], 1.0 - 0.05 / (0.5 + 1e-8), 1e-7), "{}", p[0]);
        // AdamW: p = 1·(1 − 0.1·0.01) − 0.1 = 0.899.
        let mut opt = one(OptimizerConfig::Adam(AdamConfig::adamw()), 1);
        let mut p = [1.0f32];
        opt.step_tensor(0, &mut p, &[0.5], 0.1).expect("step");
        assert!(close(p[0], 0.899, 1e-6), "{}", p[0]);
    }

    #[test]
    fn adam_variants_match_reference() {
        let p0 = [0.5, -1.25, 2.0, 0.0, 3.5];
        let g = grads(8, 5);
        let lrs = [1e-3, 1e-3, 9e-4, 8e-4, 5e-4, 3e-4, 2e-4, 1e-4];
        for cfg in [
            AdamConfig::adam(),
            AdamConfig {
                weight_decay: 0.05,
                ..AdamConfig::adam()
            },
            AdamConfig::adamw(),
            AdamConfig {
                beta1: 0.5,
                beta2: 0.9,
                eps: 1e-3,
                weight_decay: 0.1,
                decoupled_weight_decay: true,
            },
        ] {
            let mut opt = one(OptimizerConfig::Adam(cfg), 5);
            let got = run(&mut opt, &p0, &g, &lrs);
            let want = adam_reference(&cfg, &p0, &g, &lrs);
            for (a, b) in got.iter().zip(&want) {
                assert!(close(*a, *b, 2e-6), "{cfg:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn state_export_and_restore_continues_identically() {
        for cfg in [
            OptimizerConfig::Sgd(SgdConfig::paper()),
            OptimizerConfig::Adam(AdamConfig::adamw()),
        ] {
            let specs = [TensorSpec::new("conv.w", 4), TensorSpec::new("fc.b", 2)];
            let mut a = Optimizer::new(cfg, specs.clone()).expect("opt");
            let (mut w, mut b) = (vec![0.5f32; 4], vec![-0.5f32; 2]);
            let (gw, gb) = ([0.1f32, -0.2, 0.3, 0.0], [1.0f32, -1.0]);
            for _ in 0..3 {
                a.step(
                    &mut [
                        ParamMut {
                            param: &mut w,
                            grad: &gw,
                        },
                        ParamMut {
                            param: &mut b,
                            grad: &gb,
                        },
                    ],
                    0.01,
                )
                .expect("step");
            }
            let state = a.export_state(&CpuBackend::default()).expect("export");
            assert_eq!(state.metadata["step.conv.w"], "3");
            let mut restored = Optimizer::new(cfg, specs.clone()).expect("opt");
            restored
                .load_state(&CpuBackend::default(), &state)
                .expect("load");
            let (mut w2, mut b2) = (w.clone(), b.clone());
            a.step_tensor(0, &mut w, &gw, 0.01).expect("step");
            a.step_tensor(1, &mut b, &gb, 0.01).expect("step");
            restored.step_tensor(0, &mut w2, &gw, 0.01).expect("step");
            restored.step_tensor(1, &mut b2, &gb, 0.01).expect("step");
            assert_eq!((w, b), (w2, b2));

            // Validation: wrong kind, missing/extra/short tensors, bad step.
            let mut s = state.clone();
            s.metadata.insert("optimizer".into(), "rmsprop".into());
            assert!(matches!(
                restored.load_state(&CpuBackend::default(), &s),
                Err(OptimError::StateKind { .. })
            ));
            let first = state.tensors.keys().next().cloned().expect("has tensors");
            let mut s = state.clone();
            s.tensors.remove(&first);
            assert_eq!(
                restored.load_state(&CpuBackend::default(), &s),
                Err(OptimError::StateMissing(first.clone()))
            );
            let mut s = state.clone();
            s.tensors.insert("other.exp_avg".into(), vec![0.0]);
            assert!(matches!(
                restored.load_state(&CpuBackend::default(), &s),
                Err(OptimError::StateUnexpected(_))
            ));
            let mut s = state.clone();
            s.tensors.insert(first.clone(), vec![0.0; 1]);
            assert!(matches!(
                restored.load_state(&CpuBackend::default(), &s),
                Err(OptimError::StateLength { .. })
            ));
            let mut s = state.clone();
            s.metadata.insert("step.fc.b".into(), "-1".into());
            assert!(matches!(
                restored.load_state(&CpuBackend::default(), &s),
                Err(OptimError::StateBadStep { .. })
            ));
        }
    }

    #[test]
    fn step_validates_inputs_without_partial_updates() {
        let mut opt = Optimizer::new(
            OptimizerConfig::Sgd(SgdConfig::paper()),
            [TensorSpec::new("a", 2), TensorSpec::new("b", 3)],
        )
        .expect("opt");
        let (mut a, mut b) = (vec![1.0f32; 2], vec![1.0f32; 3]);
        let err = opt
            .step(
                &mut [
                    ParamMut {
                        param: &mut a,
                        grad: &[1.0, 1.0],
                    },
                    ParamMut {
                        param: &mut b,
                        grad: &[1.0, 1.0],
                    },
                ],
                0.1,
            )
            .expect_err("short grad");
        assert!(matches!(err, OptimError::StepLength { ref name, .. } if name == "b"));
        assert_eq!(a, [1.0, 1.0]);
        assert_eq!(opt.step_count(0), Some(0));
        assert!(matches!(
            opt.step(&mut [], 0.1),
            Err(OptimError::StepTensorCount {
                expected: 2,
                found: 0
            })
        ));
        assert!(matches!(
            opt.step_tensor(2, &mut a, &[0.0, 0.0], 0.1),
            Err(OptimError::StepIndex { index: 2, len: 2 })
        ));
        assert!(matches!(
            Optimizer::new(
                OptimizerConfig::Sgd(SgdConfig::default()),
                [TensorSpec::new("x", 1), TensorSpec::new("x", 2)]
            ),
            Err(OptimError::DuplicateName(_))
        ));
        let nesterov_no_momentum = SgdConfig {
            nesterov: true,
            ..SgdConfig::default()
        };
        assert!(Optimizer::new(OptimizerConfig::Sgd(nesterov_no_momentum), []).is_err());
        let bad_beta = AdamConfig {
            beta2: 1.0,
            ..AdamConfig::adam()
        };
        assert!(Optimizer::new(OptimizerConfig::Adam(bad_beta), []).is_err());
    }

    #[test]
    fn cosine_matches_closed_form() {
        let s = CosineSchedule::new(0.01, 300).expect("schedule");
        assert_eq!(s.lr_at(0), 0.01);
        assert!((s.lr_at(150) - 0.005).abs() < 1e-15);
        assert!(s.lr_at(300).abs() < 1e-15);
        let e = 37.0f64;
        let want = 0.01 * (1.0 + (std::f64::consts::PI * e / 300.0).cos()) / 2.0;
        assert!((s.lr_at(37) - want).abs() < 1e-15);

        let s = CosineSchedule::new(0.1, 10)
            .and_then(|s| s.with_eta_min(0.001))
            .expect("schedule");
        assert!((s.lr_at(5) - (0.001 + 0.099 * 0.5)).abs() < 1e-15);
        assert!((s.lr_at(10) - 0.001).abs() < 1e-15);
    }

    #[test]
    fn warmup_then_cosine() {
        // main.py's variant: LinearLR(start 0.01, 5 epochs) then cosine restarting at epoch 5.
        let s = CosineSchedule::new(0.01, 295)
            .and_then(|s| {
                s.with_warmup(LinearWarmup {
                    epochs: 5,
                    start_factor: 0.01,
                })
            })
            .expect("schedule");
        assert!((s.lr_at(0) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(1) - 0.01 * (0.01 + 0.99 * 0.2)).abs() < 1e-15);
        assert!((s.lr_at(4) - 0.01 * (0.01 + 0.99 * 0.8)).abs() < 1e-15);
        assert_eq!(s.lr_at(5), 0.01);
        let want = 0.01 * (1.0 + (std::f64::consts::PI * 10.0 / 295.0).cos()) / 2.0;
        assert!((s.lr_at(15) - want).abs() < 1e-15);
        assert!(CosineSchedule::new(0.1, 0).is_err());
        assert!(CosineSchedule::new(0.1, 1)
            .and_then(|s| s.with_warmup(LinearWarmup {
                epochs: 2,
                start_factor: 0.0
            }))
            .is_err());
    }
}
