//! The integer path as a QDQ graph (`edge-infer to-onnx --qdq uint8|int8`): standard
//! `QuantizeLinear` / `DequantizeLinear` around 8-bit convolutions and matmuls, the form that
//! TensorRT's explicit quantization and ONNX Runtime's QDQ fusions read (`DQ → Conv → Q`
//! becomes ORT's `QLinearConv`, `DQ → MatMul → Q` its `QLinearMatMul`).
//!
//! Values keep `empf-core`'s integer-path units (spikes `0..=255`, currents in the calibrated
//! current scale) as float32 between the quantisers:
//!
//! - **Spikes** are 8-bit at every neuron output and every ±1 layer input: **uint8** with scale 1
//!   (`uint8`, exactly `core`'s spike codes except at rounding ties), or **int8** with scale 2
//!   (`int8`, the only activation type TensorRT takes: `round_half_even(s/2)`, saturating at
//!   127 = spike 254), zero point 0. Every stateless layer runs once on all `T·N` samples: in
//!   the `uint8` graph the steps of a sequential neuron are joined on the batch axis in 8 bits
//!   (`Concat` of the quantised tensors, one `DequantizeLinear`); in the `int8` graph in float,
//!   after adjacent `Q → DQ` pairs, the only place where ONNX Runtime converts int8 activations
//!   to the uint8 its x86 kernels take (with a `Concat` between, its ±1 convs ran in float). A
//!   2×2 average pool on the 8-bit grid is a depthwise `Conv` with int8 ones weights and scale
//!   ¼ between `DequantizeLinear` and `QuantizeLinear` (ORT fuses it into a depthwise
//!   `QLinearConv`; its `QLinearAveragePool` was slower); `core` keeps the exact sum of the 4
//!   spikes.
//! - **±1 weights** are int8 with a per-channel `DequantizeLinear` scale `|m_c|·2^−sh_c` (the
//!   layer's requantisation multiplier: α·BN gain in current units; a negative `m_c` moves into
//!   the weights' sign), so the conv/matmul accumulates `Σ ±spike` in 32 bits and scales it once.
//!   The per-channel offset is the conv bias (int32 `DequantizeLinear` for ONNX Runtime, float
//!   for TensorRT, whose `DequantizeLinear` takes no int32).
//! - **Currents** leave each ±1 layer on an int8 grid of scale 2^17/127: calibration maps each
//!   current tensor's largest magnitude to 2^17 (`empf_core::quant`), so 127 steps cover it.
//!   This is the main difference from `core` (i32 currents): one step is about 2–3 spike levels
//!   of the next neuron on the bench model. In the `uint8` graph the codes are stored as uint8
//!   with zero point 128 (the same values): ORT's x86 8-bit conv fuses only where its input and
//!   output share a type. There a sequential neuron splits the 8-bit current into its steps
//!   and each step's `DequantizeLinear` carries the drive's scale too.
//! - **Neurons** run in float with the membrane in spike units and without intermediate
//!   rounding, on `u = m − θ_t`: `u_0 = d_0 − θ_0`, `u_t = λ_t·min(u_{t−1}, 0) + d_t +
//!   (λ_t·θ_{t−1} − θ_t)` for the drive `d_t = I·m_t·2^−sh_t/256 + off_t/256` (the same as
//!   `m = λ_t·v + d_t`, `s = Relu(m − θ_t)`, `v = m − s`), spikes `QDQ(u)` (uint8: the quantiser
//!   saturates at 0) or `QDQ(Relu(u))` (int8); `min(u, 0)` is a `Clip`. `core` rounds the drive
//!   and leak to integers and clamps the membrane at ±2^30.
//! - Full-precision layers (the first conv on the int8 input, the classifier) stay float
//!   `Conv`/`MatMul` with `w_i16·m·2^−sh` weights; the input is quantised as in
//!   [`Model::quantize_input`]. A ±1 layer whose input is not 8-bit (a signed current in a residual
//!   net) runs in float on the dequantised weights. Residual adds and SECA follow
//!   `core/src/infer/fixed.rs` in float (`Floor(x·2^−sh + ½)` for a rounding shift).
//! - Nodes that `y` does not read are dropped before writing (ONNX Runtime would run them).
//!
//! Output `y` is int32 `[N, classes]` like the integer graph's ([`super::to_onnx_integer_proto`]),
//! in units of `logit_scale`. The relation to `infer_fixed` is a bound, not equality; it is
//! tested on the conformance models (`tests/tests/ort_vs_core.rs`) and by the Fashion-MNIST
//! test-set accuracy (README).

use super::integer::{int_tensor_type, le_i16, neuron_int, signs_i8, Rq};
use super::*;
use empf_core::format::{FixedAdd, ScalarRequant};
use empf_core::{ACT_LIMIT, MEMBRANE_FRAC_BITS, SPIKE_MAX};

/// The 8-bit type of the activations fed to ±1 layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QdqActivations {
    /// uint8, scale 1: spikes exact (ONNX Runtime).
    Uint8,
    /// int8, scale 2, zero point 0: what TensorRT accepts.
    Int8,
}

/// What is known of a value: its `core` value is `graph value · unit`, with `|core| ≤ bound`.
#[derive(Clone, Copy, Debug)]
struct A {
    bound: f64,
    nonneg: bool,
    unit: f32,
}

#[derive(Clone, Debug)]
struct FVal {
    v: Val,
    a: A,
}

const CURRENT: A = A {
    bound: ACT_LIMIT as f64,
    nonneg: false,
    unit: 1.0,
};

const SPIKES: A = A {
    bound: SPIKE_MAX as f64,
    nonneg: true,
    unit: 1.0,
};

/// `2^−sh` as f32 (exact).
fn pow2_neg(sh: u8) -> f64 {
    (-(sh as f64)).exp2()
}

impl Builder {
    /// Per-channel f32 constant: a scalar when every entry is the same.
    fn qchan(&mut self, hint: &str, dims: &[usize], v: &[f32]) -> String {
        if v.iter().all(|&x| x.to_bits() == v[0].to_bits()) {
            self.cf32(v[0])
        } else {
            self.init_f32(hint, dims, f32_bytes(v.iter().copied()))
        }
    }

