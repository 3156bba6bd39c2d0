//! The one GEMM primitive of the trainer: a bounds-checked wrapper around `gemm::gemm` on
//! strided f32 matrix views. Every conv and linear layer's forward and backward is built on it.
//!
//! The k-loop of `gemm` is sequential per output tile and threads split the output, so results do
//! not depend on rayon's scheduling. They do depend on the CPU: `gemm` chooses its kernel (AVX2+FMA,
//! AVX-512) and blocking at run time (see README, "Reproducibility").

use crate::error::{check_len, Error, Result};

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
