//! Binary-weight fully connected layer (with FP bias).
//!
//! Shape vocabulary (as in `linear`):
//! ```text
//!   x [B][K], w [O][K] latent weights, alpha [O] = mean_k |w[o][k]| (detached),
//!   wb [O][K] = α_o·sign(w) (sign(0) = +1), b [O], y [B][O].
//! ```
//!
//! Forward `y = x·W_bᵀ + b`; backward as `linear` with W_b, then the straight-through estimator
//! `dw += dW_b · 1[|w| ≤ 1]`.

use super::binary_conv2d::{binarize_backward, binarize_forward};
use super::linear::{linear_backward, linear_forward, LinearGeom, LinearGrads};
use crate::error::{check_len, Result};

/// Binarizes `w` into `wb`/`alpha`, then `y = x·wbᵀ + bias`.
pub fn binary_linear_forward(
    g: &LinearGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    wb: &mut [f32],
    alpha: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    check_len("binary_linear.w", g.d_out * g.d_in, w.len())?;
    binarize_forward(g.d_out, w, wb, alpha)?;
    linear_forward(g, x, wb, bias, y)
}

/// Backward of [`binary_linear_forward`] given its `wb`; `dwb` is scratch (overwritten).
#[allow(clippy::too_many_arguments)]
pub fn binary_linear_backward(
    g: &LinearGeom,
    x: &[f32],
    w: &[f32],
    wb: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dwb: &mut [f32],
    dbias: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
) -> Result<()> {
    check_len("binary_linear.dwb", w.len(), dwb.len())?;
    dwb.iter_mut().for_each(|v| *v = 0.0);
    linear_backward(g, x, wb, dy, LinearGrads { dw: dwb, dbias, dx })?;
    binarize_backward(w, dwb, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    #[test]
    fn binary_linear_gradcheck_and_ste() {
        let g = LinearGeom::new(4, 6, 3).unwrap();
        let x = rand_vec(1, 24);
        let mut w = rand_vec(2, 18);
        w[0] = 1.5;
        w[7] = -2.0;
        let b = rand_vec(3, 3);
        let r = rand_vec(4, 12);
        let (mut wb, mut alpha, mut y) = (vec![0.0; 18], vec![0.0; 3], vec![0.0; 12]);
        binary_linear_forward(&g, &x, &w, Some(&b), &mut wb, &mut alpha, &mut y).unwrap();
        for o in 0..3 {
            let a = w[o * 6..(o + 1) * 6].iter().map(|v| v.abs()).sum::<f32>() / 6.0;
            assert!((alpha[o] - a).abs() < 1e-6);
        }
        let (mut dw, mut dwb, mut db, mut dx) =
            (vec![0.0; 18], vec![0.0; 18], vec![0.0; 3], vec![0.0; 24]);
        binary_linear_backward(
            &g,
            &x,
            &w,
            &wb,
            &r,
            &mut dw,
            &mut dwb,
            Some(&mut db),
            Some(&mut dx),
        )
        .unwrap();
        let fwd = |x: &[f32], wbv: &[f32], b: &[f32]| {
            let mut y = vec![0.0; 12];
            linear_forward(&g, x, wbv, Some(b), &mut y).unwrap();
            dot_f64(&r, &y)
        };
        check_grad("x", &x, &dx, Tol::LINEAR, 100, |v| fwd(v, &wb, &b)).unwrap();
        check_grad("b", &b, &db, Tol::LINEAR, 100, |v| fwd(&x, &wb, v)).unwrap();
        check_grad("wb", &wb, &dwb, Tol::LINEAR, 100, |v| fwd(&x, v, &b)).unwrap();
        assert_eq!(dw[0], 0.0);
        assert_eq!(dw[7], 0.0);
        assert_eq!(dw[1], dwb[1]);
        assert_ne!(dw[1], 0.0);
    }
}