    fn qclip(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let (lo, hi) = (self.cf32(lo), self.cf32(hi));
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// `Floor(x + ½)`: round half up of a value that is already scaled.
    fn qround_up(&mut self, x: &str) -> String {
        let h = self.cf32(0.5);
        let p = self.node("Add", &[x, &h], vec![]);
        self.node("Floor", &[&p], vec![])
    }

    /// `requant(x·unit, m, sh) + off` per channel in float (`dims` broadcast over `x`).
    fn qrequant(&mut self, hint: &str, x: &str, r: &Rq, dims: &[usize], unit: f32) -> String {
        let scale: Vec<f32> =
            r.m.iter()
                .zip(&r.sh)
                .map(|(&m, &sh)| (m as f64 * pow2_neg(sh) * unit as f64) as f32)
                .collect();
        let s = self.qchan(&format!("{hint}_scale"), dims, &scale);
        let p = self.node("Mul", &[x, &s], vec![]);
        self.qfinish_rq(hint, &p, r, dims)
    }

    /// The rounding and offset of a requantisation whose multiply is done (`p = x·m·2^−sh`).
    fn qfinish_rq(&mut self, hint: &str, p: &str, r: &Rq, dims: &[usize]) -> String {
        let mut p = p.to_string();
        if r.sh.iter().any(|&s| s > 0) {
            // For sh = 0, p is an integer and Floor(p + ½) = p.
            p = self.qround_up(&p);
        }
        if r.off.iter().any(|&o| o != 0) {
            let off: Vec<f32> = r.off.iter().map(|&o| o as f32).collect();
            let o = self.qchan(&format!("{hint}_off"), dims, &off);
            p = self.node("Add", &[&p, &o], vec![]);
        }
        p
    }

    fn qscalar_rq(&mut self, x: &str, s: &ScalarRequant, unit: f32) -> String {
        let r = Rq {
            m: vec![s.multiplier as i64],
            sh: vec![s.shift],
            off: vec![0],
        };
        self.qrequant("rq", x, &r, &[], unit)
    }

    /// A zero point of the 8-bit type.
    fn qzero(&mut self, signed: bool) -> String {
        let key = format!("qdq zero point {signed}");
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let n = self.init_8("zp", &[], signed, vec![0]);
        self.consts.insert(key, n.clone());
        n
    }

    /// `DequantizeLinear(QuantizeLinear(x, s, 0), s, 0)`: `x` on the 8-bit grid of `act`
    /// (`x` itself if it already is the output of such a pair).
    fn qdq(&mut self, x: &str, act: QdqActivations) -> String {
        if self.consts.contains_key(&format!("dq output {x}")) {
            return x.to_string();
        }
        let (scale, signed) = act_grid(act);
        let z = self.qzero(signed);
        let dq = self.q_dq(x, scale, z, signed, 0);
        self.consts.insert(format!("dq output {dq}"), dq.clone());
        dq
    }

    /// `DequantizeLinear(QuantizeLinear(x, scale, z), scale, z)` for the zero point `z` (of
    /// value `zero`). An unsigned pair is recorded in `dq_of`, so that step tensors are joined
    /// and split in 8 bits. A signed one (the `int8` graph) is not: ONNX Runtime's x86 kernels
    /// take uint8 activations and it converts int8 ones only in adjacent `QuantizeLinear →
    /// DequantizeLinear` pairs; a `Concat` or `Split` between them left every ±1 conv unfused (a
    /// float conv, the graph half as fast), so there the steps are joined in float.
    fn q_dq(&mut self, x: &str, scale: f32, z: String, signed: bool, zero: u8) -> String {
        let s = self.cf32(scale);
        let q = self.node("QuantizeLinear", &[x, &s, &z], vec![]);
        let dq = self.node("DequantizeLinear", &[&q, &s, &z], vec![]);
        if !signed {
            let d = Dq {
                q,
                scale,
                zp: z,
                zero,
            };
            self.dq_of.insert(dq.clone(), d);
        }
        dq
    }

    /// The step tensors `xs` joined on the batch axis in 8 bits (`Concat` of their quantised
    /// sources, one `DequantizeLinear`), where every one is a recorded (`q_dq`) output of the
    /// same scale and zero point: a quarter of the bytes of a float `Concat`, and the consumer
    /// (`DQ → Conv → Q`, a ±1 conv or a pool) reads a `DequantizeLinear` that ONNX Runtime fuses.
    pub(super) fn joined_8bit(&mut self, xs: &[Tensor]) -> Option<String> {
        let srcs: Vec<Dq> = xs
            .iter()
            .map(|x| self.dq_of.get(&x.name).cloned())
            .collect::<Option<_>>()?;
        let first = srcs.first()?.clone();
        if srcs
            .iter()
            .any(|d| d.scale.to_bits() != first.scale.to_bits() || d.zp != first.zp)
        {
            return None;
        }
        let refs: Vec<&str> = srcs.iter().map(|d| d.q.as_str()).collect();
        let q = self.node("Concat", &refs, vec![attr_int("axis", 0)]);
        let s = self.cf32(first.scale);
        let dq = self.node("DequantizeLinear", &[&q, &s, &first.zp], vec![]);
        // On the same grid as its parts.
        if xs
            .iter()
            .all(|x| self.consts.contains_key(&format!("dq output {}", x.name)))
        {
            self.consts.insert(format!("dq output {dq}"), dq.clone());
        }
        self.dq_of.insert(dq.clone(), Dq { q, ..first });
        Some(dq)
    }

    /// `QuantizeLinear → DequantizeLinear` of a current on the int8 grid of `scale` (codes
    /// −128..=127). For ONNX Runtime (`uint8` activations) as uint8 with zero point 128, the same
    /// values: its x86 8-bit conv fuses only where input and output share a type, and a uint8
    /// current lets the step split of a sequential neuron read the conv's 8-bit output.
    fn qdq_current(&mut self, x: &str, scale: f32, act: QdqActivations) -> String {
        let (signed, zp) = match act {
            QdqActivations::Uint8 => (false, 128u8),
            QdqActivations::Int8 => (true, 0u8),
        };
        let key = format!("qdq current zero point {signed}");
        let z = match self.consts.get(&key) {
            Some(n) => n.clone(),
            None => {
                let n = self.init_8("zp", &[], signed, vec![zp]);
                self.consts.insert(key, n.clone());
                n
            }
        };
        self.q_dq(x, scale, z, signed, zp)
    }
}

/// `(scale, signed)` of the activation grid: uint8 step 1, or int8 step 2.
fn act_grid(act: QdqActivations) -> (f32, bool) {
    match act {
        QdqActivations::Uint8 => (1.0, false),
        QdqActivations::Int8 => (2.0, true),
    }
}

/// Whether a value fits the 8-bit activation grid (nonnegative, at most 255 graph units).
fn fits_8bit(a: A) -> bool {
    a.nonneg && a.bound / a.unit as f64 <= 255.0 + 1e-9
}

/// Scale of the int8 current at the output of a ±1 layer, in current units: calibration maps
/// each current tensor's largest magnitude to 2^17 (`empf_core::quant`), so ±127 steps of
/// 2^17/127 cover the calibrated range (max calibration).
const CURRENT_Q_SCALE: f32 = (1u32 << 17) as f32 / 127.0;

/// The 8-bit input of a ±1 layer: `Q → DQ` of `x` and `true`, or `x` itself and `false` if it
/// does not fit 8 bits (a signed current in a residual net): then the layer runs in float.
fn qdq_input(b: &mut Builder, x: &str, a: A, act: QdqActivations) -> (String, bool) {
    if fits_8bit(a) {
        (b.qdq(x, act), true)
    } else {
        (x.to_string(), false)
    }
}

/// The bias of a ±1 layer in the form the 8-bit conv fusions read: for ONNX Runtime (`uint8`)
/// an int32 `DequantizeLinear` with scale `x_scale·w_scale[c]`; for TensorRT (`int8`, whose
/// `DequantizeLinear` takes no int32) a float initializer. `None` if every offset is 0 or an
/// int32 bias would overflow (then the offset is added after the conv).
fn conv_bias(
    b: &mut Builder,
    hint: &str,
    r: &Rq,
    unit: f32,
    act: QdqActivations,
) -> Option<String> {
    if r.off.iter().all(|&o| o == 0) {
        return None;
    }
    let o = r.off.len();
    match act {
        QdqActivations::Int8 => {
            let v: Vec<f32> = r.off.iter().map(|&x| x as f32).collect();
            Some(b.init_f32(&format!("{hint}_bias"), &[o], f32_bytes(v)))
        }
        QdqActivations::Uint8 => {
            let (xs, _) = act_grid(act);
            let scale: Vec<f32> = w_scales(r, unit).iter().map(|&w| w * xs).collect();
            let mut q = Vec::with_capacity(o);
            for (&off, &sc) in r.off.iter().zip(&scale) {
                let v = (off as f64 / sc as f64).round();
                if !v.is_finite() || v.abs() >= i32::MAX as f64 || sc == 0.0 {
                    return None;
                }
                q.push(v as i32);
            }
            let name = b.fresh(&format!("{hint}_bias_i32"));
            b.inits.push(TensorProto {
                dims: vec![o as i64],
                data_type: Some(DataType::Int32 as i32),
                name: Some(name.clone()),
                raw_data: Some(q.iter().flat_map(|x| x.to_le_bytes()).collect()),
                ..Default::default()
            });
            let sn = b.init_f32(&format!("{hint}_bias_scale"), &[o], f32_bytes(scale));
            let zn = b.fresh(&format!("{hint}_bias_zp"));
            b.inits.push(TensorProto {
                dims: vec![o as i64],
                data_type: Some(DataType::Int32 as i32),
                name: Some(zn.clone()),
                raw_data: Some(vec![0; 4 * o]),
                ..Default::default()
            });
            Some(b.node(
                "DequantizeLinear",
                &[&name, &sn, &zn],
                vec![attr_int("axis", 0)],
            ))
        }
    }
}

/// Per-channel weight scales `|m_c|·2^−sh_c·unit`.
fn w_scales(r: &Rq, unit: f32) -> Vec<f32> {
    r.m.iter()
        .zip(&r.sh)
        .map(|(&m, &sh)| (m.unsigned_abs() as f64 * pow2_neg(sh) * unit as f64) as f32)
        .collect()
}

/// int8 ±1 weights (`w`, one row of `taps` per output channel, already in the ONNX layout
/// `rows_out` × `taps` or transposed when `transposed`) with the per-channel scale
/// `|m_c|·2^−sh_c·unit`; channels with `m_c < 0` get negated weights.
#[allow(clippy::too_many_arguments)]
fn qweights(
    b: &mut Builder,
    hint: &str,
    dims: &[usize],
    rows: &[u8],
    o: usize,
    taps: usize,
    r: &Rq,
    unit: f32,
    transposed: bool,
) -> String {
    let neg: Vec<bool> = r.m.iter().map(|&m| m < 0).collect();
    let mut w = vec![0u8; o * taps];
    for c in 0..o {
        for k in 0..taps {
            let v = rows[c * taps + k] as i8;
            let v = if neg[c] { -v } else { v };
            let j = if transposed { k * o + c } else { c * taps + k };
            w[j] = v as u8;
        }
    }
    let wn = b.init_8(&format!("{hint}_i8"), dims, true, w);
    let scale = w_scales(r, unit);
    let sn = b.init_f32(&format!("{hint}_scale"), &[o], f32_bytes(scale));
    let zn = b.init_8(&format!("{hint}_zp"), &[o], true, vec![0; o]);
    let axis = if transposed { 1 } else { 0 };
    b.node(
        "DequantizeLinear",
        &[&wn, &sn, &zn],
        vec![attr_int("axis", axis)],
    )
}

/// The current from a ±1 layer's scaled output `acc·m·2^−sh`: rounding, offset, `Clip`.
fn conv_out(b: &mut Builder, hint: &str, acc_scaled: &str, r: &Rq, dims: &[usize]) -> String {
    let p = b.qfinish_rq(hint, acc_scaled, r, dims);
    b.qclip(&p, -(ACT_LIMIT as f32), ACT_LIMIT as f32)
}

/// A stateless layer of the QDQ graph on one tensor.
fn stateless_qdq(
    b: &mut Builder,
    li: usize,
    layer: &Layer<&[u8]>,
    cur: &Tensor,
    a: A,
    saved: Option<(&Tensor, A)>,
    act: QdqActivations,
) -> Result<(Tensor, A), OnnxError> {
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
            let r = Rq::read(li, &f.requant, o)?;
            // The requantisation folded into the weights and bias: w_i16·m·2^−sh (no rounding).
            let w: Vec<f32> = (0..o * taps)
                .map(|j| {
                    let c = j / taps;
                    (le_i16(f.weight.bytes(), j).unwrap_or(0) as f64
                        * r.m[c] as f64
                        * pow2_neg(r.sh[c])
                        * a.unit as f64) as f32
                })
                .collect();
            let bias: Vec<f32> = r.off.iter().map(|&x| x as f32).collect();
            let xv = b.to4(cur);
            let wn = b.init_f32(&format!("l{li}_conv_w"), &[o, i, k, k], f32_bytes(w));
            let bn = b.init_f32(&format!("l{li}_conv_b"), &[o], f32_bytes(bias));
            let (s, p) = (c.stride as i64, c.padding as i64);
            let attrs = vec![
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ];
            let name = b.node("Conv", &[&xv.name, &wn, &bn], attrs);
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
            let (xq, q8) = qdq_input(b, &xv.name, a, act);
            let rows = signs_i8(c.signs.bytes(), o, taps);
            let hint = format!("l{li}_bconv");
            let w = qweights(b, &hint, &[o, i, k, k], &rows, o, taps, &r, a.unit, false);
            let (s, p) = (c.stride as i64, c.padding as i64);
            let attrs = vec![
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ];
            let name = if q8 {
                // DQ → Conv(+bias) → Q: one 8-bit conv (ORT QLinearConv, TensorRT int8).
                let bias = conv_bias(b, &hint, &r, a.unit, act);
                let acc = match &bias {
                    Some(bn) => b.node("Conv", &[&xq, &w, bn], attrs),
                    None => b.node("Conv", &[&xq, &w], attrs),
                };
                let y = b.qdq_current(&acc, CURRENT_Q_SCALE, act);
                if bias.is_none() {
                    add_offset(b, &hint, &y, &r, &[1, o, 1, 1])
                } else {
                    y
                }
            } else {
                let acc = b.node("Conv", &[&xq, &w], attrs);
                conv_out(b, &format!("l{li}"), &acc, &r, &[1, o, 1, 1])
            };
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
            let rq = Rq::read(li, &f.requant, o)?;
            // MatMul wants [in, out]; the requantisation is folded in (w_i16·m·2^−sh).
            let mut w = vec![0f32; o * i];
            for r in 0..o {
                for c in 0..i {
                    w[c * o + r] = (le_i16(f.weight.bytes(), r * i + c).unwrap_or(0) as f64
                        * rq.m[r] as f64
                        * pow2_neg(rq.sh[r])
                        * a.unit as f64) as f32;
                }
            }
            let xv = b.to2(cur);
            let wn = b.init_f32(&format!("l{li}_fc_w"), &[i, o], f32_bytes(w));
            let acc = b.node("MatMul", &[&xv.name, &wn], vec![]);
            let name = add_offset(b, &format!("l{li}"), &acc, &rq, &[1, o]);
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
            let r = Rq::read(li, f, o)?;
            let xv = b.to2(cur);
            let (xq, q8) = qdq_input(b, &xv.name, a, act);
            let hint = format!("l{li}_bfc");
            let w = qweights(b, &hint, &[i, o], &rows, o, i, &r, a.unit, true);
            let acc = b.node("MatMul", &[&xq, &w], vec![]);
            let name = if q8 {
                // DQ → MatMul → Q (ORT QLinearMatMul); the offset after.
                let y = b.qdq_current(&acc, CURRENT_Q_SCALE, act);
                add_offset(b, &hint, &y, &r, &[1, o])
            } else {
                conv_out(b, &format!("l{li}"), &acc, &r, &[1, o])
            };
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
            // The mean of each 2×2 window (floor mode drops an odd last row/column, as core);
            // the core sum is 4·mean.
            let xv = b.to4(cur);
            let attrs = vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
            ];
            // On the 8-bit grid (spikes) the pool is a depthwise 8-bit conv with weights 1
            // (scale ¼) whose mean is put back on the grid: `DQ → Conv → Q`, which ONNX Runtime
            // runs as a depthwise QLinearConv (its QLinearAveragePool, what `DQ → AveragePool
            // → Q` becomes, is several times slower here) and TensorRT as an int8 conv. Off the
            // grid (a current), a float `AveragePool`.
            let name = if fits_8bit(a) {
                let xq = b.qdq(&xv.name, act);
                let c = xv.c;
                let ones = b.init_8("pool_ones", &[c, 1, 2, 2], true, vec![1; 4 * c]);
                let quarter = b.cf32(0.25);
                let z = b.qzero(true);
                let w = b.node("DequantizeLinear", &[&ones, &quarter, &z], vec![]);
                let mut attrs = attrs;
                attrs.push(attr_int("group", c as i64));
                let mean = b.node("Conv", &[&xq, &w], attrs);
                b.qdq(&mean, act)
            } else {
                b.node("AveragePool", &[&xv.name], attrs)
            };
            (
                Tensor {
                    name,
                    h: xv.h / 2,
                    w: xv.w / 2,
                    ..xv
                },
                A {
                    bound: a.bound * 4.0,
                    nonneg: a.nonneg,
                    unit: a.unit * 4.0,
                },
            )
        }
        Layer::MaxPool(p) => {
            // The maximum of values on the 8-bit grid (spikes) is on the grid, of currents is a
            // current: no quantiser needed, the input's unit and bound hold.
            let xv = b.to4(cur);
            (max_pool(b, &xv, &xv.name.clone(), p), a)
        }
        Layer::GlobalAvgPool => {
            let xv = b.to4(cur);
            let axes = b.const_i64(&[2, 3]);
            let name = b.node(
                "ReduceSum",
                &[&xv.name, &axes],
                vec![attr_int("keepdims", 1)],
            );
            (
                Tensor {
                    name,
                    h: 1,
                    w: 1,
                    ..xv
                },
                A {
                    bound: a.bound * (xv.h * xv.w) as f64,
                    ..a
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
                a,
            )
        }
        Layer::Add { slot, fixed } => {
            let f = fixed.as_ref().ok_or(missing)?;
            let (saved, sa) = saved.ok_or(OnnxError::EmptySlot {
                layer: li,
                slot: *slot,
            })?;
            check_len(li, "saved tensor", saved.numel(), cur.numel())?;
            (qdq_add(b, cur, a, saved, sa, f), CURRENT)
        }
        Layer::Seca(s) => {
            let f = s.fixed.as_ref().ok_or(missing)?;
            let (mut v, mut a) = (cur.clone(), a);
            if let Some((saved, sa)) = saved {
                check_len(li, "saved tensor", saved.numel(), v.numel())?;
                let fa = f
                    .add
                    .as_ref()
                    .ok_or(OnnxError::NoIntegerPath { layer: li })?;
                v = qdq_add(b, &v, a, saved, sa, fa);
                a = CURRENT;
            }
            let xv = b.to4(&v);
            let c_n = xv.c;
            let x = core_units(b, &xv.name, a);
            let axes = b.const_i64(&[2, 3]);
            let z = b.node("ReduceSum", &[&x, &axes], vec![attr_int("keepdims", 0)]);
            let mut band = vec![0f32; c_n * c_n];
            for c in 0..c_n {
                for (j, &wj) in f.weight.iter().enumerate() {
                    let src = c as isize + j as isize - 2;
                    if src >= 0 && (src as usize) < c_n {
                        band[src as usize * c_n + c] += wj as f32;
                    }
                }
            }
            let wb = b.init_f32(&format!("l{li}_seca_band"), &[c_n, c_n], f32_bytes(band));
            let mut y = b.node("MatMul", &[&z, &wb], vec![]);
            if f.shift > 0 {
                let s = b.cf32(pow2_neg(f.shift) as f32);
                y = b.node("Mul", &[&y, &s], vec![]);
                y = b.qround_up(&y);
            }
            if f.bias_q8 != 0 {
                let bq = b.cf32(f.bias_q8 as f32);
                y = b.node("Add", &[&y, &bq], vec![]);
            }
            let yc = b.qclip(&y, -2048.0, 2047.0);
            let c2048 = b.cf32(2048.0);
            let idx = b.node("Add", &[&yc, &c2048], vec![]);
            let idx = b.cast(&idx, DataType::Int64);
            let table: Vec<f32> = (0..4096)
                .map(|u| empf_core::infer::fixed::sigmoid_q15(u - 2048) as f32)
                .collect();
            let tname = match b.consts.get("sigmoid_q15 f32 table") {
                Some(n) => n.clone(),
                None => {
                    let n = b.init_f32("sigmoid_q15", &[4096], f32_bytes(table));
                    b.consts.insert("sigmoid_q15 f32 table".into(), n.clone());
                    n
                }
            };
            let g = b.node("Gather", &[&tname, &idx], vec![attr_int("axis", 0)]);
            let ax = b.const_i64(&[2, 3]);
            let g4 = b.node("Unsqueeze", &[&g, &ax], vec![]);
            let p = b.node("Mul", &[&x, &g4], vec![]);
            let s = b.cf32(pow2_neg(15) as f32);
            let p = b.node("Mul", &[&p, &s], vec![]);
            let name = b.qround_up(&p);
            (
                Tensor { name, ..xv },
                A {
                    bound: a.bound,
                    nonneg: a.nonneg,
                    unit: 1.0,
                },
            )
        }
        Layer::Neuron(_) | Layer::Save { .. } | Layer::Swap { .. } => {
            unreachable!("not a stateless layer: handled by the walk")
        }
    })
}

