//! The backend boundary: everything a training step computes goes through [`Backend`], on
//! buffers the backend owns, so a device backend keeps the whole step resident.
//!
//! * Memory: an associated buffer type ([`Backend::Buf`], `f32` elements) with allocate,
//!   resize, fill, upload, download and synchronise; labels have their own type. Every upload
//!   and download is counted ([`Transfers`]), so a test can prove what crosses per batch: one
//!   upload of the images, one of the labels (and, with soft targets, one of the `[B][K]`
//!   target matrix, an ordinary [`Backend::upload`]), one download of the per-batch statistics
//!   (`Net::load_batch` / `Net::load_batch_soft` / `Net::finish_batch`).
//! * One method per layer pass, forward and backward: convolution and linear (dense weights),
//!   binarisation with its straight-through backward, BatchNorm (train and eval, and the
//!   running-statistics update alone for a reused step), the three neuron versions, SECA I,
//!   average pooling, max pooling (with its argmax), global average pooling, flatten, the residual slots (copy, add,
//!   accumulate), the fused loss (cross-entropy
//!   against hard labels or soft targets, with the cumulative logits and the correct count), and the optimiser updates (SGD/Nesterov,
//!   Adam, AdamW) over the flat parameter / gradient / moment arenas.
//!
//! Parameters are addressed as [`Span`]s of the flat arenas (`Net` lays them out; see
//! `net::arena`), so an optimiser update is one pass over one buffer.
//!
//! * [`cpu::CpuBackend`] is always compiled. It calls the gradient-checked layer functions of
//!   `crate::layers` (which stay the reference every other backend is tested against).
//! * `cuda` (feature `cuda`) is a stub today: [`probe_cuda`] returns
//!   [`crate::error::Error::CudaNotCompiled`] without the feature and
//!   [`crate::error::Error::CudaUnavailable`] with it.
//!
//! All `*_backward` methods ACCUMULATE into the gradient buffers they are given (llm.c style).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::error::Result;
use crate::layers::conv2d::Conv2dGeom;
use crate::layers::linear::LinearGeom;
use crate::layers::maxpool::MaxPoolGeom;
use crate::layers::seca::SecaGeom;
use crate::optim::{AdamConfig, SgdConfig};

/// A contiguous range of a buffer: `len` elements from `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// First element.
    pub off: usize,
    /// Elements.
    pub len: usize,
}

impl Span {
    /// `len` elements from `off`.
    pub const fn new(off: usize, len: usize) -> Self {
        Span { off, len }
    }

    /// One past the last element.
    pub const fn end(&self) -> usize {
        self.off + self.len
    }

    /// As a range.
    pub const fn range(&self) -> std::ops::Range<usize> {
        self.off..self.off + self.len
    }
}

/// Host↔device traffic since the backend was made: every [`Backend::upload`],
/// [`Backend::upload_labels`] and [`Backend::download`] counts once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host → device copies.
    pub uploads: u64,
    /// Device → host copies.
    pub downloads: u64,
    /// Bytes moved in either direction.
    pub bytes: u64,
}

/// Parameter spans of a Mem-BN neuron (all in the value / gradient arenas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemBnSpans {
    /// Leak logits `[T]`.
    pub p: Span,
    /// Threshold logits `[T]`.
    pub q: Span,
    /// Mixing logits `a` `[T]`.
    pub a: Span,
    /// Mixing logits `b` `[T]`.
    pub b: Span,
    /// Per-step BN γ `[T, C]`.
    pub gamma: Span,
    /// Per-step BN β `[T, C]`.
    pub beta: Span,
}

/// Everything a training step computes; see the module docs. Buffers hold `f32`; a buffer
/// argument is the whole buffer unless a [`Span`] says which part.
pub trait Backend: std::fmt::Debug + Send + Sync {
    /// A device buffer of `f32`.
    type Buf: std::fmt::Debug + Send + Sync;
    /// A device buffer of class labels.
    type Labels: std::fmt::Debug + Send + Sync;
    /// What BatchNorm keeps from its forward for the backward (and for a reused step).
    type BnSaved: std::fmt::Debug + Send + Sync;
    /// What SECA keeps from its forward.
    type SecaSaved: std::fmt::Debug + Send + Sync;
    /// What a Mem-BN neuron keeps from its forward.
    type MemBnSaved: std::fmt::Debug + Send + Sync;
    /// What a max pool keeps from its forward: the winning input of every output.
    type MaxPoolSaved: std::fmt::Debug + Send + Sync;

