//! Inference drivers: the step-major ([`Mode::Sequential`]) and layer-major ([`Mode::Parallel`])
//! walks over the layers, shared by the float path (the semantic reference, [`float`]) and the
//! integer path ([`fixed`]). A path only supplies kernels; the walk, the arena split, residual
//! slots and the sum over `T` are here once.

pub(crate) mod conv;
pub mod fixed;
pub mod float;
pub(crate) mod maxpool;
pub(crate) mod spike_conv;

use crate::format::{
    BinaryConv2d, BinaryLinear, Conv2d, FixedAdd, Layer, Linear, MaxPool, Neuron, NeuronMode, Seca,
};
use crate::model::{Mode, Model, Shape};
use crate::{Error, MAX_SLOTS};

/// A layer's input: a wide tensor (`E`) or spikes (`S`). The integer path stores spikes in
/// 8 bits; the float path stores everything as `f32` (`S = E`) and only ever passes `E`.
pub(crate) enum In<'x, S, E> {
    /// Neuron outputs.
    S(&'x [S]),
    /// Everything else: currents, pooled sums, the input.
    E(&'x [E]),
}

impl<'x, T> In<'x, T, T> {
    /// The elements, when both kinds have one type (float path).
    #[inline(always)]
    pub fn flat(self) -> &'x [T] {
        match self {
            In::S(v) | In::E(v) => v,
        }
    }
}