/// `x + off` per channel (nothing if every offset is 0).
fn add_offset(b: &mut Builder, hint: &str, x: &str, r: &Rq, dims: &[usize]) -> String {
    if r.off.iter().all(|&o| o == 0) {
        return x.to_string();
    }
    let off: Vec<f32> = r.off.iter().map(|&o| o as f32).collect();
    let o = b.qchan(&format!("{hint}_off"), dims, &off);
    b.node("Add", &[x, &o], vec![])
}

/// `x` in core units (`Mul` by the unit when it is not 1).
fn core_units(b: &mut Builder, x: &str, a: A) -> String {
    if a.unit == 1.0 {
        x.to_string()
    } else {
        let u = b.cf32(a.unit);
        b.node("Mul", &[x, &u], vec![])
    }
}

/// `sat(rq(main) + rq(saved), ACT_LIMIT)`.
fn qdq_add(b: &mut Builder, x: &Tensor, xa: A, s: &Tensor, sa: A, f: &FixedAdd) -> Tensor {
    let (x, s) = if x.rank2 == s.rank2 {
        (x.clone(), s.clone())
    } else {
        (b.to2(x), b.to2(s))
    };
    let rx = b.qscalar_rq(&x.name, &f.main, xa.unit);
    let rs = b.qscalar_rq(&s.name, &f.saved, sa.unit);
    let sum = b.node("Add", &[&rx, &rs], vec![]);
    Tensor {
        name: b.qclip(&sum, -(ACT_LIMIT as f32), ACT_LIMIT as f32),
        ..x
    }
}

