//! EM-PF neuron with membrane-potential BatchNorm, Version II (spec §2.6).
//!
//! Shape vocabulary:
//! ```text
//!   C channels, N = B·H·W elements per channel, E = C·N; T time-steps.
//!   i, v_prev, s, v_next  [C][N]   (CBHW)
//!   p, q, a, b            [T]      logits: λ_t = σ(p_t), θ_t = σ(q_t), a_t = σ(a), b_t = σ(b)
//!                                  (all init 0 → 0.5)
//!   gamma, beta           [T][C]   per-step BN affine (init 1 / 0)
//!   running_mean/var      [T][C]   per-step BN running statistics (init 0 / 1)
//!   saved.m               [C][N]   m of the last forward; saved.bn: its per-channel μ, 1/σ
//! ```
//!
//! Forward at step t:
//! ```text
//!   m  = λ_t·v_prev + I                       (v_prev detached)
//!   m̂  = a_t·BN_t(m) + b_t·m,  BN_t(m) = γ_t·x̂ + β_t,  x̂ = (m − μ_t)/sqrt(σ_t² + eps)
//!   s  = ReLU(m̂ − θ_t),  v = m̂ − s           (firing, reset and the carried state use m̂)
//! ```
//! Train mode uses the batch statistics of m (and updates step t's running statistics with
//! momentum 0.1, unbiased variance); eval mode uses step t's running statistics.
//! Backward (`g = ds·1[s > 0] = ∂L/∂m̂`; per channel Σ over its N elements):
//! ```text
//!   dq_t −= σ'(q_t)·Σ g        da += σ'(a)·Σ g·BN_t(m)      db += σ'(b)·Σ g·m
//!   dγ_t += a_t·Σ g·x̂          dβ_t += a_t·Σ g
//!   dm = b_t·g + a_t·γ·invstd·(g − Σg/N − x̂·Σ(g·x̂)/N)   (train; eval drops the two means)
//!   dI += dm,  dp_t += σ'(p_t)·Σ dm·v_prev.
//! ```

use rayon::prelude::*;

use super::batchnorm2d::{batchnorm2d_forward, BatchNormSaved, BnParams, BnRunning};
use super::neuron::check_step;
use crate::error::{check_len, Error, Result};
use crate::tensor::{sigmoid, sigmoid_grad};

/// Parameters of one Mem-BN neuron layer.
#[derive(Clone, Copy, Debug)]
pub struct MemBnParams<'a> {
    /// Leak logits `[T]`.
    pub p: &'a [f32],
    /// Threshold logits `[T]`.
    pub q: &'a [f32],
    /// BN-branch mixing logits `[T]`.
    pub a: &'a [f32],
    /// Raw-branch mixing logits `[T]`.
    pub b: &'a [f32],
    /// Per-step BN weight `[T][C]`.
    pub gamma: &'a [f32],
    /// Per-step BN bias `[T][C]`.
    pub beta: &'a [f32],
}

impl MemBnParams<'_> {
    /// Validates lengths and returns `(T, C)`.
    fn dims(&self) -> Result<(usize, usize)> {
        let t = self.p.len();
        check_len("membn.q", t, self.q.len())?;
        check_len("membn.a", t, self.a.len())?;
        check_len("membn.b", t, self.b.len())?;
        if t == 0 || !self.gamma.len().is_multiple_of(t) || self.gamma.is_empty() {
            return Err(Error::ShapeInvalid {
                what: "membn",
                detail: format!("gamma of {} for {t} steps", self.gamma.len()),
            });
        }
        let c = self.gamma.len() / t;
        check_len("membn.beta", t * c, self.beta.len())?;
        Ok((t, c))
    }
}

