//! Test kit: random small EM-PF networks described with dense, unpacked weights, their conversion
//! to the wire format, and a naive f64 reference forward pass written straight from the spec.
#![allow(dead_code)]
// The reference is written as plain index loops on purpose: closest to the equations.
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::type_complexity
)]

use empf_core::bits::pack_signs;
use empf_core::format::*;

/// Tiny deterministic RNG (SplitMix64) so cases are reproducible from one seed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

/// A layer with dense parameters (binary weights as ±1.0 floats).
#[derive(Clone, Debug)]
pub enum Dense {
    Conv {
        binary: bool,
        out: usize,
        inp: usize,
        k: usize,
        stride: usize,
        pad: usize,
        w: Vec<f32>,
        gain: Vec<f32>,
        bias: Vec<f32>,
    },
    Linear {
        binary: bool,
        out: usize,
        inp: usize,
        w: Vec<f32>,
        gain: Vec<f32>,
        bias: Vec<f32>,
    },
    Neuron {
        parallel: bool,
        per_channel: bool,
        leak: Vec<f32>,
        th: Vec<f32>,
        gain: Vec<f32>,
        bias: Vec<f32>,
    },
    AvgPool2,
    MaxPool {
        k: usize,
        stride: usize,
        pad: usize,
    },
    Gap,
    Flatten,
    Save(u8),
    Swap(u8),
    Add(u8),
    Seca {
        add_slot: Option<u8>,
        w: [f32; 5],
        b: f32,
    },
}

#[derive(Clone, Debug)]
pub struct DenseModel {
    pub t: usize,
    pub input: (usize, usize, usize),
    pub classes: usize,
    pub layers: Vec<Dense>,
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl DenseModel {
    /// Wire layers (float only) for the encoder.
    pub fn wire(&self) -> (ModelMeta, Vec<Layer<Vec<u8>>>) {
        let meta = ModelMeta {
            time_steps: self.t as u16,
            input: Shape3 {
                c: self.input.0 as u16,
                h: self.input.1 as u16,
                w: self.input.2 as u16,
            },
            classes: self.classes as u16,
            encoding: InputEncoding::Direct,
            fixed: None,
        };
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Dense::Conv {
                    binary: false,
                    out,
                    inp,
                    k,
                    stride,
                    pad,
                    w,
                    bias,
                    ..
                } => Layer::Conv2d(Conv2d {
                    out_channels: *out as u16,
                    in_channels: *inp as u16,
                    kernel: *k as u8,
                    stride: *stride as u8,
                    padding: *pad as u8,
                    weight: Blob(le(w)),
                    bias: Blob(le(bias)),
                    fixed: None,
                }),
                Dense::Conv {
                    binary: true,
                    out,
                    inp,
                    k,
                    stride,
                    pad,
                    w,
                    gain,
                    bias,
                } => Layer::BinaryConv2d(BinaryConv2d {
                    out_channels: *out as u16,
                    in_channels: *inp as u16,
                    kernel: *k as u8,
                    stride: *stride as u8,
                    padding: *pad as u8,
                    signs: Blob(pack_signs(w, *out, inp * k * k)),
                    gain: Blob(le(gain)),
                    bias: Blob(le(bias)),
                    fixed: None,
                }),
                Dense::Linear {
                    binary: false,
                    out,
                    inp,
                    w,
                    bias,
                    ..
                } => Layer::Linear(Linear {
                    out_features: *out as u32,
                    in_features: *inp as u32,
                    weight: Blob(le(w)),
                    bias: Blob(le(bias)),
                    fixed: None,
                }),
                Dense::Linear {
                    binary: true,
                    out,
                    inp,
                    w,
                    gain,
                    bias,
                } => Layer::BinaryLinear(BinaryLinear {
                    out_features: *out as u32,
                    in_features: *inp as u32,
                    signs: Blob(pack_signs(w, *out, *inp)),
                    gain: Blob(le(gain)),
                    bias: Blob(le(bias)),
                    fixed: None,
                }),
                Dense::Neuron {
                    parallel,
                    per_channel,
                    leak,
                    th,
                    gain,
                    bias,
                } => Layer::Neuron(Neuron {
                    mode: if *parallel {
                        NeuronMode::Parallel
                    } else {
                        NeuronMode::Sequential
                    },
                    per_channel: *per_channel,
                    leak: Blob(le(leak)),
                    threshold: Blob(le(th)),
                    input_gain: Blob(le(gain)),
                    input_bias: Blob(le(bias)),
                    fixed: None,
                }),
                Dense::AvgPool2 => Layer::AvgPool2,
                Dense::MaxPool { k, stride, pad } => Layer::MaxPool(MaxPool {
                    kernel: *k as u8,
                    stride: *stride as u8,
                    padding: *pad as u8,
                }),
                Dense::Gap => Layer::GlobalAvgPool,
                Dense::Flatten => Layer::Flatten,
                Dense::Save(s) => Layer::Save { slot: *s },
                Dense::Swap(s) => Layer::Swap { slot: *s },
                Dense::Add(s) => Layer::Add {
                    slot: *s,
                    fixed: None,
                },
                Dense::Seca { add_slot, w, b } => Layer::Seca(Seca {
                    add_slot: *add_slot,
                    weight: Blob(le(w)),
                    bias: *b,
                    fixed: None,
                }),
            })
            .collect();
        (meta, layers)
    }

    pub fn encode(&self) -> Vec<u8> {
        let (meta, layers) = self.wire();
        encode_model(&meta, &layers).expect("generated model encodes")
    }

    /// Whether every neuron is parallel.
    pub fn all_parallel(&self) -> bool {
        self.layers.iter().all(|l| {
            !matches!(
                l,
                Dense::Neuron {
                    parallel: false,
                    ..
                }
            )
        })
    }
}