/// The neuron drive in spike units, split into its per-channel factor and offset:
/// `x·unit·m·2^−sh / 256 + off / 256` (the membrane of `core` is in units of `Δ_spike / 256`;
/// here it is in `Δ_spike`, unrounded).
fn drive_terms(r: &Rq, unit: f32) -> (Vec<f64>, Vec<f64>) {
    let d = (1u32 << MEMBRANE_FRAC_BITS) as f64;
    let scale =
        r.m.iter()
            .zip(&r.sh)
            .map(|(&m, &sh)| m as f64 * pow2_neg(sh) * unit as f64 / d);
    let off = r.off.iter().map(|&o| o as f64 / d);
    (scale.collect(), off.collect())
}

/// `x·scale + add` per channel, the `Add` left out where every `add` is 0.
fn scale_add(
    b: &mut Builder,
    hint: &str,
    x: &str,
    scale: &str,
    add: &[f64],
    dims: &[usize],
) -> String {
    let p = b.node("Mul", &[x, scale], vec![]);
    if add.iter().all(|&a| a == 0.0) {
        return p;
    }
    let add: Vec<f32> = add.iter().map(|&a| a as f32).collect();
    let a = b.qchan(&format!("{hint}_add"), dims, &add);
    b.node("Add", &[&p, &a], vec![])
}

