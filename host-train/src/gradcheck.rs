//! Finite-difference gradient checking for the layer tests.
//!
//! The layers compute in f32. A check perturbs one element of one tensor by ±eps, evaluates a
//! scalar loss `L = Σ r·y` (accumulated in f64, `r` random) and compares the central difference
//! `(L(v+eps) − L(v−eps)) / (v+eps − (v−eps))` (denominator taken from the actually stored f32
//! values) with the analytic gradient, within `atol + rtol·max(|analytic|, |numeric|)`.
//! Piecewise-linear layers are checked at points at least a margin away from their kinks, so the
//! central difference is exact up to rounding there.

use crate::tensor::InitRng;

/// Tolerances of a check.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Perturbation size.
    pub eps: f32,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Tol {
    /// For smooth-but-curved ops (BN, sigmoid): eps 3e-3, rtol 2e-2, atol 2e-3.
    pub const SMOOTH: Tol = Tol {
        eps: 3e-3,
        rtol: 2e-2,
        atol: 2e-3,
    };
    /// For ops linear in the checked tensor (conv, linear, pooling): eps 1e-2, rtol 1e-2,
    /// atol 1e-3.
    pub const LINEAR: Tol = Tol {
        eps: 1e-2,
        rtol: 1e-2,
        atol: 1e-3,
    };
}

/// `Σ r·y` in f64.
pub fn dot_f64(r: &[f32], y: &[f32]) -> f64 {
    assert_eq!(r.len(), y.len(), "dot_f64 length");
    r.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Deterministic random vector in `[-1, 1)`.
pub fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    InitRng::new(seed).uniform_vec(n, 1.0)
}

/// Compares `analytic` with central differences of `loss` w.r.t. `values` (at most `max_checks`
/// indices, spread deterministically over the tensor). `loss` receives the perturbed tensor.
/// Returns `Err` with a description of the worst offender on failure.
pub fn check_grad(
    name: &str,
    values: &[f32],
    analytic: &[f32],
    tol: Tol,
    max_checks: usize,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> Result<(), String> {
    assert_eq!(values.len(), analytic.len(), "{name}: analytic length");
    let n = values.len();
    let mut v = values.to_vec();
    let idxs: Vec<usize> = if n <= max_checks {
        (0..n).collect()
    } else {
        let mut rng = InitRng::new(n as u64 ^ 0x5eed);
        (0..max_checks)
            .map(|_| (rng.next_u64() % n as u64) as usize)
            .collect()
    };
    let mut worst: Option<(f64, String)> = None;
    for &i in &idxs {
        let orig = v[i];
        v[i] = orig + tol.eps;
        let up = v[i] as f64;
        let lp = loss(&v);
        v[i] = orig - tol.eps;
        let dn = v[i] as f64;
        let lm = loss(&v);
        v[i] = orig;
        let num = (lp - lm) / (up - dn);
        let ana = analytic[i] as f64;
        let err = (ana - num).abs();
        let allowed = tol.atol + tol.rtol * ana.abs().max(num.abs());
        if err > allowed {
            let ratio = err / allowed;
            if worst.as_ref().is_none_or(|(r, _)| ratio > *r) {
                worst = Some((
                    ratio,
                    format!("{name}[{i}]: analytic {ana:.6e} vs numeric {num:.6e} (err {err:.3e} > {allowed:.3e})"),
                ));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((_, msg)) => Err(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_grad_accepts_right_and_rejects_wrong_gradients() {
        // L(x) = Σ r_i x_i^2 → dL/dx_i = 2 r_i x_i.
        let x = rand_vec(1, 20);
        let r = rand_vec(2, 20);
        let loss = |v: &[f32]| {
            v.iter()
                .zip(&r)
                .map(|(&a, &b)| b as f64 * (a as f64).powi(2))
                .sum::<f64>()
        };
        let good: Vec<f32> = x.iter().zip(&r).map(|(a, b)| 2.0 * a * b).collect();
        check_grad("good", &x, &good, Tol::SMOOTH, 100, loss).unwrap();
        let bad: Vec<f32> = good.iter().map(|g| g * 1.1).collect();
        assert!(check_grad("bad", &x, &bad, Tol::SMOOTH, 100, loss).is_err());
        let mut off = good.clone();
        off[7] += 0.05;
        assert!(check_grad("off", &x, &off, Tol::SMOOTH, 100, loss).is_err());
    }
}
