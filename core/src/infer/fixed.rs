//! The integer path: no float instruction anywhere, so it runs on cores without an FPU.
//!
//! Tensors are i32 in the arena with a per-tensor scale fixed at calibration: spikes are 8-bit
//! unsigned (`0..=255`), currents are saturated to ±[`ACT_LIMIT`], binary layers accumulate ±spikes
//! in i32 straight from the packed bits, full-precision layers use i16 weights and i64 sums, and
//! every change of scale is a per-channel multiply and rounding shift ([`requant`]). The membrane
//! lives in units of `Δ_spike / 2^8` so the reset to threshold is exact in integers.

use super::conv::{aligned, bconv_planes, conv_planes, signed_sum, zip_apply, ConvGeom, PmIn};
use super::float::{pool2, step_index};
use super::spike_conv::{bconv_spikes, u16_flush, u16_range, Input, SpikeConv};
use super::{In, Kernels};
use crate::bits::row_bytes;
use crate::format::{
    BinaryConv2d, BinaryLinear, Conv2d, FixedAdd, Linear, Neuron, NeuronMode, Requant,
    ScalarRequant, Seca,
};
use crate::le::{i16_at, i32_at};
use crate::model::{Shape, ACT_LIMIT, MEMBRANE_FRAC_BITS, MEMBRANE_LIMIT, SPIKE_MAX};
use crate::Error;
use empf_dsp::RequantRun;

pub(crate) struct FixedKernels<'i> {
    pub input: &'i [i8],
}

/// `(x·m + 2^(sh−1)) >> sh`: round half up, arithmetic shift. Callers keep `|x·m| < 2^62`.
#[inline(always)]
pub fn requant(x: i64, m: i32, sh: u8) -> i64 {
    let p = x * m as i64;
    if sh == 0 {
        p
    } else {
        (p + (1i64 << (sh - 1))) >> sh
    }
}

/// A binary conv channel's `sat(requant(a, m, sh) + off, ACT_LIMIT)` for every `|a| ≤ a_max`,
/// and whether it may be computed as one 32×32→64 multiply-accumulate and a shift of the low
/// 64 bits by less than 32 (`empf_dsp::requant_run`, through [`OutDot`]), which a 32-bit core
/// does in a handful of instructions instead of a 64-bit shift, add and compare chain.
///
/// `requant(a, m, sh) + off = ⌊(a·m + 2^(sh−1) + off·2^sh) / 2^sh⌋`, so the offset joins the
/// rounding constant `c`. When `1 ≤ sh ≤ 31` and `a_max·|m| + |c| < 2^(31+sh)`, the quotient
/// fits an `i32` and equals the low 32 bits of `(a·m + c) >> sh` (`fast`); otherwise the plain
/// `i64` expression is used. Bit-identical to it either way
/// (`tests::fast_requant_equals_requant`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutRequant {
    m: i32,
    sh: u32,
    off: i64,
    c: i64,
    fast: bool,
}

impl OutRequant {
    pub(crate) fn new(m: i32, sh: u8, off: i64, a_max: u64) -> OutRequant {
        let sh32 = sh as u32;
        let c = if sh == 0 {
            off
        } else {
            (1i64 << (sh - 1)) + (off << sh)
        };
        let fast = (1..=31).contains(&sh)
            && off.unsigned_abs() < 1 << 31
            && a_max <= i32::MAX as u64
            && (a_max * m.unsigned_abs() as u64) // < 2^31 · 2^16
                .checked_add(c.unsigned_abs()) // |c| < 2^62 (|off| < 2^31, sh ≤ 31)
                .is_some_and(|z| z < 1u64 << (31 + sh32));
        OutRequant {
            m,
            sh: sh32,
            off,
            c,
            fast,
        }
    }

    /// The plain `i64` expression.
    #[inline(always)]
    pub(crate) fn plain(&self, a: i32) -> i32 {
        sat(
            requant(a as i64, self.m, self.sh as u8) + self.off,
            ACT_LIMIT,
        )
    }
}