/// Gradient outputs of [`membn_neuron_backward`] (accumulated into).
#[derive(Debug)]
pub struct MemBnGrads<'a> {
    /// `[C][N]`, when needed.
    pub di: Option<&'a mut [f32]>,
    /// `[T]`.
    pub dp: &'a mut [f32],
    /// `[T]`.
    pub dq: &'a mut [f32],
    /// `[T]`.
    pub da: &'a mut [f32],
    /// `[T]`.
    pub db: &'a mut [f32],
    /// `[T][C]`.
    pub dgamma: &'a mut [f32],
    /// `[T][C]`.
    pub dbeta: &'a mut [f32],
}

/// What forward saves for backward.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemBnSaved {
    /// m = λ_t·v_prev + I `[C][N]`.
    pub m: Vec<f32>,
    /// Statistics that normalised m.
    pub bn: BatchNormSaved,
}

impl MemBnSaved {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.m.len() + self.bn.bytes()
    }
}

/// One online step (see module docs). `running` are the full `[T][C]` buffers.
#[allow(clippy::too_many_arguments)]
pub fn membn_neuron_forward(
    t: usize,
    prm: &MemBnParams<'_>,
    running: BnRunning<'_>,
    train: bool,
    i: &[f32],
    v_prev: &[f32],
    s: &mut [f32],
    v_next: &mut [f32],
    saved: &mut MemBnSaved,
) -> Result<()> {
    let (tt, c) = prm.dims()?;
    check_step("membn", t, tt)?;
    check_len("membn.running_mean", tt * c, running.mean.len())?;
    check_len("membn.running_var", tt * c, running.var.len())?;
    let e = i.len();
    if !e.is_multiple_of(c) {
        return Err(Error::ShapeInvalid {
            what: "membn",
            detail: format!("{e} elements do not split into {c} channels"),
        });
    }
    check_len("membn.v_prev", e, v_prev.len())?;
    check_len("membn.s", e, s.len())?;
    check_len("membn.v_next", e, v_next.len())?;
    let lam = sigmoid(prm.p[t]);
    saved.m.resize(e, 0.0);
    saved
        .m
        .par_iter_mut()
        .zip(i.par_iter().zip(v_prev.par_iter()))
        .for_each(|(m, (&iv, &pv))| *m = lam * pv + iv);
    let tc = t * c..(t + 1) * c;
    // BN_t(m) is written into `s` first, then mixed in place.
    batchnorm2d_forward(
        &saved.m,
        s,
        BnParams {
            gamma: &prm.gamma[tc.clone()],
            beta: &prm.beta[tc.clone()],
        },
        BnRunning {
            mean: &mut running.mean[tc.clone()],
            var: &mut running.var[tc],
        },
        train,
        &mut saved.bn,
    )?;
    let (a, b, th) = (sigmoid(prm.a[t]), sigmoid(prm.b[t]), sigmoid(prm.q[t]));
    s.par_iter_mut()
        .zip(v_next.par_iter_mut().zip(saved.m.par_iter()))
        .for_each(|(so, (vo, &m))| {
            let mh = a * *so + b * m;
            let sp = (mh - th).max(0.0);
            *so = sp;
            *vo = mh - sp;
        });
    Ok(())
}

