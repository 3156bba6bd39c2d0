//! Embeds the model and sizes the static arena and pixel buffer from the model itself.
//!
//! Input (path relative to this crate, overridable for a freshly exported model):
//! `EMPF_BOARD_MODEL` (default `../models/fmnist-mcu.empf`).
//!
//! A model that does not decode still builds: the firmware reports the decode error on the UART
//! at run time (as a corrupted flash image would), with a minimal arena.

use empf_board_app::{Classifier, Mode, Path, PixelNorm};
use empf_core::Model;
use std::env;
use std::fs;
use std::path::PathBuf;

/// The arithmetic and execution order this firmware runs (must match `src/main.rs`).
const PATH: Path = Path::Integer;
const MODE: Mode = Mode::Parallel;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copying memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=EMPF_BOARD_MODEL");
    let model_path = env::var_os("EMPF_BOARD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../models/fmnist-mcu.empf"));
    println!("cargo:rerun-if-changed={}", model_path.display());
    let model =
        fs::read(&model_path).unwrap_or_else(|e| panic!("reading {}: {e}", model_path.display()));

    // The pixel table is computed here, on the host: the firmware then contains no float code
    // (the RP2040 has no FPU).
    let mut pixel_table = [0i8; 256];
    let (arena_words, pixels) = match Model::decode(&model) {
        Ok(m) => {
            if let Ok(t) = m.pixel_table(PixelNorm::FASHION_MNIST) {
                pixel_table = t;
            }
            (
                Classifier::arena_words(&m, PATH, MODE),
                m.input_shape().numel(),
            )
        }
        Err(e) => {
            println!(
                "cargo:warning={} does not decode ({e}); the firmware will report it",
                model_path.display()
            );
            (1, 1)
        }
    };

    fs::write(out.join("model.empf"), &model).unwrap();
    fs::write(
        out.join("sizes.rs"),
        format!(
            "/// Words of the static arena: `Classifier::arena_words` of the embedded model.\n\
             pub const ARENA_WORDS: usize = {arena_words};\n\
             /// Pixels per image (`C·H·W` of the embedded model).\n\
             pub const INPUT_PIXELS: usize = {pixels};\n\
             /// `Model::pixel_table(PixelNorm::FASHION_MNIST)` of the embedded model.\n\
             pub const PIXEL_TABLE: [i8; 256] = {pixel_table:?};\n"
        ),
    )
    .unwrap();
}