/// [`OutRequant`] of a binary conv's output written as `a = σ·(Σx − 2·S)`, `σ = ±1`, where
/// `Σx` sums every tap's input and `S` the inputs of the taps whose sign is `−σ` (see
/// `spike_conv`: a channel's sum from its class sums always has this form). On the fast path
/// `m·σ` and `−2·m·σ` are folded in once per channel, so an output is two 32×32→64
/// multiply-accumulates onto the rounding constant and two 32-bit shifts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutDot {
    rq: OutRequant,
    sigma: i32,
    /// The fast path's constants (`empf-dsp`'s form: `(c + m·σ·a) >> sh`), when this channel
    /// takes it.
    fast: Option<RequantRun>,
}

impl OutDot {
    /// `sigma`: ±1; every `|σ·(Σx − 2·S)|` it is applied to is within the `a_max` of `rq`.
    pub(crate) fn new(rq: OutRequant, sigma: i32) -> OutDot {
        // |m| < 2^16 (validated): no overflow.
        let m = rq.m.wrapping_mul(sigma);
        let fast = rq.fast.then(|| RequantRun::new(rq.c, m, rq.sh)).flatten();
        OutDot { rq, sigma, fast }
    }

    /// The fast path's constants, when this channel takes it.
    #[inline(always)]
    pub(crate) fn fast(&self) -> Option<&RequantRun> {
        self.fast.as_ref()
    }

    /// `sat(requant(σ·(Σx − 2·S), m, sh) + off, ACT_LIMIT)`, the sum in wrapping `i32` as the
    /// reference kernel has it (on the fast path it cannot wrap: `a_max < 2^31`).
    #[inline(always)]
    pub(crate) fn apply(&self, total: i32, part: i32) -> i32 {
        match &self.fast {
            Some(k) => {
                let mut y = [0];
                empf_dsp::requant_run(k, &[total], &[part], &[0], &mut y);
                y[0]
            }
            None => self.rq.plain(
                self.sigma
                    .wrapping_mul(total.wrapping_sub(part.wrapping_mul(2))),
            ),
        }
    }
}

// The DSP kernel saturates to the integer path's current limit.
const _: () = assert!(ACT_LIMIT == (1 << empf_dsp::SAT_BITS) - 1);

#[inline(always)]
fn sat(x: i64, limit: i64) -> i32 {
    x.clamp(-limit, limit) as i32
}

#[inline(always)]
fn channel_requant(r: &Requant<&[u8]>, i: usize, acc: i64) -> i64 {
    let (m, sh, off) = channel_params(r, i);
    requant(acc, m, sh) + off
}

/// Channel `i`'s multiplier, shift and offset.
#[inline(always)]
fn channel_params(r: &Requant<&[u8]>, i: usize) -> (i32, u8, i64) {
    (
        i32_at(r.multiplier.bytes(), i),
        r.shift.bytes()[i],
        i32_at(r.offset.bytes(), i) as i64,
    )
}

#[inline(always)]
fn scalar(r: &ScalarRequant, x: i64) -> i64 {
    requant(x, r.multiplier, r.shift)
}

/// `σ(k/16 − 8)` in Q15 for `k = 0..=256`: the integer sigmoid's table (tested against f64).
pub(crate) static SIGMOID_Q15: [u16; 257] = [
    11, 12, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 28, 30, 32, 34, 36, 38, 41, 43, 46,
    49, 52, 56, 59, 63, 67, 72, 76, 81, 86, 92, 98, 104, 111, 118, 125, 133, 142, 151, 161, 171,
    182, 194, 206, 219, 233, 248, 264, 281, 299, 318, 338, 360, 383, 407, 433, 461, 490, 521, 554,
    589, 627, 666, 708, 753, 800, 851, 904, 961, 1021, 1084, 1152, 1223, 1299, 1379, 1464, 1554,
    1649, 1750, 1856, 1969, 2088, 2213, 2346, 2486, 2633, 2789, 2952, 3124, 3306, 3496, 3696, 3906,
    4126, 4357, 4599, 4851, 5115, 5391, 5678, 5978, 6289, 6613, 6949, 7297, 7658, 8031, 8416, 8813,
    9221, 9641, 10072, 10513, 10964, 11424, 11894, 12371, 12856, 13348, 13845, 14347, 14852, 15361,
    15872, 16384, 16896, 17407, 17916, 18421, 18923, 19420, 19912, 20397, 20874, 21344, 21804,
    22255, 22696, 23127, 23547, 23955, 24352, 24737, 25110, 25471, 25819, 26155, 26479, 26790,
    27090, 27377, 27653, 27917, 28169, 28411, 28642, 28862, 29072, 29272, 29462, 29644, 29816,
    29979, 30135, 30282, 30422, 30555, 30680, 30799, 30912, 31018, 31119, 31214, 31304, 31389,
    31469, 31545, 31616, 31684, 31747, 31807, 31864, 31917, 31968, 32015, 32060, 32102, 32141,
    32179, 32214, 32247, 32278, 32307, 32335, 32361, 32385, 32408, 32430, 32450, 32469, 32487,
    32504, 32520, 32535, 32549, 32562, 32574, 32586, 32597, 32607, 32617, 32626, 32635, 32643,
    32650, 32657, 32664, 32670, 32676, 32682, 32687, 32692, 32696, 32701, 32705, 32709, 32712,
    32716, 32719, 32722, 32725, 32727, 32730, 32732, 32734, 32736, 32738, 32740, 32742, 32743,
    32745, 32746, 32747, 32749, 32750, 32751, 32752, 32753, 32754, 32755, 32756, 32756, 32757,
];

