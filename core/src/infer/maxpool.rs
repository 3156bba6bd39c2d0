//! Max pooling, the same kernel on every path and every kind of tensor.
//!
//! The integer path stores each tensor as integers on one per-tensor scale (currents `Δ·x_q`,
//! spikes `Δ_s·s_q`), and rounding to that grid is monotone, so the maximum of the quantised
//! values is the quantised maximum: the pool needs no integer parameters, keeps its input's
//! scale, and runs on `f32`, `i32` currents or `u8` spikes alike.

use super::conv::ConvGeom;

/// `y[c, oy, ox] = max x[c, oy·s + ky − p, ox·s + kx − p]` over the taps inside the input (padding
/// never wins). Taps are scanned row by row; a later tap replaces the best only if it is strictly
/// larger, so ties keep the first in scan order (what the trainer's argmax routes the gradient
/// to). `x` is `C×H×W`, `y` is `C×OH×OW` of the geometry, which decode checked (`pad < kernel`, so
/// every window holds at least one input element).
pub(crate) fn max_pool<X: Copy + PartialOrd>(g: &ConvGeom, x: &[X], y: &mut [X]) {
    let (h, w) = (g.input.h as usize, g.input.w as usize);
    let (k, s, p) = (g.kernel, g.stride, g.pad);
    // The input rows (or columns) window `o` covers: `o·s − p .. o·s − p + k`, clipped.
    let span = |o: usize, len: usize| {
        let lo = (o * s).saturating_sub(p);
        let hi = (o * s + k).saturating_sub(p).min(len);
        (lo, hi)
    };
    for (xp, yp) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(g.oh * g.ow)) {
        for oy in 0..g.oh {
            let (y0, y1) = span(oy, h);
            for ox in 0..g.ow {
                let (x0, x1) = span(ox, w);
                let mut best = xp[y0 * w + x0];
                for iy in y0..y1 {
                    for &v in &xp[iy * w + x0..iy * w + x1] {
                        if v > best {
                            best = v;
                        }
                    }
                }
                yp[oy * g.ow + ox] = best;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Shape;

    /// The plain definition: every tap of the window, padding as −∞, first maximum kept.
    fn reference(
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        p: usize,
        x: &[i32],
    ) -> Vec<i32> {
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let mut y = Vec::new();
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<i32> = None;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            let ix = (ox * s + kx) as isize - p as isize;
                            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                continue;
                            }
                            let v = x[(ch * h + iy as usize) * w + ix as usize];
                            if best.is_none_or(|b| v > b) {
                                best = Some(v);
                            }
                        }
                    }
                    y.push(best.expect("pad < kernel: a tap inside"));
                }
            }
        }
        y
    }

    #[test]
    fn equals_the_plain_definition_on_every_small_geometry() {
        let mut state = 0x1234_5678u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut checked = 0;
        for k in 1..=4usize {
            for s in 1..=3usize {
                for p in 0..k {
                    for h in 1..=7usize {
                        for w in 1..=6usize {
                            if h + 2 * p < k || w + 2 * p < k {
                                continue;
                            }
                            let c = 2;
                            // Negative values: a zero-padded pool would differ.
                            let x: Vec<i32> =
                                (0..c * h * w).map(|_| (next() % 41) as i32 - 30).collect();
                            let shape = Shape {
                                c: c as u32,
                                h: h as u32,
                                w: w as u32,
                            };
                            let g = ConvGeom::new(shape, k as u8, s as u8, p as u8);
                            let want = reference(c, h, w, k, s, p, &x);
                            let mut y = vec![i32::MIN; want.len()];
                            max_pool(&g, &x, &mut y);
                            assert_eq!(y, want, "k {k} s {s} p {p} {h}x{w}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 300, "{checked} geometries");
    }

    #[test]
    fn padding_never_wins_and_spikes_stay_spikes() {
        // One 2×2 plane of negatives, 3×3 window, stride 2, pad 1: a single output, the max
        // of the four values, not the 0 a zero padding would give.
        let g = ConvGeom::new(Shape { c: 1, h: 2, w: 2 }, 3, 2, 1);
        let mut y = [0.0f32];
        max_pool(&g, &[-3.0f32, -1.5, -2.0, -7.0], &mut y);
        assert_eq!(y, [-1.5]);
        let mut ys = [0u8];
        max_pool(&g, &[3u8, 200, 255, 0], &mut ys);
        assert_eq!(ys, [255]);
    }
}
