//! Integer-path calibration and quantisation (feature `alloc`, host side).
//!
//! [`calibrate`] runs the float path on sample inputs and records the largest magnitude of every
//! layer's output; [`quantize`] turns those ranges into the integer parameters of every layer and
//! re-encodes the model. Scale rules (Δ = real value of one integer step):
//!
//! * input: `Δ_x = max|x| / 127` (i8);
//! * currents (conv, linear, add outputs): `Δ = max|y| / 2^17`, saturated at 2^20 (8× headroom);
//! * spikes: `Δ_s = max s / 255` (u8), membrane `Δ_m = Δ_s / 256`;
//! * pools keep the exact sum: `Δ/4` (2×2), `Δ/(H·W)` (global);
//! * full-precision weights: i16 per output channel, `Δ_w = max|W_o| / 32767`;
//! * multipliers: `|m| < 2^16` with a right shift, relative error ≤ 2^-16.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;

use crate::format::{
    encode_model, Blob, FixedAdd, FixedDense, FixedMeta, FixedNeuron, FixedSeca, Layer, NeuronMode,
    Requant, ScalarRequant,
};
use crate::infer::float::step_index;
use crate::le::{f32_at, f32_or};
use crate::model::{Shape, MEMBRANE_FRAC_BITS, MEMBRANE_LIMIT};
use crate::{Error, Mode, Model, MAX_SLOTS};

/// Ranges seen by [`calibrate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Largest `|x|` of the inputs.
    pub input_max: f32,
    /// Largest `|y|` of each layer's output over all samples and steps.
    pub layer_max: Vec<f32>,
    /// Fraction of exact zeros in each layer's output (spike sparsity for neurons).
    pub layer_zero_fraction: Vec<f32>,
}

/// Runs the float path on every sample and records value ranges.
pub fn calibrate<'s>(
    model: &Model<'_>,
    samples: impl IntoIterator<Item = &'s [f32]>,
) -> Result<Calibration, Error> {
    let mut arena = vec![0u32; model.arena_words_for(Mode::Sequential)];
    let mut out = vec![0.0f32; model.classes()];
    let mut layer_max = vec![0.0f32; model.layer_count()];
    let mut zeros = vec![(0u64, 0u64); model.layer_count()];
    let mut input_max = 0.0f32;
    let mut count = 0usize;
    for x in samples {
        input_max = x.iter().fold(input_max, |m, v| m.max(v.abs()));
        let mut obs = |li: usize, y: &[f32]| {
            layer_max[li] = y.iter().fold(layer_max[li], |m, v| m.max(v.abs()));
            zeros[li].0 += y.iter().filter(|v| **v == 0.0).count() as u64;
            zeros[li].1 += y.len() as u64;
        };
        model.infer_float_observed(x, &mut arena, &mut out, &mut obs)?;
        count += 1;
    }
    if count == 0 || !input_max.is_finite() || layer_max.iter().any(|v| !v.is_finite()) {
        return Err(Error::QuantCalibration);
    }
    let layer_zero_fraction = zeros
        .iter()
        .map(|&(z, n)| {
            if n == 0 {
                0.0
            } else {
                (z as f64 / n as f64) as f32
            }
        })
        .collect();
    Ok(Calibration {
        input_max,
        layer_max,
        layer_zero_fraction,
    })
}

/// `r ≈ m · 2^−sh` with `|m| < 2^16`, `sh ≤ 62`.
pub fn fixed_multiplier(r: f64) -> Option<(i32, u8)> {
    if !r.is_finite() {
        return None;
    }
    let a = r.abs();
    if a == 0.0 {
        return Some((0, 0));
    }
    let sh = libm_floor_log2(65535.0 / a);
    if sh < 0 {
        return None;
    }
    let sh = sh.min(62);
    let m = round(a * pow2(sh)) as i32;
    Some((if r < 0.0 { -m } else { m }, sh as u8))
}

fn pow2(e: i32) -> f64 {
    let mut v = 1.0;
    for _ in 0..e.unsigned_abs() {
        v *= 2.0;
    }
    if e < 0 {
        1.0 / v
    } else {
        v
    }
}

/// `floor(log2(x))` for finite `x > 0`, without libm.
fn libm_floor_log2(x: f64) -> i32 {
    let mut e = 0i32;
    let mut v = x;
    while v >= 2.0 {
        v /= 2.0;
        e += 1;
    }
    while v < 1.0 {
        v *= 2.0;
        e -= 1;
    }
    e
}

