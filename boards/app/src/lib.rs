//! Board-independent firmware logic, shared by every board in this workspace.
//!
//! * [`Classifier`]: decodes a model from flash bytes (zero-copy, via `empf-core`), owns the
//!   one caller-provided arena (input buffer + inference arena, sized by
//!   [`Classifier::arena_words`] at build time) and classifies 8-bit images on the integer or
//!   the float path, sequential or parallel. No allocation, no panics on any model bytes.
//! * [`Board`]: the serial protocol and the status LED, generic over the embedded-hal 1.0
//!   family traits (`embedded_hal_nb::serial::{Read, Write}` for the UART,
//!   `embedded_hal::digital::OutputPin` for the LED), so the same code runs on every board and
//!   under `embedded-hal-mock` on the host.
//!
//! Serial protocol (8-bit, text replies, one line each):
//! * on [`Board::load`]: `empf ready T=4 classes=10 input=1x28x28 path=integer mode=sequential
//!   arena=51648` or `error model: <what>`;
//! * host → device: the three bytes `IMG` then `C·H·W` raw pixels (`u8`); bytes before `IMG` are
//!   skipped, so a host can resynchronise by resending;
//! * device → host: `class <k> scores <s0> <s1> …` (integer path: summed logits in units of the
//!   model's `logit_scale`; float path: logits) or `error <what>`.
//!
//! LED: on while an image is being classified, off when the reply is sent; on and left on after
//! a model that does not load (the firmware then stops: a visible, reported failure, not a hang).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::fmt::{self, Write as _};

use embedded_hal::digital::OutputPin;
use embedded_hal_nb::serial::{Read, Write};
pub use empf_core::{Error as CoreError, Mode, Model, PixelNorm};

#[cfg(feature = "build")]
pub mod build_support;

/// Most classes a board reports (scores live on the stack).
pub const MAX_CLASSES: usize = 32;
/// Sync bytes that start an image frame.
pub const FRAME_SYNC: &[u8; 3] = b"IMG";

/// Which arithmetic the board runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Path {
    /// Fixed-point: 8-bit spikes, integer accumulators, no float (Cortex-M0+/M3).
    Integer,
    /// `f32` (Cortex-M4F/M7 with an FPU).
    Float,
}

/// What went wrong on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AppError {
    /// The model bytes do not decode, or inference refused its inputs.
    Model(CoreError),
    /// The integer path was asked of a model exported without calibration.
    NoIntegerPath,
    /// The model has more classes than [`MAX_CLASSES`].
    TooManyClasses {
        /// Classes the model declares.
        classes: usize,
    },
    /// The arena is smaller than [`Classifier::arena_words`] for this model.
    ArenaTooSmall {
        /// Words needed.
        need: usize,
        /// Words given.
        have: usize,
    },
    /// The pixel buffer length is not the model's `C·H·W`.
    InputLength {
        /// Pixels the model takes.
        want: usize,
        /// Pixels given.
        got: usize,
    },
    /// The UART reported an error.
    Serial,
    /// The LED pin reported an error.
    Led,
}

impl From<CoreError> for AppError {
    fn from(e: CoreError) -> Self {
        AppError::Model(e)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Model(e) => write!(f, "model: {e}"),
            AppError::NoIntegerPath => f.write_str("model has no integer path (export calibrated)"),
            AppError::TooManyClasses { classes } => {
                write!(
                    f,
                    "model has {classes} classes, firmware takes {MAX_CLASSES}"
                )
            }
            AppError::ArenaTooSmall { need, have } => {
                write!(f, "arena has {have} words, model needs {need}")
            }
            AppError::InputLength { want, got } => {
                write!(f, "image has {got} pixels, model takes {want}")
            }
            AppError::Serial => f.write_str("serial error"),
            AppError::Led => f.write_str("LED pin error"),
        }
    }
}

