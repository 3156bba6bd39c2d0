//! The one convolution loop nest, shared by every conv kernel (float, integer, binary, dense).
//!
//! Weight-stationary order: for each tap `(c, ky, kx)` of one output channel, one weight is read
//! and applied to whole output rows, so the inner loop is a contiguous (stride 1) slice walk that
//! the compiler vectorises, and packed sign bits are read once per tap, not once per MAC.

use crate::model::Shape;

/// Geometry of a square-kernel conv with zero padding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    pub input: Shape,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    pub fn new(input: Shape, kernel: u8, stride: u8, pad: u8) -> ConvGeom {
        let (k, s, p) = (kernel as usize, stride as usize, pad as usize);
        let oh = (input.h as usize + 2 * p - k) / s + 1;
        let ow = (input.w as usize + 2 * p - k) / s + 1;
        ConvGeom {
            input,
            kernel: k,
            stride: s,
            pad: p,
            oh,
            ow,
        }
    }
    pub fn taps(&self) -> usize {
        self.input.c as usize * self.kernel * self.kernel
    }
    /// Output positions `o` with `0 <= o*stride + tap - pad < len`, as a half-open range.
    fn range(&self, tap: usize, len: usize, out_len: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if self.pad > tap {
            (self.pad - tap).div_ceil(s)
        } else {
            0
        };
        // largest o with o*s + tap - pad <= len - 1
        let hi = if len + self.pad > tap {
            ((len - 1 + self.pad - tap) / s + 1).min(out_len)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

/// Runs every tap of one output channel over the output plane `acc` (`oh·ow`).
///
/// `apply(tap_index, dst, src, stride)` must do `dst[j] op= src[j*stride]` for every `j` of `dst`.
#[inline(always)]
pub(crate) fn for_each_tap<E, A>(
    g: &ConvGeom,
    x: &[E],
    acc: &mut [A],
    mut apply: impl FnMut(usize, &mut [A], &[E], usize),
) {
    let (h, w) = (g.input.h as usize, g.input.w as usize);
    let hw = h * w;
    for c in 0..g.input.c as usize {
        let plane = &x[c * hw..(c + 1) * hw];
        for ky in 0..g.kernel {
            let (oy_lo, oy_hi) = g.range(ky, h, g.oh);
            for kx in 0..g.kernel {
                let (ox_lo, ox_hi) = g.range(kx, w, g.ow);
                if ox_lo >= ox_hi {
                    continue;
                }
                let tap = (c * g.kernel + ky) * g.kernel + kx;
                let ix0 = ox_lo * g.stride + kx - g.pad;
                for oy in oy_lo..oy_hi {
                    let iy = oy * g.stride + ky - g.pad;
                    let src = &plane[iy * w + ix0..(iy + 1) * w];
                    let dst = &mut acc[oy * g.ow + ox_lo..oy * g.ow + ox_hi];
                    apply(tap, dst, src, g.stride);
                }
            }
        }
    }
}

/// `dst[j] = f(dst[j], src[j*stride])`, with a contiguous fast path for stride 1.
#[inline(always)]
pub(crate) fn zip_apply<E: Copy, A>(
    dst: &mut [A],
    src: &[E],
    stride: usize,
    mut f: impl FnMut(&mut A, E),
) {
    if stride == 1 {
        for (d, &s) in dst.iter_mut().zip(src) {
            f(d, s);
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            f(d, s);
        }
    }
}

/// Stride-1 convs run "wide": the input is zero-padded once into scratch (`C×Hp×Wp`), and the
/// output is accumulated in rows of the padded width (`OH×Wp`, the last `k−1` columns of each row
/// unused), so every tap is ONE contiguous slice operation of `(OH−1)·Wp + OW` elements instead
/// of `OH` short rows. Same sums in the same order per output element as [`for_each_tap`].
pub(crate) struct Wide {
    pub hp: usize,
    pub wp: usize,
    pub len: usize,
}

impl ConvGeom {
    /// The wide layout, for stride-1 convs.
    pub fn wide(&self) -> Option<Wide> {
        if self.stride != 1 {
            return None;
        }
        let (hp, wp) = (
            self.input.h as usize + 2 * self.pad,
            self.input.w as usize + 2 * self.pad,
        );
        Some(Wide {
            hp,
            wp,
            len: (self.oh - 1) * wp + self.ow,
        })
    }
}

/// Copies `x` (`C×H×W`) into `xp` (`C×Hp×Wp`) with a zero border.
pub(crate) fn pad_into<E: Copy + Default>(g: &ConvGeom, w: &Wide, x: &[E], xp: &mut [E]) {
    let (h, wd) = (g.input.h as usize, g.input.w as usize);
    let plane = w.hp * w.wp;
    for c in 0..g.input.c as usize {
        let dst = &mut xp[c * plane..(c + 1) * plane];
        dst.fill(E::default());
        for y in 0..h {
            let row = (y + g.pad) * w.wp + g.pad;
            dst[row..row + wd].copy_from_slice(&x[(c * h + y) * wd..(c * h + y + 1) * wd]);
        }
    }
}

/// Runs every tap of one output channel over the wide accumulator: `apply(tap, acc, src)` with
/// `acc.len() == src.len() == w.len`.
#[inline(always)]
pub(crate) fn for_each_tap_wide<E, A>(
    g: &ConvGeom,
    w: &Wide,
    xp: &[E],
    acc: &mut [A],
    mut apply: impl FnMut(usize, &mut [A], &[E]),
) {
    let plane = w.hp * w.wp;
    let acc = &mut acc[..w.len];
    for c in 0..g.input.c as usize {
        for ky in 0..g.kernel {
            for kx in 0..g.kernel {
                let tap = (c * g.kernel + ky) * g.kernel + kx;
                let off = c * plane + ky * w.wp + kx;
                apply(tap, acc, &xp[off..off + w.len]);
            }
        }
    }
}

/// `n` elements of `A` from the `u32` scratch, starting at the first word aligned for `A` (the
/// scratch reserves one word of slack for this).
pub(crate) fn aligned<A: bytemuck::Pod>(scratch: &mut [u32], n: usize) -> &mut [A] {
    let align = core::mem::align_of::<A>();
    let skip = (align - scratch.as_ptr() as usize % align) % align / 4;
    let words = n * core::mem::size_of::<A>() / 4;
    bytemuck::cast_slice_mut(&mut scratch[skip..skip + words])
}

/// Words of the padded copy of a `C×Hp×Wp` input with elements of type `X`.
fn pad_words<X>(g: &ConvGeom, w: &Wide) -> usize {
    (g.input.c as usize * w.hp * w.wp * core::mem::size_of::<X>()).div_ceil(4)
}

/// The padded input (`X`, from the front of scratch) and the rest of scratch.
fn padded<'s, X: bytemuck::Pod>(
    g: &ConvGeom,
    w: &Wide,
    scratch: &'s mut [u32],
) -> (&'s mut [X], &'s mut [u32]) {
    let (xp, rest) = scratch.split_at_mut(pad_words::<X>(g, w));
    let n = g.input.c as usize * w.hp * w.wp;
    (&mut bytemuck::cast_slice_mut(xp)[..n], rest)
}

/// One conv layer, any path: `tap(o, tap, acc, src, stride)` accumulates one tap into output
/// channel `o`'s accumulator (`A`: f32, i32 or i64, in scratch), `finish(o, acc)` maps a sum to
/// the output. Stride-1 convs take the wide path (one long slice per tap), others the row path;
/// both add the taps of every output element in the same order. Inputs `X` (f32, i32, or u8
/// spikes) are padded in their own type.
#[inline(always)]
pub(crate) fn conv_planes<X: bytemuck::Pod + Default, Y, A: bytemuck::Pod + Default>(
    g: &ConvGeom,
    x: &[X],
    y: &mut [Y],
    scratch: &mut [u32],
    mut tap: impl FnMut(usize, usize, &mut [A], &[X], usize),
    finish: impl Fn(usize, A) -> Y,
) {
    let plane = g.oh * g.ow;
    if let Some(w) = g.wide() {
        let (xp, rest) = padded::<X>(g, &w, scratch);
        let acc = aligned::<A>(rest, w.len);
        pad_into(g, &w, x, xp);
        for (o, yo) in y.chunks_exact_mut(plane).enumerate() {
            acc.fill(A::default());
            for_each_tap_wide(g, &w, xp, acc, |t, d, s| tap(o, t, d, s, 1));
            for oy in 0..g.oh {
                for (yv, &a) in yo[oy * g.ow..(oy + 1) * g.ow]
                    .iter_mut()
                    .zip(&acc[oy * w.wp..])
                {
                    *yv = finish(o, a);
                }
            }
        }
    } else {
        let acc = aligned::<A>(scratch, plane);
        for (o, yo) in y.chunks_exact_mut(plane).enumerate() {
            acc.fill(A::default());
            for_each_tap(g, x, acc, |t, d, s, st| tap(o, t, d, s, st));
            for (yv, &a) in yo.iter_mut().zip(acc.iter()) {
                *yv = finish(o, a);
            }
        }
    }
}

/// An input element of the ±1 kernels, added into accumulators of type `A`.
pub(crate) trait PmIn<A>: bytemuck::Pod + Default {
    fn widen(self) -> A;
    /// `d[j] += s[j·stride]` for every `j` of `d` (the one inner loop of the ±1 convs).
    #[inline(always)]
    fn add_into(d: &mut [A], s: &[Self], stride: usize)
    where
        A: PmAcc,
    {
        zip_apply(d, s, stride, |d, v| d.add(v.widen()));
    }
}

impl PmIn<f32> for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl PmIn<i32> for i32 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self
    }
}

