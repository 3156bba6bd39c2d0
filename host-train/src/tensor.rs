//! Named flat tensors (parameters and buffers), the weight-init RNG and small numeric helpers.
//!
//! Every tensor is a flat `Vec<f32>` in row-major order of its `shape` (PyTorch's layout for the
//! same parameter, e.g. conv weights `[O, C, KH, KW]`), so the names and shapes can be written to
//! a checkpoint and read by the exporter without any transposition.

use rayon::prelude::*;

/// Whether a tensor is updated by the optimizer or is a statistics buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Learned by gradient descent; `grad` has the same length as `value`.
    Trainable,
    /// Updated by the forward pass itself (BN running statistics); `grad` is empty.
    Buffer,
}

/// What a tensor is, for export and for the paper's parameter-memory accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// Latent real-valued weights of a binary layer (exported as α·sign(W), 1 bit each).
    BinaryWeight,
    /// Full-precision weights and biases (stem conv, classifier, SECA Conv1d).
    FullPrecision,
    /// BatchNorm affine parameters and running statistics (conv BN and Mem-BN).
    BatchNorm,
    /// Neuron parameters (λ/θ logits, Mem-BN mixing logits).
    Neuron,
}

/// One named tensor of a network with its gradient accumulator.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Stable name, e.g. `conv2.weight`, `bn1.running_mean`, `neuron1.p` (see `net` docs).
    pub name: String,
    /// Logical shape (row-major); `value.len()` is the product.
    pub shape: Vec<usize>,
    /// Trainable parameter or buffer.
    pub kind: ParamKind,
    /// What the tensor is.
    pub role: ParamRole,
    /// The values.
    pub value: Vec<f32>,
    /// Accumulated gradient (`backward` adds into it; `zero_grad` clears it). Empty for buffers.
    pub grad: Vec<f32>,
}

impl Param {
    /// A trainable tensor with a zeroed gradient of the same length.
    pub fn trainable(
        name: impl Into<String>,
        role: ParamRole,
        shape: Vec<usize>,
        value: Vec<f32>,
    ) -> Self {
        let grad = vec![0.0; value.len()];
        Param {
            name: name.into(),
            shape,
            kind: ParamKind::Trainable,
            role,
            value,
            grad,
        }
    }