/// Layer kernels of one numeric path. Elements live in the caller's `u32` arena, viewed as `E`
/// or, for spikes, as `S`.
pub(crate) trait Kernels {
    /// Wide activation element (f32 or i32).
    type E: bytemuck::Pod + Default + PartialOrd;
    /// Spike element: what a neuron writes (f32, or u8 on the integer path).
    type S: bytemuck::Pod + Default + PartialOrd;
    /// Spikes are stored narrower than `E` (`S` ≠ `E`); then in-place layers (`Add`, `Seca`)
    /// widen a spike tensor first. When false, `S` and `E` must be the same type.
    const NARROW: bool;
    /// Output accumulator element (f32 or i32).
    type O: Copy + Default;
    fn load_input(&self, dst: &mut [Self::E]);
    fn conv2d(
        &self,
        l: &Conv2d<&[u8]>,
        s: Shape,
        x: In<'_, Self::S, Self::E>,
        y: &mut [Self::E],
        scratch: &mut [u32],
    ) -> Result<(), Error>;
    fn bconv2d(
        &self,
        l: &BinaryConv2d<&[u8]>,
        s: Shape,
        x: In<'_, Self::S, Self::E>,
        y: &mut [Self::E],
        scratch: &mut [u32],
    ) -> Result<(), Error>;
    fn linear(
        &self,
        l: &Linear<&[u8]>,
        x: In<'_, Self::S, Self::E>,
        y: &mut [Self::E],
    ) -> Result<(), Error>;
    fn blinear(
        &self,
        l: &BinaryLinear<&[u8]>,
        x: In<'_, Self::S, Self::E>,
        y: &mut [Self::E],
    ) -> Result<(), Error>;
    /// One step `t` of a neuron; `state` is `Some` for sequential neurons.
    fn neuron(
        &self,
        n: &Neuron<&[u8]>,
        t: usize,
        s: Shape,
        x: In<'_, Self::S, Self::E>,
        y: &mut [Self::S],
        state: Option<&mut [Self::E]>,
    ) -> Result<(), Error>;
    fn avgpool2(&self, s: Shape, x: In<'_, Self::S, Self::E>, y: &mut [Self::E]);
    fn gap(&self, s: Shape, x: In<'_, Self::S, Self::E>, y: &mut [Self::E]);
    fn add(
        &self,
        fixed: Option<&FixedAdd>,
        x: &mut [Self::E],
        saved: In<'_, Self::S, Self::E>,
    ) -> Result<(), Error>;
    fn seca(
        &self,
        l: &Seca<&[u8]>,
        s: Shape,
        x: &mut [Self::E],
        scratch: &mut [u32],
    ) -> Result<(), Error>;
    /// Spikes to wide elements (only called when [`Kernels::NARROW`]).
    fn widen(&self, x: &[Self::S], y: &mut [Self::E]);
    fn accumulate(&self, y: In<'_, Self::S, Self::E>, out: &mut [Self::O]);
}

/// Output shape of a layer on a validated model (the checks ran at decode).
pub(crate) fn out_shape(layer: &Layer<&[u8]>, s: Shape, slot: Option<Shape>) -> Shape {
    match layer {
        Layer::Conv2d(c) => {
            conv::ConvGeom::new(s, c.kernel, c.stride, c.padding).out_shape(c.out_channels)
        }
        Layer::BinaryConv2d(c) => {
            conv::ConvGeom::new(s, c.kernel, c.stride, c.padding).out_shape(c.out_channels)
        }
        Layer::Linear(l) => Shape {
            c: l.out_features,
            h: 1,
            w: 1,
        },
        Layer::BinaryLinear(l) => Shape {
            c: l.out_features,
            h: 1,
            w: 1,
        },
        Layer::AvgPool2 => Shape {
            c: s.c,
            h: s.h / 2,
            w: s.w / 2,
        },
        Layer::MaxPool(p) => Shape {
            c: s.c,
            ..conv::ConvGeom::new(s, p.kernel, p.stride, p.padding).out_shape(0)
        },
        Layer::GlobalAvgPool => Shape { c: s.c, h: 1, w: 1 },
        Layer::Flatten => Shape {
            c: s.numel() as u32,
            h: 1,
            w: 1,
        },
        Layer::Swap { .. } => slot.unwrap_or(s),
        Layer::Neuron(_) | Layer::Save { .. } | Layer::Add { .. } | Layer::Seca(_) => s,
    }
}

impl conv::ConvGeom {
    fn out_shape(&self, out_channels: u16) -> Shape {
        Shape {
            c: out_channels as u32,
            h: self.oh as u32,
            w: self.ow as u32,
        }
    }
}

/// Observer of every layer's output (calibration); `()` observes nothing.
pub(crate) type Observer<'o, E> = Option<&'o mut dyn FnMut(usize, &[E])>;

/// Called once each time a layer finishes (its index), for per-layer timing on a device.
pub(crate) type LayerHook<'h> = Option<&'h mut dyn FnMut(usize)>;

struct Regions<'r> {
    a: &'r mut [u32],
    b: &'r mut [u32],
    slots: [&'r mut [u32]; MAX_SLOTS],
    state: &'r mut [u32],
    scratch: &'r mut [u32],
    /// `a` is the second buffer (the buffers differ in size; decode sized them for a walk that
    /// starts in the first).
    flipped: bool,
}

impl Regions<'_> {
    fn swap_ab(&mut self) {
        core::mem::swap(&mut self.a, &mut self.b);
        self.flipped = !self.flipped;
    }
    /// Back to the first buffer, where every walk starts.
    fn restart(&mut self) {
        if self.flipped {
            self.swap_ab();
        }
    }
}

fn split<'r>(
    model: &Model<'_>,
    mode: Mode,
    narrow: bool,
    arena: &'r mut [u32],
) -> Result<Regions<'r>, Error> {
    let lay = model.layout(mode, narrow);
    if arena.len() < lay.total {
        return Err(Error::InferArenaTooSmall {
            needed: lay.total as u32,
            given: arena.len().min(u32::MAX as usize) as u32,
        });
    }
    let (a, rest) = arena.split_at_mut(lay.act_len[0]);
    let (b, rest) = rest.split_at_mut(lay.act_len[1]);
    let mut rest = rest;
    let mut slots: [&'r mut [u32]; MAX_SLOTS] = Default::default();
    for (s, slot) in slots.iter_mut().enumerate() {
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(lay.slot_len[s]);
        *slot = head;
        rest = tail;
    }
    let state_len = lay.scratch_off - lay.state_off;
    let (state, scratch) = rest.split_at_mut(state_len);
    Ok(Regions {
        a,
        b,
        slots,
        state,
        scratch,
        flipped: false,
    })
}

/// How the running tensor is stored: wide (`E`) or as spikes (`S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Wide,
    Spike,
}

/// Words that `n` elements of kind `ty` take.
fn words<K: Kernels>(ty: Ty, n: usize) -> usize {
    let size = match ty {
        Ty::Wide => core::mem::size_of::<K::E>(),
        Ty::Spike => core::mem::size_of::<K::S>(),
    };
    (n * size).div_ceil(4)
}

