//! Wire types of the v1 body. Generic over the byte storage `S` so one set of types serves the
//! decoder (`S = &[u8]`, borrowed from the file: weights are never copied) and the encoder
//! (`S = Vec<u8>` or any `AsRef<[u8]>`).
//!
//! Arrays are [`Blob`]s: postcard byte strings (varint length + raw bytes) holding little-endian
//! `f32`, `i32`, `i16` or `u8` elements, or packed sign bits. Field order is the wire order.

use core::fmt;
use core::marker::PhantomData;
use serde::de::{Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// A byte string on the wire. Element type and count are fixed by the field that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Blob<S>(pub S);

impl<S: AsRef<[u8]>> Blob<S> {
    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.as_ref().len()
    }
    /// True when there are no bytes (used for "absent" optional arrays).
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }
}

impl<S: AsRef<[u8]>> Serialize for Blob<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        s.serialize_bytes(self.0.as_ref())
    }
}

struct BorrowedBytes<'a>(PhantomData<&'a ()>);

impl<'de> Visitor<'de> for BorrowedBytes<'de> {
    type Value = &'de [u8];
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a borrowed byte string")
    }
    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<&'a [u8]> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BorrowedBytes(PhantomData)).map(Blob)
    }
}

/// How the input image reaches the network over the `T` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InputEncoding {
    /// Direct (repeat) encoding: the same image at every step; the first layer is the encoder.
    Direct,
}

/// A `C×H×W` shape (one image, one time step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape3 {
    /// Channels.
    pub c: u16,
    /// Height.
    pub h: u16,
    /// Width.
    pub w: u16,
}

/// Integer-path facts about the model's ends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedMeta {
    /// Real value of one input step: `x ≈ input_scale · x_q`, `x_q: i8`.
    pub input_scale: f32,
    /// Real value of one logit step: `logit ≈ logit_scale · y_q`.
    pub logit_scale: f32,
}

/// Model-level fields, first in the body.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelMeta {
    /// Number of time steps `T` (1..=1024).
    pub time_steps: u16,
    /// Input shape.
    pub input: Shape3,
    /// Number of classes; the last layer must produce exactly this many values.
    pub classes: u16,
    /// Input encoding.
    pub encoding: InputEncoding,
    /// Present when the integer path was calibrated; then every layer carries its `fixed` part.
    pub fixed: Option<FixedMeta>,
}

/// Per-channel (or per step×channel) fixed-point rescale: `y = (x·multiplier + 2^(shift−1)) >> shift
/// + offset`, saturated. `multiplier`: i32 LE with `|m| < 2^16`; `shift`: u8 in `0..=62`;
/// `offset`: i32 LE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct Requant<S> {
    /// Multipliers, i32 LE.
    pub multiplier: Blob<S>,
    /// Right shifts, one byte each.
    pub shift: Blob<S>,
    /// Offsets added after the shift, i32 LE.
    pub offset: Blob<S>,
}

/// A scalar fixed-point rescale `y = (x·multiplier + 2^(shift−1)) >> shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScalarRequant {
    /// Multiplier, `|m| < 2^16`.
    pub multiplier: i32,
    /// Right shift, `0..=62`.
    pub shift: u8,
}

/// Integer-path parameters of a full-precision conv or linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct FixedDense<S> {
    /// Weights quantised per output channel, i16 LE, same order as the float weights.
    pub weight: Blob<S>,
    /// Per-output-channel rescale of the i64 accumulator; `offset` holds the bias.
    pub requant: Requant<S>,
}

/// Full-precision 2-D convolution: `y[o] = Σ W[o,c,ky,kx]·x[c,…] + bias[o]`, zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct Conv2d<S> {
    /// Output channels.
    pub out_channels: u16,
    /// Input channels.
    pub in_channels: u16,
    /// Square kernel size.
    pub kernel: u8,
    /// Stride.
    pub stride: u8,
    /// Zero padding on every side (`< kernel`).
    pub padding: u8,
    /// f32 LE, `[out][in][k][k]`.
    pub weight: Blob<S>,
    /// f32 LE, `[out]`.
    pub bias: Blob<S>,
    /// Integer path.
    pub fixed: Option<FixedDense<S>>,
}