/// A random valid architecture. Shapes stay small so thousands of cases run in seconds.
pub fn random_model(rng: &mut Rng, force_parallel: bool) -> DenseModel {
    let t = 1 + rng.below(4);
    let (mut c, mut h, mut w) = (1 + rng.below(3), 4 + rng.below(6), 4 + rng.below(6));
    let input = (c, h, w);
    let mut layers = Vec::new();
    let conv = |rng: &mut Rng,
                layers: &mut Vec<Dense>,
                c: &mut usize,
                h: &mut usize,
                w: &mut usize,
                out: usize,
                k: usize,
                stride: usize,
                pad: usize,
                binary: bool| {
        let n = out * *c * k * k;
        let wts: Vec<f32> = if binary {
            (0..n)
                .map(|_| if rng.coin() { 1.0 } else { -1.0 })
                .collect()
        } else {
            rng.vec(n, -0.6, 0.6)
        };
        let gain = if binary {
            rng.vec(out, 0.05, 0.4)
        } else {
            vec![1.0; out]
        };
        layers.push(Dense::Conv {
            binary,
            out,
            inp: *c,
            k,
            stride,
            pad,
            w: wts,
            gain,
            bias: rng.vec(out, -0.3, 0.5),
        });
        *h = (*h + 2 * pad - k) / stride + 1;
        *w = (*w + 2 * pad - k) / stride + 1;
        *c = out;
    };
    let neuron = |rng: &mut Rng, layers: &mut Vec<Dense>, c: usize| {
        let parallel = force_parallel || rng.below(3) == 0;
        let per_channel = rng.coin();
        let n = t * if per_channel { c } else { 1 };
        let membn = rng.coin();
        layers.push(Dense::Neuron {
            parallel,
            per_channel,
            leak: if parallel {
                vec![]
            } else {
                rng.vec(n, 0.1, 1.0)
            },
            th: rng.vec(n, 0.05, 0.8),
            gain: if membn { rng.vec(n, 0.5, 1.5) } else { vec![] },
            bias: if membn { rng.vec(n, -0.2, 0.2) } else { vec![] },
        });
    };
    // Stem: full-precision conv, then a neuron.
    let out = 2 + rng.below(4);
    conv(
        rng,
        &mut layers,
        &mut c,
        &mut h,
        &mut w,
        out,
        3,
        1,
        1,
        false,
    );
    // Max pools of 2–3, stride 1–2, padding 0–1, where the window fits.
    let maxpool = |rng: &mut Rng, layers: &mut Vec<Dense>, h: &mut usize, w: &mut usize| {
        let k = 2 + rng.below(2);
        let stride = 1 + rng.below(2);
        let pad = rng.below(2);
        if *h + 2 * pad >= k && *w + 2 * pad >= k {
            layers.push(Dense::MaxPool { k, stride, pad });
            *h = (*h + 2 * pad - k) / stride + 1;
            *w = (*w + 2 * pad - k) / stride + 1;
        }
    };
    // Max pools are drawn from their own stream: a model without one is the same model (same
    // weights) as before max pools existed, so the stated fixed-vs-float bound keeps its cases.
    let mut side = Rng(rng.0 ^ 0x4D41_5850_4F4F_4C53);
    // On the stem's currents (time-invariant, as in ResNet-34's stem), sometimes.
    if side.below(3) == 0 {
        maxpool(&mut side, &mut layers, &mut h, &mut w);
    }
    neuron(rng, &mut layers, c);
    let blocks = 1 + rng.below(3);
    for _ in 0..blocks {
        match rng.below(6) {
            0 => {
                let (k, stride) = if rng.coin() {
                    (3, 1 + rng.below(2))
                } else {
                    (1, 1)
                };
                let pad = if k == 3 && rng.coin() { 1 } else { 0 };
                if h + 2 * pad >= k && w + 2 * pad >= k {
                    let out = 1 + rng.below(5);
                    conv(
                        rng,
                        &mut layers,
                        &mut c,
                        &mut h,
                        &mut w,
                        out,
                        k,
                        stride,
                        pad,
                        true,
                    );
                    neuron(rng, &mut layers, c);
                }
            }
            1 if h >= 2 && w >= 2 => {
                layers.push(Dense::AvgPool2);
                h /= 2;
                w /= 2;
            }
            2 => {
                // identity residual with a SECA_I or plain add
                let slot = rng.below(4) as u8;
                layers.push(Dense::Save(slot));
                let cc = c;
                conv(rng, &mut layers, &mut c, &mut h, &mut w, cc, 3, 1, 1, true);
                if rng.coin() {
                    layers.push(Dense::Seca {
                        add_slot: None,
                        w: [
                            rng.range(-1.0, 1.0),
                            rng.range(-1.0, 1.0),
                            rng.range(-1.0, 1.0),
                            rng.range(-1.0, 1.0),
                            rng.range(-1.0, 1.0),
                        ],
                        b: rng.range(-0.5, 0.5),
                    });
                }
                layers.push(Dense::Add(slot));
                neuron(rng, &mut layers, c);
            }
            3 if h >= 3 && w >= 3 => {
                // downsampling residual: branch bconv3x3/s2, shortcut bconv1x1/s2 on the saved input
                let slot = rng.below(4) as u8;
                layers.push(Dense::Save(slot));
                let out = 1 + rng.below(5);
                let (c0, h0, w0) = (c, h, w);
                conv(rng, &mut layers, &mut c, &mut h, &mut w, out, 3, 2, 1, true);
                layers.push(Dense::Swap(slot));
                let (mut c1, mut h1, mut w1) = (c0, h0, w0);
                conv(
                    rng,
                    &mut layers,
                    &mut c1,
                    &mut h1,
                    &mut w1,
                    out,
                    1,
                    2,
                    0,
                    true,
                );
                assert_eq!((c1, h1, w1), (c, h, w));
                layers.push(Dense::Add(slot));
                neuron(rng, &mut layers, c);
            }
            4 => {
                // SECA_II: attention on (pre-synaptic current + post-synaptic current)
                let slot = rng.below(4) as u8;
                layers.push(Dense::Save(slot));
                let cc = c;
                conv(rng, &mut layers, &mut c, &mut h, &mut w, cc, 3, 1, 1, true);
                layers.push(Dense::Seca {
                    add_slot: Some(slot),
                    w: [
                        rng.range(-1.0, 1.0),
                        rng.range(-1.0, 1.0),
                        rng.range(-1.0, 1.0),
                        rng.range(-1.0, 1.0),
                        rng.range(-1.0, 1.0),
                    ],
                    b: rng.range(-0.5, 0.5),
                });
                neuron(rng, &mut layers, c);
            }
            _ => {
                let out = 1 + rng.below(5);
                conv(rng, &mut layers, &mut c, &mut h, &mut w, out, 3, 1, 1, true);
                // On the currents of a binary conv, before its neuron.
                if side.below(3) == 0 {
                    maxpool(&mut side, &mut layers, &mut h, &mut w);
                }
                neuron(rng, &mut layers, c);
            }
        }
        // On spikes (or pooled spikes), after a block.
        if side.below(4) == 0 {
            maxpool(&mut side, &mut layers, &mut h, &mut w);
        }
    }
    let classes = 2 + rng.below(5);
    let inp = if rng.coin() {
        layers.push(Dense::Gap);
        c
    } else {
        layers.push(Dense::Flatten);
        c * h * w
    };
    if rng.coin() {
        let inp2 = 3 + rng.below(6);
        let wts = (0..inp2 * inp)
            .map(|_| if rng.coin() { 1.0 } else { -1.0 })
            .collect();
        layers.push(Dense::Linear {
            binary: true,
            out: inp2,
            inp,
            w: wts,
            gain: rng.vec(inp2, 0.05, 0.3),
            bias: rng.vec(inp2, -0.2, 0.2),
        });
        layers.push(Dense::Neuron {
            parallel: force_parallel,
            per_channel: false,
            leak: if force_parallel { vec![] } else { vec![0.5; t] },
            th: vec![0.1; t],
            gain: vec![],
            bias: vec![],
        });
        let w2 = rng.vec(classes * inp2, -0.8, 0.8);
        layers.push(Dense::Linear {
            binary: false,
            out: classes,
            inp: inp2,
            w: w2,
            gain: vec![1.0; classes],
            bias: rng.vec(classes, -0.2, 0.2),
        });
    } else {
        let w2 = rng.vec(classes * inp, -0.8, 0.8);
        layers.push(Dense::Linear {
            binary: false,
            out: classes,
            inp,
            w: w2,
            gain: vec![1.0; classes],
            bias: rng.vec(classes, -0.2, 0.2),
        });
    }
    DenseModel {
        t,
        input,
        classes,
        layers,
    }
}