/// Elements `r` of a buffer holding a tensor of kind `ty`.
#[inline(always)]
fn view<K: Kernels>(w: &[u32], ty: Ty, r: core::ops::Range<usize>) -> In<'_, K::S, K::E> {
    match ty {
        Ty::Wide => In::E(&bytemuck::cast_slice(w)[r]),
        Ty::Spike => In::S(&bytemuck::cast_slice(w)[r]),
    }
}

/// Elements `r` of a buffer as wide elements, for writing.
#[inline(always)]
fn wide<E: bytemuck::Pod>(w: &mut [u32], r: core::ops::Range<usize>) -> &mut [E] {
    &mut bytemuck::cast_slice_mut(w)[r]
}

/// What a neuron writes: spikes, stored narrow on the integer path.
fn spike_ty<K: Kernels>() -> Ty {
    if K::NARROW {
        Ty::Spike
    } else {
        Ty::Wide
    }
}

/// Max pool of elements `x` of buffer `a` (a tensor of kind `ty`) into elements `y` of `b`, in the
/// same kind: spikes pool to spikes, wide tensors to wide ones.
fn max_pool_buf<K: Kernels>(
    p: &MaxPool,
    s: Shape,
    a: &[u32],
    b: &mut [u32],
    ty: Ty,
    x: core::ops::Range<usize>,
    y: core::ops::Range<usize>,
) {
    let g = conv::ConvGeom::new(s, p.kernel, p.stride, p.padding);
    match ty {
        Ty::Wide => maxpool::max_pool::<K::E>(
            &g,
            &bytemuck::cast_slice(a)[x],
            &mut bytemuck::cast_slice_mut(b)[y],
        ),
        Ty::Spike => maxpool::max_pool::<K::S>(
            &g,
            &bytemuck::cast_slice(a)[x],
            &mut bytemuck::cast_slice_mut(b)[y],
        ),
    }
}

/// In-place layers (`Add`, `Seca`) work on wide tensors: widens `n` spikes from `r.a` into
/// `r.b` and makes that the running tensor. Decode sizes the buffers for this (`Walk`).
fn widen_in_place<K: Kernels>(k: &K, r: &mut Regions<'_>, ty: &mut Ty, n: usize) {
    if K::NARROW && *ty == Ty::Spike {
        let x: &[K::S] = &bytemuck::cast_slice(r.a)[..n];
        k.widen(x, wide(r.b, 0..n));
        r.swap_ab();
    }
    *ty = Ty::Wide;
}

/// Runs a model: `T` steps, output = Σ over steps of the last layer's output.
pub(crate) fn run<K: Kernels>(
    k: &K,
    model: &Model<'_>,
    mode: Mode,
    arena: &mut [u32],
    out: &mut [K::O],
    mut obs: Observer<'_, K::E>,
    mut hook: LayerHook<'_>,
) -> Result<(), Error> {
    if out.len() != model.classes() {
        return Err(Error::InferOutputLength);
    }
    let mut r = split(model, mode, K::NARROW, arena)?;
    out.fill(K::O::default());
    r.state.fill(0);
    let t_steps = model.time_steps();
    match mode {
        Mode::Sequential => {
            for t in 0..t_steps {
                let (n, ty) = run_step(k, model, t, &mut r, &mut obs, &mut hook)?;
                k.accumulate(view::<K>(r.a, ty, 0..n), out);
            }
        }
        Mode::Parallel => {
            let (n, steps, ty) = run_layer_major(k, model, &mut r, &mut obs, &mut hook)?;
            for t in 0..t_steps {
                let s = t.min(steps - 1);
                k.accumulate(view::<K>(r.a, ty, s * n..(s + 1) * n), out);
            }
        }
    }
    Ok(())
}

