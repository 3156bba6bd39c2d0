//! Full-precision 2-D convolution (square kernel, symmetric zero padding, optional bias).
//!
//! Shape vocabulary:
//! ```text
//!   B batch, C input channels, H×W input plane, O output channels, k kernel side,
//!   S stride, P padding, OH = (H + 2P − k)/S + 1, OW likewise,
//!   K = C·k·k (im2col rows), N = B·OH·OW (im2col columns).
//!   x   [C][B][H][W]   (CBHW activations)
//!   w   [O][C][k][k]   (= [O][K] row-major; PyTorch OIHW)
//!   b   [O]
//!   col [K][N]         scratch (im2col), row r = (c, ky, kx), column j = (b, oy, ox)
//!   y   [O][B][OH][OW] (= [O][N], CBHW again: the next layer's input without transpose)
//! ```
//!
//! Forward: `y = w · col(x) (+ b)` (one GEMM). Backward: `dw += dy · colᵀ`, `db += Σ_j dy`,
//! `dx += col2im(wᵀ · dy)`; `col` is recomputed from `x` in backward rather than kept, so a layer
//! holds no per-step buffer of size K·N. Stride-1, pad-0, 1×1 convolutions skip im2col.

use rayon::prelude::*;

use super::im2col::{col2im_acc, im2col};
use crate::error::{check_len, Error, Result};
use crate::gemm::{sgemm, MatMut, MatRef};

/// Geometry of one convolution call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// B.
    pub batch: usize,
    /// C.
    pub c_in: usize,
    /// H.
    pub h: usize,
    /// W.
    pub w: usize,
    /// O.
    pub c_out: usize,
    /// k (square kernel).
    pub k: usize,
    /// S.
    pub stride: usize,
    /// P.
    pub pad: usize,
}

impl Conv2dGeom {
    /// Validates the geometry (all sizes ≥ 1, kernel fits the padded input).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batch: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let g = Conv2dGeom {
            batch,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks the invariants [`Conv2dGeom::new`] establishes (for hand-built values).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0
            || self.c_in == 0
            || self.h == 0
            || self.w == 0
            || self.c_out == 0
            || self.k == 0
            || self.stride == 0
        {
            return Err(Error::ShapeInvalid {
                what: "conv2d",
                detail: format!("zero size in {self:?}"),
            });
        }
        if self.h + 2 * self.pad < self.k || self.w + 2 * self.pad < self.k {
            return Err(Error::ShapeInvalid {
                what: "conv2d",
                detail: format!("kernel larger than padded input in {self:?}"),
            });
        }
        Ok(())
    }

    /// OH.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// OW.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// K = C·k·k.
    pub fn k_dim(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// N = B·OH·OW.
    pub fn n_dim(&self) -> usize {
        self.batch * self.oh() * self.ow()
    }
    /// Length of `x`.
    pub fn x_len(&self) -> usize {
        self.c_in * self.batch * self.h * self.w
    }
    /// Length of `y`.
    pub fn y_len(&self) -> usize {
        self.c_out * self.n_dim()
    }
    /// Length of `w`.
    pub fn w_len(&self) -> usize {
        self.c_out * self.k_dim()
    }
    /// Scratch needed in `col` (0 for 1×1, stride-1, pad-0 convolutions).
    pub fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.k_dim() * self.n_dim()
        }
    }
    /// True when `col(x) == x` (1×1 kernel, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// Gradient outputs of [`conv2d_backward`] (all accumulated into).
#[derive(Debug)]
pub struct Conv2dGrads<'a> {
    /// `[O][K]`.
    pub dw: &'a mut [f32],
    /// `[O]`, when the layer has a bias.
    pub dbias: Option<&'a mut [f32]>,
    /// `[C][B][H][W]`, when the input gradient is needed.
    pub dx: Option<&'a mut [f32]>,
}

fn scratch<'a>(g: &Conv2dGeom, col: &'a mut [f32]) -> Result<&'a mut [f32]> {
    let need = g.col_len();
    if col.len() < need {
        return Err(Error::ShapeMismatch {
            what: "conv2d.col (at least)",
            expected: need,
            got: col.len(),
        });
    }
    Ok(&mut col[..need])
}

/// `y = conv(x, w) + bias`. `col` must hold at least `g.col_len()` elements.
pub fn conv2d_forward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    col: &mut [f32],
) -> Result<()> {
    g.validate()?;
    check_len("conv2d.x", g.x_len(), x.len())?;
    check_len("conv2d.w", g.w_len(), w.len())?;
    check_len("conv2d.y", g.y_len(), y.len())?;
    if let Some(b) = bias {
        check_len("conv2d.bias", g.c_out, b.len())?;
    }
    let (k, n) = (g.k_dim(), g.n_dim());
    let col = scratch(g, col)?;
    let colv: &[f32] = if g.is_pointwise() {
        x
    } else {
        im2col(g, x, col)?;
        col
    };
    sgemm(
        MatMut::row_major("conv2d.y", y, g.c_out, n)?,
        false,
        MatRef::row_major("conv2d.w", w, g.c_out, k)?,
        MatRef::row_major("conv2d.col", colv, k, n)?,
    )?;
    if let Some(b) = bias {
        y.par_chunks_mut(n)
            .zip(b.par_iter())
            .for_each(|(row, &bo)| {
                row.iter_mut().for_each(|v| *v += bo);
            });
    }
    Ok(())
}

