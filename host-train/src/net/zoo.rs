//! The paper's networks (spec §5) in the trainer's description, which is `empf-core`'s
//! vocabulary: ResNet-18 (CIFAR and DVS stems), ResNet-19, ResNet-34 (ImageNet stem with its
//! max-pool), VGG-13 and VGG-SNN.
//!
//! Common rules (§5.1): the stem conv and the classifier are full precision (VGG-SNN's first
//! conv is binary); every other conv, the 1×1 downsample shortcuts included, is a binary conv
//! followed by BN. In the ResNets the residual stream carries real values: the stem output
//! enters the first block without a neuron, and the neurons sit inside the branches (Fig. 3):
//!
//! ```text
//! Save 0 · N1 · BConv3×3(s) · BN · [SECA_a] · [Save 1] · N2 · BConv3×3 · BN · [SECA_b]
//!        · [Swap 0 · BConv1×1(s) · BN] · Add 0
//! ```
//!
//! SECA_I puts plain SECA at a and b; SECA_II (spec §2.11) adds the pre-synaptic current
//! first: `SECA_a(x + ·)` (plain SECA in a channel-changing block) and `SECA_b(o1 + ·)`.
//! N1 is Version I (or II); N2 is Version III when half the neurons are parallel; both are at
//! 100 %. Channel counts scale by a width multiplier, so tests and CPU runs can train narrow
//! versions of the same topology.

use super::arena::TensorMeta;
use super::config::{LayerSpec, NetConfig, NeuronKind};
use crate::params::{ParamKind, ParamReport};
use crate::tensor::{self, ParamRole};

/// A network of the zoo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// ResNet-18: `[2, 2, 2, 2]` blocks of 64/128/256/512 channels, strides 1/2/2/2; conv3×3 stem.
    Resnet18,
    /// ResNet-19: `[3, 3, 2]` blocks of 128/256/512 channels; head FC 512→256 → neuron → FC.
    Resnet19,
    /// ResNet-34: `[3, 4, 6, 3]` blocks; ImageNet stem conv7×7 s2 + BN + max-pool 3×3 s2.
    Resnet34,
    /// VGG-13 (Tiny-ImageNet): 10 convs with average pools, GAP, FC.
    Vgg13,
    /// VGG-SNN (DVS): binary first conv, 8 convs, 4 average pools, flatten, FC.
    VggSnn,
}

/// Channel attention placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecaVariant {
    /// None.
    #[default]
    Off,
    /// SECA_I after the BN of each binary conv.
    One,
    /// SECA_II in the ResNet block (spec §2.11).
    Two,
}

/// Options of [`zoo`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZooOptions {
    /// Time steps T.
    pub time_steps: usize,
    /// Input channels (3 for RGB, 2 for DVS polarities).
    pub in_channels: usize,
    /// Input height = width.
    pub image_size: usize,
    /// Classes.
    pub classes: usize,
    /// Neuron version of the stateful neurons: Version I ([`NeuronKind::EmPf`]) or II.
    pub neuron: NeuronKind,
    /// Share of parallel (Version III) neurons: 0, 50 (the second neuron of each block, every
    /// second neuron of a VGG) or 100.
    pub parallel_percent: u8,
    /// Channel attention.
    pub seca: SecaVariant,
    /// Channel multiplier (1 = the paper's widths).
    pub width: f32,
}

/// Why a zoo network cannot be described.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZooError {
    /// An option out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Arch {
    /// The `--arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet19 => "resnet19",
            Arch::Resnet34 => "resnet34",
            Arch::Vgg13 => "vgg13",
            Arch::VggSnn => "vgg-snn",
        }
    }
}

struct Builder {
    layers: Vec<LayerSpec>,
    o: ZooOptions,
}

impl Builder {
    fn ch(&self, c: usize) -> usize {
        ((c as f32 * self.o.width).round() as usize).max(1)
    }

    fn stateful(&self) -> NeuronKind {
        if self.o.parallel_percent >= 100 {
            NeuronKind::Parallel
        } else {
            self.o.neuron
        }
    }

    fn second(&self) -> NeuronKind {
        if self.o.parallel_percent >= 50 {
            NeuronKind::Parallel
        } else {
            self.o.neuron
        }
    }

    fn bconv(&mut self, out: usize, k: usize, stride: usize) {
        self.layers.push(LayerSpec::BinaryConv2d {
            out_channels: out,
            kernel: k,
            stride,
            pad: k / 2,
        });
        self.layers.push(LayerSpec::BatchNorm2d);
    }