/// One time step through every layer (step-major). Returns the output length and kind, left
/// in `r.a`.
fn run_step<K: Kernels>(
    k: &K,
    model: &Model<'_>,
    t: usize,
    r: &mut Regions<'_>,
    obs: &mut Observer<'_, K::E>,
    hook: &mut LayerHook<'_>,
) -> Result<(usize, Ty), Error> {
    r.restart();
    let mut shape = model.input_shape();
    k.load_input(wide(r.a, 0..shape.numel()));
    let mut ty = Ty::Wide;
    let mut slot_shape = [shape; MAX_SLOTS];
    let mut slot_ty = [Ty::Wide; MAX_SLOTS];
    let mut state_at = 0;
    for (li, layer) in model.layers().enumerate() {
        let layer = layer?;
        let n = shape.numel();
        let slot_of = |s: u8| s as usize;
        let new = out_shape(
            &layer,
            shape,
            match layer {
                Layer::Swap { slot } => Some(slot_shape[slot_of(slot)]),
                _ => None,
            },
        );
        let on = new.numel();
        if matches!(layer, Layer::Add { .. } | Layer::Seca(_)) {
            widen_in_place(k, r, &mut ty, n);
        }
        let mut swap_ab = true;
        let mut out_ty = Ty::Wide;
        match &layer {
            Layer::Conv2d(c) => k.conv2d(
                c,
                shape,
                view::<K>(r.a, ty, 0..n),
                wide(r.b, 0..on),
                r.scratch,
            )?,
            Layer::BinaryConv2d(c) => k.bconv2d(
                c,
                shape,
                view::<K>(r.a, ty, 0..n),
                wide(r.b, 0..on),
                r.scratch,
            )?,
            Layer::Linear(l) => k.linear(l, view::<K>(r.a, ty, 0..n), wide(r.b, 0..on))?,
            Layer::BinaryLinear(l) => k.blinear(l, view::<K>(r.a, ty, 0..n), wide(r.b, 0..on))?,
            Layer::Neuron(nr) => {
                let state = match nr.mode {
                    NeuronMode::Sequential => {
                        let s = wide(r.state, state_at..state_at + n);
                        state_at += n;
                        Some(s)
                    }
                    NeuronMode::Parallel => None,
                };
                let y: &mut [K::S] = &mut bytemuck::cast_slice_mut(r.b)[..n];
                k.neuron(nr, t, shape, view::<K>(r.a, ty, 0..n), y, state)?;
                out_ty = spike_ty::<K>();
            }
            Layer::AvgPool2 => k.avgpool2(shape, view::<K>(r.a, ty, 0..n), wide(r.b, 0..on)),
            Layer::MaxPool(p) => {
                max_pool_buf::<K>(p, shape, r.a, r.b, ty, 0..n, 0..on);
                out_ty = ty;
            }
            Layer::GlobalAvgPool => k.gap(shape, view::<K>(r.a, ty, 0..n), wide(r.b, 0..on)),
            Layer::Flatten => {
                swap_ab = false;
                out_ty = ty;
            }
            Layer::Save { slot } => {
                let s = slot_of(*slot);
                let w = words::<K>(ty, n);
                r.slots[s][..w].copy_from_slice(&r.a[..w]);
                slot_shape[s] = shape;
                slot_ty[s] = ty;
                swap_ab = false;
                out_ty = ty;
            }
            Layer::Swap { slot } => {
                let s = slot_of(*slot);
                let (w, ws) = (words::<K>(ty, n), words::<K>(slot_ty[s], on));
                r.b[..w].copy_from_slice(&r.a[..w]);
                r.a[..ws].copy_from_slice(&r.slots[s][..ws]);
                r.slots[s][..w].copy_from_slice(&r.b[..w]);
                slot_shape[s] = shape;
                out_ty = slot_ty[s];
                slot_ty[s] = ty;
                swap_ab = false;
            }
            Layer::Add { slot, fixed } => {
                let s = slot_of(*slot);
                let saved = view::<K>(r.slots[s], slot_ty[s], 0..n);
                k.add(fixed.as_ref(), wide(r.a, 0..n), saved)?;
                swap_ab = false;
            }
            Layer::Seca(sc) => {
                if let Some(s) = sc.add_slot {
                    let s = slot_of(s);
                    let fa = sc.fixed.as_ref().and_then(|f| f.add.as_ref());
                    let saved = view::<K>(r.slots[s], slot_ty[s], 0..n);
                    k.add(fa, wide(r.a, 0..n), saved)?;
                    // Calibration needs the sum's range, which the attention then shrinks.
                    if let Some(f) = obs.as_mut() {
                        f(li, wide(r.a, 0..n));
                    }
                }
                k.seca(sc, shape, wide(r.a, 0..n), r.scratch)?;
                swap_ab = false;
            }
        }
        if swap_ab {
            r.swap_ab();
        }
        ty = out_ty;
        shape = new;
        // Observers run on the float path only, where every tensor is wide.
        if let (Some(f), false) = (obs.as_mut(), K::NARROW) {
            f(li, wide(r.a, 0..on));
        }
        if let Some(h) = hook.as_mut() {
            h(li);
        }
    }
    Ok((shape.numel(), ty))
}