/// Sigmoid of a Q8 value, in Q15 (`0..=32768`), by table and linear interpolation on `[−8, 8)`.
pub fn sigmoid_q15(y_q8: i64) -> i64 {
    let u = (y_q8.clamp(-2048, 2047) + 2048) as usize;
    let (i, f) = (u >> 4, (u & 15) as i64);
    (SIGMOID_Q15[i] as i64 * (16 - f) + SIGMOID_Q15[i + 1] as i64 * f + 8) >> 4
}

fn missing() -> Error {
    // A model decodes only if all layers or none carry integer parameters, and integer inference
    // refuses models without them, so this is unreachable for a decoded model.
    Error::InferNoFixedPoint
}

/// An integer-path input: an i32 tensor or 8-bit spikes.
type XIn<'x> = In<'x, u8, i32>;

/// Calls `$f` with the input slice in its own element type (i32 or u8): each kernel is
/// compiled for both, so spikes are read straight from their 8-bit storage.
macro_rules! with_input {
    ($x:expr, |$v:ident| $body:expr) => {
        match $x {
            In::E($v) => $body,
            In::S($v) => $body,
        }
    };
}

fn conv2d_int<X: PmIn<i32>>(
    l: &Conv2d<&[u8]>,
    s: Shape,
    x: &[X],
    y: &mut [i32],
    scratch: &mut [u32],
) -> Result<(), Error> {
    let f = l.fixed.as_ref().ok_or_else(missing)?;
    let g = ConvGeom::new(s, l.kernel, l.stride, l.padding);
    let (taps, w) = (g.taps(), f.weight.bytes());
    conv_planes(
        &g,
        x,
        y,
        scratch,
        |o, t, dst: &mut [i64], src: &[X], st| {
            let wv = i16_at(w, o * taps + t) as i64;
            zip_apply(dst, src, st, |d, v| *d += wv * v.widen() as i64);
        },
        |o, a| sat(channel_requant(&f.requant, o, a), ACT_LIMIT),
    );
    Ok(())
}

fn bconv2d_int<X: PmIn<i32>>(
    l: &BinaryConv2d<&[u8]>,
    s: Shape,
    x: &[X],
    y: &mut [i32],
    scratch: &mut [u32],
) -> Result<(), Error> {
    let r = l.fixed.as_ref().ok_or_else(missing)?;
    let g = ConvGeom::new(s, l.kernel, l.stride, l.padding);
    bconv_planes(&g, x, y, scratch, l.signs.bytes(), |o, a| {
        sat(channel_requant(r, o, a as i64), ACT_LIMIT)
    });
    Ok(())
}

/// A ±1 conv on 8-bit spikes: the SWAR kernel where its tap offsets fit, else the reference.
fn bconv2d_spikes(
    l: &BinaryConv2d<&[u8]>,
    s: Shape,
    x: &[u8],
    y: &mut [i32],
    scratch: &mut [u32],
) -> Result<(), Error> {
    let g = ConvGeom::new(s, l.kernel, l.stride, l.padding);
    let Some(sc) = SpikeConv::new(&g, 1).filter(|sc| sc.scratch_words(g.taps()) <= scratch.len())
    else {
        return bconv2d_int(l, s, x, y, scratch);
    };
    bconv_swar(l, &g, &sc, x, empf_dsp::FLUSH, 255, y, scratch)
}

