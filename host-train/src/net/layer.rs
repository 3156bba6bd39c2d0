//! The layers of a built network: each holds the spans of its parameters in the arenas and its
//! backend-resident scratch and saved state, and calls one [`Backend`] method per pass.

use super::arena::{binary_init, fp_init, ArenaBuilder};
use super::config::{ActShape, LayerSpec, NeuronKind};
use crate::backend::{Backend, MemBnSpans, Span};
use crate::error::{Error, Result};
use crate::layers::avgpool2::PoolGeom;
use crate::layers::conv2d::Conv2dGeom;
use crate::layers::linear::LinearGeom;
use crate::layers::maxpool::MaxPoolGeom;
use crate::layers::seca::{SecaGeom, SECA_K};
use crate::tensor::ParamRole;

/// What a forward pass reads and writes besides its input and output.
pub(crate) struct Fwd<'a, B: Backend> {
    pub be: &'a B,
    pub batch: usize,
    pub t: usize,
    pub train: bool,
    pub col: &'a mut B::Buf,
    pub values: &'a B::Buf,
    pub stats: &'a mut B::Buf,
    /// Version of `values`: binarised weights are recomputed only when it changed.
    pub version: u64,
    /// The residual slots.
    pub slots: &'a mut [B::Buf],
}

/// What a backward pass reads and writes besides activations and gradients.
pub(crate) struct Bwd<'a, B: Backend> {
    pub be: &'a B,
    pub batch: usize,
    pub t: usize,
    pub col: &'a mut B::Buf,
    pub values: &'a B::Buf,
    pub grads: &'a mut B::Buf,
    /// Gradient of each residual slot's current content (accumulated by its consumers).
    pub slot_grads: &'a mut [B::Buf],
}

/// α·sign(W) of a binary layer, cached per parameter version.
#[derive(Debug)]
pub(crate) struct Binarized<B: Backend> {
    pub wb: B::Buf,
    pub alpha: B::Buf,
    /// Scratch for dW_b.
    pub dwb: B::Buf,
    /// Version of the values `wb` was computed from.
    pub version: Option<u64>,
    /// Binarisations done (the cache's misses).
    pub count: u64,
}

impl<B: Backend> Binarized<B> {
    fn new(be: &B, rows: usize, len: usize) -> Result<Self> {
        Ok(Binarized {
            wb: be.alloc(len)?,
            alpha: be.alloc(rows)?,
            dwb: be.alloc(len)?,
            version: None,
            count: 0,
        })
    }

    /// Recomputes `wb` from the latent weights unless they are unchanged since the last time.
    fn refresh(&mut self, f: &Fwd<'_, B>, rows: usize, weight: Span) -> Result<()> {
        if self.version != Some(f.version) {
            f.be.binarize_forward(rows, (f.values, weight), &mut self.wb, &mut self.alpha)?;
            self.version = Some(f.version);
            self.count += 1;
        }
        Ok(())
    }

    fn bytes(&self, be: &B) -> usize {
        be.bytes(&self.wb) + be.bytes(&self.alpha) + be.bytes(&self.dwb)
    }
}

#[derive(Debug)]
pub(crate) struct ConvLayer<B: Backend> {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub weight: Span,
    pub bias: Option<Span>,
    /// Binary layers only.
    pub bin: Option<Binarized<B>>,
}

impl<B: Backend> ConvLayer<B> {
    pub fn geom(&self, batch: usize) -> Result<Conv2dGeom> {
        Conv2dGeom::new(
            batch,
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.k,
            self.stride,
            self.pad,
        )
    }
}

#[derive(Debug)]
pub(crate) struct BnLayer<B: Backend> {
    pub gamma: Span,
    pub beta: Span,
    /// Spans of the stats arena.
    pub mean: Span,
    pub var: Span,
    pub saved: B::BnSaved,
}

#[derive(Debug)]
pub(crate) struct SecaLayer<B: Backend> {
    pub c: usize,
    pub hw: usize,
    pub weight: Span,
    pub bias: Span,
    pub saved: B::SecaSaved,
    /// SECA_II: the slot added to the input first, with the sum (SECA's actual input) and the
    /// scratch for its gradient.
    pub residual: Option<SecaResidual<B>>,
}

