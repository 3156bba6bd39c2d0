//! SECA channel attention (spec §2.10–§2.11): GAP → Conv1d over channels (k = 5, pad 2, bias,
//! 6 parameters, shared over time) → sigmoid → scale the input.
//!
//! Shape vocabulary:
//! ```text
//!   C channels, B batch, HW = H·W.
//!   x, y       [C][B][HW] (CBHW)
//!   weight     [5]  (PyTorch Conv1d(1, 1, 5) weight [1][1][5]),  bias [1]
//!   saved.z    [C][B]  z = GAP(x)
//!   saved.w    [C][B]  w = σ(u),  u[c][b] = bias + Σ_k weight[k]·z[c + k − 2][b] (zero padded)
//! ```
//!
//! Forward `y = w ⊙ x` (w broadcast over HW). Backward:
//! ```text
//!   gw[c][b] = Σ_hw dy·x,  du = gw·w(1 − w),  dbias += Σ du,
//!   dweight[k] += Σ du[c][b]·z[c + k − 2][b],  dz[c'][b] = Σ_k weight[k]·du[c' − k + 2][b],
//!   dx += dy·w + dz/HW.
//! ```
//! SECA_I is `seca(I)`; SECA_II is `seca(pre + cur)`: compose with `residual_add`.

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};
use crate::tensor::sigmoid;

/// Conv1d kernel size.
pub const SECA_K: usize = 5;
/// Conv1d padding.
pub const SECA_PAD: usize = 2;

/// Geometry of a SECA call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecaGeom {
    /// C.
    pub c: usize,
    /// B.
    pub batch: usize,
    /// H·W.
    pub hw: usize,
}

impl SecaGeom {
    /// Validates (all ≥ 1).
    pub fn new(c: usize, batch: usize, hw: usize) -> Result<Self> {
        if c == 0 || batch == 0 || hw == 0 {
            return Err(Error::ShapeInvalid {
                what: "seca",
                detail: format!("zero size: c {c}, batch {batch}, hw {hw}"),
            });
        }
        Ok(SecaGeom { c, batch, hw })
    }
    fn len(&self) -> usize {
        self.c * self.batch * self.hw
    }
}

/// What forward saves for backward.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecaSaved {
    /// GAP of the input `[C][B]`.
    pub z: Vec<f32>,
    /// Attention weights `[C][B]`.
    pub w: Vec<f32>,
}

impl SecaSaved {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.z.len() + self.w.len())
    }
}

/// Gradient outputs of [`seca_backward`] (accumulated into).
#[derive(Debug)]
pub struct SecaGrads<'a> {
    /// `[C][B][HW]`, when needed.
    pub dx: Option<&'a mut [f32]>,
    /// `[5]`.
    pub dweight: &'a mut [f32],
    /// `[1]`.
    pub dbias: &'a mut [f32],
}

/// Forward pass.
pub fn seca_forward(
    g: &SecaGeom,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    y: &mut [f32],
    saved: &mut SecaSaved,
) -> Result<()> {
    check_len("seca.x", g.len(), x.len())?;
    check_len("seca.y", g.len(), y.len())?;
    check_len("seca.weight", SECA_K, weight.len())?;
    check_len("seca.bias", 1, bias.len())?;
    let (c, nb, hw) = (g.c, g.batch, g.hw);
    saved.z.resize(c * nb, 0.0);
    saved.w.resize(c * nb, 0.0);
    saved.z.par_iter_mut().enumerate().for_each(|(idx, z)| {
        let p = &x[idx * hw..(idx + 1) * hw];
        *z = (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32;
    });
    let z = &saved.z;
    for ci in 0..c {
        for b in 0..nb {
            let mut u = bias[0];
            for (k, &wk) in weight.iter().enumerate() {
                let src = ci + k;
                if src >= SECA_PAD && src - SECA_PAD < c {
                    u += wk * z[(src - SECA_PAD) * nb + b];
                }
            }
            saved.w[ci * nb + b] = sigmoid(u);
        }
    }
    let w = &saved.w;
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(idx, (yp, xp))| {
            let s = w[idx];
            yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = s * v);
        });
    Ok(())
}