/// Binary 2-D convolution: `y[o] = gain[o]·Σ sign[o,c,ky,kx]·x[c,…] + bias[o]`.
///
/// `gain`/`bias` hold α and the folded BatchNorm. Signs are bit-packed, one row of
/// `ceil(in·k·k / 8)` bytes per output channel (see [`crate::bits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct BinaryConv2d<S> {
    /// Output channels.
    pub out_channels: u16,
    /// Input channels.
    pub in_channels: u16,
    /// Square kernel size.
    pub kernel: u8,
    /// Stride.
    pub stride: u8,
    /// Zero padding (`< kernel`).
    pub padding: u8,
    /// Packed signs.
    pub signs: Blob<S>,
    /// f32 LE `[out]`.
    pub gain: Blob<S>,
    /// f32 LE `[out]`.
    pub bias: Blob<S>,
    /// Integer path: rescale of the i32 ±sum per output channel.
    pub fixed: Option<Requant<S>>,
}

/// Full-precision linear layer on the flattened input: `y = W·x + bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct Linear<S> {
    /// Output features.
    pub out_features: u32,
    /// Input features (`C·H·W` of the input).
    pub in_features: u32,
    /// f32 LE `[out][in]`.
    pub weight: Blob<S>,
    /// f32 LE `[out]`.
    pub bias: Blob<S>,
    /// Integer path.
    pub fixed: Option<FixedDense<S>>,
}

/// Binary linear layer: `y[o] = gain[o]·Σ sign[o,i]·x[i] + bias[o]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct BinaryLinear<S> {
    /// Output features.
    pub out_features: u32,
    /// Input features.
    pub in_features: u32,
    /// Packed signs, one row of `ceil(in/8)` bytes per output.
    pub signs: Blob<S>,
    /// f32 LE `[out]`.
    pub gain: Blob<S>,
    /// f32 LE `[out]`.
    pub bias: Blob<S>,
    /// Integer path.
    pub fixed: Option<Requant<S>>,
}

/// Whether a neuron carries membrane state across steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NeuronMode {
    /// Versions I/II: `m = λ·v + I`, state `v` carried to the next step.
    Sequential,
    /// Version III: `s = ReLU(I − θ)`, no state; all steps are independent.
    Parallel,
}

/// Integer-path parameters of a neuron. Arrays have the neuron's granularity (`T` or `T·C`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct FixedNeuron<S> {
    /// Input current → membrane units (`Δ_spike / 256`); `offset` is the folded input bias.
    pub input: Requant<S>,
    /// Leak in Q16 (i32 LE); empty for parallel neurons.
    pub leak_q16: Blob<S>,
    /// Threshold in membrane units (i32 LE).
    pub threshold: Blob<S>,
}

/// EM-PF neuron after folding (spec §2.5–2.8, Mem-BN in Form A):
///
/// `m = leak[t]·v + input_gain[t]·I + input_bias[t]`, `s = max(m − threshold[t], 0)`, `v = m − s`.
///
/// Arrays are f32 LE of length `T` (`per_channel = false`, shared by all channels) or `T·C`
/// (`[t][c]`). `input_gain`/`input_bias` may be empty (identity); `leak` is empty for parallel
/// neurons (`m = gain·I + bias`, no state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct Neuron<S> {
    /// Sequential or parallel.
    pub mode: NeuronMode,
    /// Granularity of every array: per step (false) or per step and channel (true).
    pub per_channel: bool,
    /// λ per step (after folding), f32.
    pub leak: Blob<S>,
    /// θ per step, f32.
    pub threshold: Blob<S>,
    /// Folded Mem-BN scale `k_t`, f32; empty = 1.
    pub input_gain: Blob<S>,
    /// Folded Mem-BN shift `c_t`, f32; empty = 0.
    pub input_bias: Blob<S>,
    /// Integer path.
    pub fixed: Option<FixedNeuron<S>>,
}

