//! Per-epoch training metrics: CSV (appended one row per epoch), JSON (rewritten), and a PNG plot
//! of loss and accuracy curves.
//!
//! * CSV: header [`CSV_HEADER`], one row per epoch; floats in Rust's shortest round-trip form
//!   (`NaN` and `inf` included), so [`read_csv`] gives back the exact values.
//! * JSON: an array of [`EpochRecord`] objects, pretty-printed, written atomically. JSON has no
//!   NaN/∞, so serde_json writes them as `null`.
//! * PNG: two panels, training loss (blue) on the left, training accuracy (red) and test accuracy
//!   (green) on the right, against the epoch. Rendered by `plotters` into a memory buffer and
//!   encoded with `png`, written atomically. Text (titles, tick labels, legend) is drawn with a
//!   TrueType font read at run time from a Debian font package ([`FONT_CANDIDATES`], e.g.
//!   `fonts-dejavu-core`); without one the plot has axes, grid and curves but no text.
//!
//! Accuracies are fractions in `[0, 1]`.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{atomic_write, CheckpointError};

/// CSV header line (without newline). The last column holds the spike rate of every neuron
/// layer, `;`-separated, in network order.
pub const CSV_HEADER: &str =
    "epoch,train_loss,train_acc,test_acc,lr,images_per_s,wall_s,spike_rates";

/// The header of files written before the spike-rate column existed (still read, so such runs
/// resume; they are rewritten in the current layout at the start of the resumed run).
pub const CSV_HEADER_V1: &str = "epoch,train_loss,train_acc,test_acc,lr,images_per_s,wall_s";

/// Fonts tried, in order, for plot text (all from Debian packages).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Font family name this module registers with plotters.
const FONT_FAMILY: &str = "empf-sans";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Reading or appending failed.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// An atomic write (JSON, PNG, rewritten CSV) failed.
    #[error(transparent)]
    Write(#[from] CheckpointError),
    /// The existing CSV file has another header.
    #[error("{}: CSV header is {found:?}, expected {CSV_HEADER:?}", path.display())]
    CsvHeader {
        /// The file.
        path: PathBuf,
        /// Header found.
        found: String,
    },
    /// A CSV row does not parse.
    #[error("{}:{line}: {reason}", path.display())]
    CsvRow {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// JSON serialisation failed.
    #[error("{}: JSON encoding failed: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// Rendering or encoding the plot failed.
    #[error("{}: plot failed: {reason}", path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number.
    pub epoch: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy in `[0, 1]`.
    pub train_acc: f64,
    /// Test accuracy in `[0, 1]`.
    pub test_acc: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// Wall-clock seconds of the epoch.
    pub wall_s: f64,
    /// Spike rate of each neuron layer on the test split (fraction of non-zero spikes over
    /// all elements and time steps), in network order; empty when not measured.
    #[serde(default)]
    pub spike_rates: Vec<f64>,
}

impl EpochRecord {
    /// The CSV row (without newline).
    pub fn to_csv_row(&self) -> String {
        let rates: Vec<String> = self.spike_rates.iter().map(f64::to_string).collect();
        format!(
            "{},{},{},{},{},{},{},{}",
            self.epoch,
            self.train_loss,
            self.train_acc,
            self.test_acc,
            self.lr,
            self.images_per_s,
            self.wall_s,
            rates.join(";")
        )
    }

    /// Parses a CSV row; the error is a description of what is wrong.
    pub fn from_csv_row(row: &str) -> Result<Self, String> {
        let fields: Vec<&str> = row.trim_end_matches('\r').split(',').collect();
        // 7 fields: a row of a file written before the spike-rate column.
        let (epoch, loss, tacc, vacc, lr, ips, wall, rates) = match fields[..] {
            [e, l, ta, va, lr, ips, w] => (e, l, ta, va, lr, ips, w, ""),
            [e, l, ta, va, lr, ips, w, r] => (e, l, ta, va, lr, ips, w, r),
            _ => return Err(format!("expected 8 fields, found {}", fields.len())),
        };
        let f = |name: &str, s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|e| format!("{name} {s:?}: {e}"))
        };
        Ok(EpochRecord {
            epoch: epoch
                .trim()
                .parse()
                .map_err(|e| format!("epoch {epoch:?}: {e}"))?,
            train_loss: f("train_loss", loss)?,
            train_acc: f("train_acc", tacc)?,
            test_acc: f("test_acc", vacc)?,
            lr: f("lr", lr)?,
            images_per_s: f("images_per_s", ips)?,
            wall_s: f("wall_s", wall)?,
            spike_rates: rates
                .split(';')
                .filter(|r| !r.trim().is_empty())
                .map(|r| f("spike_rates", r))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Appends one row to `path`, writing the header first if the file is new or empty; an existing
/// file must start with [`CSV_HEADER`].
pub fn append_csv(path: &Path, record: &EpochRecord) -> Result<(), MetricsError> {
    let io_err = |op, source| MetricsError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| io_err("open", e))?;
    let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
    let mut out = String::new();
    if len == 0 {
        out.push_str(CSV_HEADER);
        out.push('\n');
    } else {
        // A row cut short by a crash must not swallow the next one.
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))
            .and_then(|_| file.read_exact(&mut last))
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .map_err(|e| io_err("read", e))?;
        if last[0] != b'\n' {
            out.push('\n');
        }
        let mut first = String::new();
        BufReader::new(&file)
            .read_line(&mut first)
            .map_err(|e| io_err("read", e))?;
        let first = first.trim_end_matches(['\n', '\r']);
        if first != CSV_HEADER {
            return Err(MetricsError::CsvHeader {
                path: path.to_path_buf(),
                found: first.to_owned(),
            });
        }
    }
    out.push_str(&record.to_csv_row());
    out.push('\n');
    file.write_all(out.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| io_err("append", e))
}

