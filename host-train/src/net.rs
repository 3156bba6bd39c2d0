//! Network composition and the online (per time-step) forward/backward.
//!
//! # Model
//! A network is a sequence of [`LayerSpec`]s over CBHW activations (`[C][B·H·W]`), ending in a
//! flat `[B][classes]` output (after [`LayerSpec::GlobalAvgPool`] and a linear layer). Inputs are
//! fed once per time-step (direct encoding: the same image at every step for static data).
//!
//! # Online step protocol (spec §4)
//! ```text
//! net.reset_state(batch)?;                       // zero membrane state, step counter = 0
//! for t in 0..=r {                               // r = T-1, or the random-BP step
//!     let logits = net.forward_step(t, x, true, t == r)?;   // state carried, detached
//!     ... loss and dlogits from `logits` (layers::cross_entropy) ...
//! }
//! net.zero_grad();  net.backward_step(&dlogits)?;  optimizer step on `params_mut()`
//! ```
//! `backward_step` back-propagates only through the spatial graph of the last forward step (the
//! carried state `v[t−1]` is a constant), and ACCUMULATES into every trainable tensor's `grad`.
//! A forward with `keep_for_backward = false` invalidates any earlier saved step, and nothing of
//! a step is kept beyond the fixed per-batch buffers, so memory does not grow with T.
//!
//! # Tensor names (stable: checkpoint and export keys)
//! Layers are numbered from 1 per family, in order: every conv (FP or binary) is `conv{n}`,
//! every BatchNorm2d `bn{n}`, every SECA `seca{n}`, every neuron `neuron{n}`, every linear
//! layer (FP or binary) `fc{n}`. Shapes follow PyTorch.
//!
//! | name | shape | kind | meaning |
//! |---|---|---|---|
//! | `conv{n}.weight` | `[O, C, k, k]` | trainable | FP weights, or the LATENT weights of a binary conv (forward uses `α_o·sign(W)`, `α_o = mean_{c,ky,kx} |W[o]|`, sign(0) = +1) |
//! | `conv{n}.bias` | `[O]` | trainable | only FP convs built with `bias: true` |
//! | `bn{n}.weight`, `bn{n}.bias` | `[C]` | trainable | γ, β |
//! | `bn{n}.running_mean`, `bn{n}.running_var` | `[C]` | buffer | momentum 0.1, unbiased var |
//! | `seca{n}.weight` | `[1, 1, 5]` | trainable | Conv1d over channels, pad 2 |
//! | `seca{n}.bias` | `[1]` | trainable | |
//! | `neuron{n}.p` | `[T]` | trainable | leak logits, λ_t = σ(p_t) (Versions I, II) |
//! | `neuron{n}.q` | `[T]` | trainable | threshold logits, θ_t = σ(q_t) (all versions) |
//! | `neuron{n}.a`, `neuron{n}.b` | `[T]` | trainable | Mem-BN mixing logits, m̂ = σ(a_t)·BN_t(m) + σ(b_t)·m (Version II) |
//! | `neuron{n}.bn_weight`, `neuron{n}.bn_bias` | `[T, C]` | trainable | per-step Mem-BN γ_t, β_t (Version II) |
//! | `neuron{n}.bn_running_mean`, `neuron{n}.bn_running_var` | `[T, C]` | buffer | per-step Mem-BN statistics (Version II) |
//! | `fc{n}.weight` | `[O, K]` | trainable | FP, or latent weights of a binary linear layer |
//! | `fc{n}.bias` | `[O]` | trainable | when built with `bias: true` |
//!
//! # Initialisation
//! FP convs and linear layers: PyTorch defaults (Kaiming-uniform with a = √5, i.e. U(±1/√fan_in)
//! for weights and biases). BN: γ = 1, β = 0, running mean 0, var 1. SECA: U(±1/√5). Neuron
//! logits 0 (λ = θ = a = b = 0.5). Binary latent weights: **Kaiming-normal, N(0, 2/fan_in)** —
//! a deliberate deviation from the reference code's U(0, 1e-3) (spec §8 item 8), which starts
//! every sign at +1 (all output channels identical).
//! Each tensor draws from its own stream seeded by `(seed, name)`, so the init of one tensor does
//! not depend on the others.

use crate::backend::{cpu_backend, Backend};
use crate::error::{check_len, Error, Result};
use crate::layers::avgpool2::{avgpool2_backward, avgpool2_forward, PoolGeom};
use crate::layers::batchnorm2d::{
    batchnorm2d_backward, batchnorm2d_forward, BatchNormSaved, BnGrads, BnParams, BnRunning,
};
use crate::layers::binary_conv2d::{binarize_backward, binarize_forward};
use crate::layers::conv2d::{Conv2dGeom, Conv2dGrads};
use crate::layers::gap::{gap_backward, gap_forward, GapGeom};
use crate::layers::linear::{LinearGeom, LinearGrads};
use crate::layers::membn_neuron::{
    membn_neuron_backward, membn_neuron_forward, MemBnGrads, MemBnParams, MemBnSaved,
};
use crate::layers::neuron::{neuron_backward, neuron_forward, NeuronGrads};
use crate::layers::parallel_neuron::{parallel_neuron_backward, parallel_neuron_forward};
use crate::layers::seca::{seca_backward, seca_forward, SecaGeom, SecaGrads, SecaSaved, SECA_K};
use crate::tensor::{InitRng, Param, ParamRole};

/// Which EM-PF neuron model a neuron layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NeuronKind {
    /// Version I (spec §2.5): learnable per-step leak and threshold.
    #[default]
    EmPf,
    /// Version II (spec §2.6): Version I plus per-step membrane BN mixed with the raw potential.
    MemBn,
    /// Version III (spec §2.8): stateless `ReLU(I − θ_t)`.
    Parallel,
}

/// One layer of a sequential network description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    /// Full-precision convolution (square kernel).
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        pad: usize,
        /// With a bias.
        bias: bool,
    },
    /// Binary-weight convolution (no bias).
    BinaryConv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        pad: usize,
    },
    /// BatchNorm2d (shared over time-steps).
    BatchNorm2d,
    /// SECA_I channel attention (shared over time-steps).
    Seca,
    /// EM-PF neuron layer.
    Neuron(NeuronKind),
    /// 2×2 average pooling, stride 2.
    AvgPool2,
    /// Global average pooling to `[B][C]`.
    GlobalAvgPool,
    /// Full-precision linear layer on `[B][F]` features.
    Linear {
        /// Output features.
        out_features: usize,
        /// With a bias.
        bias: bool,
    },
    /// Binary-weight linear layer (FP bias optional).
    BinaryLinear {
        /// Output features.
        out_features: usize,
        /// With a bias.
        bias: bool,
    },
}

/// A network description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Time-steps T (sizes the per-step neuron parameters).
    pub time_steps: usize,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

/// Options of [`NetConfig::bench`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BenchOptions {
    /// Neuron model of each of the four neuron layers (default: all Version I).
    pub neurons: [NeuronKind; 4],
    /// Insert SECA_I after the BN of each binary conv.
    pub seca: bool,
}

impl NetConfig {
    /// The bench network for 1×28×28 inputs and 10 classes:
    /// conv3×3(1→32, FP, pad 1, no bias)-BN-N1, bconv3×3(32→64)-BN-(SECA)-N2, avgpool2,
    /// bconv3×3(64→128)-BN-(SECA)-N3, avgpool2, bconv3×3(128→128)-BN-(SECA)-N4, GAP,
    /// linear(128→10, FP, bias); SECA only with `opts.seca`.
    pub fn bench(time_steps: usize, opts: &BenchOptions) -> Self {
        Self::bench_sized(1, 28, 28, 10, time_steps, opts)
    }

    /// The bench topology for other input sizes / class counts.
    pub fn bench_sized(
        in_channels: usize,
        height: usize,
        width: usize,
        classes: usize,
        time_steps: usize,
        opts: &BenchOptions,
    ) -> Self {
        let mut layers = vec![
            LayerSpec::Conv2d {
                out_channels: 32,
                kernel: 3,
                stride: 1,
                pad: 1,
                bias: false,
            },
            LayerSpec::BatchNorm2d,
            LayerSpec::Neuron(opts.neurons[0]),
        ];
        for (i, (ch, pool)) in [(64, true), (128, true), (128, false)]
            .into_iter()
            .enumerate()
        {
            layers.push(LayerSpec::BinaryConv2d {
                out_channels: ch,
                kernel: 3,
                stride: 1,
                pad: 1,
            });
            layers.push(LayerSpec::BatchNorm2d);
            if opts.seca {
                layers.push(LayerSpec::Seca);
            }
            layers.push(LayerSpec::Neuron(opts.neurons[i + 1]));
            if pool {
                layers.push(LayerSpec::AvgPool2);
            }
        }
        layers.push(LayerSpec::GlobalAvgPool);
        layers.push(LayerSpec::Linear {
            out_features: classes,
            bias: true,
        });
        NetConfig {
            in_channels,
            height,
            width,
            time_steps,
            layers,
        }
    }
}

