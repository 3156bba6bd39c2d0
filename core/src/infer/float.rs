//! The float path: the semantic reference. Each kernel is the spec's equation, in f32.

use super::conv::{bconv_planes, conv_planes, signed_sum, zip_apply, ConvGeom};
use super::{In, Kernels};
use crate::bits::row_bytes;
use crate::format::{
    BinaryConv2d, BinaryLinear, Conv2d, FixedAdd, Linear, Neuron, NeuronMode, Seca,
};
use crate::le::{f32_at, f32_or};
use crate::model::Shape;
use crate::Error;

pub(crate) struct FloatKernels<'i> {
    pub input: &'i [f32],
}

/// `σ(y) = 1 / (1 + e^−y)`, with [`exp`] so host and firmware compute the same bits.
pub fn sigmoid(y: f32) -> f32 {
    (1.0 / (1.0 + exp(-y as f64))) as f32
}

/// `e^x` in f64 without libm: `x = k·ln2 + r`, `|r| ≤ ln2/2`, degree-11 Taylor polynomial for
/// `e^r` (error < 1e-15 relative), scaled by `2^k` built from its bits. (micromath's `exp` was
/// measured at 2.4e-3 relative error: too coarse for the reference path.)
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    const LN2: f64 = core::f64::consts::LN_2;
    let kf = x / LN2;
    let k = if kf >= 0.0 {
        (kf + 0.5) as i64
    } else {
        (kf - 0.5) as i64
    };
    let r = x - k as f64 * LN2;
    let mut p = 1.0f64;
    let mut term = 1.0f64;
    for i in 1..=11 {
        term *= r / i as f64;
        p += term;
    }
    p * f64::from_bits(((k + 1023) as u64) << 52)
}

/// Index of step `t`, channel `c` in a neuron array of the given granularity.
#[inline(always)]
pub(crate) fn step_index(per_channel: bool, channels: usize, t: usize, c: usize) -> usize {
    if per_channel {
        t * channels + c
    } else {
        t
    }
}