/// A ±1 conv on a wide tensor: the SWAR kernel on 16-bit elements where every element is in
/// `0..=65535` (the sums an average pool makes of spikes, 0..=1020), else the reference.
fn bconv2d_wide(
    l: &BinaryConv2d<&[u8]>,
    s: Shape,
    x: &[i32],
    y: &mut [i32],
    scratch: &mut [u32],
) -> Result<(), Error> {
    let g = ConvGeom::new(s, l.kernel, l.stride, l.padding);
    let fits = SpikeConv::new(&g, 2).filter(|sc| sc.scratch_words(g.taps()) <= scratch.len());
    // The range scan only where the kernel could run.
    match fits.and_then(|sc| Some((sc, u16_range(x)?))) {
        Some((sc, max)) => bconv_swar(l, &g, &sc, x, u16_flush(max), max as u64, y, scratch),
        None => bconv2d_int(l, s, x, y, scratch),
    }
}

/// The SWAR kernel with the layer's requantisation; every input element is at most `x_max`.
#[allow(clippy::too_many_arguments)]
fn bconv_swar<X: Input>(
    l: &BinaryConv2d<&[u8]>,
    g: &ConvGeom,
    sc: &SpikeConv,
    x: &[X],
    flush: usize,
    x_max: u64,
    y: &mut [i32],
    scratch: &mut [u32],
) -> Result<(), Error> {
    let r = l.fixed.as_ref().ok_or_else(missing)?;
    // `|Σ ±x| ≤ taps · x_max`.
    let a_max = g.taps() as u64 * x_max;
    bconv_spikes(g, sc, x, flush, y, scratch, l.signs.bytes(), |o| {
        // The channel's parameters once, not per output.
        let (m, sh, off) = channel_params(r, o);
        OutRequant::new(m, sh, off, a_max)
    });
    Ok(())
}

fn linear_int<X: PmIn<i32>>(l: &Linear<&[u8]>, x: &[X], y: &mut [i32]) -> Result<(), Error> {
    let f = l.fixed.as_ref().ok_or_else(missing)?;
    let n = x.len();
    let w = f.weight.bytes();
    for (o, yo) in y.iter_mut().enumerate() {
        let row = &w[o * n * 2..(o + 1) * n * 2];
        let acc: i64 = row
            .chunks_exact(2)
            .zip(x)
            .map(|(c, &xi)| i16::from_le_bytes([c[0], c[1]]) as i64 * xi.widen() as i64)
            .sum();
        *yo = sat(channel_requant(&f.requant, o, acc), ACT_LIMIT);
    }
    Ok(())
}

fn blinear_int<X: PmIn<i32>>(l: &BinaryLinear<&[u8]>, x: &[X], y: &mut [i32]) -> Result<(), Error> {
    let r = l.fixed.as_ref().ok_or_else(missing)?;
    let rb = row_bytes(x.len());
    for (o, yo) in y.iter_mut().enumerate() {
        let row = &l.signs.bytes()[o * rb..(o + 1) * rb];
        let acc: i32 = signed_sum(row, x);
        *yo = sat(channel_requant(r, o, acc as i64), ACT_LIMIT);
    }
    Ok(())
}

/// A bound on `|x|` over a plane of neuron inputs: the OR of every `x ^ (x >> 31)` (that is
/// `|x|` or `|x| − 1`) plus one, three instructions an element where the exact maximum takes
/// five.
#[inline(always)]
fn current_bound<X: PmIn<i32>>(xs: &[X]) -> u32 {
    let or = xs.iter().fold(0u32, |a, &v| {
        let v = v.widen();
        a | (v ^ (v >> 31)) as u32
    });
    or.saturating_add(1)
}