#[derive(Debug)]
pub(crate) struct SecaResidual<B: Backend> {
    pub slot: usize,
    pub sum: B::Buf,
    pub dsum: B::Buf,
}

/// A residual-slot operation (core `Save` / `Swap` / `Add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotOp {
    Save,
    Swap,
    Add,
}

#[derive(Debug)]
pub(crate) struct MemBnPart<B: Backend> {
    pub spans: MemBnSpans,
    pub c: usize,
    /// Spans of the stats arena.
    pub mean: Span,
    pub var: Span,
    pub saved: B::MemBnSaved,
}

#[derive(Debug)]
pub(crate) struct NeuronLayer<B: Backend> {
    pub kind: NeuronKind,
    /// Leak logits (absent for Version III).
    pub p: Option<Span>,
    pub q: Span,
    pub membn: Option<Box<MemBnPart<B>>>,
    /// v[t] after the last forward (carried to the next step).
    pub state: B::Buf,
    /// v[t−1] of the last forward (read by backward; the two buffers swap every step).
    pub state_prev: B::Buf,
}

#[derive(Debug)]
pub(crate) struct PoolLayer {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

#[derive(Debug)]
pub(crate) struct MaxPoolLayer<B: Backend> {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// The argmax of the last forward.
    pub saved: B::MaxPoolSaved,
}

impl<B: Backend> MaxPoolLayer<B> {
    pub fn geom(&self, batch: usize) -> Result<MaxPoolGeom> {
        MaxPoolGeom::new(
            self.c * batch,
            self.h,
            self.w,
            self.kernel,
            self.stride,
            self.pad,
        )
    }
}

#[derive(Debug)]
pub(crate) struct FlattenLayer {
    pub c: usize,
    pub hw: usize,
}

#[derive(Debug)]
pub(crate) struct GapLayer {
    pub c: usize,
    pub hw: usize,
}

#[derive(Debug)]
pub(crate) struct LinearLayer<B: Backend> {
    pub d_in: usize,
    pub d_out: usize,
    pub weight: Span,
    pub bias: Option<Span>,
    pub bin: Option<Binarized<B>>,
}

#[derive(Debug)]
pub(crate) enum Layer<B: Backend> {
    Conv(ConvLayer<B>),
    Bn(BnLayer<B>),
    Seca(SecaLayer<B>),
    Neuron(NeuronLayer<B>),
    Pool(PoolLayer),
    MaxPool(MaxPoolLayer<B>),
    Gap(GapLayer),
    Linear(LinearLayer<B>),
    Flatten(FlattenLayer),
    Slot {
        op: SlotOp,
        slot: usize,
        /// Elements per sample of the running tensor before / after the op.
        in_elems: usize,
        out_elems: usize,
    },
}

pub(crate) fn cfg_err(layer: usize, detail: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        layer,
        detail: detail.into(),
    }
}