    /// Short name for logs (`"cpu"`, `"cuda"`).
    fn name(&self) -> &'static str;

    // ---- memory --------------------------------------------------------------------------

    /// A zeroed buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Sets `buf` to `len` zeroed elements, reusing its allocation where it is large enough.
    fn resize(&self, buf: &mut Self::Buf, len: usize) -> Result<()>;
    /// Elements in `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Bytes allocated for `buf` (at least `4 · len`).
    fn bytes(&self, buf: &Self::Buf) -> usize;
    /// Sets `span` of `buf` to `value`.
    fn fill(&self, buf: &mut Self::Buf, span: Span, value: f32) -> Result<()>;
    /// Copies `src` into the start of `dst` (which must be at least as long).
    fn upload(&self, src: &[f32], dst: &mut Self::Buf) -> Result<()>;
    /// Copies the first `dst.len()` elements of `src` to the host.
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    /// An empty label buffer.
    fn new_labels(&self) -> Self::Labels;
    /// Replaces `dst` with `labels`.
    fn upload_labels(&self, labels: &[u16], dst: &mut Self::Labels) -> Result<()>;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;
    /// Transfers so far.
    fn transfers(&self) -> Transfers;

    /// Saved state of a BatchNorm over `c` channels.
    fn bn_saved(&self, c: usize) -> Result<Self::BnSaved>;
    /// Saved state of a SECA layer (sized by [`Backend::size_seca_saved`]).
    fn seca_saved(&self) -> Result<Self::SecaSaved>;
    /// Sizes SECA's saved state for `c` channels and `batch` samples, reusing its allocation.
    fn size_seca_saved(&self, s: &mut Self::SecaSaved, c: usize, batch: usize) -> Result<()>;
    /// Saved state of a Mem-BN neuron over `c` channels (sized by
    /// [`Backend::size_membn_saved`]).
    fn membn_saved(&self, c: usize) -> Result<Self::MemBnSaved>;
    /// Sizes a Mem-BN neuron's saved state for `elems` elements per step, reusing its
    /// allocation.
    fn size_membn_saved(&self, s: &mut Self::MemBnSaved, c: usize, elems: usize) -> Result<()>;
    /// Bytes allocated for saved state (for the memory accounting of `Net`).
    fn bn_saved_bytes(&self, s: &Self::BnSaved) -> usize;
    /// Bytes of saved state.
    fn seca_saved_bytes(&self, s: &Self::SecaSaved) -> usize;
    /// Bytes of saved state.
    fn membn_saved_bytes(&self, s: &Self::MemBnSaved) -> usize;
    /// Saved state of a max pool (sized by [`Backend::size_maxpool_saved`]).
    fn maxpool_saved(&self) -> Result<Self::MaxPoolSaved>;
    /// Sizes a max pool's saved state for `outputs` outputs (all planes), reusing its
    /// allocation.
    fn size_maxpool_saved(&self, s: &mut Self::MaxPoolSaved, outputs: usize) -> Result<()>;
    /// Bytes of saved state.
    fn maxpool_saved_bytes(&self, s: &Self::MaxPoolSaved) -> usize;

    // ---- layout --------------------------------------------------------------------------

    /// `[B][C][HW]` (a data loader's NCHW) → `[C][B][HW]` (the trainer's CBHW), reading
    /// `x[offset..offset + B·C·HW]` (one frame of a `[T][B][C][HW]` upload).
    #[allow(clippy::too_many_arguments)]
    fn nchw_to_cbhw(
        &self,
        batch: usize,
        c: usize,
        hw: usize,
        x: &Self::Buf,
        offset: usize,
        y: &mut Self::Buf,
    ) -> Result<()>;

    // ---- dense layers ----------------------------------------------------------------------

