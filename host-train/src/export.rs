//! Export: a trained [`Net`] becomes an `empf-core` model, through `empf-core`'s encoder only.
//!
//! Re-parameterisation (spec §2.3, §2.7 Form A, §2.8): binary weights become `α·sign(W)` with
//! the signs bit-packed and α folded, with the following BatchNorm (running statistics), into
//! a per-channel `gain`/`bias`; a full-precision conv absorbs its BatchNorm into weights and bias;
//! EM-PF neurons get `λ_t = σ(p_t)`, `θ_t = σ(q_t)`; Mem-BN neurons fold into per-step,
//! per-channel leak `k_t·λ_t`, input gain `k_t` and input bias `c_t`; parallel neurons keep `θ_t`.

use empf_core::bits::pack_signs;
use empf_core::format::{
    encode_model, BinaryConv2d, BinaryLinear, Blob, Conv2d, InputEncoding, Layer, Linear, MaxPool,
    ModelMeta, Neuron, NeuronMode, Seca, Shape3,
};

use crate::layers::batchnorm2d::BN_EPS;
use crate::layers::binary_conv2d::binarize_forward;
use std::borrow::Cow;

use crate::net::{ActShape, LayerSpec, Net, NetConfig, NeuronKind};
use crate::tensor::sigmoid;

/// Why a network could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A tensor the layer needs is missing from the network (names are stable; see `net`).
    #[error("tensor {0} is missing")]
    MissingTensor(String),
    /// A tensor has the wrong number of values.
    #[error("tensor {name} has {got} values, expected {expected}")]
    TensorLength {
        /// Tensor name.
        name: String,
        /// Values expected.
        expected: usize,
        /// Values found.
        got: usize,
    },
    /// A tensor holds NaN or infinity.
    #[error("tensor {0} holds a NaN or infinite value")]
    NonFinite(String),
    /// Folding finite tensors overflowed (e.g. a BN weight near `f32::MAX` over a small
    /// running variance).
    #[error("a folded parameter (BN scale/shift, binary gain, neuron gain) overflowed to NaN or infinity")]
    NonFiniteFolded,
    /// The layer sequence has no `empf-core` equivalent.
    #[error("layer {index} ({what}) cannot be exported: {why}")]
    Unsupported {
        /// Layer index in the net description.
        index: usize,
        /// Layer kind.
        what: &'static str,
        /// Reason.
        why: &'static str,
    },
    /// The encoder refused the result.
    #[error("empf-core refused the exported model: {0}")]
    Core(#[from] empf_core::Error),
}

/// Little-endian bytes of values computed by folding (BN scale and shift, α·sign, per-step
/// gains): finite inputs can still overflow there, and a model file must not carry NaN or ∞.
fn le(v: &[f32]) -> Result<Vec<u8>, ExportError> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(ExportError::NonFiniteFolded);
    }
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Where export reads the network's tensors: the trained values, or (to check that `core` can
/// run a description before any parameter exists, [`crate::net::validate`]) one placeholder value
/// for every element.
pub(crate) enum ParamSource<'n> {
    /// The network's own tensors.
    Net(&'n Net),
    /// Every tensor of every requested length holds this finite, non-zero value (non-zero so
    /// that folds such as BN scale or Mem-BN input gain stay well defined).
    Placeholder(f32),
}

struct Params<'n> {
    source: ParamSource<'n>,
}

impl Params<'_> {
    fn get(&self, name: &str, len: usize) -> Result<Cow<'_, [f32]>, ExportError> {
        let net = match self.source {
            ParamSource::Net(net) => net,
            ParamSource::Placeholder(v) => return Ok(Cow::Owned(vec![v; len])),
        };
        let p = net
            .param(name)
            .ok_or_else(|| ExportError::MissingTensor(name.into()))?;
        if p.value.len() != len {
            return Err(ExportError::TensorLength {
                name: name.into(),
                expected: len,
                got: p.value.len(),
            });
        }
        if p.value.iter().any(|v| !v.is_finite()) {
            return Err(ExportError::NonFinite(name.into()));
        }
        Ok(Cow::Borrowed(p.value))
    }
    /// Inference-time BN as `(scale, shift)` per channel: `y = scale·x + shift`.
    fn bn(&self, n: usize, c: usize) -> Result<(Vec<f64>, Vec<f64>), ExportError> {
        let g = self.get(&format!("bn{n}.weight"), c)?;
        let b = self.get(&format!("bn{n}.bias"), c)?;
        let m = self.get(&format!("bn{n}.running_mean"), c)?;
        let v = self.get(&format!("bn{n}.running_var"), c)?;
        let scale: Vec<f64> = (0..c)
            .map(|i| g[i] as f64 / (v[i] as f64 + BN_EPS as f64).sqrt())
            .collect();
        let shift = (0..c)
            .map(|i| b[i] as f64 - m[i] as f64 * scale[i])
            .collect();
        Ok((scale, shift))
    }
}

