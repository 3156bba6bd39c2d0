//! Max pooling over square windows (PyTorch `MaxPool2d(k, s, p)`, ResNet-34's ImageNet stem):
//! padding never wins, it acts as −∞.
//!
//! Shape vocabulary:
//! ```text
//!   P = C·B planes, H×W input plane, k window side, s stride, p padding (< k),
//!   OH = (H + 2p − k)/s + 1, OW = (W + 2p − k)/s + 1.
//!   x [C][B][H][W] = [P][H][W],  y [P][OH][OW],  argmax [P][OH][OW] (index into its H×W plane).
//! ```
//!
//! Forward `y = max` over the window's taps inside the input, scanned row by row; a later tap
//! wins only if strictly larger, so ties go to the first in scan order (as `empf-core`'s kernel,
//! whose output is the same value either way). Backward `dx[plane][argmax] += dy`: the gradient
//! goes to the one input that won.

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};

/// Geometry of a max-pool call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPoolGeom {
    /// P = C·B.
    pub planes: usize,
    /// H.
    pub h: usize,
    /// W.
    pub w: usize,
    /// Window side k.
    pub kernel: usize,
    /// Stride s.
    pub stride: usize,
    /// Padding p.
    pub pad: usize,
}

impl MaxPoolGeom {
    /// Validates what `empf-core` requires of a max pool: planes ≥ 1, k ≥ 1, s ≥ 1, p < k (every
    /// window keeps a tap inside the input) and a window that fits the padded input.
    pub fn new(
        planes: usize,
        h: usize,
        w: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let bad = |detail: String| Error::ShapeInvalid {
            what: "maxpool",
            detail,
        };
        if planes == 0 || h == 0 || w == 0 {
            return Err(bad(format!("planes {planes}, input {h}x{w}")));
        }
        if kernel == 0 || stride == 0 || pad >= kernel {
            return Err(bad(format!(
                "kernel {kernel}, stride {stride}, pad {pad} (need kernel ≥ 1, stride ≥ 1, \
                 pad < kernel)"
            )));
        }
        if h + 2 * pad < kernel || w + 2 * pad < kernel {
            return Err(bad(format!(
                "kernel {kernel} larger than the padded input {}x{}",
                h + 2 * pad,
                w + 2 * pad
            )));
        }
        if u32::try_from(h * w).is_err() {
            return Err(bad(format!("plane {h}x{w} too large for u32 indices")));
        }
        Ok(MaxPoolGeom {
            planes,
            h,
            w,
            kernel,
            stride,
            pad,
        })
    }
    /// OH.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kernel) / self.stride + 1
    }
    /// OW.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kernel) / self.stride + 1
    }
    /// Outputs of all planes (`P·OH·OW`): the length of `y` and of the argmax.
    pub fn outputs(&self) -> usize {
        self.planes * self.oh() * self.ow()
    }
    /// Input rows (or columns) of output `o` along an axis of `len`: `o·s − p .. o·s − p + k`,
    /// clipped to the input.
    fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let lo = (o * self.stride).saturating_sub(self.pad);
        let hi = (o * self.stride + self.kernel)
            .saturating_sub(self.pad)
            .min(len);
        (lo, hi)
    }
}

/// What the forward keeps for the backward: the winning input of every output.
#[derive(Clone, Debug, Default)]
pub struct MaxPoolSaved {
    /// `[P][OH][OW]`: index `iy·W + ix` into the output's input plane.
    pub argmax: Vec<u32>,
}

/// Forward pass: writes `y` and the argmax of every output.
pub fn maxpool_forward(
    g: &MaxPoolGeom,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    let (hw, ohw) = (g.h * g.w, g.oh() * g.ow());
    check_len("maxpool.x", g.planes * hw, x.len())?;
    check_len("maxpool.y", g.planes * ohw, y.len())?;
    check_len("maxpool.argmax", g.planes * ohw, argmax.len())?;
    let (w, ow) = (g.w, g.ow());
    y.par_chunks_mut(ohw)
        .zip(argmax.par_chunks_mut(ohw))
        .zip(x.par_chunks(hw))
        .for_each(|((yp, ap), xp)| {
            for oy in 0..g.oh() {
                let (y0, y1) = g.span(oy, g.h);
                for ox in 0..ow {
                    let (x0, x1) = g.span(ox, w);
                    let mut best = y0 * w + x0;
                    for iy in y0..y1 {
                        for i in iy * w + x0..iy * w + x1 {
                            if xp[i] > xp[best] {
                                best = i;
                            }
                        }
                    }
                    yp[oy * ow + ox] = xp[best];
                    ap[oy * ow + ox] = best as u32;
                }
            }
        });
    Ok(())
}

