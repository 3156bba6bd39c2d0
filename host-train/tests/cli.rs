//! The `host-train` binary end to end on a tiny dataset in the real idx format: training,
//! exact resume, and clear errors for bad input that never lose a checkpoint.

use empf_host_train::checkpoint::Checkpoint;
use empf_host_train::data::idx::encode_idx;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_host-train"))
}

/// 10 classes of 28×28 images: class k is a bright bar at row band k, plus deterministic noise.
fn write_dataset(dir: &Path, train: usize, test: usize) {
    let make = |n: usize, salt: usize| {
        let mut images = vec![0u8; n * 784];
        let mut labels = vec![0u8; n];
        for i in 0..n {
            let k = (i * 7 + salt) % 10;
            labels[i] = k as u8;
            for p in 0..784 {
                let row = p / 28;
                let on = row / 3 == k % 9 && (k < 9 || p % 28 < 14);
                let noise = ((i * 131 + p * 71 + salt) % 37) as u8;
                images[i * 784 + p] = if on { 200 + noise } else { noise };
            }
        }
        (images, labels)
    };
    for (split, n, salt) in [("train", train, 0), ("t10k", test, 5)] {
        let (images, labels) = make(n, salt);
        std::fs::write(
            dir.join(format!("{split}-images-idx3-ubyte")),
            encode_idx(&[n as u32, 28, 28], &images),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{split}-labels-idx1-ubyte")),
            encode_idx(&[n as u32], &labels),
        )
        .unwrap();
    }
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run host-train")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "-T",
        "2",
        "--seed",
        "9",
        "--lr",
        "0.05",
        "--threads",
        "1",
    ];
    v.extend_from_slice(extra);
    v
}

fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let ck = Checkpoint::load(path).unwrap();
    ck.tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_dataset(&data, 64, 32);
    let d = data.to_string_lossy().into_owned();
    (dir, d)
}

