//! End-to-end tests of the `edge-infer` binary on a small model built here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use empf_core::format::{
    encode_model, Blob, Conv2d, InputEncoding, Layer, Linear, ModelMeta, Neuron, NeuronMode, Shape3,
};
use empf_core::{Mode, Model};

const BIN: &str = env!("CARGO_BIN_EXE_edge-infer");

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn rand_vals(seed: &mut u32, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            ((*seed as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// conv 1→4 (3×3, pad 1) → neuron → GAP → linear 4→3, T = 2, input 1×8×8; float and quantised.
fn build_models() -> (Vec<u8>, Vec<u8>) {
    let mut seed = 12345u32;
    let cw = f32s(&rand_vals(&mut seed, 4 * 9, 0.8));
    let cb = f32s(&rand_vals(&mut seed, 4, 0.3));
    let lw = f32s(&rand_vals(&mut seed, 3 * 4, 2.0));
    let lb = f32s(&[0.05, -0.02, 0.01]);
    let leak = f32s(&[0.5, 0.5]);
    let thr = f32s(&[0.2, 0.3]);
    let empty: Vec<u8> = Vec::new();
    let meta = ModelMeta {
        time_steps: 2,
        input: Shape3 { c: 1, h: 8, w: 8 },
        classes: 3,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    let layers: Vec<Layer<&[u8]>> = vec![
        Layer::Conv2d(Conv2d {
            out_channels: 4,
            in_channels: 1,
            kernel: 3,
            stride: 1,
            padding: 1,
            weight: Blob(&cw[..]),
            bias: Blob(&cb[..]),
            fixed: None,
        }),
        Layer::Neuron(Neuron {
            mode: NeuronMode::Sequential,
            per_channel: false,
            leak: Blob(&leak[..]),
            threshold: Blob(&thr[..]),
            input_gain: Blob(&empty[..]),
            input_bias: Blob(&empty[..]),
            fixed: None,
        }),
        Layer::GlobalAvgPool,
        Layer::Linear(Linear {
            out_features: 3,
            in_features: 4,
            weight: Blob(&lw[..]),
            bias: Blob(&lb[..]),
            fixed: None,
        }),
    ];
    let float = encode_model(&meta, &layers).unwrap();
    let model = Model::decode(&float).unwrap();
    let samples: Vec<Vec<f32>> = (0..8).map(|_| rand_vals(&mut seed, 64, 2.0)).collect();
    let cal = empf_core::quant::calibrate(&model, samples.iter().map(|s| s.as_slice())).unwrap();
    let quant = empf_core::quant::quantize(&model, &cal).unwrap();
    (float, quant)
}

fn argmax_float(model_bytes: &[u8], x: &[f32]) -> usize {
    let m = Model::decode(model_bytes).unwrap();
    let mut arena = vec![0u32; m.arena_words_for(Mode::Sequential)];
    let mut out = vec![0.0f32; m.classes()];
    m.infer_float(x, Mode::Sequential, &mut arena, &mut out)
        .unwrap();
    empf_core::top_k::<1, f32>(&out)[0].0
}

fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn edge(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn class_of(o: &Output) -> usize {
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        s,
        String::from_utf8_lossy(&o.stderr)
    );
    s.lines()
        .find_map(|l| l.strip_prefix("class: "))
        .unwrap_or_else(|| panic!("no class line in {s}"))
        .trim()
        .parse()
        .unwrap()
}

fn p(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_fails_naming(o: &Output, file: &Path, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what}: expected failure");
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(name),
        "{what}: error does not name {name}: {err}"
    );
}

#[test]
fn run_all_formats_match_float_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (float, quant) = build_models();
    let mf = write(dir.path(), "m.empf", &float);
    let mq = write(dir.path(), "q.empf", &quant);
    let mut seed = 777u32;
    let imgs: Vec<Vec<f32>> = (0..3).map(|_| rand_vals(&mut seed, 64, 2.0)).collect();

    // .f32
    let f = write(dir.path(), "x.f32", &f32s(&imgs[0]));
    let o = edge(&["run", p(&mf), "--input", p(&f)]);
    assert_eq!(class_of(&o), argmax_float(&float, &imgs[0]));

    // .npy (C,H,W) and (N,C,H,W) with --index
    let n1 = write(
        dir.path(),
        "x.npy",
        &npy_bytes("<f4", "(1, 8, 8)", &f32s(&imgs[1])),
    );
    let o = edge(&["run", p(&mf), "--input", p(&n1), "--mode", "parallel"]);
    assert_eq!(class_of(&o), argmax_float(&float, &imgs[1]));
    let all: Vec<f32> = imgs.concat();
    let n3 = write(
        dir.path(),
        "b.npy",
        &npy_bytes("<f4", "(3, 1, 8, 8)", &f32s(&all)),
    );
    for (i, img) in imgs.iter().enumerate() {
        let o = edge(&["run", p(&mf), "--input", p(&n3), "--index", &i.to_string()]);
        assert_eq!(class_of(&o), argmax_float(&float, img));
    }

    // IDX3 u8 images, MNIST normalisation
    let pixels: Vec<Vec<u8>> = (0..2)
        .map(|k| (0..64).map(|i| ((i * 37 + k * 101) % 256) as u8).collect())
        .collect();
    let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 8];
    for px in &pixels {
        idx.extend_from_slice(px);
    }
    let ip = write(dir.path(), "t10k-images-idx3-ubyte", &idx);
    for (i, px) in pixels.iter().enumerate() {
        let x: Vec<f32> = px
            .iter()
            .map(|&v| (v as f32 / 255.0 - 0.1307) / 0.3081)
            .collect();
        let o = edge(&[
            "run",
            p(&mf),
            "--input",
            p(&ip),
            "--index",
            &i.to_string(),
            "--normalize",
            "mnist",
        ]);
        assert_eq!(class_of(&o), argmax_float(&float, &x));
    }

    // integer path on the quantised model
    let o = edge(&["run", p(&mq), "--input", p(&f), "--path", "integer"]);
    let c = class_of(&o);
    assert!(c < 3);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("integer logits") && s.contains("top-3:"), "{s}");
    // integer path on an uncalibrated model fails clearly
    let o = edge(&["run", p(&mf), "--input", p(&f), "--path", "integer"]);
    assert_fails_naming(&o, &mf, "no integer path");

    // Bad inputs.
    let full = npy_bytes("<f4", "(1, 8, 8)", &f32s(&imgs[0]));
    let t = write(dir.path(), "trunc.npy", &full[..full.len() - 7]);
    assert_fails_naming(
        &edge(&["run", p(&mf), "--input", p(&t)]),
        &t,
        "truncated npy",
    );
    let d = write(
        dir.path(),
        "f64.npy",
        &npy_bytes("<f8", "(1, 8, 8)", &[0u8; 512]),
    );
    assert_fails_naming(&edge(&["run", p(&mf), "--input", p(&d)]), &d, "wrong dtype");
    let o = edge(&["run", p(&mf), "--input", p(&n3), "--index", "3"]);
    assert_fails_naming(&o, &n3, "npy index out of range");
    let o = edge(&["run", p(&mf), "--input", p(&ip), "--index", "2"]);
    assert_fails_naming(&o, &ip, "idx index out of range");
    let short = write(dir.path(), "short.f32", &f32s(&imgs[0][..63]));
    assert_fails_naming(
        &edge(&["run", p(&mf), "--input", p(&short)]),
        &short,
        "short f32",
    );
    let mut bad = float.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x5a;
    let mb = write(dir.path(), "corrupt.empf", &bad);
    assert_fails_naming(
        &edge(&["run", p(&mb), "--input", p(&f)]),
        &mb,
        "corrupt model",
    );
}

