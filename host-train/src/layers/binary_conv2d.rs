//! Binary-weight 2-D convolution (BConv, ReActNet style; spec §2.3), no bias.
//!
//! Shape vocabulary (as in `conv2d`):
//! ```text
//!   x     [C][B][H][W]    input activations (CBHW)
//!   w     [O][C][k][k]    latent real-valued weights (= [O][K]); what the optimizer updates
//!   alpha [O]             α_o = mean_k |w[o][k]| (detached: no gradient flows through it)
//!   wb    [O][K]          W_b = α_o · sign(w), sign(0) = +1 (the exporter packs 1 bit per weight)
//!   y     [O][B][OH][OW]
//! ```
//!
//! Forward: `y = conv(x, W_b)`. Backward (straight-through estimator with clipping):
//! `dW_b` is the ordinary conv weight gradient, `dw += dW_b · 1[|w| ≤ 1]`, and
//! `dx += col2im(W_bᵀ·dy)`.

use rayon::prelude::*;

use super::conv2d::{conv2d_backward, conv2d_forward, Conv2dGeom, Conv2dGrads};
use crate::error::{check_len, Error, Result};

/// `alpha[o] = mean |w[o][:]|`, `wb[o][:] = alpha[o] · sign(w[o][:])` for `rows` rows of `w`.
pub fn binarize_forward(rows: usize, w: &[f32], wb: &mut [f32], alpha: &mut [f32]) -> Result<()> {
    check_len("binarize.alpha", rows, alpha.len())?;
    check_len("binarize.wb", w.len(), wb.len())?;
    if rows == 0 || !w.len().is_multiple_of(rows) {
        return Err(Error::ShapeInvalid {
            what: "binarize",
            detail: format!("{} weights do not split into {rows} rows", w.len()),
        });
    }
    let k = w.len() / rows;
    wb.par_chunks_mut(k)
        .zip(w.par_chunks(k))
        .zip(alpha.par_iter_mut())
        .for_each(|((wbr, wr), a)| {
            let mean = (wr.iter().map(|v| v.abs() as f64).sum::<f64>() / k as f64) as f32;
            *a = mean;
            for (d, &v) in wbr.iter_mut().zip(wr) {
                *d = if v >= 0.0 { mean } else { -mean };
            }
        });
    Ok(())
}

/// Straight-through estimator: `dw += dwb · 1[|w| ≤ 1]`.
pub fn binarize_backward(w: &[f32], dwb: &[f32], dw: &mut [f32]) -> Result<()> {
    check_len("binarize.dwb", w.len(), dwb.len())?;
    check_len("binarize.dw", w.len(), dw.len())?;
    dw.par_iter_mut()
        .zip(w.par_iter().zip(dwb.par_iter()))
        .for_each(|(d, (&wv, &g))| {
            if wv.abs() <= 1.0 {
                *d += g;
            }
        });
    Ok(())
}

/// Binarizes `w` into `wb`/`alpha`, then `y = conv(x, wb)`.
pub fn binary_conv2d_forward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    wb: &mut [f32],
    alpha: &mut [f32],
    y: &mut [f32],
    col: &mut [f32],
) -> Result<()> {
    check_len("binary_conv2d.w", g.w_len(), w.len())?;
    binarize_forward(g.c_out, w, wb, alpha)?;
    conv2d_forward(g, x, wb, None, y, col)
}

/// Backward of [`binary_conv2d_forward`] given the `wb` it produced: `dwb` (scratch of
/// `g.w_len()`, overwritten) receives the W_b gradient, then `dw += dwb·1[|w|≤1]`;
/// `dx += ∂/∂x` when given.
#[allow(clippy::too_many_arguments)]
pub fn binary_conv2d_backward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    wb: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dwb: &mut [f32],
    dx: Option<&mut [f32]>,
    col: &mut [f32],
) -> Result<()> {
    check_len("binary_conv2d.dwb", g.w_len(), dwb.len())?;
    dwb.iter_mut().for_each(|v| *v = 0.0);
    conv2d_backward(
        g,
        x,
        wb,
        dy,
        Conv2dGrads {
            dw: dwb,
            dbias: None,
            dx,
        },
        col,
    )?;
    binarize_backward(w, dwb, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    #[test]
    fn binarize_values() {
        let w = [0.5, -0.25, 0.0, -1.25, 2.0, 3.0];
        let mut wb = [0.0; 6];
        let mut a = [0.0; 2];
        binarize_forward(2, &w, &mut wb, &mut a).unwrap();
        assert!((a[0] - 0.25).abs() < 1e-7);
        assert!((a[1] - 6.25 / 3.0).abs() < 1e-6);
        assert_eq!(wb[..3], [a[0], -a[0], a[0]]);
        assert_eq!(wb[3..], [-a[1], a[1], a[1]]);
        assert!(binarize_forward(4, &w, &mut wb, &mut [0.0; 4]).is_err());
    }

    /// dx by finite differences (the forward is smooth in x); dw is the STE: the conv weight
    /// gradient at W_b (checked by finite differences of the FP conv in its weight) times the
    /// clipping mask, so weights with |w| > 1 must get exactly zero.
    #[test]
    fn binary_conv2d_gradcheck_and_ste() {
        let g = Conv2dGeom::new(2, 3, 5, 5, 4, 3, 1, 1).unwrap();
        let x = rand_vec(1, g.x_len());
        let mut w = rand_vec(2, g.w_len());
        for (i, v) in w.iter_mut().enumerate() {
            if i % 5 == 0 {
                *v *= 3.0; // some latent weights outside [-1, 1]
            }
        }
        let r = rand_vec(3, g.y_len());
        let mut wb = vec![0.0; g.w_len()];
        let mut alpha = vec![0.0; g.c_out];
        let mut col = vec![0.0; g.col_len()];
        let mut y = vec![0.0; g.y_len()];
        binary_conv2d_forward(&g, &x, &w, &mut wb, &mut alpha, &mut y, &mut col).unwrap();
        let mut dw = vec![0.0; g.w_len()];
        let mut dwb = vec![0.0; g.w_len()];
        let mut dx = vec![0.0; g.x_len()];
        binary_conv2d_backward(
            &g,
            &x,
            &w,
            &wb,
            &r,
            &mut dw,
            &mut dwb,
            Some(&mut dx),
            &mut col,
        )
        .unwrap();
        // dx vs finite differences of the binary forward.
        check_grad("x", &x, &dx, Tol::LINEAR, 200, |v| {
            let (mut wb2, mut a2, mut y2) =
                (vec![0.0; g.w_len()], vec![0.0; 4], vec![0.0; g.y_len()]);
            let mut col2 = vec![0.0; g.col_len()];
            binary_conv2d_forward(&g, v, &w, &mut wb2, &mut a2, &mut y2, &mut col2).unwrap();
            dot_f64(&r, &y2)
        })
        .unwrap();
        // dW_b vs finite differences of the FP conv in its weight at W_b.
        let masked: Vec<f32> = w
            .iter()
            .zip(&dwb)
            .map(|(&wv, &g)| if wv.abs() <= 1.0 { g } else { 0.0 })
            .collect();
        assert_eq!(dw, masked);
        assert!(w.iter().zip(&dw).any(|(wv, d)| wv.abs() > 1.0 && *d == 0.0));
        check_grad("wb", &wb, &dwb, Tol::LINEAR, 200, |v| {
            let mut y2 = vec![0.0; g.y_len()];
            let mut col2 = vec![0.0; g.col_len()];
            conv2d_forward(&g, &x, v, None, &mut y2, &mut col2).unwrap();
            dot_f64(&r, &y2)
        })
        .unwrap();
    }
}
