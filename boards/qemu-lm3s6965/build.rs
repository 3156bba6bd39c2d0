//! Embeds the model and the test images, and sizes the static arena from the model itself.
//!
//! Inputs (paths relative to this crate, overridable for freshly exported models):
//! `EMPF_BOARD_MODEL` (default `../models/fmnist-mcu.empf`), `EMPF_BOARD_IMAGES` (idx3, default
//! `../models/fmnist-test32-images-idx3-ubyte`), `EMPF_BOARD_LABELS` (idx1, default
//! `../models/fmnist-test32-labels-idx1-ubyte`), `EMPF_BOARD_MEMORY` (linker memory map,
//! default `memory.x`), `EMPF_BOARD_PATH` (`integer` | `float`), `EMPF_BOARD_MODE`
//! (`sequential` | `parallel`).
//!
//! A model that does not decode still builds: the firmware reports the decode error at run time
//! (that is how a corrupted flash image behaves on a real board), with a minimal arena.

use empf_board_app::{Classifier, Mode, Path, PixelNorm};
use empf_core::Model;
use std::env;
use std::fs;
use std::path::PathBuf;

fn input(var: &str, default: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let p = env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    println!("cargo:rerun-if-changed={}", p.display());
    p
}

fn read(p: &PathBuf) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // The memory map: `memory.x` (LM3S6965, 64 KiB RAM) unless `EMPF_BOARD_MEMORY` names
    // another, e.g. `memory-mps2-an385.x` for QEMU's mps2-an385 (Cortex-M3, 4 MiB RAM).
    let memory = input("EMPF_BOARD_MEMORY", "memory.x");
    fs::copy(&memory, out.join("memory.x"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", memory.display()));
    println!("cargo:rustc-link-search={}", out.display());

    let model_path = input("EMPF_BOARD_MODEL", "../models/fmnist-mcu.empf");
    let images_path = input(
        "EMPF_BOARD_IMAGES",
        "../models/fmnist-test32-images-idx3-ubyte",
    );
    let labels_path = input(
        "EMPF_BOARD_LABELS",
        "../models/fmnist-test32-labels-idx1-ubyte",
    );
    let model = read(&model_path);
    let images = read(&images_path);
    let labels = read(&labels_path);

    if images.len() < 16 || be32(&images, 0) != 2051 {
        panic!("{}: not an idx3 image file", images_path.display());
    }
    let (n, h, w) = (be32(&images, 4), be32(&images, 8), be32(&images, 12));
    if images.len() != 16 + n * h * w {
        panic!(
            "{}: header says {n} images of {h}x{w}, file has {} pixel bytes",
            images_path.display(),
            images.len() - 16
        );
    }
    if labels.len() != 8 + n || be32(&labels, 0) != 2049 || be32(&labels, 4) != n {
        panic!(
            "{}: not an idx1 label file for {n} images",
            labels_path.display()
        );
    }

    println!("cargo:rerun-if-env-changed=EMPF_BOARD_PATH");
    println!("cargo:rerun-if-env-changed=EMPF_BOARD_MODE");
    let path = match env::var("EMPF_BOARD_PATH").as_deref() {
        Err(_) | Ok("integer") => Path::Integer,
        Ok("float") => Path::Float,
        Ok(other) => panic!("EMPF_BOARD_PATH={other:?}: expected integer or float"),
    };
    let mode = match env::var("EMPF_BOARD_MODE").as_deref() {
        Err(_) | Ok("sequential") => Mode::Sequential,
        Ok("parallel") => Mode::Parallel,
        Ok(other) => panic!("EMPF_BOARD_MODE={other:?}: expected sequential or parallel"),
    };
    // The integer path's pixel table, computed here so the firmware needs no float code.
    let mut pixel_table = [0i8; 256];
    let arena_words = match Model::decode(&model) {
        Ok(m) => {
            if m.input_shape().numel() != h * w {
                panic!(
                    "{}: model takes {} pixels per image, {} has {h}x{w}",
                    model_path.display(),
                    m.input_shape().numel(),
                    images_path.display()
                );
            }
            if let Ok(t) = m.pixel_table(PixelNorm::FASHION_MNIST) {
                pixel_table = t;
            }
            Classifier::arena_words(&m, path, mode)
        }
        Err(e) => {
            println!(
                "cargo:warning={} does not decode ({e}); the firmware will report it",
                model_path.display()
            );
            1
        }
    };

    fs::write(out.join("model.empf"), &model).unwrap();
    fs::write(out.join("images.u8"), &images[16..]).unwrap();
    fs::write(out.join("labels.u8"), &labels[8..]).unwrap();
    fs::write(
        out.join("sizes.rs"),
        format!(
            "/// Words of the static arena: `Classifier::arena_words` of the embedded model.\n\
             pub const ARENA_WORDS: usize = {arena_words};\n\
             /// Embedded test images.\n\
             pub const IMAGE_COUNT: usize = {n};\n\
             /// Pixels per image.\n\
             pub const IMAGE_PIXELS: usize = {};\n\
             /// Arithmetic (`EMPF_BOARD_PATH`).\n\
             pub const PATH: empf_board_app::Path = empf_board_app::Path::{path:?};\n\
             /// Execution order (`EMPF_BOARD_MODE`).\n\
             pub const MODE: empf_board_app::Mode = empf_board_app::Mode::{mode:?};\n\
             /// `Model::pixel_table(PixelNorm::FASHION_MNIST)` of the embedded model.\n\
             pub const PIXEL_TABLE: [i8; 256] = {pixel_table:?};\n",
            h * w
        ),
    )
    .unwrap();
}