/// Backward pass: accumulates `dy` into `dx` at each output's argmax.
pub fn maxpool_backward(g: &MaxPoolGeom, argmax: &[u32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let (hw, ohw) = (g.h * g.w, g.oh() * g.ow());
    check_len("maxpool.dx", g.planes * hw, dx.len())?;
    check_len("maxpool.dy", g.planes * ohw, dy.len())?;
    check_len("maxpool.argmax", g.planes * ohw, argmax.len())?;
    // One plane per task; inside a plane the outputs are added in order (overlapping windows
    // may share a winner), so the sums do not depend on the scheduling.
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(ohw).zip(argmax.par_chunks(ohw)))
        .try_for_each(|(xp, (yp, ap))| {
            for (&d, &i) in yp.iter().zip(ap) {
                let slot = xp.get_mut(i as usize).ok_or_else(|| Error::ShapeInvalid {
                    what: "maxpool.argmax",
                    detail: format!("index {i} outside a plane of {hw}"),
                })?;
                *slot += d;
            }
            Ok(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    /// The plain definition on one plane: every tap of the window, padding as −∞.
    fn reference(g: &MaxPoolGeom, x: &[f32]) -> Vec<f32> {
        let mut y = Vec::new();
        for p in 0..g.planes {
            for oy in 0..g.oh() {
                for ox in 0..g.ow() {
                    let mut best = f32::NEG_INFINITY;
                    for ky in 0..g.kernel {
                        for kx in 0..g.kernel {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                best = best.max(x[(p * g.h + iy as usize) * g.w + ix as usize]);
                            }
                        }
                    }
                    y.push(best);
                }
            }
        }
        y
    }

    #[test]
    fn maxpool_values_padding_and_ties() {
        // ResNet-34's stem pool on one 4×4 plane of negatives: a zero padding would win.
        let g = MaxPoolGeom::new(1, 4, 4, 3, 2, 1).unwrap();
        assert_eq!((g.oh(), g.ow()), (2, 2));
        let x: Vec<f32> = (0..16).map(|i| -1.0 - i as f32).collect();
        let (mut y, mut a) = (vec![0.0; 4], vec![0; 4]);
        maxpool_forward(&g, &x, &mut y, &mut a).unwrap();
        assert_eq!(y, [-1.0, -2.0, -5.0, -6.0]);
        assert_eq!(a, [0, 1, 4, 5]);
        // Ties: the first in scan order wins, and only it gets the gradient.
        let g = MaxPoolGeom::new(1, 2, 2, 2, 1, 0).unwrap();
        let (mut y, mut a) = (vec![0.0; 1], vec![0; 1]);
        maxpool_forward(&g, &[1.0, 3.0, 3.0, 2.0], &mut y, &mut a).unwrap();
        assert_eq!((y[0], a[0]), (3.0, 1));
        let mut dx = vec![0.0; 4];
        maxpool_backward(&g, &a, &[0.5], &mut dx).unwrap();
        assert_eq!(dx, [0.0, 0.5, 0.0, 0.0]);
        // What core refuses is refused here too.
        for (k, s, p) in [(0, 1, 0), (2, 0, 0), (2, 1, 2), (6, 1, 0)] {
            assert!(MaxPoolGeom::new(1, 4, 4, k, s, p).is_err(), "{k} {s} {p}");
        }
    }

    #[test]
    fn maxpool_equals_the_plain_definition() {
        let mut seed = 0;
        for (h, w) in [(1, 1), (2, 3), (5, 4), (7, 7)] {
            for k in 1..=3 {
                for s in 1..=2 {
                    for p in 0..k.min(2) {
                        let Ok(g) = MaxPoolGeom::new(3, h, w, k, s, p) else {
                            continue;
                        };
                        seed += 1;
                        let x = rand_vec(seed, 3 * h * w);
                        let (mut y, mut a) = (vec![0.0; g.outputs()], vec![0; g.outputs()]);
                        maxpool_forward(&g, &x, &mut y, &mut a).unwrap();
                        assert_eq!(y, reference(&g, &x), "{h}x{w} k{k} s{s} p{p}");
                    }
                }
            }
        }
        assert!(seed > 30);
    }

    /// Central differences on inputs without ties: distinct values 0.05 apart, so a ±1e-2
    /// perturbation never changes a window's winner. Overlapping windows (stride 1 < k) route
    /// several outputs to one input, and the padded border is checked too.
    #[test]
    fn maxpool_gradcheck() {
        for (k, s, p) in [(3, 2, 1), (3, 1, 1), (2, 2, 0), (2, 1, 1)] {
            let g = MaxPoolGeom::new(4, 5, 6, k, s, p).unwrap();
            let n = 4 * 5 * 6;
            // A permutation of 0..n (multiplier coprime to n), scaled.
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 + 11) % n) as f32 * 0.05 - 3.0)
                .collect();
            let r = rand_vec(k as u64 * 10 + s as u64, g.outputs());
            let (mut y, mut a) = (vec![0.0; g.outputs()], vec![0; g.outputs()]);
            maxpool_forward(&g, &x, &mut y, &mut a).unwrap();
            let mut dx = vec![0.0; n];
            maxpool_backward(&g, &a, &r, &mut dx).unwrap();
            assert!(dx.contains(&0.0), "inputs that never win get nothing");
            check_grad("x", &x, &dx, Tol::LINEAR, n, |v| {
                let (mut y, mut a) = (vec![0.0; g.outputs()], vec![0; g.outputs()]);
                maxpool_forward(&g, v, &mut y, &mut a).unwrap();
                dot_f64(&r, &y)
            })
            .unwrap_or_else(|e| panic!("k {k} s {s} p {p}: {e}"));
        }
    }
}
