//! The integer path as an ONNX graph (`edge-infer to-onnx --integer`): the same function as
//! `empf-core`'s `infer_fixed`, bit for bit, written with standard ONNX integer operators.
//!
//! Input `x` is the float `[N, C, H, W]` tensor; the graph quantises it as
//! [`Model::quantize_input`] does (`Div` by `input_scale`, round half away from zero with
//! `Abs`/`Floor`/`Sign`, `Clip` to ±127, `Cast` to int8). Output `y` is int32 `[N, classes]`: the
//! summed integer logits, in units of `logit_scale`, equal to `infer_fixed`'s.
//!
//! - Spikes are uint8 (`Cast` after each neuron); the quantised input is int8; ±1 weights are
//!   int8. Convolutions and linear layers are `ConvInteger` / `MatMulInteger` with 32-bit
//!   accumulation, which ONNX Runtime runs with its 8-bit kernels.
//! - An operand wider than 8 bits, or signed, is split exactly into uint8 planes
//!   (`x = Σ ±256^k·x_k`: base-256 digits of `max(x, 0)` and of `max(−x, 0)`), one integer conv
//!   per pair of planes, recombined in int64: the int8 input (2 planes), the i16 weights of
//!   full-precision layers (up to 4), 2×2 pool sums of spikes (0..1020, 2), currents (±2^20, 6).
//!   Planes are uint8 because ONNX Runtime's x86 kernels are exact for uint8 × uint8, and for
//!   uint8 × int8 only while two products fit int16 (AVX2 `vpmaddubsw` saturates); the ±1
//!   weights stay int8. Every partial sum is checked to fit int32 when the graph is written.
//! - Requantisation is per channel in int64: `Mul` by the multiplier, `Add` of `2^(sh−1)`, a floor
//!   division by `2^sh` (`Div(x − Mod(x, d), d)`, exact: ONNX integer `Div` truncates), `Add` of
//!   the offset, `Clip` to ±[`empf_core::ACT_LIMIT`] (currents) or ±2^30 (membrane).
//! - Neurons: `Max(m − θ, 0)`, `(s + 128) / 256` capped at 255, the membrane `m − s` carried from
//!   step to step in int64 for sequential neurons (Q16 leak with round half up).
//! - Pools keep the exact sum (`ReduceSum` in int32); SECA sums each channel in int64, mixes the
//!   channels with one int64 `MatMul` by the banded 5-tap matrix, and looks the sigmoid up in a
//!   4096-entry table built from `empf_core::infer::fixed::sigmoid_q15` (`Gather`).
//!
//! The layout over the `T` steps is the float graph's (layer-major, see [`super`]).

use super::*;
use empf_core::format::{FixedAdd, ScalarRequant};
use empf_core::{ACT_LIMIT, MEMBRANE_FRAC_BITS, SPIKE_MAX};

/// Clamp of the membrane in `empf-core` (`MEMBRANE_LIMIT`).
pub(super) const MEMBRANE_LIMIT: i64 = 1 << 30;

/// Element type of an integer tensor of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dt {
    /// Spikes `0..=255`.
    U8,
    /// The quantised input.
    I8,
    /// Currents, pool sums.
    I32,
}

/// What is known of a value: element type, largest magnitude, sign.
#[derive(Clone, Copy, Debug)]
struct Q {
    dt: Dt,
    bound: u64,
    nonneg: bool,
}

#[derive(Clone, Debug)]
struct IVal {
    v: Val,
    q: Q,
}