impl NetConfig {
    /// The microcontroller network for 1×28×28 inputs and 10 classes, sized so that its integer
    /// inference arena fits a 64 KB-RAM Cortex-M3 (lm3s6965) with room for the stack:
    /// conv3×3(1→8, FP, stride 2, pad 1)-BN-N1, bconv3×3(8→32, stride 2)-BN-(SECA)-N2,
    /// bconv3×3(32→48)-BN-(SECA)-N3, GAP, linear(48→10, FP, bias). Neuron kinds come from the
    /// first three entries of `opts.neurons`.
    ///
    /// Stride-2 convolutions instead of full-resolution layers plus pooling: the sequential
    /// arena holds two activation buffers (largest layer) plus every neuron's membrane, so the
    /// full-resolution layers of [`NetConfig::bench`] (64×28×28) cannot fit in tens of KB.
    pub fn mcu(time_steps: usize, opts: &BenchOptions) -> Self {
        let mut layers = vec![
            LayerSpec::Conv2d {
                out_channels: 8,
                kernel: 3,
                stride: 2,
                pad: 1,
                bias: false,
            },
            LayerSpec::BatchNorm2d,
            LayerSpec::Neuron(opts.neurons[0]),
        ];
        for (i, (ch, stride)) in [(32, 2), (48, 1)].into_iter().enumerate() {
            layers.push(LayerSpec::BinaryConv2d {
                out_channels: ch,
                kernel: 3,
                stride,
                pad: 1,
            });
            layers.push(LayerSpec::BatchNorm2d);
            if opts.seca {
                layers.push(LayerSpec::Seca);
            }
            layers.push(LayerSpec::Neuron(opts.neurons[i + 1]));
        }
        layers.push(LayerSpec::GlobalAvgPool);
        layers.push(LayerSpec::Linear {
            out_features: 10,
            bias: true,
        });
        NetConfig {
            in_channels: 1,
            height: 28,
            width: 28,
            time_steps,
            layers,
        }
    }
}

impl NetConfig {
    /// The wider microcontroller network, for the integer path's 8-bit activations:
    /// conv3×3(1→16, FP, stride 2, pad 1)-BN-N1, bconv3×3(16→64, stride 2)-BN-(SECA)-N2,
    /// bconv3×3(64→128, stride 2)-BN-(SECA)-N3, GAP, linear(128→10, FP, bias) — every layer
    /// at least twice as wide as [`NetConfig::mcu`]. The last conv runs at 4×4 (stride 2) so
    /// that the membranes, the largest part of the sequential arena, stay near 33 KB; with
    /// spikes stored in 8 bits the integer arena fits a 64 KB-RAM Cortex-M3.
    pub fn mcu_wide(time_steps: usize, opts: &BenchOptions) -> Self {
        let mut layers = vec![
            LayerSpec::Conv2d {
                out_channels: 16,
                kernel: 3,
                stride: 2,
                pad: 1,
                bias: false,
            },
            LayerSpec::BatchNorm2d,
            LayerSpec::Neuron(opts.neurons[0]),
        ];
        for (i, ch) in [64, 128].into_iter().enumerate() {
            layers.push(LayerSpec::BinaryConv2d {
                out_channels: ch,
                kernel: 3,
                stride: 2,
                pad: 1,
            });
            layers.push(LayerSpec::BatchNorm2d);
            if opts.seca {
                layers.push(LayerSpec::Seca);
            }
            layers.push(LayerSpec::Neuron(opts.neurons[i + 1]));
        }
        layers.push(LayerSpec::GlobalAvgPool);
        layers.push(LayerSpec::Linear {
            out_features: 10,
            bias: true,
        });
        NetConfig {
            in_channels: 1,
            height: 28,
            width: 28,
            time_steps,
            layers,
        }
    }
}

/// Per-sample shape of an activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActShape {
    /// CBHW activation with `c` channels of `h × w`.
    Spatial {
        /// Channels.
        c: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// Batch-major `[B][f]` features.
    Flat {
        /// Features.
        f: usize,
    },
}