#[test]
fn bench_prints_latency_and_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (_, quant) = build_models();
    let mq = write(dir.path(), "q.empf", &quant);
    let o = edge(&["bench", p(&mq), "--seconds", "0.2"]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{s}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(s.contains("p50") && s.contains("p99"), "{s}");
    assert!(s.contains("images/s"), "{s}");
    assert!(
        s.contains("integer") && s.contains("ratio integer/float"),
        "{s}"
    );
    // With ONNX Runtime available (feature `ort` and ORT_DYLIB_PATH) the ORT rate and its ratio
    // are printed; otherwise the reason it was skipped.
    assert!(
        s.contains("ort: skipped:") || s.contains("ratio ort/native-float"),
        "{s}"
    );
}

#[test]
fn to_onnx_writes_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (float, _) = build_models();
    let mf = write(dir.path(), "m.empf", &float);
    let out = dir.path().join("m.onnx");
    let o = edge(&["to-onnx", p(&mf), "-o", p(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
}

/// `eval` over an idx test set in the real format: native float accuracy equals what the test
/// computes with empf-core directly; ORT reports either its accuracy or why it was skipped.
#[test]
fn eval_reports_accuracy_per_engine() {
    let (_, quant) = build_models();
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "m.empf", &quant);
    let n = 12usize;
    let mut seed = 7u32;
    let pixels: Vec<u8> = rand_vals(&mut seed, n * 64, 1.0)
        .iter()
        .map(|v| ((v.abs() * 255.0) as u32).min(255) as u8)
        .collect();
    // Labels = empf-core's own float predictions for half the images, wrong for the rest.
    let (mean, std) = (0.2860f32, 0.3530f32);
    let mut labels = Vec::new();
    for i in 0..n {
        let x: Vec<f32> = pixels[i * 64..(i + 1) * 64]
            .iter()
            .map(|&p| (p as f32 / 255.0 - mean) / std)
            .collect();
        let c = argmax_float(&quant, &x);
        labels.push(if i % 2 == 0 {
            c as u8
        } else {
            ((c + 1) % 3) as u8
        });
    }
    let mut img = vec![0, 0, 8, 3];
    for d in [n as u32, 8, 8] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend_from_slice(&pixels);
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    lab.extend_from_slice(&labels);
    let images = write(dir.path(), "t10k-images-idx3-ubyte", &img);
    let labels_p = write(dir.path(), "t10k-labels-idx1-ubyte", &lab);
    let o = edge(&[
        "eval",
        p(&model),
        "--images",
        p(&images),
        "--labels",
        p(&labels_p),
    ]);
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{s}");
    assert!(s.contains("native float:   50.00%"), "{s}");
    assert!(s.contains("native integer:"), "{s}");
    assert!(
        s.contains("ort (cpu):") || s.contains("ort: skipped:"),
        "{s}"
    );
    // A truncated label file is named.
    let bad = write(dir.path(), "bad-labels-idx1-ubyte", &lab[..lab.len() - 3]);
    let o = edge(&[
        "eval",
        p(&model),
        "--images",
        p(&images),
        "--labels",
        p(&bad),
    ]);
    assert_fails_naming(&o, &bad, "");
}