impl PmIn<i32> for u8 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
}

/// Accumulator of the ±1 kernels: `f32` (float path) or `i32` (integer path, wrapping: the
/// validated bound keeps every final `Σ ±x` in range, and wrapping makes `2·part − total` exact
/// even where `2·part` alone would not fit).
pub(crate) trait PmAcc: bytemuck::Pod + Default {
    fn add(&mut self, v: Self);
    /// `2·part − total`: the ±sum from the sum over the `+1` taps.
    fn from_plus(part: Self, total: Self) -> Self;
    /// `total − 2·part`: the ±sum from the sum over the `−1` taps.
    fn from_minus(part: Self, total: Self) -> Self;
}

impl PmAcc for f32 {
    #[inline(always)]
    fn add(&mut self, v: f32) {
        *self += v;
    }
    #[inline(always)]
    fn from_plus(part: f32, total: f32) -> f32 {
        part + part - total
    }
    #[inline(always)]
    fn from_minus(part: f32, total: f32) -> f32 {
        total - part - part
    }
}

impl PmAcc for i32 {
    #[inline(always)]
    fn add(&mut self, v: i32) {
        *self = self.wrapping_add(v);
    }
    #[inline(always)]
    fn from_plus(part: i32, total: i32) -> i32 {
        part.wrapping_add(part).wrapping_sub(total)
    }
    #[inline(always)]
    fn from_minus(part: i32, total: i32) -> i32 {
        total.wrapping_sub(part).wrapping_sub(part)
    }
}

