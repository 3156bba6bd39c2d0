//! [`Model`]: a validated view of a model file, borrowed from its bytes.
//!
//! [`Model::decode`] checks the header, every length, shape, field range, residual slot and (for
//! calibrated models) every integer accumulator bound exactly once. After it succeeds, inference
//! cannot panic and cannot overflow; it only fails on caller mistakes (arena, slice lengths).

use crate::format::{split_header, Blob, FixedMeta, Layer, ModelMeta, NeuronMode, Requant, Shape3};
use crate::{bits, Error, MAX_LAYERS, MAX_SLOTS};

/// Saturation limit of integer-path currents (requant outputs): `|x| ≤ ACT_LIMIT`.
pub const ACT_LIMIT: i64 = (1 << 20) - 1;
/// Largest integer-path spike value (8-bit unsigned spikes).
pub const SPIKE_MAX: i64 = 255;
/// Fractional bits of the integer membrane below one spike step: `Δ_m = Δ_spike / 2^8`.
pub const MEMBRANE_FRAC_BITS: u32 = 8;
/// Saturation limit of the integer membrane potential.
pub const MEMBRANE_LIMIT: i64 = 1 << 30;
/// Largest `T`.
pub const MAX_TIME_STEPS: u16 = 1024;
/// Largest element count of one tensor (one image, one step).
pub const MAX_NUMEL: u32 = 1 << 26;

/// A `C×H×W` tensor shape with `u32` dims (shapes grow past `u16` after `Flatten`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    /// Channels.
    pub c: u32,
    /// Height.
    pub h: u32,
    /// Width.
    pub w: u32,
}

impl Shape {
    /// Element count (validated ≤ [`MAX_NUMEL`] for every shape in a decoded model).
    pub fn numel(&self) -> usize {
        self.c as usize * self.h as usize * self.w as usize
    }
    /// `H·W`.
    pub fn plane(&self) -> usize {
        self.h as usize * self.w as usize
    }
    fn from3(s: Shape3) -> Shape {
        Shape {
            c: s.c as u32,
            h: s.h as u32,
            w: s.w as u32,
        }
    }
}

/// Execution order of the `T` time steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// Step-major: all layers for step 0, then step 1, … Neuron state is carried in the arena.
    /// Smallest arena.
    Sequential,
    /// Layer-major: each layer processes all `T` steps as one batch (stateful neurons walk the
    /// steps in order inside the layer). Layers before the first neuron run once, since direct
    /// encoding makes them time-invariant. Larger arena, better weight reuse. Gives the same
    /// bits as [`Mode::Sequential`].
    Parallel,
}

/// Words of the arena each region takes; computed once at decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub state_sum: u32,
    pub state_max: u32,
    pub seca_channels: u32,
    pub row_conv_plane: u32,
    /// Buffer sizes of the float path (every element 4 bytes) and of the integer path (spikes
    /// in 1 byte), indexed by [`Plan::path`].
    pub paths: [PathPlan; 2],
}

impl Plan {
    pub fn path(&self, narrow: bool) -> &PathPlan {
        &self.paths[narrow as usize]
    }
}

/// Bytes of one step's copy of each buffer, for one numeric path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PathPlan {
    /// The two ping-pong activation buffers.
    pub act_bytes: [u32; 2],
    pub slot_bytes: [u32; MAX_SLOTS],
    /// Scratch words of the largest stride-1 conv (padded input + two accumulator rows).
    pub wide_conv: u32,
    /// Scratch words of the largest ±1 conv on 8-bit spikes (`infer::spike_conv`).
    pub spike_bconv: u32,
}

/// Where the running tensor lives as inference walks the layers (`infer::run_step` and
/// `infer::run_layer_major` follow the same rules): which activation buffer holds it and
/// whether it is stored as 8-bit spikes. Used at decode to size every buffer per path.
#[derive(Clone, Copy, Debug)]
struct Walk {
    /// Spikes stored narrow (integer path: `u8`); the float path stores everything as `f32`.
    narrow: bool,
    /// Buffer index (0 or 1) of the running tensor.
    cur: usize,
    /// The running tensor is stored as spikes.
    spike: bool,
    slot_spike: [bool; MAX_SLOTS],
    plan: PathPlan,
}