    fn fp_conv(&mut self, out: usize, k: usize, stride: usize) {
        self.layers.push(LayerSpec::Conv2d {
            out_channels: out,
            kernel: k,
            stride,
            pad: k / 2,
            bias: false,
        });
        self.layers.push(LayerSpec::BatchNorm2d);
    }

    /// The paper's basic block on a residual stream of `c_in` channels.
    fn block(&mut self, c_in: usize, c_out: usize, stride: usize) {
        let down = stride != 1 || c_in != c_out;
        let seca = self.o.seca;
        self.layers.push(LayerSpec::Save { slot: 0 });
        self.layers.push(LayerSpec::Neuron(self.stateful()));
        self.bconv(c_out, 3, stride);
        match seca {
            SecaVariant::Off => {}
            SecaVariant::One => self.layers.push(LayerSpec::Seca),
            SecaVariant::Two if down => self.layers.push(LayerSpec::Seca),
            SecaVariant::Two => self.layers.push(LayerSpec::SecaResidual { slot: 0 }),
        }
        if seca == SecaVariant::Two {
            self.layers.push(LayerSpec::Save { slot: 1 });
        }
        self.layers.push(LayerSpec::Neuron(self.second()));
        self.bconv(c_out, 3, 1);
        match seca {
            SecaVariant::Off => {}
            SecaVariant::One => self.layers.push(LayerSpec::Seca),
            SecaVariant::Two => self.layers.push(LayerSpec::SecaResidual { slot: 1 }),
        }
        if down {
            self.layers.push(LayerSpec::Swap { slot: 0 });
            self.bconv(c_out, 1, stride);
        }
        self.layers.push(LayerSpec::Add { slot: 0 });
    }

    fn classifier(&mut self, classes: usize) {
        self.layers.push(LayerSpec::Linear {
            out_features: classes,
            bias: true,
        });
    }
}

/// The same description as [`zoo`]: every network of the zoo is buildable (ResNet-34's stem
/// max-pool runs in `empf-core`), so counting and building describe the same network.
pub fn zoo_for_counting(arch: Arch, o: &ZooOptions) -> Result<NetConfig, ZooError> {
    zoo(arch, o)
}

/// The description of `arch` with options `o`.
pub fn zoo(arch: Arch, o: &ZooOptions) -> Result<NetConfig, ZooError> {
    if ![0, 50, 100].contains(&o.parallel_percent) {
        return Err(ZooError::Invalid(format!(
            "parallel share {} %: the paper's blocks give 0, 50 or 100 %",
            o.parallel_percent
        )));
    }
    if !(o.width.is_finite() && o.width > 0.0 && o.width <= 4.0) {
        return Err(ZooError::Invalid(format!(
            "width multiplier {} must be in (0, 4]",
            o.width
        )));
    }
    if o.neuron == NeuronKind::Parallel {
        return Err(ZooError::Invalid(
            "the stateful neuron version is I or II; parallel neurons are chosen by the share"
                .into(),
        ));
    }
    if o.classes == 0 || o.in_channels == 0 || o.image_size == 0 || o.time_steps == 0 {
        return Err(ZooError::Invalid(
            "classes, input channels, image size and T must be at least 1".into(),
        ));
    }
    let mut b = Builder {
        layers: Vec::new(),
        o: *o,
    };
    match arch {
        Arch::Resnet18 | Arch::Resnet19 | Arch::Resnet34 => {
            let (stem_k, stem_s, stem_c, stages, hidden): (
                usize,
                usize,
                usize,
                &[(usize, usize, usize)],
                _,
            ) = match arch {
                Arch::Resnet18 => (
                    3,
                    1,
                    64,
                    &[(2, 64, 1), (2, 128, 2), (2, 256, 2), (2, 512, 2)],
                    None,
                ),
                Arch::Resnet19 => (
                    3,
                    1,
                    64,
                    &[(3, 128, 1), (3, 256, 2), (2, 512, 2)],
                    Some(256),
                ),
                _ => (
                    7,
                    2,
                    64,
                    &[(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)],
                    None,
                ),
            };
            let stem = b.ch(stem_c);
            b.fp_conv(stem, stem_k, stem_s);
            if arch == Arch::Resnet34 {
                // ImageNet stem: conv7×7 s2 (pad 3) + BN + max-pool 3×3 s2 (pad 1) on the
                // real-valued currents, no neuron (spec §5.1, §5.3).
                b.layers.push(LayerSpec::MaxPool {
                    kernel: 3,
                    stride: 2,
                    pad: 1,
                });
            }
            let mut c = stem;
            for &(blocks, width, stride) in stages {
                let out = b.ch(width);
                for i in 0..blocks {
                    b.block(c, out, if i == 0 { stride } else { 1 });
                    c = out;
                }
            }
            b.layers.push(LayerSpec::GlobalAvgPool);
            if let Some(h) = hidden {
                b.layers.push(LayerSpec::Linear {
                    out_features: b.ch(h),
                    bias: true,
                });
                // Mem-BN needs channels: the head's neuron on flat features is Version I.
                let kind = if o.parallel_percent >= 100 {
                    NeuronKind::Parallel
                } else {
                    NeuronKind::EmPf
                };
                b.layers.push(LayerSpec::Neuron(kind));
            }
            b.classifier(o.classes);
        }
        Arch::Vgg13 | Arch::VggSnn => {
            if o.seca == SecaVariant::Two {
                return Err(ZooError::Invalid(
                    "SECA_II is defined for the ResNet block; VGG takes SECA_I".into(),
                ));
            }
            // 0 = average pool 2×2.
            let (first_binary, cfg): (bool, &[usize]) = match arch {
                Arch::Vgg13 => (
                    false,
                    &[64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 512, 0, 512],
                ),
                _ => (true, &[64, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0]),
            };
            let mut neurons = 0usize;
            for (i, &c) in cfg.iter().enumerate() {
                if c == 0 {
                    b.layers.push(LayerSpec::AvgPool2);
                    continue;
                }
                let out = b.ch(c);
                if i == 0 && !first_binary {
                    b.fp_conv(out, 3, 1);
                } else {
                    b.bconv(out, 3, 1);
                    if o.seca == SecaVariant::One {
                        b.layers.push(LayerSpec::Seca);
                    }
                }
                neurons += 1;
                let kind = if neurons.is_multiple_of(2) {
                    b.second()
                } else {
                    b.stateful()
                };
                b.layers.push(LayerSpec::Neuron(kind));
            }
            b.layers.push(if arch == Arch::Vgg13 {
                LayerSpec::GlobalAvgPool
            } else {
                LayerSpec::Flatten
            });
            b.classifier(o.classes);
        }
    }
    Ok(NetConfig {
        in_channels: o.in_channels,
        height: o.image_size,
        width: o.image_size,
        time_steps: o.time_steps,
        layers: b.layers,
    })
}

