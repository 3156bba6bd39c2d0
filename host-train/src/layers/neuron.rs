//! EM-PF neuron, Version I (spec §2.3–§2.5): learnable per-step leak and threshold, online
//! (state detached between steps).
//!
//! Shape vocabulary:
//! ```text
//!   E elements (any layout: the op is element-wise; CBHW in the network).
//!   T time-steps; p, q [T] logits: λ_t = σ(p_t), θ_t = σ(q_t) (init 0 → 0.5).
//!   i      [E]  input current I[t]
//!   v_prev [E]  carried state v[t−1] (a constant: detached; zeros at t = 0)
//!   s      [E]  output spike s[t] (floating point, ≥ 0)
//!   v_next [E]  new state v[t]
//! ```
//!
//! Forward: `m = λ_t·v_prev + I`, `s = ReLU(m − θ_t)`, `v = m − s = min(m, θ_t)`.
//! Backward (spatial only, `H = 1[m > θ_t] = 1[s > 0]`):
//! ```text
//!   dI += ds·H,  dp_t += σ'(p_t)·Σ ds·H·v_prev,  dq_t += −σ'(q_t)·Σ ds·H.
//! ```
//! Nothing flows into v_prev (it is detached), so backward needs only s and v_prev.

use rayon::prelude::*;

use crate::error::{check_len, Error, Result};
use crate::tensor::{add_masked, sigmoid, sigmoid_grad, sum_masked2, PAR_CHUNK};

/// Gradient outputs of [`neuron_backward`] (accumulated into).
#[derive(Debug)]
pub struct NeuronGrads<'a> {
    /// `[E]`, when needed.
    pub di: Option<&'a mut [f32]>,
    /// `[T]` gradient of the leak logits p.
    pub dp: &'a mut [f32],
    /// `[T]` gradient of the threshold logits q.
    pub dq: &'a mut [f32],
}

pub(crate) fn check_step(what: &'static str, t: usize, time_steps: usize) -> Result<()> {
    if t < time_steps {
        Ok(())
    } else {
        Err(Error::ShapeInvalid {
            what,
            detail: format!("time-step {t} out of range for {time_steps} per-step parameters"),
        })
    }
}

/// One online step: `s = ReLU(σ(p_t)·v_prev + I − σ(q_t))`, `v_next = m − s`.
pub fn neuron_forward(
    t: usize,
    p: &[f32],
    q: &[f32],
    i: &[f32],
    v_prev: &[f32],
    s: &mut [f32],
    v_next: &mut [f32],
) -> Result<()> {
    check_step("neuron", t, p.len())?;
    check_len("neuron.q", p.len(), q.len())?;
    let e = i.len();
    check_len("neuron.v_prev", e, v_prev.len())?;
    check_len("neuron.s", e, s.len())?;
    check_len("neuron.v_next", e, v_next.len())?;
    let (lam, th) = (sigmoid(p[t]), sigmoid(q[t]));
    s.par_chunks_mut(PAR_CHUNK)
        .zip(v_next.par_chunks_mut(PAR_CHUNK))
        .zip(i.par_chunks(PAR_CHUNK).zip(v_prev.par_chunks(PAR_CHUNK)))
        .for_each(|((sc, vc), (ic, pc))| {
            for (((so, vo), &iv), &pv) in sc.iter_mut().zip(vc.iter_mut()).zip(ic).zip(pc) {
                let m = lam * pv + iv;
                let sp = (m - th).max(0.0);
                *so = sp;
                *vo = m - sp;
            }
        });
    Ok(())
}