impl<B: Backend> Layer<B> {
    /// Builds the layer for input shape `input`, adding its tensors to `arena`; returns it and
    /// its output shape.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        be: &B,
        idx: usize,
        spec: &LayerSpec,
        input: ActShape,
        time_steps: usize,
        counters: &mut [usize; 5],
        seed: u64,
        arena: &mut ArenaBuilder,
        slots: &mut [Option<ActShape>],
    ) -> Result<(Layer<B>, ActShape)> {
        let slot_index = |slot: u8| -> Result<usize> {
            let s = slot as usize;
            if s >= slots.len() {
                return Err(cfg_err(
                    idx,
                    format!("residual slot {slot} (core has {} slots)", slots.len()),
                ));
            }
            Ok(s)
        };
        let spatial = |what: &str| match input {
            ActShape::Spatial { c, h, w } => Ok((c, h, w)),
            ActShape::Flat { .. } => Err(cfg_err(
                idx,
                format!("{what} needs a spatial (CBHW) input, got flat features"),
            )),
        };
        let next = |counters: &mut [usize; 5], family: usize| {
            counters[family] += 1;
            counters[family]
        };
        match *spec {
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                pad,
                ..
            }
            | LayerSpec::BinaryConv2d {
                out_channels,
                kernel,
                stride,
                pad,
            } => {
                let (c, h, w) = spatial("conv")?;
                let binary = matches!(spec, LayerSpec::BinaryConv2d { .. });
                let has_bias = matches!(spec, LayerSpec::Conv2d { bias: true, .. });
                let g = Conv2dGeom::new(1, c, h, w, out_channels, kernel, stride, pad)
                    .map_err(|e| cfg_err(idx, e.to_string()))?;
                let n = next(counters, 0);
                let shape = vec![out_channels, c, kernel, kernel];
                let fan_in = c * kernel * kernel;
                let wn = format!("conv{n}.weight");
                let numel = g.w_len();
                let (role, init) = if binary {
                    (
                        ParamRole::BinaryWeight,
                        binary_init(seed, &wn, numel, fan_in),
                    )
                } else {
                    (ParamRole::FullPrecision, fp_init(seed, &wn, numel, fan_in))
                };
                let weight = arena.trainable(wn, role, shape, init);
                let bias = has_bias.then(|| {
                    let bn = format!("conv{n}.bias");
                    let init = fp_init(seed, &bn, out_channels, fan_in);
                    arena.trainable(bn, ParamRole::FullPrecision, vec![out_channels], init)
                });
                let bin = if binary {
                    Some(Binarized::new(be, out_channels, numel)?)
                } else {
                    None
                };
                Ok((
                    Layer::Conv(ConvLayer {
                        c_in: c,
                        h,
                        w,
                        c_out: out_channels,
                        k: kernel,
                        stride,
                        pad,
                        weight,
                        bias,
                        bin,
                    }),
                    ActShape::Spatial {
                        c: out_channels,
                        h: g.oh(),
                        w: g.ow(),
                    },
                ))
            }
            LayerSpec::BatchNorm2d => {
                let (c, _, _) = spatial("batchnorm2d")?;
                let n = next(counters, 1);
                let role = ParamRole::BatchNorm;
                let gamma = arena.trainable(format!("bn{n}.weight"), role, vec![c], vec![1.0; c]);
                let beta = arena.trainable(format!("bn{n}.bias"), role, vec![c], vec![0.0; c]);
                let mean = arena.buffer(format!("bn{n}.running_mean"), role, vec![c], vec![0.0; c]);
                let var = arena.buffer(format!("bn{n}.running_var"), role, vec![c], vec![1.0; c]);
                Ok((
                    Layer::Bn(BnLayer {
                        gamma,
                        beta,
                        mean,
                        var,
                        saved: be.bn_saved(c)?,
                    }),
                    input,
                ))
            }
            LayerSpec::Seca | LayerSpec::SecaResidual { .. } => {
                let (c, h, w) = spatial("seca")?;
                let residual = match *spec {
                    LayerSpec::SecaResidual { slot } => {
                        let s = slot_index(slot)?;
                        if slots[s] != Some(input) {
                            return Err(cfg_err(
                                idx,
                                format!(
                                    "SECA_II adds slot {slot}, which holds {:?}, to a {input:?} tensor",
                                    slots[s]
                                ),
                            ));
                        }
                        Some(SecaResidual {
                            slot: s,
                            sum: be.alloc(0)?,
                            dsum: be.alloc(0)?,
                        })
                    }
                    _ => None,
                };
                let n = next(counters, 2);
                let wn = format!("seca{n}.weight");
                let init = fp_init(seed, &wn, SECA_K, SECA_K);
                let weight =
                    arena.trainable(wn, ParamRole::FullPrecision, vec![1, 1, SECA_K], init);
                let bn = format!("seca{n}.bias");
                let init = fp_init(seed, &bn, 1, SECA_K);
                let bias = arena.trainable(bn, ParamRole::FullPrecision, vec![1], init);
                Ok((
                    Layer::Seca(SecaLayer {
                        c,
                        hw: h * w,
                        weight,
                        bias,
                        saved: be.seca_saved()?,
                        residual,
                    }),
                    input,
                ))
            }
            LayerSpec::Flatten => {
                let (c, h, w) = spatial("flatten")?;
                Ok((
                    Layer::Flatten(FlattenLayer { c, hw: h * w }),
                    ActShape::Flat { f: c * h * w },
                ))
            }
            LayerSpec::Save { slot } | LayerSpec::Swap { slot } | LayerSpec::Add { slot } => {
                let s = slot_index(slot)?;
                let (op, out) = match *spec {
                    LayerSpec::Save { .. } => {
                        slots[s] = Some(input);
                        (SlotOp::Save, input)
                    }
                    LayerSpec::Swap { .. } => {
                        let held = slots[s].ok_or_else(|| {
                            cfg_err(idx, format!("swap with slot {slot}, which holds nothing"))
                        })?;
                        slots[s] = Some(input);
                        (SlotOp::Swap, held)
                    }
                    _ => {
                        if slots[s] != Some(input) {
                            return Err(cfg_err(
                                idx,
                                format!(
                                    "add of slot {slot}, which holds {:?}, to a {input:?} tensor",
                                    slots[s]
                                ),
                            ));
                        }
                        (SlotOp::Add, input)
                    }
                };
                Ok((
                    Layer::Slot {
                        op,
                        slot: s,
                        in_elems: input.per_sample(),
                        out_elems: out.per_sample(),
                    },
                    out,
                ))
            }
            LayerSpec::Neuron(kind) => {
                if time_steps == 0 {
                    return Err(cfg_err(idx, "time_steps must be at least 1"));
                }
                // Checked before any tensor is added, so a refused layer leaves no names behind.
                let membn_c = if kind == NeuronKind::MemBn {
                    Some(spatial("Mem-BN neuron")?.0)
                } else {
                    None
                };
                let n = next(counters, 3);
                let tt = time_steps;
                let role = ParamRole::Neuron;
                let mut logits = |name: &str| {
                    arena.trainable(format!("neuron{n}.{name}"), role, vec![tt], vec![0.0; tt])
                };
                let p = (kind != NeuronKind::Parallel).then(|| logits("p"));
                let q = logits("q");
                let membn = match membn_c {
                    Some(c) => {
                        let a = logits("a");
                        let b = logits("b");
                        let bn = ParamRole::BatchNorm;
                        let gamma = arena.trainable(
                            format!("neuron{n}.bn_weight"),
                            bn,
                            vec![tt, c],
                            vec![1.0; tt * c],
                        );
                        let beta = arena.trainable(
                            format!("neuron{n}.bn_bias"),
                            bn,
                            vec![tt, c],
                            vec![0.0; tt * c],
                        );
                        let mean = arena.buffer(
                            format!("neuron{n}.bn_running_mean"),
                            bn,
                            vec![tt, c],
                            vec![0.0; tt * c],
                        );
                        let var = arena.buffer(
                            format!("neuron{n}.bn_running_var"),
                            bn,
                            vec![tt, c],
                            vec![1.0; tt * c],
                        );
                        Some(Box::new(MemBnPart {
                            spans: MemBnSpans {
                                p: p.unwrap_or_default(),
                                q,
                                a,
                                b,
                                gamma,
                                beta,
                            },
                            c,
                            mean,
                            var,
                            saved: be.membn_saved(c)?,
                        }))
                    }
                    None => None,
                };
                Ok((
                    Layer::Neuron(NeuronLayer {
                        kind,
                        p,
                        q,
                        membn,
                        state: be.alloc(0)?,
                        state_prev: be.alloc(0)?,
                    }),
                    input,
                ))
            }
            LayerSpec::AvgPool2 => {
                let (c, h, w) = spatial("avgpool2")?;
                let g = PoolGeom::new(1, h, w).map_err(|e| cfg_err(idx, e.to_string()))?;
                Ok((
                    Layer::Pool(PoolLayer { c, h, w }),
                    ActShape::Spatial {
                        c,
                        h: g.oh(),
                        w: g.ow(),
                    },
                ))
            }
            LayerSpec::MaxPool {
                kernel,
                stride,
                pad,
            } => {
                let (c, h, w) = spatial("maxpool")?;
                let g = MaxPoolGeom::new(1, h, w, kernel, stride, pad)
                    .map_err(|e| cfg_err(idx, e.to_string()))?;
                Ok((
                    Layer::MaxPool(MaxPoolLayer {
                        c,
                        h,
                        w,
                        kernel,
                        stride,
                        pad,
                        saved: be.maxpool_saved()?,
                    }),
                    ActShape::Spatial {
                        c,
                        h: g.oh(),
                        w: g.ow(),
                    },
                ))
            }
            LayerSpec::GlobalAvgPool => {
                let (c, h, w) = spatial("global average pool")?;
                Ok((
                    Layer::Gap(GapLayer { c, hw: h * w }),
                    ActShape::Flat { f: c },
                ))
            }
            LayerSpec::Linear { out_features, bias }
            | LayerSpec::BinaryLinear { out_features, bias } => {
                let d_in = match input {
                    ActShape::Flat { f } => f,
                    ActShape::Spatial { .. } => {
                        return Err(cfg_err(
                            idx,
                            "linear needs flat [B][F] features: add GlobalAvgPool before it",
                        ))
                    }
                };
                if out_features == 0 {
                    return Err(cfg_err(idx, "linear with 0 outputs"));
                }
                let binary = matches!(spec, LayerSpec::BinaryLinear { .. });
                let n = next(counters, 4);
                let shape = vec![out_features, d_in];
                let wn = format!("fc{n}.weight");
                let numel = out_features * d_in;
                let (role, init) = if binary {
                    (ParamRole::BinaryWeight, binary_init(seed, &wn, numel, d_in))
                } else {
                    (ParamRole::FullPrecision, fp_init(seed, &wn, numel, d_in))
                };
                let weight = arena.trainable(wn, role, shape, init);
                let bias = bias.then(|| {
                    let bn = format!("fc{n}.bias");
                    let init = fp_init(seed, &bn, out_features, d_in);
                    arena.trainable(bn, ParamRole::FullPrecision, vec![out_features], init)
                });
                let bin = if binary {
                    Some(Binarized::new(be, out_features, numel)?)
                } else {
                    None
                };
                Ok((
                    Layer::Linear(LinearLayer {
                        d_in,
                        d_out: out_features,
                        weight,
                        bias,
                        bin,
                    }),
                    ActShape::Flat { f: out_features },
                ))
            }
        }
    }

    /// Binarisations this layer has done (0 for non-binary layers).
    pub fn binarizations(&self) -> u64 {
        match self {
            Layer::Conv(ConvLayer { bin: Some(b), .. })
            | Layer::Linear(LinearLayer { bin: Some(b), .. }) => b.count,
            _ => 0,
        }
    }

    /// True for the layers that end the time-invariant stem: those whose output depends on the
    /// time step or carried state (every neuron version), and those that read or write residual
    /// slots (a later block may overwrite a slot, so a reused slot could be stale).
    pub fn ends_stem(&self) -> bool {
        matches!(
            self,
            Layer::Neuron(_)
                | Layer::Slot { .. }
                | Layer::Seca(SecaLayer {
                    residual: Some(_),
                    ..
                })
        )
    }

    /// Sizes the per-batch buffers for a batch of `batch` (`elems` input elements) and zeroes
    /// the neuron state, so that no buffer is (re)allocated during the steps.
    pub fn reset(&mut self, be: &B, batch: usize, elems: usize) -> Result<()> {
        match self {
            Layer::Neuron(l) => {
                if l.kind != NeuronKind::Parallel {
                    be.resize(&mut l.state, elems)?;
                    be.resize(&mut l.state_prev, elems)?;
                }
                if let Some(m) = &mut l.membn {
                    be.size_membn_saved(&mut m.saved, m.c, elems)?;
                }
            }
            Layer::MaxPool(l) => {
                let outputs = l.geom(batch)?.outputs();
                be.size_maxpool_saved(&mut l.saved, outputs)?;
            }
            Layer::Seca(l) => {
                be.size_seca_saved(&mut l.saved, l.c, batch)?;
                if let Some(r) = &mut l.residual {
                    if be.len(&r.sum) != elems {
                        be.resize(&mut r.sum, elems)?;
                        be.resize(&mut r.dsum, elems)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Bytes of internal buffers (not parameters, not the net's activations).
    pub fn buffer_bytes(&self, be: &B) -> usize {
        match self {
            Layer::Conv(l) => l.bin.as_ref().map_or(0, |b| b.bytes(be)),
            Layer::Linear(l) => l.bin.as_ref().map_or(0, |b| b.bytes(be)),
            Layer::Bn(l) => be.bn_saved_bytes(&l.saved),
            Layer::Seca(l) => {
                be.seca_saved_bytes(&l.saved)
                    + l.residual
                        .as_ref()
                        .map_or(0, |r| be.bytes(&r.sum) + be.bytes(&r.dsum))
            }
            Layer::Neuron(l) => {
                be.bytes(&l.state)
                    + be.bytes(&l.state_prev)
                    + l.membn
                        .as_ref()
                        .map_or(0, |m| be.membn_saved_bytes(&m.saved))
            }
            Layer::MaxPool(l) => be.maxpool_saved_bytes(&l.saved),
            Layer::Pool(_) | Layer::Gap(_) | Layer::Flatten(_) | Layer::Slot { .. } => 0,
        }
    }

    /// Bytes this layer keeps for backward beyond its input/output activations.
    pub fn saved_bytes(&self, be: &B) -> usize {
        match self {
            Layer::Conv(ConvLayer { bin: Some(b), .. })
            | Layer::Linear(LinearLayer { bin: Some(b), .. }) => 4 * be.len(&b.wb),
            Layer::Conv(_) | Layer::Linear(_) => 0,
            Layer::Bn(l) => be.bn_saved_bytes(&l.saved),
            Layer::Seca(l) => {
                be.seca_saved_bytes(&l.saved)
                    + l.residual.as_ref().map_or(0, |r| 4 * be.len(&r.sum))
            }
            Layer::Neuron(l) => {
                4 * be.len(&l.state_prev)
                    + l.membn
                        .as_ref()
                        .map_or(0, |m| be.membn_saved_bytes(&m.saved))
            }
            Layer::MaxPool(l) => be.maxpool_saved_bytes(&l.saved),
            Layer::Pool(_) | Layer::Gap(_) | Layer::Flatten(_) | Layer::Slot { .. } => 0,
        }
    }

    /// The part of a forward that a provably unchanged stem step still has to do: BN in train
    /// mode advances its running statistics once per executed step. A max pool has nothing to
    /// redo: its argmax from the step that ran is that of the same input.
    pub fn reuse(&mut self, f: &mut Fwd<'_, B>) -> Result<()> {
        match self {
            Layer::Bn(l) if f.train => {
                f.be.batchnorm_update_running(&l.saved, (&mut *f.stats, l.mean, l.var))
            }
            _ => Ok(()),
        }
    }

    pub fn forward(&mut self, f: &mut Fwd<'_, B>, x: &B::Buf, y: &mut B::Buf) -> Result<()> {
        let batch = f.batch;
        let be = f.be;
        match self {
            Layer::Conv(l) => {
                let g = l.geom(batch)?;
                match &mut l.bin {
                    Some(bin) => {
                        bin.refresh(f, l.c_out, l.weight)?;
                        let w = (&bin.wb, Span::new(0, be.len(&bin.wb)));
                        be.conv2d_forward(&g, x, w, None, y, f.col)
                    }
                    None => {
                        let bias = l.bias.map(|s| (f.values, s));
                        be.conv2d_forward(&g, x, (f.values, l.weight), bias, y, f.col)
                    }
                }
            }
            Layer::Bn(l) => be.batchnorm_forward(
                x,
                y,
                (f.values, l.gamma, l.beta),
                (&mut *f.stats, l.mean, l.var),
                f.train,
                &mut l.saved,
            ),
            Layer::Seca(l) => {
                let g = SecaGeom::new(l.c, batch, l.hw)?;
                match &mut l.residual {
                    Some(r) => {
                        let n = be.len(x);
                        be.residual_add_forward(x, &f.slots[r.slot], &mut r.sum, n)?;
                        be.seca_forward(&g, &r.sum, (f.values, l.weight, l.bias), y, &mut l.saved)
                    }
                    None => be.seca_forward(&g, x, (f.values, l.weight, l.bias), y, &mut l.saved),
                }
            }
            Layer::Flatten(l) => be.flatten_forward(l.c, batch, l.hw, x, y),
            Layer::Slot {
                op,
                slot,
                in_elems,
                out_elems,
            } => {
                let (n_in, n_out) = (batch * *in_elems, batch * *out_elems);
                let slot = &mut f.slots[*slot];
                match op {
                    SlotOp::Save => {
                        be.copy(x, y, n_in)?;
                        be.copy(x, slot, n_in)
                    }
                    SlotOp::Swap => {
                        be.copy(slot, y, n_out)?;
                        be.copy(x, slot, n_in)
                    }
                    SlotOp::Add => be.residual_add_forward(x, slot, y, n_in),
                }
            }
            Layer::Neuron(l) => {
                match (l.kind, l.p, &mut l.membn) {
                    (NeuronKind::Parallel, _, _) => {
                        return be.parallel_neuron_forward(f.t, (f.values, l.q), x, y)
                    }
                    (NeuronKind::EmPf, Some(p), _) => be.neuron_forward(
                        f.t,
                        (f.values, p, l.q),
                        x,
                        &l.state,
                        y,
                        &mut l.state_prev,
                    )?,
                    (NeuronKind::MemBn, Some(_), Some(m)) => be.membn_neuron_forward(
                        f.t,
                        (f.values, &m.spans),
                        (&mut *f.stats, m.mean, m.var),
                        f.train,
                        x,
                        &l.state,
                        y,
                        &mut l.state_prev,
                        &mut m.saved,
                    )?,
                    _ => return Err(cfg_err(0, "neuron layer is missing its parameters")),
                }
                std::mem::swap(&mut l.state, &mut l.state_prev);
                Ok(())
            }
            Layer::Pool(l) => be.avgpool2_forward(l.c * batch, l.h, l.w, x, y),
            Layer::MaxPool(l) => {
                let g = l.geom(batch)?;
                be.maxpool_forward(&g, x, y, &mut l.saved)
            }
            Layer::Gap(l) => be.gap_forward(l.c, batch, l.hw, x, y),
            Layer::Linear(l) => {
                let g = LinearGeom::new(batch, l.d_in, l.d_out)?;
                let bias = l.bias.map(|s| (f.values, s));
                match &mut l.bin {
                    Some(bin) => {
                        bin.refresh(f, l.d_out, l.weight)?;
                        let w = (&bin.wb, Span::new(0, be.len(&bin.wb)));
                        be.linear_forward(&g, x, w, bias, y)
                    }
                    None => be.linear_forward(&g, x, (f.values, l.weight), bias, y),
                }
            }
        }
    }

    /// Backward of the last forward: `x`/`y` its input/output, `dy` the output gradient;
    /// accumulates parameter gradients and (if given) `dx`.
    pub fn backward(
        &mut self,
        b: &mut Bwd<'_, B>,
        x: &B::Buf,
        y: &B::Buf,
        dy: &B::Buf,
        dx: Option<&mut B::Buf>,
    ) -> Result<()> {
        let batch = b.batch;
        let be = b.be;
        match self {
            Layer::Conv(l) => {
                let g = l.geom(batch)?;
                match &mut l.bin {
                    Some(bin) => {
                        let n = be.len(&bin.dwb);
                        be.fill(&mut bin.dwb, Span::new(0, n), 0.0)?;
                        let wb = (&bin.wb, Span::new(0, be.len(&bin.wb)));
                        be.conv2d_backward(
                            &g,
                            x,
                            wb,
                            dy,
                            (&mut bin.dwb, Span::new(0, n)),
                            None,
                            dx,
                            b.col,
                        )?;
                        be.binarize_backward(
                            (b.values, l.weight),
                            &bin.dwb,
                            (&mut *b.grads, l.weight),
                        )
                    }
                    None => be.conv2d_backward(
                        &g,
                        x,
                        (b.values, l.weight),
                        dy,
                        (&mut *b.grads, l.weight),
                        l.bias,
                        dx,
                        b.col,
                    ),
                }
            }
            Layer::Bn(l) => be.batchnorm_backward(
                x,
                (b.values, l.gamma),
                &l.saved,
                dy,
                (&mut *b.grads, l.gamma, l.beta),
                dx,
            ),
            Layer::Seca(l) => {
                let g = SecaGeom::new(l.c, batch, l.hw)?;
                match &mut l.residual {
                    Some(r) => {
                        // SECA saw x + slot: its input gradient goes to both.
                        let n = be.len(&r.sum);
                        be.fill(&mut r.dsum, Span::new(0, n), 0.0)?;
                        be.seca_backward(
                            &g,
                            &r.sum,
                            (b.values, l.weight),
                            &l.saved,
                            dy,
                            (&mut *b.grads, l.weight, l.bias),
                            Some(&mut r.dsum),
                        )?;
                        if let Some(dx) = dx {
                            be.accumulate(dx, &r.dsum, n)?;
                        }
                        be.accumulate(&mut b.slot_grads[r.slot], &r.dsum, n)
                    }
                    None => be.seca_backward(
                        &g,
                        x,
                        (b.values, l.weight),
                        &l.saved,
                        dy,
                        (&mut *b.grads, l.weight, l.bias),
                        dx,
                    ),
                }
            }
            Layer::Flatten(l) => match dx {
                Some(dx) => be.flatten_backward(l.c, batch, l.hw, dy, dx),
                None => Ok(()),
            },
            Layer::Slot {
                op,
                slot,
                in_elems,
                out_elems,
            } => {
                let (n_in, n_out) = (batch * *in_elems, batch * *out_elems);
                let sg = &mut b.slot_grads[*slot];
                match op {
                    // y = x + slot: both get dy.
                    SlotOp::Add => {
                        if let Some(dx) = dx {
                            be.accumulate(dx, dy, n_in)?;
                        }
                        be.accumulate(sg, dy, n_in)
                    }
                    // y = x and slot = x: x gets dy plus what the slot's readers gave back; the
                    // slot's content before this save is another tensor, whose gradient starts
                    // at zero.
                    SlotOp::Save => {
                        if let Some(dx) = dx {
                            be.accumulate(dx, dy, n_in)?;
                            be.accumulate(dx, sg, n_in)?;
                        }
                        let len = be.len(sg);
                        be.fill(sg, Span::new(0, len), 0.0)
                    }
                    // y = old slot, slot = x: x gets the slot's gradient, the old content dy.
                    SlotOp::Swap => {
                        if let Some(dx) = dx {
                            be.accumulate(dx, sg, n_in)?;
                        }
                        let len = be.len(sg);
                        be.fill(sg, Span::new(0, len), 0.0)?;
                        be.copy(dy, sg, n_out)
                    }
                }
            }
            Layer::Neuron(l) => match (l.kind, l.p, &l.membn) {
                (NeuronKind::Parallel, _, _) => be.parallel_neuron_backward(
                    b.t,
                    (b.values, l.q),
                    y,
                    dy,
                    (&mut *b.grads, l.q),
                    dx,
                ),
                (NeuronKind::EmPf, Some(p), _) => be.neuron_backward(
                    b.t,
                    (b.values, p, l.q),
                    y,
                    &l.state_prev,
                    dy,
                    (&mut *b.grads, p, l.q),
                    dx,
                ),
                (NeuronKind::MemBn, Some(_), Some(m)) => be.membn_neuron_backward(
                    b.t,
                    (b.values, &m.spans),
                    &m.saved,
                    y,
                    &l.state_prev,
                    dy,
                    &mut *b.grads,
                    dx,
                ),
                _ => Err(cfg_err(0, "neuron layer is missing its parameters")),
            },
            Layer::Pool(l) => match dx {
                Some(dx) => be.avgpool2_backward(l.c * batch, l.h, l.w, dy, dx),
                None => Ok(()),
            },
            Layer::MaxPool(l) => match dx {
                Some(dx) => be.maxpool_backward(&l.geom(batch)?, &l.saved, dy, dx),
                None => Ok(()),
            },
            Layer::Gap(l) => match dx {
                Some(dx) => be.gap_backward(l.c, batch, l.hw, dy, dx),
                None => Ok(()),
            },
            Layer::Linear(l) => {
                let g = LinearGeom::new(batch, l.d_in, l.d_out)?;
                match &mut l.bin {
                    Some(bin) => {
                        let n = be.len(&bin.dwb);
                        be.fill(&mut bin.dwb, Span::new(0, n), 0.0)?;
                        // The ±1 weights' gradient goes to the scratch, then through the
                        // STE; the FP bias's straight to the arena.
                        be.linear_backward(
                            &g,
                            x,
                            (&bin.wb, Span::new(0, n)),
                            dy,
                            (&mut bin.dwb, Span::new(0, n)),
                            None,
                            dx,
                        )?;
                        if let Some(bs) = l.bias {
                            be.linear_bias_backward(&g, dy, (&mut *b.grads, bs))?;
                        }
                        be.binarize_backward(
                            (b.values, l.weight),
                            &bin.dwb,
                            (&mut *b.grads, l.weight),
                        )
                    }
                    None => be.linear_backward(
                        &g,
                        x,
                        (b.values, l.weight),
                        dy,
                        (&mut *b.grads, l.weight),
                        l.bias,
                        dx,
                    ),
                }
            }
        }
    }
}