/// Integer-path parameters of a SECA module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedSeca {
    /// Conv1d taps applied to channel sums; result in Q8 after `>> shift`.
    pub weight: [i32; 5],
    /// Bias in Q8.
    pub bias_q8: i32,
    /// Right shift for the taps.
    pub shift: u8,
    /// For SECA_II: rescales of main and saved tensor before the add.
    pub add: Option<FixedAdd>,
}

/// SECA channel attention (spec §2.10–2.11): `x ← σ(Conv1d_5(GAP(x)))·x`.
/// With `add_slot` (SECA_II) the input is first `x + slot`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub struct Seca<S> {
    /// SECA_II: add this saved tensor (the pre-synaptic current) first.
    pub add_slot: Option<u8>,
    /// Conv1d taps, f32 LE ×5 (padding 2).
    pub weight: Blob<S>,
    /// Conv1d bias.
    pub bias: f32,
    /// Integer path.
    pub fixed: Option<FixedSeca>,
}

/// Integer-path rescales of a residual add: `y = rq(main) + rq(saved)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedAdd {
    /// Rescale of the main tensor.
    pub main: ScalarRequant,
    /// Rescale of the saved tensor.
    pub saved: ScalarRequant,
}

/// Max pooling over a square window: `y[c, oy, ox] = max x[c, oy·s+ky−p, ox·s+kx−p]` over the
/// taps inside the input. Padding never wins (it acts as −∞), and `padding < kernel` keeps at
/// least one tap of every window inside. ResNet-34's ImageNet stem (spec §5.3) is 3×3, stride 2,
/// padding 1, on the real-valued stem output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MaxPool {
    /// Square window side (≥ 1).
    pub kernel: u8,
    /// Stride (≥ 1).
    pub stride: u8,
    /// Padding on every side (`< kernel`).
    pub padding: u8,
}

/// One layer. The network is a list of layers applied to one running tensor; `Save`, `Swap` and
/// `Add` use up to [`crate::MAX_SLOTS`] side slots for residual connections.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "S: AsRef<[u8]>",
    deserialize = "Blob<S>: Deserialize<'de>"
))]
pub enum Layer<S> {
    /// Full-precision conv.
    Conv2d(Conv2d<S>),
    /// Binary conv with per-channel affine.
    BinaryConv2d(BinaryConv2d<S>),
    /// Full-precision linear.
    Linear(Linear<S>),
    /// Binary linear with per-output affine.
    BinaryLinear(BinaryLinear<S>),
    /// EM-PF neuron.
    Neuron(Neuron<S>),
    /// 2×2 average pool, stride 2 (odd edges dropped).
    AvgPool2,
    /// Global average pool to `C×1×1`.
    GlobalAvgPool,
    /// Reshape to `(C·H·W)×1×1`.
    Flatten,
    /// Copy the running tensor into a slot.
    Save {
        /// Slot index.
        slot: u8,
    },
    /// Exchange the running tensor with a slot (to run a shortcut conv on the saved input).
    Swap {
        /// Slot index.
        slot: u8,
    },
    /// Add a slot to the running tensor.
    Add {
        /// Slot index.
        slot: u8,
        /// Integer path.
        fixed: Option<FixedAdd>,
    },
    /// SECA attention.
    Seca(Seca<S>),
    /// Max pooling (appended last: the variant indices of the layers above are unchanged).
    MaxPool(MaxPool),
}

impl<S> Layer<S> {
    /// Short kind name, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d(_) => "conv2d",
            Layer::BinaryConv2d(_) => "bconv2d",
            Layer::Linear(_) => "linear",
            Layer::BinaryLinear(_) => "blinear",
            Layer::Neuron(n) => match n.mode {
                NeuronMode::Sequential => "neuron",
                NeuronMode::Parallel => "neuron-par",
            },
            Layer::AvgPool2 => "avgpool2",
            Layer::GlobalAvgPool => "gap",
            Layer::Flatten => "flatten",
            Layer::Save { .. } => "save",
            Layer::Swap { .. } => "swap",
            Layer::Add { .. } => "add",
            Layer::Seca(_) => "seca",
            Layer::MaxPool(_) => "maxpool",
        }
    }
}

