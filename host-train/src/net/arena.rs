//! Flat parameter arenas: every trainable tensor of a network is a span of one value arena and
//! the same span of one gradient arena (so an optimiser update is one pass, and a device backend
//! holds the network in three buffers); BN running statistics live in a third arena, `stats`,
//! which forward passes update and the optimiser never touches.
//!
//! [`TensorMeta`] keeps each tensor's name, shape, kind and role; names and order are those of
//! the `net` module docs (the checkpoint and export keys).

use crate::backend::{Backend, Span};
use crate::error::Result;
use crate::tensor::{InitRng, ParamKind, ParamRole};

/// One tensor of the arenas.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    /// Stable name, e.g. `conv2.weight`, `bn1.running_mean`.
    pub name: String,
    /// Logical shape (row-major, PyTorch's).
    pub shape: Vec<usize>,
    /// Trainable (a span of the value and gradient arenas) or buffer (a span of `stats`).
    pub kind: ParamKind,
    /// What the tensor is.
    pub role: ParamRole,
    /// Where it lies in its arena.
    pub span: Span,
}

/// Collects tensors and their initial values while a network is built.
#[derive(Debug, Default)]
pub(crate) struct ArenaBuilder {
    pub(crate) metas: Vec<TensorMeta>,
    values: Vec<f32>,
    stats: Vec<f32>,
}

impl ArenaBuilder {
    /// Adds a trainable tensor; returns its span of the value / gradient arenas.
    pub(crate) fn trainable(
        &mut self,
        name: String,
        role: ParamRole,
        shape: Vec<usize>,
        init: Vec<f32>,
    ) -> Span {
        let span = Span::new(self.values.len(), init.len());
        self.values.extend_from_slice(&init);
        self.metas.push(TensorMeta {
            name,
            shape,
            kind: ParamKind::Trainable,
            role,
            span,
        });
        span
    }

    /// Adds a buffer; returns its span of the `stats` arena.
    pub(crate) fn buffer(
        &mut self,
        name: String,
        role: ParamRole,
        shape: Vec<usize>,
        init: Vec<f32>,
    ) -> Span {
        let span = Span::new(self.stats.len(), init.len());
        self.stats.extend_from_slice(&init);
        self.metas.push(TensorMeta {
            name,
            shape,
            kind: ParamKind::Buffer,
            role,
            span,
        });
        span
    }

    /// Uploads the initial values into the backend's arenas (gradients zeroed).
    pub(crate) fn finish<B: Backend>(self, be: &B) -> Result<ParamArena<B>> {
        let mut values = be.alloc(self.values.len())?;
        be.upload(&self.values, &mut values)?;
        let grads = be.alloc(self.values.len())?;
        let mut stats = be.alloc(self.stats.len())?;
        be.upload(&self.stats, &mut stats)?;
        Ok(ParamArena {
            metas: self.metas,
            values,
            grads,
            stats,
            trainable_len: self.values.len(),
            stats_len: self.stats.len(),
        })
    }
}

/// The three arenas of a network.
#[derive(Debug)]
pub struct ParamArena<B: Backend> {
    /// Every tensor, in `net` order.
    pub metas: Vec<TensorMeta>,
    /// Trainable values.
    pub values: B::Buf,
    /// Their gradients (same layout).
    pub grads: B::Buf,
    /// Buffers (BN running statistics).
    pub stats: B::Buf,
    /// Elements of `values` / `grads`.
    pub trainable_len: usize,
    /// Elements of `stats`.
    pub stats_len: usize,
}

impl<B: Backend> ParamArena<B> {
    /// The tensor called `name`.
    pub fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.metas.iter().find(|m| m.name == name)
    }

    /// Values and gradients of every tensor, downloaded (one download per arena).
    pub fn download(&self, be: &B) -> Result<HostArena> {
        let mut values = vec![0.0; self.trainable_len];
        let mut grads = vec![0.0; self.trainable_len];
        let mut stats = vec![0.0; self.stats_len];
        be.download(&self.values, &mut values)?;
        be.download(&self.grads, &mut grads)?;
        be.download(&self.stats, &mut stats)?;
        Ok(HostArena {
            values,
            grads,
            stats,
        })
    }
}

/// Host copies of the three arenas.
#[derive(Clone, Debug, PartialEq)]
pub struct HostArena {
    /// Trainable values.
    pub values: Vec<f32>,
    /// Gradients.
    pub grads: Vec<f32>,
    /// Buffers.
    pub stats: Vec<f32>,
}