/// The 8-bit spikes `QDQ(Relu(u))` of the membrane over threshold `u = m − θ` (spike units).
/// `core` rounds `(s·256 + 128) >> 8` and caps at 255; `QuantizeLinear` rounds half to even and
/// saturates, for `uint8` at 0 too, so there the `Relu` is the quantiser's own (same codes).
fn qfire(b: &mut Builder, u: &str, act: QdqActivations) -> String {
    match act {
        QdqActivations::Uint8 => b.qdq(u, act),
        QdqActivations::Int8 => {
            let s = b.node("Relu", &[u], vec![]);
            b.qdq(&s, act)
        }
    }
}

/// `DequantizeLinear(q)` with a per-channel scale (axis 1; a scalar when all are the same).
fn dq_scaled(b: &mut Builder, hint: &str, q: &str, d: &Dq, scale: &[f32]) -> String {
    if scale.iter().all(|&s| s.to_bits() == scale[0].to_bits()) {
        let s = b.cf32(scale[0]);
        return b.node("DequantizeLinear", &[q, &s, &d.zp], vec![]);
    }
    let s = b.init_f32(
        &format!("{hint}_dq_scale"),
        &[scale.len()],
        f32_bytes(scale.iter().copied()),
    );
    let z = b.init_8(
        &format!("{hint}_dq_zp"),
        &[scale.len()],
        false,
        vec![d.zero; scale.len()],
    );
    b.node("DequantizeLinear", &[q, &s, &z], vec![attr_int("axis", 1)])
}

/// Thresholds in spike units.
fn theta(th: &[i64]) -> Vec<f64> {
    th.iter()
        .map(|&x| x as f64 / (1u32 << MEMBRANE_FRAC_BITS) as f64)
        .collect()
}