/// One binary (±1) conv layer, any path. `Σ_t s_t·x_t = 2·Σ_{s=+1} x − Σ_all x`: the sum over
/// all taps is computed once per layer and shared by every output channel, and each channel
/// then adds only its minority-sign taps — at most half of them — instead of adding or
/// subtracting every tap. `finish(o, acc)` maps the ±sum to the output.
#[inline(always)]
pub(crate) fn bconv_planes<X: PmIn<E>, E: PmAcc>(
    g: &ConvGeom,
    x: &[X],
    y: &mut [E],
    scratch: &mut [u32],
    signs: &[u8],
    finish: impl Fn(usize, E) -> E,
) {
    let plane = g.oh * g.ow;
    let taps = g.taps();
    let rb = crate::bits::row_bytes(taps);
    // (taps with the minority sign, whether that sign is +1) for channel `o`.
    let minority = |o: usize| {
        let row = &signs[o * rb..(o + 1) * rb];
        let plus = (0..taps).filter(|&t| crate::bits::sign_at(row, t)).count();
        (row, plus <= taps - plus)
    };
    let combine = |part: E, total: E, plus: bool| {
        if plus {
            E::from_plus(part, total)
        } else {
            E::from_minus(part, total)
        }
    };
    if let Some(w) = g.wide() {
        let (xp, rest) = padded::<X>(g, &w, scratch);
        // The model's plan reserves 2·OH·Wp (+1) words here: two 1-word accumulators of
        // `w.len ≤ OH·Wp` elements.
        let (total, part) = rest.split_at_mut(w.len);
        let total: &mut [E] = bytemuck::cast_slice_mut(total);
        let part: &mut [E] = &mut bytemuck::cast_slice_mut(part)[..w.len];
        pad_into(g, &w, x, xp);
        total.fill(E::default());
        for_each_tap_wide(g, &w, xp, total, |_, d, s| X::add_into(d, s, 1));
        for (o, yo) in y.chunks_exact_mut(plane).enumerate() {
            let (row, plus) = minority(o);
            part.fill(E::default());
            for_each_tap_wide(g, &w, xp, part, |t, d, s| {
                if crate::bits::sign_at(row, t) == plus {
                    X::add_into(d, s, 1);
                }
            });
            for oy in 0..g.oh {
                let r = oy * w.wp..oy * w.wp + g.ow;
                for ((yv, &p), &t) in yo[oy * g.ow..(oy + 1) * g.ow]
                    .iter_mut()
                    .zip(&part[r.clone()])
                    .zip(&total[r])
                {
                    *yv = finish(o, combine(p, t, plus));
                }
            }
        }
    } else {
        // The plan reserves 2·plane (+1) words: two 1-word accumulator planes.
        let (total, part) = scratch.split_at_mut(plane);
        let total: &mut [E] = bytemuck::cast_slice_mut(total);
        let part: &mut [E] = &mut bytemuck::cast_slice_mut(part)[..plane];
        total.fill(E::default());
        for_each_tap(g, x, total, |_, d, s, st| X::add_into(d, s, st));
        for (o, yo) in y.chunks_exact_mut(plane).enumerate() {
            let (row, plus) = minority(o);
            part.fill(E::default());
            for_each_tap(g, x, part, |t, d, s, st| {
                if crate::bits::sign_at(row, t) == plus {
                    X::add_into(d, s, st);
                }
            });
            for ((yv, &p), &t) in yo.iter_mut().zip(part.iter()).zip(total.iter()) {
                *yv = finish(o, combine(p, t, plus));
            }
        }
    }
}