/// Accumulates `dw += dy·colᵀ`, `dbias += Σ dy` (per output channel) and `dx += col2im(wᵀ·dy)`.
/// `col` must hold at least `g.col_len()` elements; its contents are overwritten.
pub fn conv2d_backward(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    grads: Conv2dGrads<'_>,
    col: &mut [f32],
) -> Result<()> {
    g.validate()?;
    check_len("conv2d.x", g.x_len(), x.len())?;
    check_len("conv2d.w", g.w_len(), w.len())?;
    check_len("conv2d.dy", g.y_len(), dy.len())?;
    check_len("conv2d.dw", g.w_len(), grads.dw.len())?;
    let (k, n) = (g.k_dim(), g.n_dim());
    let col = scratch(g, col)?;
    // dw += dy [O][N] · colᵀ [N][K]
    {
        let colv: &[f32] = if g.is_pointwise() {
            x
        } else {
            im2col(g, x, col)?;
            col
        };
        sgemm(
            MatMut::row_major("conv2d.dw", grads.dw, g.c_out, k)?,
            true,
            MatRef::row_major("conv2d.dy", dy, g.c_out, n)?,
            MatRef::row_major("conv2d.col", colv, k, n)?.t(),
        )?;
    }
    if let Some(db) = grads.dbias {
        check_len("conv2d.dbias", g.c_out, db.len())?;
        db.par_iter_mut()
            .zip(dy.par_chunks(n))
            .for_each(|(d, row)| *d += row.iter().map(|&v| v as f64).sum::<f64>() as f32);
    }
    if let Some(dx) = grads.dx {
        check_len("conv2d.dx", g.x_len(), dx.len())?;
        let wt = MatRef::row_major("conv2d.w", w, g.c_out, k)?.t();
        let dyv = MatRef::row_major("conv2d.dy", dy, g.c_out, n)?;
        if g.is_pointwise() {
            // dx [C][N] += wᵀ [C][O] · dy [O][N]
            sgemm(MatMut::row_major("conv2d.dx", dx, k, n)?, true, wt, dyv)?;
        } else {
            sgemm(MatMut::row_major("conv2d.dcol", col, k, n)?, false, wt, dyv)?;
            col2im_acc(g, col, dx)?;
        }
    }
    Ok(())
}

