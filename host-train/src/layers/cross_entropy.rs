//! Softmax + cross-entropy, mean over the batch.
//!
//! Shape vocabulary:
//! ```text
//!   B batch, K classes.  logits, probs [B][K];  targets [B] (class indices < K).
//! ```
//!
//! Forward `L = −(1/B)·Σ_b log softmax(logits_b)[target_b]` (log-sum-exp with max shift, f64),
//! writing the softmax into `probs`. Backward `dlogits += (probs − onehot(target)) / B`.

use crate::error::{check_len, Error, Result};

fn check_targets(classes: usize, targets: &[usize]) -> Result<()> {
    for (index, &label) in targets.iter().enumerate() {
        if label >= classes {
            return Err(Error::LabelOutOfRange {
                index,
                label,
                classes,
            });
        }
    }
    Ok(())
}

/// Writes the softmax of one row of logits into `p` and returns its log-sum-exp (max shift,
/// f64). Shared with [`super::soft_cross_entropy`], so both losses see the same probabilities
/// bit for bit.
pub(crate) fn softmax_row(row: &[f32], p: &mut [f32]) -> f64 {
    let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
    let lse = mx + sum.ln();
    for (o, &v) in p.iter_mut().zip(row) {
        *o = (v as f64 - lse).exp() as f32;
    }
    lse
}

/// Returns the mean loss and fills `probs` with the softmax of `logits`.
pub fn cross_entropy_forward(
    classes: usize,
    logits: &[f32],
    targets: &[usize],
    probs: &mut [f32],
) -> Result<f32> {
    let batch = targets.len();
    if classes == 0 || batch == 0 {
        return Err(Error::ShapeInvalid {
            what: "cross_entropy",
            detail: format!("batch {batch}, classes {classes}"),
        });
    }
    check_len("cross_entropy.logits", batch * classes, logits.len())?;
    check_len("cross_entropy.probs", batch * classes, probs.len())?;
    check_targets(classes, targets)?;
    let mut total = 0.0f64;
    for ((row, p), &tgt) in logits
        .chunks(classes)
        .zip(probs.chunks_mut(classes))
        .zip(targets)
    {
        let lse = softmax_row(row, p);
        total += lse - row[tgt] as f64;
    }
    Ok((total / batch as f64) as f32)
}

/// Accumulates `(probs − onehot) / B` into `dlogits`.
pub fn cross_entropy_backward(
    classes: usize,
    probs: &[f32],
    targets: &[usize],
    dlogits: &mut [f32],
) -> Result<()> {
    let batch = targets.len();
    check_len("cross_entropy.probs", batch * classes, probs.len())?;
    check_len("cross_entropy.dlogits", batch * classes, dlogits.len())?;
    check_targets(classes, targets)?;
    let inv = 1.0 / batch as f32;
    for ((d, p), &tgt) in dlogits
        .chunks_mut(classes)
        .zip(probs.chunks(classes))
        .zip(targets)
    {
        for (k, (o, &pv)) in d.iter_mut().zip(p).enumerate() {
            let onehot = if k == tgt { 1.0 } else { 0.0 };
            *o += (pv - onehot) * inv;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, rand_vec, Tol};

    #[test]
    fn cross_entropy_values_and_gradcheck() {
        let logits = [0.0, 0.0, 1000.0, -1000.0];
        let mut probs = [0.0; 4];
        let l = cross_entropy_forward(2, &logits, &[1, 1], &mut probs).unwrap();
        // row 0: ln 2; row 1: 2000 (target is the −1000 logit); no overflow.
        assert!(
            (l - (2f32.ln() + 2000.0) / 2.0).abs() < 1e-3,
            "stable for large logits: {l}"
        );
        assert_eq!(probs[2..], [1.0, 0.0]);

        let (b, k) = (4, 5);
        let x: Vec<f32> = rand_vec(1, b * k).iter().map(|v| 3.0 * v).collect();
        let t = [0, 4, 2, 2];
        let mut p = vec![0.0; b * k];
        cross_entropy_forward(k, &x, &t, &mut p).unwrap();
        let mut d = vec![0.0; b * k];
        cross_entropy_backward(k, &p, &t, &mut d).unwrap();
        check_grad("logits", &x, &d, Tol::SMOOTH, 100, |v| {
            let mut p = vec![0.0; b * k];
            cross_entropy_forward(k, v, &t, &mut p).unwrap() as f64
        })
        .unwrap();
        let r = cross_entropy_forward(k, &x, &[0, 5, 1, 1], &mut p);
        assert!(matches!(
            r,
            Err(Error::LabelOutOfRange {
                index: 1,
                label: 5,
                ..
            })
        ));
    }
}
