//! Host side of the firmware in `boards/`: build a firmware with a chosen model, boot it in QEMU,
//! decode its defmt output, compare its predictions with `empf-core` on the host, and report
//! flash and RAM use from the ELF.

use anyhow::{bail, Context, Result};
use empf_board_app::Classifier;
pub use empf_board_app::{Mode, Path as NumPath};
use empf_core::{Model, PixelNorm};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One firmware crate of `boards/`.
#[derive(Clone, Copy, Debug)]
pub struct Firmware {
    /// Crate directory under `boards/`.
    pub dir: &'static str,
    /// Binary (and package) name.
    pub bin: &'static str,
    /// Rust target (also set in the crate's `.cargo/config.toml`).
    pub target: &'static str,
    /// Arithmetic the firmware runs.
    pub path: NumPath,
    /// Execution order the firmware runs.
    pub mode: Mode,
    /// What it runs on.
    pub board: &'static str,
}

/// Every firmware, QEMU first.
pub const FIRMWARES: [Firmware; 3] = [
    Firmware {
        dir: "qemu-lm3s6965",
        bin: "empf-qemu-lm3s6965",
        target: "thumbv7m-none-eabi",
        path: NumPath::Integer,
        mode: Mode::Sequential,
        board: "LM3S6965 (Cortex-M3, QEMU lm3s6965evb)",
    },
    Firmware {
        dir: "nucleo-f446re",
        bin: "empf-nucleo-f446re",
        target: "thumbv7em-none-eabihf",
        path: NumPath::Float,
        mode: Mode::Parallel,
        board: "Nucleo-F446RE (Cortex-M4F)",
    },
    Firmware {
        dir: "rp-pico",
        bin: "empf-rp-pico",
        target: "thumbv6m-none-eabi",
        path: NumPath::Integer,
        mode: Mode::Parallel,
        board: "Raspberry Pi Pico (RP2040, Cortex-M0+)",
    },
];

/// A QEMU machine the `qemu-lm3s6965` firmware runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    /// `qemu-system-arm -machine` name.
    pub name: &'static str,
    /// Linker memory map in `boards/qemu-lm3s6965/`.
    pub memory_x: &'static str,
    /// What it is.
    pub board: &'static str,
    /// `qemu-system-arm -cpu` name.
    pub cpu: &'static str,
    /// Rust target the firmware is built for on this machine.
    pub target: &'static str,
}

/// LM3S6965: 256 KiB flash, 64 KiB RAM (the MCU model).
pub const LM3S6965: Machine = Machine {
    name: "lm3s6965evb",
    memory_x: "memory.x",
    board: "LM3S6965 (Cortex-M3, QEMU lm3s6965evb)",
    cpu: "cortex-m3",
    target: "thumbv7m-none-eabi",
};
/// MPS2 AN385: Cortex-M3 with 4 MiB code and 4 MiB data RAM (the bench model).
pub const MPS2_AN385: Machine = Machine {
    name: "mps2-an385",
    memory_x: "memory-mps2-an385.x",
    board: "MPS2-AN385 (Cortex-M3, QEMU mps2-an385)",
    cpu: "cortex-m3",
    target: "thumbv7m-none-eabi",
};
/// MPS2 AN386: Cortex-M4F, same memory map as AN385 (`cargo xtask mcu-bench`).
pub const MPS2_AN386: Machine = Machine {
    name: "mps2-an386",
    memory_x: "memory-mps2-an386.x",
    board: "MPS2-AN386 (Cortex-M4F, QEMU mps2-an386)",
    cpu: "cortex-m4",
    target: "thumbv7em-none-eabihf",
};
/// MPS2 AN505: Cortex-M33 (with FPU and DSP), secure boot at 0x10000000
/// (`cargo xtask mcu-bench`).
pub const MPS2_AN505: Machine = Machine {
    name: "mps2-an505",
    memory_x: "memory-mps2-an505.x",
    board: "MPS2-AN505 (Cortex-M33, QEMU mps2-an505)",
    cpu: "cortex-m33",
    target: "thumbv8m.main-none-eabihf",
};

