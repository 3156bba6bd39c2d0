//! Softmax + cross-entropy against soft targets (Mixup/CutMix, label smoothing), mean over the
//! batch — the reference the trainer's fused loss is tested against.
//!
//! Shape vocabulary:
//! ```text
//!   B batch, K classes.  logits, probs, targets [B][K];  each target row ≥ 0, sums to 1.
//! ```
//!
//! Forward `L = −(1/B)·Σ_b Σ_k q_bk · log softmax(z_b)_k` (log-sum-exp with max shift, f64),
//! writing the softmax into `probs`. Backward `dlogits += (probs · Σ_k q_bk − q) / B`, which is
//! `(probs − q) / B` for rows that sum to 1; the general form keeps the gradient exact for rows
//! that do not (e.g. a caller's unnormalised weights), so finite differences always agree.
//! With one-hot rows this is [`super::cross_entropy`] bit for bit: the softmax is the same
//! function ([`super::cross_entropy`]'s `softmax_row`), a weight of 1 multiplies exactly, zero
//! weights are skipped, and the backward runs in f32 in the same order
//! (`one_hot_rows_are_plain_cross_entropy`).

use super::cross_entropy::softmax_row;
use crate::error::{check_len, Error, Result};

fn check_shape(classes: usize, batch_values: usize) -> Result<usize> {
    if classes == 0 || batch_values == 0 || !batch_values.is_multiple_of(classes) {
        return Err(Error::ShapeInvalid {
            what: "soft_cross_entropy",
            detail: format!("{batch_values} target values for {classes} classes"),
        });
    }
    Ok(batch_values / classes)
}

/// Returns the mean loss and fills `probs` with the softmax of `logits`.
pub fn soft_cross_entropy_forward(
    classes: usize,
    logits: &[f32],
    targets: &[f32],
    probs: &mut [f32],
) -> Result<f32> {
    let batch = check_shape(classes, targets.len())?;
    check_len("soft_cross_entropy.logits", batch * classes, logits.len())?;
    check_len("soft_cross_entropy.probs", batch * classes, probs.len())?;
    let mut total = 0.0f64;
    for ((row, p), q) in logits
        .chunks(classes)
        .zip(probs.chunks_mut(classes))
        .zip(targets.chunks(classes))
    {
        let lse = softmax_row(row, p);
        for (&v, &t) in row.iter().zip(q) {
            // A zero weight contributes nothing, even against a −∞ log-probability.
            if t != 0.0 {
                total += f64::from(t) * (lse - v as f64);
            }
        }
    }
    Ok((total / batch as f64) as f32)
}

/// Accumulates `(probs · Σq − q) / B` into `dlogits`.
pub fn soft_cross_entropy_backward(
    classes: usize,
    probs: &[f32],
    targets: &[f32],
    dlogits: &mut [f32],
) -> Result<()> {
    let batch = check_shape(classes, targets.len())?;
    check_len("soft_cross_entropy.probs", batch * classes, probs.len())?;
    check_len("soft_cross_entropy.dlogits", batch * classes, dlogits.len())?;
    // f32 in the same order as `cross_entropy_backward`: for a one-hot row `mass` is exactly
    // 1 and `pv · 1 − t` is its `pv − onehot`, so one-hot rows give the same bits.
    let inv = 1.0 / batch as f32;
    for ((d, p), q) in dlogits
        .chunks_mut(classes)
        .zip(probs.chunks(classes))
        .zip(targets.chunks(classes))
    {
        let mass: f32 = q.iter().sum();
        for ((o, &pv), &t) in d.iter_mut().zip(p).zip(q) {
            *o += (pv * mass - t) * inv;
        }
    }
    Ok(())
}