/// All steps through each layer in turn (layer-major). The running tensor holds `steps` copies
/// of `n` elements: 1 while it is time-invariant (before the first neuron), `T` after.
/// Returns `(n, steps, kind)` of the output, left in `r.a`.
fn run_layer_major<K: Kernels>(
    k: &K,
    model: &Model<'_>,
    r: &mut Regions<'_>,
    obs: &mut Observer<'_, K::E>,
    hook: &mut LayerHook<'_>,
) -> Result<(usize, usize, Ty), Error> {
    let t_steps = model.time_steps();
    let mut shape = model.input_shape();
    k.load_input(wide(r.a, 0..shape.numel()));
    let mut ty = Ty::Wide;
    let mut steps = 1usize;
    let mut slot_meta = [(shape, 1usize, Ty::Wide); MAX_SLOTS];
    for (li, layer) in model.layers().enumerate() {
        let layer = layer?;
        let n = shape.numel();
        let new = out_shape(
            &layer,
            shape,
            match layer {
                Layer::Swap { slot } => Some(slot_meta[slot as usize].0),
                _ => None,
            },
        );
        let on = new.numel();
        if matches!(layer, Layer::Add { .. } | Layer::Seca(_)) {
            widen_in_place(k, r, &mut ty, steps * n);
        }
        let mut swap_ab = true;
        let mut out_ty = Ty::Wide;
        // Per-copy layers: apply the same kernel to every copy.
        macro_rules! each_copy {
            (|$x:ident, $y:ident| $body:expr) => {
                for s in 0..steps {
                    let $x = view::<K>(r.a, ty, s * n..(s + 1) * n);
                    let $y = wide(r.b, s * on..(s + 1) * on);
                    $body?;
                }
            };
        }
        match &layer {
            Layer::Conv2d(c) => each_copy!(|x, y| k.conv2d(c, shape, x, y, r.scratch)),
            Layer::BinaryConv2d(c) => each_copy!(|x, y| k.bconv2d(c, shape, x, y, r.scratch)),
            Layer::Linear(l) => each_copy!(|x, y| k.linear(l, x, y)),
            Layer::BinaryLinear(l) => each_copy!(|x, y| k.blinear(l, x, y)),
            Layer::AvgPool2 => each_copy!(|x, y| Ok::<(), Error>(k.avgpool2(shape, x, y))),
            Layer::GlobalAvgPool => each_copy!(|x, y| Ok::<(), Error>(k.gap(shape, x, y))),
            Layer::MaxPool(p) => {
                for s in 0..steps {
                    let (x, y) = (s * n..(s + 1) * n, s * on..(s + 1) * on);
                    max_pool_buf::<K>(p, shape, r.a, r.b, ty, x, y);
                }
                out_ty = ty;
            }
            Layer::Neuron(nr) => {
                let seq = nr.mode == NeuronMode::Sequential;
                if seq {
                    r.state[..words::<K>(Ty::Wide, n)].fill(0);
                }
                for t in 0..t_steps {
                    let s = t.min(steps - 1);
                    let x = view::<K>(r.a, ty, s * n..(s + 1) * n);
                    let y: &mut [K::S] = &mut bytemuck::cast_slice_mut(r.b)[t * n..(t + 1) * n];
                    let st = if seq { Some(wide(r.state, 0..n)) } else { None };
                    k.neuron(nr, t, shape, x, y, st)?;
                }
                steps = t_steps;
                out_ty = spike_ty::<K>();
            }
            Layer::Flatten => {
                swap_ab = false;
                out_ty = ty;
            }
            Layer::Save { slot } => {
                let s = *slot as usize;
                let w = words::<K>(ty, steps * n);
                r.slots[s][..w].copy_from_slice(&r.a[..w]);
                slot_meta[s] = (shape, steps, ty);
                swap_ab = false;
                out_ty = ty;
            }
            Layer::Swap { slot } => {
                let s = *slot as usize;
                let (_, ssteps, sty) = slot_meta[s];
                let (w, ws) = (words::<K>(ty, steps * n), words::<K>(sty, ssteps * on));
                r.b[..w].copy_from_slice(&r.a[..w]);
                r.a[..ws].copy_from_slice(&r.slots[s][..ws]);
                r.slots[s][..w].copy_from_slice(&r.b[..w]);
                slot_meta[s] = (shape, steps, ty);
                steps = ssteps;
                out_ty = sty;
                swap_ab = false;
            }
            Layer::Add { slot, fixed } => {
                let (_, ss, sty) = slot_meta[*slot as usize];
                steps = add_copies(k, fixed.as_ref(), r, *slot as usize, n, steps, ss, sty)?;
                swap_ab = false;
            }
            Layer::Seca(sc) => {
                if let Some(slot) = sc.add_slot {
                    let fa = sc.fixed.as_ref().and_then(|f| f.add.as_ref());
                    let (_, ss, sty) = slot_meta[slot as usize];
                    steps = add_copies(k, fa, r, slot as usize, n, steps, ss, sty)?;
                    if let Some(f) = obs.as_mut() {
                        for s in 0..steps {
                            f(li, wide(r.a, s * n..(s + 1) * n));
                        }
                    }
                }
                for s in 0..steps {
                    k.seca(sc, shape, wide(r.a, s * n..(s + 1) * n), r.scratch)?;
                }
                swap_ab = false;
            }
        }
        if swap_ab {
            r.swap_ab();
        }
        ty = out_ty;
        shape = new;
        if let (Some(f), false) = (obs.as_mut(), K::NARROW) {
            for s in 0..steps {
                f(li, wide(r.a, s * on..(s + 1) * on));
            }
        }
        if let Some(h) = hook.as_mut() {
            h(li);
        }
    }
    Ok((shape.numel(), steps, ty))
}