impl Machine {
    /// By `-machine` name.
    pub fn by_name(name: &str) -> Result<Machine> {
        [LM3S6965, MPS2_AN385]
            .into_iter()
            .find(|m| m.name == name)
            .with_context(|| format!("unknown machine {name:?} (lm3s6965evb or mps2-an385)"))
    }
}

/// `integer` / `float`.
pub fn path_name(p: NumPath) -> &'static str {
    match p {
        NumPath::Integer => "integer",
        NumPath::Float => "float",
    }
}

/// `sequential` / `parallel`.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Sequential => "sequential",
        Mode::Parallel => "parallel",
    }
}

/// The repository root (this crate lives in `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Model and test images embedded into a firmware.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `.empf` model file (calibrated for integer-path boards).
    pub model: PathBuf,
    /// idx3 images.
    pub images: PathBuf,
    /// idx1 labels.
    pub labels: PathBuf,
    /// Linker memory map (`None`: the firmware's own `memory.x`).
    pub memory_x: Option<PathBuf>,
}

impl Inputs {
    /// The committed inputs with the model replaced.
    pub fn with_model(model: PathBuf) -> Inputs {
        Inputs {
            model,
            ..Inputs::default()
        }
    }
    /// The committed Fashion-MNIST bench model (5 epochs) and the 32 test images.
    pub fn bench_model() -> Inputs {
        Inputs::with_model(repo_root().join("boards/models/fmnist-bench.empf"))
    }
    /// These inputs, linked for `machine`.
    pub fn for_machine(self, machine: &Machine) -> Inputs {
        Inputs {
            memory_x: Some(
                repo_root()
                    .join("boards/qemu-lm3s6965")
                    .join(machine.memory_x),
            ),
            ..self
        }
    }
}

impl Default for Inputs {
    /// The committed Fashion-MNIST MCU model and 32 test images in `boards/models/`.
    fn default() -> Self {
        let m = repo_root().join("boards/models");
        Inputs {
            model: m.join("fmnist-mcu.empf"),
            images: m.join("fmnist-test32-images-idx3-ubyte"),
            labels: m.join("fmnist-test32-labels-idx1-ubyte"),
            memory_x: None,
        }
    }
}

/// Builds `fw` (release) with `inputs` embedded; returns the path of a private copy of the ELF
/// (builds with other inputs overwrite cargo's output, so concurrent callers each get their own).
pub fn build(fw: &Firmware, inputs: &Inputs) -> Result<PathBuf> {
    static BUILD: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
    let mut count = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    *count += 1;
    let built = build_in_place(fw, inputs)?;
    let copy = built.with_file_name(format!("{}-{}-{}.elf", fw.bin, std::process::id(), *count));
    std::fs::copy(&built, &copy).with_context(|| format!("copying {}", built.display()))?;
    Ok(copy)
}

fn build_in_place(fw: &Firmware, inputs: &Inputs) -> Result<PathBuf> {
    let root = repo_root();
    let dir = root.join("boards").join(fw.dir);
    let target_dir = root.join("boards/target");
    let abs = |p: &Path| -> Result<PathBuf> {
        std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&dir)
        .args(["build", "--release", "--bin", fw.bin, "--target", fw.target])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("EMPF_BOARD_MODEL", abs(&inputs.model)?)
        .env("EMPF_BOARD_IMAGES", abs(&inputs.images)?)
        .env("EMPF_BOARD_LABELS", abs(&inputs.labels)?);
    match &inputs.memory_x {
        Some(m) => cmd.env("EMPF_BOARD_MEMORY", abs(m)?),
        None => cmd.env_remove("EMPF_BOARD_MEMORY"),
    };
    // Read by the QEMU firmware's build.rs; the real boards have their path and mode fixed.
    cmd.env("EMPF_BOARD_PATH", path_name(fw.path))
        .env("EMPF_BOARD_MODE", mode_name(fw.mode));
    let out = cmd
        .stdout(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo build in {}", dir.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.contains("warning: ")) {
        eprintln!("{line}");
    }
    if !out.status.success() {
        bail!("building {} failed ({}):\n{stderr}", fw.dir, out.status);
    }
    Ok(target_dir.join(fw.target).join("release").join(fw.bin))
}

