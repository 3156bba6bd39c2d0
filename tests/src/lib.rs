//! Conformance suite: one list of cases, run through every engine, each with its stated
//! tolerance.
//!
//! | engine | compared with | tolerance |
//! |---|---|---|
//! | host eval (`host-train`, f32, BN with running statistics) | `core` float | `|Δ| ≤ 1e-4·max(1, ‖logits‖∞)`, same argmax unless the top-2 margin is below that |
//! | `core` integer | `core` float | the bound stated in `core/tests/modes_and_fixed.rs` |
//!
//! Cases are random networks in the trainer's own vocabulary ([`random_case`]): stacks of FP and
//! binary convs with BatchNorm, EM-PF neurons of every version (I, Mem-BN II, parallel III), SECA,
//! average and max pooling (max pools on BN currents and on spikes), residual blocks (identity
//! `Save`/`Add` with or without SECA_II, downsampling `Save`/`Swap`/1×1 shortcut/`Add`), binary
//! and FP linear layers, random T, strides, channels, weights and BN statistics. A test that
//! fails on a case prints its description ([`DescribeOnFailure`]).

use empf_host_train::net::{LayerSpec, Net, NetConfig, NeuronKind};
use empf_host_train::tensor::{ParamKind, ParamRole};

/// Stated tolerance of host eval vs `core` float, relative to `max(1, ‖logits‖∞)`.
pub const HOST_VS_CORE_REL: f64 = 1e-4;

/// SplitMix64, so a case is a pure function of its seed.
pub struct Rng(pub u64);
impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Prints a network description to stderr if the thread panics while this guard lives, so a
/// failing seed names the network it built.
pub struct DescribeOnFailure(pub String);

impl DescribeOnFailure {
    /// A guard for `net`'s description, prefixed by `tag`.
    pub fn of(tag: &str, net: &Net) -> Self {
        DescribeOnFailure(format!("{tag}: {:?}", net.config()))
    }
}

impl Drop for DescribeOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing network: {}", self.0);
        }
    }
}