impl Walk {
    fn new(narrow: bool, input_numel: usize) -> Walk {
        let mut w = Walk {
            narrow,
            cur: 0,
            spike: false,
            slot_spike: [false; MAX_SLOTS],
            plan: PathPlan::default(),
        };
        w.need(0, input_numel, false);
        w
    }
    fn bytes(&self, numel: usize, spike: bool) -> u64 {
        numel as u64 * if spike && self.narrow { 1 } else { 4 }
    }
    fn need(&mut self, buf: usize, numel: usize, spike: bool) {
        let b = self.bytes(numel, spike).min(u32::MAX as u64) as u32;
        self.plan.act_bytes[buf] = self.plan.act_bytes[buf].max(b);
    }
    /// A layer writes its output (`numel`, spikes or not) into the other buffer.
    fn produce(&mut self, numel: usize, spike: bool) {
        self.need(1 - self.cur, numel, spike);
        self.cur = 1 - self.cur;
        self.spike = spike;
    }
    /// An in-place layer (`Add`, `Seca`) needs a wide tensor: spikes are widened first.
    fn in_place(&mut self, numel: usize) {
        if self.spike && self.narrow {
            self.produce(numel, false);
        }
        self.spike = false;
    }
    fn save(&mut self, slot: usize, numel: usize) {
        let b = self.bytes(numel, self.spike).min(u32::MAX as u64) as u32;
        self.plan.slot_bytes[slot] = self.plan.slot_bytes[slot].max(b);
        self.slot_spike[slot] = self.spike;
    }
    /// `Swap`: the running tensor (`numel`) goes to the slot via the other buffer, the slot's
    /// tensor (`slot_numel`) becomes the running one, in the same buffer.
    fn swap(&mut self, slot: usize, numel: usize, slot_numel: usize) {
        let (spike, slot_spike) = (self.spike, self.slot_spike[slot]);
        self.need(1 - self.cur, numel, spike);
        self.need(self.cur, slot_numel, slot_spike);
        self.save(slot, numel);
        self.spike = slot_spike;
    }
    fn conv_scratch(&mut self, input: Shape, out: Shape, stride: u8, pad: u8) -> Result<(), Error> {
        let el = if self.spike && self.narrow { 1 } else { 4 };
        let w = wide_words(input, out, stride, pad, el)?;
        self.plan.wide_conv = self.plan.wide_conv.max(w);
        Ok(())
    }
    /// On the integer path a ±1 conv runs the SWAR kernel, which has its own scratch: on 8-bit
    /// spikes, or on a wide tensor whose elements turn out to be in `0..=65535` at run time
    /// (pooled spikes), copied as 16-bit elements.
    fn bconv_scratch(&mut self, input: Shape, kernel: u8, stride: u8, pad: u8) {
        if !self.narrow {
            return;
        }
        let g = crate::infer::conv::ConvGeom::new(input, kernel, stride, pad);
        let elem_bytes = if self.spike { 1 } else { 2 };
        if let Some(sc) = crate::infer::spike_conv::SpikeConv::new(&g, elem_bytes) {
            let w = sc.scratch_words(g.taps()).min(u32::MAX as usize) as u32;
            self.plan.spike_bconv = self.plan.spike_bconv.max(w);
        }
    }
}

/// Where each region starts in the arena, in words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArenaLayout {
    pub act_len: [usize; 2],
    pub slot_len: [usize; MAX_SLOTS],
    pub state_off: usize,
    pub scratch_off: usize,
    pub total: usize,
}

/// A decoded, validated model borrowed from the file bytes.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    meta: ModelMeta,
    layer_bytes: &'a [u8],
    layer_count: u16,
    plan: Plan,
}

type L<'a> = Layer<&'a [u8]>;

/// Iterator over the layers of a decoded model.
pub struct Layers<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Layers<'a> {
    type Item = Result<L<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match postcard::take_from_bytes::<L<'a>>(self.rest) {
            Ok((layer, rest)) => {
                self.rest = rest;
                Some(Ok(layer))
            }
            Err(_) => {
                self.left = 0;
                Some(Err(Error::InferCorrupt))
            }
        }
    }
}

fn f32_len(b: &Blob<&[u8]>, n: usize) -> bool {
    b.len() == n * 4
}

