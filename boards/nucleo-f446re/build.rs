//! Embeds the model and sizes the static arena and pixel buffer from the model itself
//! (`empf_board_app::build_support`). `EMPF_BOARD_MODEL` overrides the model (default
//! `../models/fmnist-mcu.empf`). A model that does not decode still builds: the firmware reports
//! the decode error on the UART at run time (as a corrupted flash image would).

use empf_board_app::build_support::{embed_model, memory_map};
use empf_board_app::{Mode, Path, PixelNorm};

/// The arithmetic and execution order this firmware runs (`src/main.rs` reads them back).
const PATH: Path = Path::Float;
const MODE: Mode = Mode::Parallel;

fn main() {
    memory_map();
    embed_model(PATH, MODE, PixelNorm::FASHION_MNIST).write_sizes(PATH, MODE, "");
}