/// Model-level fields and owned layers, ready for [`encode_model`].
pub type ExportedModel = (ModelMeta, Vec<Layer<Vec<u8>>>);

/// The model-level fields and float layers of `net` (no integer path yet).
pub fn export_layers(net: &Net) -> Result<ExportedModel, ExportError> {
    export_layers_from(net.config(), net.shapes(), ParamSource::Net(net))
}

/// [`export_layers`] of a description with its per-layer shapes (`shapes[0]` the input, then
/// every layer's output), reading tensors from `source`.
pub(crate) fn export_layers_from(
    cfg: &NetConfig,
    shapes: &[ActShape],
    source: ParamSource<'_>,
) -> Result<ExportedModel, ExportError> {
    let t = cfg.time_steps;
    let ps = Params { source };
    let mut layers = Vec::new();
    let (mut n_conv, mut n_bn, mut n_seca, mut n_neuron, mut n_fc) = (0, 0, 0, 0, 0);
    let mut i = 0;
    let unsupported = |index, what, why| ExportError::Unsupported { index, what, why };
    while i < cfg.layers.len() {
        let spec = &cfg.layers[i];
        let input = shapes[i];
        let followed_by_bn = matches!(cfg.layers.get(i + 1), Some(LayerSpec::BatchNorm2d));
        match spec {
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                pad,
                bias,
            } => {
                n_conv += 1;
                let ActShape::Spatial { c, .. } = input else {
                    return Err(unsupported(i, "conv2d", "input is not spatial"));
                };
                let (o, k) = (*out_channels, c * kernel * kernel);
                let w = ps.get(&format!("conv{n_conv}.weight"), o * k)?;
                let b = if *bias {
                    Some(ps.get(&format!("conv{n_conv}.bias"), o)?)
                } else {
                    None
                };
                let mut wf: Vec<f32> = w.to_vec();
                let mut bf: Vec<f32> = b.map_or(vec![0.0; o], |b| b.to_vec());
                if followed_by_bn {
                    n_bn += 1;
                    let (scale, shift) = ps.bn(n_bn, o)?;
                    for oc in 0..o {
                        for v in &mut wf[oc * k..(oc + 1) * k] {
                            *v = (*v as f64 * scale[oc]) as f32;
                        }
                        bf[oc] = (bf[oc] as f64 * scale[oc] + shift[oc]) as f32;
                    }
                    i += 1;
                }
                layers.push(Layer::Conv2d(Conv2d {
                    out_channels: o as u16,
                    in_channels: c as u16,
                    kernel: *kernel as u8,
                    stride: *stride as u8,
                    padding: *pad as u8,
                    weight: Blob(le(&wf)?),
                    bias: Blob(le(&bf)?),
                    fixed: None,
                }));
            }
            LayerSpec::BinaryConv2d {
                out_channels,
                kernel,
                stride,
                pad,
            } => {
                n_conv += 1;
                let ActShape::Spatial { c, .. } = input else {
                    return Err(unsupported(i, "bconv2d", "input is not spatial"));
                };
                let (o, k) = (*out_channels, c * kernel * kernel);
                let (signs, gain, bias) = binary(
                    &ps,
                    &format!("conv{n_conv}.weight"),
                    o,
                    k,
                    None,
                    followed_by_bn.then(|| {
                        n_bn += 1;
                        n_bn
                    }),
                )?;
                if followed_by_bn {
                    i += 1;
                }
                layers.push(Layer::BinaryConv2d(BinaryConv2d {
                    out_channels: o as u16,
                    in_channels: c as u16,
                    kernel: *kernel as u8,
                    stride: *stride as u8,
                    padding: *pad as u8,
                    signs: Blob(signs),
                    gain: Blob(le(&gain)?),
                    bias: Blob(le(&bias)?),
                    fixed: None,
                }));
            }
            LayerSpec::BatchNorm2d => {
                return Err(unsupported(
                    i,
                    "batchnorm2d",
                    "a BatchNorm must follow a conv to be folded",
                ));
            }
            LayerSpec::Seca | LayerSpec::SecaResidual { .. } => {
                n_seca += 1;
                let w = ps.get(&format!("seca{n_seca}.weight"), 5)?;
                let b = ps.get(&format!("seca{n_seca}.bias"), 1)?;
                layers.push(Layer::Seca(Seca {
                    add_slot: match spec {
                        LayerSpec::SecaResidual { slot } => Some(*slot),
                        _ => None,
                    },
                    weight: Blob(le(&w)?),
                    bias: b[0],
                    fixed: None,
                }));
            }
            LayerSpec::Flatten => layers.push(Layer::Flatten),
            LayerSpec::Save { slot } => layers.push(Layer::Save { slot: *slot }),
            LayerSpec::Swap { slot } => layers.push(Layer::Swap { slot: *slot }),
            LayerSpec::Add { slot } => layers.push(Layer::Add {
                slot: *slot,
                fixed: None,
            }),
            LayerSpec::Neuron(kind) => {
                n_neuron += 1;
                // On flat features (after GAP, Flatten or a linear layer) core sees F×1×1:
                // one channel per feature.
                let c = match input {
                    ActShape::Spatial { c, .. } => c,
                    ActShape::Flat { f } => f,
                };
                layers.push(Layer::Neuron(neuron(&ps, n_neuron, *kind, t, c)?));
            }
            LayerSpec::AvgPool2 => layers.push(Layer::AvgPool2),
            LayerSpec::MaxPool {
                kernel,
                stride,
                pad,
            } => {
                let field = |v: usize| {
                    u8::try_from(v).map_err(|_| unsupported(i, "maxpool", "a field above 255"))
                };
                layers.push(Layer::MaxPool(MaxPool {
                    kernel: field(*kernel)?,
                    stride: field(*stride)?,
                    padding: field(*pad)?,
                }));
            }
            LayerSpec::GlobalAvgPool => layers.push(Layer::GlobalAvgPool),
            LayerSpec::Linear { out_features, bias } => {
                n_fc += 1;
                let f = input_features(input);
                let w = ps.get(&format!("fc{n_fc}.weight"), out_features * f)?;
                let b = if *bias {
                    ps.get(&format!("fc{n_fc}.bias"), *out_features)?.to_vec()
                } else {
                    vec![0.0; *out_features]
                };
                layers.push(Layer::Linear(Linear {
                    out_features: *out_features as u32,
                    in_features: f as u32,
                    weight: Blob(le(&w)?),
                    bias: Blob(le(&b)?),
                    fixed: None,
                }));
            }
            LayerSpec::BinaryLinear { out_features, bias } => {
                n_fc += 1;
                let f = input_features(input);
                let b = if *bias {
                    Some(format!("fc{n_fc}.bias"))
                } else {
                    None
                };
                let (signs, gain, bias) = binary(
                    &ps,
                    &format!("fc{n_fc}.weight"),
                    *out_features,
                    f,
                    b.as_deref(),
                    None,
                )?;
                layers.push(Layer::BinaryLinear(BinaryLinear {
                    out_features: *out_features as u32,
                    in_features: f as u32,
                    signs: Blob(signs),
                    gain: Blob(le(&gain)?),
                    bias: Blob(le(&bias)?),
                    fixed: None,
                }));
            }
        }
        i += 1;
    }
    let meta = ModelMeta {
        time_steps: t as u16,
        input: Shape3 {
            c: cfg.in_channels as u16,
            h: cfg.height as u16,
            w: cfg.width as u16,
        },
        classes: shapes.last().map_or(0, ActShape::per_sample) as u16,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    Ok((meta, layers))
}