impl<S> Blob<S> {
    /// The same blob with its storage mapped (borrowed ↔ owned).
    pub fn map<T>(self, f: &mut impl FnMut(S) -> T) -> Blob<T> {
        Blob(f(self.0))
    }
}

impl<S> Requant<S> {
    /// Maps the storage of every blob.
    pub fn map<T>(self, f: &mut impl FnMut(S) -> T) -> Requant<T> {
        Requant {
            multiplier: self.multiplier.map(f),
            shift: self.shift.map(f),
            offset: self.offset.map(f),
        }
    }
}

impl<S> FixedDense<S> {
    /// Maps the storage of every blob.
    pub fn map<T>(self, f: &mut impl FnMut(S) -> T) -> FixedDense<T> {
        FixedDense {
            weight: self.weight.map(f),
            requant: self.requant.map(f),
        }
    }
}

impl<S> Layer<S> {
    /// The same layer with every blob's storage mapped, e.g. `&[u8]` → `Vec<u8>` to edit a
    /// decoded model and encode it again.
    pub fn map<T>(self, f: &mut impl FnMut(S) -> T) -> Layer<T> {
        match self {
            Layer::Conv2d(c) => Layer::Conv2d(Conv2d {
                out_channels: c.out_channels,
                in_channels: c.in_channels,
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
                weight: c.weight.map(f),
                bias: c.bias.map(f),
                fixed: c.fixed.map(|x| x.map(f)),
            }),
            Layer::BinaryConv2d(c) => Layer::BinaryConv2d(BinaryConv2d {
                out_channels: c.out_channels,
                in_channels: c.in_channels,
                kernel: c.kernel,
                stride: c.stride,
                padding: c.padding,
                signs: c.signs.map(f),
                gain: c.gain.map(f),
                bias: c.bias.map(f),
                fixed: c.fixed.map(|x| x.map(f)),
            }),
            Layer::Linear(l) => Layer::Linear(Linear {
                out_features: l.out_features,
                in_features: l.in_features,
                weight: l.weight.map(f),
                bias: l.bias.map(f),
                fixed: l.fixed.map(|x| x.map(f)),
            }),
            Layer::BinaryLinear(l) => Layer::BinaryLinear(BinaryLinear {
                out_features: l.out_features,
                in_features: l.in_features,
                signs: l.signs.map(f),
                gain: l.gain.map(f),
                bias: l.bias.map(f),
                fixed: l.fixed.map(|x| x.map(f)),
            }),
            Layer::Neuron(n) => Layer::Neuron(Neuron {
                mode: n.mode,
                per_channel: n.per_channel,
                leak: n.leak.map(f),
                threshold: n.threshold.map(f),
                input_gain: n.input_gain.map(f),
                input_bias: n.input_bias.map(f),
                fixed: n.fixed.map(|x| FixedNeuron {
                    input: x.input.map(f),
                    leak_q16: x.leak_q16.map(f),
                    threshold: x.threshold.map(f),
                }),
            }),
            Layer::AvgPool2 => Layer::AvgPool2,
            Layer::GlobalAvgPool => Layer::GlobalAvgPool,
            Layer::Flatten => Layer::Flatten,
            Layer::Save { slot } => Layer::Save { slot },
            Layer::Swap { slot } => Layer::Swap { slot },
            Layer::Add { slot, fixed } => Layer::Add { slot, fixed },
            Layer::Seca(s) => Layer::Seca(Seca {
                add_slot: s.add_slot,
                weight: s.weight.map(f),
                bias: s.bias,
                fixed: s.fixed,
            }),
            Layer::MaxPool(p) => Layer::MaxPool(p),
        }
    }
}
