//! Element-wise addition of two activation tensors (residual / SECA_II "pre + cur").
//!
//! Shape vocabulary: E elements; `a, b, y [E]` (same layout).
//! Forward `y = a + b`; backward `da += dy`, `db += dy`.

use rayon::prelude::*;

use crate::error::{check_len, Result};
use crate::tensor::PAR_CHUNK;

/// `y = a + b`.
pub fn residual_add_forward(a: &[f32], b: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("residual_add.b", a.len(), b.len())?;
    check_len("residual_add.y", a.len(), y.len())?;
    y.par_chunks_mut(PAR_CHUNK)
        .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
        .for_each(|(yc, (ac, bc))| {
            for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                *o = u + v;
            }
        });
    Ok(())
}

/// Accumulates `dy` into `da` and `db` (either may be absent).
pub fn residual_add_backward(
    dy: &[f32],
    da: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    for d in [da, db].into_iter().flatten() {
        check_len("residual_add.d", dy.len(), d.len())?;
        d.par_chunks_mut(PAR_CHUNK)
            .zip(dy.par_chunks(PAR_CHUNK))
            .for_each(|(dc, gc)| dc.iter_mut().zip(gc).for_each(|(o, &g)| *o += g));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    #[test]
    fn residual_add_gradcheck() {
        let (a, b, r) = (rand_vec(1, 30), rand_vec(2, 30), rand_vec(3, 30));
        let (mut da, mut db) = (vec![0.5; 30], vec![0.0; 30]);
        residual_add_backward(&r, Some(&mut da), Some(&mut db)).unwrap();
        let da0: Vec<f32> = da.iter().map(|v| v - 0.5).collect();
        let l = |a: &[f32], b: &[f32]| {
            let mut y = vec![0.0; 30];
            residual_add_forward(a, b, &mut y).unwrap();
            dot_f64(&r, &y)
        };
        check_grad("a", &a, &da0, Tol::LINEAR, 100, |v| l(v, &b)).unwrap();
        check_grad("b", &b, &db, Tol::LINEAR, 100, |v| l(&a, v)).unwrap();
        assert!(residual_add_forward(&a, &b[..5], &mut [0.0; 30]).is_err());
    }
}