fn le_i32(b: &[u8], i: usize) -> Option<i64> {
    b.get(i * 4..i * 4 + 4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
}

pub(super) fn le_i16(b: &[u8], i: usize) -> Option<i64> {
    b.get(i * 2..i * 2 + 2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
}

fn short(layer: usize, what: &'static str) -> OnnxError {
    OnnxError::BadLength {
        layer,
        what,
        got: 0,
        expected: 1,
    }
}

/// Reads `n` i32 values.
pub(super) fn i32s(
    layer: usize,
    what: &'static str,
    b: &[u8],
    n: usize,
) -> Result<Vec<i64>, OnnxError> {
    check_len(layer, what, b.len() / 4, n)?;
    (0..n)
        .map(|i| le_i32(b, i).ok_or_else(|| short(layer, what)))
        .collect()
}

/// Per-channel requantisation constants `(multiplier, shift, offset)`.
pub(super) struct Rq {
    pub(super) m: Vec<i64>,
    pub(super) sh: Vec<u8>,
    pub(super) off: Vec<i64>,
}

impl Rq {
    pub(super) fn read(
        layer: usize,
        r: &empf_core::format::Requant<&[u8]>,
        n: usize,
    ) -> Result<Rq, OnnxError> {
        let sh = r.shift.bytes();
        check_len(layer, "requant shift", sh.len(), n)?;
        Ok(Rq {
            m: i32s(layer, "requant multiplier", r.multiplier.bytes(), n)?,
            sh: sh.to_vec(),
            off: i32s(layer, "requant offset", r.offset.bytes(), n)?,
        })
    }

    /// The entries `idx` (a sub-range of steps and channels).
    pub(super) fn pick(&self, idx: impl Iterator<Item = usize>) -> Rq {
        let mut r = Rq {
            m: vec![],
            sh: vec![],
            off: vec![],
        };
        for i in idx {
            r.m.push(self.m[i]);
            r.sh.push(self.sh[i]);
            r.off.push(self.off[i]);
        }
        r
    }
}

fn attr_str_int(name: &str, v: i64) -> AttributeProto {
    attr_int(name, v)
}

impl Builder {
    /// An int64 initializer of `dims` (a scalar if `dims` is empty).
    pub(super) fn init_i64(&mut self, hint: &str, dims: &[usize], v: &[i64]) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Int64 as i32),
            name: Some(name.clone()),
            raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// An int8 / uint8 initializer.
    pub(super) fn init_8(
        &mut self,
        hint: &str,
        dims: &[usize],
        signed: bool,
        v: Vec<u8>,
    ) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(if signed {
                DataType::Int8 as i32
            } else {
                DataType::Uint8 as i32
            }),
            name: Some(name.clone()),
            raw_data: Some(v),
            ..Default::default()
        });
        name
    }

    /// A shared scalar int64 constant.
    fn c64(&mut self, v: i64) -> String {
        let key = format!("i64 scalar {v}");
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = self.init_i64("c", &[], &[v]);
        self.consts.insert(key, name.clone());
        name
    }

    /// A shared scalar f32 constant.
    pub(super) fn cf32(&mut self, v: f32) -> String {
        let key = format!("f32 scalar {:08x}", v.to_bits());
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = self.init_f32("cf", &[], v.to_le_bytes().to_vec());
        self.consts.insert(key, name.clone());
        name
    }

    /// Per-channel int64 constant: a scalar when every entry is the same.
    fn chan_i64(&mut self, hint: &str, dims: &[usize], v: &[i64]) -> String {
        if v.iter().all(|&x| x == v[0]) {
            self.c64(v[0])
        } else {
            self.init_i64(hint, dims, v)
        }
    }

    pub(super) fn cast(&mut self, x: &str, to: DataType) -> String {
        self.node("Cast", &[x], vec![attr_str_int("to", to as i64)])
    }

    /// `x` as int64 (from any integer type).
    fn i64_of(&mut self, x: &str) -> String {
        self.cast(x, DataType::Int64)
    }

    /// `floor(x / d)` for `d > 0` (ONNX integer `Div` truncates; `Mod` with `fmod = 0` takes the
    /// divisor's sign, so `x − Mod(x, d)` is an exact multiple of `d`).
    fn floordiv(&mut self, x: &str, d: &str) -> String {
        let r = self.node("Mod", &[x, d], vec![attr_int("fmod", 0)]);
        let e = self.node("Sub", &[x, &r], vec![]);
        self.node("Div", &[&e, d], vec![])
    }

    fn clip64(&mut self, x: &str, lo: i64, hi: i64) -> String {
        let (lo, hi) = (self.c64(lo), self.c64(hi));
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// `requant(x, m, sh) + off` per channel on int64 `x` (`dims` broadcast over `x`).
    fn requant(&mut self, hint: &str, x: &str, r: &Rq, dims: &[usize]) -> String {
        let m = self.chan_i64(&format!("{hint}_mult"), dims, &r.m);
        let mut p = self.node("Mul", &[x, &m], vec![]);
        if r.sh.iter().any(|&s| s > 0) {
            let half: Vec<i64> =
                r.sh.iter()
                    .map(|&s| if s == 0 { 0 } else { 1i64 << (s - 1) })
                    .collect();
            let div: Vec<i64> = r.sh.iter().map(|&s| 1i64 << s).collect();
            let h = self.chan_i64(&format!("{hint}_half"), dims, &half);
            let d = self.chan_i64(&format!("{hint}_div"), dims, &div);
            p = self.node("Add", &[&p, &h], vec![]);
            p = self.floordiv(&p, &d);
        }
        if r.off.iter().any(|&o| o != 0) {
            let o = self.chan_i64(&format!("{hint}_off"), dims, &r.off);
            p = self.node("Add", &[&p, &o], vec![]);
        }
        p
    }

    /// `requant(x, m, sh)` with one multiplier.
    fn scalar_rq(&mut self, x: &str, s: &ScalarRequant) -> String {
        let r = Rq {
            m: vec![s.multiplier as i64],
            sh: vec![s.shift],
            off: vec![0],
        };
        self.requant("rq", x, &r, &[])
    }

    /// The exact uint8 planes of an integer operand of a conv / matmul: `(name, bound, scale)`
    /// with `x = Σ scale·plane`. Every plane is uint8 (ONNX Runtime's x86 kernels are exact for
    /// uint8 × uint8, and for uint8 × int8 only while a pair of products fits int16; int8
    /// activations × uint8 weights are wrong in ORT 1.31's ConvInteger), so a signed operand is
    /// split into `max(x, 0)` and `max(−x, 0)` first, and each part into base-256 digits.
    fn planes(&mut self, x: &str, q: Q) -> Vec<(String, u64, i64)> {
        if q.dt == Dt::U8 {
            return vec![(x.to_string(), 255, 1)];
        }
        if q.nonneg && q.bound <= 255 {
            return vec![(self.cast(x, DataType::Uint8), 255, 1)];
        }
        let x32 = self.i32_of(x, q);
        if q.nonneg {
            return self.digits(&x32, q.bound, 1);
        }
        let zero = self.const_i32(0);
        let pos = self.node("Max", &[&x32, &zero], vec![]);
        let neg = self.node("Neg", &[&x32], vec![]);
        let neg = self.node("Max", &[&neg, &zero], vec![]);
        let mut out = self.digits(&pos, q.bound, 1);
        out.extend(self.digits(&neg, q.bound, -1));
        out
    }

    /// Base-256 digits (uint8) of a nonnegative int32 tensor `y ≤ bound`, times `sign`.
    fn digits(&mut self, y: &str, bound: u64, sign: i64) -> Vec<(String, u64, i64)> {
        let c256 = self.const_i32(256);
        let (mut y, mut bound, mut scale) = (y.to_string(), bound, sign);
        let mut out = Vec::new();
        while bound > 255 {
            // y ≥ 0: Mod and Div are the low digit and the rest.
            let lo = self.node("Mod", &[&y, &c256], vec![attr_int("fmod", 0)]);
            out.push((self.cast(&lo, DataType::Uint8), 255, scale));
            y = self.node("Div", &[&y, &c256], vec![]);
            bound /= 256;
            scale *= 256;
        }
        out.push((self.cast(&y, DataType::Uint8), bound, scale));
        out
    }

    /// A shared scalar int32 constant.
    fn const_i32(&mut self, v: i32) -> String {
        let key = format!("i32 scalar {v}");
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = self.fresh("c32");
        self.inits.push(TensorProto {
            dims: vec![],
            data_type: Some(DataType::Int32 as i32),
            name: Some(name.clone()),
            raw_data: Some(v.to_le_bytes().to_vec()),
            ..Default::default()
        });
        self.consts.insert(key, name.clone());
        name
    }

    /// `x` as an int32 tensor.
    fn i32_of(&mut self, x: &str, q: Q) -> String {
        if q.dt == Dt::I32 {
            x.to_string()
        } else {
            self.cast(x, DataType::Int32)
        }
    }
}