/// Backward of one online step (see module docs).
pub fn neuron_backward(
    t: usize,
    p: &[f32],
    q: &[f32],
    s: &[f32],
    v_prev: &[f32],
    ds: &[f32],
    grads: NeuronGrads<'_>,
) -> Result<()> {
    check_step("neuron", t, p.len())?;
    check_len("neuron.q", p.len(), q.len())?;
    check_len("neuron.dp", p.len(), grads.dp.len())?;
    check_len("neuron.dq", p.len(), grads.dq.len())?;
    let e = s.len();
    check_len("neuron.v_prev", e, v_prev.len())?;
    check_len("neuron.ds", e, ds.len())?;
    // One pass over fixed chunks: dI update and the two masked sums; partials are combined in
    // chunk order (deterministic).
    let parts: Vec<[f64; 2]> = match grads.di {
        Some(di) => {
            check_len("neuron.di", e, di.len())?;
            di.par_chunks_mut(PAR_CHUNK)
                .zip(s.par_chunks(PAR_CHUNK))
                .zip(ds.par_chunks(PAR_CHUNK).zip(v_prev.par_chunks(PAR_CHUNK)))
                .map(|((dc, sc), (gc, pc))| {
                    add_masked(dc, sc, gc);
                    sum_masked2(sc, gc, pc)
                })
                .collect()
        }
        None => s
            .par_chunks(PAR_CHUNK)
            .zip(ds.par_chunks(PAR_CHUNK).zip(v_prev.par_chunks(PAR_CHUNK)))
            .map(|(sc, (gc, pc))| sum_masked2(sc, gc, pc))
            .collect(),
    };
    let (sum_hv, sum_h) = parts
        .iter()
        .fold((0.0f64, 0.0f64), |(a, b), p| (a + p[0], b + p[1]));
    grads.dp[t] += (sigmoid_grad(p[t]) as f64 * sum_hv) as f32;
    grads.dq[t] -= (sigmoid_grad(q[t]) as f64 * sum_h) as f32;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};

    /// Moves every `m − θ` at least `margin` away from 0 (so finite differences never cross the
    /// ReLU kink), by shifting the input current.
    pub(crate) fn push_from_kink(
        m_minus_theta: impl Fn(usize, f32) -> f32,
        i: &mut [f32],
        margin: f32,
    ) {
        for (k, iv) in i.iter_mut().enumerate() {
            let d = m_minus_theta(k, *iv);
            if d.abs() < margin {
                *iv += if d >= 0.0 { margin } else { -margin };
            }
        }
    }

    #[test]
    fn neuron_forward_values() {
        let (p, q) = ([0.0, 1.0], [0.0, -1.0]);
        let i = [1.0, 0.2, -0.5];
        let v0 = [0.0, 0.4, 2.0];
        let (mut s, mut v) = ([0.0; 3], [0.0; 3]);
        neuron_forward(0, &p, &q, &i, &v0, &mut s, &mut v).unwrap();
        // λ = θ = 0.5: m = [1.0, 0.4, 0.5]
        assert_eq!(s, [0.5, 0.0, 0.0]);
        assert_eq!(v, [0.5, 0.4, 0.5]);
        neuron_forward(1, &p, &q, &i, &v0, &mut s, &mut v).unwrap();
        let (lam, th) = (sigmoid(1.0), sigmoid(-1.0));
        for k in 0..3 {
            let m = lam * v0[k] + i[k];
            assert!((s[k] - (m - th).max(0.0)).abs() < 1e-7);
            assert!((v[k] - m.min(th)).abs() < 1e-7);
        }
        assert!(neuron_forward(2, &p, &q, &i, &v0, &mut s, &mut v).is_err());
    }

    /// Tiny EM-PF layer over T steps: I[t] = W·x[t] (W [E][D]), loss L = Σ_t Σ_e r[t][e]·s[t][e].
    struct Unrolled {
        e: usize,
        d: usize,
        tt: usize,
        p: Vec<f32>,
        q: Vec<f32>,
        x: Vec<Vec<f32>>,
        r: Vec<Vec<f32>>,
    }

    impl Unrolled {
        /// Full (non-detached) forward in f64; returns (loss, m[t], H[t]).
        fn forward64(&self, w: &[f64]) -> (f64, Vec<Vec<f64>>, Vec<Vec<bool>>) {
            let mut v = vec![0.0f64; self.e];
            let (mut loss, mut ms, mut hs) = (0.0, Vec::new(), Vec::new());
            for t in 0..self.tt {
                let lam = sigmoid(self.p[t]) as f64;
                let th = sigmoid(self.q[t]) as f64;
                let (mut m_t, mut h_t) = (vec![0.0; self.e], vec![false; self.e]);
                for k in 0..self.e {
                    let i: f64 = (0..self.d)
                        .map(|j| w[k * self.d + j] * self.x[t][j] as f64)
                        .sum();
                    let m = lam * v[k] + i;
                    let s = (m - th).max(0.0);
                    v[k] = m - s;
                    loss += self.r[t][k] as f64 * s;
                    m_t[k] = m;
                    h_t[k] = m > th;
                }
                ms.push(m_t);
                hs.push(h_t);
            }
            (loss, ms, hs)
        }

        /// STBP (BPTT through the membrane recursion): dm[t] = r[t]·H[t] +
        /// λ_{t+1}·(1 − H[t])·dm[t+1];  dW = Σ_t dm[t] ⊗ x[t].
        fn stbp_grad(&self, w: &[f64]) -> Vec<f64> {
            let (_, _, hs) = self.forward64(w);
            let mut dw = vec![0.0; self.e * self.d];
            let mut dm_next = vec![0.0f64; self.e];
            for t in (0..self.tt).rev() {
                for k in 0..self.e {
                    let h = if hs[t][k] { 1.0 } else { 0.0 };
                    let carry = if t + 1 < self.tt {
                        sigmoid(self.p[t + 1]) as f64 * (1.0 - h) * dm_next[k]
                    } else {
                        0.0
                    };
                    let dm = self.r[t][k] as f64 * h + carry;
                    for j in 0..self.d {
                        dw[k * self.d + j] += dm * self.x[t][j] as f64;
                    }
                    dm_next[k] = dm;
                }
            }
            dw
        }

        /// Online gradient with this crate's kernels: per step forward (state detached) and
        /// neuron_backward, dW += dI ⊗ x[t].
        fn online_grad(&self, w: &[f32]) -> Vec<f64> {
            let mut dw = vec![0.0f64; self.e * self.d];
            let (mut v, mut v_next) = (vec![0.0f32; self.e], vec![0.0f32; self.e]);
            let (mut dp, mut dq) = (vec![0.0; self.tt], vec![0.0; self.tt]);
            for t in 0..self.tt {
                let i: Vec<f32> = (0..self.e)
                    .map(|k| (0..self.d).map(|j| w[k * self.d + j] * self.x[t][j]).sum())
                    .collect();
                let mut s = vec![0.0; self.e];
                neuron_forward(t, &self.p, &self.q, &i, &v, &mut s, &mut v_next).unwrap();
                let mut di = vec![0.0; self.e];
                neuron_backward(
                    t,
                    &self.p,
                    &self.q,
                    &s,
                    &v,
                    &self.r[t],
                    NeuronGrads {
                        di: Some(&mut di),
                        dp: &mut dp,
                        dq: &mut dq,
                    },
                )
                .unwrap();
                for k in 0..self.e {
                    for j in 0..self.d {
                        dw[k * self.d + j] += di[k] as f64 * self.x[t][j] as f64;
                    }
                }
                std::mem::swap(&mut v, &mut v_next);
            }
            dw
        }
    }

    fn unrolled(seed: u64, x_offset: f32, w_offset: f32) -> (Unrolled, Vec<f32>) {
        let (e, d, tt) = (4, 3, 5);
        let u = Unrolled {
            e,
            d,
            tt,
            p: rand_vec(seed, tt),
            q: rand_vec(seed + 1, tt),
            x: (0..tt)
                .map(|t| {
                    rand_vec(seed + 10 + t as u64, d)
                        .iter()
                        .map(|v| 0.3 * v + x_offset)
                        .collect()
                })
                .collect(),
            r: (0..tt).map(|t| rand_vec(seed + 20 + t as u64, e)).collect(),
        };
        let w = rand_vec(seed + 2, e * d)
            .iter()
            .map(|v| 0.3 * v + w_offset)
            .collect();
        (u, w)
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// Theorem 4.2 (spec §3): online = STBP when the neurons fire at every step (i) or never
    /// fire (ii); they differ on a mixed trajectory. The STBP reference is itself checked against
    /// finite differences of the unrolled (non-detached) forward.
    #[test]
    fn online_equals_stbp_only_in_theorem_cases() {
        // (i) always firing: positive inputs and weights, currents ≥ 1.5 > θ ≤ 1.
        let (u, w) = unrolled(1, 1.0, 1.0);
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let (_, ms, hs) = u.forward64(&w64);
        assert!(
            hs.iter().flatten().all(|&h| h),
            "case (i) must fire at every step"
        );
        assert!(ms.iter().flatten().all(|&m| m > 1.2));
        let (on, st) = (u.online_grad(&w), u.stbp_grad(&w64));
        assert!(st.iter().any(|v| v.abs() > 0.1));
        assert!(
            max_abs_diff(&on, &st) < 1e-5,
            "case (i): online {on:?} vs STBP {st:?}"
        );

        // (ii) always silent: negative currents.
        let (u, w) = unrolled(2, 1.0, -1.0);
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let (_, _, hs) = u.forward64(&w64);
        assert!(
            hs.iter().flatten().all(|&h| !h),
            "case (ii) must never fire"
        );
        let (on, st) = (u.online_grad(&w), u.stbp_grad(&w64));
        assert!(on.iter().chain(&st).all(|&v| v == 0.0));

        // Mixed: small currents accumulate below threshold, then fire.
        let (u, w) = unrolled(3, 0.5, 0.25);
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let (_, ms, hs) = u.forward64(&w64);
        let flat: Vec<bool> = hs.iter().flatten().copied().collect();
        assert!(
            flat.iter().any(|&h| h) && flat.iter().any(|&h| !h),
            "mixed trajectory"
        );
        let (on, st) = (u.online_grad(&w), u.stbp_grad(&w64));
        assert!(
            max_abs_diff(&on, &st) > 1e-2,
            "mixed: online should differ from STBP"
        );
        // The STBP reference equals finite differences of the unrolled forward (no kink within
        // eps: every |m − θ| is checked below).
        let eps = 1e-6;
        for (m_t, &q_t) in ms.iter().zip(&u.q) {
            assert!(m_t.iter().all(|&m| (m - sigmoid(q_t) as f64).abs() > 1e-4));
        }
        for idx in 0..w64.len() {
            let mut wp = w64.clone();
            wp[idx] += eps;
            let lp = u.forward64(&wp).0;
            wp[idx] -= 2.0 * eps;
            let lm = u.forward64(&wp).0;
            let fd = (lp - lm) / (2.0 * eps);
            assert!(
                (fd - st[idx]).abs() < 1e-6,
                "STBP ref [{idx}]: {} vs fd {fd}",
                st[idx]
            );
        }
    }

    #[test]
    fn neuron_gradcheck() {
        let e = 60;
        let t = 1;
        let p = vec![0.3, -0.4, 0.1];
        let q = vec![-0.2, 0.5, 0.0];
        let v_prev: Vec<f32> = rand_vec(1, e).iter().map(|v| 0.5 * v + 0.3).collect();
        let mut i = rand_vec(2, e);
        let (lam, th) = (sigmoid(p[t]), sigmoid(q[t]));
        push_from_kink(|k, iv| lam * v_prev[k] + iv - th, &mut i, 0.05);
        let r = rand_vec(3, e);
        let (mut s, mut v) = (vec![0.0; e], vec![0.0; e]);
        neuron_forward(t, &p, &q, &i, &v_prev, &mut s, &mut v).unwrap();
        assert!(s.iter().any(|&x| x > 0.0) && s.contains(&0.0));
        let (mut di, mut dp, mut dq) = (vec![0.0; e], vec![0.0; 3], vec![0.0; 3]);
        neuron_backward(
            t,
            &p,
            &q,
            &s,
            &v_prev,
            &r,
            NeuronGrads {
                di: Some(&mut di),
                dp: &mut dp,
                dq: &mut dq,
            },
        )
        .unwrap();
        assert_eq!((dp[0], dp[2], dq[0], dq[2]), (0.0, 0.0, 0.0, 0.0));
        let l = |p: &[f32], q: &[f32], i: &[f32]| {
            let (mut s, mut v) = (vec![0.0; e], vec![0.0; e]);
            neuron_forward(t, p, q, i, &v_prev, &mut s, &mut v).unwrap();
            dot_f64(&r, &s)
        };
        let tol = Tol {
            eps: 1e-3,
            ..Tol::SMOOTH
        };
        check_grad("i", &i, &di, Tol::LINEAR, 100, |x| l(&p, &q, x)).unwrap();
        check_grad("p", &p, &dp, tol, 10, |x| l(x, &q, &i)).unwrap();
        check_grad("q", &q, &dq, tol, 10, |x| l(&p, x, &i)).unwrap();
    }
}
