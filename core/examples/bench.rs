//! `cargo run --release -p empf-core --features std --example bench`
//!
//! Images/s of the float and integer paths on a fixed synthetic bench network (the trainer's
//! Fashion-MNIST net: 1×28×28, FP conv 32, binary convs 64/128/128, T = 4), against the same
//! network with its binary layers unpacked to dense f32 weights (`gain·sign`), run by the same
//! engine. All numbers come from one run, so the ratios compare like with like.

use empf_core::bits::pack_signs;
use empf_core::format::*;
use empf_core::quant::{calibrate, quantize};
use empf_core::{Mode, Model};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn v(&mut self, n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * s).collect()
    }
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// (meta, layers) of the bench net; `dense` unpacks the binary convs to f32.
fn bench_net(dense: bool) -> (ModelMeta, Vec<Layer<Vec<u8>>>) {
    let t = 4;
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let neuron = |rng: &mut Rng| {
        Layer::Neuron(Neuron {
            mode: NeuronMode::Sequential,
            per_channel: false,
            leak: Blob(le(&vec![0.5; t])),
            threshold: Blob(le(&(0..t).map(|_| 0.3 + 0.1 * rng.f()).collect::<Vec<_>>())),
            input_gain: Blob(vec![]),
            input_bias: Blob(vec![]),
            fixed: None,
        })
    };
    let mut layers = vec![
        Layer::Conv2d(Conv2d {
            out_channels: 32,
            in_channels: 1,
            kernel: 3,
            stride: 1,
            padding: 1,
            weight: Blob(le(&rng.v(288, 0.5))),
            bias: Blob(le(&rng.v(32, 0.2))),
            fixed: None,
        }),
        neuron(&mut rng),
    ];
    for (i, (cin, cout)) in [(32usize, 64usize), (64, 128), (128, 128)]
        .into_iter()
        .enumerate()
    {
        let k = cin * 9;
        let w = rng.v(cout * k, 1.0);
        let gain: Vec<f32> = (0..cout).map(|_| 0.6 / (k as f32).sqrt()).collect();
        let bias = rng.v(cout, 0.1);
        layers.push(if dense {
            let wd: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(j, v)| if *v >= 0.0 { gain[j / k] } else { -gain[j / k] })
                .collect();
            Layer::Conv2d(Conv2d {
                out_channels: cout as u16,
                in_channels: cin as u16,
                kernel: 3,
                stride: 1,
                padding: 1,
                weight: Blob(le(&wd)),
                bias: Blob(le(&bias)),
                fixed: None,
            })
        } else {
            Layer::BinaryConv2d(BinaryConv2d {
                out_channels: cout as u16,
                in_channels: cin as u16,
                kernel: 3,
                stride: 1,
                padding: 1,
                signs: Blob(pack_signs(&w, cout, k)),
                gain: Blob(le(&gain)),
                bias: Blob(le(&bias)),
                fixed: None,
            })
        });
        layers.push(neuron(&mut rng));
        if i < 2 {
            layers.push(Layer::AvgPool2);
        }
    }
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Linear(Linear {
        out_features: 10,
        in_features: 128,
        weight: Blob(le(&rng.v(1280, 0.3))),
        bias: Blob(le(&rng.v(10, 0.1))),
        fixed: None,
    }));
    let meta = ModelMeta {
        time_steps: t as u16,
        input: Shape3 { c: 1, h: 28, w: 28 },
        classes: 10,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    (meta, layers)
}

/// Images per second of `f` over at least `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("EMPF_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(secs);
    let (meta, packed) = bench_net(false);
    let packed_file = encode_model(&meta, &packed).unwrap();
    let (meta_d, dense) = bench_net(true);
    let dense_file = encode_model(&meta_d, &dense).unwrap();
    let pm = Model::decode(&packed_file).unwrap();
    let dm = Model::decode(&dense_file).unwrap();
    let mut rng = Rng(7);
    let inputs: Vec<Vec<f32>> = (0..8).map(|_| rng.v(784, 1.5)).collect();
    let cal = calibrate(&pm, inputs.iter().map(|v| v.as_slice())).unwrap();
    let fixed_file = quantize(&pm, &cal).unwrap();
    let fm = Model::decode(&fixed_file).unwrap();
    let x = &inputs[0];
    let mut xq = vec![0i8; 784];
    fm.quantize_input(x, &mut xq).unwrap();

    let mut arena = vec![0u32; fm.arena_bytes() / 4 + dm.arena_bytes() / 4];
    let mut out = [0f32; 10];
    let mut qout = [0i32; 10];
    println!("bench net (1x28x28, conv32 + bconv 64/128/128, T=4), one image per call, 1 thread");
    println!(
        "file bytes: packed {} (float) / {} (float+integer), dense f32 {}",
        packed_file.len(),
        fixed_file.len(),
        dense_file.len()
    );
    println!(
        "arena bytes: sequential {}, parallel {}",
        4 * fm.arena_words_for(Mode::Sequential),
        4 * fm.arena_words_for(Mode::Parallel)
    );
    let mut results = Vec::new();
    for mode in [Mode::Sequential, Mode::Parallel] {
        let dense = rate(budget, || {
            dm.infer_float(x, mode, &mut arena, &mut out).unwrap()
        });
        let float = rate(budget, || {
            pm.infer_float(x, mode, &mut arena, &mut out).unwrap()
        });
        let fixed = rate(budget, || {
            fm.infer_fixed(&xq, mode, &mut arena, &mut qout).unwrap()
        });
        println!(
            "{mode:?}: dense f32 {dense:8.1} img/s | packed float {float:8.1} img/s ({:.2}x dense) | packed integer {fixed:8.1} img/s ({:.2}x dense)",
            float / dense,
            fixed / dense
        );
        results.push((dense, float, fixed));
    }
}