fn requant_ok(r: &Requant<&[u8]>, n: usize) -> bool {
    r.multiplier.len() == n * 4
        && r.shift.len() == n
        && r.offset.len() == n * 4
        && r.shift.bytes().iter().all(|&s| s <= 62)
        && r.multiplier.bytes().chunks_exact(4).all(|c| {
            let m = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            m.unsigned_abs() < (1 << 16)
        })
}

/// Integer magnitude bound of a tensor in the integer path (validation only).
type Bound = u64;

impl<'a> Model<'a> {
    /// Decodes and validates a model file. Never panics, whatever the bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Model<'a>, Error> {
        let (_, body) = split_header(bytes)?;
        let (meta, rest) =
            postcard::take_from_bytes::<ModelMeta>(body).map_err(|_| Error::DecodeBody)?;
        let (count, layer_bytes) =
            postcard::take_from_bytes::<u32>(rest).map_err(|_| Error::DecodeBody)?;
        if meta.time_steps == 0
            || meta.time_steps > MAX_TIME_STEPS
            || meta.classes == 0
            || meta.input.c == 0
            || meta.input.h == 0
            || meta.input.w == 0
        {
            return Err(Error::DecodeBadMeta);
        }
        if let Some(f) = meta.fixed {
            if !(f.input_scale.is_finite() && f.input_scale > 0.0 && f.logit_scale.is_finite()) {
                return Err(Error::DecodeBadMeta);
            }
        }
        if count == 0 || count > MAX_LAYERS as u32 {
            return Err(Error::DecodeLayerCount);
        }
        let mut model = Model {
            meta,
            layer_bytes,
            layer_count: count as u16,
            plan: Plan::default(),
        };
        model.plan = model.validate()?;
        Ok(model)
    }

    /// Model-level fields.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }
    /// Number of time steps `T`.
    pub fn time_steps(&self) -> usize {
        self.meta.time_steps as usize
    }
    /// Input shape of one step.
    pub fn input_shape(&self) -> Shape {
        Shape::from3(self.meta.input)
    }
    /// Number of classes (length of the output).
    pub fn classes(&self) -> usize {
        self.meta.classes as usize
    }
    /// Integer-path scales, when the model was calibrated.
    pub fn fixed_meta(&self) -> Option<FixedMeta> {
        self.meta.fixed
    }
    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layer_count as usize
    }
    /// The layers, decoded on the fly from the borrowed bytes (cheap: no copies).
    pub fn layers(&self) -> Layers<'a> {
        Layers {
            rest: self.layer_bytes,
            left: self.layer_count,
        }
    }

    /// Arena words ([`u32`]) that inference in `mode` needs on either path: the larger of
    /// [`Model::arena_words_float`] and [`Model::arena_words_integer`].
    pub fn arena_words_for(&self, mode: Mode) -> usize {
        self.arena_words_float(mode)
            .max(self.arena_words_integer(mode))
    }

    /// Arena words that [`Model::infer_float`] needs in `mode`.
    pub fn arena_words_float(&self, mode: Mode) -> usize {
        self.layout(mode, false).total
    }

    /// Arena words that [`Model::infer_fixed`] needs in `mode`: smaller than the float path's,
    /// since spikes (and the padded copies of spike tensors convs make) are stored in 8 bits.
    pub fn arena_words_integer(&self, mode: Mode) -> usize {
        self.layout(mode, true).total
    }

    /// Bytes of the largest arena any inference of this model needs (parallel mode): an arena of
    /// this many bytes (as `u32` words) runs every path and mode.
    pub fn arena_bytes(&self) -> usize {
        self.arena_words_for(Mode::Parallel)
            .max(self.arena_words_for(Mode::Sequential))
            * 4
    }

    /// The arena split for `mode`; `narrow`: the integer path (8-bit spikes).
    pub(crate) fn layout(&self, mode: Mode, narrow: bool) -> ArenaLayout {
        let p = &self.plan;
        let pp = p.path(narrow);
        let steps = match mode {
            Mode::Sequential => 1,
            Mode::Parallel => self.time_steps(),
        };
        let words = |bytes: u32| (bytes as usize * steps).div_ceil(4);
        let act_len = [words(pp.act_bytes[0]), words(pp.act_bytes[1])];
        let mut off = act_len[0] + act_len[1];
        let mut slot_len = [0; MAX_SLOTS];
        for (len, &bytes) in slot_len.iter_mut().zip(&pp.slot_bytes) {
            *len = words(bytes);
            off += *len;
        }
        let state_off = off;
        off += match mode {
            Mode::Sequential => p.state_sum as usize,
            Mode::Parallel => p.state_max as usize,
        };
        let scratch_off = off;
        // SECA needs 3 words per channel (i64 channel sums + i32 weights, or 2×f32); a fixed
        // full-precision conv needs an i64 accumulator plane (2 words per element).
        // (+1 word: the i64 views are aligned inside the slice.)
        let scratch = (3 * p.seca_channels as usize)
            .max(2 * p.row_conv_plane as usize)
            .max(pp.wide_conv as usize)
            .max(pp.spike_bconv as usize);
        off += if scratch > 0 { scratch + 1 } else { 0 };
        ArenaLayout {
            act_len,
            slot_len,
            state_off,
            scratch_off,
            total: off,
        }
    }

    /// Walks every layer once: checks it and sizes the arena. All arithmetic is checked or
    /// bounded by [`MAX_NUMEL`], so no input can overflow it.
    fn validate(&self) -> Result<Plan, Error> {
        let t = self.time_steps();
        let fixed = self.meta.fixed.is_some();
        let mut plan = Plan::default();
        let mut shape = self.input_shape();
        if shape.numel() > MAX_NUMEL as usize {
            return Err(Error::DecodeBadMeta);
        }
        let mut bound: Bound = 127;
        let mut slots: [Option<(Shape, Bound)>; MAX_SLOTS] = [None; MAX_SLOTS];
        let mut walks = [
            Walk::new(false, shape.numel()),
            Walk::new(true, shape.numel()),
        ];
        let mut state_sum: u64 = 0;
        let mut rest = self.layer_bytes;
        for li in 0..self.layer_count {
            let (layer, r) =
                postcard::take_from_bytes::<L<'_>>(rest).map_err(|_| Error::DecodeBody)?;
            rest = r;
            let bad_len = Error::DecodeParamLength { layer: li };
            let bad_shape = Error::DecodeShapeMismatch { layer: li };
            let bad_field = Error::DecodeBadField { layer: li };
            let bad_fixed = Error::DecodeInconsistentFixed { layer: li };
            let range = Error::DecodeFixedRange { layer: li };
            let in_numel = shape.numel();
            let check_fixed = |present: bool| {
                if present == fixed {
                    Ok(())
                } else {
                    Err(bad_fixed)
                }
            };
            match &layer {
                Layer::Conv2d(c) => {
                    let out = conv_out(
                        shape,
                        c.in_channels,
                        c.out_channels,
                        c.kernel,
                        c.stride,
                        c.padding,
                        li,
                    )?;
                    for w in &mut walks {
                        w.conv_scratch(shape, out, c.stride, c.padding)?;
                    }
                    if c.stride != 1 {
                        // Row path: an accumulator plane of up to i64 in scratch.
                        plan.row_conv_plane = plan.row_conv_plane.max(out.plane() as u32);
                    }
                    let k = c.in_channels as usize * c.kernel as usize * c.kernel as usize;
                    let n = c.out_channels as usize * k;
                    if !f32_len(&c.weight, n) || !f32_len(&c.bias, c.out_channels as usize) {
                        return Err(bad_len);
                    }
                    check_fixed(c.fixed.is_some())?;
                    if let Some(f) = &c.fixed {
                        if f.weight.len() != n * 2
                            || !requant_ok(&f.requant, c.out_channels as usize)
                        {
                            return Err(bad_len);
                        }
                        // i64 accumulator times a 16-bit multiplier must stay below 2^63.
                        if bound.saturating_mul(32767).saturating_mul(k as u64) >= 1 << 46 {
                            return Err(range);
                        }
                    }
                    shape = out;
                    bound = ACT_LIMIT as u64;
                }
                Layer::BinaryConv2d(c) => {
                    let out = conv_out(
                        shape,
                        c.in_channels,
                        c.out_channels,
                        c.kernel,
                        c.stride,
                        c.padding,
                        li,
                    )?;
                    for w in &mut walks {
                        w.conv_scratch(shape, out, c.stride, c.padding)?;
                        w.bconv_scratch(shape, c.kernel, c.stride, c.padding);
                    }
                    if c.stride != 1 {
                        // Row path: an accumulator plane of up to i64 in scratch.
                        plan.row_conv_plane = plan.row_conv_plane.max(out.plane() as u32);
                    }
                    let k = c.in_channels as usize * c.kernel as usize * c.kernel as usize;
                    let o = c.out_channels as usize;
                    if c.signs.len() != o * bits::row_bytes(k)
                        || !f32_len(&c.gain, o)
                        || !f32_len(&c.bias, o)
                    {
                        return Err(bad_len);
                    }
                    check_fixed(c.fixed.is_some())?;
                    if let Some(r) = &c.fixed {
                        if !requant_ok(r, o) {
                            return Err(bad_len);
                        }
                        // ±sums accumulate in i32.
                        if bound.saturating_mul(k as u64) > i32::MAX as u64 {
                            return Err(range);
                        }
                    }
                    shape = out;
                    bound = ACT_LIMIT as u64;
                }
                Layer::Linear(l) => {
                    let (i, o) = (l.in_features as usize, l.out_features as usize);
                    if i != shape.numel() {
                        return Err(bad_shape);
                    }
                    if o == 0 || o > MAX_NUMEL as usize {
                        return Err(bad_field);
                    }
                    if !f32_len(&l.weight, o.checked_mul(i).ok_or(bad_len)?) || !f32_len(&l.bias, o)
                    {
                        return Err(bad_len);
                    }
                    check_fixed(l.fixed.is_some())?;
                    if let Some(f) = &l.fixed {
                        if f.weight.len() != o * i * 2 || !requant_ok(&f.requant, o) {
                            return Err(bad_len);
                        }
                        if bound.saturating_mul(32767).saturating_mul(i as u64) >= 1 << 46 {
                            return Err(range);
                        }
                    }
                    shape = Shape {
                        c: o as u32,
                        h: 1,
                        w: 1,
                    };
                    bound = ACT_LIMIT as u64;
                }
                Layer::BinaryLinear(l) => {
                    let (i, o) = (l.in_features as usize, l.out_features as usize);
                    if i != shape.numel() {
                        return Err(bad_shape);
                    }
                    if o == 0 || o > MAX_NUMEL as usize {
                        return Err(bad_field);
                    }
                    if l.signs.len() != o.checked_mul(bits::row_bytes(i)).ok_or(bad_len)?
                        || !f32_len(&l.gain, o)
                        || !f32_len(&l.bias, o)
                    {
                        return Err(bad_len);
                    }
                    check_fixed(l.fixed.is_some())?;
                    if let Some(r) = &l.fixed {
                        if !requant_ok(r, o) {
                            return Err(bad_len);
                        }
                        if bound.saturating_mul(i as u64) > i32::MAX as u64 {
                            return Err(range);
                        }
                    }
                    shape = Shape {
                        c: o as u32,
                        h: 1,
                        w: 1,
                    };
                    bound = ACT_LIMIT as u64;
                }
                Layer::Neuron(n) => {
                    let per = if n.per_channel { shape.c as usize } else { 1 };
                    let count = t * per;
                    let seq = n.mode == NeuronMode::Sequential;
                    let leak_ok = if seq {
                        f32_len(&n.leak, count)
                    } else {
                        n.leak.is_empty()
                    };
                    let opt_ok = |b: &Blob<&[u8]>| b.is_empty() || f32_len(b, count);
                    if !leak_ok
                        || !f32_len(&n.threshold, count)
                        || !opt_ok(&n.input_gain)
                        || !opt_ok(&n.input_bias)
                    {
                        return Err(bad_len);
                    }
                    check_fixed(n.fixed.is_some())?;
                    if let Some(f) = &n.fixed {
                        let leak_ok = if seq {
                            f.leak_q16.len() == count * 4
                        } else {
                            f.leak_q16.is_empty()
                        };
                        if !requant_ok(&f.input, count)
                            || !leak_ok
                            || f.threshold.len() != count * 4
                        {
                            return Err(bad_len);
                        }
                        if bound >= 1 << 46 {
                            return Err(range);
                        }
                    }
                    if seq {
                        state_sum += shape.numel() as u64;
                        plan.state_max = plan.state_max.max(shape.numel() as u32);
                    }
                    bound = SPIKE_MAX as u64;
                }
                Layer::AvgPool2 => {
                    if shape.h < 2 || shape.w < 2 {
                        return Err(bad_shape);
                    }
                    shape = Shape {
                        c: shape.c,
                        h: shape.h / 2,
                        w: shape.w / 2,
                    };
                    bound = bound.saturating_mul(4);
                }
                Layer::MaxPool(p) => {
                    shape = pool_out(shape, p.kernel, p.stride, p.padding, li)?;
                    // A maximum of its inputs: same bound, same scale, same kind of tensor.
                }
                Layer::GlobalAvgPool => {
                    bound = bound.saturating_mul(shape.plane() as u64);
                    shape = Shape {
                        c: shape.c,
                        h: 1,
                        w: 1,
                    };
                }
                Layer::Flatten => {
                    shape = Shape {
                        c: shape.numel() as u32,
                        h: 1,
                        w: 1,
                    };
                }
                Layer::Save { slot } => {
                    let s = *slot as usize;
                    if s >= MAX_SLOTS {
                        return Err(bad_field);
                    }
                    slots[s] = Some((shape, bound));
                }
                Layer::Swap { slot } => {
                    let s = *slot as usize;
                    let (sshape, sbound) = slots
                        .get(s)
                        .copied()
                        .flatten()
                        .ok_or(Error::DecodeBadSlot { layer: li })?;
                    slots[s] = Some((shape, bound));
                    shape = sshape;
                    bound = sbound;
                }
                Layer::Add { slot, fixed: f } => {
                    let s = *slot as usize;
                    let (sshape, _) = slots
                        .get(s)
                        .copied()
                        .flatten()
                        .ok_or(Error::DecodeBadSlot { layer: li })?;
                    if sshape != shape {
                        return Err(Error::DecodeBadSlot { layer: li });
                    }
                    check_fixed(f.is_some())?;
                    if let Some(f) = f {
                        check_scalar(&f.main, li)?;
                        check_scalar(&f.saved, li)?;
                        bound = ACT_LIMIT as u64;
                    }
                }
                Layer::Seca(sc) => {
                    if !f32_len(&sc.weight, 5) {
                        return Err(bad_len);
                    }
                    check_fixed(sc.fixed.is_some())?;
                    if let Some(s) = sc.add_slot {
                        let (sshape, _) = slots
                            .get(s as usize)
                            .copied()
                            .flatten()
                            .ok_or(Error::DecodeBadSlot { layer: li })?;
                        if sshape != shape {
                            return Err(Error::DecodeBadSlot { layer: li });
                        }
                    }
                    if let Some(f) = &sc.fixed {
                        if f.add.is_some() != sc.add_slot.is_some() || f.shift > 62 {
                            return Err(bad_fixed);
                        }
                        if let Some(a) = &f.add {
                            check_scalar(&a.main, li)?;
                            check_scalar(&a.saved, li)?;
                            bound = ACT_LIMIT as u64;
                        }
                        let taps: u64 = f.weight.iter().map(|w| w.unsigned_abs() as u64).sum();
                        let z = bound.saturating_mul(shape.plane() as u64);
                        if z.saturating_mul(taps.max(1)) >= 1 << 62
                            || f.bias_q8.unsigned_abs() >= 1 << 30
                            || bound >= 1 << 46
                        {
                            return Err(range);
                        }
                    }
                    plan.seca_channels = plan.seca_channels.max(shape.c);
                }
            }
            if shape.numel() == 0 || shape.numel() > MAX_NUMEL as usize {
                return Err(bad_shape);
            }
            for w in &mut walks {
                match &layer {
                    Layer::Conv2d(_)
                    | Layer::BinaryConv2d(_)
                    | Layer::Linear(_)
                    | Layer::BinaryLinear(_)
                    | Layer::AvgPool2
                    | Layer::GlobalAvgPool => w.produce(shape.numel(), false),
                    Layer::Neuron(_) => w.produce(shape.numel(), true),
                    // Spikes pool to spikes (8-bit on the integer path), currents to currents.
                    Layer::MaxPool(_) => w.produce(shape.numel(), w.spike),
                    Layer::Flatten => {}
                    Layer::Save { slot } => w.save(*slot as usize, in_numel),
                    Layer::Swap { slot } => w.swap(*slot as usize, in_numel, shape.numel()),
                    Layer::Add { .. } | Layer::Seca(_) => w.in_place(in_numel),
                }
            }
            // Every integer tensor is stored as i32 (pool sums included).
            if fixed && bound > i32::MAX as u64 {
                return Err(range);
            }
        }
        if !rest.is_empty() {
            return Err(Error::DecodeTrailingBytes);
        }
        if shape.numel() != self.classes() {
            return Err(Error::DecodeOutputShape);
        }
        if fixed && bound > ACT_LIMIT as u64 {
            return Err(Error::DecodeFixedRange {
                layer: self.layer_count - 1,
            });
        }
        plan.paths = [walks[0].plan, walks[1].plan];
        plan.state_sum = u32::try_from(state_sum).map_err(|_| Error::DecodeTooLarge)?;
        // The whole arena (parallel mode is the larger) must be addressable in u32 words.
        let steps = t as u64;
        for pp in &plan.paths {
            let buffers: u64 = pp
                .act_bytes
                .iter()
                .chain(&pp.slot_bytes)
                .map(|&b| b as u64)
                .sum();
            let total = (buffers * steps).div_ceil(4)
                + MAX_SLOTS as u64
                + 2
                + state_sum
                + 3 * plan.seca_channels as u64
                + (2 * plan.row_conv_plane as u64)
                    .max(pp.wide_conv as u64)
                    .max(pp.spike_bconv as u64)
                + 1;
            if total > u32::MAX as u64 / 4 || total > usize::MAX as u64 / 8 {
                return Err(Error::DecodeTooLarge);
            }
        }
        Ok(plan)
    }
}