/// The scores of one classified image.
#[derive(Clone, Copy, Debug)]
pub struct Scores {
    /// Index of the largest score (lowest index on ties), as `empf_core::top_k` defines it.
    pub class: usize,
    len: usize,
    int: [i32; MAX_CLASSES],
    float: [f32; MAX_CLASSES],
    path: Path,
    // Set by the path that produced the scores, so integer-only firmware links no float
    // formatting.
    list: fn(&Scores, &mut fmt::Formatter<'_>) -> fmt::Result,
}

impl PartialEq for Scores {
    fn eq(&self, other: &Self) -> bool {
        self.class == other.class
            && self.path == other.path
            && self.integer() == other.integer()
            && self.float() == other.float()
    }
}

fn list_integer(s: &Scores, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    s.integer().iter().try_for_each(|v| write!(f, " {v}"))
}

fn list_float(s: &Scores, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    s.float().iter().try_for_each(|v| write!(f, " {v}"))
}

/// The scores separated by spaces, each preceded by one: ` s0 s1 …`.
impl fmt::Display for Scores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.list)(self, f)
    }
}

impl Scores {
    /// Integer-path summed logits (empty on the float path).
    pub fn integer(&self) -> &[i32] {
        match self.path {
            Path::Integer => &self.int[..self.len],
            Path::Float => &[],
        }
    }
    /// Float-path logits (empty on the integer path).
    pub fn float(&self) -> &[f32] {
        match self.path {
            Path::Float => &self.float[..self.len],
            Path::Integer => &[],
        }
    }
}

/// A decoded model, its pixel transform and the arena it runs in.
pub struct Classifier<'m, 'a> {
    model: Model<'m>,
    path: Path,
    mode: Mode,
    norm: PixelNorm,
    table: [i8; 256],
    input_words: usize,
    arena: &'a mut [u32],
    // The path's kernel entry, chosen once by the constructor: a firmware that only calls
    // [`Classifier::new_integer`] never references the float kernels, so the linker drops them
    // (and all soft-float code on an FPU-less core).
    run: RunFn<'m, 'a>,
}

type RunFn<'m, 'a> = fn(&mut Classifier<'m, 'a>, &[u8]) -> Result<Scores, AppError>;

fn input_words(model: &Model<'_>, path: Path) -> usize {
    let n = model.input_shape().numel();
    match path {
        Path::Integer => n.div_ceil(4),
        Path::Float => n,
    }
}

impl<'m, 'a> Classifier<'m, 'a> {
    /// Words of arena a board must provide for `model` on `path` in `mode`: the converted input
    /// image plus `empf-core`'s inference arena. Build scripts call this on the host to size
    /// the static arena.
    pub fn arena_words(model: &Model<'_>, path: Path, mode: Mode) -> usize {
        input_words(model, path)
            + match path {
                // 8-bit spikes: the integer path's arena is the smaller one.
                Path::Integer => model.arena_words_integer(mode),
                Path::Float => model.arena_words_float(mode),
            }
    }

    /// Decodes `bytes` (zero-copy; they stay in flash) and checks that `arena` is large enough.
    /// On the integer path the pixel table is computed here with `f32` arithmetic (once); see
    /// [`Classifier::new_integer`] for firmware that must not contain float code.
    pub fn new(
        bytes: &'m [u8],
        path: Path,
        mode: Mode,
        norm: PixelNorm,
        arena: &'a mut [u32],
    ) -> Result<Self, AppError> {
        let model = Model::decode(bytes)?;
        match path {
            Path::Integer => {
                let table = model
                    .pixel_table(norm)
                    .map_err(|_| AppError::NoIntegerPath)?;
                Self::build(
                    model,
                    Path::Integer,
                    mode,
                    norm,
                    table,
                    arena,
                    Self::run_integer,
                )
            }
            Path::Float => Self::build(
                model,
                Path::Float,
                mode,
                norm,
                [0; 256],
                arena,
                Self::run_float,
            ),
        }
    }

    /// The integer path with a pixel table computed ahead of time (on the host, by the build
    /// script: `Model::pixel_table`). Nothing reachable from here uses floating point, so a
    /// firmware built on it links no float kernels and no soft-float routines.
    pub fn new_integer(
        bytes: &'m [u8],
        mode: Mode,
        table: [i8; 256],
        arena: &'a mut [u32],
    ) -> Result<Self, AppError> {
        let model = Model::decode(bytes)?;
        if model.fixed_meta().is_none() {
            return Err(AppError::NoIntegerPath);
        }
        Self::build(
            model,
            Path::Integer,
            mode,
            PixelNorm::UNIT,
            table,
            arena,
            Self::run_integer,
        )
    }

