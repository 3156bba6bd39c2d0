//! BatchNorm2d over CBHW activations (PyTorch semantics: eps 1e-5, momentum 0.1).
//!
//! Shape vocabulary:
//! ```text
//!   C channels, N = B·H·W elements per channel.
//!   x, y              [C][N]   (CBHW: each channel is one contiguous row)
//!   gamma, beta       [C]      affine weight / bias
//!   running_mean/var  [C]      buffers
//!   saved.mean/invstd [C]      what backward needs (x̂ is recomputed from x)
//! ```
//!
//! Train mode: per-call batch statistics μ, σ² (biased) normalise; the running statistics are
//! updated as `r ← (1−0.1)·r + 0.1·s` with the UNBIASED variance `σ²·N/(N−1)`, as PyTorch does.
//! Eval mode: the running statistics normalise, nothing is updated.
//! Backward (train): `dx += γ·invstd/N·(N·dy − Σdy − x̂·Σ(dy·x̂))`; (eval): `dx += γ·invstd·dy`;
//! both: `dγ += Σ dy·x̂`, `dβ += Σ dy`.

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};
use crate::tensor::{sum, sum_g_gxhat, sum_sq_dev};

/// BatchNorm epsilon.
pub const BN_EPS: f32 = 1e-5;
/// Running-statistics momentum.
pub const BN_MOMENTUM: f32 = 0.1;

/// Affine parameters.
#[derive(Clone, Copy, Debug)]
pub struct BnParams<'a> {
    /// γ `[C]`.
    pub gamma: &'a [f32],
    /// β `[C]`.
    pub beta: &'a [f32],
}

/// Running statistics (buffers).
#[derive(Debug)]
pub struct BnRunning<'a> {
    /// Running mean `[C]`.
    pub mean: &'a mut [f32],
    /// Running (unbiased) variance `[C]`.
    pub var: &'a mut [f32],
}

/// Gradient outputs of [`batchnorm2d_backward`] (accumulated into).
#[derive(Debug)]
pub struct BnGrads<'a> {
    /// `[C][N]`, when needed.
    pub dx: Option<&'a mut [f32]>,
    /// `[C]`.
    pub dgamma: &'a mut [f32],
    /// `[C]`.
    pub dbeta: &'a mut [f32],
}

/// What forward saves for backward: per-channel mean and 1/σ that normalised the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchNormSaved {
    /// μ used (batch mean in train mode, running mean in eval mode) `[C]`.
    pub mean: Vec<f32>,
    /// 1/sqrt(σ² + eps) used `[C]`.
    pub invstd: Vec<f32>,
    /// True when batch statistics were used (train mode): backward then differentiates
    /// through them.
    pub batch_stats: bool,
    /// Train mode: the batch's exact (f64) mean and biased variance per channel, kept so that
    /// [`batchnorm2d_update_running`] can repeat the running-statistics update of a step whose
    /// output is reused (and filled in place: no allocation per step).
    pub batch: Vec<(f64, f64)>,
    /// Values per channel of the last train-mode forward (for the unbiased variance).
    pub count: usize,
}

impl BatchNormSaved {
    /// Buffers for `c` channels.
    pub fn new(c: usize) -> Self {
        BatchNormSaved {
            mean: vec![0.0; c],
            invstd: vec![0.0; c],
            batch_stats: false,
            batch: Vec::with_capacity(c),
            count: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.mean.len() + self.invstd.len())
    }
}

/// Forward pass. `C = gamma.len()`, `N = x.len() / C`.
pub fn batchnorm2d_forward(
    x: &[f32],
    y: &mut [f32],
    p: BnParams<'_>,
    running: BnRunning<'_>,
    train: bool,
    saved: &mut BatchNormSaved,
) -> Result<()> {
    let c = p.gamma.len();
    if c == 0 || !x.len().is_multiple_of(c) {
        return Err(Error::ShapeInvalid {
            what: "batchnorm2d",
            detail: format!("{} elements do not split into {c} channels", x.len()),
        });
    }
    let n = x.len() / c;
    check_len("batchnorm2d.y", x.len(), y.len())?;
    check_len("batchnorm2d.beta", c, p.beta.len())?;
    check_len("batchnorm2d.running_mean", c, running.mean.len())?;
    check_len("batchnorm2d.running_var", c, running.var.len())?;
    saved.mean.resize(c, 0.0);
    saved.invstd.resize(c, 0.0);
    saved.batch_stats = train;
    if train {
        if n < 2 {
            return Err(Error::ShapeInvalid {
                what: "batchnorm2d",
                detail: format!("train mode needs more than 1 value per channel, got {n}"),
            });
        }
        x.par_chunks(n)
            .map(|row| {
                let mean = sum(row) / n as f64;
                // Two-pass variance around the f32-rounded mean, corrected to the exact mean.
                let m32 = mean as f32;
                let shift = mean - m32 as f64;
                let var = (sum_sq_dev(row, m32) / n as f64 - shift * shift).max(0.0);
                (mean, var)
            })
            .collect_into_vec(&mut saved.batch);
        saved.count = n;
        for (ci, &(mean, var)) in saved.batch.iter().enumerate() {
            saved.mean[ci] = mean as f32;
            saved.invstd[ci] = (1.0 / (var + BN_EPS as f64).sqrt()) as f32;
        }
        batchnorm2d_update_running(saved, running)?;
    } else {
        for ci in 0..c {
            saved.mean[ci] = running.mean[ci];
            saved.invstd[ci] = 1.0 / (running.var[ci] + BN_EPS).sqrt();
        }
    }
    let (mean, invstd) = (&saved.mean, &saved.invstd);
    y.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .enumerate()
        .for_each(|(ci, (yr, xr))| {
            let scale = p.gamma[ci] * invstd[ci];
            let shift = p.beta[ci] - mean[ci] * scale;
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = v * scale + shift;
            }
        });
    Ok(())
}