/// Reads all rows of a CSV written by [`append_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<EpochRecord>, MetricsError> {
    let text = fs::read_to_string(path).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().trim_end_matches('\r');
    if header != CSV_HEADER && header != CSV_HEADER_V1 {
        return Err(MetricsError::CsvHeader {
            path: path.to_path_buf(),
            found: header.to_owned(),
        });
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            EpochRecord::from_csv_row(l).map_err(|reason| MetricsError::CsvRow {
                path: path.to_path_buf(),
                line: i + 2,
                reason,
            })
        })
        .collect()
}

/// Writes all rows (header included) atomically, replacing `path`.
pub fn write_csv(path: &Path, records: &[EpochRecord]) -> Result<(), MetricsError> {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in records {
        out.push_str(&r.to_csv_row());
        out.push('\n');
    }
    Ok(atomic_write(path, out.as_bytes())?)
}

/// Writes `records` as a pretty JSON array, atomically.
pub fn write_json(path: &Path, records: &[EpochRecord]) -> Result<(), MetricsError> {
    let mut bytes = serde_json::to_vec_pretty(records).map_err(|source| MetricsError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(atomic_write(path, &bytes)?)
}

/// Plot size and text switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlotOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Draw text if a font is available (`false` draws curves and axes only).
    pub text: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 1000,
            height: 450,
            text: true,
        }
    }
}