/// Backward of one online step (see module docs). `saved` is what the forward of this step
/// stored; `s` its output, `v_prev` its input state.
#[allow(clippy::too_many_arguments)]
pub fn membn_neuron_backward(
    t: usize,
    prm: &MemBnParams<'_>,
    saved: &MemBnSaved,
    s: &[f32],
    v_prev: &[f32],
    ds: &[f32],
    grads: MemBnGrads<'_>,
) -> Result<()> {
    let (tt, c) = prm.dims()?;
    check_step("membn", t, tt)?;
    let e = s.len();
    check_len("membn.saved.m", e, saved.m.len())?;
    check_len("membn.saved.mean", c, saved.bn.mean.len())?;
    check_len("membn.saved.invstd", c, saved.bn.invstd.len())?;
    check_len("membn.v_prev", e, v_prev.len())?;
    check_len("membn.ds", e, ds.len())?;
    for (what, len) in [
        ("membn.dp", grads.dp.len()),
        ("membn.dq", grads.dq.len()),
        ("membn.da", grads.da.len()),
        ("membn.db", grads.db.len()),
    ] {
        check_len(what, tt, len)?;
    }
    check_len("membn.dgamma", tt * c, grads.dgamma.len())?;
    check_len("membn.dbeta", tt * c, grads.dbeta.len())?;
    if !e.is_multiple_of(c) {
        return Err(Error::ShapeInvalid {
            what: "membn",
            detail: format!("{e} elements do not split into {c} channels"),
        });
    }
    let n = e / c;
    let (a, b) = (sigmoid(prm.a[t]), sigmoid(prm.b[t]));
    let gam = &prm.gamma[t * c..(t + 1) * c];
    let bet = &prm.beta[t * c..(t + 1) * c];
    let (mean, invstd) = (&saved.bn.mean, &saved.bn.invstd);
    let batch_stats = saved.bn.batch_stats;
    // Pass 1, per channel: Σg, Σg·x̂, Σg·m.
    let sums: Vec<[f64; 3]> = saved
        .m
        .par_chunks(n)
        .zip(s.par_chunks(n).zip(ds.par_chunks(n)))
        .enumerate()
        .map(|(ci, (mr, (sr, dr)))| {
            let (mu, is) = (mean[ci], invstd[ci]);
            let mut acc = [0.0f64; 3];
            for ((&m, &sv), &d) in mr.iter().zip(sr).zip(dr) {
                if sv > 0.0 {
                    let g = d as f64;
                    acc[0] += g;
                    acc[1] += g * ((m - mu) * is) as f64;
                    acc[2] += g * m as f64;
                }
            }
            acc
        })
        .collect();
    // Pass 2, per channel: dm, dI, Σ dm·v_prev.
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|ci| {
            let scale = a * gam[ci] * invstd[ci];
            if batch_stats {
                (
                    scale,
                    (sums[ci][0] / n as f64) as f32,
                    (sums[ci][1] / n as f64) as f32,
                )
            } else {
                (scale, 0.0, 0.0)
            }
        })
        .collect();
    let dm_at = |ci: usize, m: f32, sv: f32, d: f32| -> f32 {
        let g = if sv > 0.0 { d } else { 0.0 };
        let (scale, mg, mgx) = coef[ci];
        let xh = (m - mean[ci]) * invstd[ci];
        b * g + scale * (g - mg - xh * mgx)
    };
    let dpv: Vec<f64> = match grads.di {
        Some(di) => {
            check_len("membn.di", e, di.len())?;
            di.par_chunks_mut(n)
                .zip(saved.m.par_chunks(n))
                .zip(
                    s.par_chunks(n)
                        .zip(ds.par_chunks(n))
                        .zip(v_prev.par_chunks(n)),
                )
                .enumerate()
                .map(|(ci, ((dir, mr), ((sr, dr), pr)))| {
                    let mut acc = 0.0f64;
                    for ((((o, &m), &sv), &d), &pv) in
                        dir.iter_mut().zip(mr).zip(sr).zip(dr).zip(pr)
                    {
                        let dm = dm_at(ci, m, sv, d);
                        *o += dm;
                        acc += dm as f64 * pv as f64;
                    }
                    acc
                })
                .collect()
        }
        None => saved
            .m
            .par_chunks(n)
            .zip(
                s.par_chunks(n)
                    .zip(ds.par_chunks(n))
                    .zip(v_prev.par_chunks(n)),
            )
            .enumerate()
            .map(|(ci, (mr, ((sr, dr), pr)))| {
                let mut acc = 0.0f64;
                for (((&m, &sv), &d), &pv) in mr.iter().zip(sr).zip(dr).zip(pr) {
                    acc += dm_at(ci, m, sv, d) as f64 * pv as f64;
                }
                acc
            })
            .collect(),
    };
    let mut sg = 0.0f64;
    let mut sbn = 0.0f64;
    let mut sm = 0.0f64;
    for ci in 0..c {
        let [g0, gx, gm] = sums[ci];
        sg += g0;
        sbn += gam[ci] as f64 * gx + bet[ci] as f64 * g0;
        sm += gm;
        grads.dgamma[t * c + ci] += (a as f64 * gx) as f32;
        grads.dbeta[t * c + ci] += (a as f64 * g0) as f32;
    }
    let spv: f64 = dpv.iter().sum();
    grads.dq[t] -= (sigmoid_grad(prm.q[t]) as f64 * sg) as f32;
    grads.da[t] += (sigmoid_grad(prm.a[t]) as f64 * sbn) as f32;
    grads.db[t] += (sigmoid_grad(prm.b[t]) as f64 * sm) as f32;
    grads.dp[t] += (sigmoid_grad(prm.p[t]) as f64 * spv) as f32;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    struct Case {
        c: usize,
        t: usize,
        p: Vec<f32>,
        q: Vec<f32>,
        a: Vec<f32>,
        b: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        rm: Vec<f32>,
        rv: Vec<f32>,
        v_prev: Vec<f32>,
    }

    impl Case {
        fn prm(&self) -> MemBnParams<'_> {
            MemBnParams {
                p: &self.p,
                q: &self.q,
                a: &self.a,
                b: &self.b,
                gamma: &self.gamma,
                beta: &self.beta,
            }
        }

        /// Forward with the given (possibly perturbed) tensors; returns (s, m̂ − θ).
        fn run(
            &self,
            prm: &MemBnParams<'_>,
            i: &[f32],
            train: bool,
        ) -> (Vec<f32>, Vec<f32>, MemBnSaved) {
            let e = i.len();
            let (mut s, mut v) = (vec![0.0; e], vec![0.0; e]);
            let (mut rm, mut rv) = (self.rm.clone(), self.rv.clone());
            let mut saved = MemBnSaved::default();
            membn_neuron_forward(
                self.t,
                prm,
                BnRunning {
                    mean: &mut rm,
                    var: &mut rv,
                },
                train,
                i,
                &self.v_prev,
                &mut s,
                &mut v,
                &mut saved,
            )
            .unwrap();
            let th = sigmoid(prm.q[self.t]);
            // v + s = m̂
            let d = s.iter().zip(&v).map(|(a, b)| a + b - th).collect();
            (s, d, saved)
        }
    }

    fn gradcheck(train: bool) {
        let (c, n, tt, t) = (3, 12, 3, 1);
        let cs = Case {
            c,
            t,
            p: vec![0.2, -0.3, 0.4],
            q: vec![0.1, 0.6, -0.2],
            a: vec![0.0, 0.3, -0.5],
            b: vec![0.5, -0.2, 0.1],
            gamma: rand_vec(1, tt * c).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: rand_vec(2, tt * c).iter().map(|v| 0.5 * v).collect(),
            rm: rand_vec(3, tt * c).iter().map(|v| 0.3 * v).collect(),
            rv: rand_vec(4, tt * c).iter().map(|v| 1.0 + 0.5 * v).collect(),
            v_prev: rand_vec(5, c * n).iter().map(|v| 0.5 + 0.5 * v).collect(),
        };
        assert_eq!(cs.c, c);
        let mut i: Vec<f32> = rand_vec(6, c * n).iter().map(|v| 1.5 * v).collect();
        // Push m̂ away from θ (iterate: in train mode moving one input moves the statistics).
        for _ in 0..50 {
            let (_, d, _) = cs.run(&cs.prm(), &i, train);
            let mut moved = false;
            for (k, &dk) in d.iter().enumerate() {
                if dk.abs() < 0.05 {
                    i[k] += if dk >= 0.0 { 0.1 } else { -0.1 };
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        let (s, d, saved) = cs.run(&cs.prm(), &i, train);
        assert!(
            d.iter().all(|x| x.abs() >= 0.05),
            "could not move off the kink"
        );
        assert!(s.iter().any(|&x| x > 0.0) && s.contains(&0.0));
        let r = rand_vec(7, c * n);
        let mut g = (
            vec![0.0; c * n],
            vec![0.0; tt],
            vec![0.0; tt],
            vec![0.0; tt],
            vec![0.0; tt],
            vec![0.0; tt * c],
            vec![0.0; tt * c],
        );
        membn_neuron_backward(
            t,
            &cs.prm(),
            &saved,
            &s,
            &cs.v_prev,
            &r,
            MemBnGrads {
                di: Some(&mut g.0),
                dp: &mut g.1,
                dq: &mut g.2,
                da: &mut g.3,
                db: &mut g.4,
                dgamma: &mut g.5,
                dbeta: &mut g.6,
            },
        )
        .unwrap();
        let loss = |prm: &MemBnParams<'_>, i: &[f32]| dot_f64(&r, &cs.run(prm, i, train).0);
        let tol = Tol {
            eps: 1e-3,
            ..Tol::SMOOTH
        };
        let base = cs.prm();
        check_grad("i", &i, &g.0, tol, 100, |v| loss(&base, v)).unwrap();
        check_grad("p", &cs.p, &g.1, tol, 10, |v| {
            loss(&MemBnParams { p: v, ..base }, &i)
        })
        .unwrap();
        check_grad("q", &cs.q, &g.2, tol, 10, |v| {
            loss(&MemBnParams { q: v, ..base }, &i)
        })
        .unwrap();
        check_grad("a", &cs.a, &g.3, tol, 10, |v| {
            loss(&MemBnParams { a: v, ..base }, &i)
        })
        .unwrap();
        check_grad("b", &cs.b, &g.4, tol, 10, |v| {
            loss(&MemBnParams { b: v, ..base }, &i)
        })
        .unwrap();
        check_grad("gamma", &cs.gamma, &g.5, tol, 20, |v| {
            loss(&MemBnParams { gamma: v, ..base }, &i)
        })
        .unwrap();
        check_grad("beta", &cs.beta, &g.6, tol, 20, |v| {
            loss(&MemBnParams { beta: v, ..base }, &i)
        })
        .unwrap();
        // Only step t's entries are touched.
        assert_eq!(g.1[0], 0.0);
        assert!(g.5[..c].iter().all(|&x| x == 0.0));
        assert!(g.5[c..2 * c].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn membn_gradcheck_train() {
        gradcheck(true);
    }

    #[test]
    fn membn_gradcheck_eval() {
        gradcheck(false);
    }

    #[test]
    fn membn_with_a0_b1_is_version_one() {
        // a → 0, b → 1 (logits ∓ 30) degrades to the plain EM-PF neuron (spec §2.6).
        let (c, n, tt) = (2, 5, 2);
        let p = [0.3, -0.2];
        let q = [0.1, 0.4];
        let prm = MemBnParams {
            p: &p,
            q: &q,
            a: &[-30.0, -30.0],
            b: &[30.0, 30.0],
            gamma: &[1.0; 4],
            beta: &[0.0; 4],
        };
        let i = rand_vec(1, c * n);
        let vp = rand_vec(2, c * n);
        let (mut s, mut v) = (vec![0.0; c * n], vec![0.0; c * n]);
        let (mut rm, mut rv) = (vec![0.0; tt * c], vec![1.0; tt * c]);
        let mut saved = MemBnSaved::default();
        membn_neuron_forward(
            1,
            &prm,
            BnRunning {
                mean: &mut rm,
                var: &mut rv,
            },
            true,
            &i,
            &vp,
            &mut s,
            &mut v,
            &mut saved,
        )
        .unwrap();
        let (mut s1, mut v1) = (vec![0.0; c * n], vec![0.0; c * n]);
        super::super::neuron::neuron_forward(1, &p, &q, &i, &vp, &mut s1, &mut v1).unwrap();
        for k in 0..c * n {
            assert!((s[k] - s1[k]).abs() < 1e-5 && (v[k] - v1[k]).abs() < 1e-5);
        }
        // running stats of step 1 moved, step 0 untouched
        assert_eq!(rm[..c], [0.0, 0.0]);
        assert!(rm[c..].iter().any(|&x| x != 0.0));
    }
}
