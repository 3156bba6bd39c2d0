//! 2×2 average pooling, stride 2, no padding (PyTorch `AvgPool2d(2)`: odd trailing rows/columns
//! are dropped).
//!
//! Shape vocabulary:
//! ```text
//!   P = C·B planes, H×W input plane, OH = H/2, OW = W/2 (floor).
//!   x [C][B][H][W] = [P][H][W],  y [P][OH][OW].
//! ```
//!
//! Forward `y = mean of each 2×2 window`; backward `dx[window] += dy/4`.

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};

/// Geometry of a pooling call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// P = C·B.
    pub planes: usize,
    /// H.
    pub h: usize,
    /// W.
    pub w: usize,
}

impl PoolGeom {
    /// Validates (planes ≥ 1, H, W ≥ 2).
    pub fn new(planes: usize, h: usize, w: usize) -> Result<Self> {
        if planes == 0 || h < 2 || w < 2 {
            return Err(Error::ShapeInvalid {
                what: "avgpool2",
                detail: format!("planes {planes}, input {h}x{w} (need ≥ 2x2)"),
            });
        }
        Ok(PoolGeom { planes, h, w })
    }
    /// OH.
    pub fn oh(&self) -> usize {
        self.h / 2
    }
    /// OW.
    pub fn ow(&self) -> usize {
        self.w / 2
    }
}

/// Forward pass.
pub fn avgpool2_forward(g: &PoolGeom, x: &[f32], y: &mut [f32]) -> Result<()> {
    let (h, w, oh, ow) = (g.h, g.w, g.oh(), g.ow());
    check_len("avgpool2.x", g.planes * h * w, x.len())?;
    check_len("avgpool2.y", g.planes * oh * ow, y.len())?;
    y.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for oy in 0..oh {
                let r0 = &xp[2 * oy * w..2 * oy * w + w];
                let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + w];
                for ox in 0..ow {
                    yp[oy * ow + ox] =
                        0.25 * (r0[2 * ox] + r0[2 * ox + 1] + r1[2 * ox] + r1[2 * ox + 1]);
                }
            }
        });
    Ok(())
}

/// Backward pass (accumulates into `dx`).
pub fn avgpool2_backward(g: &PoolGeom, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let (h, w, oh, ow) = (g.h, g.w, g.oh(), g.ow());
    check_len("avgpool2.dx", g.planes * h * w, dx.len())?;
    check_len("avgpool2.dy", g.planes * oh * ow, dy.len())?;
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(oh * ow))
        .for_each(|(xp, yp)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = 0.25 * yp[oy * ow + ox];
                    xp[2 * oy * w + 2 * ox] += d;
                    xp[2 * oy * w + 2 * ox + 1] += d;
                    xp[(2 * oy + 1) * w + 2 * ox] += d;
                    xp[(2 * oy + 1) * w + 2 * ox + 1] += d;
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    #[test]
    fn avgpool2_values_and_odd_sizes() {
        // one 3x4 plane → 1x2
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0, 9.0];
        let g = PoolGeom::new(1, 3, 4).unwrap();
        let mut y = [0.0; 2];
        avgpool2_forward(&g, &x, &mut y).unwrap();
        assert_eq!(y, [3.5, 5.5]);
        assert!(PoolGeom::new(1, 1, 4).is_err());
    }

    #[test]
    fn avgpool2_gradcheck() {
        let g = PoolGeom::new(6, 5, 6).unwrap();
        let x = rand_vec(1, 6 * 30);
        let r = rand_vec(2, 6 * 2 * 3);
        let mut dx = vec![0.0; x.len()];
        avgpool2_backward(&g, &r, &mut dx).unwrap();
        assert!(
            dx[4 * 6..5 * 6].iter().all(|&v| v == 0.0),
            "dropped row gets no gradient"
        );
        check_grad("x", &x, &dx, Tol::LINEAR, 200, |v| {
            let mut y = vec![0.0; r.len()];
            avgpool2_forward(&g, v, &mut y).unwrap();
            dot_f64(&r, &y)
        })
        .unwrap();
    }
}
