//! CPU backend: the reference implementation of the heavy ops, and the primitive kernels they are
//! built from (a bounds-checked wrapper around `gemm::gemm`, im2col and col2im).
//!
//! Shape vocabulary (see `layers::conv2d` for the full list):
//! ```text
//!   B batch, C input channels, H×W input plane, O output channels, k kernel side, S stride, P pad,
//!   OH×OW output plane, K = C·k·k (im2col rows), N = B·OH·OW (im2col columns).
//!   x [C][B][H][W] (CBHW), col [K][N] with row r = (c, ky, kx), column j = (b, oy, ox).
//! ```
//!
//! Parallelism is over independent outputs only (rows / planes), never a float reduction split
//! across threads, so results do not depend on rayon's scheduling.

use rayon::prelude::*;

use super::Backend;
use crate::error::{check_len, Error, Result};
use crate::layers::conv2d::{self, Conv2dGeom, Conv2dGrads};
use crate::layers::linear::{self, LinearGeom, LinearGrads};

/// The CPU backend (im2col + `gemm` + rayon). Always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        col: &mut [f32],
    ) -> Result<()> {
        conv2d::conv2d_forward(g, x, w, bias, y, col)
    }

    fn conv2d_backward(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        grads: Conv2dGrads<'_>,
        col: &mut [f32],
    ) -> Result<()> {
        conv2d::conv2d_backward(g, x, w, dy, grads, col)
    }

    fn linear_forward(
        &self,
        g: &LinearGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()> {
        linear::linear_forward(g, x, w, bias, y)
    }

    fn linear_backward(
        &self,
        g: &LinearGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        grads: LinearGrads<'_>,
    ) -> Result<()> {
        linear::linear_backward(g, x, w, dy, grads)
    }
}

/// Read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
///
/// Only constructible as a row-major view of an exactly sized slice, or the transpose of one,
/// so every index `(i, j)` with `i < rows, j < cols` is in bounds.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols` view; `data.len()` must equal `rows * cols`.
    pub fn row_major(
        what: &'static str,
        data: &'a [f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        check_len(what, rows * cols, data.len())?;
        Ok(MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        })
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Mutable row-major matrix view; `data.len()` equals `rows * cols`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatMut<'a> {
    /// Row-major `rows × cols` view; `data.len()` must equal `rows * cols`.
    pub fn row_major(
        what: &'static str,
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        check_len(what, rows * cols, data.len())?;
        Ok(MatMut { data, rows, cols })
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), f32, multi-threaded through rayon.
///
/// The k-loop of `gemm` is sequential per output tile and threads split the output, so the
/// result is independent of the thread count.
pub fn sgemm(dst: MatMut<'_>, accumulate: bool, a: MatRef<'_>, b: MatRef<'_>) -> Result<()> {
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    if a.rows != m || b.cols != n || b.rows != k {
        return Err(Error::ShapeInvalid {
            what: "sgemm",
            detail: format!(
                "dst {}x{} = a {}x{} · b {}x{}",
                m, n, a.rows, a.cols, b.rows, b.cols
            ),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.data.iter_mut().for_each(|v| *v = 0.0);
        }
        return Ok(());
    }
    // SAFETY: `dst`, `a` and `b` were built by `row_major` (lengths checked to be exactly
    // rows*cols) or by transposing such a view, so for every i < rows, j < cols the offset
    // i*rs + j*cs ≤ rows*cols - 1 is in bounds; the strides are ≤ len ≤ isize::MAX (slices never
    // exceed isize::MAX bytes). `dst` is a unique `&mut` borrow, so it cannot alias `a` or `b`,
    // and distinct (i, j) of a row-major view map to distinct elements. `gemm` only reads `dst`
    // when `read_dst` (= accumulate) is true, and the slices outlive the call.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    Ok(())
}

/// Copies the receptive fields of `x` into `col` (`[K][N]`). `col.len()` must be `K * N`.
pub fn im2col(g: &Conv2dGeom, x: &[f32], col: &mut [f32]) -> Result<()> {
    check_len("im2col.x", g.x_len(), x.len())?;
    check_len("im2col.col", g.col_len(), col.len())?;
    let (h, w, k, s, p) = (g.h, g.w, g.k, g.stride, g.pad);
    let (oh, ow) = (g.oh(), g.ow());
    let plane_out = oh * ow;
    let plane_in = h * w;
    if plane_out == 0 {
        return Ok(());
    }
    // One task per (row r = (c, ky, kx), batch b): writes col[r][b*OH*OW .. (b+1)*OH*OW].
    col.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(idx, out)| {
            let r = idx / g.batch;
            let b = idx % g.batch;
            let c = r / (k * k);
            let ky = (r / k) % k;
            let kx = r % k;
            let src = &x[(c * g.batch + b) * plane_in..(c * g.batch + b + 1) * plane_in];
            // Valid ox range: 0 <= ox*s + kx - p < w.
            let ox_lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
            let ox_hi = if w + p > kx {
                ((w + p - kx - 1) / s + 1).min(ow)
            } else {
                0
            };
            for oy in 0..oh {
                let dst = &mut out[oy * ow..(oy + 1) * ow];
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize || ox_lo >= ox_hi {
                    dst.iter_mut().for_each(|v| *v = 0.0);
                    continue;
                }
                let row = &src[iy as usize * w..(iy as usize + 1) * w];
                dst[..ox_lo].iter_mut().for_each(|v| *v = 0.0);
                dst[ox_hi..].iter_mut().for_each(|v| *v = 0.0);
                let ix0 = ox_lo * s + kx - p;
                if s == 1 {
                    dst[ox_lo..ox_hi].copy_from_slice(&row[ix0..ix0 + (ox_hi - ox_lo)]);
                } else {
                    for (j, d) in dst[ox_lo..ox_hi].iter_mut().enumerate() {
                        *d = row[ix0 + j * s];
                    }
                }
            }
        });
    Ok(())
}