/// How a tensor counts in the paper's Param.(B) (spec §5.5): binary weights 2 bits, FP weights
/// (stem, classifier, SECA) 4 B, BN and neuron parameters and statistics excluded.
pub fn param_kind(kind: tensor::ParamKind, role: ParamRole) -> ParamKind {
    match (kind, role) {
        (tensor::ParamKind::Buffer, _) => ParamKind::Excluded,
        (_, ParamRole::BinaryWeight) => ParamKind::Binary,
        (_, ParamRole::FullPrecision) => ParamKind::FullPrecision,
        (_, ParamRole::BatchNorm | ParamRole::Neuron) => ParamKind::Excluded,
    }
}

/// The parameter report of a built network's tensors.
pub fn report_of(tensors: &[TensorMeta]) -> ParamReport {
    let mut r = ParamReport::default();
    for m in tensors {
        r.add(m.span.len as u64, param_kind(m.kind, m.role));
    }
    r
}

/// The parameter report of a description, without building it (no weights drawn: ResNet-34
/// has 21 M). Shapes are followed as `Net` follows them; `count_matches_the_built_network`
/// checks the two agree.
pub fn count_params(cfg: &NetConfig, with_time_steps: usize) -> ParamReport {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Sp(usize, usize, usize),
        Flat(usize),
    }
    let (mut r, tt) = (ParamReport::default(), with_time_steps as u64);
    let mut s = S::Sp(cfg.in_channels, cfg.height, cfg.width);
    let mut slots = [None; empf_core::MAX_SLOTS];
    let chans = |s: S| match s {
        S::Sp(c, _, _) => c,
        S::Flat(f) => f,
    };
    for l in &cfg.layers {
        match *l {
            LayerSpec::Conv2d {
                out_channels: o,
                kernel: k,
                stride,
                pad,
                ..
            }
            | LayerSpec::BinaryConv2d {
                out_channels: o,
                kernel: k,
                stride,
                pad,
            } => {
                let binary = matches!(l, LayerSpec::BinaryConv2d { .. });
                let bias = matches!(l, LayerSpec::Conv2d { bias: true, .. });
                let (c, h, w) = match s {
                    S::Sp(c, h, w) => (c, h, w),
                    S::Flat(f) => (f, 1, 1),
                };
                let kind = if binary {
                    ParamKind::Binary
                } else {
                    ParamKind::FullPrecision
                };
                r.add((o * c * k * k) as u64, kind);
                if bias {
                    r.add(o as u64, ParamKind::FullPrecision);
                }
                let out = |n: usize| (n + 2 * pad).saturating_sub(k) / stride.max(1) + 1;
                s = S::Sp(o, out(h), out(w));
            }
            LayerSpec::BatchNorm2d => r.add(4 * chans(s) as u64, ParamKind::Excluded),
            LayerSpec::Seca | LayerSpec::SecaResidual { .. } => r.add(6, ParamKind::FullPrecision),
            LayerSpec::Neuron(kind) => {
                let logits = match kind {
                    NeuronKind::Parallel => 1,
                    NeuronKind::EmPf => 2,
                    NeuronKind::MemBn => 4,
                };
                let membn = if kind == NeuronKind::MemBn {
                    4 * chans(s) as u64
                } else {
                    0
                };
                r.add(tt * (logits + membn), ParamKind::Excluded);
            }
            LayerSpec::AvgPool2 => {
                if let S::Sp(c, h, w) = s {
                    s = S::Sp(c, h / 2, w / 2);
                }
            }
            LayerSpec::MaxPool {
                kernel: k,
                stride,
                pad,
            } => {
                if let S::Sp(c, h, w) = s {
                    let out = |n: usize| (n + 2 * pad).saturating_sub(k) / stride.max(1) + 1;
                    s = S::Sp(c, out(h), out(w));
                }
            }
            LayerSpec::GlobalAvgPool => s = S::Flat(chans(s)),
            LayerSpec::Flatten => {
                if let S::Sp(c, h, w) = s {
                    s = S::Flat(c * h * w);
                }
            }
            LayerSpec::Linear { out_features, bias }
            | LayerSpec::BinaryLinear { out_features, bias } => {
                let f = match s {
                    S::Sp(c, h, w) => c * h * w,
                    S::Flat(f) => f,
                };
                let kind = if matches!(l, LayerSpec::BinaryLinear { .. }) {
                    ParamKind::Binary
                } else {
                    ParamKind::FullPrecision
                };
                r.add((f * out_features) as u64, kind);
                if bias {
                    r.add(out_features as u64, ParamKind::FullPrecision);
                }
                s = S::Flat(out_features);
            }
            LayerSpec::Save { slot } => {
                if let Some(x) = slots.get_mut(slot as usize) {
                    *x = Some(s);
                }
            }
            LayerSpec::Swap { slot } => {
                if let Some(Some(held)) = slots.get(slot as usize).copied() {
                    slots[slot as usize] = Some(s);
                    s = held;
                }
            }
            LayerSpec::Add { .. } => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Net;

    fn opts(in_channels: usize, image_size: usize, classes: usize) -> ZooOptions {
        ZooOptions {
            time_steps: 4,
            in_channels,
            image_size,
            classes,
            neuron: NeuronKind::EmPf,
            parallel_percent: 50,
            seca: SecaVariant::Off,
            width: 1.0,
        }
    }

    /// The paper's Param.(B) (spec §5.5 table): binary weights at 2 bits, FP at 4 B, BN and
    /// neurons excluded; FP32 totals for every counted weight at 4 B.
    #[test]
    fn paper_param_counts() {
        let rows: [(Arch, ZooOptions, u64, u64, f64, f64); 7] = [
            (
                Arch::Resnet18,
                opts(3, 32, 10),
                6_858,
                11_157_504,
                2.82,
                44.66,
            ),
            (
                Arch::Resnet18,
                opts(3, 32, 100),
                53_028,
                11_157_504,
                3.00,
                44.84,
            ),
            (
                Arch::Resnet18,
                ZooOptions {
                    time_steps: 10,
                    ..opts(2, 48, 10)
                },
                6_282,
                11_157_504,
                2.81,
                44.66,
            ),
            (
                Arch::Resnet34,
                opts(3, 224, 1000),
                522_408,
                21_258_240,
                7.40,
                87.12,
            ),
            (
                Arch::Vgg13,
                opts(3, 64, 200),
                104_328,
                9_400_320,
                2.77,
                38.02,
            ),
            (
                Arch::VggSnn,
                ZooOptions {
                    time_steps: 10,
                    ..opts(2, 48, 10)
                },
                46_090,
                9_217_152,
                2.49,
                37.05,
            ),
            (Arch::Resnet19, opts(3, 32, 10), 0, 0, 0.0, 50.48),
        ];
        for (arch, o, fp, bin, paper_mb, fp32_mb) in rows {
            let cfg = zoo_for_counting(arch, &o).unwrap();
            let r = count_params(&cfg, o.time_steps);
            let name = format!("{} {} classes", arch.name(), o.classes);
            if fp > 0 {
                assert_eq!((r.full_precision, r.binary), (fp, bin), "{name}");
                assert_eq!(
                    format!("{:.2}", r.paper_bytes() / 1e6),
                    format!("{paper_mb:.2}"),
                    "{name}"
                );
            }
            assert_eq!(
                format!("{:.2}", r.fp32_bytes() as f64 / 1e6),
                format!("{fp32_mb:.2}"),
                "{name}"
            );
        }
        let r19 = count_params(&zoo(Arch::Resnet19, &opts(3, 32, 100)).unwrap(), 4);
        assert_eq!(format!("{:.2}", r19.fp32_bytes() as f64 / 1e6), "50.57");
        // SECA adds 6 parameters per module (16 in ResNet-18): Param.(B) unchanged at 2 decimals.
        let seca = ZooOptions {
            seca: SecaVariant::Two,
            neuron: NeuronKind::MemBn,
            ..opts(3, 32, 10)
        };
        let r = count_params(&zoo(Arch::Resnet18, &seca).unwrap(), 4);
        assert_eq!(r.full_precision, 6_858 + 16 * 6);
        assert_eq!(format!("{:.2}", r.paper_bytes() / 1e6), "2.82");
    }

    /// ResNet-34 builds with the paper's ImageNet stem: conv7×7 s2 pad 3 + BN + max-pool 3×3 s2
    /// pad 1, no neuron, so 224² becomes 112² then 56² before the first block; the stem (conv,
    /// BN, pool) is the time-invariant part the trainer reuses across steps.
    #[test]
    fn resnet34_builds_with_its_imagenet_stem() {
        let o = ZooOptions {
            width: 0.125,
            ..opts(3, 224, 1000)
        };
        let cfg = zoo(Arch::Resnet34, &o).unwrap();
        assert_eq!(
            cfg.layers[..4],
            [
                LayerSpec::Conv2d {
                    out_channels: 8,
                    kernel: 7,
                    stride: 2,
                    pad: 3,
                    bias: false
                },
                LayerSpec::BatchNorm2d,
                LayerSpec::MaxPool {
                    kernel: 3,
                    stride: 2,
                    pad: 1
                },
                LayerSpec::Save { slot: 0 },
            ]
        );
        let net = Net::new(cfg.clone(), 1).unwrap();
        use crate::net::ActShape::Spatial;
        assert_eq!(
            net.shapes()[2],
            Spatial {
                c: 8,
                h: 112,
                w: 112
            }
        );
        assert_eq!(net.shapes()[3], Spatial { c: 8, h: 56, w: 56 });
        assert_eq!(net.stem_len(), 3, "conv, BN, max-pool");
        assert_eq!(count_params(&cfg, 4), report_of(net.tensors()));
    }

    /// The count without building equals the built network's tensors, for narrow versions of
    /// every zoo network and each option.
    #[test]
    fn count_matches_the_built_network() {
        for arch in [
            Arch::Resnet18,
            Arch::Resnet19,
            Arch::Resnet34,
            Arch::Vgg13,
            Arch::VggSnn,
        ] {
            for (neuron, parallel_percent, seca) in [
                (NeuronKind::EmPf, 0, SecaVariant::Off),
                (NeuronKind::MemBn, 50, SecaVariant::One),
                (NeuronKind::MemBn, 100, SecaVariant::Two),
            ] {
                if seca == SecaVariant::Two && matches!(arch, Arch::Vgg13 | Arch::VggSnn) {
                    assert!(zoo(
                        arch,
                        &ZooOptions {
                            seca,
                            ..opts(3, 32, 10)
                        }
                    )
                    .is_err());
                    continue;
                }
                let o = ZooOptions {
                    neuron,
                    parallel_percent,
                    seca,
                    width: 0.125,
                    ..opts(3, 32, 10)
                };
                let cfg = zoo(arch, &o).unwrap();
                let net = Net::new(cfg.clone(), 1).unwrap_or_else(|e| panic!("{arch:?}: {e}"));
                assert_eq!(
                    count_params(&cfg, 4),
                    report_of(net.tensors()),
                    "{arch:?} {o:?}"
                );
            }
        }
    }
}