/// Weight planes of a layer: `(name, bound, scale)`; `w` are the weights in the ONNX layout.
/// Weights within ±64 (the ±1 of binary layers) are one int8 plane; wider ones (the i16 of
/// full-precision layers) are split into uint8 base-256 digits of `max(w, 0)` and `max(−w, 0)`
/// (see [`Builder::planes`] for why uint8).
fn weight_planes(
    b: &mut Builder,
    hint: &str,
    dims: &[usize],
    w: &[i64],
) -> Vec<(String, u64, i64)> {
    if w.iter().all(|&v| (-64..=64).contains(&v)) {
        let raw = w.iter().map(|&v| v as i8 as u8).collect();
        return vec![(b.init_8(hint, dims, true, raw), 64, 1)];
    }
    let mut out = Vec::new();
    for (part, sign) in [("pos", 1i64), ("neg", -1i64)] {
        let mag: Vec<i64> = w.iter().map(|&v| (v * sign).max(0)).collect();
        let max = mag.iter().copied().max().unwrap_or(0);
        if max == 0 {
            continue;
        }
        let (mut scale, mut k) = (sign, 0u32);
        loop {
            let digit: Vec<u8> = mag.iter().map(|&v| ((v >> (8 * k)) & 255) as u8).collect();
            let dmax = digit.iter().copied().max().unwrap_or(0) as u64;
            if dmax > 0 {
                let name = b.init_8(&format!("{hint}_{part}{k}"), dims, false, digit);
                out.push((name, dmax, scale));
            }
            k += 1;
            scale *= 256;
            if max >> (8 * k) == 0 {
                break;
            }
        }
    }
    if out.is_empty() {
        // All zero.
        let raw = vec![0u8; w.len()];
        out.push((b.init_8(hint, dims, true, raw), 0, 1));
    }
    out
}

/// Σ over plane pairs of `op(x_k, w_j)·256^(k+j)` in int64, every partial checked to fit int32.
#[allow(clippy::too_many_arguments)]
fn integer_products(
    b: &mut Builder,
    li: usize,
    op: &str,
    xs: &[(String, u64, i64)],
    ws: &[(String, u64, i64)],
    taps: usize,
    attrs: &[AttributeProto],
) -> Result<String, OnnxError> {
    let mut acc: Option<String> = None;
    for (xn, xb, xsc) in xs {
        for (wn, wb, wsc) in ws {
            if xb.saturating_mul(*wb).saturating_mul(taps as u64) > i32::MAX as u64 {
                return Err(OnnxError::IntegerRange {
                    layer: li,
                    what: "an 8-bit partial sum of the integer conv/matmul",
                });
            }
            let p = b.node(op, &[xn, wn], attrs.to_vec());
            let mut p = b.i64_of(&p);
            let sc = xsc * wsc;
            if sc != 1 {
                let c = b.c64(sc);
                p = b.node("Mul", &[&p, &c], vec![]);
            }
            acc = Some(match acc {
                None => p,
                Some(a) => b.node("Add", &[&a, &p], vec![]),
            });
        }
    }
    Ok(acc.unwrap_or_default())
}

/// Requantised current: per-channel `requant`, `Clip` to ±ACT_LIMIT, int32.
fn current(b: &mut Builder, hint: &str, acc: &str, r: &Rq, dims: &[usize]) -> String {
    let p = b.requant(hint, acc, r, dims);
    let p = b.clip64(&p, -ACT_LIMIT, ACT_LIMIT);
    b.cast(&p, DataType::Int32)
}

const CURRENT: Q = Q {
    dt: Dt::I32,
    bound: ACT_LIMIT as u64,
    nonneg: false,
};

const SPIKES: Q = Q {
    dt: Dt::U8,
    bound: SPIKE_MAX as u64,
    nonneg: true,
};