/// One integer neuron step in 32-bit arithmetic, for a channel whose parameters and inputs make
/// that exact (`NeuronStep::new` checks; [`neuron_int`] takes the `i64` expression otherwise):
/// `m = clamp(⌊(v·leak + 2^15) / 2^16⌋ + requant(x, m_in, sh) + off, ±MEMBRANE_LIMIT)`, the
/// spike `s = max(m − θ, 0)`, out `min(⌊(s + 2^7) / 2^8⌋, 255)`, state `m − s`. Both products
/// are 32×32→64 and both quotients are taken from the low 64 bits by two 32-bit shifts, since
/// each fits an `i32`: `|v| ≤ 2^30` (the state is `m` or `θ`), `|leak| ≤ 2^16`, `|x| ≤ 2^20`
/// with `requant + off` below `2^29` in magnitude and `|θ| < 2^30`, so every sum stays below
/// `2^31`. Tested against the `i64` expression (`tests::neuron_step_equals_the_i64_step`).
#[derive(Clone, Copy, Debug)]
struct NeuronStep {
    m: i32,
    /// `2^(sh−1) + off·2^sh`: the rounding and the offset in one constant.
    c: i64,
    sh: u32,
    rsh: u32,
    th: i32,
    leak: i32,
}

impl NeuronStep {
    /// `x_max`: a bound on the plane's `|x|`, asked for only if the parameters allow the step
    /// (it costs a pass over the plane).
    fn new(
        m: i32,
        sh: u8,
        off: i64,
        th: i64,
        leak: i32,
        x_max: impl FnOnce() -> u32,
    ) -> Option<NeuronStep> {
        const LIMIT: i64 = 1 << 29;
        let ok = (1..=31).contains(&sh)
            && leak.unsigned_abs() <= 1 << 16
            && th.unsigned_abs() < 1 << 30
            && off.unsigned_abs() < 1 << 28
            && {
                let x_max = x_max();
                // |requant(x)| ≤ x_max·|m| / 2^sh + 1 (|m| < 2^16, validated).
                x_max <= 1 << 20
                    && ((x_max as i64 * m.unsigned_abs() as i64) >> sh) + 1 + off.abs() < LIMIT
            };
        ok.then(|| NeuronStep {
            m,
            c: (1i64 << (sh - 1)) + (off << sh),
            sh: sh as u32,
            rsh: 32 - sh as u32,
            th: th as i32,
            leak,
        })
    }

    /// `(new state, spike)` from the state `v` and the input `x`.
    #[inline(always)]
    fn step(&self, v: i32, x: i32) -> (i32, u8) {
        const L: i32 = MEMBRANE_LIMIT as i32;
        let z = self.c + x as i64 * self.m as i64;
        let input = (((z as u32) >> self.sh) | (((z >> 32) as u32) << self.rsh)) as i32;
        let lz = v as i64 * self.leak as i64 + (1 << 15);
        let leaked = (((lz as u32) >> 16) | (((lz >> 32) as u32) << 16)) as i32;
        let m = (leaked + input).clamp(-L, L);
        let sp = (m - self.th).max(0);
        let q = ((sp as u32 + (1 << (MEMBRANE_FRAC_BITS - 1))) >> MEMBRANE_FRAC_BITS).min(255);
        (m - sp, q as u8)
    }
}