impl ActShape {
    /// Elements per sample.
    pub fn per_sample(&self) -> usize {
        match *self {
            ActShape::Spatial { c, h, w } => c * h * w,
            ActShape::Flat { f } => f,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layers with their parameters and saved state.

/// Mutable context of one layer call.
struct Ctx<'a> {
    be: &'a dyn Backend,
    batch: usize,
    t: usize,
    train: bool,
    col: &'a mut [f32],
}

#[derive(Debug)]
struct ConvLayer {
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    binary: bool,
    weight: Param,
    bias: Option<Param>,
    /// α·sign(W) of the last forward (binary only), `[O][K]`.
    wb: Vec<f32>,
    alpha: Vec<f32>,
    /// Scratch for dW_b (binary only).
    dwb: Vec<f32>,
}

impl ConvLayer {
    fn geom(&self, batch: usize) -> Result<Conv2dGeom> {
        Conv2dGeom::new(
            batch,
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.k,
            self.stride,
            self.pad,
        )
    }
}

#[derive(Debug)]
struct BnLayer {
    weight: Param,
    bias: Param,
    running_mean: Param,
    running_var: Param,
    saved: BatchNormSaved,
}

#[derive(Debug)]
struct SecaLayer {
    c: usize,
    hw: usize,
    weight: Param,
    bias: Param,
    saved: SecaSaved,
}

#[derive(Debug)]
struct MemBnPart {
    a: Param,
    b: Param,
    gamma: Param,
    beta: Param,
    running_mean: Param,
    running_var: Param,
    saved: MemBnSaved,
}

#[derive(Debug)]
struct NeuronLayer {
    kind: NeuronKind,
    /// Leak logits (absent for Version III).
    p: Option<Param>,
    q: Param,
    membn: Option<Box<MemBnPart>>,
    /// v[t] after the last forward (carried to the next step).
    state: Vec<f32>,
    /// v[t−1] of the last forward (read by backward; the two buffers swap every step).
    state_prev: Vec<f32>,
}

#[derive(Debug)]
struct PoolLayer {
    c: usize,
    h: usize,
    w: usize,
}

#[derive(Debug)]
struct GapLayer {
    c: usize,
    hw: usize,
}

#[derive(Debug)]
struct LinearLayer {
    d_in: usize,
    d_out: usize,
    binary: bool,
    weight: Param,
    bias: Option<Param>,
    wb: Vec<f32>,
    alpha: Vec<f32>,
    dwb: Vec<f32>,
}

#[derive(Debug)]
enum Layer {
    Conv(ConvLayer),
    Bn(BnLayer),
    Seca(SecaLayer),
    Neuron(NeuronLayer),
    Pool(PoolLayer),
    Gap(GapLayer),
    Linear(LinearLayer),
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The RNG stream of one tensor: depends only on the seed and the tensor name.
fn tensor_rng(seed: u64, name: &str) -> InitRng {
    let mut r = InitRng::new(seed ^ fnv1a(name));
    r.next_u64();
    r
}

fn fp_weight(seed: u64, name: String, shape: Vec<usize>, fan_in: usize) -> Param {
    let n = shape.iter().product();
    let bound = 1.0 / (fan_in as f32).sqrt();
    let v = tensor_rng(seed, &name).uniform_vec(n, bound);
    Param::trainable(name, ParamRole::FullPrecision, shape, v)
}

fn binary_weight(seed: u64, name: String, shape: Vec<usize>, fan_in: usize) -> Param {
    let n = shape.iter().product();
    let std = (2.0 / fan_in as f32).sqrt();
    let v = tensor_rng(seed, &name).normal_vec(n, std);
    Param::trainable(name, ParamRole::BinaryWeight, shape, v)
}

fn cfg_err(layer: usize, detail: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        layer,
        detail: detail.into(),
    }
}

impl Layer {
    /// Builds the layer for input shape `input`; returns it and its output shape.
    fn build(
        idx: usize,
        spec: &LayerSpec,
        input: ActShape,
        time_steps: usize,
        counters: &mut [usize; 5],
        seed: u64,
    ) -> Result<(Layer, ActShape)> {
        let spatial = |what: &str| match input {
            ActShape::Spatial { c, h, w } => Ok((c, h, w)),
            ActShape::Flat { .. } => Err(cfg_err(
                idx,
                format!("{what} needs a spatial (CBHW) input, got flat features"),
            )),
        };
        let next = |counters: &mut [usize; 5], family: usize| {
            counters[family] += 1;
            counters[family]
        };
        match *spec {
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                pad,
                ..
            }
            | LayerSpec::BinaryConv2d {
                out_channels,
                kernel,
                stride,
                pad,
            } => {
                let (c, h, w) = spatial("conv")?;
                let binary = matches!(spec, LayerSpec::BinaryConv2d { .. });
                let has_bias = matches!(spec, LayerSpec::Conv2d { bias: true, .. });
                let g = Conv2dGeom::new(1, c, h, w, out_channels, kernel, stride, pad)
                    .map_err(|e| cfg_err(idx, e.to_string()))?;
                let n = next(counters, 0);
                let shape = vec![out_channels, c, kernel, kernel];
                let fan_in = c * kernel * kernel;
                let weight = if binary {
                    binary_weight(seed, format!("conv{n}.weight"), shape, fan_in)
                } else {
                    fp_weight(seed, format!("conv{n}.weight"), shape, fan_in)
                };
                let bias = has_bias
                    .then(|| fp_weight(seed, format!("conv{n}.bias"), vec![out_channels], fan_in));
                let wl = if binary { g.w_len() } else { 0 };
                let layer = Layer::Conv(ConvLayer {
                    c_in: c,
                    h,
                    w,
                    c_out: out_channels,
                    k: kernel,
                    stride,
                    pad,
                    binary,
                    weight,
                    bias,
                    wb: vec![0.0; wl],
                    alpha: vec![0.0; if binary { out_channels } else { 0 }],
                    dwb: vec![0.0; wl],
                });
                Ok((
                    layer,
                    ActShape::Spatial {
                        c: out_channels,
                        h: g.oh(),
                        w: g.ow(),
                    },
                ))
            }
            LayerSpec::BatchNorm2d => {
                let (c, _, _) = spatial("batchnorm2d")?;
                let n = next(counters, 1);
                let role = ParamRole::BatchNorm;
                Ok((
                    Layer::Bn(BnLayer {
                        weight: Param::trainable(
                            format!("bn{n}.weight"),
                            role,
                            vec![c],
                            vec![1.0; c],
                        ),
                        bias: Param::trainable(format!("bn{n}.bias"), role, vec![c], vec![0.0; c]),
                        running_mean: Param::buffer(
                            format!("bn{n}.running_mean"),
                            role,
                            vec![c],
                            vec![0.0; c],
                        ),
                        running_var: Param::buffer(
                            format!("bn{n}.running_var"),
                            role,
                            vec![c],
                            vec![1.0; c],
                        ),
                        saved: BatchNormSaved::new(c),
                    }),
                    input,
                ))
            }
            LayerSpec::Seca => {
                let (c, h, w) = spatial("seca")?;
                let n = next(counters, 2);
                Ok((
                    Layer::Seca(SecaLayer {
                        c,
                        hw: h * w,
                        weight: fp_weight(
                            seed,
                            format!("seca{n}.weight"),
                            vec![1, 1, SECA_K],
                            SECA_K,
                        ),
                        bias: fp_weight(seed, format!("seca{n}.bias"), vec![1], SECA_K),
                        saved: SecaSaved::default(),
                    }),
                    input,
                ))
            }
            LayerSpec::Neuron(kind) => {
                if time_steps == 0 {
                    return Err(cfg_err(idx, "time_steps must be at least 1"));
                }
                let n = next(counters, 3);
                let tt = time_steps;
                let role = ParamRole::Neuron;
                let logits = |name: &str| {
                    Param::trainable(format!("neuron{n}.{name}"), role, vec![tt], vec![0.0; tt])
                };
                let membn = if kind == NeuronKind::MemBn {
                    let (c, _, _) = spatial("Mem-BN neuron")?;
                    let bn = ParamRole::BatchNorm;
                    Some(Box::new(MemBnPart {
                        a: logits("a"),
                        b: logits("b"),
                        gamma: Param::trainable(
                            format!("neuron{n}.bn_weight"),
                            bn,
                            vec![tt, c],
                            vec![1.0; tt * c],
                        ),
                        beta: Param::trainable(
                            format!("neuron{n}.bn_bias"),
                            bn,
                            vec![tt, c],
                            vec![0.0; tt * c],
                        ),
                        running_mean: Param::buffer(
                            format!("neuron{n}.bn_running_mean"),
                            bn,
                            vec![tt, c],
                            vec![0.0; tt * c],
                        ),
                        running_var: Param::buffer(
                            format!("neuron{n}.bn_running_var"),
                            bn,
                            vec![tt, c],
                            vec![1.0; tt * c],
                        ),
                        saved: MemBnSaved::default(),
                    }))
                } else {
                    None
                };
                Ok((
                    Layer::Neuron(NeuronLayer {
                        kind,
                        p: (kind != NeuronKind::Parallel).then(|| logits("p")),
                        q: logits("q"),
                        membn,
                        state: Vec::new(),
                        state_prev: Vec::new(),
                    }),
                    input,
                ))
            }
            LayerSpec::AvgPool2 => {
                let (c, h, w) = spatial("avgpool2")?;
                let g = PoolGeom::new(1, h, w).map_err(|e| cfg_err(idx, e.to_string()))?;
                Ok((
                    Layer::Pool(PoolLayer { c, h, w }),
                    ActShape::Spatial {
                        c,
                        h: g.oh(),
                        w: g.ow(),
                    },
                ))
            }
            LayerSpec::GlobalAvgPool => {
                let (c, h, w) = spatial("global average pool")?;
                Ok((
                    Layer::Gap(GapLayer { c, hw: h * w }),
                    ActShape::Flat { f: c },
                ))
            }
            LayerSpec::Linear { out_features, bias }
            | LayerSpec::BinaryLinear { out_features, bias } => {
                let d_in = match input {
                    ActShape::Flat { f } => f,
                    ActShape::Spatial { .. } => {
                        return Err(cfg_err(
                            idx,
                            "linear needs flat [B][F] features: add GlobalAvgPool before it",
                        ))
                    }
                };
                if out_features == 0 {
                    return Err(cfg_err(idx, "linear with 0 outputs"));
                }
                let binary = matches!(spec, LayerSpec::BinaryLinear { .. });
                let n = next(counters, 4);
                let shape = vec![out_features, d_in];
                let weight = if binary {
                    binary_weight(seed, format!("fc{n}.weight"), shape, d_in)
                } else {
                    fp_weight(seed, format!("fc{n}.weight"), shape, d_in)
                };
                let bias =
                    bias.then(|| fp_weight(seed, format!("fc{n}.bias"), vec![out_features], d_in));
                let wl = if binary { out_features * d_in } else { 0 };
                Ok((
                    Layer::Linear(LinearLayer {
                        d_in,
                        d_out: out_features,
                        binary,
                        weight,
                        bias,
                        wb: vec![0.0; wl],
                        alpha: vec![0.0; if binary { out_features } else { 0 }],
                        dwb: vec![0.0; wl],
                    }),
                    ActShape::Flat { f: out_features },
                ))
            }
        }
    }

    fn params(&self) -> Vec<&Param> {
        match self {
            Layer::Conv(l) => std::iter::once(&l.weight).chain(l.bias.as_ref()).collect(),
            Layer::Linear(l) => std::iter::once(&l.weight).chain(l.bias.as_ref()).collect(),
            Layer::Bn(l) => vec![&l.weight, &l.bias, &l.running_mean, &l.running_var],
            Layer::Seca(l) => vec![&l.weight, &l.bias],
            Layer::Neuron(l) => {
                let mut v: Vec<&Param> = l.p.iter().collect();
                v.push(&l.q);
                if let Some(m) = &l.membn {
                    v.extend([
                        &m.a,
                        &m.b,
                        &m.gamma,
                        &m.beta,
                        &m.running_mean,
                        &m.running_var,
                    ]);
                }
                v
            }
            Layer::Pool(_) | Layer::Gap(_) => Vec::new(),
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Layer::Conv(l) => std::iter::once(&mut l.weight)
                .chain(l.bias.as_mut())
                .collect(),
            Layer::Linear(l) => std::iter::once(&mut l.weight)
                .chain(l.bias.as_mut())
                .collect(),
            Layer::Bn(l) => vec![
                &mut l.weight,
                &mut l.bias,
                &mut l.running_mean,
                &mut l.running_var,
            ],
            Layer::Seca(l) => vec![&mut l.weight, &mut l.bias],
            Layer::Neuron(l) => {
                let mut v: Vec<&mut Param> = l.p.iter_mut().collect();
                v.push(&mut l.q);
                if let Some(m) = &mut l.membn {
                    v.extend([
                        &mut m.a,
                        &mut m.b,
                        &mut m.gamma,
                        &mut m.beta,
                        &mut m.running_mean,
                        &mut m.running_var,
                    ]);
                }
                v
            }
            Layer::Pool(_) | Layer::Gap(_) => Vec::new(),
        }
    }

    /// Sizes the per-batch buffers for a batch of `batch` (`elems` input elements) and zeroes
    /// the neuron state, so that no buffer is (re)allocated during the steps.
    fn reset(&mut self, batch: usize, elems: usize) {
        fn size(v: &mut Vec<f32>, n: usize) {
            v.clear();
            v.resize(n, 0.0);
        }
        match self {
            Layer::Neuron(l) => {
                if l.kind != NeuronKind::Parallel {
                    size(&mut l.state, elems);
                    size(&mut l.state_prev, elems);
                }
                if let Some(m) = &mut l.membn {
                    let c = m.running_mean.len() / m.a.len().max(1);
                    size(&mut m.saved.m, elems);
                    size(&mut m.saved.bn.mean, c);
                    size(&mut m.saved.bn.invstd, c);
                }
            }
            Layer::Seca(l) => {
                size(&mut l.saved.z, l.c * batch);
                size(&mut l.saved.w, l.c * batch);
            }
            _ => {}
        }
    }

    /// Bytes of internal buffers (not parameters, not the net's activations).
    fn buffer_bytes(&self) -> usize {
        4 * match self {
            Layer::Conv(l) => l.wb.capacity() + l.alpha.capacity() + l.dwb.capacity(),
            Layer::Linear(l) => l.wb.capacity() + l.alpha.capacity() + l.dwb.capacity(),
            Layer::Bn(l) => l.saved.mean.capacity() + l.saved.invstd.capacity(),
            Layer::Seca(l) => l.saved.z.capacity() + l.saved.w.capacity(),
            Layer::Neuron(l) => {
                l.state.capacity()
                    + l.state_prev.capacity()
                    + l.membn.as_ref().map_or(0, |m| {
                        m.saved.m.capacity()
                            + m.saved.bn.mean.capacity()
                            + m.saved.bn.invstd.capacity()
                    })
            }
            Layer::Pool(_) | Layer::Gap(_) => 0,
        }
    }

    /// Bytes this layer keeps for backward beyond its input/output activations.
    fn saved_bytes(&self) -> usize {
        match self {
            Layer::Conv(l) => 4 * l.wb.len(),
            Layer::Linear(l) => 4 * l.wb.len(),
            Layer::Bn(l) => l.saved.bytes(),
            Layer::Seca(l) => l.saved.bytes(),
            Layer::Neuron(l) => {
                4 * l.state_prev.len() + l.membn.as_ref().map_or(0, |m| m.saved.bytes())
            }
            Layer::Pool(_) | Layer::Gap(_) => 0,
        }
    }

    fn forward(&mut self, ctx: &mut Ctx<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        let batch = ctx.batch;
        match self {
            Layer::Conv(l) => {
                let g = l.geom(batch)?;
                if l.binary {
                    binarize_forward(l.c_out, &l.weight.value, &mut l.wb, &mut l.alpha)?;
                    ctx.be.conv2d_forward(&g, x, &l.wb, None, y, ctx.col)
                } else {
                    let bias = l.bias.as_ref().map(|b| &b.value[..]);
                    ctx.be
                        .conv2d_forward(&g, x, &l.weight.value, bias, y, ctx.col)
                }
            }
            Layer::Bn(l) => batchnorm2d_forward(
                x,
                y,
                BnParams {
                    gamma: &l.weight.value,
                    beta: &l.bias.value,
                },
                BnRunning {
                    mean: &mut l.running_mean.value,
                    var: &mut l.running_var.value,
                },
                ctx.train,
                &mut l.saved,
            ),
            Layer::Seca(l) => {
                let g = SecaGeom::new(l.c, batch, l.hw)?;
                seca_forward(&g, x, &l.weight.value, &l.bias.value, y, &mut l.saved)
            }
            Layer::Neuron(l) => match (l.kind, &l.p, &mut l.membn) {
                (NeuronKind::Parallel, _, _) => parallel_neuron_forward(ctx.t, &l.q.value, x, y),
                (NeuronKind::EmPf, Some(p), _) => {
                    neuron_forward(
                        ctx.t,
                        &p.value,
                        &l.q.value,
                        x,
                        &l.state,
                        y,
                        &mut l.state_prev,
                    )?;
                    std::mem::swap(&mut l.state, &mut l.state_prev);
                    Ok(())
                }
                (NeuronKind::MemBn, Some(p), Some(m)) => {
                    let prm = MemBnParams {
                        p: &p.value,
                        q: &l.q.value,
                        a: &m.a.value,
                        b: &m.b.value,
                        gamma: &m.gamma.value,
                        beta: &m.beta.value,
                    };
                    membn_neuron_forward(
                        ctx.t,
                        &prm,
                        BnRunning {
                            mean: &mut m.running_mean.value,
                            var: &mut m.running_var.value,
                        },
                        ctx.train,
                        x,
                        &l.state,
                        y,
                        &mut l.state_prev,
                        &mut m.saved,
                    )?;
                    std::mem::swap(&mut l.state, &mut l.state_prev);
                    Ok(())
                }
                _ => Err(cfg_err(0, "neuron layer is missing its parameters")),
            },
            Layer::Pool(l) => {
                let g = PoolGeom::new(l.c * batch, l.h, l.w)?;
                avgpool2_forward(&g, x, y)
            }
            Layer::Gap(l) => {
                let g = GapGeom::new(l.c, batch, l.hw)?;
                gap_forward(&g, x, y)
            }
            Layer::Linear(l) => {
                let g = LinearGeom::new(batch, l.d_in, l.d_out)?;
                let bias = l.bias.as_ref().map(|b| &b.value[..]);
                if l.binary {
                    binarize_forward(l.d_out, &l.weight.value, &mut l.wb, &mut l.alpha)?;
                    ctx.be.linear_forward(&g, x, &l.wb, bias, y)
                } else {
                    ctx.be.linear_forward(&g, x, &l.weight.value, bias, y)
                }
            }
        }
    }

    /// Backward of the last forward: `x`/`y` its input/output, `dy` the output gradient;
    /// accumulates parameter gradients and (if given) `dx`.
    fn backward(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
    ) -> Result<()> {
        let batch = ctx.batch;
        match self {
            Layer::Conv(l) => {
                let g = l.geom(batch)?;
                if l.binary {
                    l.dwb.iter_mut().for_each(|v| *v = 0.0);
                    ctx.be.conv2d_backward(
                        &g,
                        x,
                        &l.wb,
                        dy,
                        Conv2dGrads {
                            dw: &mut l.dwb,
                            dbias: None,
                            dx,
                        },
                        ctx.col,
                    )?;
                    binarize_backward(&l.weight.value, &l.dwb, &mut l.weight.grad)
                } else {
                    ctx.be.conv2d_backward(
                        &g,
                        x,
                        &l.weight.value,
                        dy,
                        Conv2dGrads {
                            dw: &mut l.weight.grad,
                            dbias: l.bias.as_mut().map(|b| &mut b.grad[..]),
                            dx,
                        },
                        ctx.col,
                    )
                }
            }
            Layer::Bn(l) => batchnorm2d_backward(
                x,
                &l.weight.value,
                &l.saved,
                dy,
                BnGrads {
                    dx,
                    dgamma: &mut l.weight.grad,
                    dbeta: &mut l.bias.grad,
                },
            ),
            Layer::Seca(l) => {
                let g = SecaGeom::new(l.c, batch, l.hw)?;
                seca_backward(
                    &g,
                    x,
                    &l.weight.value,
                    &l.saved,
                    dy,
                    SecaGrads {
                        dx,
                        dweight: &mut l.weight.grad,
                        dbias: &mut l.bias.grad,
                    },
                )
            }
            Layer::Neuron(l) => match (l.kind, &mut l.p, &mut l.membn) {
                (NeuronKind::Parallel, _, _) => {
                    parallel_neuron_backward(ctx.t, &l.q.value, y, dy, dx, &mut l.q.grad)
                }
                (NeuronKind::EmPf, Some(p), _) => neuron_backward(
                    ctx.t,
                    &p.value,
                    &l.q.value,
                    y,
                    &l.state_prev,
                    dy,
                    NeuronGrads {
                        di: dx,
                        dp: &mut p.grad,
                        dq: &mut l.q.grad,
                    },
                ),
                (NeuronKind::MemBn, Some(p), Some(m)) => {
                    let prm = MemBnParams {
                        p: &p.value,
                        q: &l.q.value,
                        a: &m.a.value,
                        b: &m.b.value,
                        gamma: &m.gamma.value,
                        beta: &m.beta.value,
                    };
                    membn_neuron_backward(
                        ctx.t,
                        &prm,
                        &m.saved,
                        y,
                        &l.state_prev,
                        dy,
                        MemBnGrads {
                            di: dx,
                            dp: &mut p.grad,
                            dq: &mut l.q.grad,
                            da: &mut m.a.grad,
                            db: &mut m.b.grad,
                            dgamma: &mut m.gamma.grad,
                            dbeta: &mut m.beta.grad,
                        },
                    )
                }
                _ => Err(cfg_err(0, "neuron layer is missing its parameters")),
            },
            Layer::Pool(l) => match dx {
                Some(dx) => avgpool2_backward(&PoolGeom::new(l.c * batch, l.h, l.w)?, dy, dx),
                None => Ok(()),
            },
            Layer::Gap(l) => match dx {
                Some(dx) => gap_backward(&GapGeom::new(l.c, batch, l.hw)?, dy, dx),
                None => Ok(()),
            },
            Layer::Linear(l) => {
                let g = LinearGeom::new(batch, l.d_in, l.d_out)?;
                let dbias = l.bias.as_mut().map(|b| &mut b.grad[..]);
                if l.binary {
                    l.dwb.iter_mut().for_each(|v| *v = 0.0);
                    ctx.be.linear_backward(
                        &g,
                        x,
                        &l.wb,
                        dy,
                        LinearGrads {
                            dw: &mut l.dwb,
                            dbias,
                            dx,
                        },
                    )?;
                    binarize_backward(&l.weight.value, &l.dwb, &mut l.weight.grad)
                } else {
                    ctx.be.linear_backward(
                        &g,
                        x,
                        &l.weight.value,
                        dy,
                        LinearGrads {
                            dw: &mut l.weight.grad,
                            dbias,
                            dx,
                        },
                    )
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Wall-clock time spent in one layer since the network was built or
/// [`Net::reset_timings`] was called.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTiming {
    /// Position in [`NetConfig::layers`].
    pub index: usize,
    /// The layer.
    pub spec: LayerSpec,
    /// Seconds in forward.
    pub forward_s: f64,
    /// Seconds in backward.
    pub backward_s: f64,
    /// Forward calls.
    pub forward_calls: u64,
    /// Backward calls.
    pub backward_calls: u64,
}

/// Accumulated per-layer time (forward, backward) and call counts.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    fwd: f64,
    bwd: f64,
    fwd_n: u64,
    bwd_n: u64,
}

/// A step whose activations are held for `backward_step`.
#[derive(Clone, Copy, Debug)]
struct Tape {
    t: usize,
    train: bool,
}

/// A network with its parameters, per-batch buffers and online state.
#[derive(Debug)]
pub struct Net {
    config: NetConfig,
    layers: Vec<Layer>,
    /// `shapes[0]` is the input, `shapes[i + 1]` the output of layer `i`.
    shapes: Vec<ActShape>,
    backend: Box<dyn Backend>,
    batch: usize,
    /// The current step's input, CBHW.
    input: Vec<f32>,
    /// Output of every layer at the current step.
    acts: Vec<Vec<f32>>,
    grad_cur: Vec<f32>,
    grad_next: Vec<f32>,
    col: Vec<f32>,
    next_step: usize,
    tape: Option<Tape>,
    timings: Vec<Timing>,
}

impl Net {
    /// Builds the network on the CPU backend, initialised from `seed`.
    pub fn new(config: NetConfig, seed: u64) -> Result<Self> {
        Self::with_backend(config, seed, cpu_backend())
    }

    /// Builds the network on the given backend.
    pub fn with_backend(config: NetConfig, seed: u64, backend: Box<dyn Backend>) -> Result<Self> {
        let nl = config.layers.len();
        if config.in_channels == 0 || config.height == 0 || config.width == 0 {
            return Err(cfg_err(0, "input has a zero dimension"));
        }
        if config.time_steps == 0 {
            return Err(cfg_err(0, "time_steps must be at least 1"));
        }
        let mut shapes = vec![ActShape::Spatial {
            c: config.in_channels,
            h: config.height,
            w: config.width,
        }];
        let mut layers = Vec::with_capacity(nl);
        let mut counters = [0usize; 5];
        for (i, spec) in config.layers.iter().enumerate() {
            let input = shapes[i];
            let (layer, out) =
                Layer::build(i, spec, input, config.time_steps, &mut counters, seed)?;
            layers.push(layer);
            shapes.push(out);
        }
        match shapes.last() {
            Some(ActShape::Flat { .. }) if nl > 0 => {}
            _ => {
                return Err(cfg_err(
                    nl,
                    "the network must end in flat [B][classes] logits (GAP + linear)",
                ))
            }
        }
        Ok(Net {
            config,
            layers,
            shapes,
            backend,
            batch: 0,
            input: Vec::new(),
            acts: vec![Vec::new(); nl],
            grad_cur: Vec::new(),
            grad_next: Vec::new(),
            col: Vec::new(),
            next_step: 0,
            tape: None,
            timings: vec![Timing::default(); nl],
        })
    }

    /// The description the network was built from.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Time-steps T.
    pub fn time_steps(&self) -> usize {
        self.config.time_steps
    }

    /// Logits per sample.
    pub fn num_classes(&self) -> usize {
        self.shapes.last().map_or(0, ActShape::per_sample)
    }

    /// Elements of one input sample (C·H·W).
    pub fn input_len(&self) -> usize {
        self.shapes[0].per_sample()
    }

    /// Per-sample activation shapes: the input, then the output of every layer.
    pub fn shapes(&self) -> &[ActShape] {
        &self.shapes
    }

    /// Current batch size (0 before the first `reset_state`).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The backend in use.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Starts a new sequence: sizes all buffers for `batch` samples (reusing their allocation),
    /// zeroes the membrane state, drops anything saved for backward, and expects step 0 next.
    pub fn reset_state(&mut self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::ShapeInvalid {
                what: "net.reset_state",
                detail: "batch must be at least 1".into(),
            });
        }
        self.batch = batch;
        self.tape = None;
        self.next_step = 0;
        self.input.resize(batch * self.shapes[0].per_sample(), 0.0);
        let mut max_act = self.input.len();
        let mut max_col = 0;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let in_len = batch * self.shapes[i].per_sample();
            let out_len = batch * self.shapes[i + 1].per_sample();
            self.acts[i].resize(out_len, 0.0);
            max_act = max_act.max(out_len);
            layer.reset(batch, in_len);
            if let Layer::Conv(l) = layer {
                max_col = max_col.max(l.geom(batch)?.col_len());
            }
        }
        self.grad_cur.resize(max_act, 0.0);
        self.grad_next.resize(max_act, 0.0);
        self.col.resize(max_col, 0.0);
        Ok(())
    }

    /// Runs time-step `t` on the input batch `x` (`[B][C][H][W]`, NCHW as a data loader gives
    /// it) and returns the logits `[B][classes]`.
    ///
    /// The membrane state of step `t − 1` is read as a constant and replaced by that of step
    /// `t`. `train` selects batch statistics for BN (and updates running statistics); with
    /// `keep_for_backward` the step's activations stay valid for [`Net::backward_step`] until the
    /// next forward. Steps must run in order `0, 1, …, T−1` after [`Net::reset_state`].
    pub fn forward_step(
        &mut self,
        t: usize,
        x: &[f32],
        train: bool,
        keep_for_backward: bool,
    ) -> Result<&[f32]> {
        if self.batch == 0 {
            return Err(Error::StepNoBatch);
        }
        let tt = self.config.time_steps;
        if t >= tt || t != self.next_step {
            return Err(Error::StepOutOfOrder {
                got: t,
                expected: self.next_step,
                time_steps: tt,
            });
        }
        let batch = self.batch;
        let per = self.shapes[0].per_sample();
        check_len("net.forward_step.x", batch * per, x.len())?;
        self.tape = None;
        // NCHW → CBHW.
        let (c, hw) = match self.shapes[0] {
            ActShape::Spatial { c, h, w } => (c, h * w),
            ActShape::Flat { f } => (1, f),
        };
        for ci in 0..c {
            for b in 0..batch {
                self.input[(ci * batch + b) * hw..(ci * batch + b + 1) * hw]
                    .copy_from_slice(&x[(b * c + ci) * hw..(b * c + ci + 1) * hw]);
            }
        }
        let Net {
            layers,
            backend,
            input,
            acts,
            col,
            timings,
            ..
        } = self;
        let mut ctx = Ctx {
            be: backend.as_ref(),
            batch,
            t,
            train,
            col: col.as_mut_slice(),
        };
        for i in 0..layers.len() {
            let (before, rest) = acts.split_at_mut(i);
            let xin: &[f32] = if i == 0 { input } else { &before[i - 1] };
            let start = std::time::Instant::now();
            layers[i].forward(&mut ctx, xin, &mut rest[0])?;
            timings[i].fwd += start.elapsed().as_secs_f64();
            timings[i].fwd_n += 1;
        }
        self.next_step += 1;
        if keep_for_backward {
            self.tape = Some(Tape { t, train });
        }
        Ok(self.logits())
    }

    /// Logits `[B][classes]` of the last forward step.
    pub fn logits(&self) -> &[f32] {
        self.acts.last().map_or(&[], |v| &v[..])
    }

    /// Back-propagates `dlogits` (`[B][classes]`) through the spatial graph of the last forward
    /// step (which must have run with `keep_for_backward`), ACCUMULATING into the gradients of
    /// all trainable tensors. Consumes the saved step.
    pub fn backward_step(&mut self, dlogits: &[f32]) -> Result<()> {
        let tape = self.tape.ok_or(Error::StepNoTape)?;
        let batch = self.batch;
        check_len(
            "net.backward_step.dlogits",
            batch * self.num_classes(),
            dlogits.len(),
        )?;
        self.tape = None;
        let Net {
            layers,
            shapes,
            backend,
            input,
            acts,
            grad_cur,
            grad_next,
            col,
            timings,
            ..
        } = self;
        grad_cur[..dlogits.len()].copy_from_slice(dlogits);
        let mut ctx = Ctx {
            be: backend.as_ref(),
            batch,
            t: tape.t,
            train: tape.train,
            col: col.as_mut_slice(),
        };
        for i in (0..layers.len()).rev() {
            let out_len = batch * shapes[i + 1].per_sample();
            let in_len = batch * shapes[i].per_sample();
            let need_dx = i > 0;
            if need_dx {
                grad_next[..in_len].iter_mut().for_each(|v| *v = 0.0);
            }
            let xin: &[f32] = if i == 0 { input } else { &acts[i - 1] };
            let start = std::time::Instant::now();
            layers[i].backward(
                &mut ctx,
                xin,
                &acts[i],
                &grad_cur[..out_len],
                need_dx.then_some(&mut grad_next[..in_len]),
            )?;
            timings[i].bwd += start.elapsed().as_secs_f64();
            timings[i].bwd_n += 1;
            std::mem::swap(grad_cur, grad_next);
        }
        Ok(())
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        for l in &mut self.layers {
            for p in l.params_mut() {
                p.zero_grad();
            }
        }
    }

    /// All tensors (trainable and buffers) in a stable order: layer by layer, as in the table
    /// of the module docs.
    pub fn params(&self) -> Vec<&Param> {
        self.layers.iter().flat_map(Layer::params).collect()
    }

    /// All tensors, mutable (optimizer updates, checkpoint loading).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers.iter_mut().flat_map(Layer::params_mut).collect()
    }