/// The running-statistics update of a train-mode forward, from the batch statistics it saved:
/// `running ← (1 − momentum)·running + momentum·batch` (unbiased variance), in f64 as PyTorch
/// does. The forward calls it; a step whose output is provably the previous one's (same input,
/// same weights) calls it alone, so the running statistics advance exactly as if the step had
/// been recomputed.
pub fn batchnorm2d_update_running(saved: &BatchNormSaved, running: BnRunning<'_>) -> Result<()> {
    let c = saved.batch.len();
    if !saved.batch_stats || saved.count < 2 {
        return Err(Error::ShapeInvalid {
            what: "batchnorm2d.update_running",
            detail: "no train-mode batch statistics saved".into(),
        });
    }
    check_len("batchnorm2d.running_mean", c, running.mean.len())?;
    check_len("batchnorm2d.running_var", c, running.var.len())?;
    let n = saved.count as f64;
    let unbias = n / (n - 1.0);
    let m = BN_MOMENTUM as f64;
    for (ci, &(mean, var)) in saved.batch.iter().enumerate() {
        running.mean[ci] = ((1.0 - m) * running.mean[ci] as f64 + m * mean) as f32;
        running.var[ci] = ((1.0 - m) * running.var[ci] as f64 + m * var * unbias) as f32;
    }
    Ok(())
}