/// A stateless layer of the integer path on one tensor.
fn stateless_int(
    b: &mut Builder,
    li: usize,
    layer: &Layer<&[u8]>,
    cur: &Tensor,
    q: Q,
    saved: Option<(&Tensor, Q)>,
) -> Result<(Tensor, Q), OnnxError> {
    let missing = OnnxError::NoIntegerPath { layer: li };
    Ok(match layer {
        Layer::Conv2d(c) => {
            let f = c.fixed.as_ref().ok_or(missing)?;
            let (o, i, k) = (
                c.out_channels as usize,
                c.in_channels as usize,
                c.kernel as usize,
            );
            let taps = i * k * k;
            check_len(li, "conv weight (i16)", f.weight.len() / 2, o * taps)?;
            let w: Vec<i64> = (0..o * taps)
                .map(|j| le_i16(f.weight.bytes(), j).unwrap_or(0))
                .collect();
            let r = Rq::read(li, &f.requant, o)?;
            let xv = b.to4(cur);
            let xs = b.planes(&xv.name, q);
            let ws = weight_planes(b, &format!("l{li}_conv_w"), &[o, i, k, k], &w);
            let (s, p) = (c.stride as i64, c.padding as i64);
            let attrs = [
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ];
            let acc = integer_products(b, li, "ConvInteger", &xs, &ws, taps, &attrs)?;
            let name = current(b, &format!("l{li}"), &acc, &r, &[1, o, 1, 1]);
            let (s, p) = (s as usize, p as usize);
            (
                Tensor {
                    name,
                    c: o,
                    h: (xv.h + 2 * p - k) / s + 1,
                    w: (xv.w + 2 * p - k) / s + 1,
                    rank2: false,
                },
                CURRENT,
            )
        }
        Layer::BinaryConv2d(c) => {
            let f = c.fixed.as_ref().ok_or(missing)?;
            let (o, i, k) = (
                c.out_channels as usize,
                c.in_channels as usize,
                c.kernel as usize,
            );
            let taps = i * k * k;
            check_len(li, "signs", c.signs.len(), o * taps.div_ceil(8))?;
            let r = Rq::read(li, f, o)?;
            let xv = b.to4(cur);
            let xs = b.planes(&xv.name, q);
            let w = b.init_8(
                &format!("l{li}_bconv_signs"),
                &[o, i, k, k],
                true,
                signs_i8(c.signs.bytes(), o, taps),
            );
            let (s, p) = (c.stride as i64, c.padding as i64);
            let attrs = [
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ];
            let acc = integer_products(b, li, "ConvInteger", &xs, &[(w, 1, 1)], taps, &attrs)?;
            let name = current(b, &format!("l{li}"), &acc, &r, &[1, o, 1, 1]);
            let (s, p) = (s as usize, p as usize);
            (
                Tensor {
                    name,
                    c: o,
                    h: (xv.h + 2 * p - k) / s + 1,
                    w: (xv.w + 2 * p - k) / s + 1,
                    rank2: false,
                },
                CURRENT,
            )
        }
        Layer::Linear(l) => {
            let f = l.fixed.as_ref().ok_or(missing)?;
            let (o, i) = (l.out_features as usize, l.in_features as usize);
            check_len(li, "linear weight (i16)", f.weight.len() / 2, o * i)?;
            // MatMulInteger wants [in, out].
            let mut w = vec![0i64; o * i];
            for r in 0..o {
                for c in 0..i {
                    w[c * o + r] = le_i16(f.weight.bytes(), r * i + c).unwrap_or(0);
                }
            }
            let r = Rq::read(li, &f.requant, o)?;
            let xv = b.to2(cur);
            let xs = b.planes(&xv.name, q);
            let ws = weight_planes(b, &format!("l{li}_fc_w"), &[i, o], &w);
            let acc = integer_products(b, li, "MatMulInteger", &xs, &ws, i, &[])?;
            let name = current(b, &format!("l{li}"), &acc, &r, &[1, o]);
            (
                Tensor {
                    name,
                    c: o,
                    h: 1,
                    w: 1,
                    rank2: true,
                },
                CURRENT,
            )
        }
        Layer::BinaryLinear(l) => {
            let f = l.fixed.as_ref().ok_or(missing)?;
            let (o, i) = (l.out_features as usize, l.in_features as usize);
            check_len(li, "signs", l.signs.len(), o * i.div_ceil(8))?;
            let rows = signs_i8(l.signs.bytes(), o, i);
            let mut wt = vec![0u8; rows.len()];
            for r in 0..o {
                for c in 0..i {
                    wt[c * o + r] = rows[r * i + c];
                }
            }
            let r = Rq::read(li, f, o)?;
            let xv = b.to2(cur);
            let xs = b.planes(&xv.name, q);
            let w = b.init_8(&format!("l{li}_bfc_signs_t"), &[i, o], true, wt);
            let acc = integer_products(b, li, "MatMulInteger", &xs, &[(w, 1, 1)], i, &[])?;
            let name = current(b, &format!("l{li}"), &acc, &r, &[1, o]);
            (
                Tensor {
                    name,
                    c: o,
                    h: 1,
                    w: 1,
                    rank2: true,
                },
                CURRENT,
            )
        }
        Layer::AvgPool2 => {
            let xv = b.to4(cur);
            let x32 = b.i32_of(&xv.name, q);
            let (h2, w2) = (xv.h / 2, xv.w / 2);
            let x32 = if xv.h % 2 == 1 || xv.w % 2 == 1 {
                let starts = b.const_i64(&[0, 0]);
                let ends = b.const_i64(&[2 * h2 as i64, 2 * w2 as i64]);
                let axes = b.const_i64(&[2, 3]);
                b.node("Slice", &[&x32, &starts, &ends, &axes], vec![])
            } else {
                x32
            };
            let shape = b.const_i64(&[-1, xv.c as i64, h2 as i64, 2, w2 as i64, 2]);
            let x6 = b.node("Reshape", &[&x32, &shape], vec![]);
            let axes = b.const_i64(&[3, 5]);
            let name = b.node("ReduceSum", &[&x6, &axes], vec![attr_int("keepdims", 0)]);
            (
                Tensor {
                    name,
                    h: h2,
                    w: w2,
                    ..xv
                },
                Q {
                    dt: Dt::I32,
                    bound: q.bound.saturating_mul(4),
                    nonneg: q.nonneg,
                },
            )
        }
        Layer::MaxPool(p) => {
            // ONNX MaxPool takes 8-bit integers (spikes, the int8 input) as they are, but no
            // int32: currents and pool sums go through float, exact below 2^24, or double.
            let xv = b.to4(cur);
            let y = match q.dt {
                Dt::U8 | Dt::I8 => max_pool(b, &xv, &xv.name.clone(), p),
                Dt::I32 => {
                    let wide = if q.bound < 1 << 24 {
                        DataType::Float
                    } else {
                        DataType::Double
                    };
                    let xf = b.cast(&xv.name, wide);
                    let yf = max_pool(b, &xv, &xf, p);
                    Tensor {
                        name: b.cast(&yf.name, DataType::Int32),
                        ..yf
                    }
                }
            };
            (y, q)
        }
        Layer::GlobalAvgPool => {
            let xv = b.to4(cur);
            let x32 = b.i32_of(&xv.name, q);
            let axes = b.const_i64(&[2, 3]);
            let name = b.node("ReduceSum", &[&x32, &axes], vec![attr_int("keepdims", 1)]);
            (
                Tensor {
                    name,
                    h: 1,
                    w: 1,
                    ..xv
                },
                Q {
                    dt: Dt::I32,
                    bound: q.bound.saturating_mul((xv.h * xv.w) as u64),
                    nonneg: q.nonneg,
                },
            )
        }
        Layer::Flatten => {
            let v = b.to2(cur);
            (
                Tensor {
                    c: v.numel(),
                    h: 1,
                    w: 1,
                    ..v
                },
                q,
            )
        }
        Layer::Add { slot, fixed } => {
            let f = fixed.as_ref().ok_or(missing)?;
            let (saved, _) = saved.ok_or(OnnxError::EmptySlot {
                layer: li,
                slot: *slot,
            })?;
            check_len(li, "saved tensor", saved.numel(), cur.numel())?;
            (int_add(b, cur, saved, f), CURRENT)
        }
        Layer::Seca(s) => {
            let f = s.fixed.as_ref().ok_or(missing)?;
            let (mut v, mut q) = (cur.clone(), q);
            if let Some((saved, _)) = saved {
                check_len(li, "saved tensor", saved.numel(), v.numel())?;
                let fa = f
                    .add
                    .as_ref()
                    .ok_or(OnnxError::NoIntegerPath { layer: li })?;
                v = int_add(b, &v, saved, fa);
                q = CURRENT;
            }
            let xv = b.to4(&v);
            let c_n = xv.c;
            let x64 = b.i64_of(&xv.name);
            let axes = b.const_i64(&[2, 3]);
            let z = b.node("ReduceSum", &[&x64, &axes], vec![attr_int("keepdims", 0)]);
            // acc[c] = Σ_j w_j·z[c + j − 2]: z [B, C] times the banded [C, C] matrix.
            let mut band = vec![0i64; c_n * c_n];
            for c in 0..c_n {
                for (j, &wj) in f.weight.iter().enumerate() {
                    let src = c as isize + j as isize - 2;
                    if src >= 0 && (src as usize) < c_n {
                        band[src as usize * c_n + c] += wj as i64;
                    }
                }
            }
            let wb = b.init_i64(&format!("l{li}_seca_band"), &[c_n, c_n], &band);
            let mut y = b.node("MatMul", &[&z, &wb], vec![]);
            if f.shift > 0 {
                let h = b.c64(1i64 << (f.shift - 1));
                let d = b.c64(1i64 << f.shift);
                y = b.node("Add", &[&y, &h], vec![]);
                y = b.floordiv(&y, &d);
            }
            if f.bias_q8 != 0 {
                let bq = b.c64(f.bias_q8 as i64);
                y = b.node("Add", &[&y, &bq], vec![]);
            }
            let yc = b.clip64(&y, -2048, 2047);
            let c2048 = b.c64(2048);
            let idx = b.node("Add", &[&yc, &c2048], vec![]);
            let table: Vec<i64> = (0..4096)
                .map(|u| empf_core::infer::fixed::sigmoid_q15(u - 2048))
                .collect();
            let tname = match b.consts.get("sigmoid_q15 table") {
                Some(n) => n.clone(),
                None => {
                    let n = b.init_i64("sigmoid_q15", &[4096], &table);
                    b.consts.insert("sigmoid_q15 table".into(), n.clone());
                    n
                }
            };
            let a = b.node("Gather", &[&tname, &idx], vec![attr_int("axis", 0)]);
            let ax = b.const_i64(&[2, 3]);
            let a4 = b.node("Unsqueeze", &[&a, &ax], vec![]);
            let p = b.node("Mul", &[&x64, &a4], vec![]);
            let h = b.c64(1 << 14);
            let d = b.c64(1 << 15);
            let p = b.node("Add", &[&p, &h], vec![]);
            let p = b.floordiv(&p, &d);
            let name = b.cast(&p, DataType::Int32);
            (
                Tensor { name, ..xv },
                Q {
                    dt: Dt::I32,
                    bound: q.bound,
                    nonneg: q.nonneg,
                },
            )
        }
        Layer::Neuron(_) | Layer::Save { .. } | Layer::Swap { .. } => {
            unreachable!("not a stateless layer: handled by the walk")
        }
    })
}

