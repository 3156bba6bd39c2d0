//! The paper's data sets through the command line, on small files the test writes in the real
//! formats: CIFAR-10's extracted binary batches train a narrow ResNet-18 with augmentation,
//! export (calibrated on the same files) and refuse what does not fit the network.
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host-train"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run host-train")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `n` CIFAR-10 records (label byte + 3×32×32 CHW pixels); class `k` brightens a band.
fn cifar10_records(n: usize, offset: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 3073);
    for i in 0..n {
        let label = ((i + offset) % 10) as u8;
        v.push(label);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let band = y / 4 == label as usize % 8;
                    v.push(if band {
                        230
                    } else {
                        ((x * 7 + y * 3 + c * 11 + i) % 64) as u8
                    });
                }
            }
        }
    }
    v
}

fn write_cifar10(dir: &Path, per_batch: usize) {
    let d = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    for b in 1..=5 {
        std::fs::write(
            d.join(format!("data_batch_{b}.bin")),
            cifar10_records(per_batch, b * per_batch),
        )
        .unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), cifar10_records(per_batch, 0)).unwrap();
}

#[test]
fn cifar10_trains_a_narrow_resnet18_with_augmentation_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), 4);
    let data = dir.path().to_string_lossy().into_owned();
    let out = dir.path().join("run");
    let out_s = out.to_string_lossy().into_owned();
    let o = run(&[
        "train",
        "--data",
        &data,
        "--dataset",
        "cifar10",
        "--arch",
        "resnet18",
        "--width",
        "0.0625",
        "-T",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--random-crop",
        "4",
        "--hflip",
        "--cutout",
        "16",
        "--threads",
        "1",
        "--out",
        &out_s,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("20 images"), "{}", text(&o));
    assert!(out.join("checkpoint.safetensors").exists());
    // TensorBoard's event file: TFRecords, the first holding the version event.
    let events = std::fs::read(out.join("events.out.tfevents.empf")).unwrap();
    assert!(events.len() > 16 && events.windows(13).any(|w| w == b"brain.Event:2"));
    let model = out.join("model.empf");
    let o = run(&[
        "export",
        &out.join("checkpoint.safetensors").to_string_lossy(),
        "-o",
        &model.to_string_lossy(),
        "--data",
        &data,
        "--dataset",
        "cifar10",
        "--calib",
        "8",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("calibration: 8 training images"),
        "{}",
        text(&o)
    );
    let bytes = std::fs::read(&model).unwrap();
    let m = empf_core::Model::decode(&bytes).unwrap();
    assert_eq!(
        (m.input_shape().c, m.input_shape().h, m.classes()),
        (3, 32, 10)
    );
    assert!(m.fixed_meta().is_some(), "the export has no integer path");
    // Evaluated on the CIFAR test batch: core float, core integer and the checkpoint on the
    // host, with the per-channel normalisation of training.
    let o = run(&[
        "eval",
        "--model",
        &model.to_string_lossy(),
        "--checkpoint",
        &out.join("checkpoint.safetensors").to_string_lossy(),
        "--data",
        &data,
        "--dataset",
        "cifar10",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    for part in [
        "4 test images",
        "core float:",
        "core integer:",
        "host vs core float: 0 of 4 predictions differ",
    ] {
        assert!(log.contains(part), "{part} missing:\n{log}");
    }
}

/// The paper's CIFAR-10 recipe end to end on generated files: its whole augmentation
/// (crop 4, flip, AutoAugment, Cutout 16, Mixup/CutMix with smoothing 0.1 as soft targets)
/// feeds a narrow ResNet-18 (Versions I + III), then export with an integer path.
#[test]
fn the_cifar10_recipe_runs_end_to_end_with_soft_targets() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10(dir.path(), 4);
    let data = dir.path().to_string_lossy().into_owned();
    let out = dir.path().join("run");
    let o = run(&[
        "train",
        "--recipe",
        "cifar10-resnet18",
        "--data",
        &data,
        "--width",
        "0.0625",
        "-T",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--out",
        &out.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    for part in [
        "random crop (pad 4)",
        "horizontal flip",
        "cutout 1x16",
        "AutoAugment",
        "Mixup/CutMix",
        "label smoothing 0.1",
    ] {
        assert!(log.contains(part), "{part} missing:\n{log}");
    }
    assert!(log.contains("epoch 2/2"), "{log}");
    let o = run(&[
        "export",
        &out.join("checkpoint.safetensors").to_string_lossy(),
        "-o",
        &out.join("model.empf").to_string_lossy(),
        "--data",
        &data,
        "--dataset",
        "cifar10",
        "--calib",
        "8",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn cifar_files_that_do_not_fit_the_network_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().into_owned();
    let out = dir.path().join("run").to_string_lossy().into_owned();
    let train_cifar10 = |arch: &str| {
        run(&[
            "train",
            "--data",
            &data,
            "--dataset",
            "cifar10",
            "--arch",
            arch,
            "--out",
            &out,
        ])
    };
    // No files at all: the error names where they were looked for.
    let o = train_cifar10("resnet18");
    assert!(!o.status.success());
    assert!(text(&o).contains("cifar-10-batches-bin"), "{}", text(&o));
    // A 28×28 network (the bench net) on 32×32 CIFAR images.
    write_cifar10(dir.path(), 2);
    let o = train_cifar10("bench");
    assert!(!o.status.success());
    assert!(text(&o).contains("3x32x32"), "{}", text(&o));
    assert!(!dir.path().join("run/checkpoint.safetensors").exists());
}