fn round(x: f64) -> f64 {
    if x >= 0.0 {
        (x + 0.5) as i64 as f64
    } else {
        -((-x + 0.5) as i64 as f64)
    }
}

fn to_i32(x: f64, li: u16) -> Result<i32, Error> {
    let r = round(x);
    if r.is_finite() && r.abs() <= i32::MAX as f64 {
        Ok(r as i32)
    } else {
        Err(Error::QuantOutOfRange { layer: li })
    }
}

const CURRENT_STEPS: f64 = (1u32 << 17) as f64;

/// Scale of a current tensor: `max / 2^17`, but never so fine that a multiplier would reach
/// 2^15 (`num` = the largest multiplier numerator) or an offset would leave i32 (`bias` = the
/// largest |bias|). The floors only bind where calibration saw (almost) nothing, e.g. behind a
/// layer of neurons that never fired.
fn current_scale(max: f32, num: f64, bias: f64) -> f64 {
    ((max as f64) / CURRENT_STEPS)
        .max(num / 32768.0)
        .max(bias / (1u64 << 30) as f64)
        .max(1e-30)
}

fn max_abs(b: &[u8]) -> f64 {
    f32s(b).fold(0.0f64, |m, v| m.max((v as f64).abs()))
}

#[derive(Default)]
struct RequantBuilder {
    multiplier: Vec<u8>,
    shift: Vec<u8>,
    offset: Vec<u8>,
}

impl RequantBuilder {
    fn push(&mut self, r: f64, offset: f64, li: u16) -> Result<(), Error> {
        let (m, sh) = fixed_multiplier(r).ok_or(Error::QuantOutOfRange { layer: li })?;
        self.multiplier.extend_from_slice(&m.to_le_bytes());
        self.shift.push(sh);
        self.offset
            .extend_from_slice(&to_i32(offset, li)?.to_le_bytes());
        Ok(())
    }
    fn build<'a>(self) -> Requant<Cow<'a, [u8]>> {
        Requant {
            multiplier: Blob(self.multiplier.into()),
            shift: Blob(self.shift.into()),
            offset: Blob(self.offset.into()),
        }
    }
}

fn scalar(r: f64, li: u16) -> Result<ScalarRequant, Error> {
    let (multiplier, shift) = fixed_multiplier(r).ok_or(Error::QuantOutOfRange { layer: li })?;
    Ok(ScalarRequant { multiplier, shift })
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// i16 weights per output row and the per-row scale `Δ_w`.
fn quantize_rows(w: &[u8], rows: usize) -> (Vec<u8>, Vec<f64>) {
    let row_len = w.len() / 4 / rows.max(1);
    let mut out = Vec::with_capacity(w.len() / 2);
    let mut scales = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &w[r * row_len * 4..(r + 1) * row_len * 4];
        let max = f32s(row).fold(0.0f64, |m, v| m.max((v as f64).abs()));
        let scale = if max > 0.0 { max / 32767.0 } else { 1.0 };
        for v in f32s(row) {
            let q = round(v as f64 / scale).clamp(-32767.0, 32767.0) as i16;
            out.extend_from_slice(&q.to_le_bytes());
        }
        scales.push(scale);
    }
    (out, scales)
}

/// Blob storage of a quantised layer: float parts borrowed from the input model, new integer
/// parts owned.
type Blobs<'a> = Cow<'a, [u8]>;

/// Integer parameters of a full-precision layer (conv or linear) with `rows` outputs whose input
/// has scale `scale`: i16 weights per row and the rescale to a new current scale, returned too.
fn fixed_dense<'a>(
    weight: &[u8],
    bias: &[u8],
    rows: usize,
    scale: f64,
    out_max: f32,
    li: u16,
) -> Result<(FixedDense<Blobs<'a>>, f64), Error> {
    let (wq, ws) = quantize_rows(weight, rows);
    let num = ws.iter().fold(0.0f64, |m, w| m.max(scale * w));
    let out = current_scale(out_max, num, max_abs(bias));
    let mut rq = RequantBuilder::default();
    for (o, wsc) in ws.iter().enumerate() {
        rq.push(scale * wsc / out, f32_at(bias, o) as f64 / out, li)?;
    }
    Ok((
        FixedDense {
            weight: Blob(wq.into()),
            requant: rq.build(),
        },
        out,
    ))
}