/// One step of an integer neuron; spikes (`0..=255`) are written as `u8`.
fn neuron_int<X: PmIn<i32>>(
    n: &Neuron<&[u8]>,
    t: usize,
    s: Shape,
    x: &[X],
    y: &mut [u8],
    state: Option<&mut [i32]>,
) -> Result<(), Error> {
    let f = n.fixed.as_ref().ok_or_else(missing)?;
    let (c_n, plane) = (s.c as usize, s.plane());
    let half = 1i64 << (MEMBRANE_FRAC_BITS - 1);
    let mut state = state;
    for c in 0..c_n {
        let i = step_index(n.per_channel, c_n, t, c);
        let th = i32_at(f.threshold.bytes(), i) as i64;
        let (m_in, sh, off) = (
            i32_at(f.input.multiplier.bytes(), i),
            f.input.shift.bytes()[i],
            i32_at(f.input.offset.bytes(), i) as i64,
        );
        let range = c * plane..(c + 1) * plane;
        let (xs, ys) = (&x[range.clone()], &mut y[range.clone()]);
        let leak = match n.mode {
            NeuronMode::Sequential => i32_at(f.leak_q16.bytes(), i),
            _ => 0,
        };
        if let Some(k) = NeuronStep::new(m_in, sh, off, th, leak, || current_bound(xs)) {
            match (n.mode, state.as_deref_mut()) {
                (NeuronMode::Sequential, Some(st)) => {
                    for ((yv, &iv), v) in ys.iter_mut().zip(xs).zip(&mut st[range]) {
                        (*v, *yv) = k.step(*v, iv.widen());
                    }
                }
                _ => {
                    for (yv, &iv) in ys.iter_mut().zip(xs) {
                        *yv = k.step(0, iv.widen()).1;
                    }
                }
            }
            continue;
        }
        let fire = |m: i64| -> (i64, u8) {
            let sp = (m - th).max(0);
            // Round the membrane-unit spike to 8-bit spike units.
            (sp, ((sp + half) >> MEMBRANE_FRAC_BITS).min(SPIKE_MAX) as u8)
        };
        match (n.mode, state.as_deref_mut()) {
            (NeuronMode::Sequential, Some(st)) => {
                let leak = i32_at(f.leak_q16.bytes(), i) as i64;
                for ((yv, &iv), v) in ys.iter_mut().zip(xs).zip(&mut st[range]) {
                    let leaked = (*v as i64 * leak + (1 << 15)) >> 16;
                    let m = (leaked + requant(iv.widen() as i64, m_in, sh) + off)
                        .clamp(-MEMBRANE_LIMIT, MEMBRANE_LIMIT);
                    let (sp, q) = fire(m);
                    *v = (m - sp) as i32;
                    *yv = q;
                }
            }
            _ => {
                for (yv, &iv) in ys.iter_mut().zip(xs) {
                    let m = (requant(iv.widen() as i64, m_in, sh) + off)
                        .clamp(-MEMBRANE_LIMIT, MEMBRANE_LIMIT);
                    *yv = fire(m).1;
                }
            }
        }
    }
    Ok(())
}