#[test]
fn resume_continues_exactly() {
    let (dir, data) = setup();
    let full: PathBuf = dir.path().join("full");
    let split: PathBuf = dir.path().join("split");
    let (f, s) = (
        full.to_string_lossy().into_owned(),
        split.to_string_lossy().into_owned(),
    );
    let o = run(&train_args(&data, &f, &[]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("epoch 3/3"), "{}", text(&o));
    let o = run(&train_args(&data, &s, &["--stop-after-epoch", "1"]));
    assert!(o.status.success(), "{}", text(&o));
    let after_one = tensors(&split.join("checkpoint.safetensors"));
    assert_ne!(
        after_one,
        tensors(&full.join("checkpoint.safetensors")),
        "one epoch must differ from three"
    );
    let o = run(&train_args(&data, &s, &["--resume"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resumed from"), "{}", text(&o));
    assert_eq!(
        tensors(&split.join("checkpoint.safetensors")),
        tensors(&full.join("checkpoint.safetensors"))
    );
    // The metrics agree on everything but timing.
    let strip = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(
        strip(&full.join("metrics.csv")),
        strip(&split.join("metrics.csv"))
    );
    assert!(full.join("metrics.json").exists());
    let png = std::fs::read(full.join("curves.png")).or_else(|_| {
        let found = std::fs::read_dir(&full)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "png"));
        std::fs::read(found.expect("a PNG plot").path())
    });
    assert_eq!(&png.unwrap()[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_input_gives_clear_errors_and_keeps_checkpoints() {
    let (dir, data) = setup();
    let out = dir.path().join("run");
    let o_s = out.to_string_lossy().into_owned();
    for (args, needle) in [
        (vec!["--lr", "-1"], "--lr"),
        (vec!["--lr", "nan"], "--lr"),
        (vec!["-T", "0"], "time-steps"),
        (vec!["--batch-size", "0"], "batch-size"),
        (vec!["--epochs", "zero"], "epochs"),
        (vec!["--threads", "0"], "--threads"),
    ] {
        let o = run(&train_args(&data, &o_s, &args));
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
    let o = run(&train_args("/nonexistent/dir", &o_s, &[]));
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/dir"), "{}", text(&o));
    // A truncated label file is named.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    write_dataset(&bad, 64, 32);
    let lbl = bad.join("train-labels-idx1-ubyte");
    let bytes = std::fs::read(&lbl).unwrap();
    std::fs::write(&lbl, &bytes[..bytes.len() - 10]).unwrap();
    let o = run(&train_args(&bad.to_string_lossy(), &o_s, &[]));
    assert!(!o.status.success());
    assert!(text(&o).contains("train-labels-idx1-ubyte"), "{}", text(&o));

    // A good run, then: a rerun without --resume refuses to overwrite; a corrupt checkpoint is
    // named on --resume and left as it was.
    let o = run(&train_args(&data, &o_s, &["--stop-after-epoch", "1"]));
    assert!(o.status.success(), "{}", text(&o));
    let ck = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    let o = run(&train_args(&data, &o_s, &[]));
    assert!(!o.status.success());
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    let o = run(&train_args(&data, &o_s, &["--resume", "--momentum", "0.5"]));
    assert!(!o.status.success());
    assert!(text(&o).contains("different configuration"), "{}", text(&o));
    let mut corrupt = before.clone();
    corrupt.truncate(before.len() / 2);
    std::fs::write(&ck, &corrupt).unwrap();
    let o = run(&train_args(&data, &o_s, &["--resume"]));
    assert!(!o.status.success());
    assert!(text(&o).contains("checkpoint.safetensors"), "{}", text(&o));
    assert_eq!(std::fs::read(&ck).unwrap(), corrupt);
}

#[test]
fn info_reports_paper_memory() {
    let o = run(&["info", "--model", "bench", "--dataset", "fashion-mnist"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    // bench net: binary weights 32·64·9 + 64·128·9 + 128·128·9 = 239 616; FP 1·32·9 + 128·10 + 10 = 1 578.
    assert!(t.contains("239616") || t.contains("239 616"), "{t}");
    let o = run(&["info", "--model", "resnet"]);
    assert!(!o.status.success());
}

#[test]
fn export_then_eval_through_core() {
    let (dir, data) = setup();
    let out = dir.path().join("run");
    let o_s = out.to_string_lossy().into_owned();
    let o = run(&train_args(&data, &o_s, &["--stop-after-epoch", "2"]));
    assert!(o.status.success(), "{}", text(&o));
    let ck = out.join("checkpoint.safetensors");
    let model = out.join("model.empf");
    let (ck_s, m_s) = (
        ck.to_string_lossy().into_owned(),
        model.to_string_lossy().into_owned(),
    );
    let o = run(&[
        "export", &ck_s, "-o", &m_s, "--calib", "32", "--data", &data,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for needle in ["parameter memory", "arena:", "bconv2d", "neuron", "zeros"] {
        assert!(t.contains(needle), "export report lacks {needle}: {t}");
    }
    let bytes = std::fs::read(&model).unwrap();
    assert_eq!(&bytes[..4], b"EMPF");
    let o = run(&[
        "eval",
        "--model",
        &m_s,
        "--checkpoint",
        &ck_s,
        "--data",
        &data,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    let pct = |label: &str| -> f64 {
        let line = t
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {t}"));
        line.rsplit(' ')
            .next()
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    assert_eq!(pct("core float:"), pct("host (checkpoint):"), "{t}");
    assert!(
        (pct("core integer:") - pct("core float:")).abs() <= 10.0,
        "{t}"
    );

    // A checkpoint missing a tensor is refused with the tensor's name.
    let mut c = Checkpoint::load(&ck).unwrap();
    c.tensors.remove("conv2.weight");
    let broken = out.join("broken.safetensors");
    c.save(&broken).unwrap();
    let o = run(&[
        "export",
        &broken.to_string_lossy(),
        "-o",
        &out.join("x.empf").to_string_lossy(),
        "--data",
        &data,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("conv2.weight"), "{}", text(&o));
    // A truncated model file is named, from its size alone, not a panic; a corrupted byte is
    // named by the decoder.
    std::fs::write(out.join("bad.empf"), &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&[
        "eval",
        "--model",
        &out.join("bad.empf").to_string_lossy(),
        "--data",
        &data,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bad.empf") && text(&o).contains("header announces"),
        "{}",
        text(&o)
    );
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x5a;
    std::fs::write(out.join("bad.empf"), &flipped).unwrap();
    let o = run(&[
        "eval",
        "--model",
        &out.join("bad.empf").to_string_lossy(),
        "--data",
        &data,
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("bad.empf") && text(&o).contains("decode"),
        "{}",
        text(&o)
    );
}