    fn build(
        model: Model<'m>,
        path: Path,
        mode: Mode,
        norm: PixelNorm,
        table: [i8; 256],
        arena: &'a mut [u32],
        run: RunFn<'m, 'a>,
    ) -> Result<Self, AppError> {
        if model.classes() > MAX_CLASSES {
            return Err(AppError::TooManyClasses {
                classes: model.classes(),
            });
        }
        let need = Self::arena_words(&model, path, mode);
        if arena.len() < need {
            return Err(AppError::ArenaTooSmall {
                need,
                have: arena.len(),
            });
        }
        Ok(Classifier {
            input_words: input_words(&model, path),
            model,
            path,
            mode,
            norm,
            table,
            arena,
            run,
        })
    }

    /// The decoded model.
    pub fn model(&self) -> &Model<'m> {
        &self.model
    }
    /// The arithmetic in use.
    pub fn path(&self) -> Path {
        self.path
    }
    /// The execution order in use.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Classifies one image of `C·H·W` raw 8-bit pixels.
    pub fn classify(&mut self, pixels: &[u8]) -> Result<Scores, AppError> {
        let want = self.model.input_shape().numel();
        if pixels.len() != want {
            return Err(AppError::InputLength {
                want,
                got: pixels.len(),
            });
        }
        (self.run)(self, pixels)
    }

    fn empty_scores(&self, list: fn(&Scores, &mut fmt::Formatter<'_>) -> fmt::Result) -> Scores {
        Scores {
            class: 0,
            len: self.model.classes(),
            int: [0; MAX_CLASSES],
            float: [0.0; MAX_CLASSES],
            path: self.path,
            list,
        }
    }

    fn run_integer(&mut self, pixels: &[u8]) -> Result<Scores, AppError> {
        let mut scores = self.empty_scores(list_integer);
        let (input, arena) = self.arena.split_at_mut(self.input_words);
        let x: &mut [i8] = &mut bytemuck::cast_slice_mut(input)[..pixels.len()];
        Model::quantize_pixels(&self.table, pixels, x)?;
        let out = &mut scores.int[..scores.len];
        self.model.infer_fixed(x, self.mode, arena, out)?;
        scores.class = argmax(out);
        Ok(scores)
    }

    fn run_float(&mut self, pixels: &[u8]) -> Result<Scores, AppError> {
        let mut scores = self.empty_scores(list_float);
        let (input, arena) = self.arena.split_at_mut(self.input_words);
        let x: &mut [f32] = &mut bytemuck::cast_slice_mut(input)[..pixels.len()];
        self.norm.apply_all(pixels, x)?;
        let out = &mut scores.float[..scores.len];
        self.model.infer_float(x, self.mode, arena, out)?;
        scores.class = argmax(out);
        Ok(scores)
    }
}

/// Index of the largest value, lowest index on ties: `empf_core::top_k::<1>`.
fn argmax<T: PartialOrd + Copy>(v: &[T]) -> usize {
    empf_core::top_k::<1, T>(v).first().map_or(0, |&(i, _)| i)
}

/// A UART and a status LED: the board's whole user interface.
pub struct Board<S, P> {
    serial: S,
    led: P,
}

/// `core::fmt::Write` over a blocking `embedded-hal-nb` serial writer.
struct SerialFmt<'s, S> {
    serial: &'s mut S,
    failed: bool,
}

impl<S: Write<u8>> fmt::Write for SerialFmt<'_, S> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if nb::block!(self.serial.write(b)).is_err() {
                self.failed = true;
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