/// timm's smoothed one-hot rows: `1 − ε + ε/K` at the label, `ε/K` elsewhere (`ε = 0` gives
/// one-hot). Labels must be below `classes`.
pub fn smoothed_one_hot(labels: &[u16], classes: usize, epsilon: f32) -> Result<Vec<f32>> {
    if classes == 0 {
        return Err(Error::ShapeInvalid {
            what: "smoothed_one_hot",
            detail: "0 classes".into(),
        });
    }
    let off = epsilon / classes as f32;
    let on = 1.0 - epsilon + off;
    let mut out = vec![off; labels.len() * classes];
    for (index, (row, &l)) in out.chunks_mut(classes).zip(labels).enumerate() {
        let label = usize::from(l);
        if label >= classes {
            return Err(Error::LabelOutOfRange {
                index,
                label,
                classes,
            });
        }
        row[label] = on;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, rand_vec, Tol};
    use crate::layers::cross_entropy::{cross_entropy_backward, cross_entropy_forward};

    fn soft_rows(seed: u64, b: usize, k: usize) -> Vec<f32> {
        let raw: Vec<f32> = rand_vec(seed, b * k)
            .iter()
            .map(|v| v.abs() + 0.01)
            .collect();
        raw.chunks(k)
            .flat_map(|r| {
                let s: f32 = r.iter().sum();
                r.iter().map(move |v| v / s).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (b, k) = (3, 6);
        let x: Vec<f32> = rand_vec(7, b * k).iter().map(|v| 3.0 * v).collect();
        // Normalised rows, and rows that do not sum to 1 (the general form).
        for q in [
            soft_rows(9, b, k),
            rand_vec(11, b * k).iter().map(|v| v.abs()).collect(),
        ] {
            let mut p = vec![0.0; b * k];
            soft_cross_entropy_forward(k, &x, &q, &mut p).unwrap();
            let mut d = vec![0.0; b * k];
            soft_cross_entropy_backward(k, &p, &q, &mut d).unwrap();
            check_grad("logits", &x, &d, Tol::SMOOTH, 100, |v| {
                let mut p = vec![0.0; b * k];
                soft_cross_entropy_forward(k, v, &q, &mut p).unwrap() as f64
            })
            .unwrap();
        }
    }

    #[test]
    fn one_hot_rows_are_plain_cross_entropy() {
        let (b, k) = (4, 5);
        let x: Vec<f32> = rand_vec(3, b * k).iter().map(|v| 2.0 * v).collect();
        let labels = [0u16, 4, 2, 2];
        let q = smoothed_one_hot(&labels, k, 0.0).unwrap();
        let t: Vec<usize> = labels.iter().map(|&l| usize::from(l)).collect();
        let (mut p1, mut p2) = (vec![0.0; b * k], vec![0.0; b * k]);
        let soft = soft_cross_entropy_forward(k, &x, &q, &mut p1).unwrap();
        let hard = cross_entropy_forward(k, &x, &t, &mut p2).unwrap();
        assert_eq!(soft.to_bits(), hard.to_bits(), "{soft} vs {hard}");
        assert_eq!(p1, p2);
        // B = 3 (1/B inexact) as well as 4: still the same bits.
        for (b, x) in [(4, &x[..]), (3, &x[..15])] {
            let (q, t) = (&q[..b * k], &t[..b]);
            let (mut p1, mut p2) = (vec![0.0; b * k], vec![0.0; b * k]);
            soft_cross_entropy_forward(k, x, q, &mut p1).unwrap();
            cross_entropy_forward(k, x, t, &mut p2).unwrap();
            let (mut d1, mut d2) = (vec![0.0; b * k], vec![0.0; b * k]);
            soft_cross_entropy_backward(k, &p1, q, &mut d1).unwrap();
            cross_entropy_backward(k, &p2, t, &mut d2).unwrap();
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&d1), bits(&d2), "batch {b}");
        }
    }

    #[test]
    fn smoothing_values_and_errors() {
        let q = smoothed_one_hot(&[1, 0], 4, 0.1).unwrap();
        for (got, want) in q[..4].iter().zip([0.025, 0.925, 0.025, 0.025]) {
            assert!((got - want).abs() < 1e-6, "{q:?}");
        }
        for row in q.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(matches!(
            smoothed_one_hot(&[4], 4, 0.1),
            Err(Error::LabelOutOfRange { label: 4, .. })
        ));
        let mut p = vec![0.0; 4];
        assert!(soft_cross_entropy_forward(3, &[0.0; 4], &[0.25; 4], &mut p).is_err());
        assert!(soft_cross_entropy_forward(0, &[], &[], &mut []).is_err());
        // Large logits stay finite; a zero weight on a −1000 logit adds nothing.
        let mut p = vec![0.0; 2];
        let l = soft_cross_entropy_forward(2, &[1000.0, -1000.0], &[1.0, 0.0], &mut p).unwrap();
        assert_eq!(l, 0.0);
    }
}
