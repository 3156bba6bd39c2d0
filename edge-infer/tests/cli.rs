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

/// An idx3 file of `n` 8×8 images and its idx1 labels.
fn idx_pair(n: usize, labels: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut img = vec![0, 0, 8, 3];
    for d in [n as u32, 8, 8] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend((0..n * 64).map(|i| (i * 31 % 256) as u8));
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    lab.extend_from_slice(labels);
    (img, lab)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary under a 384 MiB address-space limit (`ulimit -v`), so reading a large input
/// whole makes it fail.
fn edge_limited(args: &[&str]) -> Output {
    let mut cmd = format!("ulimit -v {}; exec '{BIN}'", 384 * 1024);
    for a in args {
        cmd.push_str(&format!(" '{a}'"));
    }
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

/// Labels outside the model's classes and `--limit 0` are errors, not "0.00 %" / "NaN %".
#[test]
fn eval_rejects_out_of_range_labels_and_limit_zero() {
    let (_, quant) = build_models();
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "m.empf", &quant);
    let (img, lab) = idx_pair(4, &[0, 1, 7, 2]);
    let images = write(dir.path(), "i-idx3-ubyte", &img);
    let labels = write(dir.path(), "l-idx1-ubyte", &lab);
    let o = edge(&[
        "eval",
        p(&model),
        "--images",
        p(&images),
        "--labels",
        p(&labels),
    ]);
    assert_fails_naming(&o, &labels, "label 7 of 3 classes");
    assert!(stderr(&o).contains("label 7 of image 2"), "{}", stderr(&o));
    let (img, lab) = idx_pair(4, &[0, 1, 2, 2]);
    let images = write(dir.path(), "i2-idx3-ubyte", &img);
    let labels = write(dir.path(), "l2-idx1-ubyte", &lab);
    let o = edge(&[
        "eval",
        p(&model),
        "--images",
        p(&images),
        "--labels",
        p(&labels),
        "--limit",
        "0",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--limit 0"),
        "{}",
        stderr(&o)
    );
    // --threads: 0 and more than the machine has are refused; 1 and 2 give the same results.
    for t in ["0", "100000"] {
        let o = edge(&[
            "eval",
            p(&model),
            "--images",
            p(&images),
            "--labels",
            p(&labels),
            "--threads",
            t,
        ]);
        assert!(
            !o.status.success() && stderr(&o).contains("--threads"),
            "{}",
            stderr(&o)
        );
    }
    let accuracy = |t: &str| {
        let o = edge(&[
            "eval",
            p(&model),
            "--images",
            p(&images),
            "--labels",
            p(&labels),
            "--threads",
            t,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("native"))
            .map(|l| l.split("  (").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    if empf_edge_infer::available_threads() >= 2 {
        assert_eq!(accuracy("1"), accuracy("2"));
    }
}

/// A gzip "bomb" (a small file announcing a few images, then 256 MiB of zeros) is refused after
/// the announced bytes without decompressing it into memory; corrupt gzip data is named as such.
#[test]
fn eval_gzip_bomb_and_corrupt_gzip() {
    let (_, quant) = build_models();
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "m.empf", &quant);
    let (img, lab) = idx_pair(4, &[0, 1, 2, 2]);
    let labels = write(dir.path(), "l-idx1-ubyte", &lab);
    let mut bomb = img.clone();
    bomb.resize(img.len() + (256 << 20), 0);
    let bomb_gz = write(dir.path(), "bomb-idx3-ubyte.gz", &gzip(&bomb));
    drop(bomb);
    let o = edge_limited(&[
        "eval",
        p(&model),
        "--images",
        p(&bomb_gz),
        "--labels",
        p(&labels),
    ]);
    assert_fails_naming(&o, &bomb_gz, "gzip bomb");
    assert!(
        stderr(&o).contains("trailing data after the 256 bytes"),
        "{}",
        stderr(&o)
    );
    // One flipped byte in the deflate data.
    let mut gz = gzip(&img);
    let mid = gz.len() / 2;
    gz[mid] ^= 0x55;
    let bad = write(dir.path(), "bad-idx3-ubyte.gz", &gz);
    let o = edge(&[
        "eval",
        p(&model),
        "--images",
        p(&bad),
        "--labels",
        p(&labels),
    ]);
    assert_fails_naming(&o, &bad, "corrupt gzip");
    assert!(stderr(&o).contains("corrupt gzip data"), "{}", stderr(&o));
    // The intact file still evaluates.
    let good = write(dir.path(), "good-idx3-ubyte.gz", &gzip(&img));
    let o = edge(&[
        "eval",
        p(&model),
        "--images",
        p(&good),
        "--labels",
        p(&labels),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A model file far larger than its header announces is refused before its body is read.
#[test]
fn run_refuses_a_model_longer_than_its_header_says() {
    let (float, _) = build_models();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "sparse.empf", &float);
    // 2 GiB, sparse: the header's body length no longer matches.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let x = write(dir.path(), "x.f32", &f32s(&[0.5; 64]));
    let o = edge_limited(&["run", p(&path), "--input", p(&x)]);
    assert_fails_naming(&o, &path, "sparse model");
    assert!(
        stderr(&o).contains("the header announces a"),
        "{}",
        stderr(&o)
    );
}

/// A parallel neuron → GAP → linear model of `t` steps on a 1×`side`×`side` input.
fn wide_model(t: usize, side: u16) -> Vec<u8> {
    let meta = ModelMeta {
        time_steps: t as u16,
        input: Shape3 {
            c: 1,
            h: side,
            w: side,
        },
        classes: 2,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    let thr = f32s(&vec![0.5; t]);
    let empty: Vec<u8> = Vec::new();
    let lw = f32s(&[1.0, -1.0]);
    let lb = f32s(&[0.0, 0.0]);
    let layers: Vec<Layer<&[u8]>> = vec![
        Layer::Neuron(Neuron {
            mode: NeuronMode::Parallel,
            per_channel: false,
            leak: Blob(&empty[..]),
            threshold: Blob(&thr[..]),
            input_gain: Blob(&empty[..]),
            input_bias: Blob(&empty[..]),
            fixed: None,
        }),
        Layer::GlobalAvgPool,
        Layer::Linear(Linear {
            out_features: 2,
            in_features: 1,
            weight: Blob(&lw[..]),
            bias: Blob(&lb[..]),
            fixed: None,
        }),
    ];
    encode_model(&meta, &layers).unwrap()
}

/// A 2 KB model whose parallel-mode arena is gigabytes (T = 500, 1×1024×1024 input) is refused
/// with the cap named, before anything is allocated; `--max-arena-mib` raises the cap.
#[test]
fn run_caps_the_arena() {
    let bytes = wide_model(500, 1024);
    assert!(bytes.len() < 4096);
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "big-arena.empf", &bytes);
    let x = write(dir.path(), "x.f32", &f32s(&vec![0.25; 1 << 20]));
    let o = edge_limited(&["run", p(&m), "--input", p(&x), "--mode", "parallel"]);
    assert_fails_naming(&o, &m, "arena cap");
    assert!(
        stderr(&o).contains("--max-arena-mib 1024"),
        "{}",
        stderr(&o)
    );
    // T = 500 on 64×64: the parallel arena is about 16 MiB: refused under 8, run under 32.
    let m = write(dir.path(), "mid-arena.empf", &wide_model(500, 64));
    let x = write(dir.path(), "x64.f32", &f32s(&vec![0.25; 64 * 64]));
    let args = |cap: &'static str| {
        [
            "run",
            p(&m),
            "--input",
            p(&x),
            "--mode",
            "parallel",
            "--max-arena-mib",
            cap,
        ]
    };
    let o = edge(&args("8"));
    assert!(
        !o.status.success() && stderr(&o).contains("--max-arena-mib 8"),
        "{}",
        stderr(&o)
    );
    let o = edge(&args("32"));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// NaN or infinite values in `.npy` / `.f32` inputs are refused, naming the file and the first
/// bad element.
#[test]
fn run_rejects_non_finite_inputs() {
    let (float, _) = build_models();
    let dir = tempfile::tempdir().unwrap();
    let mf = write(dir.path(), "m.empf", &float);
    let nan = write(
        dir.path(),
        "nan.npy",
        &npy_bytes("<f4", "(1, 8, 8)", &f32s(&[f32::NAN; 64])),
    );
    let o = edge(&["run", p(&mf), "--input", p(&nan)]);
    assert_fails_naming(&o, &nan, "NaN npy");
    assert!(
        stderr(&o).contains("element 0 is not finite"),
        "{}",
        stderr(&o)
    );
    let mut v = vec![0.5f32; 64];
    v[9] = f32::INFINITY;
    let inf = write(dir.path(), "inf.f32", &f32s(&v));
    let o = edge(&["run", p(&mf), "--input", p(&inf)]);
    assert_fails_naming(&o, &inf, "inf f32");
    assert!(
        stderr(&o).contains("element 9 is not finite"),
        "{}",
        stderr(&o)
    );
}

/// `infer_many` gives the same scores, in input order, on 1, 2 and every thread, on both paths
/// and modes, as one-at-a-time `infer_native`.
#[test]
fn infer_many_is_independent_of_the_thread_count() {
    let (_, quant) = build_models();
    let model = Model::decode(&quant).unwrap();
    let path = Path::new("q.empf");
    let mut seed = 99u32;
    let n = 37;
    let x = rand_vals(&mut seed, n * 64, 2.0);
    let all = empf_edge_infer::available_threads();
    for integer in [false, true] {
        for mode in [Mode::Sequential, Mode::Parallel] {
            let one: Vec<_> = x
                .chunks(64)
                .map(|xi| {
                    empf_edge_infer::infer_native(path, &model, xi, integer, mode, 64).unwrap()
                })
                .collect();
            for threads in [1, 2.min(all), all] {
                let pool = empf_edge_infer::thread_pool(threads).unwrap();
                let words =
                    empf_edge_infer::arena_words_capped(path, &model, mode, threads, 64).unwrap();
                let many =
                    empf_edge_infer::infer_many(path, &model, &x, integer, mode, &pool, words)
                        .unwrap();
                assert_eq!(many, one, "integer={integer} {mode:?} threads={threads}");
            }
        }
    }
    assert!(empf_edge_infer::check_threads(Some(0)).is_err());
    assert!(empf_edge_infer::check_threads(Some(all + 1)).is_err());
    assert_eq!(empf_edge_infer::check_threads(None).unwrap(), all);
}

#[test]
fn to_onnx_qdq_writes_both_activation_types_and_refuses_integer_with_qdq() {
    let dir = tempfile::tempdir().unwrap();
    let (float, quant) = build_models();
    let mq = write(dir.path(), "q.empf", &quant);
    for act in ["uint8", "int8"] {
        let out = dir.path().join(format!("q_{act}.onnx"));
        let o = edge(&["to-onnx", p(&mq), "-o", p(&out), "--qdq", act]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).unwrap();
        // The graph names its activation type.
        let tag = format!("empf_qdq_{act}");
        assert!(
            bytes.windows(tag.len()).any(|w| w == tag.as_bytes()),
            "{act}: graph name"
        );
    }
    let out = dir.path().join("x.onnx");
    let o = edge(&[
        "to-onnx",
        p(&mq),
        "-o",
        p(&out),
        "--integer",
        "--qdq",
        "uint8",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // An uncalibrated model has no integer path to write.
    let mf = write(dir.path(), "f.empf", &float);
    let o = edge(&["to-onnx", p(&mf), "-o", p(&out), "--qdq", "int8"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no integer path"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