fn parallel_neuron_qdq(
    b: &mut Builder,
    li: usize,
    n: &Neuron<&[u8]>,
    cur: &FVal,
    act: QdqActivations,
) -> Result<FVal, OnnxError> {
    let t_steps = b.t_steps;
    let p = neuron_int(li, n, t_steps, cur.v.first().c)?;
    let per = p.per;
    let unit = cur.a.unit;
    let same = |v: &[i64]| v.chunks_exact(per).all(|s| s == &v[..per]);
    let sh64: Vec<i64> = p.rq.sh.iter().map(|&s| s as i64).collect();
    let all_same = same(&p.rq.m) && same(&sh64) && same(&p.rq.off) && same(&p.th);
    // `u = drive − θ` in one multiply and one add: `x·scale + (off − θ)`.
    let neuron_core = |b: &mut Builder, x: &str, r: &Rq, th: &[i64], dims: &[usize]| {
        let (scale, off) = drive_terms(r, unit);
        let scale: Vec<f32> = scale.iter().map(|&v| v as f32).collect();
        let sc = b.qchan(&format!("l{li}_in_scale"), dims, &scale);
        let add: Vec<f64> = off.iter().zip(theta(th)).map(|(o, t)| o - t).collect();
        let u = scale_add(b, &format!("l{li}_in"), x, &sc, &add, dims);
        qfire(b, &u, act)
    };
    if all_same {
        let (x, once) = match &cur.v {
            Val::Once(x) => (x.clone(), true),
            v => (b.batched(v), false),
        };
        let x = neuron_input(b, &x);
        let dims = if per == 1 { vec![] } else { chan_dims(&x, per) };
        let r = p.rq.pick(0..per);
        let s = neuron_core(b, &x.name, &r, &p.th[..per], &dims);
        let s = Tensor { name: s, ..x };
        return Ok(FVal {
            v: if once { Val::Once(s) } else { Val::Batched(s) },
            a: SPIKES,
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
    Ok(FVal {
        v: Val::Batched(Tensor {
            name: b.node("Reshape", &[&s5, &shape], vec![]),
            ..x
        }),
        a: SPIKES,
    })
}

fn sequential_neuron_qdq(
    b: &mut Builder,
    li: usize,
    n: &Neuron<&[u8]>,
    cur: &FVal,
    act: QdqActivations,
) -> Result<FVal, OnnxError> {
    let t_steps = b.t_steps;
    let p = neuron_int(li, n, t_steps, cur.v.first().c)?;
    let per = p.per;
    let v = match &cur.v {
        Val::Once(x) => Val::Once(neuron_input(b, x)),
        Val::Batched(x) => Val::Batched(neuron_input(b, x)),
        Val::Steps(xs) => Val::Steps(xs.iter().map(|x| neuron_input(b, x)).collect()),
    };
    // A batched input that is a `DequantizeLinear` output (the current of a ±1 layer) is split
    // in 8 bits, and each step's `DequantizeLinear` takes the drive's scale too.
    let split8 = match &v {
        Val::Batched(x) if t_steps > 1 => b.dq_of.get(&x.name).cloned(),
        _ => None,
    };
    let split8 = split8.map(|d| {
        let outs: Vec<String> = (0..t_steps).map(|_| b.fresh("step8")).collect();
        b.node_outs("Split", &[&d.q], vec![attr_int("axis", 0)], &outs);
        (outs, d)
    });
    let xs = match (&split8, &v) {
        // Shapes only: the steps are read from `split8`.
        (Some(_), Val::Batched(x)) => vec![x.clone(); t_steps],
        _ => b.steps(&v),
    };
    // The state is the membrane over threshold, `u_t = m_t − θ_t`. With `v = m − Relu(m − θ)
    // = θ + min(u, 0)`: `u_0 = d_0 − θ_0` and `u_t = λ_t·min(u_{t−1}, 0) + d_t + (λ_t·θ_{t−1} −
    // θ_t)` for the drive `d_t = x_t·scale_t + off_t`: per step a multiply-add of the input, a
    // `Clip` to ≤ 0, a multiply and an add, where `m`, `Sub θ`, `Relu` and the reset `Sub`
    // took seven.
    let mut under: Option<String> = None;
    // The input's scaled form, shared by steps with the same input and scale (a once input).
    let mut scaled: HashMap<(String, String), String> = HashMap::new();
    let mut prev_theta: Vec<f64> = Vec::new();
    let mut out = Vec::with_capacity(xs.len());
    for (t, x) in xs.into_iter().enumerate() {
        b.scope = format!("l{li}.t{t}.");
        let dims = if per == 1 { vec![] } else { chan_dims(&x, per) };
        let steps = t * per..(t + 1) * per;
        let r = p.rq.pick(steps.clone());
        let (scale, off) = drive_terms(&r, cur.a.unit);
        let scale: Vec<f32> = scale.iter().map(|&v| v as f32).collect();
        let th = theta(&p.th[steps.clone()]);
        let leak: Vec<f64> = p.leak[steps]
            .iter()
            .map(|&l| l as f64 * pow2_neg(16))
            .collect();
        // The constant of `u_t`: `off_t − θ_t` (+ `λ_t·θ_{t−1}` after step 0).
        let add: Vec<f64> = (0..per)
            .map(|c| off[c] - th[c] + prev_theta.get(c).map_or(0.0, |&pt| leak[c] * pt))
            .collect();
        let sx = match &split8 {
            Some((qs, d)) => {
                let folded: Vec<f32> = scale.iter().map(|&s| s * d.scale).collect();
                dq_scaled(b, &format!("l{li}_t{t}_in"), &qs[t], d, &folded)
            }
            None => {
                let sc = b.qchan(&format!("l{li}_t{t}_in_scale"), &dims, &scale);
                let key = (x.name.clone(), sc.clone());
                let sx = match scaled.get(&key) {
                    Some(n) => n.clone(),
                    None => b.node("Mul", &[&x.name, &sc], vec![]),
                };
                scaled.insert(key, sx.clone());
                sx
            }
        };
        let m = match under.take() {
            None => sx,
            Some(w) => {
                let leak: Vec<f32> = leak.iter().map(|&l| l as f32).collect();
                let lk = b.qchan(&format!("l{li}_t{t}_leak"), &dims, &leak);
                let lw = b.node("Mul", &[&w, &lk], vec![]);
                b.node("Add", &[&lw, &sx], vec![])
            }
        };
        let u = if add.iter().all(|&a| a == 0.0) {
            m
        } else {
            let add: Vec<f32> = add.iter().map(|&a| a as f32).collect();
            let a = b.qchan(&format!("l{li}_t{t}_add"), &dims, &add);
            b.node("Add", &[&m, &a], vec![])
        };
        let q = qfire(b, &u, act);
        if t + 1 < t_steps {
            // `Clip` to [lowest, 0], not `Min(u, 0)`: ONNX Runtime's `Min` is a general
            // broadcasting kernel, twice the time of its vectorised `Clip` on these tensors.
            under = Some(b.qclip(&u, f32::MIN, 0.0));
        }
        prev_theta = th;
        out.push(Tensor { name: q, ..x });
    }
    Ok(FVal {
        v: Val::Steps(out),
        a: SPIKES,
    })
}

/// Converts a decoded, calibrated model into an ONNX `ModelProto` of its integer path in QDQ
/// form (see the module docs).
pub fn to_onnx_qdq_proto(model: &Model<'_>, act: QdqActivations) -> Result<ModelProto, OnnxError> {
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
    // x_q = clamp(round_half_away(x / input_scale), −127, 127), as float.
    b.scope = "quantize.".into();
    let s = b.cf32(fm.input_scale);
    let v = b.node("Div", &["x", &s], vec![]);
    let a = b.node("Abs", &[&v], vec![]);
    let h = b.cf32(0.5);
    let a = b.node("Add", &[&a, &h], vec![]);
    let a = b.node("Floor", &[&a], vec![]);
    let sg = b.node("Sign", &[&v], vec![]);
    let r = b.node("Mul", &[&a, &sg], vec![]);
    let r = b.qclip(&r, -127.0, 127.0);
    let mut cur = FVal {
        v: Val::Once(Tensor {
            name: r,
            ..x.clone()
        }),
        a: A {
            bound: 127.0,
            nonneg: false,
            unit: 1.0,
        },
    };
    let mut slots: [Option<FVal>; empf_core::MAX_SLOTS] = Default::default();
    for (li, layer) in layers.iter().enumerate() {
        b.scope = format!("l{li}.");
        let slot_val = |slots: &[Option<FVal>], s: u8| -> Result<FVal, OnnxError> {
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
                NeuronMode::Sequential => sequential_neuron_qdq(&mut b, li, n, &cur, act)?,
                NeuronMode::Parallel => parallel_neuron_qdq(&mut b, li, n, &cur, act)?,
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
                let (t, a) = if all_once {
                    let s = saved.as_ref().map(|s| (s.v.first().clone(), s.a));
                    let (t, a) = stateless_qdq(
                        &mut b,
                        li,
                        layer,
                        cur.v.first(),
                        cur.a,
                        s.as_ref().map(|(t, a)| (t, *a)),
                        act,
                    )?;
                    (Val::Once(t), a)
                } else {
                    let x = b.batched(&cur.v);
                    let s = saved.as_ref().map(|s| (b.batched(&s.v), s.a));
                    let (t, a) = stateless_qdq(
                        &mut b,
                        li,
                        layer,
                        &x,
                        cur.a,
                        s.as_ref().map(|(t, a)| (t, *a)),
                        act,
                    )?;
                    (Val::Batched(t), a)
                };
                FVal { v: t, a }
            }
        };
    }
    b.scope = "out.".into();
    check_len(layers.len(), "output", cur.v.first().numel(), classes)?;
    let a = cur.a;
    let sum = match &cur.v {
        Val::Once(y) => {
            let y = core_units(&mut b, &y.name, a);
            let t = b.cf32(t_steps as f32);
            b.node("Mul", &[&y, &t], vec![])
        }
        Val::Steps(ys) => {
            let mut acc = core_units(&mut b, &ys[0].name, a);
            for y in &ys[1..] {
                let y = core_units(&mut b, &y.name, a);
                acc = b.node("Add", &[&acc, &y], vec![]);
            }
            acc
        }
        Val::Batched(y) => {
            let y = core_units(&mut b, &y.name, a);
            let shape = b.const_i64(&[t_steps as i64, -1, classes as i64]);
            let y3 = b.node("Reshape", &[&y, &shape], vec![]);
            let axes = b.const_i64(&[0]);
            b.node("ReduceSum", &[&y3, &axes], vec![attr_int("keepdims", 0)])
        }
    };
    let flat = b.node("Flatten", &[&sum], vec![attr_int("axis", 1)]);
    // The sum holds integers (exact below 2^24); Round guards the truncating Cast.
    let rounded = b.node("Round", &[&flat], vec![]);
    b.node_outs(
        "Cast",
        &[&rounded],
        vec![attr_int("to", DataType::Int32 as i64)],
        &["y".into()],
    );
    let (nodes, inits) = b.live_parts(&["y"]);
    let graph = GraphProto {
        node: nodes,
        name: Some(match act {
            QdqActivations::Uint8 => "empf_qdq_uint8".into(),
            QdqActivations::Int8 => "empf_qdq_int8".into(),
        }),
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
mod tests {
    use super::*;

    fn graph(act: QdqActivations) -> GraphProto {
        let bytes = super::super::integer::tests::calibrated_model();
        let model = Model::decode(&bytes).unwrap();
        to_onnx_qdq_proto(&model, act).unwrap().graph.unwrap()
    }

    #[test]
    fn graphs_hold_only_nodes_the_logits_read() {
        for act in [QdqActivations::Uint8, QdqActivations::Int8] {
            crate::onnx::tests::assert_wired(&graph(act));
        }
    }

    fn producer<'g>(g: &'g GraphProto, value: &str) -> Option<&'g NodeProto> {
        g.node.iter().find(|n| n.output.iter().any(|o| o == value))
    }

    fn consumers<'g>(g: &'g GraphProto, value: &str) -> Vec<&'g NodeProto> {
        g.node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == value))
            .collect()
    }

    fn op(n: Option<&NodeProto>) -> &str {
        n.and_then(|n| n.op_type.as_deref()).unwrap_or("")
    }

    fn init<'g>(g: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
    }

    #[test]
    fn binary_layers_are_dq_conv_q_with_int8_per_channel_weights() {
        for act in [QdqActivations::Uint8, QdqActivations::Int8] {
            let g = graph(act);
            let count = |o: &str| {
                g.node
                    .iter()
                    .filter(|n| n.op_type.as_deref() == Some(o))
                    .count()
            };
            for o in ["ConvInteger", "MatMulInteger", "Mod", "Gather"] {
                assert_eq!(count(o), 0, "{act:?}: {o}");
            }
            // The model: FP conv, binary conv, AvgPool2 (a depthwise 8-bit conv), GAP, FP
            // linear.
            assert_eq!(count("Conv"), 3, "{act:?}");
            assert_eq!(count("AveragePool"), 0, "{act:?}");
            let convs: Vec<&NodeProto> = g
                .node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some("Conv"))
                .collect();
            // The FP conv has float weights; the binary conv reads two DQ outputs and feeds a Q.
            assert_eq!(op(producer(&g, &convs[0].input[1])), "");
            let b = convs[1];
            let x_dq = producer(&g, &b.input[0]).unwrap();
            let w_dq = producer(&g, &b.input[1]).unwrap();
            assert_eq!(op(Some(x_dq)), "DequantizeLinear", "{act:?}");
            assert_eq!(op(Some(w_dq)), "DequantizeLinear", "{act:?}");
            let out = consumers(&g, &b.output[0]);
            assert_eq!(out.len(), 1);
            assert_eq!(op(Some(out[0])), "QuantizeLinear", "{act:?}");
            if act == QdqActivations::Int8 {
                // ONNX Runtime turns int8 activations into uint8 only in adjacent Q → DQ
                // pairs; without that its ±1 convs run in float.
                assert_eq!(op(producer(&g, &x_dq.input[0])), "QuantizeLinear");
                for c in consumers(&g, &out[0].output[0]) {
                    assert_eq!(op(Some(c)), "DequantizeLinear");
                }
            }
            // The current's grid: int8 codes, as uint8 with zero point 128 for ONNX Runtime
            // (so its conv fuses with the uint8 spikes), int8 with 0 for TensorRT.
            let cz = init(&g, &out[0].input[2]).unwrap();
            let (want, zero) = match act {
                QdqActivations::Uint8 => (DataType::Uint8, 128u8),
                QdqActivations::Int8 => (DataType::Int8, 0),
            };
            assert_eq!(cz.data_type, Some(want as i32), "{act:?}");
            assert_eq!(cz.raw_data.as_deref(), Some(&[zero][..]), "{act:?}");
            // The pool: group = channels, int8 weights 1 with scale 1/4, DQ in and Q out.
            let pool = convs[2];
            let group = pool
                .attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("group"))
                .and_then(|a| a.i);
            assert_eq!(group, Some(2), "{act:?}");
            assert_eq!(op(producer(&g, &pool.input[0])), "DequantizeLinear");
            let pw = producer(&g, &pool.input[1]).unwrap();
            assert_eq!(op(Some(pw)), "DequantizeLinear");
            let ones = init(&g, &pw.input[0]).unwrap();
            assert_eq!(ones.dims, vec![2, 1, 2, 2]);
            assert!(ones.raw_data.as_ref().unwrap().iter().all(|&v| v == 1));
            let quarter = init(&g, &pw.input[1]).unwrap();
            assert_eq!(
                quarter.raw_data.as_deref(),
                Some(&0.25f32.to_le_bytes()[..])
            );
            let pool_out = consumers(&g, &pool.output[0]);
            assert_eq!(op(pool_out.first().copied()), "QuantizeLinear", "{act:?}");
            // Weights: int8 ±1, per-channel scales on axis 0, zero points 0.
            let w = init(&g, &w_dq.input[0]).unwrap();
            assert_eq!(w.data_type, Some(DataType::Int8 as i32));
            assert_eq!(w.dims, vec![2, 2, 3, 3]);
            assert!(w
                .raw_data
                .as_ref()
                .unwrap()
                .iter()
                .all(|&v| v as i8 == 1 || v as i8 == -1));
            let axis = w_dq
                .attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("axis"));
            assert_eq!(axis.and_then(|a| a.i), Some(0));
            let ws = init(&g, &w_dq.input[1]).unwrap();
            assert_eq!(ws.dims, vec![2]);
            let wz = init(&g, &w_dq.input[2]).unwrap();
            assert!(wz.raw_data.as_ref().unwrap().iter().all(|&v| v == 0));
            let scales: Vec<f32> = ws
                .raw_data
                .as_ref()
                .unwrap()
                .chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert!(
                scales.iter().all(|&s| s > 0.0 && s.is_finite()),
                "{scales:?}"
            );
            // Activations: the 8-bit type of `act`, zero point 0, TensorRT-style int8 for Int8.
            let zp = init(&g, &x_dq.input[2]).unwrap();
            let (want, step) = match act {
                QdqActivations::Uint8 => (DataType::Uint8, 1.0f32),
                QdqActivations::Int8 => (DataType::Int8, 2.0),
            };
            assert_eq!(zp.data_type, Some(want as i32), "{act:?}");
            assert_eq!(zp.raw_data.as_deref(), Some(&[0u8][..]));
            let xs = init(&g, &x_dq.input[1]).unwrap();
            assert_eq!(xs.raw_data.as_deref(), Some(&step.to_le_bytes()[..]));
            // Bias: int32 DQ for ONNX Runtime, float for TensorRT (if the layer has offsets).
            if let Some(bias) = b.input.get(2) {
                match act {
                    QdqActivations::Uint8 => {
                        let dq = producer(&g, bias).unwrap();
                        assert_eq!(op(Some(dq)), "DequantizeLinear");
                        let t = init(&g, &dq.input[0]).unwrap();
                        assert_eq!(t.data_type, Some(DataType::Int32 as i32));
                    }
                    QdqActivations::Int8 => {
                        let t = init(&g, bias).unwrap();
                        assert_eq!(t.data_type, Some(DataType::Float as i32));
                    }
                }
            }
            // Every quantised value type in the graph is 8-bit (or the int32 bias).
            for n in g
                .node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some("QuantizeLinear"))
            {
                let z = init(&g, &n.input[2]).unwrap();
                assert!(
                    z.data_type == Some(DataType::Int8 as i32)
                        || z.data_type == Some(DataType::Uint8 as i32)
                );
            }
            // Output int32; every node input defined before use.
            match &g.output[0].r#type.as_ref().unwrap().value {
                Some(type_proto::Value::TensorType(t)) => {
                    assert_eq!(t.elem_type, Some(DataType::Int32 as i32))
                }
                other => panic!("output type {other:?}"),
            }
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
    }

    #[test]
    fn negative_multipliers_move_into_the_weights() {
        // Channel 0 of a requantisation with m < 0: weights negated, positive scale.
        let mut b = Builder::default();
        let r = Rq {
            m: vec![-6, 4],
            sh: vec![1, 2],
            off: vec![0, 0],
        };
        let rows = vec![1u8, (-1i8) as u8, (-1i8) as u8, 1];
        let dq = qweights(&mut b, "w", &[2, 2], &rows, 2, 2, &r, 1.0, false);
        let n = b.nodes.iter().find(|n| n.output[0] == dq).unwrap();
        let w = b
            .inits
            .iter()
            .find(|t| t.name.as_deref() == Some(&n.input[0]))
            .unwrap();
        let w: Vec<i8> = w
            .raw_data
            .as_ref()
            .unwrap()
            .iter()
            .map(|&v| v as i8)
            .collect();
        assert_eq!(w, vec![-1, 1, -1, 1]);
        let s = b
            .inits
            .iter()
            .find(|t| t.name.as_deref() == Some(&n.input[1]))
            .unwrap();
        let s: Vec<f32> = s
            .raw_data
            .as_ref()
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(s, vec![3.0, 1.0]);
    }
}