/// `a += slot` over copies; a time-invariant side is broadcast. Returns the new copy count.
#[allow(clippy::too_many_arguments)]
fn add_copies<K: Kernels>(
    k: &K,
    fixed: Option<&FixedAdd>,
    r: &mut Regions<'_>,
    slot: usize,
    n: usize,
    steps: usize,
    slot_steps: usize,
    slot_ty: Ty,
) -> Result<usize, Error> {
    let mut steps = steps;
    if slot_steps > steps {
        // steps == 1 here: broadcast the single copy.
        let a: &mut [K::E] = bytemuck::cast_slice_mut(r.a);
        for s in 1..slot_steps {
            a.copy_within(0..n, s * n);
        }
        steps = slot_steps;
    }
    for s in 0..steps {
        let ss = s.min(slot_steps - 1);
        k.add(
            fixed,
            wide(r.a, s * n..(s + 1) * n),
            view::<K>(r.slots[slot], slot_ty, ss * n..(ss + 1) * n),
        )?;
    }
    Ok(steps)
}

/// `clamp(round(x / input_scale), −127, 127)`, rounding half away from zero; NaN → 0.
pub(crate) fn quantize_one(x: f32, input_scale: f32) -> i8 {
    let v = x / input_scale;
    let r = if v >= 0.0 { v + 0.5 } else { v - 0.5 };
    if r.is_nan() {
        0
    } else {
        r.clamp(-127.0, 127.0) as i8
    }
}