/// `sat(rq(main) + rq(saved), ACT_LIMIT)` as int32.
fn int_add(b: &mut Builder, a: &Tensor, s: &Tensor, f: &FixedAdd) -> Tensor {
    let (a, s) = if a.rank2 == s.rank2 {
        (a.clone(), s.clone())
    } else {
        (b.to2(a), b.to2(s))
    };
    let a64 = b.i64_of(&a.name);
    let s64 = b.i64_of(&s.name);
    let ra = b.scalar_rq(&a64, &f.main);
    let rs = b.scalar_rq(&s64, &f.saved);
    let sum = b.node("Add", &[&ra, &rs], vec![]);
    let sum = b.clip64(&sum, -ACT_LIMIT, ACT_LIMIT);
    Tensor {
        name: b.cast(&sum, DataType::Int32),
        ..a
    }
}

/// `±1` as int8 from packed signs: `rows` rows of `k` weights.
pub(super) fn signs_i8(signs: &[u8], rows: usize, k: usize) -> Vec<u8> {
    let rb = k.div_ceil(8);
    let mut out = Vec::with_capacity(rows * k);
    for o in 0..rows {
        let row = signs.get(o * rb..(o + 1) * rb).unwrap_or(&[]);
        for i in 0..k {
            let plus = row
                .get(i / 8)
                .is_some_and(|_| empf_core::bits::sign_at(row, i));
            out.push(if plus { 1i8 as u8 } else { -1i8 as u8 });
        }
    }
    out
}

/// Spikes from membrane `m` (int64): `s = Max(m − θ, 0)`, `q = Min((s + 128) / 256, 255)`.
/// Returns `(s, q as uint8)`.
fn fire(b: &mut Builder, m: &str, th: &str) -> (String, String) {
    let d = b.node("Sub", &[m, th], vec![]);
    let zero = b.c64(0);
    let s = b.node("Max", &[&d, &zero], vec![]);
    let half = b.c64(1 << (MEMBRANE_FRAC_BITS - 1));
    let unit = b.c64(1 << MEMBRANE_FRAC_BITS);
    let top = b.c64(SPIKE_MAX);
    let r = b.node("Add", &[&s, &half], vec![]);
    let r = b.node("Div", &[&r, &unit], vec![]);
    let r = b.node("Min", &[&r, &top], vec![]);
    let q = b.cast(&r, DataType::Uint8);
    (s, q)
}

/// Integer neuron constants of step `t` (all channels), or of every step.
pub(super) struct NeuronInt {
    pub(super) rq: Rq,
    pub(super) th: Vec<i64>,
    pub(super) leak: Vec<i64>,
    pub(super) per: usize,
}

pub(super) fn neuron_int(
    li: usize,
    n: &Neuron<&[u8]>,
    t_steps: usize,
    c: usize,
) -> Result<NeuronInt, OnnxError> {
    let f = n
        .fixed
        .as_ref()
        .ok_or(OnnxError::NoIntegerPath { layer: li })?;
    let per = if n.per_channel { c } else { 1 };
    let count = t_steps * per;
    let leak = if n.mode == NeuronMode::Sequential {
        i32s(li, "leak_q16", f.leak_q16.bytes(), count)?
    } else {
        Vec::new()
    };
    Ok(NeuronInt {
        rq: Rq::read(li, &f.input, count)?,
        th: i32s(li, "threshold (integer)", f.threshold.bytes(), count)?,
        leak,
        per,
    })
}