/// One decoded defmt log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `INFO`, `ERROR`, … (empty for `println!` frames).
    pub level: String,
    /// The formatted message.
    pub text: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<5} {}", self.level, self.text)
    }
}

/// Decodes a raw defmt stream with the table in `elf`.
pub fn decode_defmt(elf: &[u8], stream: &[u8]) -> Result<Vec<LogLine>> {
    use defmt_decoder::{DecodeError, Table};
    let table = Table::parse(elf)
        .map_err(|e| anyhow::anyhow!("reading the defmt table: {e}"))?
        .context("the ELF has no defmt table")?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(LogLine {
                level: frame
                    .level()
                    .map(|l| l.as_str().to_uppercase())
                    .unwrap_or_default(),
                text: frame.display_message().to_string(),
            }),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => bail!(
                "malformed defmt frame after {} lines (firmware and ELF out of step?)",
                lines.len()
            ),
        }
    }
    Ok(lines)
}

/// What a QEMU run gave.
#[derive(Debug)]
pub struct QemuRun {
    /// The firmware's semihosting exit code (`None`: killed at the timeout).
    pub exit: Option<i32>,
    /// Decoded log lines.
    pub lines: Vec<LogLine>,
    /// What QEMU itself printed (start-up errors; one harmless timer notice).
    pub stderr: String,
    /// The firmware that ran.
    pub elf: PathBuf,
    /// Wall time.
    pub elapsed: Duration,
}

/// `qemu-system-arm`, or a clear error saying how to get it.
pub fn qemu_binary() -> Result<PathBuf> {
    let name = "qemu-system-arm";
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} not found on PATH (Debian: apt-get install qemu-system-arm)")
        })
}

/// Boots `elf` on a QEMU `machine` with semihosting, kills it after `timeout`.
pub fn run_qemu(elf: &Path, machine: &Machine, timeout: Duration) -> Result<QemuRun> {
    run_qemu_with(elf, machine, timeout, &[])
}

/// [`run_qemu`] with extra QEMU arguments (e.g. `-icount shift=0`).
pub fn run_qemu_with(
    elf: &Path,
    machine: &Machine,
    timeout: Duration,
    extra: &[&str],
) -> Result<QemuRun> {
    let qemu = qemu_binary()?;
    let elf_bytes = std::fs::read(elf).with_context(|| format!("{}", elf.display()))?;
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-cpu",
            machine.cpu,
            "-machine",
            machine.name,
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .args(extra)
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-arm")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    // Drained on its own thread so a chatty QEMU cannot block on a full pipe.
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stream = reader
        .join()
        .map_err(|_| anyhow::anyhow!("qemu output reader panicked"))??;
    let stderr = err_reader
        .join()
        .map_err(|_| anyhow::anyhow!("qemu stderr reader panicked"))??;
    let lines = decode_defmt(&elf_bytes, &stream)?;
    Ok(QemuRun {
        exit,
        lines,
        stderr,
        elf: elf.to_path_buf(),
        elapsed: start.elapsed(),
    })
}

/// One prediction line of the QEMU firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// Image index.
    pub image: usize,
    /// Its label.
    pub label: u8,
    /// Predicted class.
    pub class: usize,
    /// Integer-path summed logits (empty on the float path).
    pub logits: Vec<i32>,
    /// Float-path logits as their IEEE-754 bits (empty on the integer path).
    pub float_bits: Vec<u32>,
}