impl Kernels for FloatKernels<'_> {
    type E = f32;
    type S = f32;
    const NARROW: bool = false;
    type O = f32;

    fn load_input(&self, dst: &mut [f32]) {
        dst.copy_from_slice(self.input);
    }

    fn conv2d(
        &self,
        l: &Conv2d<&[u8]>,
        s: Shape,
        x: In<'_, f32, f32>,
        y: &mut [f32],
        scratch: &mut [u32],
    ) -> Result<(), Error> {
        let x = x.flat();
        let g = ConvGeom::new(s, l.kernel, l.stride, l.padding);
        let taps = g.taps();
        let (w, b) = (l.weight.bytes(), l.bias.bytes());
        conv_planes(
            &g,
            x,
            y,
            scratch,
            |o, tap, dst: &mut [f32], src, st| {
                let wv = f32_at(w, o * taps + tap);
                zip_apply(dst, src, st, |d, v| *d += wv * v);
            },
            |o, v| v + f32_at(b, o),
        );
        Ok(())
    }

    fn bconv2d(
        &self,
        l: &BinaryConv2d<&[u8]>,
        s: Shape,
        x: In<'_, f32, f32>,
        y: &mut [f32],
        scratch: &mut [u32],
    ) -> Result<(), Error> {
        let x = x.flat();
        let g = ConvGeom::new(s, l.kernel, l.stride, l.padding);
        bconv_planes(&g, x, y, scratch, l.signs.bytes(), |o, v| {
            f32_at(l.gain.bytes(), o) * v + f32_at(l.bias.bytes(), o)
        });
        Ok(())
    }

    fn linear(&self, l: &Linear<&[u8]>, x: In<'_, f32, f32>, y: &mut [f32]) -> Result<(), Error> {
        let x = x.flat();
        let n = x.len();
        let w = l.weight.bytes();
        for (o, yo) in y.iter_mut().enumerate() {
            let row = &w[o * n * 4..(o + 1) * n * 4];
            let mut acc = 0.0f32;
            for (c, &xi) in row.chunks_exact(4).zip(x) {
                acc += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * xi;
            }
            *yo = acc + f32_at(l.bias.bytes(), o);
        }
        Ok(())
    }

    fn blinear(
        &self,
        l: &BinaryLinear<&[u8]>,
        x: In<'_, f32, f32>,
        y: &mut [f32],
    ) -> Result<(), Error> {
        let x = x.flat();
        let rb = row_bytes(x.len());
        for (o, yo) in y.iter_mut().enumerate() {
            let row = &l.signs.bytes()[o * rb..(o + 1) * rb];
            let acc = signed_sum(row, x);
            *yo = f32_at(l.gain.bytes(), o) * acc + f32_at(l.bias.bytes(), o);
        }
        Ok(())
    }

    fn neuron(
        &self,
        n: &Neuron<&[u8]>,
        t: usize,
        s: Shape,
        x: In<'_, f32, f32>,
        y: &mut [f32],
        state: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let x = x.flat();
        let (c_n, plane) = (s.c as usize, s.plane());
        let mut state = state;
        for c in 0..c_n {
            let i = step_index(n.per_channel, c_n, t, c);
            let th = f32_at(n.threshold.bytes(), i);
            let gain = f32_or(n.input_gain.bytes(), i, 1.0);
            let bias = f32_or(n.input_bias.bytes(), i, 0.0);
            let range = c * plane..(c + 1) * plane;
            let (xs, ys) = (&x[range.clone()], &mut y[range.clone()]);
            match (n.mode, state.as_deref_mut()) {
                (NeuronMode::Sequential, Some(st)) => {
                    let leak = f32_at(n.leak.bytes(), i);
                    for ((yv, &iv), v) in ys.iter_mut().zip(xs).zip(&mut st[range]) {
                        // m = λ·v + I ; s = max(m − θ, 0) ; v = m − s
                        let m = leak * *v + (gain * iv + bias);
                        let sp = (m - th).max(0.0);
                        *v = m - sp;
                        *yv = sp;
                    }
                }
                _ => {
                    for (yv, &iv) in ys.iter_mut().zip(xs) {
                        *yv = ((gain * iv + bias) - th).max(0.0);
                    }
                }
            }
        }
        Ok(())
    }

    fn avgpool2(&self, s: Shape, x: In<'_, f32, f32>, y: &mut [f32]) {
        let x = x.flat();
        pool2(s, x, y, |a, b, c, d| (a + b + c + d) * 0.25);
    }

    fn gap(&self, s: Shape, x: In<'_, f32, f32>, y: &mut [f32]) {
        let x = x.flat();
        let plane = s.plane();
        for (yc, xc) in y.iter_mut().zip(x.chunks_exact(plane)) {
            *yc = xc.iter().sum::<f32>() / plane as f32;
        }
    }

    fn add(
        &self,
        _: Option<&FixedAdd>,
        x: &mut [f32],
        saved: In<'_, f32, f32>,
    ) -> Result<(), Error> {
        let saved = saved.flat();
        x.iter_mut().zip(saved).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn seca(
        &self,
        l: &Seca<&[u8]>,
        s: Shape,
        x: &mut [f32],
        scratch: &mut [u32],
    ) -> Result<(), Error> {
        let (c_n, plane) = (s.c as usize, s.plane());
        let z: &mut [f32] = bytemuck::cast_slice_mut(&mut scratch[..c_n]);
        for (zc, xc) in z.iter_mut().zip(x.chunks_exact(plane)) {
            *zc = xc.iter().sum::<f32>() / plane as f32;
        }
        let w = l.weight.bytes();
        for c in 0..c_n {
            let mut acc = l.bias;
            for j in 0..5 {
                let src = c as isize + j as isize - 2;
                if src >= 0 && (src as usize) < c_n {
                    acc += f32_at(w, j) * z[src as usize];
                }
            }
            let a = sigmoid(acc);
            x[c * plane..(c + 1) * plane]
                .iter_mut()
                .for_each(|v| *v *= a);
        }
        Ok(())
    }

    fn widen(&self, x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
    }

    fn accumulate(&self, y: In<'_, f32, f32>, out: &mut [f32]) {
        out.iter_mut().zip(y.flat()).for_each(|(o, v)| *o += v);
    }
}

/// 2×2 stride-2 pooling with `f(top-left, top-right, bottom-left, bottom-right)`.
#[inline(always)]
pub(crate) fn pool2<X: Copy, Y>(s: Shape, x: &[X], y: &mut [Y], f: impl Fn(X, X, X, X) -> Y) {
    let (h, w) = (s.h as usize, s.w as usize);
    let (oh, ow) = (h / 2, w / 2);
    for c in 0..s.c as usize {
        let xp = &x[c * h * w..(c + 1) * h * w];
        let yp = &mut y[c * oh * ow..(c + 1) * oh * ow];
        for oy in 0..oh {
            let (r0, r1) = (&xp[2 * oy * w..], &xp[(2 * oy + 1) * w..]);
            for ox in 0..ow {
                yp[oy * ow + ox] = f(r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        for i in 0..200_001 {
            let x = -700.0 + i as f64 * 0.007;
            let (a, e) = (super::exp(x), x.exp());
            worst = worst.max(((a - e) / e).abs());
        }
        assert!(worst < 1e-13, "worst relative error {worst}");
        assert_eq!(super::exp(800.0), f64::INFINITY);
        assert_eq!(super::exp(-800.0), 0.0);
        assert!(super::exp(f64::NAN).is_nan());
    }

    #[test]
    fn sigmoid_values() {
        for y in [-30.0f32, -3.0, -0.5, 0.0, 0.5, 3.0, 30.0] {
            let e = 1.0 / (1.0 + (-(y as f64)).exp());
            assert!((super::sigmoid(y) as f64 - e).abs() < 1e-7, "{y}");
        }
    }
}
