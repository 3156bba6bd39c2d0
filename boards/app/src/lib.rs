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
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Index of the largest score (lowest index on ties), as `empf_core::top_k` defines it.
    pub class: usize,
    len: usize,
    int: [i32; MAX_CLASSES],
    float: [f32; MAX_CLASSES],
    path: Path,
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
}

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
        input_words(model, path) + model.arena_words_for(mode)
    }

    /// Decodes `bytes` (zero-copy; they stay in flash) and checks that `arena` is large enough.
    pub fn new(
        bytes: &'m [u8],
        path: Path,
        mode: Mode,
        norm: PixelNorm,
        arena: &'a mut [u32],
    ) -> Result<Self, AppError> {
        let model = Model::decode(bytes)?;
        if model.classes() > MAX_CLASSES {
            return Err(AppError::TooManyClasses {
                classes: model.classes(),
            });
        }
        let table = match path {
            Path::Integer => model
                .pixel_table(norm)
                .map_err(|_| AppError::NoIntegerPath)?,
            Path::Float => [0; 256],
        };
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
        let classes = self.model.classes();
        let (input, arena) = self.arena.split_at_mut(self.input_words);
        let mut scores = Scores {
            class: 0,
            len: classes,
            int: [0; MAX_CLASSES],
            float: [0.0; MAX_CLASSES],
            path: self.path,
        };
        match self.path {
            Path::Integer => {
                let x: &mut [i8] = &mut bytemuck::cast_slice_mut(input)[..want];
                Model::quantize_pixels(&self.table, pixels, x)?;
                let out = &mut scores.int[..classes];
                self.model.infer_fixed(x, self.mode, arena, out)?;
                scores.class = argmax(out);
            }
            Path::Float => {
                let x: &mut [f32] = &mut bytemuck::cast_slice_mut(input)[..want];
                self.norm.apply_all(pixels, x)?;
                let out = &mut scores.float[..classes];
                self.model.infer_float(x, self.mode, arena, out)?;
                scores.class = argmax(out);
            }
        }
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
        match Classifier::new(bytes, path, mode, norm, arena) {
            Ok(c) => {
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
        struct List<'s>(&'s Scores);
        impl fmt::Display for List<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for v in self.0.integer() {
                    write!(f, " {v}")?;
                }
                for v in self.0.float() {
                    write!(f, " {v}")?;
                }
                Ok(())
            }
        }
        self.line(format_args!("class {} scores{}", s.class, List(s)))
    }
}