/// Backward pass (accumulates). `x` is the forward input, `saved` what forward stored.
pub fn batchnorm2d_backward(
    x: &[f32],
    gamma: &[f32],
    saved: &BatchNormSaved,
    dy: &[f32],
    grads: BnGrads<'_>,
) -> Result<()> {
    let c = gamma.len();
    if c == 0 || !x.len().is_multiple_of(c) {
        return Err(Error::ShapeInvalid {
            what: "batchnorm2d",
            detail: format!("{} elements do not split into {c} channels", x.len()),
        });
    }
    let n = x.len() / c;
    check_len("batchnorm2d.dy", x.len(), dy.len())?;
    check_len("batchnorm2d.saved.mean", c, saved.mean.len())?;
    check_len("batchnorm2d.saved.invstd", c, saved.invstd.len())?;
    check_len("batchnorm2d.dgamma", c, grads.dgamma.len())?;
    check_len("batchnorm2d.dbeta", c, grads.dbeta.len())?;
    let batch_stats = saved.batch_stats;
    // One channel: Σdy and Σdy·x̂ into dβ and dγ, then (if wanted) its dx — channels are
    // independent, so they run in parallel with no per-call scratch.
    let channel =
        |ci: usize, xr: &[f32], dr: &[f32], dg: &mut f32, db: &mut f32, dxr: Option<&mut [f32]>| {
            let (mu, is) = (saved.mean[ci], saved.invstd[ci]);
            let [sd, sdx] = sum_g_gxhat(xr, dr, mu, is);
            *dg += sdx as f32;
            *db += sd as f32;
            let Some(dxr) = dxr else { return };
            let g = gamma[ci] * is;
            if batch_stats {
                let mean_d = (sd / n as f64) as f32;
                let mean_dx = (sdx / n as f64) as f32;
                for ((o, &xv), &d) in dxr.iter_mut().zip(xr).zip(dr) {
                    let xh = (xv - mu) * is;
                    *o += g * (d - mean_d - xh * mean_dx);
                }
            } else {
                for (o, &d) in dxr.iter_mut().zip(dr) {
                    *o += g * d;
                }
            }
        };
    let per_channel = x
        .par_chunks(n)
        .zip(dy.par_chunks(n))
        .zip(grads.dgamma.par_iter_mut().zip(grads.dbeta.par_iter_mut()));
    match grads.dx {
        Some(dx) => {
            check_len("batchnorm2d.dx", x.len(), dx.len())?;
            per_channel.zip(dx.par_chunks_mut(n)).enumerate().for_each(
                |(ci, (((xr, dr), (dg, db)), dxr))| channel(ci, xr, dr, dg, db, Some(dxr)),
            );
        }
        None => per_channel
            .enumerate()
            .for_each(|(ci, ((xr, dr), (dg, db)))| channel(ci, xr, dr, dg, db, None)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    fn fwd(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        rm: &[f32],
        rv: &[f32],
        train: bool,
    ) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        let (mut rm, mut rv) = (rm.to_vec(), rv.to_vec());
        let mut saved = BatchNormSaved::new(gamma.len());
        batchnorm2d_forward(
            x,
            &mut y,
            BnParams { gamma, beta },
            BnRunning {
                mean: &mut rm,
                var: &mut rv,
            },
            train,
            &mut saved,
        )
        .unwrap();
        y
    }

    #[test]
    fn batchnorm_train_stats_and_running_update() {
        // C = 2, N = 4.
        let x = [1.0, 2.0, 3.0, 4.0, -1.0, -1.0, 1.0, 1.0];
        let (gamma, beta) = ([2.0, 1.0], [0.5, 0.0]);
        let (mut rm, mut rv) = ([0.0, 1.0], [1.0, 2.0]);
        let mut y = [0.0; 8];
        let mut saved = BatchNormSaved::new(2);
        batchnorm2d_forward(
            &x,
            &mut y,
            BnParams {
                gamma: &gamma,
                beta: &beta,
            },
            BnRunning {
                mean: &mut rm,
                var: &mut rv,
            },
            true,
            &mut saved,
        )
        .unwrap();
        // channel 0: mean 2.5, biased var 1.25, unbiased 5/3.
        assert!((rm[0] - 0.25).abs() < 1e-6);
        assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
        assert!((rm[1] - 0.9).abs() < 1e-6);
        assert!((rv[1] - (1.8 + 0.1 * 4.0 / 3.0)).abs() < 1e-6);
        let is0 = 1.0 / (1.25f32 + BN_EPS).sqrt();
        assert!((y[0] - (2.0 * (1.0 - 2.5) * is0 + 0.5)).abs() < 1e-5);
        // eval uses the running stats
        let ye = fwd(&x, &gamma, &beta, &rm, &rv, false);
        assert!((ye[4] - ((-1.0 - rm[1]) / (rv[1] + BN_EPS).sqrt())).abs() < 1e-5);
    }

    fn gradcheck(train: bool) {
        let (c, n) = (3, 10);
        let x: Vec<f32> = rand_vec(1, c * n).iter().map(|v| 2.0 * v + 0.3).collect();
        let gamma: Vec<f32> = rand_vec(2, c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = rand_vec(3, c);
        let rm = rand_vec(4, c);
        let rv: Vec<f32> = rand_vec(5, c).iter().map(|v| 1.5 + v).collect();
        let r = rand_vec(6, c * n);
        let mut y = vec![0.0; c * n];
        let mut saved = BatchNormSaved::new(c);
        let (mut rm2, mut rv2) = (rm.clone(), rv.clone());
        batchnorm2d_forward(
            &x,
            &mut y,
            BnParams {
                gamma: &gamma,
                beta: &beta,
            },
            BnRunning {
                mean: &mut rm2,
                var: &mut rv2,
            },
            train,
            &mut saved,
        )
        .unwrap();
        let (mut dx, mut dg, mut db) = (vec![0.0; c * n], vec![0.0; c], vec![0.0; c]);
        batchnorm2d_backward(
            &x,
            &gamma,
            &saved,
            &r,
            BnGrads {
                dx: Some(&mut dx),
                dgamma: &mut dg,
                dbeta: &mut db,
            },
        )
        .unwrap();
        let l = |x: &[f32], g: &[f32], b: &[f32]| dot_f64(&r, &fwd(x, g, b, &rm, &rv, train));
        check_grad("x", &x, &dx, Tol::SMOOTH, 100, |v| l(v, &gamma, &beta)).unwrap();
        check_grad("gamma", &gamma, &dg, Tol::SMOOTH, 100, |v| l(&x, v, &beta)).unwrap();
        check_grad("beta", &beta, &db, Tol::SMOOTH, 100, |v| l(&x, &gamma, v)).unwrap();
    }

    #[test]
    fn batchnorm_gradcheck_train() {
        gradcheck(true);
    }

    #[test]
    fn batchnorm_gradcheck_eval() {
        gradcheck(false);
    }

    #[test]
    fn batchnorm_rejects_bad_input() {
        let mut y = [0.0; 3];
        let mut saved = BatchNormSaved::new(2);
        let r = batchnorm2d_forward(
            &[0.0; 3],
            &mut y,
            BnParams {
                gamma: &[1.0, 1.0],
                beta: &[0.0, 0.0],
            },
            BnRunning {
                mean: &mut [0.0; 2],
                var: &mut [1.0; 2],
            },
            true,
            &mut saved,
        );
        assert!(r.is_err());
        let mut y1 = [0.0; 2];
        let r = batchnorm2d_forward(
            &[0.0; 2],
            &mut y1,
            BnParams {
                gamma: &[1.0, 1.0],
                beta: &[0.0, 0.0],
            },
            BnRunning {
                mean: &mut [0.0; 2],
                var: &mut [1.0; 2],
            },
            true,
            &mut saved,
        );
        assert!(r.is_err(), "N = 1 per channel in train mode");
    }
}
