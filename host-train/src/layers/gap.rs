//! Global average pooling from CBHW activations to batch-major features.
//!
//! Shape vocabulary:
//! ```text
//!   C channels, B batch, HW = H·W.
//!   x [C][B][HW] (CBHW),  y [B][C] (batch-major: the input layout of `linear`).
//! ```
//!
//! Forward `y[b][c] = mean_hw x[c][b][hw]`; backward `dx[c][b][hw] += dy[b][c] / HW`.

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};

/// Geometry of a GAP call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapGeom {
    /// C.
    pub c: usize,
    /// B.
    pub batch: usize,
    /// H·W.
    pub hw: usize,
}

impl GapGeom {
    /// Validates (all ≥ 1).
    pub fn new(c: usize, batch: usize, hw: usize) -> Result<Self> {
        if c == 0 || batch == 0 || hw == 0 {
            return Err(Error::ShapeInvalid {
                what: "gap",
                detail: format!("zero size: c {c}, batch {batch}, hw {hw}"),
            });
        }
        Ok(GapGeom { c, batch, hw })
    }
}

/// Forward pass.
pub fn gap_forward(g: &GapGeom, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("gap.x", g.c * g.batch * g.hw, x.len())?;
    check_len("gap.y", g.batch * g.c, y.len())?;
    let inv = 1.0 / g.hw as f64;
    y.par_chunks_mut(g.c).enumerate().for_each(|(b, yr)| {
        for (c, o) in yr.iter_mut().enumerate() {
            let p = &x[(c * g.batch + b) * g.hw..(c * g.batch + b + 1) * g.hw];
            *o = (p.iter().map(|&v| v as f64).sum::<f64>() * inv) as f32;
        }
    });
    Ok(())
}

/// Backward pass (accumulates into `dx`).
pub fn gap_backward(g: &GapGeom, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("gap.dx", g.c * g.batch * g.hw, dx.len())?;
    check_len("gap.dy", g.batch * g.c, dy.len())?;
    let inv = 1.0 / g.hw as f32;
    dx.par_chunks_mut(g.hw).enumerate().for_each(|(idx, p)| {
        let (c, b) = (idx / g.batch, idx % g.batch);
        let d = dy[b * g.c + c] * inv;
        p.iter_mut().for_each(|v| *v += d);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    #[test]
    fn gap_values_and_gradcheck() {
        let g = GapGeom::new(3, 2, 4).unwrap();
        let x = rand_vec(1, 24);
        let mut y = vec![0.0; 6];
        gap_forward(&g, &x, &mut y).unwrap();
        // y[b=1][c=2] = mean of x[2][1][..]
        let want: f32 = x[(2 * 2 + 1) * 4..(2 * 2 + 2) * 4].iter().sum::<f32>() / 4.0;
        assert!((y[3 + 2] - want).abs() < 1e-6);
        let r = rand_vec(2, 6);
        let mut dx = vec![0.0; 24];
        gap_backward(&g, &r, &mut dx).unwrap();
        check_grad("x", &x, &dx, Tol::LINEAR, 100, |v| {
            let mut y = vec![0.0; 6];
            gap_forward(&g, v, &mut y).unwrap();
            dot_f64(&r, &y)
        })
        .unwrap();
    }
}
