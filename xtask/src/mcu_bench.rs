//! `cargo xtask mcu-bench`: instructions per inference, per layer, on emulated Cortex-M cores.
//!
//! Builds `boards/qemu-lm3s6965`'s `empf-mcu-bench` firmware for each machine's target with the
//! model embedded, boots it in QEMU with `-icount shift=0` (every executed instruction advances
//! virtual time by 1 ns, so SysTick counts instructions, not host time), and prints per layer
//! and in total the instructions of one inference (the first embedded image) and per MAC, for
//! the integer and float paths, sequential and parallel. The firmware first times a loop of
//! known length (2 instructions per iteration) to get instructions per SysTick tick on that
//! machine. It also prints its logits, which must equal `empf-core`'s on the host bit for bit.
//!
//! These are executed-instruction counts from an emulator, not cycles on silicon (no wait
//! states, no pipeline or branch costs: a load, a taken branch and a multiply count 1 each).

use crate::board::{self, Firmware, Inputs, LogLine, Machine, Mode, NumPath};
use anyhow::{bail, Context, Result};
use empf_core::Model;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Machines measured by default: Cortex-M3, Cortex-M4F, Cortex-M33 (all with 4 MiB of RAM, so
/// every model and mode fits).
pub const MACHINES: [Machine; 3] = [board::MPS2_AN385, board::MPS2_AN386, board::MPS2_AN505];

/// The four runs of the firmware, in its order.
pub const RUNS: [(NumPath, Mode); 4] = [
    (NumPath::Integer, Mode::Sequential),
    (NumPath::Integer, Mode::Parallel),
    (NumPath::Float, Mode::Sequential),
    (NumPath::Float, Mode::Parallel),
];

/// What the firmware reported for one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// `integer sequential`, …
    pub name: String,
    /// SysTick ticks per layer (summed over steps).
    pub layer_ticks: Vec<u64>,
    /// Ticks of the whole inference.
    pub total_ticks: u64,
    /// Integer logits, or the float logits' bits.
    pub outputs: Vec<i64>,
}

/// The whole firmware report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Instructions of the calibration loop.
    pub cal_instructions: u64,
    /// Ticks it took.
    pub cal_ticks: u64,
    /// One entry per run.
    pub runs: Vec<Run>,
}

impl Report {
    /// Instructions per SysTick tick.
    pub fn per_tick(&self) -> f64 {
        self.cal_instructions as f64 / self.cal_ticks.max(1) as f64
    }
}

fn list(s: &str) -> Result<Vec<i64>> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .with_context(|| format!("not a list: {s:?}"))?;
    inner
        .split(", ")
        .map(|v| v.parse::<i64>().with_context(|| format!("bad value {v:?}")))
        .collect()
}

/// Parses the firmware's lines (see `boards/qemu-lm3s6965/src/bin/mcu_bench.rs`).
pub fn parse(lines: &[LogLine]) -> Result<Report> {
    let mut r = Report {
        cal_instructions: 0,
        cal_ticks: 0,
        runs: Vec::new(),
    };
    for l in lines {
        let t = l.text.as_str();
        let bad = || format!("unparsable mcu-bench line {t:?}");
        let words: Vec<&str> = t.split(' ').collect();
        match words.first().copied() {
            Some("calibration") if words.len() == 3 => {
                r.cal_instructions = words[1].parse().with_context(bad)?;
                r.cal_ticks = words[2].parse().with_context(bad)?;
            }
            Some("run") => r.runs.push(Run {
                name: t["run ".len()..].to_string(),
                layer_ticks: Vec::new(),
                total_ticks: 0,
                outputs: Vec::new(),
            }),
            Some("layer") if words.len() == 3 => {
                let run = r.runs.last_mut().with_context(bad)?;
                let li: usize = words[1].parse().with_context(bad)?;
                if li != run.layer_ticks.len() {
                    bail!(bad());
                }
                run.layer_ticks.push(words[2].parse().with_context(bad)?);
            }
            Some("total") if words.len() >= 4 => {
                let run = r.runs.last_mut().with_context(bad)?;
                run.total_ticks = words[1].parse().with_context(bad)?;
                let rest = t.split_once(['[']).map(|(_, v)| v).with_context(bad)?;
                run.outputs = list(&format!("[{rest}")).with_context(bad)?;
            }
            _ => {}
        }
    }
    if r.cal_ticks == 0 {
        bail!("the firmware printed no calibration line");
    }
    Ok(r)
}