impl Model<'_> {
    /// Float-path inference of one input (`C·H·W` f32, the same at every step): writes the sum
    /// over `T` of the last layer's outputs (logits) to `out` (`classes` values).
    ///
    /// `arena` must hold at least [`Model::arena_words_for`]`(mode)` words.
    pub fn infer_float(
        &self,
        input: &[f32],
        mode: Mode,
        arena: &mut [u32],
        out: &mut [f32],
    ) -> Result<(), Error> {
        if input.len() != self.input_shape().numel() {
            return Err(Error::InferInputLength);
        }
        run(
            &float::FloatKernels { input },
            self,
            mode,
            arena,
            out,
            None,
            None,
        )
    }

    /// [`Model::infer_float`] that calls `after_layer(i)` each time layer `i` finishes: once
    /// per layer and step in [`Mode::Sequential`], once per layer in [`Mode::Parallel`]. Same
    /// outputs; for per-layer timing on a device (`cargo xtask mcu-bench`).
    pub fn infer_float_hooked(
        &self,
        input: &[f32],
        mode: Mode,
        arena: &mut [u32],
        out: &mut [f32],
        after_layer: &mut dyn FnMut(usize),
    ) -> Result<(), Error> {
        if input.len() != self.input_shape().numel() {
            return Err(Error::InferInputLength);
        }
        let k = float::FloatKernels { input };
        run(&k, self, mode, arena, out, None, Some(after_layer))
    }

    /// Integer-path inference of one quantised input (`x ≈ input_scale · x_q`, see
    /// [`Model::quantize_input`]). `out` receives the summed logits in units of
    /// [`crate::format::FixedMeta::logit_scale`]. Uses no float arithmetic.
    pub fn infer_fixed(
        &self,
        input: &[i8],
        mode: Mode,
        arena: &mut [u32],
        out: &mut [i32],
    ) -> Result<(), Error> {
        if self.fixed_meta().is_none() {
            return Err(Error::InferNoFixedPoint);
        }
        if input.len() != self.input_shape().numel() {
            return Err(Error::InferInputLength);
        }
        run(
            &fixed::FixedKernels { input },
            self,
            mode,
            arena,
            out,
            None,
            None,
        )
    }

    /// [`Model::infer_fixed`] that calls `after_layer(i)` each time layer `i` finishes (see
    /// [`Model::infer_float_hooked`]). Same outputs.
    pub fn infer_fixed_hooked(
        &self,
        input: &[i8],
        mode: Mode,
        arena: &mut [u32],
        out: &mut [i32],
        after_layer: &mut dyn FnMut(usize),
    ) -> Result<(), Error> {
        if self.fixed_meta().is_none() {
            return Err(Error::InferNoFixedPoint);
        }
        if input.len() != self.input_shape().numel() {
            return Err(Error::InferInputLength);
        }
        let k = fixed::FixedKernels { input };
        run(&k, self, mode, arena, out, None, Some(after_layer))
    }

    /// Quantises a float input for [`Model::infer_fixed`]: `x_q = clamp(round(x / input_scale),
    /// −127, 127)`. This helper uses floats; FPU-less firmware receives inputs already quantised.
    pub fn quantize_input(&self, input: &[f32], out: &mut [i8]) -> Result<(), Error> {
        let f = self.fixed_meta().ok_or(Error::InferNoFixedPoint)?;
        if input.len() != self.input_shape().numel() || out.len() != input.len() {
            return Err(Error::InferInputLength);
        }
        for (q, &x) in out.iter_mut().zip(input) {
            *q = quantize_one(x, f.input_scale);
        }
        Ok(())
    }

    /// Float inference with an observer of every layer's output, per step (calibration).
    #[cfg(feature = "alloc")]
    pub(crate) fn infer_float_observed(
        &self,
        input: &[f32],
        arena: &mut [u32],
        out: &mut [f32],
        obs: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), Error> {
        if input.len() != self.input_shape().numel() {
            return Err(Error::InferInputLength);
        }
        run(
            &float::FloatKernels { input },
            self,
            Mode::Sequential,
            arena,
            out,
            Some(obs),
            None,
        )
    }
}

/// What one layer is and costs, for size and speed reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LayerInfo {
    /// Short kind name (`conv2d`, `bconv2d`, `neuron`, …).
    pub kind: &'static str,
    /// Output shape of one step.
    pub output: Shape,
    /// Bytes of parameters this layer holds in the file (float and integer parts).
    pub param_bytes: usize,
    /// Multiply-accumulates (or ±accumulates for binary layers) per time step.
    pub macs: u64,
}

