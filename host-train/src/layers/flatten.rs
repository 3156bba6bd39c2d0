//! Flatten: spatial CBHW activations to batch-major features, in `empf-core`'s order.
//!
//! Shape vocabulary: C channels, B samples, HW = H·W positions; `x [C][B][HW]` (the trainer's
//! spatial layout), `y [B][C·HW]` with feature index `c·HW + p` (core's `Flatten` of a
//! `C×H×W` tensor). Forward is that permutation; backward its transpose, accumulated.

use crate::error::{check_len, Error, Result};

fn check(c: usize, batch: usize, hw: usize) -> Result<usize> {
    if c == 0 || batch == 0 || hw == 0 {
        return Err(Error::ShapeInvalid {
            what: "flatten",
            detail: format!("zero size: c {c}, batch {batch}, hw {hw}"),
        });
    }
    Ok(c * batch * hw)
}

/// `y[b][c·HW + p] = x[c][b][p]`.
pub fn flatten_forward(c: usize, batch: usize, hw: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    let n = check(c, batch, hw)?;
    check_len("flatten.x", n, x.len())?;
    check_len("flatten.y", n, y.len())?;
    for ci in 0..c {
        for b in 0..batch {
            let src = (ci * batch + b) * hw;
            let dst = (b * c + ci) * hw;
            y[dst..dst + hw].copy_from_slice(&x[src..src + hw]);
        }
    }
    Ok(())
}

/// `dx[c][b][p] += dy[b][c·HW + p]`.
pub fn flatten_backward(
    c: usize,
    batch: usize,
    hw: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let n = check(c, batch, hw)?;
    check_len("flatten.dy", n, dy.len())?;
    check_len("flatten.dx", n, dx.len())?;
    for ci in 0..c {
        for b in 0..batch {
            let src = (b * c + ci) * hw;
            let dst = (ci * batch + b) * hw;
            dx[dst..dst + hw]
                .iter_mut()
                .zip(&dy[src..src + hw])
                .for_each(|(o, &g)| *o += g);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{dot_f64, rand_vec};

    #[test]
    fn flatten_orders_features_as_core_and_backward_is_its_adjoint() {
        let (c, b, hw) = (3, 2, 4);
        let x: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let mut y = vec![0.0; 24];
        flatten_forward(c, b, hw, &x, &mut y).unwrap();
        // Sample 1, channel 2, position 3: x[(2·2 + 1)·4 + 3] = 23 → y[1·12 + 2·4 + 3].
        assert_eq!(y[12 + 8 + 3], 23.0);
        assert_eq!(y[0..4], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(y[4..8], [8.0, 9.0, 10.0, 11.0], "sample 0, channel 1");
        // <flatten(u), r> = <u, flatten_backward(r)> for random u, r.
        let u = rand_vec(1, 24);
        let r = rand_vec(2, 24);
        let mut fu = vec![0.0; 24];
        flatten_forward(c, b, hw, &u, &mut fu).unwrap();
        let mut br = vec![0.5; 24];
        flatten_backward(c, b, hw, &r, &mut br).unwrap();
        let base: f64 = u.iter().map(|&v| 0.5 * v as f64).sum();
        assert!((dot_f64(&fu, &r) - (dot_f64(&u, &br) - base)).abs() < 1e-5);
        assert!(flatten_forward(c, b, hw, &u[1..], &mut fu).is_err());
    }
}