    /// A buffer (no gradient).
    pub fn buffer(
        name: impl Into<String>,
        role: ParamRole,
        shape: Vec<usize>,
        value: Vec<f32>,
    ) -> Self {
        Param {
            name: name.into(),
            shape,
            kind: ParamKind::Buffer,
            role,
            value,
            grad: Vec::new(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// True for optimizer-updated tensors.
    pub fn is_trainable(&self) -> bool {
        self.kind == ParamKind::Trainable
    }

    /// Sets the gradient to zero (no-op for buffers).
    pub fn zero_grad(&mut self) {
        self.grad.iter_mut().for_each(|g| *g = 0.0);
    }
}

pub use crate::rng::InitRng;

/// Logistic sigmoid.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Derivative of the sigmoid at logit `x`: `σ(x)(1 − σ(x))`.
#[inline]
pub fn sigmoid_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 - s)
}

/// Chunk length for element-wise parallel loops. Fixed (not derived from the thread count) so
/// that chunked reductions are summed in the same order on every machine.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// Deterministic parallel sum over `0..len`: `f(lo, hi)` returns the partial sum of one chunk
/// (fixed boundaries, [`PAR_CHUNK`] apart); partials are added in chunk order, so the result does
/// not depend on rayon's scheduling.
pub(crate) fn det_par_sum<F>(len: usize, f: F) -> f64
where
    F: Fn(usize, usize) -> f64 + Sync,
{
    let chunks = len.div_ceil(PAR_CHUNK);
    let parts: Vec<f64> = (0..chunks)
        .into_par_iter()
        .map(|i| f(i * PAR_CHUNK, ((i + 1) * PAR_CHUNK).min(len)))
        .collect();
    parts.iter().sum()
}

/// Block length of the blocked sums below: 8 f32 lanes accumulate within a block of this many
/// elements, then the block total is added in f64. Fixed order, so deterministic, and the f32
/// part only ever sums 32 terms per lane.
const SUM_BLOCK: usize = 256;

/// Sums `N` quantities over `len` elements: `f(block_range, &mut lanes)` adds into 8 f32 lanes
/// per quantity for one block of at most [`SUM_BLOCK`] elements (its length a multiple of 8
/// except for the last block, whose tail the callback handles itself).
#[inline]
fn blocked_sums<const N: usize>(
    len: usize,
    mut f: impl FnMut(std::ops::Range<usize>, &mut [[f32; 8]; N]),
) -> [f64; N] {
    let mut total = [0.0f64; N];
    let mut lo = 0;
    while lo < len {
        let hi = (lo + SUM_BLOCK).min(len);
        let mut lanes = [[0.0f32; 8]; N];
        f(lo..hi, &mut lanes);
        for (t, l) in total.iter_mut().zip(&lanes) {
            *t += l.iter().sum::<f32>() as f64;
        }
        lo = hi;
    }
    total
}

/// `Σ x`.
pub(crate) fn sum(x: &[f32]) -> f64 {
    let [s] = blocked_sums(x.len(), |r, [acc]| {
        let xs = &x[r];
        let mut it = xs.chunks_exact(8);
        for c in &mut it {
            for l in 0..8 {
                acc[l] += c[l];
            }
        }
        for &v in it.remainder() {
            acc[0] += v;
        }
    });
    s
}

/// `Σ (x − mu)²`.
pub(crate) fn sum_sq_dev(x: &[f32], mu: f32) -> f64 {
    let [s] = blocked_sums(x.len(), |r, [acc]| {
        let xs = &x[r];
        let mut it = xs.chunks_exact(8);
        for c in &mut it {
            for l in 0..8 {
                let d = c[l] - mu;
                acc[l] += d * d;
            }
        }
        for &v in it.remainder() {
            acc[0] += (v - mu) * (v - mu);
        }
    });
    s
}

/// `(Σ g, Σ g·(x − mu)·is)` (BatchNorm backward).
pub(crate) fn sum_g_gxhat(x: &[f32], g: &[f32], mu: f32, is: f32) -> [f64; 2] {
    let n = x.len().min(g.len());
    blocked_sums(n, |r, [a, b]| {
        let (xs, gs) = (&x[r.clone()], &g[r]);
        let mut ix = xs.chunks_exact(8);
        let mut ig = gs.chunks_exact(8);
        for (cx, cg) in (&mut ix).zip(&mut ig) {
            for l in 0..8 {
                a[l] += cg[l];
                b[l] += cg[l] * ((cx[l] - mu) * is);
            }
        }
        for (&xv, &gv) in ix.remainder().iter().zip(ig.remainder()) {
            a[0] += gv;
            b[0] += gv * ((xv - mu) * is);
        }
    })
}

/// `(Σ g·1[s>0]·v, Σ g·1[s>0])` (neuron backward).
pub(crate) fn sum_masked2(s: &[f32], g: &[f32], v: &[f32]) -> [f64; 2] {
    let n = s.len().min(g.len()).min(v.len());
    blocked_sums(n, |r, [a, b]| {
        let (ss, gs, vs) = (&s[r.clone()], &g[r.clone()], &v[r]);
        let mut is = ss.chunks_exact(8);
        let mut ig = gs.chunks_exact(8);
        let mut iv = vs.chunks_exact(8);
        for ((cs, cg), cv) in (&mut is).zip(&mut ig).zip(&mut iv) {
            for l in 0..8 {
                let h = if cs[l] > 0.0 { cg[l] } else { 0.0 };
                a[l] += h * cv[l];
                b[l] += h;
            }
        }
        for ((&sv, &gv), &vv) in is
            .remainder()
            .iter()
            .zip(ig.remainder())
            .zip(iv.remainder())
        {
            let h = if sv > 0.0 { gv } else { 0.0 };
            a[0] += h * vv;
            b[0] += h;
        }
    })
}

/// `d += g·1[s > 0]` element-wise (neuron backward; written with equal-length slices and an
/// index loop so that it vectorises).
pub(crate) fn add_masked(d: &mut [f32], s: &[f32], g: &[f32]) {
    let n = d.len().min(s.len()).min(g.len());
    let (d, s, g) = (&mut d[..n], &s[..n], &g[..n]);
    for k in 0..n {
        d[k] += if s[k] > 0.0 { g[k] } else { 0.0 };
    }
}

/// `Σ g·1[s>0]` (parallel-neuron backward).
pub(crate) fn sum_masked(s: &[f32], g: &[f32]) -> f64 {
    let n = s.len().min(g.len());
    let [a] = blocked_sums(n, |r, [a]| {
        let (ss, gs) = (&s[r.clone()], &g[r]);
        let mut is = ss.chunks_exact(8);
        let mut ig = gs.chunks_exact(8);
        for (cs, cg) in (&mut is).zip(&mut ig) {
            for l in 0..8 {
                a[l] += if cs[l] > 0.0 { cg[l] } else { 0.0 };
            }
        }
        for (&sv, &gv) in is.remainder().iter().zip(ig.remainder()) {
            a[0] += if sv > 0.0 { gv } else { 0.0 };
        }
    });
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_rng_is_deterministic_and_spread() {
        let mut a = InitRng::new(7);
        let mut b = InitRng::new(7);
        let va = a.uniform_vec(1000, 1.0);
        let vb = b.uniform_vec(1000, 1.0);
        assert_eq!(va, vb);
        let mean = va.iter().map(|&x| x as f64).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!(va.iter().all(|&x| (-1.0..1.0).contains(&x)));
        let n = InitRng::new(3).normal_vec(4000, 2.0);
        let var = n.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 4000.0;
        assert!((var - 4.0).abs() < 0.4, "var {var}");
        assert_ne!(InitRng::new(8).uniform_vec(4, 1.0), va[..4].to_vec());
    }

    #[test]
    fn blocked_sums_match_f64_reference() {
        let mut rng = InitRng::new(5);
        for n in [0, 1, 7, 8, 9, 255, 256, 257, 1000, 4099] {
            let x = rng.uniform_vec(n, 2.0);
            let g = rng.uniform_vec(n, 1.0);
            let s: Vec<f32> = rng.uniform_vec(n, 1.0);
            let r64 = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>();
            let close = |a: f64, b: f64| {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{a} vs {b} (n {n})"
                )
            };
            close(sum(&x), r64(&|i| x[i] as f64));
            close(sum_sq_dev(&x, 0.3), r64(&|i| (x[i] as f64 - 0.3).powi(2)));
            let [a, b] = sum_g_gxhat(&x, &g, 0.2, 1.5);
            close(a, r64(&|i| g[i] as f64));
            close(b, r64(&|i| g[i] as f64 * ((x[i] - 0.2) * 1.5) as f64));
            let h = |i: usize| if s[i] > 0.0 { g[i] as f64 } else { 0.0 };
            let [a, b] = sum_masked2(&s, &g, &x);
            close(a, r64(&|i| h(i) * x[i] as f64));
            close(b, r64(&h));
            close(sum_masked(&s, &g), r64(&h));
        }
    }

    #[test]
    fn det_par_sum_matches_serial() {
        let v: Vec<f64> = (0..100_000).map(|i| (i % 17) as f64 * 0.5).collect();
        let s = det_par_sum(v.len(), |lo, hi| v[lo..hi].iter().sum());
        assert_eq!(s, v.iter().sum::<f64>());
    }
}