impl Model<'_> {
    /// One [`LayerInfo`] per layer, in order (decoded on the fly; no allocation).
    pub fn layer_infos(&self) -> impl Iterator<Item = Result<LayerInfo, Error>> + '_ {
        let mut shape = self.input_shape();
        let mut slots = [shape; MAX_SLOTS];
        self.layers().map(move |layer| {
            let layer = layer?;
            let slot = match layer {
                Layer::Swap { slot } => Some(slots[slot as usize]),
                _ => None,
            };
            let out = out_shape(&layer, shape, slot);
            let numel = out.numel() as u64;
            let (param_bytes, macs) = match &layer {
                Layer::Conv2d(c) => (
                    c.weight.len()
                        + c.bias.len()
                        + c.fixed
                            .as_ref()
                            .map_or(0, |f| f.weight.len() + requant_bytes(&f.requant)),
                    numel * (c.in_channels as u64 * c.kernel as u64 * c.kernel as u64),
                ),
                Layer::BinaryConv2d(c) => (
                    c.signs.len()
                        + c.gain.len()
                        + c.bias.len()
                        + c.fixed.as_ref().map_or(0, requant_bytes),
                    numel * (c.in_channels as u64 * c.kernel as u64 * c.kernel as u64),
                ),
                Layer::Linear(l) => (
                    l.weight.len()
                        + l.bias.len()
                        + l.fixed
                            .as_ref()
                            .map_or(0, |f| f.weight.len() + requant_bytes(&f.requant)),
                    l.out_features as u64 * l.in_features as u64,
                ),
                Layer::BinaryLinear(l) => (
                    l.signs.len()
                        + l.gain.len()
                        + l.bias.len()
                        + l.fixed.as_ref().map_or(0, requant_bytes),
                    l.out_features as u64 * l.in_features as u64,
                ),
                Layer::Neuron(n) => (
                    n.leak.len()
                        + n.threshold.len()
                        + n.input_gain.len()
                        + n.input_bias.len()
                        + n.fixed.as_ref().map_or(0, |f| {
                            requant_bytes(&f.input) + f.leak_q16.len() + f.threshold.len()
                        }),
                    numel,
                ),
                Layer::Seca(_) => (24, 2 * numel),
                Layer::AvgPool2 => (0, 4 * numel),
                // Comparisons, one per tap.
                Layer::MaxPool(p) => (0, numel * p.kernel as u64 * p.kernel as u64),
                Layer::GlobalAvgPool => (0, shape.numel() as u64),
                Layer::Add { .. } => (0, numel),
                Layer::Flatten | Layer::Save { .. } | Layer::Swap { .. } => (0, 0),
            };
            match layer {
                Layer::Save { slot } | Layer::Swap { slot } => slots[slot as usize] = shape,
                _ => {}
            }
            shape = out;
            Ok(LayerInfo {
                kind: layer.kind(),
                output: out,
                param_bytes,
                macs,
            })
        })
    }
}

fn requant_bytes(r: &crate::format::Requant<&[u8]>) -> usize {
    r.multiplier.len() + r.shift.len() + r.offset.len()
}

/// The `K` best classes of `scores`, best first (ties: lower index first), in a fixed-capacity
/// `heapless::Vec`, for reporting on a device with no allocator.
pub fn top_k<const K: usize, T: PartialOrd + Copy>(scores: &[T]) -> heapless::Vec<(usize, T), K> {
    let mut best: heapless::Vec<(usize, T), K> = heapless::Vec::new();
    for (i, &s) in scores.iter().enumerate() {
        // Position after every entry that is at least as good (stable for ties).
        let at = best.iter().position(|&(_, b)| s > b).unwrap_or(best.len());
        if at >= K {
            continue;
        }
        if best.len() == K {
            best.pop();
        }
        // Cannot fail: there is room after the pop above.
        let _ = best.insert(at, (i, s));
    }
    best
}

#[cfg(test)]
mod top_k_tests {
    use super::top_k;

    #[test]
    fn best_first_with_stable_ties() {
        let s = [0.5f32, 2.0, -1.0, 2.0, 1.5];
        assert_eq!(
            top_k::<3, f32>(&s).as_slice(),
            &[(1, 2.0), (3, 2.0), (4, 1.5)]
        );
        assert_eq!(top_k::<1, i32>(&[3, 9, 9]).as_slice(), &[(1, 9)]);
        assert_eq!(top_k::<4, i32>(&[7, 1]).as_slice(), &[(0, 7), (1, 1)]);
        assert!(top_k::<2, i32>(&[]).is_empty());
        assert!(top_k::<0, i32>(&[1, 2]).is_empty());
    }
}
