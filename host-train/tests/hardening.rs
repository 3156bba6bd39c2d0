//! `host-train` on input a user can get wrong: every case must end in a clear error that names
//! the file (or flag) at fault, before any work is wasted or anything is overwritten; none may
//! panic, hang, or exit 0 having done nothing.

use empf_host_train::checkpoint::Checkpoint;
use empf_host_train::data::idx::encode_idx;
use empf_host_train::net::{BenchOptions, LayerSpec, Net, NetConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host-train"))
        .args(args)
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

/// Asserts a failure (exit code 1: an error, not a panic's 101) whose message has every needle.
#[track_caller]
fn assert_fails_with(o: &Output, needles: &[&str]) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "expected an error exit: {t}");
    assert!(!t.contains("panicked"), "{t}");
    for n in needles {
        assert!(t.contains(n), "message lacks {n:?}: {t}");
    }
}

/// `n` images of `side`×`side` for one split, with labels 0..9 cycling.
fn write_split(dir: &Path, split: &str, n: usize, side: usize) {
    let images: Vec<u8> = (0..n * side * side)
        .map(|i| ((i * 37 + i / (side * side) * 91) % 256) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let s = side as u32;
    std::fs::write(
        dir.join(format!("{split}-images-idx3-ubyte")),
        encode_idx(&[n as u32, s, s], &images),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{split}-labels-idx1-ubyte")),
        encode_idx(&[n as u32], &labels),
    )
    .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    data: String,
}

impl Fixture {
    /// 16 training and 8 test images of 28×28 (one batch: the debug binary trains slowly).
    fn new() -> Self {
        Self::with_sides(28, 28)
    }

    fn with_sides(train: usize, test: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        write_split(&data, "train", 16, train);
        write_split(&data, "t10k", 8, test);
        let data = data.to_string_lossy().into_owned();
        Fixture { dir, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// A quick MCU training run into `out` (2 epochs of one batch, T = 2).
    fn train(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "train",
            "--data",
            &self.data,
            "--out",
            out,
            "--arch",
            "mcu",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "-T",
            "2",
        ];
        if !extra.contains(&"--threads") {
            args.extend_from_slice(&["--threads", "1"]);
        }
        args.extend_from_slice(extra);
        run(&args)
    }

    fn eval(&self, model: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--data",
            &self.data,
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

fn mcu(t: usize) -> NetConfig {
    NetConfig::mcu(t, &BenchOptions::default())
}

fn with_classes(mut c: NetConfig, classes: usize) -> NetConfig {
    if let Some(last) = c.layers.last_mut() {
        *last = LayerSpec::Linear {
            out_features: classes,
            bias: true,
        };
    }
    c
}

/// Writes `config`'s freshly initialised network as an `empf-core` model file.
fn write_model(path: &Path, config: NetConfig) {
    let net = Net::new(config, 5).unwrap();
    let bytes = empf_host_train::export::export_float(&net).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes a checkpoint as `train` does for `--arch mcu -T t`, with metadata overrides.
fn write_checkpoint(path: &Path, t: usize, meta: &[(&str, &str)]) {
    let net = Net::new(mcu(t), 1).unwrap();
    let mut ck = Checkpoint::new();
    ck.set_meta("model.arch", "mcu");
    ck.set_meta("model.time_steps", t);
    ck.set_meta("model.neuron", "empf");
    ck.set_meta("model.seca", false);
    for (k, v) in meta {
        ck.set_meta(*k, v);
    }
    for p in net.params() {
        ck.insert(p.name.to_string(), p.shape.to_vec(), p.value.to_vec())
            .unwrap();
    }
    ck.save(path).unwrap();
}

#[test]
fn eval_refuses_a_model_and_checkpoint_of_different_networks() {
    let f = Fixture::new();
    let ck = f.s("ck.safetensors");
    write_checkpoint(Path::new(&ck), 2, &[]);
    // Same network: accepted and compared.
    let same = f.s("same.empf");
    write_model(Path::new(&same), mcu(2));
    let o = f.eval(&same, &["--checkpoint", &ck]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("predictions differ"), "{}", text(&o));
    // More classes used to panic (slice out of range), fewer to exit 0 comparing nonsense.
    for (name, config, what) in [
        (
            "more.empf",
            with_classes(mcu(2), 12),
            "classes: model 12, checkpoint 10",
        ),
        (
            "fewer.empf",
            with_classes(mcu(2), 8),
            "classes: model 8, checkpoint 10",
        ),
        ("t4.empf", mcu(4), "time steps T: model 4, checkpoint 2"),
        (
            "bench.empf",
            NetConfig::bench(2, &BenchOptions::default()),
            "layer",
        ),
    ] {
        let m = f.s(name);
        write_model(Path::new(&m), config);
        let o = f.eval(&m, &["--checkpoint", &ck]);
        assert_fails_with(&o, &[name, "ck.safetensors", "different networks", what]);
    }
}

#[test]
fn eval_names_the_model_when_its_input_size_is_not_the_data_s() {
    let f = Fixture::new();
    let m = f.s("small-input.empf");
    let mut c = mcu(2);
    (c.height, c.width) = (20, 20);
    write_model(Path::new(&m), c);
    let o = f.eval(&m, &[]);
    assert_fails_with(
        &o,
        &[
            "small-input.empf",
            "1x20x20",
            "t10k-images-idx3-ubyte",
            "28x28",
        ],
    );
}

#[test]
fn eval_checks_a_model_file_s_size_before_reading_it_and_caps_arenas() {
    let f = Fixture::new();
    // A valid model, then a hole: 256 MiB that must not be read.
    let good = f.path("good.empf");
    write_model(&good, mcu(2));
    let bytes = std::fs::read(&good).unwrap();
    let sparse = f.path("sparse.empf");
    std::fs::write(&sparse, &bytes).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap();
    file.set_len(256 << 20).unwrap();
    let o = f.eval(&sparse.to_string_lossy(), &[]);
    assert_fails_with(
        &o,
        &[
            "sparse.empf",
            &format!(
                "the file is {} bytes but its header announces {}",
                256 << 20,
                bytes.len()
            ),
        ],
    );
    // A small file whose network needs a huge arena (1×1024×1024 input: ~1.3 GB sequential)
    // is refused before any arena or test set is allocated, and the flag raises the cap.
    let big = f.s("big-input.empf");
    let mut c = NetConfig::bench(2, &BenchOptions::default());
    (c.height, c.width) = (1024, 1024);
    write_model(Path::new(&big), c);
    let o = f.eval(&big, &[]);
    assert_fails_with(&o, &["big-input.empf", "arena", "--max-arena-mib 1024"]);
    let o = f.eval(&big, &["--max-arena-mib", "4096"]);
    // Past the cap, the next check is the input size (the test images are 28×28).
    assert_fails_with(&o, &["big-input.empf", "1x1024x1024"]);
    let o = f.eval(&big, &["--max-arena-mib", "0"]);
    assert_fails_with(&o, &["--max-arena-mib"]);
}

#[test]
fn eval_threads_and_limits_are_bounded() {
    let f = Fixture::new();
    let m = f.s("m.empf");
    write_model(Path::new(&m), mcu(2));
    let o = run(&["eval", "--model", &m, "--data", &f.data, "--threads", "0"]);
    assert_fails_with(&o, &["--threads must be at least 1"]);
    let o = run(&[
        "eval",
        "--model",
        &m,
        "--data",
        &f.data,
        "--threads",
        "100000",
    ]);
    assert_fails_with(&o, &["--threads 100000", "at most"]);
    let o = f.eval(&m, &["--limit-test", "0"]);
    assert_fails_with(&o, &["--limit-test"]);
    // All threads and one thread print the same accuracies.
    let all = run(&["eval", "--model", &m, "--data", &f.data]);
    let one = f.eval(&m, &[]);
    assert!(
        all.status.success() && one.status.success(),
        "{}",
        text(&all)
    );
    let acc = |o: &Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("core"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(acc(&all), acc(&one));
    assert!(!acc(&one).is_empty(), "{}", text(&one));
}

#[test]
fn train_threads_and_limits_are_bounded() {
    let f = Fixture::new();
    let out = f.s("run");
    let o = f.train(&out, &["--threads", "100000"]);
    assert_fails_with(&o, &["--threads 100000", "at most"]);
    let o = f.train(&out, &["--limit-train", "0"]);
    assert_fails_with(&o, &["--limit-train"]);
    let o = f.train(&out, &["--limit-test", "0"]);
    assert_fails_with(&o, &["--limit-test"]);
    assert!(!f.path("run/checkpoint.safetensors").exists());
}

#[test]
fn augmentation_flags_are_checked_and_used() {
    let f = Fixture::new();
    let out = f.s("run");
    let o = f.train(&out, &["--random-crop", "40"]);
    assert_fails_with(&o, &["augmentation", "random-crop padding 40", "28x28"]);
    let o = f.train(&out, &["--cutout", "0"]);
    assert_fails_with(&o, &["augmentation", "cutout"]);
    assert!(!f.path("run/checkpoint.safetensors").exists());
    // A valid set trains, says what it uses, and its checkpoint records it.
    let o = f.train(&out, &["--random-crop", "2", "--hflip", "--cutout", "8"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("augmentation: random crop (pad 2), horizontal flip, cutout 1x8"),
        "{}",
        text(&o)
    );
    let ckpt = std::fs::read(f.path("run/checkpoint.safetensors")).unwrap();
    let header = String::from_utf8_lossy(&ckpt[..ckpt.len().min(1 << 16)]);
    assert!(
        header.contains("hflip: true"),
        "the checkpoint's configuration omits the augmentation"
    );
}

#[test]
fn augment_list_and_label_smoothing_flags_are_checked_and_used() {
    let f = Fixture::new();
    let out = f.s("run");
    let o = f.train(&out, &["--label-smoothing", "1.5"]);
    assert_fails_with(&o, &["label smoothing 1.5", "[0, 1)"]);
    let o = f.train(&out, &["--augment", "flip,warp"]);
    assert_fails_with(&o, &["--augment", "\"warp\""]);
    assert!(!f.path("run/checkpoint.safetensors").exists());
    // The list replaces the (here empty) base, the single flags add to it, and the smoothing
    // flag wins over the list's.
    let o = f.train(
        &out,
        &[
            "--augment",
            "flip,smoothing=0.05",
            "--label-smoothing",
            "0.2",
            "--random-crop",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o)
            .contains("augmentation: random crop (pad 1), horizontal flip, label smoothing 0.2"),
        "{}",
        text(&o)
    );
    // `none` in the list drops what came before it (a recipe's set, or earlier items).
    let o = f.train(&f.s("run2"), &["--augment", "crop=2,mixup,none,flip"]);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("augmentation: horizontal flip\n"), "{log}");
}

#[test]
fn recipes_are_named_resolved_and_overridden_by_flags() {
    let f = Fixture::new();
    let out = f.s("run");
    let o = f.train(&out, &["--recipe", "cifar11"]);
    assert_fails_with(
        &o,
        &["--recipe \"cifar11\"", "cifar10-resnet18", "fashion-mnist"],
    );
    // The Fixture gives --arch mcu, --epochs 2, --batch-size 16 and -T 2: each overrides the
    // recipe (bench net, 10 epochs, T = 4); lr and schedule come from the recipe.
    let o = f.train(&out, &["--recipe", "fashion-mnist"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("training Mcu net: T=2"), "{}", text(&o));
    assert!(text(&o).contains("epoch 2/2"), "{}", text(&o));
    let ckpt = std::fs::read(f.path("run/checkpoint.safetensors")).unwrap();
    let header = String::from_utf8_lossy(&ckpt[..ckpt.len().min(1 << 16)]);
    assert!(
        header.contains("recipe=fashion-mnist"),
        "the checkpoint omits the recipe"
    );
    assert!(
        header.contains("lr=0.05"),
        "the checkpoint omits the resolved lr"
    );
    // The paper's CIFAR recipe on a directory without CIFAR files names what it looked for.
    let o = f.train(&f.s("run2"), &["--recipe", "cifar10-resnet18"]);
    assert_fails_with(&o, &["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]);
}

#[test]
fn image_size_is_checked_for_both_splits_before_training() {
    // Training images of the wrong size used to fail inside the network ("shape mismatch in
    // net.forward_step.x"); a test split of another size only after a whole epoch.
    for (train, test, file) in [
        (20, 20, "train-images-idx3-ubyte"),
        (28, 20, "t10k-images-idx3-ubyte"),
    ] {
        let f = Fixture::with_sides(train, test);
        let out = f.s("run");
        let o = f.train(&out, &[]);
        assert_fails_with(&o, &[file, "20x20", "1x28x28"]);
        assert!(!text(&o).contains("epoch 1/"), "{}", text(&o));
        assert!(!f.path("run/checkpoint.safetensors").exists());
    }
}

#[test]
fn stale_temporary_files_are_removed_and_resume_without_checkpoint_says_so() {
    let f = Fixture::new();
    let out = f.s("run");
    // Nothing to resume yet: say so, and how to start.
    let o = f.train(&out, &["--resume"]);
    assert_fails_with(&o, &["nothing to resume", "without --resume"]);
    assert!(!text(&o).contains("No such file"), "{}", text(&o));
    // Leftovers of a checkpoint write killed in an earlier run are removed by the next one.
    std::fs::create_dir_all(f.path("run")).unwrap();
    let stale = f.path("run/.checkpoint.safetensors.tmp.4242.0");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let o = f.train(&out, &["--stop-after-epoch", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stale.exists(), "stale temporary file left: {}", text(&o));
    // And by a resumed one.
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let o = f.train(&out, &["--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stale.exists(), "stale temporary file left: {}", text(&o));
    assert!(f.path("run/checkpoint.safetensors").exists());
}

#[test]
fn a_second_run_on_a_locked_directory_is_refused_naming_the_holder() {
    let f = Fixture::new();
    let out = f.s("run");
    std::fs::create_dir_all(&out).unwrap();
    // Hold the lock as a running `host-train train` would (flock on the lock file, pid inside).
    let lock = f.path("run/.host-train.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&lock)
        .unwrap();
    file.try_lock().expect("test takes the lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let o = f.train(&out, &[]);
    assert_fails_with(
        &o,
        &[
            &format!("pid {}", std::process::id()),
            "another host-train",
            ".host-train.lock",
        ],
    );
    assert!(!f.path("run/metrics.csv").exists(), "{}", text(&o));
    drop(file);
    // Released: the next run goes ahead.
    let o = f.train(&out, &["--stop-after-epoch", "1"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn crafted_checkpoint_metadata_is_named_with_the_file_and_key() {
    let f = Fixture::new();
    let m = f.s("m.empf");
    write_model(Path::new(&m), mcu(2));
    for (key, value) in [
        ("model.time_steps", "0"),
        ("model.time_steps", "-3"),
        ("model.time_steps", "70000"),
        ("model.seca", "maybe"),
        ("model.neuron", "lif"),
        ("model.arch", "resnet"),
    ] {
        let ck = f.s("crafted.safetensors");
        write_checkpoint(Path::new(&ck), 2, &[(key, value)]);
        let o = f.eval(&m, &["--checkpoint", &ck]);
        assert_fails_with(&o, &["crafted.safetensors", key, value]);
        let o = run(&["export", &ck, "-o", &f.s("x.empf"), "--data", &f.data]);
        assert_fails_with(&o, &["crafted.safetensors", key, value]);
    }
    // Non-finite values are named with the tensor, not exported or evaluated.
    let ck = f.path("inf.safetensors");
    write_checkpoint(&ck, 2, &[]);
    let mut c = Checkpoint::load(&ck).unwrap();
    let name = c
        .tensors
        .keys()
        .find(|k| k.ends_with("running_var"))
        .unwrap()
        .clone();
    c.tensors.get_mut(&name).unwrap().data[0] = f32::INFINITY;
    c.save(&ck).unwrap();
    let o = f.eval(&m, &["--checkpoint", &ck.to_string_lossy()]);
    assert_fails_with(&o, &["inf.safetensors", &name]);
}

#[test]
fn resume_refuses_a_checkpoint_with_absurd_or_non_finite_state() {
    let f = Fixture::new();
    let out = f.s("run");
    let o = f.train(&out, &["--stop-after-epoch", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let ck = f.path("run/checkpoint.safetensors");
    let good = Checkpoint::load(&ck).unwrap();
    // An epoch past the run's end would "resume" to nothing and exit 0.
    let mut c = good.clone();
    c.set_meta("epoch", 1000);
    c.save(&ck).unwrap();
    let o = f.train(&out, &["--resume"]);
    assert_fails_with(&o, &["checkpoint.safetensors", "epoch", "1000"]);
    let mut c = good.clone();
    let name = c
        .tensors
        .keys()
        .find(|k| k.ends_with("running_var"))
        .unwrap()
        .clone();
    c.tensors.get_mut(&name).unwrap().data[0] = f32::NAN;
    c.save(&ck).unwrap();
    let o = f.train(&out, &["--resume"]);
    assert_fails_with(&o, &["checkpoint.safetensors", &name]);
}

/// `host-train bench` runs each configuration in a child `bench-one` process whose argv is
/// read by the library's one parser: the children's lines come back as a table, and a bad
/// child argv is an error naming the flag, not a panic.
#[test]
fn bench_children_are_parsed_by_the_one_bench_one_parser() {
    let o = run(&[
        "bench",
        "--time-steps",
        "2",
        "--batch-size",
        "2",
        "--batches",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let log = text(&o);
    assert!(log.contains("Random-BP speed-up"), "{log}");
    assert!(log.contains("-> PASS"), "{log}");
    for (args, named) in [
        (
            &["--time-steps", "2", "--mode", "sideways"][..],
            "\"sideways\"",
        ),
        (&["--time-steps", "x"][..], "--time-steps \"x\""),
        (&["--batches", "1", "--colour", "red"][..], "\"--colour\""),
    ] {
        let mut argv = vec!["bench-one"];
        argv.extend_from_slice(args);
        let o = run(&argv);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(named), "{named}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
}