/// Integer rescale of a binary layer (conv or linear): its ±sum at input scale `scale` times the
/// per-output `gain`, plus `bias`, at a new current scale, returned too.
fn fixed_binary<'a>(
    gain: &[u8],
    bias: &[u8],
    scale: f64,
    out_max: f32,
    li: u16,
) -> Result<(Requant<Blobs<'a>>, f64), Error> {
    let out = current_scale(out_max, scale * max_abs(gain), max_abs(bias));
    let mut rq = RequantBuilder::default();
    for o in 0..gain.len() / 4 {
        rq.push(
            f32_at(gain, o) as f64 * scale / out,
            f32_at(bias, o) as f64 / out,
            li,
        )?;
    }
    Ok((rq.build(), out))
}

/// Adds integer-path parameters to every layer of `model`, using the ranges in `cal`, and returns
/// the encoded calibrated model file.
pub fn quantize(model: &Model<'_>, cal: &Calibration) -> Result<Vec<u8>, Error> {
    if cal.layer_max.len() != model.layer_count() {
        return Err(Error::QuantCalibration);
    }
    let t_steps = model.time_steps();
    let input_scale = (cal.input_max as f64).max(1e-12) / 127.0;
    let mut scale = input_scale;
    let mut shape = model.input_shape();
    let mut slots: [(f64, Shape); MAX_SLOTS] = [(1.0, shape); MAX_SLOTS];
    let mut prev_max = cal.input_max as f64;
    let mut layers: Vec<Layer<Cow<'_, [u8]>>> = Vec::with_capacity(model.layer_count());
    for (i, layer) in model.layers().enumerate() {
        let layer = layer?;
        let li = i as u16;
        let out_max = cal.layer_max[i];
        let new_shape = crate::infer::out_shape(
            &layer,
            shape,
            match layer {
                Layer::Swap { slot } => Some(slots[slot as usize].1),
                _ => None,
            },
        );
        let mut q = layer.map(&mut |b: &[u8]| Cow::Borrowed(b));
        match (&mut q, &layer) {
            (Layer::Conv2d(c), Layer::Conv2d(f)) => {
                let (fixed, out) = fixed_dense(
                    f.weight.bytes(),
                    f.bias.bytes(),
                    f.out_channels as usize,
                    scale,
                    out_max,
                    li,
                )?;
                c.fixed = Some(fixed);
                scale = out;
            }
            (Layer::Linear(c), Layer::Linear(f)) => {
                let (fixed, out) = fixed_dense(
                    f.weight.bytes(),
                    f.bias.bytes(),
                    f.out_features as usize,
                    scale,
                    out_max,
                    li,
                )?;
                c.fixed = Some(fixed);
                scale = out;
            }
            (Layer::BinaryConv2d(c), Layer::BinaryConv2d(f)) => {
                let (fixed, out) =
                    fixed_binary(f.gain.bytes(), f.bias.bytes(), scale, out_max, li)?;
                c.fixed = Some(fixed);
                scale = out;
            }
            (Layer::BinaryLinear(c), Layer::BinaryLinear(f)) => {
                let (fixed, out) =
                    fixed_binary(f.gain.bytes(), f.bias.bytes(), scale, out_max, li)?;
                c.fixed = Some(fixed);
                scale = out;
            }
            (Layer::Neuron(c), Layer::Neuron(f)) => {
                let ch = shape.c as usize;
                let per = if f.per_channel { ch } else { 1 };
                let count = t_steps * per;
                let seq = f.mode == NeuronMode::Sequential;
                // Estimate the membrane's range so threshold and state fit the i32 membrane.
                let (mut m_est, mut g_max) = (0.0f64, 0.0f64);
                for k in 0..count {
                    let g = f32_or(f.input_gain.bytes(), k, 1.0) as f64;
                    g_max = g_max.max(g.abs());
                    let b = f32_or(f.input_bias.bytes(), k, 0.0) as f64;
                    let th = f32_at(f.threshold.bytes(), k) as f64;
                    let lk = if seq {
                        f32_at(f.leak.bytes(), k) as f64
                    } else {
                        0.0
                    };
                    m_est = m_est.max(g.abs() * prev_max + b.abs() + th.abs() * (1.0 + lk.abs()));
                }
                // Floors (binding only for neurons that rarely fire in calibration): the membrane
                // must hold m_est with 4× headroom, and the input multiplier must stay < 2^15.
                let unit = (1u32 << MEMBRANE_FRAC_BITS) as f64;
                let spike = (out_max as f64 / 255.0)
                    .max(m_est * 4.0 * unit / MEMBRANE_LIMIT as f64)
                    .max(g_max * scale * unit / 32768.0)
                    .max(1e-12);
                let mem = spike / (1u32 << MEMBRANE_FRAC_BITS) as f64;
                let mut rq = RequantBuilder::default();
                let (mut leak, mut th) = (Vec::new(), Vec::new());
                for t in 0..t_steps {
                    for c_i in 0..per {
                        let k = step_index(f.per_channel, ch, t, c_i);
                        let g = f32_or(f.input_gain.bytes(), k, 1.0) as f64;
                        let b = f32_or(f.input_bias.bytes(), k, 0.0) as f64;
                        rq.push(g * scale / mem, b / mem, li)?;
                        th.extend_from_slice(
                            &to_i32(f32_at(f.threshold.bytes(), k) as f64 / mem, li)?.to_le_bytes(),
                        );
                        if seq {
                            let l = f32_at(f.leak.bytes(), k) as f64 * 65536.0;
                            leak.extend_from_slice(&to_i32(l, li)?.to_le_bytes());
                        }
                    }
                }
                c.fixed = Some(FixedNeuron {
                    input: rq.build(),
                    leak_q16: Blob(leak.into()),
                    threshold: Blob(th.into()),
                });
                scale = spike;
            }
            (Layer::AvgPool2, _) => scale /= 4.0,
            // A maximum keeps its input's scale (rounding to the grid is monotone).
            (Layer::MaxPool(_), _) => {}
            (Layer::GlobalAvgPool, _) => scale /= shape.plane() as f64,
            (Layer::Flatten, _) => {}
            (Layer::Save { slot }, _) => slots[*slot as usize] = (scale, shape),
            (Layer::Swap { slot }, _) => {
                let s = *slot as usize;
                let (sscale, _) = slots[s];
                slots[s] = (scale, shape);
                scale = sscale;
            }
            (Layer::Add { slot, fixed }, _) => {
                let saved = slots[*slot as usize].0;
                let out = current_scale(out_max, scale.max(saved), 0.0);
                *fixed = Some(FixedAdd {
                    main: scalar(scale / out, li)?,
                    saved: scalar(saved / out, li)?,
                });
                scale = out;
            }
            (Layer::Seca(c), Layer::Seca(f)) => {
                let add = match f.add_slot {
                    Some(s) => {
                        let out = current_scale(out_max, scale.max(slots[s as usize].0), 0.0);
                        let a = FixedAdd {
                            main: scalar(scale / out, li)?,
                            saved: scalar(slots[s as usize].0 / out, li)?,
                        };
                        scale = out;
                        Some(a)
                    }
                    None => None,
                };
                // Taps act on channel sums: z_real = Δ·Σx / (H·W); result wanted in Q8.
                let unit = scale / shape.plane() as f64 * 256.0;
                let taps: Vec<f64> = f32s(f.weight.bytes()).map(|w| w as f64 * unit).collect();
                let max = taps.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let shift = if max > 0.0 {
                    libm_floor_log2(32767.0 / max).clamp(0, 62)
                } else {
                    0
                };
                if max * pow2(shift) > 32767.5 {
                    return Err(Error::QuantOutOfRange { layer: li });
                }
                let mut weight = [0i32; 5];
                for (w, t) in weight.iter_mut().zip(&taps) {
                    *w = round(t * pow2(shift)) as i32;
                }
                let bias_q8 = to_i32(f.bias as f64 * 256.0, li)?;
                c.fixed = Some(FixedSeca {
                    weight,
                    bias_q8,
                    shift: shift as u8,
                    add,
                });
            }
            _ => return Err(Error::InferCorrupt),
        }
        prev_max = out_max as f64;
        shape = new_shape;
        layers.push(q);
    }
    let mut meta = *model.meta();
    meta.fixed = Some(FixedMeta {
        input_scale: input_scale as f32,
        logit_scale: scale as f32,
    });
    encode_model(&meta, &layers)
}