/// Executed MACs of each layer in one inference: MACs per step × the steps that layer runs
/// (`T`, or 1 in parallel mode for the time-invariant layers before the first neuron).
pub fn executed_macs(model: &Model<'_>, mode: Mode) -> Result<Vec<(&'static str, u64)>> {
    let t = model.time_steps() as u64;
    let mut seen_neuron = false;
    model
        .layer_infos()
        .map(|i| {
            let i = i.map_err(|e| anyhow::anyhow!("{e}"))?;
            seen_neuron |= i.kind == "neuron";
            let steps = match mode {
                Mode::Parallel if !seen_neuron => 1,
                _ => t,
            };
            Ok((i.kind, i.macs * steps))
        })
        .collect()
}

fn host_outputs(model_bytes: &[u8], pixels: &[u8], path: NumPath, mode: Mode) -> Result<Vec<i64>> {
    let p = board::host_predictions(model_bytes, pixels.len(), pixels, &[0], path, mode)?;
    let p = p.first().context("no host prediction")?;
    Ok(match path {
        NumPath::Integer => p.logits.iter().map(|&v| v as i64).collect(),
        NumPath::Float => p.float_bits.iter().map(|&v| v as i64).collect(),
    })
}

/// One model on one machine: the table printed by `cargo xtask mcu-bench`, and the report.
pub fn bench(model_path: &std::path::Path, machine: &Machine) -> Result<(String, Report)> {
    let bytes =
        std::fs::read(model_path).with_context(|| format!("reading {}", model_path.display()))?;
    let model = Model::decode(&bytes).map_err(|e| anyhow::anyhow!("model: {e}"))?;
    // The arena is sized for the largest run: float, parallel.
    let fw = Firmware {
        dir: "qemu-lm3s6965",
        bin: "empf-mcu-bench",
        target: machine.target,
        path: NumPath::Float,
        mode: Mode::Parallel,
        board: machine.board,
    };
    let inputs = Inputs::with_model(model_path.to_path_buf()).for_machine(machine);
    let elf = board::build(&fw, &inputs).with_context(|| {
        format!(
            "building the bench firmware for {} (rustup target add {} if it is missing)",
            machine.name, machine.target
        )
    })?;
    let run = board::run_qemu_with(
        &elf,
        machine,
        Duration::from_secs(1200),
        &["-icount", "shift=0"],
    )?;
    std::fs::remove_file(&elf).ok();
    if run.exit != Some(0) {
        for l in &run.lines {
            eprintln!("[{}] {l}", machine.name);
        }
        bail!(
            "{}: bench firmware exit {:?}\n{}",
            machine.name,
            run.exit,
            run.stderr
        );
    }
    let report = parse(&run.lines)?;
    let (_, images, _) = board::read_idx(&inputs.images, &inputs.labels)?;
    let pixels = &images[..model.input_shape().numel()];
    let per_tick = report.per_tick();
    let mut out = String::new();
    writeln!(
        out,
        "{} on {} ({}, {}): {} instructions per SysTick tick ({}-instruction loop in {} ticks); \
         T={}, image 0",
        model_path.file_name().unwrap_or_default().to_string_lossy(),
        machine.name,
        machine.cpu,
        machine.target,
        fmt_ratio(per_tick),
        report.cal_instructions,
        report.cal_ticks,
        model.time_steps()
    )?;
    let mut header = format!("{:>3} {:<8}", "#", "layer");
    for (path, mode) in RUNS {
        let name = format!("{} {}", board::path_name(path), board::mode_name(mode));
        write!(header, " | {name:>24}")?;
    }
    writeln!(out, "{header}")?;
    let mut sub = format!("{:>3} {:<8}", "", "");
    for _ in RUNS {
        write!(sub, " | {:>10} {:>6} {:>6}", "instr", "MMAC", "/MAC")?;
    }
    writeln!(out, "{sub}")?;
    let macs: Vec<Vec<(&str, u64)>> = RUNS
        .iter()
        .map(|&(_, mode)| executed_macs(&model, mode))
        .collect::<Result<_>>()?;
    let runs: Vec<Option<&Run>> = RUNS
        .iter()
        .map(|&(path, mode)| {
            let name = format!("{} {}", board::path_name(path), board::mode_name(mode));
            report.runs.iter().find(|r| r.name == name)
        })
        .collect();
    // Every run's outputs equal the host's, bit for bit.
    for (&(path, mode), run) in RUNS.iter().zip(&runs) {
        if let Some(run) = run {
            let want = host_outputs(&bytes, pixels, path, mode)?;
            if run.outputs != want {
                bail!(
                    "{} {}: firmware outputs {:?} differ from empf-core on the host {:?}",
                    machine.name,
                    run.name,
                    run.outputs,
                    want
                );
            }
        }
    }
    let instr = |ticks: u64| ticks as f64 * per_tick;
    let cell = |o: &mut String, ins: f64, mac: u64| -> std::fmt::Result {
        let per = if mac > 0 {
            format!("{:.2}", ins / mac as f64)
        } else {
            "-".into()
        };
        write!(o, " | {:>10.0} {:>6.3} {:>6}", ins, mac as f64 / 1e6, per)
    };
    // Per layer kind: (instructions, MACs) per run.
    let mut kinds: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for (li, &(kind, _)) in macs[0].iter().enumerate() {
        let mut row = format!("{li:>3} {kind:<8}");
        for (ri, run) in runs.iter().enumerate() {
            let mac = macs[ri][li].1;
            let entry = kinds
                .entry(kind)
                .or_insert_with(|| vec![(0.0, 0); RUNS.len()]);
            match run.and_then(|r| r.layer_ticks.get(li)) {
                Some(&t) => {
                    cell(&mut row, instr(t), mac)?;
                    entry[ri].0 += instr(t);
                    entry[ri].1 += mac;
                }
                None => write!(row, " | {:>24}", "-")?,
            }
        }
        writeln!(out, "{row}")?;
    }
    for (kind, v) in &kinds {
        let mut row = format!("{:>3} {:<8}", "all", kind);
        for &(ins, mac) in v {
            cell(&mut row, ins, mac)?;
        }
        writeln!(out, "{row}")?;
    }
    let mut row = format!("{:>3} {:<8}", "", "total");
    for (ri, run) in runs.iter().enumerate() {
        let mac: u64 = macs[ri].iter().map(|m| m.1).sum();
        match run {
            Some(r) => cell(&mut row, instr(r.total_ticks), mac)?,
            None => write!(row, " | {:>24}", "no integer path")?,
        }
    }
    writeln!(out, "{row}")?;
    Ok((out, report))
}