fn check_scalar(r: &crate::format::ScalarRequant, li: u16) -> Result<(), Error> {
    if r.shift > 62 || r.multiplier.unsigned_abs() >= 1 << 16 {
        return Err(Error::DecodeBadField { layer: li });
    }
    Ok(())
}

/// Scratch words of a stride-1 conv's wide path (see `infer::conv::Wide`), checked: the padded
/// input (`element_bytes` per element, rounded up to words) and two accumulator rows.
fn wide_words(
    input: Shape,
    out: Shape,
    stride: u8,
    pad: u8,
    element_bytes: u64,
) -> Result<u32, Error> {
    if stride != 1 {
        return Ok(0);
    }
    let (hp, wp) = (
        input.h as u64 + 2 * pad as u64,
        input.w as u64 + 2 * pad as u64,
    );
    let words = (input.c as u64 * hp * wp * element_bytes).div_ceil(4) + 2 * out.h as u64 * wp + 1;
    u32::try_from(words)
        .ok()
        .filter(|&w| w <= MAX_NUMEL * 4)
        .ok_or(Error::DecodeTooLarge)
}

/// Output shape of a max pool on `s`, checked: `kernel ≥ 1`, `stride ≥ 1`, `padding < kernel`
/// (a bad field), and a window that fits the padded input (a shape mismatch).
fn pool_out(s: Shape, k: u8, stride: u8, pad: u8, li: u16) -> Result<Shape, Error> {
    if k == 0 || stride == 0 || pad >= k {
        return Err(Error::DecodeBadField { layer: li });
    }
    let (k, st, p) = (k as u32, stride as u32, pad as u32);
    if s.h + 2 * p < k || s.w + 2 * p < k {
        return Err(Error::DecodeShapeMismatch { layer: li });
    }
    Ok(Shape {
        c: s.c,
        h: (s.h + 2 * p - k) / st + 1,
        w: (s.w + 2 * p - k) / st + 1,
    })
}

fn conv_out(
    s: Shape,
    cin: u16,
    cout: u16,
    k: u8,
    stride: u8,
    pad: u8,
    li: u16,
) -> Result<Shape, Error> {
    if cin as u32 != s.c {
        return Err(Error::DecodeShapeMismatch { layer: li });
    }
    if cout == 0 || k == 0 || stride == 0 || pad >= k {
        return Err(Error::DecodeBadField { layer: li });
    }
    let (k, st, p) = (k as u32, stride as u32, pad as u32);
    if s.h + 2 * p < k || s.w + 2 * p < k {
        return Err(Error::DecodeShapeMismatch { layer: li });
    }
    Ok(Shape {
        c: cout as u32,
        h: (s.h + 2 * p - k) / st + 1,
        w: (s.w + 2 * p - k) / st + 1,
    })
}