/// Direct-loop reference convolution (f64 accumulation), for tests of the fast path.
pub fn conv2d_forward_naive(
    g: &Conv2dGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    g.validate()?;
    check_len("conv2d.x", g.x_len(), x.len())?;
    check_len("conv2d.w", g.w_len(), w.len())?;
    let (oh, ow, k) = (g.oh(), g.ow(), g.k);
    let mut y = vec![0.0f32; g.y_len()];
    for o in 0..g.c_out {
        for b in 0..g.batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |bb| bb[o] as f64);
                    for c in 0..g.c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((c * g.batch + b) * g.h + iy as usize) * g.w + ix as usize];
                                let wv = w[((o * g.c_in + c) * k + ky) * k + kx];
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((o * g.batch + b) * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};
    use proptest::prelude::*;

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "[{i}] {x} vs {y}");
        }
    }

    /// Naive backward: dx and dw by direct loops (adjoint of the naive forward).
    fn naive_backward(g: &Conv2dGeom, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (oh, ow, k) = (g.oh(), g.ow(), g.k);
        let mut dx = vec![0.0f64; g.x_len()];
        let mut dw = vec![0.0f64; g.w_len()];
        for o in 0..g.c_out {
            for b in 0..g.batch {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let d = dy[((o * g.batch + b) * oh + oy) * ow + ox] as f64;
                        for c in 0..g.c_in {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((c * g.batch + b) * g.h + iy as usize) * g.w + ix as usize;
                                    let wi = ((o * g.c_in + c) * k + ky) * k + kx;
                                    dx[xi] += d * w[wi] as f64;
                                    dw[wi] += d * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (
            dx.iter().map(|&v| v as f32).collect(),
            dw.iter().map(|&v| v as f32).collect(),
        )
    }

    fn run_case(g: Conv2dGeom, seed: u64, with_bias: bool) {
        let x = rand_vec(seed, g.x_len());
        let w = rand_vec(seed + 1, g.w_len());
        let b = rand_vec(seed + 2, g.c_out);
        let bias = with_bias.then_some(&b[..]);
        let mut col = vec![0.0; g.col_len()];
        let mut y = vec![f32::NAN; g.y_len()];
        conv2d_forward(&g, &x, &w, bias, &mut y, &mut col).unwrap();
        let want = conv2d_forward_naive(&g, &x, &w, bias).unwrap();
        assert_close(&y, &want, 1e-4);

        let dy = rand_vec(seed + 3, g.y_len());
        let (dx_ref, dw_ref) = naive_backward(&g, &x, &w, &dy);
        // Pre-fill the accumulators with ones to check accumulation.
        let mut dx = vec![1.0; g.x_len()];
        let mut dw = vec![1.0; g.w_len()];
        let mut db = vec![1.0; g.c_out];
        conv2d_backward(
            &g,
            &x,
            &w,
            &dy,
            Conv2dGrads {
                dw: &mut dw,
                dbias: Some(&mut db),
                dx: Some(&mut dx),
            },
            &mut col,
        )
        .unwrap();
        let dx_ref1: Vec<f32> = dx_ref.iter().map(|v| v + 1.0).collect();
        let dw_ref1: Vec<f32> = dw_ref.iter().map(|v| v + 1.0).collect();
        assert_close(&dx, &dx_ref1, 1e-4);
        assert_close(&dw, &dw_ref1, 1e-4);
        let n = g.n_dim();
        let db_ref: Vec<f32> = (0..g.c_out)
            .map(|o| 1.0 + dy[o * n..(o + 1) * n].iter().sum::<f32>())
            .collect();
        assert_close(&db, &db_ref, 1e-4);
    }

    #[test]
    fn fast_conv_matches_naive_fixed_cases() {
        // (B, C, H, W, O, k, S, P)
        let cases = [
            (2, 3, 5, 5, 4, 3, 1, 1),
            (3, 2, 7, 6, 5, 3, 2, 1),
            (1, 4, 8, 8, 3, 3, 2, 0),
            (2, 3, 6, 5, 2, 1, 1, 0), // pointwise fast path
            (2, 3, 6, 5, 2, 1, 2, 0), // 1x1 stride 2 (im2col path)
            (2, 2, 4, 4, 3, 5, 1, 2),
            (1, 1, 3, 3, 2, 3, 3, 2), // padding larger than the useful area
        ];
        for (i, &(b, c, h, w, o, k, s, p)) in cases.iter().enumerate() {
            let g = Conv2dGeom::new(b, c, h, w, o, k, s, p).unwrap();
            run_case(g, 100 + i as u64 * 10, i % 2 == 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fast_conv_matches_naive_random(
            b in 1usize..4, c in 1usize..5, h in 1usize..9, w in 1usize..9, o in 1usize..6,
            k in 1usize..4, s in 1usize..3, p in 0usize..3, seed in 0u64..1000, bias in any::<bool>()
        ) {
            prop_assume!(h + 2 * p >= k && w + 2 * p >= k);
            let g = Conv2dGeom::new(b, c, h, w, o, k, s, p).unwrap();
            run_case(g, seed, bias);
        }
    }

    #[test]
    fn conv2d_gradcheck() {
        let g = Conv2dGeom::new(2, 3, 5, 4, 4, 3, 2, 1).unwrap();
        let x = rand_vec(1, g.x_len());
        let w = rand_vec(2, g.w_len());
        let b = rand_vec(3, g.c_out);
        let r = rand_vec(4, g.y_len());
        let mut col = vec![0.0; g.col_len()];
        let mut dx = vec![0.0; g.x_len()];
        let mut dw = vec![0.0; g.w_len()];
        let mut db = vec![0.0; g.c_out];
        conv2d_backward(
            &g,
            &x,
            &w,
            &r,
            Conv2dGrads {
                dw: &mut dw,
                dbias: Some(&mut db),
                dx: Some(&mut dx),
            },
            &mut col,
        )
        .unwrap();
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; g.y_len()];
            let mut col = vec![0.0; g.col_len()];
            conv2d_forward(&g, x, w, Some(b), &mut y, &mut col).unwrap();
            dot_f64(&r, &y)
        };
        check_grad("x", &x, &dx, Tol::LINEAR, 200, |v| loss(v, &w, &b)).unwrap();
        check_grad("w", &w, &dw, Tol::LINEAR, 200, |v| loss(&x, v, &b)).unwrap();
        check_grad("b", &b, &db, Tol::LINEAR, 200, |v| loss(&x, &w, v)).unwrap();
    }

    #[test]
    fn conv2d_rejects_bad_lengths() {
        let g = Conv2dGeom::new(1, 1, 3, 3, 1, 3, 1, 1).unwrap();
        let mut y = vec![0.0; g.y_len()];
        let mut col = vec![0.0; g.col_len()];
        let r = conv2d_forward(&g, &[0.0; 8], &[0.0; 9], None, &mut y, &mut col);
        assert!(matches!(
            r,
            Err(Error::ShapeMismatch {
                what: "conv2d.x",
                ..
            })
        ));
        let mut small = vec![0.0; 3];
        let r = conv2d_forward(&g, &[0.0; 9], &[0.0; 9], None, &mut y, &mut small);
        assert!(matches!(r, Err(Error::ShapeMismatch { .. })));
        assert!(Conv2dGeom::new(1, 1, 2, 2, 1, 5, 1, 1).is_err());
        assert!(Conv2dGeom::new(0, 1, 2, 2, 1, 1, 1, 0).is_err());
    }
}
