//! Full-precision fully connected layer.
//!
//! Shape vocabulary:
//! ```text
//!   B batch, K input features, O output features.
//!   x [B][K]  (batch-major: the output of `gap`)
//!   w [O][K]  (PyTorch `nn.Linear.weight`)
//!   b [O]
//!   y [B][O]  (logits for the classifier)
//! ```
//!
//! Forward `y = x·wᵀ + b`; backward `dw += dyᵀ·x`, `db += Σ_b dy`, `dx += dy·w`.

use crate::error::{check_len, Error, Result};
use crate::gemm::{sgemm, MatMut, MatRef};

/// Geometry of one linear call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearGeom {
    /// B.
    pub batch: usize,
    /// K.
    pub d_in: usize,
    /// O.
    pub d_out: usize,
}

impl LinearGeom {
    /// Validates (all sizes ≥ 1).
    pub fn new(batch: usize, d_in: usize, d_out: usize) -> Result<Self> {
        if batch == 0 || d_in == 0 || d_out == 0 {
            return Err(Error::ShapeInvalid {
                what: "linear",
                detail: format!("zero size: batch {batch}, in {d_in}, out {d_out}"),
            });
        }
        Ok(LinearGeom { batch, d_in, d_out })
    }
}

/// Gradient outputs of [`linear_backward`] (accumulated into).
#[derive(Debug)]
pub struct LinearGrads<'a> {
    /// `[O][K]`.
    pub dw: &'a mut [f32],
    /// `[O]`, when the layer has a bias.
    pub dbias: Option<&'a mut [f32]>,
    /// `[B][K]`, when the input gradient is needed.
    pub dx: Option<&'a mut [f32]>,
}

/// `y = x·wᵀ + bias`.
pub fn linear_forward(
    g: &LinearGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_len("linear.x", g.batch * g.d_in, x.len())?;
    check_len("linear.w", g.d_out * g.d_in, w.len())?;
    check_len("linear.y", g.batch * g.d_out, y.len())?;
    sgemm(
        MatMut::row_major("linear.y", y, g.batch, g.d_out)?,
        false,
        MatRef::row_major("linear.x", x, g.batch, g.d_in)?,
        MatRef::row_major("linear.w", w, g.d_out, g.d_in)?.t(),
    )?;
    if let Some(b) = bias {
        check_len("linear.bias", g.d_out, b.len())?;
        for row in y.chunks_mut(g.d_out) {
            row.iter_mut().zip(b).for_each(|(v, &bo)| *v += bo);
        }
    }
    Ok(())
}

/// Accumulates `dw += dyᵀ·x`, `dbias += Σ_b dy`, `dx += dy·w`.
pub fn linear_backward(
    g: &LinearGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    grads: LinearGrads<'_>,
) -> Result<()> {
    check_len("linear.x", g.batch * g.d_in, x.len())?;
    check_len("linear.w", g.d_out * g.d_in, w.len())?;
    check_len("linear.dy", g.batch * g.d_out, dy.len())?;
    sgemm(
        MatMut::row_major("linear.dw", grads.dw, g.d_out, g.d_in)?,
        true,
        MatRef::row_major("linear.dy", dy, g.batch, g.d_out)?.t(),
        MatRef::row_major("linear.x", x, g.batch, g.d_in)?,
    )?;
    if let Some(db) = grads.dbias {
        linear_bias_backward(g, dy, db)?;
    }
    if let Some(dx) = grads.dx {
        sgemm(
            MatMut::row_major("linear.dx", dx, g.batch, g.d_in)?,
            true,
            MatRef::row_major("linear.dy", dy, g.batch, g.d_out)?,
            MatRef::row_major("linear.w", w, g.d_out, g.d_in)?,
        )?;
    }
    Ok(())
}

/// Accumulates the bias gradient `dbias[o] += Σ_b dy[b][o]` (summed in f64). Part of
/// [`linear_backward`]; on its own for a binary layer, whose weight gradient goes to a scratch
/// buffer (then through the straight-through estimator) while the FP bias's goes to the arena.
pub fn linear_bias_backward(g: &LinearGeom, dy: &[f32], dbias: &mut [f32]) -> Result<()> {
    check_len("linear.dy", g.batch * g.d_out, dy.len())?;
    check_len("linear.dbias", g.d_out, dbias.len())?;
    for (o, d) in dbias.iter_mut().enumerate() {
        *d += (0..g.batch)
            .map(|b| dy[b * g.d_out + o] as f64)
            .sum::<f64>() as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    #[test]
    fn linear_matches_naive_and_gradcheck() {
        let g = LinearGeom::new(3, 7, 5).unwrap();
        let x = rand_vec(1, 21);
        let w = rand_vec(2, 35);
        let b = rand_vec(3, 5);
        let mut y = vec![0.0; 15];
        linear_forward(&g, &x, &w, Some(&b), &mut y).unwrap();
        for bi in 0..3 {
            for o in 0..5 {
                let want: f32 = b[o] + (0..7).map(|k| x[bi * 7 + k] * w[o * 7 + k]).sum::<f32>();
                assert!((y[bi * 5 + o] - want).abs() < 1e-5);
            }
        }
        let r = rand_vec(4, 15);
        let (mut dx, mut dw, mut db) = (vec![0.0; 21], vec![0.0; 35], vec![0.0; 5]);
        linear_backward(
            &g,
            &x,
            &w,
            &r,
            LinearGrads {
                dw: &mut dw,
                dbias: Some(&mut db),
                dx: Some(&mut dx),
            },
        )
        .unwrap();
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; 15];
            linear_forward(&g, x, w, Some(b), &mut y).unwrap();
            dot_f64(&r, &y)
        };
        check_grad("x", &x, &dx, Tol::LINEAR, 100, |v| loss(v, &w, &b)).unwrap();
        check_grad("w", &w, &dw, Tol::LINEAR, 100, |v| loss(&x, v, &b)).unwrap();
        check_grad("b", &b, &db, Tol::LINEAR, 100, |v| loss(&x, &w, v)).unwrap();
    }

    #[test]
    fn linear_rejects_bad_lengths() {
        let g = LinearGeom::new(2, 3, 4).unwrap();
        let mut y = vec![0.0; 8];
        assert!(linear_forward(&g, &[0.0; 5], &[0.0; 12], None, &mut y).is_err());
        assert!(LinearGeom::new(0, 1, 1).is_err());
    }
}