fn parallel_neuron_int(
    b: &mut Builder,
    li: usize,
    n: &Neuron<&[u8]>,
    cur: &IVal,
) -> Result<IVal, OnnxError> {
    let t_steps = b.t_steps;
    let p = neuron_int(li, n, t_steps, cur.v.first().c)?;
    let per = p.per;
    let step0 = |v: &[i64]| v[..per].to_vec();
    let same = |v: &[i64]| v.chunks_exact(per).all(|s| s == &v[..per]);
    let sh64: Vec<i64> = p.rq.sh.iter().map(|&s| s as i64).collect();
    let all_same = same(&p.rq.m) && same(&sh64) && same(&p.rq.off) && same(&p.th);
    let neuron_core = |b: &mut Builder, x: &str, r: &Rq, th: &[i64], dims: &[usize]| {
        let x64 = b.i64_of(x);
        let m = b.requant(&format!("l{li}_in"), &x64, r, dims);
        let m = b.clip64(&m, -MEMBRANE_LIMIT, MEMBRANE_LIMIT);
        let th = b.chan_i64(&format!("l{li}_theta"), dims, th);
        fire(b, &m, &th).1
    };
    if all_same {
        let (x, once) = match &cur.v {
            Val::Once(x) => (x.clone(), true),
            v => (b.batched(v), false),
        };
        let x = neuron_input(b, &x);
        let dims = if per == 1 { vec![] } else { chan_dims(&x, per) };
        let r = p.rq.pick(0..per);
        let s = neuron_core(b, &x.name, &r, &step0(&p.th), &dims);
        let s = Tensor { name: s, ..x };
        return Ok(IVal {
            v: if once { Val::Once(s) } else { Val::Batched(s) },
            q: SPIKES,
        });
    }
    let x = match &cur.v {
        Val::Once(x) => neuron_input(b, x),
        v => {
            let x = b.batched(v);
            neuron_input(b, &x)
        }
    };
    let sdims = x.sample_dims();
    let x5 = match &cur.v {
        Val::Once(_) => {
            let axes = b.const_i64(&[0]);
            b.node("Unsqueeze", &[&x.name, &axes], vec![])
        }
        _ => {
            let shape = b.const_i64(&[&[t_steps as i64, -1][..], &sdims].concat());
            b.node("Reshape", &[&x.name, &shape], vec![])
        }
    };
    let dims = if x.rank2 {
        vec![t_steps, 1, per]
    } else {
        vec![t_steps, 1, per, 1, 1]
    };
    let s5 = neuron_core(b, &x5, &p.rq, &p.th, &dims);
    let shape = b.const_i64(&[&[-1][..], &sdims].concat());
    Ok(IVal {
        v: Val::Batched(Tensor {
            name: b.node("Reshape", &[&s5, &shape], vec![]),
            ..x
        }),
        q: SPIKES,
    })
}

fn sequential_neuron_int(
    b: &mut Builder,
    li: usize,
    n: &Neuron<&[u8]>,
    cur: &IVal,
) -> Result<IVal, OnnxError> {
    let t_steps = b.t_steps;
    let p = neuron_int(li, n, t_steps, cur.v.first().c)?;
    let per = p.per;
    let v = match &cur.v {
        Val::Once(x) => Val::Once(neuron_input(b, x)),
        Val::Batched(x) => Val::Batched(neuron_input(b, x)),
        Val::Steps(xs) => Val::Steps(xs.iter().map(|x| neuron_input(b, x)).collect()),
    };
    let xs = b.steps(&v);
    let mut membrane: Option<String> = None;
    let mut out = Vec::with_capacity(xs.len());
    let mut x64_once: Option<String> = None;
    for (t, x) in xs.into_iter().enumerate() {
        b.scope = format!("l{li}.t{t}.");
        let dims = if per == 1 { vec![] } else { chan_dims(&x, per) };
        let r = p.rq.pick(t * per..(t + 1) * per);
        let x64 = match (&cur.v, &x64_once) {
            (Val::Once(_), Some(n)) => n.clone(),
            _ => {
                let n = b.i64_of(&x.name);
                if matches!(cur.v, Val::Once(_)) {
                    x64_once = Some(n.clone());
                }
                n
            }
        };
        let drive = b.requant(&format!("l{li}_t{t}_in"), &x64, &r, &dims);
        let m = match membrane.take() {
            Some(v) => {
                let lk = b.chan_i64(
                    &format!("l{li}_t{t}_leak"),
                    &dims,
                    &p.leak[t * per..(t + 1) * per],
                );
                let lv = b.node("Mul", &[&v, &lk], vec![]);
                let h = b.c64(1 << 15);
                let d = b.c64(1 << 16);
                let lv = b.node("Add", &[&lv, &h], vec![]);
                let leaked = b.floordiv(&lv, &d);
                b.node("Add", &[&leaked, &drive], vec![])
            }
            None => drive,
        };
        let m = b.clip64(&m, -MEMBRANE_LIMIT, MEMBRANE_LIMIT);
        let th = b.chan_i64(
            &format!("l{li}_t{t}_theta"),
            &dims,
            &p.th[t * per..(t + 1) * per],
        );
        let (s, q) = fire(b, &m, &th);
        if t + 1 < t_steps {
            membrane = Some(b.node("Sub", &[&m, &s], vec![]));
        }
        out.push(Tensor { name: q, ..x });
    }
    Ok(IVal {
        v: Val::Steps(out),
        q: SPIKES,
    })
}

pub(super) fn int_tensor_type(dims: &[Dimension], dt: DataType) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(dt as i32),
            shape: Some(TensorShapeProto { dim: dims.to_vec() }),
        })),
        ..Default::default()
    }
}