/// A random trainer network with random parameters and BN statistics.
///
/// Max pools and residual blocks are drawn from their own stream, so a case without them is
/// the same network (same layers, same parameters) as before they existed.
pub fn random_case(seed: u64) -> Net {
    let mut rng = Rng(seed);
    let mut side = Rng(seed ^ 0x4D50_5245_5349_4455);
    // A max pool of 2–3, stride 1–2, padding 0–1 where the window fits: the new (h, w).
    let max_pool = |side: &mut Rng, layers: &mut Vec<LayerSpec>, hh: usize, ww: usize| {
        let (kernel, stride, pad) = (2 + side.below(2), 1 + side.below(2), side.below(2));
        if hh + 2 * pad < kernel || ww + 2 * pad < kernel {
            return (hh, ww);
        }
        layers.push(LayerSpec::MaxPool {
            kernel,
            stride,
            pad,
        });
        let out = |n: usize| (n + 2 * pad - kernel) / stride + 1;
        (out(hh), out(ww))
    };
    let t = 1 + rng.below(4);
    let (c, h, w) = (1 + rng.below(3), 5 + rng.below(6), 5 + rng.below(6));
    let kind = |rng: &mut Rng| match rng.below(3) {
        0 => NeuronKind::EmPf,
        1 => NeuronKind::MemBn,
        _ => NeuronKind::Parallel,
    };
    let stem = 2 + rng.below(4);
    let mut layers = vec![
        LayerSpec::Conv2d {
            out_channels: stem,
            kernel: 3,
            stride: 1,
            pad: 1,
            bias: rng.below(2) == 0,
        },
        LayerSpec::BatchNorm2d,
    ];
    let (mut hh, mut ww) = (h, w);
    let mut chans = stem;
    // On the stem's BN currents (time-invariant, as ResNet-34's stem pool).
    if side.below(4) == 0 {
        (hh, ww) = max_pool(&mut side, &mut layers, hh, ww);
    }
    layers.push(LayerSpec::Neuron(kind(&mut rng)));
    for _ in 0..1 + rng.below(3) {
        // A residual block on the running spikes, before this block's own layers.
        match side.below(4) {
            0 => {
                // Identity: Save · bconv3×3 · BN · [SECA_II] · Add · neuron.
                let slot = side.below(empf_core::MAX_SLOTS) as u8;
                layers.push(LayerSpec::Save { slot });
                layers.push(LayerSpec::BinaryConv2d {
                    out_channels: chans,
                    kernel: 3,
                    stride: 1,
                    pad: 1,
                });
                layers.push(LayerSpec::BatchNorm2d);
                if side.below(2) == 0 {
                    layers.push(LayerSpec::SecaResidual { slot });
                }
                layers.push(LayerSpec::Add { slot });
                layers.push(LayerSpec::Neuron(kind(&mut side)));
            }
            1 if hh >= 3 && ww >= 3 => {
                // Downsampling: Save · bconv3×3/s2 · BN · Swap · bconv1×1/s2 · BN · Add · neuron.
                let slot = side.below(empf_core::MAX_SLOTS) as u8;
                let out = 1 + side.below(6);
                layers.push(LayerSpec::Save { slot });
                layers.push(LayerSpec::BinaryConv2d {
                    out_channels: out,
                    kernel: 3,
                    stride: 2,
                    pad: 1,
                });
                layers.push(LayerSpec::BatchNorm2d);
                layers.push(LayerSpec::Swap { slot });
                layers.push(LayerSpec::BinaryConv2d {
                    out_channels: out,
                    kernel: 1,
                    stride: 2,
                    pad: 0,
                });
                layers.push(LayerSpec::BatchNorm2d);
                layers.push(LayerSpec::Add { slot });
                layers.push(LayerSpec::Neuron(kind(&mut side)));
                (hh, ww) = ((hh - 1) / 2 + 1, (ww - 1) / 2 + 1);
                chans = out;
            }
            _ => {}
        }
        if rng.below(4) == 0 && hh >= 4 && ww >= 4 {
            layers.push(LayerSpec::AvgPool2);
            hh /= 2;
            ww /= 2;
            continue;
        }
        let (kernel, pad) = if rng.below(3) == 0 { (1, 0) } else { (3, 1) };
        let stride = if hh >= 6 && ww >= 6 && rng.below(3) == 0 {
            2
        } else {
            1
        };
        let out = 1 + rng.below(6);
        layers.push(LayerSpec::BinaryConv2d {
            out_channels: out,
            kernel,
            stride,
            pad,
        });
        layers.push(LayerSpec::BatchNorm2d);
        if rng.below(2) == 0 {
            layers.push(LayerSpec::Seca);
        }
        layers.push(LayerSpec::Neuron(kind(&mut rng)));
        hh = (hh + 2 * pad - kernel) / stride + 1;
        ww = (ww + 2 * pad - kernel) / stride + 1;
        chans = out;
        // On the spikes of the neuron.
        if side.below(4) == 0 {
            (hh, ww) = max_pool(&mut side, &mut layers, hh, ww);
        }
    }
    layers.push(LayerSpec::GlobalAvgPool);
    if rng.below(2) == 0 {
        layers.push(LayerSpec::BinaryLinear {
            out_features: 3 + rng.below(5),
            bias: rng.below(2) == 0,
        });
    }
    layers.push(LayerSpec::Linear {
        out_features: 2 + rng.below(5),
        bias: true,
    });
    let config = NetConfig {
        in_channels: c,
        height: h,
        width: w,
        time_steps: t,
        layers,
    };
    let mut net = Net::new(config, seed).expect("valid random net");
    randomize(&mut net, &mut rng);
    net
}

/// Sets every parameter of `net` at random: BN statistics, neuron parameters, binary and FP
/// weights each in their own range (what [`random_case`] does to its networks).
pub fn randomize(net: &mut Net, rng: &mut Rng) {
    for p in net.params_mut() {
        let name = p.name;
        for v in p.value.iter_mut() {
            *v = if name.ends_with("running_var") {
                rng.range(0.3, 2.0)
            } else if name.ends_with("running_mean") {
                rng.range(-0.5, 0.5)
            } else if name.ends_with("bn_weight")
                || (p.role == ParamRole::BatchNorm && name.ends_with(".weight"))
            {
                rng.range(0.5, 1.5)
            } else if p.role == ParamRole::Neuron {
                rng.range(-2.0, 2.0)
            } else if p.role == ParamRole::BinaryWeight {
                rng.range(-1.0, 1.0)
            } else if p.kind == ParamKind::Trainable {
                rng.range(-0.6, 0.6)
            } else {
                rng.range(-0.3, 0.3)
            };
        }
    }
}
