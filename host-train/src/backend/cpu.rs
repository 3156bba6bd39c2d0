//! CPU backend: the reference implementation of every [`Backend`] method. Buffers are
//! `Vec<f32>`; each method calls the gradient-checked function of `crate::layers` (built on
//! [`crate::gemm`] and `layers::im2col`), so the dependency runs one way: backend → layers →
//! primitives.
//!
//! Gradient buffers (`dy`, `dx`, `ds`, `di`) may be longer than a pass needs (the network's
//! gradient ping-pong buffers are sized for its largest activation): the prefix the geometry
//! implies is used.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, MemBnSpans, Span, Transfers};
use crate::error::{check_len, Error, Result};
use crate::layers::avgpool2::{avgpool2_backward, avgpool2_forward, PoolGeom};
use crate::layers::batchnorm2d::{
    batchnorm2d_backward, batchnorm2d_forward, batchnorm2d_update_running, BatchNormSaved, BnGrads,
    BnParams, BnRunning,
};
use crate::layers::binary_conv2d::{binarize_backward, binarize_forward};
use crate::layers::conv2d::{self, Conv2dGeom, Conv2dGrads};
use crate::layers::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use crate::layers::flatten::{flatten_backward, flatten_forward};
use crate::layers::gap::{gap_backward, gap_forward, GapGeom};
use crate::layers::linear::{self, LinearGeom, LinearGrads};
use crate::layers::maxpool::{maxpool_backward, maxpool_forward, MaxPoolGeom, MaxPoolSaved};
use crate::layers::membn_neuron::{
    membn_neuron_backward, membn_neuron_forward, MemBnGrads, MemBnParams, MemBnSaved,
};
use crate::layers::neuron::{neuron_backward, neuron_forward, NeuronGrads};
use crate::layers::parallel_neuron::{parallel_neuron_backward, parallel_neuron_forward};
use crate::layers::residual_add::{residual_add_backward, residual_add_forward};
use crate::layers::seca::{seca_backward, seca_forward, SecaGeom, SecaGrads, SecaSaved};
use crate::layers::soft_cross_entropy::{soft_cross_entropy_backward, soft_cross_entropy_forward};
use crate::optim::{adam_update_slices, sgd_update_slices, AdamConfig, SgdConfig};

/// The CPU backend (im2col + `gemm` + rayon). Always available.
#[derive(Debug, Default)]
pub struct CpuBackend {
    uploads: AtomicU64,
    downloads: AtomicU64,
    bytes: AtomicU64,
}

fn span_of<'a>(buf: &'a [f32], s: Span, what: &'static str) -> Result<&'a [f32]> {
    buf.get(s.range()).ok_or_else(|| Error::ShapeInvalid {
        what,
        detail: format!(
            "span {}..{} past the end of a buffer of {}",
            s.off,
            s.end(),
            buf.len()
        ),
    })
}

fn span_of_mut<'a>(buf: &'a mut [f32], s: Span, what: &'static str) -> Result<&'a mut [f32]> {
    let len = buf.len();
    buf.get_mut(s.range()).ok_or_else(|| Error::ShapeInvalid {
        what,
        detail: format!(
            "span {}..{} past the end of a buffer of {len}",
            s.off,
            s.end()
        ),
    })
}

/// The first `n` elements of a gradient buffer.
fn prefix<'a>(buf: &'a [f32], n: usize, what: &'static str) -> Result<&'a [f32]> {
    span_of(buf, Span::new(0, n), what)
}

fn prefix_mut<'a>(buf: &'a mut [f32], n: usize, what: &'static str) -> Result<&'a mut [f32]> {
    span_of_mut(buf, Span::new(0, n), what)
}