/// Converts a decoded, calibrated model into an ONNX `ModelProto` of its integer path.
pub fn to_onnx_integer_proto(model: &Model<'_>) -> Result<ModelProto, OnnxError> {
    let fm = model
        .fixed_meta()
        .ok_or(OnnxError::NoIntegerPath { layer: 0 })?;
    let t_steps = model.time_steps();
    let inp = model.input_shape();
    let classes = model.classes();
    let layers: Vec<Layer<&[u8]>> = model
        .layers()
        .enumerate()
        .map(|(layer, l)| l.map_err(|source| OnnxError::Layer { layer, source }))
        .collect::<Result<_, _>>()?;
    let mut b = Builder {
        t_steps,
        ..Default::default()
    };
    let x = Tensor {
        name: "x".into(),
        c: inp.c as usize,
        h: inp.h as usize,
        w: inp.w as usize,
        rank2: false,
    };
    // x_q = clamp(round_half_away(x / input_scale), −127, 127) as int8.
    b.scope = "quantize.".into();
    let s = b.cf32(fm.input_scale);
    let v = b.node("Div", &["x", &s], vec![]);
    let a = b.node("Abs", &[&v], vec![]);
    let h = b.cf32(0.5);
    let a = b.node("Add", &[&a, &h], vec![]);
    let a = b.node("Floor", &[&a], vec![]);
    let sg = b.node("Sign", &[&v], vec![]);
    let r = b.node("Mul", &[&a, &sg], vec![]);
    let (lo, hi) = (b.cf32(-127.0), b.cf32(127.0));
    let r = b.node("Clip", &[&r, &lo, &hi], vec![]);
    let xq = b.cast(&r, DataType::Int8);
    let mut cur = IVal {
        v: Val::Once(Tensor {
            name: xq,
            ..x.clone()
        }),
        q: Q {
            dt: Dt::I8,
            bound: 127,
            nonneg: false,
        },
    };
    let mut slots: [Option<IVal>; empf_core::MAX_SLOTS] = Default::default();
    for (li, layer) in layers.iter().enumerate() {
        b.scope = format!("l{li}.");
        let slot_val = |slots: &[Option<IVal>], s: u8| -> Result<IVal, OnnxError> {
            slots
                .get(s as usize)
                .cloned()
                .flatten()
                .ok_or(OnnxError::EmptySlot { layer: li, slot: s })
        };
        cur = match layer {
            Layer::Save { slot } => {
                let s = slots.get_mut(*slot as usize).ok_or(OnnxError::EmptySlot {
                    layer: li,
                    slot: *slot,
                })?;
                *s = Some(cur.clone());
                continue;
            }
            Layer::Swap { slot } => {
                let saved = slot_val(&slots, *slot)?;
                slots[*slot as usize] = Some(std::mem::replace(&mut cur, saved));
                continue;
            }
            Layer::Neuron(n) => match n.mode {
                NeuronMode::Sequential => sequential_neuron_int(&mut b, li, n, &cur)?,
                NeuronMode::Parallel => parallel_neuron_int(&mut b, li, n, &cur)?,
            },
            _ => {
                let saved = match layer {
                    Layer::Add { slot, .. } => Some(slot_val(&slots, *slot)?),
                    Layer::Seca(s) => s.add_slot.map(|s| slot_val(&slots, s)).transpose()?,
                    _ => None,
                };
                let all_once = std::iter::once(&cur)
                    .chain(saved.as_ref())
                    .all(|v| matches!(v.v, Val::Once(_)));
                let (t, q) = if all_once {
                    let s = saved.as_ref().map(|s| (s.v.first().clone(), s.q));
                    let (t, q) = stateless_int(
                        &mut b,
                        li,
                        layer,
                        cur.v.first(),
                        cur.q,
                        s.as_ref().map(|(t, q)| (t, *q)),
                    )?;
                    (Val::Once(t), q)
                } else {
                    let x = b.batched(&cur.v);
                    let s = saved.as_ref().map(|s| (b.batched(&s.v), s.q));
                    let (t, q) = stateless_int(
                        &mut b,
                        li,
                        layer,
                        &x,
                        cur.q,
                        s.as_ref().map(|(t, q)| (t, *q)),
                    )?;
                    (Val::Batched(t), q)
                };
                IVal { v: t, q }
            }
        };
    }
    b.scope = "out.".into();
    check_len(layers.len(), "output", cur.v.first().numel(), classes)?;
    let q = cur.q;
    let sum = match &cur.v {
        Val::Once(y) => {
            let y = b.i32_of(&y.name, q);
            let t = b.const_i32(t_steps as i32);
            b.node("Mul", &[&y, &t], vec![])
        }
        Val::Steps(ys) => {
            let mut acc = b.i32_of(&ys[0].name, q);
            for y in &ys[1..] {
                let y = b.i32_of(&y.name, q);
                acc = b.node("Add", &[&acc, &y], vec![]);
            }
            acc
        }
        Val::Batched(y) => {
            let y = b.i32_of(&y.name, q);
            let shape = b.const_i64(&[t_steps as i64, -1, classes as i64]);
            let y3 = b.node("Reshape", &[&y, &shape], vec![]);
            let axes = b.const_i64(&[0]);
            b.node("ReduceSum", &[&y3, &axes], vec![attr_int("keepdims", 0)])
        }
    };
    b.node_outs("Flatten", &[&sum], vec![attr_int("axis", 1)], &["y".into()]);
    let (nodes, inits) = b.live_parts(&["y"]);
    let graph = GraphProto {
        node: nodes,
        name: Some("empf_integer".into()),
        initializer: inits,
        input: vec![ValueInfoProto {
            name: Some("x".into()),
            r#type: Some(int_tensor_type(
                &[
                    dim_param("N"),
                    dim_value(x.c),
                    dim_value(x.h),
                    dim_value(x.w),
                ],
                DataType::Float,
            )),
            ..Default::default()
        }],
        output: vec![ValueInfoProto {
            name: Some("y".into()),
            r#type: Some(int_tensor_type(
                &[dim_param("N"), dim_value(classes)],
                DataType::Int32,
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("empf-edge-infer".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use empf_core::format::{encode_model, BinaryConv2d, Blob, Conv2d, InputEncoding, Linear};
    use empf_core::format::{ModelMeta, Shape3};

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// T = 3, 1×6×6: Conv(FP) → N(seq) → BConv → N(par) → AvgPool → GAP → Linear, calibrated.
    pub(in crate::onnx) fn calibrated_model() -> Vec<u8> {
        let t = 3usize;
        let neuron = |mode: NeuronMode| {
            Layer::Neuron(Neuron {
                mode,
                per_channel: false,
                leak: Blob(match mode {
                    NeuronMode::Sequential => f32s(&[0.5, 0.6, 0.7]),
                    NeuronMode::Parallel => Vec::new(),
                }),
                threshold: Blob(f32s(&[0.2, 0.3, 0.25][..t])),
                input_gain: Blob(Vec::new()),
                input_bias: Blob(Vec::new()),
                fixed: None,
            })
        };
        let meta = ModelMeta {
            time_steps: t as u16,
            input: Shape3 { c: 1, h: 6, w: 6 },
            classes: 3,
            encoding: InputEncoding::Direct,
            fixed: None,
        };
        let w: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
        let layers: Vec<Layer<Vec<u8>>> = vec![
            Layer::Conv2d(Conv2d {
                out_channels: 2,
                in_channels: 1,
                kernel: 3,
                stride: 1,
                padding: 1,
                weight: Blob(f32s(&w)),
                bias: Blob(f32s(&[0.05, -0.1])),
                fixed: None,
            }),
            neuron(NeuronMode::Sequential),
            Layer::BinaryConv2d(BinaryConv2d {
                out_channels: 2,
                in_channels: 2,
                kernel: 3,
                stride: 1,
                padding: 1,
                signs: Blob(vec![0b1010_0110, 0b0101_1001, 0b11, 0b0110_1001, 0b1001, 0]),
                gain: Blob(f32s(&[0.3, 0.2])),
                bias: Blob(f32s(&[0.0, 0.1])),
                fixed: None,
            }),
            neuron(NeuronMode::Parallel),
            Layer::AvgPool2,
            Layer::GlobalAvgPool,
            Layer::Linear(Linear {
                out_features: 3,
                in_features: 2,
                weight: Blob(f32s(&[1.0, -0.5, 0.25, 0.75, -1.0, 0.5])),
                bias: Blob(f32s(&[0.0, 0.1, -0.1])),
                fixed: None,
            }),
        ];
        let float = encode_model(&meta, &layers).unwrap();
        let model = Model::decode(&float).unwrap();
        let samples: Vec<Vec<f32>> = (0..8)
            .map(|k| {
                (0..36)
                    .map(|i| ((i * 7 + k * 3) % 11) as f32 / 5.0 - 1.0)
                    .collect()
            })
            .collect();
        let cal =
            empf_core::quant::calibrate(&model, samples.iter().map(|s| s.as_slice())).unwrap();
        empf_core::quant::quantize(&model, &cal).unwrap()
    }

    #[test]
    fn integer_graph_uses_8bit_integer_ops_and_int32_output() {
        let bytes = calibrated_model();
        let model = Model::decode(&bytes).unwrap();
        let g = to_onnx_integer_proto(&model).unwrap().graph.unwrap();
        crate::onnx::tests::assert_wired(&g);
        let count = |op: &str| {
            g.node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some(op))
                .count()
        };
        // FP conv: the int8 input's 2 uint8 planes (max(x,0), max(−x,0)) × 4 uint8 weight
        // planes (2 digits each of max(w,0), max(−w,0)) = 8 ConvInteger; the binary conv on
        // uint8 spikes: 1. Linear on the GAP sum (0..=9·255·4: 2 digits) × 4 = 8 MatMulInteger.
        // No float conv, matmul or neuron arithmetic.
        assert_eq!(count("ConvInteger"), 8 + 1);
        assert_eq!(count("MatMulInteger"), 8);
        for op in ["Conv", "MatMul", "Gemm", "Relu", "AveragePool"] {
            assert_eq!(count(op), 0, "{op}");
        }
        let dtype = |name: &str| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref().unwrap().starts_with(name))
                .map(|t| t.data_type.unwrap())
                .unwrap()
        };
        assert_eq!(dtype("l2_bconv_signs"), DataType::Int8 as i32);
        assert_eq!(dtype("l0_conv_w_pos0"), DataType::Uint8 as i32);
        assert_eq!(dtype("l0_conv_w_neg1"), DataType::Uint8 as i32);
        let out = g.output[0].r#type.as_ref().unwrap();
        match &out.value {
            Some(type_proto::Value::TensorType(t)) => {
                assert_eq!(t.elem_type, Some(DataType::Int32 as i32))
            }
            other => panic!("output type {other:?}"),
        }
        // The ±1 weights are exactly the packed signs (LSB first, 1 = +1).
        let signs = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref().unwrap().starts_with("l2_bconv_signs"))
            .unwrap();
        let w: Vec<i8> = signs
            .raw_data
            .as_ref()
            .unwrap()
            .iter()
            .map(|&b| b as i8)
            .collect();
        assert_eq!(&w[..8], &[-1, 1, 1, -1, -1, 1, -1, 1]);
        // Every node input is defined before use.
        let mut known: std::collections::HashSet<String> = g
            .initializer
            .iter()
            .map(|t| t.name.clone().unwrap())
            .collect();
        known.insert("x".into());
        for n in &g.node {
            for i in &n.input {
                assert!(known.contains(i), "{:?} uses undefined {i}", n.name);
            }
            known.extend(n.output.iter().cloned());
        }
    }

    /// A max pool runs on the stored integers: spikes (uint8) straight into `MaxPool`; int32
    /// currents through an exact float `Cast` and back (ONNX `MaxPool` has no int32).
    #[test]
    fn max_pool_takes_spikes_as_uint8_and_currents_through_float() {
        use empf_core::format::MaxPool;
        let bytes = calibrated_model();
        let model = Model::decode(&bytes).unwrap();
        let mut layers: Vec<Layer<Vec<u8>>> = model
            .layers()
            .map(|l| l.unwrap().map(&mut |b: &[u8]| b.to_vec()))
            .collect();
        // 3×3, stride 1, pad 1 keeps 6×6: after the FP conv (currents) and its neuron (spikes).
        let pool = || {
            Layer::MaxPool(MaxPool {
                kernel: 3,
                stride: 1,
                padding: 1,
            })
        };
        layers.insert(2, pool());
        layers.insert(1, pool());
        let pooled = encode_model(model.meta(), &layers).unwrap();
        let g = to_onnx_integer_proto(&Model::decode(&pooled).unwrap())
            .unwrap()
            .graph
            .unwrap();
        let producer = |name: &str| {
            g.node
                .iter()
                .find(|n| n.output.iter().any(|o| o == name))
                .unwrap()
        };
        let cast_to = |n: &NodeProto| {
            assert_eq!(n.op_type.as_deref(), Some("Cast"), "{:?}", n.name);
            n.attribute[0].i.unwrap()
        };
        let pools: Vec<&NodeProto> = g
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("MaxPool"))
            .collect();
        assert_eq!(pools.len(), 2);
        assert_eq!(
            cast_to(producer(&pools[0].input[0])),
            DataType::Float as i64
        );
        // The sequential neuron's uint8 step spikes, joined over T for the batched pool.
        let joined = producer(&pools[1].input[0]);
        assert_eq!(joined.op_type.as_deref(), Some("Concat"));
        for step in &joined.input {
            assert_eq!(cast_to(producer(step)), DataType::Uint8 as i64);
        }
        let pads = |n: &NodeProto| {
            n.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("pads"))
                .unwrap()
                .ints
                .clone()
        };
        assert_eq!(pads(pools[0]), [1, 1, 1, 1]);
        // The pooled currents return to int32 before the neuron's requantisation.
        let after = g
            .node
            .iter()
            .find(|n| n.input.first() == Some(&pools[0].output[0]))
            .unwrap();
        assert_eq!(cast_to(after), DataType::Int32 as i64);
    }

    #[test]
    fn uncalibrated_model_is_a_named_error() {
        let meta = ModelMeta {
            time_steps: 1,
            input: Shape3 { c: 1, h: 1, w: 2 },
            classes: 1,
            encoding: InputEncoding::Direct,
            fixed: None,
        };
        let layers: Vec<Layer<Vec<u8>>> = vec![
            Layer::Flatten,
            Layer::Linear(Linear {
                out_features: 1,
                in_features: 2,
                weight: Blob(f32s(&[1.0, 2.0])),
                bias: Blob(f32s(&[0.0])),
                fixed: None,
            }),
        ];
        let float = encode_model(&meta, &layers).unwrap();
        let m = Model::decode(&float).unwrap();
        assert!(matches!(
            to_onnx_integer_proto(&m),
            Err(OnnxError::NoIntegerPath { .. })
        ));
    }
}