/// Backward pass (accumulates). `x` is the forward input.
pub fn seca_backward(
    g: &SecaGeom,
    x: &[f32],
    weight: &[f32],
    saved: &SecaSaved,
    dy: &[f32],
    grads: SecaGrads<'_>,
) -> Result<()> {
    check_len("seca.x", g.len(), x.len())?;
    check_len("seca.dy", g.len(), dy.len())?;
    check_len("seca.weight", SECA_K, weight.len())?;
    check_len("seca.dweight", SECA_K, grads.dweight.len())?;
    check_len("seca.dbias", 1, grads.dbias.len())?;
    let (c, nb, hw) = (g.c, g.batch, g.hw);
    check_len("seca.saved.z", c * nb, saved.z.len())?;
    check_len("seca.saved.w", c * nb, saved.w.len())?;
    // du[c][b] = (Σ_hw dy·x) · w(1 − w)
    let du: Vec<f32> = x
        .par_chunks(hw)
        .zip(dy.par_chunks(hw))
        .zip(saved.w.par_iter())
        .map(|((xp, dp), &w)| {
            let gw: f64 = xp.iter().zip(dp).map(|(&a, &b)| a as f64 * b as f64).sum();
            (gw * (w * (1.0 - w)) as f64) as f32
        })
        .collect();
    let mut dbias = 0.0f64;
    let mut dweight = [0.0f64; SECA_K];
    let mut dz = vec![0.0f32; c * nb];
    for ci in 0..c {
        for b in 0..nb {
            let d = du[ci * nb + b];
            dbias += d as f64;
            for k in 0..SECA_K {
                let src = ci + k;
                if src >= SECA_PAD && src - SECA_PAD < c {
                    let zi = (src - SECA_PAD) * nb + b;
                    dweight[k] += d as f64 * saved.z[zi] as f64;
                    dz[zi] += weight[k] * d;
                }
            }
        }
    }
    grads.dbias[0] += dbias as f32;
    for (o, v) in grads.dweight.iter_mut().zip(dweight) {
        *o += v as f32;
    }
    if let Some(dx) = grads.dx {
        check_len("seca.dx", g.len(), dx.len())?;
        let inv = 1.0 / hw as f32;
        dx.par_chunks_mut(hw)
            .zip(dy.par_chunks(hw))
            .enumerate()
            .for_each(|(idx, (dxp, dp))| {
                let (w, zc) = (saved.w[idx], dz[idx] * inv);
                dxp.iter_mut().zip(dp).for_each(|(o, &d)| *o += d * w + zc);
            });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};
    use crate::layers::residual_add::{residual_add_backward, residual_add_forward};

    fn fwd(g: &SecaGeom, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f32>, SecaSaved) {
        let mut y = vec![0.0; x.len()];
        let mut saved = SecaSaved::default();
        seca_forward(g, x, w, b, &mut y, &mut saved).unwrap();
        (y, saved)
    }

    #[test]
    fn seca_gradcheck() {
        let g = SecaGeom::new(7, 2, 6).unwrap();
        let x: Vec<f32> = rand_vec(1, 84).iter().map(|v| 2.0 * v + 0.5).collect();
        let w: Vec<f32> = rand_vec(2, 5).iter().map(|v| 1.5 * v).collect();
        let b = vec![0.3];
        let r = rand_vec(3, 84);
        let (_, saved) = fwd(&g, &x, &w, &b);
        let (mut dx, mut dw, mut db) = (vec![0.0; 84], vec![0.0; 5], vec![0.0; 1]);
        seca_backward(
            &g,
            &x,
            &w,
            &saved,
            &r,
            SecaGrads {
                dx: Some(&mut dx),
                dweight: &mut dw,
                dbias: &mut db,
            },
        )
        .unwrap();
        let l = |x: &[f32], w: &[f32], b: &[f32]| dot_f64(&r, &fwd(&g, x, w, b).0);
        check_grad("x", &x, &dx, Tol::SMOOTH, 100, |v| l(v, &w, &b)).unwrap();
        check_grad("weight", &w, &dw, Tol::SMOOTH, 10, |v| l(&x, v, &b)).unwrap();
        check_grad("bias", &b, &db, Tol::SMOOTH, 10, |v| l(&x, &w, v)).unwrap();
    }

    #[test]
    fn seca_conv1d_is_cross_correlation_with_zero_padding() {
        // C = 3, B = 1, HW = 1: z = x. u[0] = w2·z0 + w3·z1 + w4·z2 (+ bias).
        let g = SecaGeom::new(3, 1, 1).unwrap();
        let x = [1.0, 2.0, 3.0];
        let w = [0.1, 0.2, 0.3, 0.4, 0.5];
        let (_, saved) = fwd(&g, &x, &w, &[0.25]);
        let u0 = 0.25 + 0.3 * 1.0 + 0.4 * 2.0 + 0.5 * 3.0;
        let u2 = 0.25 + 0.1 * 1.0 + 0.2 * 2.0 + 0.3 * 3.0;
        assert!((saved.w[0] - sigmoid(u0)).abs() < 1e-6);
        assert!((saved.w[2] - sigmoid(u2)).abs() < 1e-6);
    }

    /// SECA_II = seca(pre + cur), composed from the two ops; gradients reach both inputs.
    #[test]
    fn seca_ii_composition_gradcheck() {
        let g = SecaGeom::new(5, 2, 4).unwrap();
        let pre = rand_vec(1, 40);
        let cur = rand_vec(2, 40);
        let w = rand_vec(3, 5);
        let b = vec![-0.1];
        let r = rand_vec(4, 40);
        let f = |pre: &[f32], cur: &[f32]| {
            let mut sum = vec![0.0; 40];
            residual_add_forward(pre, cur, &mut sum).unwrap();
            let (y, saved) = fwd(&g, &sum, &w, &b);
            (sum, y, saved)
        };
        let (sum, _, saved) = f(&pre, &cur);
        let mut dsum = vec![0.0; 40];
        let (mut dw, mut db) = (vec![0.0; 5], vec![0.0; 1]);
        seca_backward(
            &g,
            &sum,
            &w,
            &saved,
            &r,
            SecaGrads {
                dx: Some(&mut dsum),
                dweight: &mut dw,
                dbias: &mut db,
            },
        )
        .unwrap();
        let (mut dpre, mut dcur) = (vec![0.0; 40], vec![0.0; 40]);
        residual_add_backward(&dsum, Some(&mut dpre), Some(&mut dcur)).unwrap();
        check_grad("pre", &pre, &dpre, Tol::SMOOTH, 100, |v| {
            dot_f64(&r, &f(v, &cur).1)
        })
        .unwrap();
        check_grad("cur", &cur, &dcur, Tol::SMOOTH, 100, |v| {
            dot_f64(&r, &f(&pre, v).1)
        })
        .unwrap();
    }
}
