//! Embeds the model, sizes the static arena and pixel buffer from it and precomputes the pixel
//! table on the host, so the firmware contains no float code (the RP2040 has no FPU)
//! (`empf_board_app::build_support`). `EMPF_BOARD_MODEL` overrides the model (default
//! `../models/fmnist-mcu.empf`). A model that does not decode still builds: the firmware reports
//! the decode error on the UART at run time.

use empf_board_app::build_support::{embed_model, memory_map};
use empf_board_app::{Mode, Path, PixelNorm};

/// The arithmetic and execution order this firmware runs (`src/main.rs` reads them back).
const PATH: Path = Path::Integer;
const MODE: Mode = Mode::Parallel;

fn main() {
    memory_map();
    embed_model(PATH, MODE, PixelNorm::FASHION_MNIST).write_sizes(PATH, MODE, "");
}
