//! Build-script side of every firmware (feature `build`, host only): embed the model, size the
//! static arena from it, precompute the integer path's pixel table, and set up the linker's
//! memory map. One implementation, so every board sizes its RAM the same way.

extern crate std;

use crate::{Classifier, Mode, Path};
use empf_core::{Model, PixelNorm};
use std::format;
use std::path::PathBuf;
use std::string::String;
use std::vec::Vec;
use std::{env, fs, println};

/// A file path from environment variable `var` (relative to the firmware crate), `default`
/// when unset; cargo re-runs the build script when either changes.
pub fn input_path(var: &str, default: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let p = env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    println!("cargo:rerun-if-changed={}", p.display());
    p
}

/// `OUT_DIR` of the running build script.
pub fn out_dir() -> PathBuf {
    PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"))
}

/// Copies the memory map (`EMPF_BOARD_MEMORY`, else `memory.x`) to `OUT_DIR/memory.x`, where
/// cortex-m-rt's `link.x` includes it.
pub fn memory_map() {
    let memory = input_path("EMPF_BOARD_MEMORY", "memory.x");
    let out = out_dir();
    fs::copy(&memory, out.join("memory.x"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", memory.display()));
    println!("cargo:rustc-link-search={}", out.display());
}

/// The embedded model and what the firmware's statics need.
pub struct Embedded {
    /// The model file's bytes (copied to `OUT_DIR/model.empf`).
    pub bytes: Vec<u8>,
    /// `Classifier::arena_words` for the firmware's path and mode (1 when the model does not
    /// decode: the firmware then reports the error at run time, as a corrupted flash would).
    pub arena_words: usize,
    /// `C·H·W` of one input (1 when the model does not decode).
    pub input_pixels: usize,
    /// `Model::pixel_table(norm)` (zeros without an integer path).
    pub pixel_table: [i8; 256],
    /// Whether the model decoded.
    pub decoded: bool,
}

/// Reads the model (`EMPF_BOARD_MODEL`, default `../models/fmnist-mcu.empf`), writes
/// `OUT_DIR/model.empf` and sizes the statics for `path` and `mode`.
pub fn embed_model(path: Path, mode: Mode, norm: PixelNorm) -> Embedded {
    let model_path = input_path("EMPF_BOARD_MODEL", "../models/fmnist-mcu.empf");
    let bytes =
        fs::read(&model_path).unwrap_or_else(|e| panic!("reading {}: {e}", model_path.display()));
    let mut e = Embedded {
        arena_words: 1,
        input_pixels: 1,
        pixel_table: [0; 256],
        bytes: Vec::new(),
        decoded: false,
    };
    match Model::decode(&bytes) {
        Ok(m) => {
            e.decoded = true;
            e.arena_words = Classifier::arena_words(&m, path, mode);
            e.input_pixels = m.input_shape().numel();
            if let Ok(t) = m.pixel_table(norm) {
                e.pixel_table = t;
            }
        }
        Err(err) => println!(
            "cargo:warning={} does not decode ({err}); the firmware will report it",
            model_path.display()
        ),
    }
    fs::write(out_dir().join("model.empf"), &bytes).expect("writing OUT_DIR/model.empf");
    e.bytes = bytes;
    e
}

impl Embedded {
    /// Rust source of the firmware's constants (`include!`d from `OUT_DIR/sizes.rs`):
    /// `ARENA_WORDS`, `INPUT_PIXELS`, `PIXEL_TABLE`, `PATH`, `MODE`, plus `extra` lines.
    pub fn write_sizes(&self, path: Path, mode: Mode, extra: &str) {
        let src: String = format!(
            "/// Words of the static arena: `Classifier::arena_words` of the embedded model.\n\
             pub const ARENA_WORDS: usize = {};\n\
             /// Pixels per image (`C·H·W` of the embedded model).\n\
             pub const INPUT_PIXELS: usize = {};\n\
             /// `Model::pixel_table` of the embedded model, computed on the host.\n\
             #[allow(dead_code)]\n\
             pub const PIXEL_TABLE: [i8; 256] = {:?};\n\
             /// Arithmetic of this firmware.\n\
             #[allow(dead_code)]\n\
             pub const PATH: empf_board_app::Path = empf_board_app::Path::{path:?};\n\
             /// Execution order of this firmware.\n\
             #[allow(dead_code)]\n\
             pub const MODE: empf_board_app::Mode = empf_board_app::Mode::{mode:?};\n{extra}",
            self.arena_words, self.input_pixels, self.pixel_table
        );
        fs::write(out_dir().join("sizes.rs"), src).expect("writing OUT_DIR/sizes.rs");
    }
}