/// Parses `image I label L class K logits [a, b, …]` (integer) and `… logit-bits [..]` (float,
/// exact bits) lines; other lines are skipped.
pub fn parse_predictions(lines: &[LogLine]) -> Result<Vec<Prediction>> {
    let mut out = Vec::new();
    for l in lines {
        let Some(rest) = l.text.strip_prefix("image ") else {
            continue;
        };
        let bad = || format!("unparsable prediction line {:?}", l.text);
        let (head, list, float) = match rest.split_once(" logit-bits [") {
            Some((h, v)) => (h, v, true),
            None => {
                let (h, v) = rest.split_once(" logits [").with_context(bad)?;
                (h, v, false)
            }
        };
        let f: Vec<&str> = head.split(' ').collect();
        if f.len() != 5 || f[1] != "label" || f[3] != "class" {
            bail!(bad());
        }
        let values: Vec<&str> = list
            .strip_suffix(']')
            .with_context(bad)?
            .split(", ")
            .collect();
        let (logits, float_bits) = if float {
            let bits = values
                .iter()
                .map(|v| v.parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(bad)?;
            (Vec::new(), bits)
        } else {
            let ints = values
                .iter()
                .map(|v| v.parse::<i32>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(bad)?;
            (ints, Vec::new())
        };
        out.push(Prediction {
            image: f[0].parse().with_context(bad)?,
            label: f[2].parse().with_context(bad)?,
            class: f[4].parse().with_context(bad)?,
            logits,
            float_bits,
        });
    }
    Ok(out)
}

/// Reads idx3 images and idx1 labels: (`pixels` per image, images, labels).
pub fn read_idx(images: &Path, labels: &Path) -> Result<(usize, Vec<u8>, Vec<u8>)> {
    let im = std::fs::read(images).with_context(|| format!("{}", images.display()))?;
    let lb = std::fs::read(labels).with_context(|| format!("{}", labels.display()))?;
    let be = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if im.len() < 16 || be(&im, 0) != 2051 {
        bail!("{}: not an idx3 image file", images.display());
    }
    let (n, px) = (
        be(&im, 4) as usize,
        be(&im, 8) as usize * be(&im, 12) as usize,
    );
    if n.checked_mul(px).and_then(|b| b.checked_add(16)) != Some(im.len()) {
        bail!("{}: truncated ({} bytes)", images.display(), im.len());
    }
    if lb.len() != 8 + n || be(&lb, 0) != 2049 {
        bail!("{}: not an idx1 file with {n} labels", labels.display());
    }
    Ok((px, im[16..].to_vec(), lb[8..].to_vec()))
}

/// `empf-core` on the host, exactly as the firmware calls it: integer path through the pixel
/// table and [`Model::infer_fixed`], float path through [`PixelNorm::apply_all`] and
/// [`Model::infer_float`], in `mode`, argmax by `top_k`. Returns what the firmware prints: the
/// expected [`Prediction`] per image (image index and label filled in).
pub fn host_predictions(
    model: &[u8],
    pixels: usize,
    images: &[u8],
    labels: &[u8],
    path: NumPath,
    mode: Mode,
) -> Result<Vec<Prediction>> {
    let m = Model::decode(model).map_err(|e| anyhow::anyhow!("model: {e}"))?;
    let norm = PixelNorm::FASHION_MNIST;
    let err = |e: empf_core::Error| anyhow::anyhow!("{e}");
    let mut arena = vec![0u32; m.arena_words_for(mode)];
    // Once per model, as the firmware does at start-up (or its build script).
    let table = m.pixel_table(norm);
    images
        .chunks_exact(pixels)
        .zip(labels)
        .enumerate()
        .map(|(image, (img, &label))| {
            let (logits, float_bits, class) = match path {
                NumPath::Integer => {
                    let table = table.as_ref().map_err(|&e| err(e))?;
                    let mut x = vec![0i8; pixels];
                    Model::quantize_pixels(table, img, &mut x).map_err(err)?;
                    let mut out = vec![0i32; m.classes()];
                    m.infer_fixed(&x, mode, &mut arena, &mut out).map_err(err)?;
                    let class = empf_core::top_k::<1, i32>(&out)[0].0;
                    (out, Vec::new(), class)
                }
                NumPath::Float => {
                    let mut x = vec![0f32; pixels];
                    norm.apply_all(img, &mut x).map_err(err)?;
                    let mut out = vec![0f32; m.classes()];
                    m.infer_float(&x, mode, &mut arena, &mut out).map_err(err)?;
                    let class = empf_core::top_k::<1, f32>(&out)[0].0;
                    (Vec::new(), out.iter().map(|v| v.to_bits()).collect(), class)
                }
            };
            Ok(Prediction {
                image,
                label,
                class,
                logits,
                float_bits,
            })
        })
        .collect()
}

/// Flash and RAM of one firmware ELF, split into what the model, images and arena take.
#[derive(Clone, Debug)]
pub struct SizeReport {
    /// The board.
    pub board: &'static str,
    /// Path and mode.
    pub run: String,
    /// Flash of the board (from `memory.x`).
    pub flash_total: u64,
    /// RAM of the board (from `memory.x`).
    pub ram_total: u64,
    /// `.vector_table` + `.text` + `.rodata` + `.data` initialisers (+ `.boot2`).
    pub flash_used: u64,
    /// The model file (in `.rodata`).
    pub model: u64,
    /// The embedded test images and labels (QEMU firmware only; in `.rodata`).
    pub images: u64,
    /// Program code and other constants: `flash_used − model − images`.
    pub code: u64,
    /// `.data` + `.bss` + `.uninit`.
    pub ram_static: u64,
    /// The static arena inside `.bss` (`Classifier::arena_words` × 4).
    pub arena: u64,
    /// RAM left for the stack: `ram_total − ram_static`.
    pub stack_free: u64,
    /// Stack high-water mark measured by the firmware itself (QEMU run), when known.
    pub stack_used: Option<u64>,
}

/// Parses `FLASH : ORIGIN = …, LENGTH = 256K` style lines of a `memory.x`.
pub fn memory_lengths(memory_x: &str) -> Result<(u64, u64)> {
    let len = |region: &str| -> Result<u64> {
        let line = memory_x
            .lines()
            .find(|l| l.trim_start().starts_with(region) && l.contains("LENGTH"))
            .with_context(|| format!("memory.x has no {region} region"))?;
        let v = line
            .split("LENGTH")
            .nth(1)
            .and_then(|s| s.split('=').nth(1))
            .map(|s| s.trim().trim_end_matches([',', ';', ' ']))
            .context("LENGTH value")?;
        let (num, mul) = match v.strip_suffix('K') {
            Some(n) => (n, 1024),
            None => match v.strip_suffix('M') {
                Some(n) => (n, 1024 * 1024),
                None => (v, 1),
            },
        };
        let n = if let Some(h) = num.strip_prefix("0x") {
            u64::from_str_radix(h, 16)?
        } else {
            num.trim().parse::<u64>()?
        };
        Ok(n * mul)
    };
    Ok((len("FLASH")?, len("RAM")?))
}

/// Reads section sizes of `elf` for [`SizeReport`].
pub fn size_report(
    fw: &Firmware,
    elf: &Path,
    inputs: &Inputs,
    embeds_images: bool,
) -> Result<SizeReport> {
    use object::{Object, ObjectSection};
    let bytes = std::fs::read(elf).with_context(|| format!("{}", elf.display()))?;
    let file = object::File::parse(&*bytes).context("parsing the firmware ELF")?;
    let size = |name: &str| file.section_by_name(name).map_or(0, |s| s.size());
    let flash_used = [".vector_table", ".boot2", ".text", ".rodata", ".data"]
        .iter()
        .map(|s| size(s))
        .sum::<u64>();
    let ram_static = [".data", ".bss", ".uninit"]
        .iter()
        .map(|s| size(s))
        .sum::<u64>();
    let memory_x = inputs
        .memory_x
        .clone()
        .unwrap_or_else(|| repo_root().join("boards").join(fw.dir).join("memory.x"));
    let (flash_total, ram_total) = memory_lengths(
        &std::fs::read_to_string(&memory_x).with_context(|| format!("{}", memory_x.display()))?,
    )?;
    let model_bytes = std::fs::read(&inputs.model)?;
    let model = model_bytes.len() as u64;
    let arena = match Model::decode(&model_bytes) {
        Ok(m) => 4 * Classifier::arena_words(&m, fw.path, fw.mode) as u64,
        Err(_) => 0,
    };
    let images = if embeds_images {
        let (_, im, lb) = read_idx(&inputs.images, &inputs.labels)?;
        (im.len() + lb.len()) as u64
    } else {
        0
    };
    Ok(SizeReport {
        board: fw.board,
        run: format!("{} {}", path_name(fw.path), mode_name(fw.mode)),
        flash_total,
        ram_total,
        flash_used,
        model,
        images,
        code: flash_used.saturating_sub(model + images),
        ram_static,
        arena,
        stack_free: ram_total.saturating_sub(ram_static),
        stack_used: None,
    })
}

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

impl fmt::Display for SizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
        writeln!(f, "{} — {}", self.board, self.run)?;
        writeln!(
            f,
            "  flash {:>10} of {:>10} ({:4.1}%): model {} ({:.1}% of used), images {}, code+consts {}",
            kib(self.flash_used),
            kib(self.flash_total),
            pct(self.flash_used, self.flash_total),
            kib(self.model),
            pct(self.model, self.flash_used),
            kib(self.images),
            kib(self.code)
        )?;
        write!(
            f,
            "  RAM   {:>10} of {:>10} ({:4.1}%): arena {} ({:.1}% of RAM), other statics {}, stack {} free",
            kib(self.ram_static),
            kib(self.ram_total),
            pct(self.ram_static, self.ram_total),
            kib(self.arena),
            pct(self.arena, self.ram_total),
            kib(self.ram_static.saturating_sub(self.arena)),
            kib(self.stack_free)
        )?;
        if let Some(u) = self.stack_used {
            write!(f, ", {} used (measured)", kib(u))?;
        }
        Ok(())
    }
}