/// Disjoint mutable spans of one buffer, in any order (they must not overlap).
fn spans_mut<'a, const N: usize>(
    buf: &'a mut [f32],
    spans: [Span; N],
    what: &'static str,
) -> Result<[&'a mut [f32]; N]> {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by_key(|&i| spans[i].off);
    for w in order.windows(2) {
        if spans[w[0]].end() > spans[w[1]].off {
            return Err(Error::ShapeInvalid {
                what,
                detail: "overlapping parameter spans".into(),
            });
        }
    }
    let mut out: [Option<&'a mut [f32]>; N] = std::array::from_fn(|_| None);
    let mut rest = buf;
    let mut consumed = 0;
    for &i in &order {
        let s = spans[i];
        let tail = std::mem::take(&mut rest);
        let (_, tail) =
            tail.split_at_mut_checked(s.off - consumed)
                .ok_or_else(|| Error::ShapeInvalid {
                    what,
                    detail: format!("span at {} past the end of the buffer", s.off),
                })?;
        let (mid, tail) = tail
            .split_at_mut_checked(s.len)
            .ok_or_else(|| Error::ShapeInvalid {
                what,
                detail: format!("span {}..{} past the end of the buffer", s.off, s.end()),
            })?;
        out[i] = Some(mid);
        rest = tail;
        consumed = s.end();
    }
    Ok(out.map(|o| o.unwrap_or_default()))
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Labels = Vec<usize>;
    type BnSaved = BatchNormSaved;
    type SecaSaved = SecaSaved;
    type MemBnSaved = MemBnSaved;
    type MaxPoolSaved = MaxPoolSaved;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn resize(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        buf.clear();
        buf.resize(len, 0.0);
        Ok(())
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn bytes(&self, buf: &Vec<f32>) -> usize {
        4 * buf.capacity()
    }

    fn fill(&self, buf: &mut Vec<f32>, span: Span, value: f32) -> Result<()> {
        span_of_mut(buf, span, "fill")?.fill(value);
        Ok(())
    }

    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        prefix_mut(dst, src.len(), "upload")?.copy_from_slice(src);
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(4 * src.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(prefix(src, dst.len(), "download")?);
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(4 * dst.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn new_labels(&self) -> Vec<usize> {
        Vec::new()
    }

    fn upload_labels(&self, labels: &[u16], dst: &mut Vec<usize>) -> Result<()> {
        dst.clear();
        dst.extend(labels.iter().map(|&l| l as usize));
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(std::mem::size_of_val(labels) as u64, Ordering::Relaxed);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn transfers(&self) -> Transfers {
        Transfers {
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    fn bn_saved(&self, c: usize) -> Result<BatchNormSaved> {
        Ok(BatchNormSaved::new(c))
    }

    fn maxpool_saved(&self) -> Result<MaxPoolSaved> {
        Ok(MaxPoolSaved::default())
    }

    fn size_maxpool_saved(&self, s: &mut MaxPoolSaved, outputs: usize) -> Result<()> {
        s.argmax.clear();
        s.argmax.resize(outputs, 0);
        Ok(())
    }

    fn maxpool_saved_bytes(&self, s: &MaxPoolSaved) -> usize {
        4 * s.argmax.capacity()
    }

    fn seca_saved(&self) -> Result<SecaSaved> {
        Ok(SecaSaved::default())
    }

    fn size_seca_saved(&self, s: &mut SecaSaved, c: usize, batch: usize) -> Result<()> {
        for v in [&mut s.z, &mut s.w] {
            v.clear();
            v.resize(c * batch, 0.0);
        }
        Ok(())
    }

    fn membn_saved(&self, c: usize) -> Result<MemBnSaved> {
        Ok(MemBnSaved {
            m: Vec::new(),
            bn: BatchNormSaved::new(c),
        })
    }

    fn size_membn_saved(&self, s: &mut MemBnSaved, c: usize, elems: usize) -> Result<()> {
        s.m.clear();
        s.m.resize(elems, 0.0);
        for v in [&mut s.bn.mean, &mut s.bn.invstd] {
            v.clear();
            v.resize(c, 0.0);
        }
        Ok(())
    }

    // Allocated bytes (capacities), so a smaller batch that reuses an allocation reads the same.
    fn bn_saved_bytes(&self, s: &BatchNormSaved) -> usize {
        4 * (s.mean.capacity() + s.invstd.capacity()) + 16 * s.batch.capacity()
    }

    fn seca_saved_bytes(&self, s: &SecaSaved) -> usize {
        4 * (s.z.capacity() + s.w.capacity())
    }

    fn membn_saved_bytes(&self, s: &MemBnSaved) -> usize {
        4 * s.m.capacity() + self.bn_saved_bytes(&s.bn)
    }

    fn nchw_to_cbhw(
        &self,
        batch: usize,
        c: usize,
        hw: usize,
        x: &Vec<f32>,
        offset: usize,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let n = batch * c * hw;
        let x = span_of(x, Span::new(offset, n), "nchw_to_cbhw.x")?;
        let y = prefix_mut(y, n, "nchw_to_cbhw.y")?;
        for ci in 0..c {
            for b in 0..batch {
                y[(ci * batch + b) * hw..(ci * batch + b + 1) * hw]
                    .copy_from_slice(&x[(b * c + ci) * hw..(b * c + ci + 1) * hw]);
            }
        }
        Ok(())
    }

    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &Vec<f32>,
        w: (&Vec<f32>, Span),
        bias: Option<(&Vec<f32>, Span)>,
        y: &mut Vec<f32>,
        col: &mut Vec<f32>,
    ) -> Result<()> {
        let w = span_of(w.0, w.1, "conv2d.w")?;
        let bias = bias
            .map(|(b, s)| span_of(b, s, "conv2d.bias"))
            .transpose()?;
        conv2d::conv2d_forward(g, x, w, bias, y, col)
    }

    fn conv2d_backward(
        &self,
        g: &Conv2dGeom,
        x: &Vec<f32>,
        w: (&Vec<f32>, Span),
        dy: &Vec<f32>,
        dw: (&mut Vec<f32>, Span),
        dbias: Option<Span>,
        dx: Option<&mut Vec<f32>>,
        col: &mut Vec<f32>,
    ) -> Result<()> {
        let w = span_of(w.0, w.1, "conv2d.w")?;
        let dy = prefix(dy, g.y_len(), "conv2d.dy")?;
        let dx = dx
            .map(|d| prefix_mut(d, g.x_len(), "conv2d.dx"))
            .transpose()?;
        let (dw, dbias) = match dbias {
            Some(bs) => {
                let [dw, db] = spans_mut(dw.0, [dw.1, bs], "conv2d.grads")?;
                (dw, Some(db))
            }
            None => (span_of_mut(dw.0, dw.1, "conv2d.dw")?, None),
        };
        conv2d::conv2d_backward(g, x, w, dy, Conv2dGrads { dw, dbias, dx }, col)
    }

    fn linear_forward(
        &self,
        g: &LinearGeom,
        x: &Vec<f32>,
        w: (&Vec<f32>, Span),
        bias: Option<(&Vec<f32>, Span)>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let w = span_of(w.0, w.1, "linear.w")?;
        let bias = bias
            .map(|(b, s)| span_of(b, s, "linear.bias"))
            .transpose()?;
        linear::linear_forward(g, x, w, bias, y)
    }

    fn linear_backward(
        &self,
        g: &LinearGeom,
        x: &Vec<f32>,
        w: (&Vec<f32>, Span),
        dy: &Vec<f32>,
        dw: (&mut Vec<f32>, Span),
        dbias: Option<Span>,
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let w = span_of(w.0, w.1, "linear.w")?;
        let dy = prefix(dy, g.batch * g.d_out, "linear.dy")?;
        let dx = dx
            .map(|d| prefix_mut(d, g.batch * g.d_in, "linear.dx"))
            .transpose()?;
        let (dw, dbias) = match dbias {
            Some(bs) => {
                let [dw, db] = spans_mut(dw.0, [dw.1, bs], "linear.grads")?;
                (dw, Some(db))
            }
            None => (span_of_mut(dw.0, dw.1, "linear.dw")?, None),
        };
        linear::linear_backward(g, x, w, dy, LinearGrads { dw, dbias, dx })
    }

    fn linear_bias_backward(
        &self,
        g: &LinearGeom,
        dy: &Vec<f32>,
        dbias: (&mut Vec<f32>, Span),
    ) -> Result<()> {
        linear::linear_bias_backward(
            g,
            prefix(dy, g.batch * g.d_out, "linear.dy")?,
            span_of_mut(dbias.0, dbias.1, "linear.dbias")?,
        )
    }

    fn binarize_forward(
        &self,
        rows: usize,
        w: (&Vec<f32>, Span),
        wb: &mut Vec<f32>,
        alpha: &mut Vec<f32>,
    ) -> Result<()> {
        binarize_forward(rows, span_of(w.0, w.1, "binarize.w")?, wb, alpha)
    }

    fn binarize_backward(
        &self,
        w: (&Vec<f32>, Span),
        dwb: &Vec<f32>,
        dw: (&mut Vec<f32>, Span),
    ) -> Result<()> {
        binarize_backward(
            span_of(w.0, w.1, "binarize.w")?,
            dwb,
            span_of_mut(dw.0, dw.1, "binarize.dw")?,
        )
    }

    fn batchnorm_forward(
        &self,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        params: (&Vec<f32>, Span, Span),
        stats: (&mut Vec<f32>, Span, Span),
        train: bool,
        saved: &mut BatchNormSaved,
    ) -> Result<()> {
        let [mean, var] = spans_mut(stats.0, [stats.1, stats.2], "batchnorm.running")?;
        batchnorm2d_forward(
            x,
            y,
            BnParams {
                gamma: span_of(params.0, params.1, "batchnorm.gamma")?,
                beta: span_of(params.0, params.2, "batchnorm.beta")?,
            },
            BnRunning { mean, var },
            train,
            saved,
        )
    }

    fn batchnorm_update_running(
        &self,
        saved: &BatchNormSaved,
        stats: (&mut Vec<f32>, Span, Span),
    ) -> Result<()> {
        let [mean, var] = spans_mut(stats.0, [stats.1, stats.2], "batchnorm.running")?;
        batchnorm2d_update_running(saved, BnRunning { mean, var })
    }

    fn batchnorm_backward(
        &self,
        x: &Vec<f32>,
        gamma: (&Vec<f32>, Span),
        saved: &BatchNormSaved,
        dy: &Vec<f32>,
        grads: (&mut Vec<f32>, Span, Span),
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let n = x.len();
        let [dgamma, dbeta] = spans_mut(grads.0, [grads.1, grads.2], "batchnorm.grads")?;
        batchnorm2d_backward(
            x,
            span_of(gamma.0, gamma.1, "batchnorm.gamma")?,
            saved,
            prefix(dy, n, "batchnorm.dy")?,
            BnGrads {
                dx: dx.map(|d| prefix_mut(d, n, "batchnorm.dx")).transpose()?,
                dgamma,
                dbeta,
            },
        )
    }

    fn seca_forward(
        &self,
        g: &SecaGeom,
        x: &Vec<f32>,
        params: (&Vec<f32>, Span, Span),
        y: &mut Vec<f32>,
        saved: &mut SecaSaved,
    ) -> Result<()> {
        seca_forward(
            g,
            x,
            span_of(params.0, params.1, "seca.weight")?,
            span_of(params.0, params.2, "seca.bias")?,
            y,
            saved,
        )
    }

    fn seca_backward(
        &self,
        g: &SecaGeom,
        x: &Vec<f32>,
        weight: (&Vec<f32>, Span),
        saved: &SecaSaved,
        dy: &Vec<f32>,
        grads: (&mut Vec<f32>, Span, Span),
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let n = g.c * g.batch * g.hw;
        let [dweight, dbias] = spans_mut(grads.0, [grads.1, grads.2], "seca.grads")?;
        seca_backward(
            g,
            x,
            span_of(weight.0, weight.1, "seca.weight")?,
            saved,
            prefix(dy, n, "seca.dy")?,
            SecaGrads {
                dx: dx.map(|d| prefix_mut(d, n, "seca.dx")).transpose()?,
                dweight,
                dbias,
            },
        )
    }

    fn neuron_forward(
        &self,
        t: usize,
        params: (&Vec<f32>, Span, Span),
        i: &Vec<f32>,
        v_prev: &Vec<f32>,
        s: &mut Vec<f32>,
        v_next: &mut Vec<f32>,
    ) -> Result<()> {
        neuron_forward(
            t,
            span_of(params.0, params.1, "neuron.p")?,
            span_of(params.0, params.2, "neuron.q")?,
            i,
            v_prev,
            s,
            v_next,
        )
    }

    fn neuron_backward(
        &self,
        t: usize,
        params: (&Vec<f32>, Span, Span),
        s: &Vec<f32>,
        v_prev: &Vec<f32>,
        ds: &Vec<f32>,
        grads: (&mut Vec<f32>, Span, Span),
        di: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let n = s.len();
        let [dp, dq] = spans_mut(grads.0, [grads.1, grads.2], "neuron.grads")?;
        neuron_backward(
            t,
            span_of(params.0, params.1, "neuron.p")?,
            span_of(params.0, params.2, "neuron.q")?,
            s,
            v_prev,
            prefix(ds, n, "neuron.ds")?,
            NeuronGrads {
                di: di.map(|d| prefix_mut(d, n, "neuron.di")).transpose()?,
                dp,
                dq,
            },
        )
    }

    fn membn_neuron_forward(
        &self,
        t: usize,
        params: (&Vec<f32>, &MemBnSpans),
        stats: (&mut Vec<f32>, Span, Span),
        train: bool,
        i: &Vec<f32>,
        v_prev: &Vec<f32>,
        s: &mut Vec<f32>,
        v_next: &mut Vec<f32>,
        saved: &mut MemBnSaved,
    ) -> Result<()> {
        let (buf, sp) = params;
        let prm = MemBnParams {
            p: span_of(buf, sp.p, "membn.p")?,
            q: span_of(buf, sp.q, "membn.q")?,
            a: span_of(buf, sp.a, "membn.a")?,
            b: span_of(buf, sp.b, "membn.b")?,
            gamma: span_of(buf, sp.gamma, "membn.gamma")?,
            beta: span_of(buf, sp.beta, "membn.beta")?,
        };
        let [mean, var] = spans_mut(stats.0, [stats.1, stats.2], "membn.running")?;
        membn_neuron_forward(
            t,
            &prm,
            BnRunning { mean, var },
            train,
            i,
            v_prev,
            s,
            v_next,
            saved,
        )
    }

    fn membn_neuron_backward(
        &self,
        t: usize,
        params: (&Vec<f32>, &MemBnSpans),
        saved: &MemBnSaved,
        s: &Vec<f32>,
        v_prev: &Vec<f32>,
        ds: &Vec<f32>,
        grads: &mut Vec<f32>,
        di: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let (buf, sp) = params;
        let n = s.len();
        let prm = MemBnParams {
            p: span_of(buf, sp.p, "membn.p")?,
            q: span_of(buf, sp.q, "membn.q")?,
            a: span_of(buf, sp.a, "membn.a")?,
            b: span_of(buf, sp.b, "membn.b")?,
            gamma: span_of(buf, sp.gamma, "membn.gamma")?,
            beta: span_of(buf, sp.beta, "membn.beta")?,
        };
        let [dp, dq, da, db, dgamma, dbeta] = spans_mut(
            grads,
            [sp.p, sp.q, sp.a, sp.b, sp.gamma, sp.beta],
            "membn.grads",
        )?;
        membn_neuron_backward(
            t,
            &prm,
            saved,
            s,
            v_prev,
            prefix(ds, n, "membn.ds")?,
            MemBnGrads {
                di: di.map(|d| prefix_mut(d, n, "membn.di")).transpose()?,
                dp,
                dq,
                da,
                db,
                dgamma,
                dbeta,
            },
        )
    }

    fn parallel_neuron_forward(
        &self,
        t: usize,
        q: (&Vec<f32>, Span),
        i: &Vec<f32>,
        s: &mut Vec<f32>,
    ) -> Result<()> {
        parallel_neuron_forward(t, span_of(q.0, q.1, "parallel_neuron.q")?, i, s)
    }

    fn parallel_neuron_backward(
        &self,
        t: usize,
        q: (&Vec<f32>, Span),
        s: &Vec<f32>,
        ds: &Vec<f32>,
        dq: (&mut Vec<f32>, Span),
        di: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let n = s.len();
        parallel_neuron_backward(
            t,
            span_of(q.0, q.1, "parallel_neuron.q")?,
            s,
            prefix(ds, n, "parallel_neuron.ds")?,
            di.map(|d| prefix_mut(d, n, "parallel_neuron.di"))
                .transpose()?,
            span_of_mut(dq.0, dq.1, "parallel_neuron.dq")?,
        )
    }

    fn avgpool2_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        avgpool2_forward(&PoolGeom::new(planes, h, w)?, x, y)
    }

    fn avgpool2_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        let g = PoolGeom::new(planes, h, w)?;
        avgpool2_backward(
            &g,
            prefix(dy, planes * g.oh() * g.ow(), "avgpool2.dy")?,
            prefix_mut(dx, planes * h * w, "avgpool2.dx")?,
        )
    }

    fn maxpool_forward(
        &self,
        g: &MaxPoolGeom,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        saved: &mut MaxPoolSaved,
    ) -> Result<()> {
        let (n, held) = (g.outputs(), saved.argmax.len());
        maxpool_forward(
            g,
            prefix(x, g.planes * g.h * g.w, "maxpool.x")?,
            prefix_mut(y, n, "maxpool.y")?,
            saved
                .argmax
                .get_mut(..n)
                .ok_or_else(|| Error::ShapeInvalid {
                    what: "maxpool.argmax",
                    detail: format!("saved state of {held} outputs, need {n}"),
                })?,
        )
    }

    fn maxpool_backward(
        &self,
        g: &MaxPoolGeom,
        saved: &MaxPoolSaved,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        let n = g.outputs();
        maxpool_backward(
            g,
            saved.argmax.get(..n).ok_or_else(|| Error::ShapeInvalid {
                what: "maxpool.argmax",
                detail: format!("saved state of {} outputs, need {n}", saved.argmax.len()),
            })?,
            prefix(dy, n, "maxpool.dy")?,
            prefix_mut(dx, g.planes * g.h * g.w, "maxpool.dx")?,
        )
    }

    fn gap_forward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        gap_forward(&GapGeom::new(c, batch, hw)?, x, y)
    }

    fn gap_backward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        gap_backward(
            &GapGeom::new(c, batch, hw)?,
            prefix(dy, c * batch, "gap.dy")?,
            prefix_mut(dx, c * batch * hw, "gap.dx")?,
        )
    }

    fn residual_add_forward(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
        n: usize,
    ) -> Result<()> {
        residual_add_forward(
            prefix(a, n, "residual_add.a")?,
            prefix(b, n, "residual_add.b")?,
            prefix_mut(y, n, "residual_add.y")?,
        )
    }

    fn accumulate(&self, dst: &mut Vec<f32>, src: &Vec<f32>, n: usize) -> Result<()> {
        residual_add_backward(
            prefix(src, n, "accumulate.src")?,
            Some(prefix_mut(dst, n, "accumulate.dst")?),
            None,
        )
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>, n: usize) -> Result<()> {
        prefix_mut(dst, n, "copy.dst")?.copy_from_slice(prefix(src, n, "copy.src")?);
        Ok(())
    }

    fn flatten_forward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let n = c * batch * hw;
        flatten_forward(
            c,
            batch,
            hw,
            prefix(x, n, "flatten.x")?,
            prefix_mut(y, n, "flatten.y")?,
        )
    }

    fn flatten_backward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        let n = c * batch * hw;
        flatten_backward(
            c,
            batch,
            hw,
            prefix(dy, n, "flatten.dy")?,
            prefix_mut(dx, n, "flatten.dx")?,
        )
    }

    fn loss_step(
        &self,
        classes: usize,
        logits: &Vec<f32>,
        labels: &Vec<usize>,
        targets: Option<&Vec<f32>>,
        cumulative: &mut Vec<f32>,
        probs: &mut Vec<f32>,
        dlogits: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        t: usize,
        backprop: bool,
    ) -> Result<()> {
        check_len("loss.cumulative", logits.len(), cumulative.len())?;
        cumulative.iter_mut().zip(logits).for_each(|(c, l)| *c += l);
        if backprop {
            let n = logits.len();
            let probs = prefix_mut(probs, n, "loss.probs")?;
            let loss = match targets {
                None => cross_entropy_forward(classes, logits, labels, probs)?,
                Some(q) => soft_cross_entropy_forward(
                    classes,
                    logits,
                    prefix(q, n, "loss.targets")?,
                    probs,
                )?,
            };
            let dlogits = prefix_mut(dlogits, n, "loss.dlogits")?;
            dlogits.fill(0.0);
            match targets {
                None => cross_entropy_backward(classes, probs, labels, dlogits)?,
                Some(q) => soft_cross_entropy_backward(
                    classes,
                    probs,
                    prefix(q, n, "loss.targets")?,
                    dlogits,
                )?,
            }
            let rec = span_of_mut(stats, Span::new(0, 4), "loss.stats")?;
            rec[0] += loss;
            rec[1] += 1.0;
            if !loss.is_finite() && rec[2] == 0.0 {
                rec[2] = (t + 1) as f32;
                rec[3] = loss;
            }
        }
        Ok(())
    }

    fn count_nonzero(
        &self,
        x: &Vec<f32>,
        n: usize,
        stats: &mut Vec<f32>,
        slot: usize,
    ) -> Result<()> {
        let x = prefix(x, n, "count_nonzero.x")?;
        let count = x.iter().filter(|v| **v != 0.0).count();
        let got = stats.len();
        let dst = stats.get_mut(slot).ok_or(Error::ShapeMismatch {
            what: "count_nonzero.stats",
            expected: slot + 1,
            got,
        })?;
        // Exact while the count stays below 2^24 per add; a batch of steps adds one count each.
        *dst += count as f32;
        Ok(())
    }

    fn count_correct(
        &self,
        classes: usize,
        cumulative: &Vec<f32>,
        labels: &Vec<usize>,
        stats: &mut Vec<f32>,
        slot: usize,
    ) -> Result<()> {
        check_len(
            "count_correct.cumulative",
            labels.len() * classes,
            cumulative.len(),
        )?;
        let correct = cumulative
            .chunks(classes.max(1))
            .zip(labels)
            .filter(|(row, &l)| {
                let mut best = 0;
                for (i, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = i;
                    }
                }
                best == l
            })
            .count();
        // Exact in f32 below 2^24 samples per batch (batches are at most 65 536).
        span_of_mut(stats, Span::new(slot, 1), "count_correct.stats")?[0] = correct as f32;
        Ok(())
    }

    fn flag_non_finite(
        &self,
        values: &Vec<f32>,
        buffers: &Vec<f32>,
        stats: &mut Vec<f32>,
        slot: usize,
    ) -> Result<()> {
        let bad = values.iter().chain(buffers).any(|v| !v.is_finite());
        span_of_mut(stats, Span::new(slot, 1), "flag_non_finite.stats")?[0] =
            f32::from(u8::from(bad));
        Ok(())
    }

    fn sgd_update(
        &self,
        c: &SgdConfig,
        first: bool,
        lr: f64,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        momentum: Option<&mut Vec<f32>>,
        span: Span,
    ) -> Result<()> {
        sgd_update_slices(
            c,
            first,
            lr,
            span_of_mut(params, span, "sgd.params")?,
            span_of(grads, span, "sgd.grads")?,
            momentum
                .map(|m| span_of_mut(m, span, "sgd.momentum"))
                .transpose()?,
        );
        Ok(())
    }

    fn adam_update(
        &self,
        c: &AdamConfig,
        step: u64,
        lr: f64,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        span: Span,
    ) -> Result<()> {
        adam_update_slices(
            c,
            step,
            lr,
            span_of_mut(params, span, "adam.params")?,
            span_of(grads, span, "adam.grads")?,
            span_of_mut(m, span, "adam.exp_avg")?,
            span_of_mut(v, span, "adam.exp_avg_sq")?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_spans_split_in_any_order() {
        let mut v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let [a, b] = spans_mut(&mut v, [Span::new(6, 2), Span::new(1, 3)], "t").unwrap();
        assert_eq!((&a[..], &b[..]), (&[6.0, 7.0][..], &[1.0, 2.0, 3.0][..]));
        assert!(spans_mut(&mut v, [Span::new(0, 3), Span::new(2, 2)], "t").is_err());
        assert!(spans_mut(&mut v, [Span::new(8, 3)], "t").is_err());
    }

    /// `loss_step` with soft targets: the record holds the reference
    /// `soft_cross_entropy_forward` loss, `dlogits` agrees with central differences of that
    /// recorded loss w.r.t. the logits, and one-hot targets give the hard call's record and
    /// `dlogits` bit for bit.
    #[test]
    fn soft_loss_step_is_the_reference_and_passes_finite_differences() {
        use crate::gradcheck::{check_grad, rand_vec, Tol};
        use crate::layers::soft_cross_entropy::smoothed_one_hot;
        let be = CpuBackend::default();
        let (b, k) = (3, 4);
        let logits: Vec<f32> = rand_vec(5, b * k).iter().map(|v| 3.0 * v).collect();
        let mut labels = be.new_labels();
        be.upload_labels(&[2, 0, 3], &mut labels).unwrap();
        let run = |logits: &Vec<f32>, targets: Option<&Vec<f32>>| {
            let (mut cum, mut probs, mut d) =
                (vec![0.0; b * k], vec![0.0; b * k], vec![9.0; b * k]);
            let mut stats = vec![0.0; 6];
            be.loss_step(
                k, logits, &labels, targets, &mut cum, &mut probs, &mut d, &mut stats, 0, true,
            )
            .unwrap();
            assert_eq!(&cum, logits);
            (stats, d)
        };
        let q = smoothed_one_hot(&[2, 0, 3], k, 0.2).unwrap();
        let (stats, d) = run(&logits, Some(&q));
        let mut p = vec![0.0; b * k];
        let want = soft_cross_entropy_forward(k, &logits, &q, &mut p).unwrap();
        assert_eq!(stats[..2], [want, 1.0]);
        check_grad("logits", &logits, &d, Tol::SMOOTH, 100, |v| {
            f64::from(run(&v.to_vec(), Some(&q)).0[0])
        })
        .unwrap();
        let one_hot = smoothed_one_hot(&[2, 0, 3], k, 0.0).unwrap();
        let (hard, soft) = (run(&logits, None), run(&logits, Some(&one_hot)));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            (bits(&hard.0), bits(&hard.1)),
            (bits(&soft.0), bits(&soft.1))
        );
        assert_ne!(bits(&hard.1), bits(&d), "the targets reach the gradient");
    }

    #[test]
    fn transfers_are_counted() {
        let be = CpuBackend::default();
        let mut b = be.alloc(4).unwrap();
        be.upload(&[1.0, 2.0], &mut b).unwrap();
        let mut out = [0.0; 2];
        be.download(&b, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0]);
        let mut l = be.new_labels();
        be.upload_labels(&[3, 4], &mut l).unwrap();
        assert_eq!(
            be.transfers(),
            Transfers {
                uploads: 2,
                downloads: 1,
                bytes: 8 + 8 + 2 * 2
            }
        );
        assert!(be.upload(&[0.0; 5], &mut b).is_err(), "upload past the end");
    }
}