fn input_features(s: ActShape) -> usize {
    match s {
        ActShape::Spatial { c, h, w } => c * h * w,
        ActShape::Flat { f } => f,
    }
}

/// Packed signs and the per-output affine of a binary layer: `gain = α·bn_scale`,
/// `bias = bias·bn_scale + bn_shift`, with α exactly as the training forward computes it.
/// A binary layer after folding: packed signs, per-output gain and bias.
type FoldedBinary = (Vec<u8>, Vec<f32>, Vec<f32>);

fn binary(
    ps: &Params<'_>,
    name: &str,
    o: usize,
    k: usize,
    bias: Option<&str>,
    bn: Option<usize>,
) -> Result<FoldedBinary, ExportError> {
    let w = ps.get(name, o * k)?;
    let mut wb = vec![0.0f32; w.len()];
    let mut alpha = vec![0.0f32; o];
    binarize_forward(o, &w, &mut wb, &mut alpha).map_err(|_| ExportError::TensorLength {
        name: name.into(),
        expected: o * k,
        got: w.len(),
    })?;
    let b0: Vec<f32> = match bias {
        Some(n) => ps.get(n, o)?.to_vec(),
        None => vec![0.0; o],
    };
    let (scale, shift) = match bn {
        Some(n) => ps.bn(n, o)?,
        None => (vec![1.0; o], vec![0.0; o]),
    };
    let gain = (0..o)
        .map(|i| (alpha[i] as f64 * scale[i]) as f32)
        .collect();
    let bias = (0..o)
        .map(|i| (b0[i] as f64 * scale[i] + shift[i]) as f32)
        .collect();
    Ok((pack_signs(&w, o, k), gain, bias))
}