/// Naive f64 reference: the spec's equations with dense weights, step by step.
pub fn reference(m: &DenseModel, x: &[f32]) -> Vec<f64> {
    let mut states: Vec<Vec<f64>> = vec![Vec::new(); m.layers.len()];
    let mut out = vec![0.0f64; m.classes];
    for t in 0..m.t {
        let (mut c, mut h, mut w) = m.input;
        let mut a: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut slots: Vec<(Vec<f64>, (usize, usize, usize))> = vec![(vec![], (0, 0, 0)); 4];
        for (li, l) in m.layers.iter().enumerate() {
            match l {
                Dense::Conv {
                    out,
                    inp,
                    k,
                    stride,
                    pad,
                    w: wt,
                    gain,
                    bias,
                    binary,
                } => {
                    let oh = (h + 2 * pad - k) / stride + 1;
                    let ow = (w + 2 * pad - k) / stride + 1;
                    let mut y = vec![0.0; out * oh * ow];
                    for o in 0..*out {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut acc = 0.0f64;
                                for ci in 0..*inp {
                                    for ky in 0..*k {
                                        for kx in 0..*k {
                                            let iy = (oy * stride + ky) as isize - *pad as isize;
                                            let ix = (ox * stride + kx) as isize - *pad as isize;
                                            if iy >= 0
                                                && ix >= 0
                                                && (iy as usize) < h
                                                && (ix as usize) < w
                                            {
                                                acc += wt[((o * inp + ci) * k + ky) * k + kx]
                                                    as f64
                                                    * a[(ci * h + iy as usize) * w + ix as usize];
                                            }
                                        }
                                    }
                                }
                                let g = if *binary { gain[o] as f64 } else { 1.0 };
                                y[(o * oh + oy) * ow + ox] = g * acc + bias[o] as f64;
                            }
                        }
                    }
                    a = y;
                    c = *out;
                    h = oh;
                    w = ow;
                }
                Dense::Linear {
                    out,
                    inp,
                    w: wt,
                    gain,
                    bias,
                    binary,
                } => {
                    let mut y = vec![0.0; *out];
                    for o in 0..*out {
                        let acc: f64 = (0..*inp).map(|i| wt[o * inp + i] as f64 * a[i]).sum();
                        let g = if *binary { gain[o] as f64 } else { 1.0 };
                        y[o] = g * acc + bias[o] as f64;
                    }
                    a = y;
                    c = *out;
                    h = 1;
                    w = 1;
                }
                Dense::Neuron {
                    parallel,
                    per_channel,
                    leak,
                    th,
                    gain,
                    bias,
                } => {
                    let st = &mut states[li];
                    if st.is_empty() {
                        st.resize(a.len(), 0.0);
                    }
                    for ch in 0..c {
                        let i = if *per_channel { t * c + ch } else { t };
                        let g = gain.get(i).copied().unwrap_or(1.0) as f64;
                        let b = bias.get(i).copied().unwrap_or(0.0) as f64;
                        for p in 0..h * w {
                            let idx = ch * h * w + p;
                            let cur = g * a[idx] + b;
                            let m = if *parallel {
                                cur
                            } else {
                                leak[i] as f64 * st[idx] + cur
                            };
                            let s = (m - th[i] as f64).max(0.0);
                            st[idx] = m - s;
                            a[idx] = s;
                        }
                    }
                }
                Dense::AvgPool2 => {
                    let (oh, ow) = (h / 2, w / 2);
                    let mut y = vec![0.0; c * oh * ow];
                    for ch in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let at = |yy: usize, xx: usize| a[(ch * h + yy) * w + xx];
                                y[(ch * oh + oy) * ow + ox] = (at(2 * oy, 2 * ox)
                                    + at(2 * oy, 2 * ox + 1)
                                    + at(2 * oy + 1, 2 * ox)
                                    + at(2 * oy + 1, 2 * ox + 1))
                                    / 4.0;
                            }
                        }
                    }
                    a = y;
                    h = oh;
                    w = ow;
                }
                Dense::MaxPool { k, stride, pad } => {
                    let oh = (h + 2 * pad - k) / stride + 1;
                    let ow = (w + 2 * pad - k) / stride + 1;
                    let mut y = vec![0.0; c * oh * ow];
                    for ch in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                // Padding is −∞: only taps inside the input compete.
                                let mut best = f64::NEG_INFINITY;
                                for ky in 0..*k {
                                    for kx in 0..*k {
                                        let iy = (oy * stride + ky) as isize - *pad as isize;
                                        let ix = (ox * stride + kx) as isize - *pad as isize;
                                        if iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < h
                                            && (ix as usize) < w
                                        {
                                            best = best
                                                .max(a[(ch * h + iy as usize) * w + ix as usize]);
                                        }
                                    }
                                }
                                y[(ch * oh + oy) * ow + ox] = best;
                            }
                        }
                    }
                    a = y;
                    h = oh;
                    w = ow;
                }
                Dense::Gap => {
                    a = (0..c)
                        .map(|ch| {
                            a[ch * h * w..(ch + 1) * h * w].iter().sum::<f64>() / (h * w) as f64
                        })
                        .collect();
                    h = 1;
                    w = 1;
                }
                Dense::Flatten => {
                    c *= h * w;
                    h = 1;
                    w = 1;
                }
                Dense::Save(s) => slots[*s as usize] = (a.clone(), (c, h, w)),
                Dense::Swap(s) => {
                    let (sa, sshape) =
                        std::mem::replace(&mut slots[*s as usize], (a.clone(), (c, h, w)));
                    a = sa;
                    (c, h, w) = sshape;
                }
                Dense::Add(s) => {
                    for (v, sv) in a.iter_mut().zip(&slots[*s as usize].0) {
                        *v += sv;
                    }
                }
                Dense::Seca {
                    add_slot,
                    w: taps,
                    b,
                } => {
                    if let Some(s) = add_slot {
                        for (v, sv) in a.iter_mut().zip(&slots[*s as usize].0) {
                            *v += sv;
                        }
                    }
                    let z: Vec<f64> = (0..c)
                        .map(|ch| {
                            a[ch * h * w..(ch + 1) * h * w].iter().sum::<f64>() / (h * w) as f64
                        })
                        .collect();
                    for ch in 0..c {
                        let mut y = *b as f64;
                        for j in 0..5 {
                            let src = ch as isize + j as isize - 2;
                            if src >= 0 && (src as usize) < c {
                                y += taps[j] as f64 * z[src as usize];
                            }
                        }
                        let att = 1.0 / (1.0 + (-y).exp());
                        a[ch * h * w..(ch + 1) * h * w]
                            .iter_mut()
                            .for_each(|v| *v *= att);
                    }
                }
            }
        }
        for (o, v) in out.iter_mut().zip(&a) {
            *o += v;
        }
    }
    out
}

/// A random input in `[-1, 2)`.
pub fn random_input(rng: &mut Rng, m: &DenseModel) -> Vec<f32> {
    rng.vec(m.input.0 * m.input.1 * m.input.2, -1.0, 2.0)
}
