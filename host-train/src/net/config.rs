//! The network description: layer kinds, presets and activation shapes.

/// Which EM-PF neuron model a neuron layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NeuronKind {
    /// Version I (spec §2.5): learnable per-step leak and threshold.
    #[default]
    EmPf,
    /// Version II (spec §2.6): Version I plus per-step membrane BN mixed with the raw potential.
    MemBn,
    /// Version III (spec §2.8): stateless `ReLU(I − θ_t)`.
    Parallel,
}

/// One layer of a network description (`empf-core`'s vocabulary, BN and neuron kinds
/// unfolded).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Max pooling (core `MaxPool`): `kernel × kernel` windows, padding never wins. Needs a
    /// spatial input; `kernel ≥ 1`, `stride ≥ 1`, `pad < kernel` and a window that fits the
    /// padded input; output `(H + 2·pad − kernel)/stride + 1` per side. No parameters.
    MaxPool {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Padding on every side (acts as −∞).
        pad: usize,
    },
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
    /// Reshape spatial `C×H×W` to flat `C·H·W` features (core `Flatten`; feature index
    /// `c·H·W + y·W + x`).
    Flatten,
    /// Copy the running tensor into residual slot `slot` (core `Save`).
    Save {
        /// Slot, below [`empf_core::MAX_SLOTS`].
        slot: u8,
    },
    /// Exchange the running tensor with slot `slot` (core `Swap`): the shortcut convolution then
    /// runs on the saved block input while the branch output waits in the slot.
    Swap {
        /// Slot, below [`empf_core::MAX_SLOTS`].
        slot: u8,
    },
    /// Add slot `slot` to the running tensor (core `Add`): the real-valued residual stream.
    Add {
        /// Slot, below [`empf_core::MAX_SLOTS`].
        slot: u8,
    },
    /// SECA_II (spec §2.11): SECA on the running tensor plus slot `slot` (the pre-synaptic
    /// current), core `Seca` with `add_slot`. Its tensors are named `seca{n}` like SECA_I's.
    SecaResidual {
        /// Slot, below [`empf_core::MAX_SLOTS`].
        slot: u8,
    },
}

/// A network description (stored in checkpoints as JSON, `model.config`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