    /// `y = conv(x, w) (+ bias)`; `col` is im2col scratch of at least `g.col_len()` elements.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &Self::Buf,
        w: (&Self::Buf, Span),
        bias: Option<(&Self::Buf, Span)>,
        y: &mut Self::Buf,
        col: &mut Self::Buf,
    ) -> Result<()>;

    /// Accumulates `dw` (and `dbias`, a span of the same buffer) and, if given, `dx`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        g: &Conv2dGeom,
        x: &Self::Buf,
        w: (&Self::Buf, Span),
        dy: &Self::Buf,
        dw: (&mut Self::Buf, Span),
        dbias: Option<Span>,
        dx: Option<&mut Self::Buf>,
        col: &mut Self::Buf,
    ) -> Result<()>;

    /// `y = x · wᵀ (+ bias)` on `[B][F]` features.
    fn linear_forward(
        &self,
        g: &LinearGeom,
        x: &Self::Buf,
        w: (&Self::Buf, Span),
        bias: Option<(&Self::Buf, Span)>,
        y: &mut Self::Buf,
    ) -> Result<()>;

    /// Accumulates `dw` (and `dbias`, a span of the same buffer) and, if given, `dx`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        g: &LinearGeom,
        x: &Self::Buf,
        w: (&Self::Buf, Span),
        dy: &Self::Buf,
        dw: (&mut Self::Buf, Span),
        dbias: Option<Span>,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// Accumulates a linear layer's bias gradient `dbias[o] += Σ_b dy[b][o]` alone (a binary
    /// layer's weight gradient goes elsewhere first).
    fn linear_bias_backward(
        &self,
        g: &LinearGeom,
        dy: &Self::Buf,
        dbias: (&mut Self::Buf, Span),
    ) -> Result<()>;

    /// `wb = α·sign(w)` per row of `w` (`rows` output channels), `α` = mean |w| of the row.
    fn binarize_forward(
        &self,
        rows: usize,
        w: (&Self::Buf, Span),
        wb: &mut Self::Buf,
        alpha: &mut Self::Buf,
    ) -> Result<()>;

    /// Straight-through backward of the binarisation: accumulates into `dw` (clipped to
    /// `|w| ≤ 1`) from the gradient `dwb` of the binarised weights.
    fn binarize_backward(
        &self,
        w: (&Self::Buf, Span),
        dwb: &Self::Buf,
        dw: (&mut Self::Buf, Span),
    ) -> Result<()>;

    // ---- normalisation and attention -------------------------------------------------------

    /// BatchNorm2d on CBHW `x` (`gamma`, `beta` spans of `params`, running statistics spans of
    /// `stats`); train mode uses batch statistics and updates the running ones.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward(
        &self,
        x: &Self::Buf,
        y: &mut Self::Buf,
        params: (&Self::Buf, Span, Span),
        stats: (&mut Self::Buf, Span, Span),
        train: bool,
        saved: &mut Self::BnSaved,
    ) -> Result<()>;

    /// The running-statistics update of a train-mode forward whose batch statistics are in
    /// `saved` already (a step whose output is provably the previous one's).
    fn batchnorm_update_running(
        &self,
        saved: &Self::BnSaved,
        stats: (&mut Self::Buf, Span, Span),
    ) -> Result<()>;

    /// BatchNorm2d backward: accumulates dγ, dβ (spans of `grads`) and, if given, `dx`.
    fn batchnorm_backward(
        &self,
        x: &Self::Buf,
        gamma: (&Self::Buf, Span),
        saved: &Self::BnSaved,
        dy: &Self::Buf,
        grads: (&mut Self::Buf, Span, Span),
        dx: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// SECA_I: `y = x · σ(conv1d(GAP(x)))` per channel (`weight`, `bias` spans of `params`).
    fn seca_forward(
        &self,
        g: &SecaGeom,
        x: &Self::Buf,
        params: (&Self::Buf, Span, Span),
        y: &mut Self::Buf,
        saved: &mut Self::SecaSaved,
    ) -> Result<()>;

    /// SECA_I backward: accumulates dweight, dbias (spans of `grads`) and, if given, `dx`.
    #[allow(clippy::too_many_arguments)]
    fn seca_backward(
        &self,
        g: &SecaGeom,
        x: &Self::Buf,
        weight: (&Self::Buf, Span),
        saved: &Self::SecaSaved,
        dy: &Self::Buf,
        grads: (&mut Self::Buf, Span, Span),
        dx: Option<&mut Self::Buf>,
    ) -> Result<()>;

    // ---- neurons ---------------------------------------------------------------------------

    /// Version I at step `t`: `m = λ_t·v_prev + i`, `s = ReLU(m − θ_t)`, `v_next = m − s`
    /// (`p`, `q` spans of `params`).
    #[allow(clippy::too_many_arguments)]
    fn neuron_forward(
        &self,
        t: usize,
        params: (&Self::Buf, Span, Span),
        i: &Self::Buf,
        v_prev: &Self::Buf,
        s: &mut Self::Buf,
        v_next: &mut Self::Buf,
    ) -> Result<()>;

    /// Version I backward (state detached): accumulates dp, dq (spans of `grads`) and `di`.
    #[allow(clippy::too_many_arguments)]
    fn neuron_backward(
        &self,
        t: usize,
        params: (&Self::Buf, Span, Span),
        s: &Self::Buf,
        v_prev: &Self::Buf,
        ds: &Self::Buf,
        grads: (&mut Self::Buf, Span, Span),
        di: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// Version II (Mem-BN) at step `t` (running statistics spans of `stats`).
    #[allow(clippy::too_many_arguments)]
    fn membn_neuron_forward(
        &self,
        t: usize,
        params: (&Self::Buf, &MemBnSpans),
        stats: (&mut Self::Buf, Span, Span),
        train: bool,
        i: &Self::Buf,
        v_prev: &Self::Buf,
        s: &mut Self::Buf,
        v_next: &mut Self::Buf,
        saved: &mut Self::MemBnSaved,
    ) -> Result<()>;

    /// Version II backward: accumulates into the spans of `grads` and `di`.
    #[allow(clippy::too_many_arguments)]
    fn membn_neuron_backward(
        &self,
        t: usize,
        params: (&Self::Buf, &MemBnSpans),
        saved: &Self::MemBnSaved,
        s: &Self::Buf,
        v_prev: &Self::Buf,
        ds: &Self::Buf,
        grads: &mut Self::Buf,
        di: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// Version III at step `t`: `s = ReLU(i − θ_t)` (`q` a span of `params`).
    fn parallel_neuron_forward(
        &self,
        t: usize,
        q: (&Self::Buf, Span),
        i: &Self::Buf,
        s: &mut Self::Buf,
    ) -> Result<()>;

    /// Version III backward: accumulates dq (a span of `grads`) and `di`.
    #[allow(clippy::too_many_arguments)]
    fn parallel_neuron_backward(
        &self,
        t: usize,
        q: (&Self::Buf, Span),
        s: &Self::Buf,
        ds: &Self::Buf,
        dq: (&mut Self::Buf, Span),
        di: Option<&mut Self::Buf>,
    ) -> Result<()>;

    // ---- pooling and the residual add --------------------------------------------------------

    /// 2×2 average pooling, stride 2, over `planes` planes of `h × w`.
    fn avgpool2_forward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;

    /// Accumulates `dx` from `dy`.
    fn avgpool2_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    /// Max pooling over the `g.planes` planes of CBHW `x`; records each output's argmax (the
    /// first maximum in scan order) in `saved`.
    fn maxpool_forward(
        &self,
        g: &MaxPoolGeom,
        x: &Self::Buf,
        y: &mut Self::Buf,
        saved: &mut Self::MaxPoolSaved,
    ) -> Result<()>;

    /// Accumulates `dy` into `dx` at the argmax the last forward recorded.
    fn maxpool_backward(
        &self,
        g: &MaxPoolGeom,
        saved: &Self::MaxPoolSaved,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    /// Global average pooling CBHW → `[B][C]`.
    fn gap_forward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;

    /// Accumulates `dx` from `dy`.
    fn gap_backward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    /// `y[..n] = a[..n] + b[..n]` (the residual stream's add).
    fn residual_add_forward(
        &self,
        a: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
        n: usize,
    ) -> Result<()>;

    /// `dst[..n] += src[..n]` (the backward of a residual add, a save and SECA_II's sum).
    fn accumulate(&self, dst: &mut Self::Buf, src: &Self::Buf, n: usize) -> Result<()>;

    /// `dst[..n] = src[..n]` (residual slots).
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf, n: usize) -> Result<()>;

    /// CBHW `x` → `[B][C·HW]` `y` in core's feature order.
    fn flatten_forward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;

    /// Accumulates the transpose of the flatten into `dx`.
    fn flatten_backward(
        &self,
        c: usize,
        batch: usize,
        hw: usize,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    // ---- loss --------------------------------------------------------------------------------

    /// The fused loss of one step `t`: `cumulative += logits`; with `backprop`, the batch-mean
    /// cross-entropy is added to `stats[0]` and counted in `stats[1]`, the first non-finite one
    /// is recorded as `stats[2] = t + 1`, `stats[3] = loss`, and its gradient is WRITTEN to
    /// `dlogits` (`probs` is scratch). A fixed-size record, so nothing grows with T.
    ///
    /// Without `targets` the cross-entropy is against `labels`
    /// (`layers::cross_entropy`); with `targets` (`[B][K]` class weights, at least
    /// `B·classes` elements) it is the soft one, `−Σ_k q_k log softmax(z)_k` per row with
    /// `dlogits = (softmax(z)·Σ_k q_k − q) / B` (`layers::soft_cross_entropy`, the reference), and
    /// `labels` are not read. One-hot targets give the hard loss and gradient bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn loss_step(
        &self,
        classes: usize,
        logits: &Self::Buf,
        labels: &Self::Labels,
        targets: Option<&Self::Buf>,
        cumulative: &mut Self::Buf,
        probs: &mut Self::Buf,
        dlogits: &mut Self::Buf,
        stats: &mut Self::Buf,
        t: usize,
        backprop: bool,
    ) -> Result<()>;

    /// Adds to `stats[slot]` how many of the first `n` values of `x` are non-zero (a neuron
    /// layer's spikes: its firing count for the step).
    fn count_nonzero(
        &self,
        x: &Self::Buf,
        n: usize,
        stats: &mut Self::Buf,
        slot: usize,
    ) -> Result<()>;

    /// Writes to `stats[slot]` how many samples' argmax (first maximum) of `cumulative`
    /// equals the label (always the hard label, also when the loss took soft targets).
    fn count_correct(
        &self,
        classes: usize,
        cumulative: &Self::Buf,
        labels: &Self::Labels,
        stats: &mut Self::Buf,
        slot: usize,
    ) -> Result<()>;

    /// Writes 1 to `stats[slot]` if any element of `values` or `buffers` is NaN or infinite,
    /// else 0 (the per-batch divergence check, without a download of the arenas).
    fn flag_non_finite(
        &self,
        values: &Self::Buf,
        buffers: &Self::Buf,
        stats: &mut Self::Buf,
        slot: usize,
    ) -> Result<()>;

    // ---- optimiser ---------------------------------------------------------------------------

    /// One SGD step over `span` of the arenas (`first`: the tensors' first step, which
    /// initialises the momentum buffer).
    #[allow(clippy::too_many_arguments)]
    fn sgd_update(
        &self,
        c: &SgdConfig,
        first: bool,
        lr: f64,
        params: &mut Self::Buf,
        grads: &Self::Buf,
        momentum: Option<&mut Self::Buf>,
        span: Span,
    ) -> Result<()>;

    /// One Adam / AdamW step number `step` (1-based) over `span` of the arenas.
    #[allow(clippy::too_many_arguments)]
    fn adam_update(
        &self,
        c: &AdamConfig,
        step: u64,
        lr: f64,
        params: &mut Self::Buf,
        grads: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        span: Span,
    ) -> Result<()>;
}

/// Whether a CUDA backend can be made here.
///
/// Without the `cuda` feature this is always `Err(Error::CudaNotCompiled)`; with it, the stub in
/// `backend::cuda` currently answers `Err(Error::CudaUnavailable(..))` (see [`crate::error::Error`]).
pub fn probe_cuda() -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        cuda::CudaBackend::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(crate::error::Error::CudaNotCompiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn cuda_probe_reports_typed_error_without_device_code() {
        match probe_cuda() {
            Ok(()) => panic!("unexpected CUDA backend"),
            Err(Error::CudaNotCompiled) if !cfg!(feature = "cuda") => {}
            Err(Error::CudaUnavailable(_)) if cfg!(feature = "cuda") => {}
            Err(e) => panic!("unexpected error {e}"),
        }
        assert_eq!(cpu::CpuBackend::default().name(), "cpu");
    }
}