impl<S, P> Board<S, P>
where
    S: Read<u8> + Write<u8>,
    P: OutputPin,
{
    /// Wraps the board's UART and LED pin.
    pub fn new(serial: S, led: P) -> Self {
        Board { serial, led }
    }

    /// Gives the peripherals back.
    pub fn release(self) -> (S, P) {
        (self.serial, self.led)
    }

    fn line(&mut self, args: fmt::Arguments<'_>) -> Result<(), AppError> {
        let mut w = SerialFmt {
            serial: &mut self.serial,
            failed: false,
        };
        let r = w.write_fmt(args).and_then(|_| w.write_str("\n"));
        if r.is_err() || w.failed {
            return Err(AppError::Serial);
        }
        nb::block!(self.serial.flush()).map_err(|_| AppError::Serial)
    }

    /// Loads the model from flash bytes and announces it (`empf ready …`). On failure it
    /// reports `error …` on the UART, switches the LED on and returns the error.
    pub fn load<'m, 'a>(
        &mut self,
        bytes: &'m [u8],
        path: Path,
        mode: Mode,
        norm: PixelNorm,
        arena: &'a mut [u32],
    ) -> Result<Classifier<'m, 'a>, AppError> {
        let c = Classifier::new(bytes, path, mode, norm, arena);
        self.announce(c)
    }

    /// [`Board::load`] on the integer path with a pixel table computed ahead of time
    /// ([`Classifier::new_integer`]): firmware without any float code.
    pub fn load_integer<'m, 'a>(
        &mut self,
        bytes: &'m [u8],
        mode: Mode,
        table: [i8; 256],
        arena: &'a mut [u32],
    ) -> Result<Classifier<'m, 'a>, AppError> {
        let c = Classifier::new_integer(bytes, mode, table, arena);
        self.announce(c)
    }

    fn announce<'m, 'a>(
        &mut self,
        c: Result<Classifier<'m, 'a>, AppError>,
    ) -> Result<Classifier<'m, 'a>, AppError> {
        match c {
            Ok(c) => {
                let (path, mode) = (c.path(), c.mode());
                self.led.set_low().map_err(|_| AppError::Led)?;
                let m = c.model();
                let s = m.input_shape();
                let words = Classifier::arena_words(m, path, mode);
                self.line(format_args!(
                    "empf ready T={} classes={} input={}x{}x{} path={} mode={} arena={}",
                    m.time_steps(),
                    m.classes(),
                    s.c,
                    s.h,
                    s.w,
                    match path {
                        Path::Integer => "integer",
                        Path::Float => "float",
                    },
                    match mode {
                        Mode::Sequential => "sequential",
                        Mode::Parallel => "parallel",
                    },
                    words * 4
                ))?;
                Ok(c)
            }
            Err(e) => {
                // Report first, then light the LED; if even the UART fails the LED still shows it.
                let reported = self.line(format_args!("error {e}"));
                self.led.set_high().map_err(|_| AppError::Led)?;
                reported?;
                Err(e)
            }
        }
    }

    /// Waits for one image frame, classifies it and replies. Errors of the image or the model
    /// are replied as `error …` and returned; the board can keep serving after them.
    pub fn serve_one(
        &mut self,
        classifier: &mut Classifier<'_, '_>,
        pixels: &mut [u8],
    ) -> Result<Scores, AppError> {
        let want = classifier.model().input_shape().numel();
        if pixels.len() < want {
            let e = AppError::InputLength {
                want,
                got: pixels.len(),
            };
            self.line(format_args!("error {e}"))?;
            return Err(e);
        }
        let pixels = &mut pixels[..want];
        self.wait_for_sync()?;
        for p in pixels.iter_mut() {
            *p = nb::block!(self.serial.read()).map_err(|_| AppError::Serial)?;
        }
        self.led.set_high().map_err(|_| AppError::Led)?;
        let result = classifier.classify(pixels);
        self.led.set_low().map_err(|_| AppError::Led)?;
        match result {
            Ok(s) => {
                self.reply(&s)?;
                Ok(s)
            }
            Err(e) => {
                self.line(format_args!("error {e}"))?;
                Err(e)
            }
        }
    }

    fn wait_for_sync(&mut self) -> Result<(), AppError> {
        let mut seen = [0u8; 3];
        loop {
            let b = nb::block!(self.serial.read()).map_err(|_| AppError::Serial)?;
            seen = [seen[1], seen[2], b];
            if &seen == FRAME_SYNC {
                return Ok(());
            }
        }
    }

    fn reply(&mut self, s: &Scores) -> Result<(), AppError> {
        self.line(format_args!("class {} scores{}", s.class, s))
    }
}