/// Symbols of floating-point code in `elf`: empf-core's float kernels and the compiler's
/// soft-float / conversion routines (`__aeabi_fadd`, `__adddf3`, `__aeabi_i2f`, …). Integer-path
/// firmware for FPU-less cores should have none.
pub fn float_symbols(elf: &Path) -> Result<Vec<String>> {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(elf).with_context(|| format!("{}", elf.display()))?;
    let file = object::File::parse(&*bytes).context("parsing the firmware ELF")?;
    let is_float = |n: &str| {
        n.contains("FloatKernels")
            || n.contains("compiler_builtins5float")
            || [
                "__aeabi_f",
                "__aeabi_d",
                "__aeabi_i2f",
                "__aeabi_ui2f",
                "__aeabi_l2f",
            ]
            .iter()
            .any(|p| n.starts_with(p))
            || (n.starts_with("__")
                && ["sf3", "df3", "sf2", "df2", "sfdi", "dfdi", "sisf", "sidf"]
                    .iter()
                    .any(|s| n.ends_with(s)))
    };
    let mut names: Vec<String> = file
        .symbols()
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .filter(|n| is_float(n))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Parses the firmware's closing line for the measured stack high-water mark.
pub fn stack_used(lines: &[LogLine]) -> Option<u64> {
    lines.iter().find_map(|l| {
        let rest = l.text.split("stack high-water ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// Builds the QEMU firmware with `inputs` for `machine` on `path` in `mode`, runs it, checks
/// every logit against `empf-core` on the host (integers equal, floats equal bit for bit) and
/// returns the run, the number of images checked and the size report. Fails on any difference.
pub fn qemu_check(
    inputs: &Inputs,
    machine: &Machine,
    path: NumPath,
    mode: Mode,
    timeout: Duration,
) -> Result<(QemuRun, usize, SizeReport)> {
    // Built for the machine's core: the Cortex-M4F and M33 builds select empf-dsp's
    // DSP-extension kernel, the Cortex-M3 build the portable one.
    let fw = Firmware {
        path,
        mode,
        target: machine.target,
        ..FIRMWARES[0]
    };
    let inputs = inputs.clone().for_machine(machine);
    let elf = build(&fw, &inputs)?;
    let run = run_qemu(&elf, machine, timeout)?;
    for l in &run.lines {
        println!("[qemu {}] {l}", machine.name);
    }
    match run.exit {
        Some(0) => {}
        Some(code) => bail!(
            "firmware exited with code {code}; QEMU said: {}",
            run.stderr.trim()
        ),
        None => bail!(
            "firmware did not finish within {timeout:?}; QEMU said: {}",
            run.stderr.trim()
        ),
    }
    let got = parse_predictions(&run.lines)?;
    let (px, images, labels) = read_idx(&inputs.images, &inputs.labels)?;
    let model = std::fs::read(&inputs.model)?;
    let want = host_predictions(&model, px, &images, &labels, path, mode)?;
    if got.len() != want.len() {
        bail!(
            "firmware reported {} predictions for {} images",
            got.len(),
            want.len()
        );
    }
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            bail!("firmware printed {g:?}\nhost empf-core gives {w:?}");
        }
    }
    let mut size = size_report(&fw, &elf, &inputs, true)?;
    size.board = machine.board;
    size.stack_used = stack_used(&run.lines);
    let n = got.len();
    Ok((run, n, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_x_lengths_in_k_m_and_hex() {
        let lm3s = "MEMORY\n{\n  FLASH : ORIGIN = 0x00000000, LENGTH = 256K\n  RAM   : ORIGIN = 0x20000000, LENGTH = 64K\n}\n";
        assert_eq!(memory_lengths(lm3s).unwrap(), (256 * 1024, 64 * 1024));
        let rp = "  BOOT2 : ORIGIN = 0x10000000, LENGTH = 0x100\n  FLASH : ORIGIN = 0x10000100, LENGTH = 0x1FFF00\n  RAM   : ORIGIN = 0x20000000, LENGTH = 256K\n";
        assert_eq!(memory_lengths(rp).unwrap(), (0x1F_FF00, 256 * 1024));
        let mps2 = "FLASH : ORIGIN = 0x0, LENGTH = 4M\nRAM : ORIGIN = 0x20000000, LENGTH = 4M\n";
        assert_eq!(memory_lengths(mps2).unwrap(), (4 << 20, 4 << 20));
        let err = memory_lengths("FLASH : ORIGIN = 0, LENGTH = 1K\n").unwrap_err();
        assert!(err.to_string().contains("no RAM region"), "{err}");
    }

    #[test]
    fn idx_files_with_bad_headers_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("empf-xtask-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (im, lb) = (dir.join("im"), dir.join("lb"));
        let header = |magic: u32, dims: &[u32]| -> Vec<u8> {
            let mut v = magic.to_be_bytes().to_vec();
            dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
            v
        };
        std::fs::write(&lb, [header(2049, &[2]), vec![1, 2]].concat()).unwrap();
        let good = [header(2051, &[2, 2, 2]), vec![0; 8]].concat();
        std::fs::write(&im, &good).unwrap();
        let (px, pixels, labels) = read_idx(&im, &lb).unwrap();
        assert_eq!((px, pixels.len(), labels), (4, 8, vec![1, 2]));
        for (bytes, want) in [
            (good[..20].to_vec(), "truncated"),
            (header(2051, &[u32::MAX, u32::MAX, u32::MAX]), "truncated"),
            (header(2049, &[2, 2, 2]), "not an idx3"),
            (vec![0; 3], "not an idx3"),
        ] {
            std::fs::write(&im, &bytes).unwrap();
            let e = read_idx(&im, &lb).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        std::fs::write(&im, &good).unwrap();
        std::fs::write(&lb, header(2049, &[3])).unwrap();
        assert!(read_idx(&im, &lb).unwrap_err().to_string().contains("idx1"));
        std::fs::remove_dir_all(&dir).ok();
    }

    fn line(text: &str) -> LogLine {
        LogLine {
            level: "INFO".into(),
            text: text.into(),
        }
    }

    #[test]
    fn prediction_lines_parse_and_bad_ones_are_named() {
        let p = parse_predictions(&[
            line("empf on Cortex-M3: model 7357 B in flash"),
            line("image 3 label 1 class 1 logits [-5, 7, 0]"),
            line("image 4 label 2 class 0 logit-bits [1065353216, 0]"),
        ])
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].image, p[0].label, p[0].class, &p[0].logits[..]),
            (3, 1, 1, &[-5, 7, 0][..])
        );
        assert!(p[0].float_bits.is_empty());
        assert_eq!(p[1].float_bits, vec![1.0f32.to_bits(), 0]);
        for bad in [
            "image 3 label 1 class 1 logits [-5, x]",
            "image 3 label 1 klass 1 logits [1]",
            "image 3 label 1 class 1",
        ] {
            let e = parse_predictions(&[line(bad)]).unwrap_err();
            assert!(e.to_string().contains("unparsable prediction line"), "{e}");
        }
    }
}