fn neuron(
    ps: &Params<'_>,
    n: usize,
    kind: NeuronKind,
    t: usize,
    c: usize,
) -> Result<Neuron<Vec<u8>>, ExportError> {
    let q = ps.get(&format!("neuron{n}.q"), t)?;
    let theta: Vec<f32> = q.iter().map(|&v| sigmoid(v)).collect();
    Ok(match kind {
        NeuronKind::EmPf => {
            let p = ps.get(&format!("neuron{n}.p"), t)?;
            let leak: Vec<f32> = p.iter().map(|&v| sigmoid(v)).collect();
            Neuron {
                mode: NeuronMode::Sequential,
                per_channel: false,
                leak: Blob(le(&leak)?),
                threshold: Blob(le(&theta)?),
                input_gain: Blob(vec![]),
                input_bias: Blob(vec![]),
                fixed: None,
            }
        }
        NeuronKind::Parallel => Neuron {
            mode: NeuronMode::Parallel,
            per_channel: false,
            leak: Blob(vec![]),
            threshold: Blob(le(&theta)?),
            input_gain: Blob(vec![]),
            input_bias: Blob(vec![]),
            fixed: None,
        },
        NeuronKind::MemBn => {
            // Form A (spec §2.7): m̂ = k_t·λ_t·v + k_t·I + c_t, threshold unchanged.
            let p = ps.get(&format!("neuron{n}.p"), t)?;
            let a = ps.get(&format!("neuron{n}.a"), t)?;
            let b = ps.get(&format!("neuron{n}.b"), t)?;
            let g = ps.get(&format!("neuron{n}.bn_weight"), t * c)?;
            let be = ps.get(&format!("neuron{n}.bn_bias"), t * c)?;
            let mu = ps.get(&format!("neuron{n}.bn_running_mean"), t * c)?;
            let var = ps.get(&format!("neuron{n}.bn_running_var"), t * c)?;
            let (mut leak, mut gain, mut bias, mut th) = (vec![], vec![], vec![], vec![]);
            for ti in 0..t {
                let (at, bt, lt) = (
                    sigmoid(a[ti]) as f64,
                    sigmoid(b[ti]) as f64,
                    sigmoid(p[ti]) as f64,
                );
                for ci in 0..c {
                    let j = ti * c + ci;
                    let inv = 1.0 / (var[j] as f64 + BN_EPS as f64).sqrt();
                    let k = at * g[j] as f64 * inv + bt;
                    let cc = at * (be[j] as f64 - g[j] as f64 * mu[j] as f64 * inv);
                    leak.push((k * lt) as f32);
                    gain.push(k as f32);
                    bias.push(cc as f32);
                    th.push(theta[ti]);
                }
            }
            Neuron {
                mode: NeuronMode::Sequential,
                per_channel: true,
                leak: Blob(le(&leak)?),
                threshold: Blob(le(&th)?),
                input_gain: Blob(le(&gain)?),
                input_bias: Blob(le(&bias)?),
                fixed: None,
            }
        }
    })
}

/// Encodes `net` as a float-only model file.
pub fn export_float(net: &Net) -> Result<Vec<u8>, ExportError> {
    let (meta, layers) = export_layers(net)?;
    Ok(encode_model(&meta, &layers)?)
}

/// Host evaluation of one batch: Σ over T of the logits, BN in eval mode (`[B][classes]`).
pub fn host_logits(
    net: &mut Net,
    x: &[f32],
    batch: usize,
) -> Result<Vec<f32>, crate::error::Error> {
    net.reset_state(batch)?;
    let mut sum = vec![0.0f32; batch * net.num_classes()];
    for t in 0..net.time_steps() {
        let logits = net.forward_step(t, x, false, false)?;
        sum.iter_mut().zip(logits).for_each(|(s, l)| *s += l);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{BenchOptions, NetConfig};

    #[test]
    fn non_finite_values_never_reach_a_model_file() {
        let config = NetConfig::mcu(2, &BenchOptions::default());
        // A non-finite tensor is named.
        let mut net = Net::new(config.clone(), 1).unwrap();
        net.param_mut("bn1.running_var").unwrap().value[0] = f32::INFINITY;
        assert!(matches!(
            export_float(&net),
            Err(ExportError::NonFinite(name)) if name == "bn1.running_var"
        ));
        // Finite tensors whose fold overflows f32 (γ near f32::MAX over σ² = 0): refused too.
        let mut net = Net::new(config, 1).unwrap();
        net.param_mut("bn1.weight").unwrap().value[0] = f32::MAX;
        net.param_mut("bn1.running_var").unwrap().value[0] = 0.0;
        assert!(matches!(
            export_float(&net),
            Err(ExportError::NonFiniteFolded)
        ));
    }
}