    /// The tensor called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params().into_iter().find(|p| p.name == name)
    }

    /// The tensor called `name`, mutable.
    pub fn param_mut(&mut self, name: &str) -> Option<&mut Param> {
        self.params_mut().into_iter().find(|p| p.name == name)
    }

    /// Time spent per layer (for profiling; a clock read per layer call).
    pub fn layer_timings(&self) -> Vec<LayerTiming> {
        self.config
            .layers
            .iter()
            .zip(&self.timings)
            .enumerate()
            .map(|(index, (spec, t))| LayerTiming {
                index,
                spec: spec.clone(),
                forward_s: t.fwd,
                backward_s: t.bwd,
                forward_calls: t.fwd_n,
                backward_calls: t.bwd_n,
            })
            .collect()
    }

    /// Clears the per-layer timings.
    pub fn reset_timings(&mut self) {
        self.timings.iter_mut().for_each(|t| *t = Timing::default());
    }

    /// True while a forward step is held for `backward_step`.
    pub fn has_saved_step(&self) -> bool {
        self.tape.is_some()
    }

    /// Bytes currently held for a pending `backward_step`: the step's input and activations and
    /// each layer's saved state; 0 when no step is held.
    pub fn bytes_held_for_backward(&self) -> usize {
        if self.tape.is_none() {
            return 0;
        }
        4 * (self.input.len() + self.acts.iter().map(Vec::len).sum::<usize>())
            + self.layers.iter().map(Layer::saved_bytes).sum::<usize>()
    }

    /// Bytes of every buffer the network allocated besides its parameters and gradients
    /// (activations, gradient ping-pong, im2col scratch, state, saved statistics); fixed per
    /// batch size, independent of T and of the number of steps run.
    pub fn buffer_bytes(&self) -> usize {
        4 * (self.input.capacity()
            + self.acts.iter().map(Vec::capacity).sum::<usize>()
            + self.grad_cur.capacity()
            + self.grad_next.capacity()
            + self.col.capacity())
            + self.layers.iter().map(Layer::buffer_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_grad, dot_f64, rand_vec, Tol};
    use crate::layers::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
    use crate::tensor::ParamKind;

    /// Small net exercising every layer kind: 2×8×8 input, 5 classes.
    fn small_config(t: usize, kinds: [NeuronKind; 3], seca: bool) -> NetConfig {
        let mut layers = vec![
            LayerSpec::Conv2d {
                out_channels: 6,
                kernel: 3,
                stride: 1,
                pad: 1,
                bias: true,
            },
            LayerSpec::BatchNorm2d,
            LayerSpec::Neuron(kinds[0]),
            LayerSpec::BinaryConv2d {
                out_channels: 8,
                kernel: 3,
                stride: 2,
                pad: 1,
            },
            LayerSpec::BatchNorm2d,
        ];
        if seca {
            layers.push(LayerSpec::Seca);
        }
        layers.extend([
            LayerSpec::Neuron(kinds[1]),
            LayerSpec::AvgPool2,
            LayerSpec::GlobalAvgPool,
            LayerSpec::BinaryLinear {
                out_features: 7,
                bias: true,
            },
            LayerSpec::Neuron(kinds[2]),
            LayerSpec::Linear {
                out_features: 5,
                bias: true,
            },
        ]);
        NetConfig {
            in_channels: 2,
            height: 8,
            width: 8,
            time_steps: t,
            layers,
        }
    }

    /// The small net with the flat neuron's thresholds lowered (θ = σ(−3) ≈ 0.05), so that it
    /// fires on the small binary-linear outputs and gradients reach every layer.
    fn small_net(t: usize, kinds: [NeuronKind; 3], seca: bool, seed: u64) -> Net {
        let mut net = Net::new(small_config(t, kinds, seca), seed).unwrap();
        net.param_mut("neuron3.q").unwrap().value = vec![-3.0; t];
        net
    }

    fn batch_input(seed: u64, batch: usize, per: usize) -> Vec<f32> {
        rand_vec(seed, batch * per)
            .iter()
            .map(|v| 1.5 * v + 0.5)
            .collect()
    }

    /// The MCU preset exists to fit a 64 KiB-RAM Cortex-M3: its exported model's sequential
    /// arena plus the quantised input leaves at least 8 KiB of the 64 KiB for stack and statics,
    /// for every neuron version, with and without SECA.
    #[test]
    fn mcu_net_fits_a_64k_cortex_m3() {
        for kind in [NeuronKind::EmPf, NeuronKind::MemBn, NeuronKind::Parallel] {
            for seca in [false, true] {
                let opts = BenchOptions {
                    neurons: [kind; 4],
                    seca,
                };
                let net = Net::new(NetConfig::mcu(4, &opts), 7).unwrap();
                let bytes = crate::export::export_float(&net).unwrap();
                let m = empf_core::Model::decode(&bytes).unwrap();
                let ram =
                    4 * m.arena_words_for(empf_core::Mode::Sequential) + m.input_shape().numel();
                assert!(
                    ram <= (64 - 8) * 1024,
                    "{kind:?} seca {seca}: {ram} bytes of arena + input"
                );
                assert_eq!(m.classes(), 10);
            }
        }
    }

    #[test]
    fn bench_net_names_shapes_and_kinds() {
        let net = Net::new(NetConfig::bench(4, &BenchOptions::default()), 1).unwrap();
        let names: Vec<&str> = net.params().iter().map(|p| p.name.as_str()).collect();
        let want = [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "neuron1.p",
            "neuron1.q",
            "conv2.weight",
            "bn2.weight",
            "bn2.bias",
            "bn2.running_mean",
            "bn2.running_var",
            "neuron2.p",
            "neuron2.q",
            "conv3.weight",
            "bn3.weight",
            "bn3.bias",
            "bn3.running_mean",
            "bn3.running_var",
            "neuron3.p",
            "neuron3.q",
            "conv4.weight",
            "bn4.weight",
            "bn4.bias",
            "bn4.running_mean",
            "bn4.running_var",
            "neuron4.p",
            "neuron4.q",
            "fc1.weight",
            "fc1.bias",
        ];
        assert_eq!(names, want);
        let p = |n: &str| net.param(n).unwrap();
        assert_eq!(p("conv1.weight").shape, [32, 1, 3, 3]);
        assert_eq!(p("conv1.weight").role, ParamRole::FullPrecision);
        assert_eq!(p("conv2.weight").shape, [64, 32, 3, 3]);
        assert_eq!(p("conv2.weight").role, ParamRole::BinaryWeight);
        assert_eq!(p("conv4.weight").shape, [128, 128, 3, 3]);
        assert_eq!(p("fc1.weight").shape, [10, 128]);
        assert_eq!(p("neuron3.q").shape, [4]);
        assert_eq!(p("bn2.running_var").kind, ParamKind::Buffer);
        assert!(p("bn2.running_var").grad.is_empty());
        assert!(p("bn2.weight").is_trainable());
        assert_eq!(net.num_classes(), 10);
        assert_eq!(net.input_len(), 784);
        assert_eq!(net.shapes().last(), Some(&ActShape::Flat { f: 10 }));
        // Binary latent init is Kaiming-normal: mixed signs, std ≈ sqrt(2/288).
        let w = &p("conv2.weight").value;
        let neg = w.iter().filter(|&&v| v < 0.0).count();
        assert!(neg > w.len() / 3 && neg < 2 * w.len() / 3);
        let std = (w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - (2.0f64 / 288.0).sqrt()).abs() < 0.01, "std {std}");

        let opts = BenchOptions {
            neurons: [
                NeuronKind::EmPf,
                NeuronKind::MemBn,
                NeuronKind::Parallel,
                NeuronKind::EmPf,
            ],
            seca: true,
        };
        let net = Net::new(NetConfig::bench(4, &opts), 1).unwrap();
        let names: Vec<&str> = net.params().iter().map(|p| p.name.as_str()).collect();
        for n in [
            "seca1.weight",
            "seca3.bias",
            "neuron2.a",
            "neuron2.b",
            "neuron2.bn_weight",
            "neuron2.bn_running_var",
            "neuron3.q",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
        assert!(!names.contains(&"neuron3.p"), "Version III has no leak");
        assert!(!names.contains(&"seca4.weight"));
        assert_eq!(net.param("neuron2.bn_weight").unwrap().shape, [4, 64]);
        assert_eq!(net.param("seca2.weight").unwrap().shape, [1, 1, 5]);
    }

    #[test]
    fn config_errors_are_typed() {
        let mut cfg = small_config(2, [NeuronKind::EmPf; 3], false);
        cfg.layers.pop();
        cfg.layers.pop();
        cfg.layers.pop();
        cfg.layers.pop(); // ends after AvgPool2: not flat
        assert!(matches!(Net::new(cfg, 0), Err(Error::ConfigInvalid { .. })));
        let cfg = NetConfig {
            in_channels: 1,
            height: 4,
            width: 4,
            time_steps: 2,
            layers: vec![LayerSpec::Linear {
                out_features: 2,
                bias: true,
            }],
        };
        assert!(matches!(
            Net::new(cfg, 0),
            Err(Error::ConfigInvalid { layer: 0, .. })
        ));
        let mut cfg = small_config(2, [NeuronKind::EmPf; 3], false);
        cfg.layers[9] = LayerSpec::Neuron(NeuronKind::MemBn); // Mem-BN on flat features
        assert!(matches!(
            Net::new(cfg, 0),
            Err(Error::ConfigInvalid { layer: 9, .. })
        ));
    }

    #[test]
    fn step_protocol_errors() {
        let mut net = Net::new(small_config(3, [NeuronKind::EmPf; 3], false), 0).unwrap();
        let x = batch_input(1, 4, 128);
        assert_eq!(
            net.forward_step(0, &x, true, true).unwrap_err(),
            Error::StepNoBatch
        );
        net.reset_state(4).unwrap();
        assert!(matches!(
            net.forward_step(1, &x, true, false),
            Err(Error::StepOutOfOrder {
                got: 1,
                expected: 0,
                ..
            })
        ));
        assert!(matches!(
            net.forward_step(0, &x[1..], true, false),
            Err(Error::ShapeMismatch { .. })
        ));
        net.forward_step(0, &x, true, false).unwrap();
        assert_eq!(
            net.backward_step(&[0.0; 20]).unwrap_err(),
            Error::StepNoTape
        );
        net.forward_step(1, &x, true, true).unwrap();
        assert!(matches!(
            net.backward_step(&[0.0; 19]),
            Err(Error::ShapeMismatch { .. })
        ));
        net.backward_step(&[0.0; 20]).unwrap();
        assert_eq!(
            net.backward_step(&[0.0; 20]).unwrap_err(),
            Error::StepNoTape
        );
        net.forward_step(2, &x, true, true).unwrap();
        assert!(matches!(
            net.forward_step(3, &x, true, true),
            Err(Error::StepOutOfOrder { .. })
        ));
        assert!(net.reset_state(0).is_err());
    }

    /// Snapshot of every neuron's carried state.
    fn states(net: &Net) -> Vec<Vec<f32>> {
        net.layers
            .iter()
            .map(|l| match l {
                Layer::Neuron(n) => n.state.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn restore(net: &mut Net, s: &[Vec<f32>], step: usize) {
        for (l, st) in net.layers.iter_mut().zip(s) {
            if let Layer::Neuron(n) = l {
                n.state.copy_from_slice(st);
            }
        }
        net.next_step = step;
    }

    /// Whole-network backward at step t = 1 (carried state from step 0 held constant, as the
    /// online gradient defines it) against finite differences, for every non-binary trainable
    /// tensor; binary latent weights are checked for the STE mask structure instead.
    fn net_gradcheck(kinds: [NeuronKind; 3], seca: bool) {
        let (batch, tt) = (3, 3);
        let mut net = small_net(tt, kinds, seca, 5);
        let x = batch_input(2, batch, 128);
        let r = rand_vec(3, batch * 5);
        net.reset_state(batch).unwrap();
        net.forward_step(0, &x, true, false).unwrap();
        let s1 = states(&net);
        net.forward_step(1, &x, true, true).unwrap();
        net.zero_grad();
        net.backward_step(&r).unwrap();
        assert_eq!(net.bytes_held_for_backward(), 0);
        let names: Vec<(String, ParamRole)> = net
            .params()
            .iter()
            .filter(|p| p.is_trainable())
            .map(|p| (p.name.clone(), p.role))
            .collect();
        let tol = Tol {
            eps: 1e-3,
            rtol: 5e-2,
            atol: 2e-3,
        };
        let mut failures = Vec::new();
        for (name, role) in names {
            let (value, grad) = {
                let p = net.param(&name).unwrap();
                (p.value.clone(), p.grad.clone())
            };
            assert!(grad.iter().any(|&g| g != 0.0), "{name}: all-zero gradient");
            if role == ParamRole::BinaryWeight {
                continue;
            }
            let res = check_grad(&name, &value, &grad, tol, 12, |v| {
                net.param_mut(&name).unwrap().value.copy_from_slice(v);
                restore(&mut net, &s1, 1);
                let out = net.forward_step(1, &x, true, false).unwrap().to_vec();
                dot_f64(&r, &out)
            });
            net.param_mut(&name).unwrap().value.copy_from_slice(&value);
            if let Err(e) = res {
                failures.push(e);
            }
        }
        assert!(failures.is_empty(), "gradcheck failures: {failures:#?}");
    }

    #[test]
    fn net_gradcheck_version_one() {
        net_gradcheck([NeuronKind::EmPf; 3], false);
    }

    #[test]
    fn net_gradcheck_membn_parallel_seca() {
        net_gradcheck(
            [NeuronKind::MemBn, NeuronKind::Parallel, NeuronKind::EmPf],
            true,
        );
        net_gradcheck(
            [
                NeuronKind::Parallel,
                NeuronKind::MemBn,
                NeuronKind::Parallel,
            ],
            true,
        );
    }

    #[test]
    fn every_trainable_tensor_gets_a_gradient() {
        let kinds = [NeuronKind::MemBn, NeuronKind::EmPf, NeuronKind::Parallel];
        let mut net = small_net(2, kinds, true, 9);
        let x = batch_input(4, 4, 128);
        net.reset_state(4).unwrap();
        net.forward_step(0, &x, true, false).unwrap();
        let logits = net.forward_step(1, &x, true, true).unwrap().to_vec();
        let mut probs = vec![0.0; 20];
        let labels = [0, 1, 2, 3];
        cross_entropy_forward(5, &logits, &labels, &mut probs).unwrap();
        let mut d = vec![0.0; 20];
        cross_entropy_backward(5, &probs, &labels, &mut d).unwrap();
        net.zero_grad();
        net.backward_step(&d).unwrap();
        for p in net.params() {
            if p.is_trainable() {
                // per-step tensors: only step 1 is touched.
                assert!(
                    p.grad.iter().any(|&g| g != 0.0),
                    "{} got no gradient",
                    p.name
                );
                assert!(p.grad.iter().all(|g| g.is_finite()));
            }
        }
        let q = net.param("neuron2.q").unwrap();
        assert_eq!(q.grad[0], 0.0);
    }

    #[test]
    fn memory_does_not_grow_with_t() {
        let kinds = [NeuronKind::MemBn, NeuronKind::EmPf, NeuronKind::Parallel];
        let run = |tt: usize, keep_last: bool| {
            let mut net = Net::new(small_config(tt, kinds, true), 3).unwrap();
            let x = batch_input(1, 4, 128);
            net.reset_state(4).unwrap();
            let base = net.buffer_bytes();
            for t in 0..tt {
                let keep = keep_last && t + 1 == tt;
                net.forward_step(t, &x, true, keep).unwrap();
                assert_eq!(net.buffer_bytes(), base, "buffers grew at step {t}");
            }
            (net.buffer_bytes(), net.bytes_held_for_backward())
        };
        let (b2, h2) = run(2, false);
        let (b16, h16) = run(16, false);
        assert_eq!((h2, h16), (0, 0), "no-backward steps hold nothing");
        assert_eq!(b2, b16);
        let (b2k, h2k) = run(2, true);
        let (b16k, h16k) = run(16, true);
        assert!(h2k > 0);
        assert_eq!(h2k, h16k);
        assert_eq!((b2k, b16k), (b2, b16));
        // Per-step online training (forward+backward every step) does not grow either.
        let mut net = Net::new(small_config(16, kinds, true), 3).unwrap();
        let x = batch_input(1, 4, 128);
        net.reset_state(4).unwrap();
        let base = net.buffer_bytes();
        for t in 0..16 {
            net.forward_step(t, &x, true, true).unwrap();
            assert_eq!(net.bytes_held_for_backward(), h16k);
            net.backward_step(&[0.1; 20]).unwrap();
            assert_eq!(net.bytes_held_for_backward(), 0);
            assert_eq!(net.buffer_bytes(), base);
        }
        // A smaller batch reuses the allocation.
        net.reset_state(2).unwrap();
        assert_eq!(net.buffer_bytes(), base);
    }

    /// Two SGD steps on a fixed batch; returns all tensors.
    fn train_two_steps(seed: u64) -> Vec<Vec<f32>> {
        let kinds = [NeuronKind::EmPf, NeuronKind::MemBn, NeuronKind::Parallel];
        let mut net = small_net(3, kinds, true, seed);
        let x = batch_input(7, 6, 128);
        let labels = [0, 1, 2, 3, 4, 0];
        for _ in 0..2 {
            net.reset_state(6).unwrap();
            for t in 0..3 {
                let logits = net.forward_step(t, &x, true, true).unwrap().to_vec();
                let mut probs = vec![0.0; 30];
                cross_entropy_forward(5, &logits, &labels, &mut probs).unwrap();
                let mut d = vec![0.0; 30];
                cross_entropy_backward(5, &probs, &labels, &mut d).unwrap();
                net.zero_grad();
                net.backward_step(&d).unwrap();
                for p in net.params_mut() {
                    if p.is_trainable() {
                        for (v, g) in p.value.iter_mut().zip(&p.grad) {
                            *v -= 0.1 * g;
                        }
                    }
                }
            }
        }
        net.params().iter().map(|p| p.value.clone()).collect()
    }

    #[test]
    fn same_seed_same_parameters() {
        let a = train_two_steps(42);
        let b = train_two_steps(42);
        assert_eq!(a, b, "bitwise identical after training");
        let c = train_two_steps(43);
        assert_ne!(a, c);
        let init = Net::new(small_config(3, [NeuronKind::EmPf; 3], false), 42).unwrap();
        let init2 = Net::new(small_config(3, [NeuronKind::EmPf; 3], false), 42).unwrap();
        assert_eq!(init.params(), init2.params());
    }

    /// Reductions never depend on how rayon splits the work: 1 and 3 worker threads give
    /// bitwise-identical parameters and gradients (bench topology on 16×16 inputs, batch 4:
    /// large enough for multi-threaded GEMMs and several element-wise chunks).
    #[test]
    fn result_is_independent_of_thread_count() {
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let opts = BenchOptions {
                        neurons: [
                            NeuronKind::EmPf,
                            NeuronKind::MemBn,
                            NeuronKind::Parallel,
                            NeuronKind::EmPf,
                        ],
                        seca: true,
                    };
                    let mut net =
                        Net::new(NetConfig::bench_sized(1, 16, 16, 10, 2, &opts), 3).unwrap();
                    let x = batch_input(1, 4, 256);
                    let labels: Vec<usize> = (0..4).collect();
                    let mut probs = vec![0.0; 40];
                    net.reset_state(4).unwrap();
                    for t in 0..2 {
                        let logits = net.forward_step(t, &x, true, true).unwrap().to_vec();
                        cross_entropy_forward(10, &logits, &labels, &mut probs).unwrap();
                        let mut d = vec![0.0; 40];
                        cross_entropy_backward(10, &probs, &labels, &mut d).unwrap();
                        net.zero_grad();
                        net.backward_step(&d).unwrap();
                    }
                    net.params()
                        .iter()
                        .map(|p| (p.value.clone(), p.grad.clone()))
                        .collect::<Vec<_>>()
                })
        };
        assert_eq!(run(1), run(3));
    }

    /// Online training reduces the loss on a fixed batch (sanity of the whole pipeline), and
    /// eval mode runs on the learned running statistics.
    #[test]
    fn overfits_a_small_batch() {
        const LR_OVERFIT: f32 = 0.3;
        let mut net = small_net(2, [NeuronKind::EmPf; 3], false, 11);
        let batch = 8;
        let x = batch_input(3, batch, 128);
        let labels: Vec<usize> = (0..batch).map(|i| i % 5).collect();
        let mut probs = vec![0.0; batch * 5];
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..60 {
            net.reset_state(batch).unwrap();
            let mut loss_sum = 0.0;
            for t in 0..2 {
                let logits = net.forward_step(t, &x, true, true).unwrap().to_vec();
                loss_sum += cross_entropy_forward(5, &logits, &labels, &mut probs).unwrap();
                let mut d = vec![0.0; batch * 5];
                cross_entropy_backward(5, &probs, &labels, &mut d).unwrap();
                net.zero_grad();
                net.backward_step(&d).unwrap();
                for p in net.params_mut() {
                    if p.is_trainable() {
                        for (v, g) in p.value.iter_mut().zip(&p.grad) {
                            *v -= LR_OVERFIT * g;
                        }
                    }
                }
            }
            first.get_or_insert(loss_sum);
            last = loss_sum;
        }
        let first = first.unwrap();
        assert!(last < 0.2 * first, "loss {first} → {last}");
        net.reset_state(batch).unwrap();
        for t in 0..2 {
            let out = net.forward_step(t, &x, false, false).unwrap();
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn nchw_input_is_transposed_to_cbhw() {
        // A 1x1 FP conv with identity weights on 2 channels + GAP + identity linear reproduces
        // the per-channel means of each sample.
        let cfg = NetConfig {
            in_channels: 2,
            height: 2,
            width: 2,
            time_steps: 1,
            layers: vec![
                LayerSpec::Conv2d {
                    out_channels: 2,
                    kernel: 1,
                    stride: 1,
                    pad: 0,
                    bias: false,
                },
                LayerSpec::GlobalAvgPool,
                LayerSpec::Linear {
                    out_features: 2,
                    bias: false,
                },
            ],
        };
        let mut net = Net::new(cfg, 0).unwrap();
        net.param_mut("conv1.weight").unwrap().value = vec![1.0, 0.0, 0.0, 1.0];
        net.param_mut("fc1.weight").unwrap().value = vec![1.0, 0.0, 0.0, 1.0];
        net.reset_state(2).unwrap();
        // sample 0: ch0 = 1, ch1 = 2; sample 1: ch0 = 3, ch1 = 4
        let x = [
            1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0,
        ];
        let out = net.forward_step(0, &x, false, false).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }
}