impl Kernels for FixedKernels<'_> {
    type E = i32;
    type S = u8;
    const NARROW: bool = true;
    type O = i32;

    fn load_input(&self, dst: &mut [i32]) {
        dst.iter_mut()
            .zip(self.input)
            .for_each(|(d, &x)| *d = x as i32);
    }

    fn conv2d(
        &self,
        l: &Conv2d<&[u8]>,
        s: Shape,
        x: XIn<'_>,
        y: &mut [i32],
        scratch: &mut [u32],
    ) -> Result<(), Error> {
        with_input!(x, |v| conv2d_int(l, s, v, y, scratch))
    }

    fn bconv2d(
        &self,
        l: &BinaryConv2d<&[u8]>,
        s: Shape,
        x: XIn<'_>,
        y: &mut [i32],
        scratch: &mut [u32],
    ) -> Result<(), Error> {
        match x {
            In::S(v) => bconv2d_spikes(l, s, v, y, scratch),
            In::E(v) => bconv2d_wide(l, s, v, y, scratch),
        }
    }

    fn linear(&self, l: &Linear<&[u8]>, x: XIn<'_>, y: &mut [i32]) -> Result<(), Error> {
        with_input!(x, |v| linear_int(l, v, y))
    }

    fn blinear(&self, l: &BinaryLinear<&[u8]>, x: XIn<'_>, y: &mut [i32]) -> Result<(), Error> {
        with_input!(x, |v| blinear_int(l, v, y))
    }

    fn neuron(
        &self,
        n: &Neuron<&[u8]>,
        t: usize,
        s: Shape,
        x: XIn<'_>,
        y: &mut [u8],
        state: Option<&mut [i32]>,
    ) -> Result<(), Error> {
        with_input!(x, |v| neuron_int(n, t, s, v, y, state))
    }

    fn avgpool2(&self, s: Shape, x: XIn<'_>, y: &mut [i32]) {
        // Exact: the output keeps the sum, its scale is the input's / 4.
        with_input!(x, |v| pool2(s, v, y, |a, b, c, d| a.widen()
            + b.widen()
            + c.widen()
            + d.widen()))
    }

    fn gap(&self, s: Shape, x: XIn<'_>, y: &mut [i32]) {
        // Exact: the output keeps the sum, its scale is the input's / (H·W).
        let plane = s.plane();
        with_input!(x, |v| {
            for (yc, xc) in y.iter_mut().zip(v.chunks_exact(plane)) {
                *yc = xc.iter().map(|&e| e.widen()).sum::<i32>();
            }
        })
    }

    fn add(&self, fixed: Option<&FixedAdd>, x: &mut [i32], saved: XIn<'_>) -> Result<(), Error> {
        let f = fixed.ok_or_else(missing)?;
        with_input!(saved, |v| {
            for (a, &b) in x.iter_mut().zip(v) {
                *a = sat(
                    scalar(&f.main, *a as i64) + scalar(&f.saved, b.widen() as i64),
                    ACT_LIMIT,
                );
            }
        });
        Ok(())
    }

    fn seca(
        &self,
        l: &Seca<&[u8]>,
        s: Shape,
        x: &mut [i32],
        scratch: &mut [u32],
    ) -> Result<(), Error> {
        let f = l.fixed.as_ref().ok_or_else(missing)?;
        let (c_n, plane) = (s.c as usize, s.plane());
        let z = aligned::<i64>(scratch, c_n);
        for (zc, xc) in z.iter_mut().zip(x.chunks_exact(plane)) {
            *zc = xc.iter().map(|&v| v as i64).sum();
        }
        for c in 0..c_n {
            let mut acc = 0i64;
            for (j, &wj) in f.weight.iter().enumerate() {
                let src = c as isize + j as isize - 2;
                if src >= 0 && (src as usize) < c_n {
                    acc += wj as i64 * z[src as usize];
                }
            }
            let y_q8 = requant(acc, 1, f.shift) + f.bias_q8 as i64;
            let a = sigmoid_q15(y_q8);
            x[c * plane..(c + 1) * plane]
                .iter_mut()
                .for_each(|v| *v = ((*v as i64 * a + (1 << 14)) >> 15) as i32);
        }
        Ok(())
    }

    fn widen(&self, x: &[u8], y: &mut [i32]) {
        y.iter_mut().zip(x).for_each(|(d, &v)| *d = v as i32);
    }

    fn accumulate(&self, y: XIn<'_>, out: &mut [i32]) {
        with_input!(y, |v| out
            .iter_mut()
            .zip(v)
            .for_each(|(o, &e)| *o = o.saturating_add(e.widen())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The binary conv's requantisation equals the plain `i64` expression on both of its
        /// paths: every valid multiplier (`|m| < 2^16`), shift (0..=62) and `i32` offset, sums
        /// anywhere in `±a_max`, the edges included.
        #[test]
        fn fast_requant_equals_requant(
            m in -65535i32..=65535,
            sh in prop_oneof![0u8..=62, 1u8..=31],
            off in prop_oneof![any::<i32>(), -40000i32..=40000],
            a_max in prop_oneof![Just(255u64 * 9), 1u64..=300_000, Just(65535 * 1152)],
            at in 0.0f64..=1.0,
            edge in 0u8..4,
        ) {
            let off = off as i64;
            let rq = OutRequant::new(m, sh, off, a_max);
            let a_max = a_max.min(i32::MAX as u64) as i64;
            let a = match edge {
                0 => a_max,
                1 => -a_max,
                _ => ((2.0 * at - 1.0) * a_max as f64) as i64,
            } as i32;
            let want = sat(requant(a as i64, m, sh) + off, ACT_LIMIT);
            // `a = σ·(|a| − 2·0)`: through the path a binary conv's outputs take.
            let d = OutDot::new(rq, if a < 0 { -1 } else { 1 });
            prop_assert_eq!(d.apply(a.abs(), 0), want, "m {} sh {} off {} a {}", m, sh, off, a);
            prop_assert_eq!(rq.plain(a), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// A channel's combination `σ·(Σx − 2·S)` of class sums, requantised, equals
        /// requantising its plain sum, on both paths: `S ≤ Σx ≤ a_max` as in a real layer.
        #[test]
        fn out_dot_equals_requant_of_the_sum(
            m in -65535i32..=65535,
            sh in prop_oneof![0u8..=62, 1u8..=31],
            off in prop_oneof![any::<i32>(), -40000i32..=40000],
            a_max in prop_oneof![Just(255u64 * 288), 1u64..=300_000, Just(i32::MAX as u64)],
            fr in prop::array::uniform2(prop_oneof![0.0f64..=1.0, Just(0.0), Just(1.0)]),
            plus in any::<bool>(),
        ) {
            let off = off as i64;
            let t = (fr[0] * a_max as f64) as i32;
            let part = (fr[1] * t as f64) as i32;
            let sigma = if plus { 1 } else { -1 };
            let a = sigma * (t - 2 * part);
            let want = sat(requant(a as i64, m, sh) + off, ACT_LIMIT);
            let d = OutDot::new(OutRequant::new(m, sh, off, a_max), sigma);
            prop_assert_eq!(
                d.apply(t, part), want, "m {} sh {} off {} t {} s {}", m, sh, off, t, part
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        /// The 32-bit neuron step equals the `i64` one wherever `NeuronStep::new` accepts the
        /// channel: random parameters at and inside its limits, states a neuron can hold
        /// (within ±2^30 or the threshold), inputs up to the plane's bound.
        #[test]
        fn neuron_step_equals_the_i64_step(
            m in -65535i32..=65535,
            sh in prop_oneof![1u8..=31, 6u8..=14],
            off in prop_oneof![-(1i64 << 28) + 1..(1i64 << 28), -50_000i64..50_000],
            th in prop_oneof![-(1i64 << 30) + 1..(1i64 << 30), 0i64..100_000],
            leak in prop_oneof![-65536i32..=65536, 40_000i32..=65536],
            x_max in prop_oneof![0u32..=(1 << 20), Just(1 << 20)],
            at in 0.0f64..=1.0,
            v_pick in 0u8..4,
            v_frac in -1.0f64..=1.0,
        ) {
            let Some(k) = NeuronStep::new(m, sh, off, th, leak, || x_max) else {
                return Ok(());
            };
            let x = ((2.0 * at - 1.0) * x_max as f64) as i32;
            let v = match v_pick {
                0 => th as i32,
                1 => MEMBRANE_LIMIT as i32,
                2 => -(MEMBRANE_LIMIT as i32),
                _ => (v_frac * MEMBRANE_LIMIT as f64) as i32,
            };
            // The i64 step of `neuron_int`.
            let leaked = (v as i64 * leak as i64 + (1 << 15)) >> 16;
            let mm = (leaked + requant(x as i64, m, sh) + off)
                .clamp(-MEMBRANE_LIMIT, MEMBRANE_LIMIT);
            let sp = (mm - th).max(0);
            let q = ((sp + (1 << (MEMBRANE_FRAC_BITS - 1))) >> MEMBRANE_FRAC_BITS)
                .min(SPIKE_MAX) as u8;
            prop_assert_eq!(
                k.step(v, x), ((mm - sp) as i32, q),
                "m {} sh {} off {} th {} leak {} x {} v {}", m, sh, off, th, leak, x, v
            );
        }
    }

    /// The committed models' parameter ranges (shifts 9..=13, 16-bit multipliers, offsets
    /// within ±2^16, sums of up to 1152 taps of 255) take the fast path.
    #[test]
    fn typical_layers_take_the_fast_path() {
        for sh in 9..=13 {
            let rq = OutRequant::new(65_000, sh, -40_000, 1152 * 255);
            assert!(rq.fast, "sh {sh}");
        }
        assert!(!OutRequant::new(65_000, 0, 0, 255).fast);
        assert!(!OutRequant::new(65_000, 40, 0, 255).fast);
    }

    /// The committed models' neuron parameters (shifts 15–16, multipliers up to 2^16, leaks up
    /// to 36 608, thresholds up to 18 157, offset 0, currents saturated to `ACT_LIMIT`) take
    /// the 32-bit step, so its proptest is not vacuous where it matters; parameters past each
    /// limit do not, and an absurd plane bound is not even asked for when the shift is 0.
    #[test]
    fn typical_neurons_take_the_32_bit_step() {
        let bound = || ACT_LIMIT as u32 + 1;
        for (m, sh, th, leak) in [(58_895, 15, 18_157, 36_608), (33_230, 16, 1_446, 32_768)] {
            assert!(
                NeuronStep::new(m, sh, 0, th, leak, bound).is_some(),
                "m {m} sh {sh}"
            );
        }
        assert!(NeuronStep::new(58_895, 15, 0, 18_157, 1 << 17, bound).is_none());
        assert!(NeuronStep::new(58_895, 15, 0, 1 << 30, 32_768, bound).is_none());
        assert!(NeuronStep::new(58_895, 15, 0, 18_157, 32_768, || (1 << 20) + 1).is_none());
        assert!(NeuronStep::new(58_895, 0, 0, 18_157, 32_768, || unreachable!()).is_none());
    }
}
