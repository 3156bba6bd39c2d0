//! Parallel-computation EM-PF neuron, Version III (spec §2.8): no leak, no state, no reset.
//!
//! Shape vocabulary:
//! ```text
//!   E elements (element-wise op), T time-steps; q [T] threshold logits, θ_t = σ(q_t) (init 0).
//!   i [E] input current, s [E] output.
//! ```
//!
//! Forward `s = ReLU(I − θ_t)`; backward `dI += ds·1[s > 0]`, `dq_t += −σ'(q_t)·Σ ds·1[s > 0]`.

use rayon::prelude::*;

use super::neuron::check_step;
use crate::error::{check_len, Result};
use crate::tensor::{add_masked, det_par_sum, sigmoid, sigmoid_grad, sum_masked, PAR_CHUNK};

/// One step: `s = ReLU(I − σ(q_t))`.
pub fn parallel_neuron_forward(t: usize, q: &[f32], i: &[f32], s: &mut [f32]) -> Result<()> {
    check_step("parallel_neuron", t, q.len())?;
    check_len("parallel_neuron.s", i.len(), s.len())?;
    let th = sigmoid(q[t]);
    s.par_chunks_mut(PAR_CHUNK)
        .zip(i.par_chunks(PAR_CHUNK))
        .for_each(|(sc, ic)| {
            for (o, &v) in sc.iter_mut().zip(ic) {
                *o = (v - th).max(0.0);
            }
        });
    Ok(())
}

/// Backward of one step (accumulates into `di` and `dq`).
pub fn parallel_neuron_backward(
    t: usize,
    q: &[f32],
    s: &[f32],
    ds: &[f32],
    di: Option<&mut [f32]>,
    dq: &mut [f32],
) -> Result<()> {
    check_step("parallel_neuron", t, q.len())?;
    check_len("parallel_neuron.dq", q.len(), dq.len())?;
    check_len("parallel_neuron.ds", s.len(), ds.len())?;
    let sum_h = det_par_sum(s.len(), |lo, hi| sum_masked(&s[lo..hi], &ds[lo..hi]));
    dq[t] -= (sigmoid_grad(q[t]) as f64 * sum_h) as f32;
    if let Some(di) = di {
        check_len("parallel_neuron.di", s.len(), di.len())?;
        di.par_chunks_mut(PAR_CHUNK)
            .zip(s.par_chunks(PAR_CHUNK).zip(ds.par_chunks(PAR_CHUNK)))
            .for_each(|(dc, (sc, gc))| add_masked(dc, sc, gc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};
    use crate::layers::neuron::tests::push_from_kink;

    #[test]
    fn parallel_neuron_gradcheck() {
        let e = 50;
        let q = vec![0.2, -0.7];
        let t = 1;
        let mut i = rand_vec(1, e);
        let th = sigmoid(q[t]);
        push_from_kink(|_, iv| iv - th, &mut i, 0.05);
        let r = rand_vec(2, e);
        let mut s = vec![0.0; e];
        parallel_neuron_forward(t, &q, &i, &mut s).unwrap();
        assert!(s.iter().any(|&x| x > 0.0) && s.contains(&0.0));
        let (mut di, mut dq) = (vec![0.0; e], vec![0.0; 2]);
        parallel_neuron_backward(t, &q, &s, &r, Some(&mut di), &mut dq).unwrap();
        assert_eq!(dq[0], 0.0);
        let l = |q: &[f32], i: &[f32]| {
            let mut s = vec![0.0; e];
            parallel_neuron_forward(t, q, i, &mut s).unwrap();
            dot_f64(&r, &s)
        };
        check_grad("i", &i, &di, Tol::LINEAR, 100, |v| l(&q, v)).unwrap();
        let tol = Tol {
            eps: 1e-3,
            ..Tol::SMOOTH
        };
        check_grad("q", &q, &dq, tol, 10, |v| l(v, &i)).unwrap();
    }
}