/// `Σ ±x[i]` over one packed sign row (+ where the bit is 1): the inner product of a binary
/// linear layer, shared by the float and integer paths (same order of additions in both).
#[inline(always)]
pub(crate) fn signed_sum<
    X: PmIn<E>,
    E: Copy + Default + core::ops::AddAssign + core::ops::SubAssign,
>(
    row: &[u8],
    x: &[X],
) -> E {
    let mut acc = E::default();
    for (i, &xi) in x.iter().enumerate() {
        if crate::bits::sign_at(row, i) {
            acc += xi.widen();
        } else {
            acc -= xi.widen();
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Plain ±1 convolution in i64: the reference of [`bconv_planes`].
    fn naive(g: &ConvGeom, x: &[i64], signs: &[u8], cout: usize) -> Vec<i64> {
        let (c, h, w) = (g.input.c as usize, g.input.h as usize, g.input.w as usize);
        let mut y = vec![0i64; cout * g.oh * g.ow];
        for o in 0..cout {
            let row = &signs[o * crate::bits::row_bytes(g.taps())..];
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = 0i64;
                    for ci in 0..c {
                        for ky in 0..g.kernel {
                            for kx in 0..g.kernel {
                                let iy = (oy * g.stride + ky) as i64 - g.pad as i64;
                                let ix = (ox * g.stride + kx) as i64 - g.pad as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                let v = x[(ci * h + iy as usize) * w + ix as usize];
                                let t = (ci * g.kernel + ky) * g.kernel + kx;
                                acc += if crate::bits::sign_at(row, t) { v } else { -v };
                            }
                        }
                    }
                    y[(o * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
        y
    }

    /// Integer and float ±1 convs equal the plain loops on random geometries (wide and row
    /// paths), sign patterns (all +1, all −1, random, majority either way) and inputs up to the
    /// magnitude where `2·Σ_{+1}` overflows i32 but the ±sum does not.
    #[test]
    fn bconv_planes_equals_plain_loops() {
        let mut rng = Rng(7);
        for case in 0..300 {
            let c = 1 + rng.below(5) as u32;
            let (h, w) = (1 + rng.below(9) as u32, 1 + rng.below(9) as u32);
            let k = [1u8, 3, 5][rng.below(3) as usize];
            let stride = 1 + rng.below(3) as u8;
            let pad = rng.below(k as u64 / 2 + 1) as u8;
            if (h + 2 * pad as u32) < k as u32 || (w + 2 * pad as u32) < k as u32 {
                continue;
            }
            let g = ConvGeom::new(Shape { c, h, w }, k, stride, pad);
            let cout = 1 + rng.below(4) as usize;
            let taps = g.taps();
            let rb = crate::bits::row_bytes(taps);
            let mut signs = vec![0u8; cout * rb];
            for o in 0..cout {
                let p_plus = [0, 100, 50, 20, 80][(case + o) % 5];
                for t in 0..taps {
                    if rng.below(100) < p_plus {
                        signs[o * rb + t / 8] |= 1 << (t % 8);
                    }
                }
            }
            // Large inputs: |Σ±x| stays in i32, Σ_all x may not.
            let big = (i32::MAX as u64 / taps as u64).max(1);
            let xi: Vec<i32> = (0..(c * h * w) as usize)
                .map(|i| {
                    let m = if case % 3 == 0 { big } else { 255 };
                    let v = rng.below(m + 1) as i32;
                    if i % 7 == 3 && case % 2 == 0 {
                        -v
                    } else {
                        v
                    }
                })
                .collect();
            let want = naive(
                &g,
                &xi.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                &signs,
                cout,
            );
            let plane = g.oh * g.ow;
            let words = 2
                * (c as usize * (h as usize + 2 * pad as usize) * (w as usize + 2 * pad as usize))
                + 4 * plane
                + 8;
            let mut scratch = vec![0u32; words];
            let mut y = vec![0i32; cout * plane];
            bconv_planes(&g, &xi, &mut y, &mut scratch, &signs, |_, a| a);
            for (j, (&got, &w)) in y.iter().zip(&want).enumerate() {
                if i32::try_from(w).is_ok() {
                    assert_eq!(got as i64, w, "case {case} element {j} {g:?}");
                }
            }
            let xf: Vec<f32> = xi.iter().map(|&v| (v % 1000) as f32 / 7.0).collect();
            let wantf = naive(
                &g,
                &xi.iter().map(|&v| (v % 1000) as i64).collect::<Vec<_>>(),
                &signs,
                cout,
            );
            let mut yf = vec![0f32; cout * plane];
            bconv_planes(&g, &xf, &mut yf, &mut scratch, &signs, |_, a| a);
            let scale = taps as f64 * 1000.0 / 7.0;
            for (&got, &w) in yf.iter().zip(&wantf) {
                assert!(
                    (got as f64 - w as f64 / 7.0).abs() <= 1e-6 * scale,
                    "case {case}: {got} vs {}",
                    w as f64 / 7.0
                );
            }
        }
    }
}