/// Registers the first readable font of [`FONT_CANDIDATES`] with plotters (once per process);
/// returns whether one is available.
pub fn plot_font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_CANDIDATES.iter().any(|p| {
            let Ok(bytes) = fs::read(p) else {
                return false;
            };
            // plotters keeps fonts for the life of the process; leak one file (< 1 MB) once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// Colours of the curves: loss, train accuracy, test accuracy.
pub const CURVE_COLORS: [(u8, u8, u8); 3] = [(0, 0, 255), (255, 0, 0), (0, 160, 0)];

/// Renders the plot into PNG bytes.
pub fn render_png(records: &[EpochRecord], options: PlotOptions) -> Result<Vec<u8>, String> {
    let (w, h) = (options.width.max(64), options.height.max(64));
    let text = options.text && plot_font_available();
    let len = usize::try_from(u64::from(w) * u64::from(h) * 3).map_err(|e| e.to_string())?;
    let mut rgb = vec![255u8; len];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(w / 2);
        let epochs: Vec<f64> = records.iter().map(|r| r.epoch as f64).collect();
        let x = padded_range(&epochs, false);
        let series = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
            records
                .iter()
                .map(|r| (r.epoch as f64, f(r)))
                .filter(|(_, y)| y.is_finite())
                .collect()
        };
        let loss = series(|r| r.train_loss);
        let loss_values: Vec<f64> = loss.iter().map(|p| p.1).collect();
        let [c0, c1, c2] = CURVE_COLORS.map(|(r, g, b)| RGBColor(r, g, b));
        Panel {
            title: "training loss",
            y_desc: "loss",
            curves: vec![Curve {
                label: "train loss",
                color: c0,
                points: loss,
            }],
            x: x.clone(),
            y: padded_range(&loss_values, true),
            legend_at: SeriesLabelPosition::UpperRight,
        }
        .draw(&left, text)?;
        Panel {
            title: "accuracy",
            y_desc: "accuracy",
            curves: vec![
                Curve {
                    label: "train acc",
                    color: c1,
                    points: series(|r| r.train_acc),
                },
                Curve {
                    label: "test acc",
                    color: c2,
                    points: series(|r| r.test_acc),
                },
            ],
            x,
            y: 0.0..1.0,
            legend_at: SeriesLabelPosition::LowerRight,
        }
        .draw(&right, text)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Renders the plot and writes it to `path` atomically.
pub fn write_plot(
    path: &Path,
    records: &[EpochRecord],
    options: PlotOptions,
) -> Result<(), MetricsError> {
    let bytes = render_png(records, options).map_err(|reason| MetricsError::Plot {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(atomic_write(path, &bytes)?)
}

/// Range over the finite `values`, padded by 5 % (from 0 when `from_zero` and all are ≥ 0);
/// `0..1` when there are none.
fn padded_range(values: &[f64], from_zero: bool) -> Range<f64> {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return 0.0..1.0;
    }
    let lo = if from_zero && lo >= 0.0 { 0.0 } else { lo };
    let span = hi - lo;
    if span <= 0.0 {
        return (lo - 0.5)..(hi + 0.5);
    }
    let pad = 0.05 * span;
    (if from_zero && lo == 0.0 {
        0.0
    } else {
        lo - pad
    })..(hi + pad)
}

/// Whole epochs without a decimal point, fractional ticks with one digit.
fn epoch_label(v: &f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// One curve of a panel.
struct Curve<'a> {
    label: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One chart: title, axes and curves.
struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    curves: Vec<Curve<'a>>,
    x: Range<f64>,
    y: Range<f64>,
    legend_at: SeriesLabelPosition,
}

impl Panel<'_> {
    fn draw<DB: DrawingBackend>(
        self,
        area: &DrawingArea<DB, Shift>,
        text: bool,
    ) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let Panel {
            title,
            y_desc,
            curves,
            x,
            y,
            legend_at,
        } = self;
        let mut builder = ChartBuilder::on(area);
        builder.margin(15);
        if text {
            builder
                .caption(title, (FONT_FAMILY, 20))
                .x_label_area_size(40)
                .y_label_area_size(60);
        } else {
            builder.x_label_area_size(8).y_label_area_size(8);
        }
        let mut chart = builder
            .build_cartesian_2d(x, y)
            .map_err(|e| e.to_string())?;
        {
            let mut mesh = chart.configure_mesh();
            if text {
                mesh.x_desc("epoch")
                    .y_desc(y_desc)
                    .x_label_formatter(&epoch_label)
                    .label_style((FONT_FAMILY, 13))
                    .axis_desc_style((FONT_FAMILY, 15));
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(|e| e.to_string())?;
        }
        for Curve {
            label,
            color,
            points,
        } in &curves
        {
            let color = *color;
            let drawn = chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
            if text {
                drawn.label(*label).legend(move |(lx, ly)| {
                    PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2))
                });
            }
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        if text {
            chart
                .configure_series_labels()
                .position(legend_at)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT_FAMILY, 13))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The metrics of a run, kept in memory and mirrored to `metrics.csv`, `metrics.json`,
/// `metrics.png` and a TensorBoard event file ([`crate::tensorboard`]) in one directory.
#[derive(Debug, Clone)]
pub struct MetricsLog {
    dir: PathBuf,
    records: Vec<EpochRecord>,
    plot: PlotOptions,
}

impl MetricsLog {
    /// CSV file name.
    pub const CSV: &'static str = "metrics.csv";
    /// JSON file name.
    pub const JSON: &'static str = "metrics.json";
    /// PNG file name.
    pub const PNG: &'static str = "metrics.png";

    /// A log writing into `dir` (which must exist). Existing rows of `dir/metrics.csv` are read
    /// back so a resumed run keeps its history.
    pub fn open(dir: &Path) -> Result<Self, MetricsError> {
        let csv = dir.join(Self::CSV);
        let records = if csv.is_file() {
            read_csv(&csv)?
        } else {
            Vec::new()
        };
        Ok(MetricsLog {
            dir: dir.to_path_buf(),
            records,
            plot: PlotOptions::default(),
        })
    }

    /// Sets the plot options.
    pub fn with_plot_options(mut self, plot: PlotOptions) -> Self {
        self.plot = plot;
        self
    }

    /// Records so far.
    pub fn records(&self) -> &[EpochRecord] {
        &self.records
    }

    /// Drops records with `epoch >= first_dropped` and rewrites all files (when resuming from a
    /// checkpoint older than the last logged epoch).
    pub fn truncate_from(&mut self, first_dropped: u64) -> Result<(), MetricsError> {
        self.records.retain(|r| r.epoch < first_dropped);
        write_csv(&self.dir.join(Self::CSV), &self.records)?;
        self.write_views()
    }

    /// Appends a record to the CSV, then rewrites the JSON and the PNG.
    pub fn push(&mut self, record: EpochRecord) -> Result<(), MetricsError> {
        append_csv(&self.dir.join(Self::CSV), &record)?;
        self.records.push(record);
        self.write_views()
    }

    fn write_views(&self) -> Result<(), MetricsError> {
        write_json(&self.dir.join(Self::JSON), &self.records)?;
        // TensorBoard: rewritten whole, so it always holds exactly the logged epochs.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            - self.records.iter().map(|r| r.wall_s).sum::<f64>();
        crate::checkpoint::atomic_write(
            &self.dir.join(crate::tensorboard::EVENTS_FILE),
            &crate::tensorboard::events_file(&self.records, start),
        )?;
        write_plot(&self.dir.join(Self::PNG), &self.records, self.plot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u64) -> Vec<EpochRecord> {
        (0..n)
            .map(|e| {
                let t = e as f64;
                EpochRecord {
                    epoch: e,
                    train_loss: 2.3 * (-t / 6.0).exp() + 0.2,
                    train_acc: 1.0 - 0.9 * (-t / 5.0).exp(),
                    test_acc: 0.95 - 0.85 * (-t / 5.0).exp(),
                    lr: 0.01 * (1.0 + (std::f64::consts::PI * t / n as f64).cos()) / 2.0,
                    images_per_s: 1234.5,
                    wall_s: 12.25 + t,
                    spike_rates: vec![0.5 - 0.01 * t, 0.1875],
                }
            })
            .collect()
    }

    fn decode(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let decoder = png::Decoder::new(bytes);
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png frame");
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    fn count_color(info: &png::OutputInfo, buf: &[u8], rgb: (u8, u8, u8)) -> usize {
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.chunks_exact(3)
            .filter(|p| (p[0], p[1], p[2]) == rgb)
            .count()
    }

    #[test]
    fn csv_round_trip_and_header_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.csv");
        let mut recs = records(3);
        recs[1].train_loss = f64::NAN;
        recs[2].lr = f64::INFINITY;
        for r in &recs {
            append_csv(&path, r).expect("append");
        }
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&format!("{CSV_HEADER}\n0,")));
        assert_eq!(text.lines().count(), 4);
        let back = read_csv(&path).expect("read csv");
        assert_eq!(back.len(), 3);
        assert!(back[1].train_loss.is_nan());
        assert_eq!(back[0], recs[0]);
        assert_eq!(back[2], recs[2]);

        // A torn last row stays on its own line; the next row is intact.
        let torn = dir.path().join("torn.csv");
        fs::write(&torn, format!("{CSV_HEADER}\n0,1.5,0.")).expect("write");
        append_csv(&torn, &recs[0]).expect("append");
        let text = fs::read_to_string(&torn).expect("read");
        assert_eq!(text.lines().nth(2), Some(recs[0].to_csv_row().as_str()));

        let other = dir.path().join("other.csv");
        fs::write(&other, "a,b\n").expect("write");
        assert!(matches!(
            append_csv(&other, &recs[0]),
            Err(MetricsError::CsvHeader { .. })
        ));
        fs::write(&other, format!("{CSV_HEADER}\n1,2,3\n")).expect("write");
        let err = read_csv(&other).expect_err("bad row");
        assert!(matches!(err, MetricsError::CsvRow { line: 2, .. }), "{err}");
        fs::write(&other, format!("{CSV_HEADER}\n1,2,0.5,0.5,0.1,9,3,0.5;x\n")).expect("write");
        let err = read_csv(&other).expect_err("bad spike rate");
        assert!(err.to_string().contains("spike_rates \"x\""), "{err}");

        // A file of the layout before the spike-rate column is still read (runs resume).
        let v1 = dir.path().join("v1.csv");
        fs::write(
            &v1,
            format!("{CSV_HEADER_V1}\n1,0.5,0.8,0.85,0.05,150,10\n"),
        )
        .expect("write");
        let back = read_csv(&v1).expect("v1 file");
        assert_eq!((back[0].test_acc, back[0].spike_rates.len()), (0.85, 0));
    }

    #[test]
    fn json_is_an_array_of_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.json");
        let recs = records(4);
        write_json(&path, &recs).expect("json");
        let back: Vec<EpochRecord> =
            serde_json::from_slice(&fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back, recs);
        let value: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("read")).expect("parse");
        assert_eq!(value[2]["epoch"], 2);
        assert_eq!(value[0]["images_per_s"], 1234.5);
    }

    #[test]
    fn png_has_size_and_curves() {
        let recs = records(20);
        for text in [true, false] {
            let opts = PlotOptions {
                width: 800,
                height: 300,
                text,
            };
            let bytes = render_png(&recs, opts).expect("render");
            let (info, buf) = decode(&bytes);
            assert_eq!((info.width, info.height), (800, 300));
            for c in CURVE_COLORS {
                let n = count_color(&info, &buf, c);
                assert!(n > 200, "text={text}: only {n} pixels of {c:?}");
            }
            // The loss curve lives in the left half, the accuracy curves in the right half.
            let left_blue = buf
                .chunks_exact(3)
                .enumerate()
                .filter(|(i, p)| (i % 800) < 400 && (p[0], p[1], p[2]) == CURVE_COLORS[0])
                .count();
            assert_eq!(left_blue, count_color(&info, &buf, CURVE_COLORS[0]));
        }
    }

    #[test]
    fn png_handles_degenerate_inputs() {
        let one = records(1);
        let mut bad = records(3);
        bad[0].train_loss = f64::NAN;
        bad[1].train_loss = f64::INFINITY;
        for recs in [Vec::new(), one, bad] {
            let bytes = render_png(&recs, PlotOptions::default()).expect("render");
            let (info, _) = decode(&bytes);
            assert_eq!((info.width, info.height), (1000, 450));
        }
    }

    #[test]
    fn metrics_log_writes_all_files_and_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recs = records(5);
        let mut log = MetricsLog::open(dir.path()).expect("open");
        for r in &recs[..3] {
            log.push(r.clone()).expect("push");
        }
        for f in [
            MetricsLog::CSV,
            MetricsLog::JSON,
            MetricsLog::PNG,
            crate::tensorboard::EVENTS_FILE,
        ] {
            assert!(dir.path().join(f).is_file(), "{f} missing");
        }
        let mut log = MetricsLog::open(dir.path()).expect("reopen");
        assert_eq!(log.records(), &recs[..3]);
        log.truncate_from(2).expect("truncate");
        log.push(recs[2].clone()).expect("push");
        log.push(recs[3].clone()).expect("push");
        assert_eq!(
            read_csv(&dir.path().join(MetricsLog::CSV)).expect("csv"),
            &recs[..4]
        );
        // The event file holds exactly the logged epochs (version event + 4).
        let events = fs::read(dir.path().join(crate::tensorboard::EVENTS_FILE)).expect("events");
        let expected = crate::tensorboard::events_file(&recs[..4], 0.0);
        assert_eq!(events.len(), expected.len());
        // Temp files are cleaned up.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 4);
    }

    /// Writes the plot to `$EMPF_PLOT_OUT` for a person to look at (no-op without the variable).
    #[test]
    fn writes_plot_for_inspection_when_asked() {
        if let Some(path) = std::env::var_os("EMPF_PLOT_OUT") {
            let path = PathBuf::from(path);
            write_plot(&path, &records(30), PlotOptions::default()).expect("plot");
            let no_text = PlotOptions {
                text: false,
                ..PlotOptions::default()
            };
            write_plot(&path.with_extension("notext.png"), &records(3), no_text).expect("plot");
        }
    }
}