fn fmt_ratio(v: f64) -> String {
    if (v - v.round()).abs() < 0.005 {
        format!("{}", v.round())
    } else {
        format!("{v:.3}")
    }
}

/// `cargo xtask mcu-bench [--model M]… [--machine NAME]…`: every model on every machine.
pub fn main(args: &[String]) -> Result<()> {
    let models_dir = board::repo_root().join("boards/models");
    let mut models: Vec<PathBuf> = Vec::new();
    let mut machines: Vec<Machine> = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => models.push(PathBuf::from(value)),
            "--machine" => machines.push(
                MACHINES
                    .into_iter()
                    .find(|m| m.name == value.as_str())
                    .with_context(|| {
                        format!("unknown machine {value:?} (mps2-an385, mps2-an386, mps2-an505)")
                    })?,
            ),
            other => bail!("unknown option {other:?} (expected --model, --machine)"),
        }
    }
    if models.is_empty() {
        models = vec![
            models_dir.join("fmnist-mcu.empf"),
            models_dir.join("fmnist-bench.empf"),
        ];
    }
    if machines.is_empty() {
        machines = MACHINES.to_vec();
    }
    println!(
        "mcu-bench: QEMU {} -icount shift=0; executed-instruction counts of one inference, not \
         silicon cycles. MMAC = million MACs executed (neuron, pool: elements); /MAC = \
         instructions per MAC; layer 0 includes loading the input.",
        qemu_version().unwrap_or_else(|_| "?".into())
    );
    for model in &models {
        for machine in &machines {
            let (table, _) = bench(model, machine)?;
            println!("\n{table}");
        }
    }
    Ok(())
}

fn qemu_version() -> Result<String> {
    let out = std::process::Command::new(board::qemu_binary()?)
        .arg("--version")
        .output()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Ok(s.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("?")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str) -> LogLine {
        LogLine {
            level: "INFO".into(),
            text: t.into(),
        }
    }

    #[test]
    fn parses_the_firmware_report() {
        let lines: Vec<LogLine> = [
            "calibration 2000000 50000",
            "model 7000 B, 2 layers, T=4",
            "run integer sequential",
            "layer 0 10",
            "layer 1 20",
            "total 31 logits [1, -2, 3]",
            "run float parallel",
            "layer 0 5",
            "layer 1 6",
            "total 12 logit-bits [1065353216]",
        ]
        .map(line)
        .to_vec();
        let r = parse(&lines).unwrap();
        assert_eq!(r.per_tick(), 40.0);
        assert_eq!(r.runs.len(), 2);
        assert_eq!(r.runs[0].layer_ticks, vec![10, 20]);
        assert_eq!(r.runs[0].outputs, vec![1, -2, 3]);
        assert_eq!(r.runs[1].name, "float parallel");
        assert_eq!(r.runs[1].outputs, vec![1065353216]);
        assert!(parse(&[line("layer 0 1")]).is_err());
        assert!(parse(&[line("calibration 1 1"), line("layer 0 1")]).is_err());
        assert!(parse(&[line("calibration 1 1"), line("run x"), line("layer 1 1")]).is_err());
    }
}
