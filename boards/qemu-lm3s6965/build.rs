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

use empf_board_app::build_support::{embed_model, input_path, memory_map, out_dir};
use empf_board_app::{Mode, Path, PixelNorm};
use std::{env, fs};

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn main() {
    memory_map();
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
    let model = embed_model(path, mode, PixelNorm::FASHION_MNIST);

    let images_path = input_path(
        "EMPF_BOARD_IMAGES",
        "../models/fmnist-test32-images-idx3-ubyte",
    );
    let labels_path = input_path(
        "EMPF_BOARD_LABELS",
        "../models/fmnist-test32-labels-idx1-ubyte",
    );
    let read = |p: &std::path::PathBuf| {
        fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let (images, labels) = (read(&images_path), read(&labels_path));
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
    // A model that decodes must take these images (one that does not is reported at run time).
    if model.decoded && model.input_pixels != h * w {
        panic!(
            "the model takes {} pixels per image, {} has {h}x{w}",
            model.input_pixels,
            images_path.display()
        );
    }
    let out = out_dir();
    fs::write(out.join("images.u8"), &images[16..]).unwrap();
    fs::write(out.join("labels.u8"), &labels[8..]).unwrap();
    model.write_sizes(
        path,
        mode,
        &format!(
            "/// Embedded test images.\n\
             pub const IMAGE_COUNT: usize = {n};\n\
             /// Pixels per image.\n\
             pub const IMAGE_PIXELS: usize = {};\n",
            h * w
        ),
    );
}