/// Scatters `col` (`[K][N]`) back onto the input grid and ADDS it to `dx` (the adjoint of
/// [`im2col`]). Parallel over input planes `(c, b)`, each owned by one task.
pub fn col2im_acc(g: &Conv2dGeom, col: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("col2im.dx", g.x_len(), dx.len())?;
    check_len("col2im.col", g.col_len(), col.len())?;
    let (h, w, k, s, p) = (g.h, g.w, g.k, g.stride, g.pad);
    let (oh, ow) = (g.oh(), g.ow());
    let plane_out = oh * ow;
    let n = g.batch * plane_out;
    let plane_in = h * w;
    if plane_in == 0 {
        return Ok(());
    }
    dx.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(idx, plane)| {
            let c = idx / g.batch;
            let b = idx % g.batch;
            for ky in 0..k {
                for kx in 0..k {
                    let r = (c * k + ky) * k + kx;
                    let src = &col[r * n + b * plane_out..r * n + (b + 1) * plane_out];
                    let ox_lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
                    let ox_hi = if w + p > kx {
                        ((w + p - kx - 1) / s + 1).min(ow)
                    } else {
                        0
                    };
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    for oy in 0..oh {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let row = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                        let srow = &src[oy * ow..(oy + 1) * ow];
                        let ix0 = ox_lo * s + kx - p;
                        if s == 1 {
                            for (d, v) in row[ix0..ix0 + (ox_hi - ox_lo)]
                                .iter_mut()
                                .zip(&srow[ox_lo..ox_hi])
                            {
                                *d += v;
                            }
                        } else {
                            for (j, v) in srow[ox_lo..ox_hi].iter().enumerate() {
                                row[ix0 + j * s] += v;
                            }
                        }
                    }
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::InitRng;

    fn naive_mm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    s += a[i * k + l] as f64 * b[l * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, a: &[f32]) -> Vec<f32> {
        let mut t = vec![0.0; a.len()];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = a[i * cols + j];
            }
        }
        t
    }

    #[test]
    fn sgemm_matches_naive_with_transposes_and_accumulate() {
        let mut rng = InitRng::new(11);
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 65),
            (64, 130, 9),
            (2, 300, 40),
        ] {
            let a = rng.uniform_vec(m * k, 1.0);
            let b = rng.uniform_vec(k * n, 1.0);
            let want = naive_mm(m, n, k, &a, &b);
            let at = transpose(m, k, &a);
            let bt = transpose(k, n, &b);
            // plain
            let mut c = vec![0.0; m * n];
            sgemm(
                MatMut::row_major("c", &mut c, m, n).unwrap(),
                false,
                MatRef::row_major("a", &a, m, k).unwrap(),
                MatRef::row_major("b", &b, k, n).unwrap(),
            )
            .unwrap();
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
            // transposed operands, accumulate onto a copy of `want`
            let mut c2 = want.clone();
            sgemm(
                MatMut::row_major("c", &mut c2, m, n).unwrap(),
                true,
                MatRef::row_major("at", &at, k, m).unwrap().t(),
                MatRef::row_major("bt", &bt, n, k).unwrap().t(),
            )
            .unwrap();
            for (x, y) in c2.iter().zip(&want) {
                assert!(
                    (x - 2.0 * y).abs() <= 2e-4 * (1.0 + y.abs()),
                    "{x} vs 2*{y}"
                );
            }
        }
    }

    #[test]
    fn sgemm_rejects_bad_shapes() {
        let a = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        assert!(MatRef::row_major("a", &a, 2, 2).is_err());
        let r = sgemm(
            MatMut::row_major("c", &mut c, 2, 2).unwrap(),
            false,
            MatRef::row_major("a", &a, 2, 3).unwrap(),
            MatRef::row_major("b", &a, 2, 3).unwrap(),
        );
        assert!(matches!(r, Err(Error::ShapeInvalid { .. })));
    }
}