/// A tensor of a network on the host: its description and borrowed values.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamRef<'a> {
    /// Stable name (see the `net` docs).
    pub name: &'a str,
    /// Logical shape.
    pub shape: &'a [usize],
    /// Trainable or buffer.
    pub kind: ParamKind,
    /// What the tensor is.
    pub role: ParamRole,
    /// The values.
    pub value: &'a [f32],
    /// The accumulated gradient; empty for buffers.
    pub grad: &'a [f32],
}

impl ParamRef<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// True for optimizer-updated tensors.
    pub fn is_trainable(&self) -> bool {
        self.kind == ParamKind::Trainable
    }
}

/// A tensor of a network on the host with mutable values (checkpoint loading, tests).
#[derive(Debug)]
pub struct ParamMut<'a> {
    /// Stable name.
    pub name: &'a str,
    /// Logical shape.
    pub shape: &'a [usize],
    /// Trainable or buffer.
    pub kind: ParamKind,
    /// What the tensor is.
    pub role: ParamRole,
    /// The values, mutable.
    pub value: &'a mut [f32],
    /// The accumulated gradient; empty for buffers.
    pub grad: &'a [f32],
}

impl ParamMut<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// True for optimizer-updated tensors.
    pub fn is_trainable(&self) -> bool {
        self.kind == ParamKind::Trainable
    }
}

/// Borrowed views of every tensor of host arenas, in `metas` order.
pub(crate) fn views<'a>(
    metas: &'a [TensorMeta],
    values: &'a [f32],
    grads: &'a [f32],
    stats: &'a [f32],
) -> Vec<ParamRef<'a>> {
    metas
        .iter()
        .map(|m| {
            let trainable = m.kind == ParamKind::Trainable;
            ParamRef {
                name: &m.name,
                shape: &m.shape,
                kind: m.kind,
                role: m.role,
                value: if trainable {
                    &values[m.span.range()]
                } else {
                    &stats[m.span.range()]
                },
                grad: if trainable {
                    &grads[m.span.range()]
                } else {
                    &[]
                },
            }
        })
        .collect()
}

/// Mutable views of every tensor (spans of each arena are disjoint and in increasing order).
pub(crate) fn views_mut<'a>(
    metas: &'a [TensorMeta],
    mut values: &'a mut [f32],
    grads: &'a [f32],
    mut stats: &'a mut [f32],
) -> Vec<ParamMut<'a>> {
    let (mut v_at, mut s_at) = (0usize, 0usize);
    let mut out = Vec::with_capacity(metas.len());
    for m in metas {
        let trainable = m.kind == ParamKind::Trainable;
        let value = if trainable {
            let (_, rest) = std::mem::take(&mut values).split_at_mut(m.span.off - v_at);
            let (mine, rest) = rest.split_at_mut(m.span.len);
            values = rest;
            v_at = m.span.end();
            mine
        } else {
            let (_, rest) = std::mem::take(&mut stats).split_at_mut(m.span.off - s_at);
            let (mine, rest) = rest.split_at_mut(m.span.len);
            stats = rest;
            s_at = m.span.end();
            mine
        };
        out.push(ParamMut {
            name: &m.name,
            shape: &m.shape,
            kind: m.kind,
            role: m.role,
            value,
            grad: if trainable {
                &grads[m.span.range()]
            } else {
                &[]
            },
        });
    }
    out
}

// ---- initialisation (see the `net` docs) ------------------------------------------------------

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The RNG stream of one tensor: depends only on the seed and the tensor name.
fn tensor_rng(seed: u64, name: &str) -> InitRng {
    let mut r = InitRng::new(seed ^ fnv1a(name));
    r.next_u64();
    r
}

/// PyTorch's default init for FP weights and biases: U(±1/√fan_in).
pub(crate) fn fp_init(seed: u64, name: &str, n: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    tensor_rng(seed, name).uniform_vec(n, bound)
}

/// Binary latent weights: Kaiming-normal, N(0, 2/fan_in).
pub(crate) fn binary_init(seed: u64, name: &str, n: usize, fan_in: usize) -> Vec<f32> {
    let std = (2.0 / fan_in as f32).sqrt();
    tensor_rng(seed, name).normal_vec(n, std)
}
