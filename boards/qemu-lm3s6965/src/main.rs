//! Classifies the embedded Fashion-MNIST test images with the embedded model on the integer
//! path (Cortex-M3: no FPU) and reports each prediction with its summed logits over defmt
//! (semihosting transport). Exit code: 0 done, 2 model rejected, 3 an image failed.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_semihosting as _;
use empf_board_app::{Classifier, Mode, Path, PixelNorm};

include!(concat!(env!("OUT_DIR"), "/sizes.rs"));

/// The model stays in flash; `empf-core` decodes it in place. Word alignment keeps the option of
/// zero-copy typed views open and costs at most 3 bytes.
#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.empf")));
static IMAGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/images.u8"));
static LABELS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/labels.u8"));

mod stack;

#[entry]
fn main() -> ! {
    // `static mut` inside `#[entry]` is handed out once as a safe `&'static mut` by cortex-m-rt.
    static mut ARENA: [u32; ARENA_WORDS] = [0; ARENA_WORDS];
    let stack = stack::paint();
    defmt::info!(
        "empf on Cortex-M3: model {=usize} B in flash, {=usize} images, arena {=usize} B",
        MODEL.0.len(),
        IMAGE_COUNT,
        ARENA_WORDS * 4
    );
    let mut clf = match Classifier::new(
        &MODEL.0,
        Path::Integer,
        Mode::Sequential,
        PixelNorm::FASHION_MNIST,
        ARENA,
    ) {
        Ok(c) => c,
        Err(e) => {
            defmt::error!("model rejected: {}", e);
            semihosting::process::exit(2)
        }
    };
    let mut correct = 0usize;
    for i in 0..IMAGE_COUNT {
        let pixels = &IMAGES[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS];
        match clf.classify(pixels) {
            Ok(s) => {
                correct += usize::from(s.class == usize::from(LABELS[i]));
                defmt::info!(
                    "image {=usize} label {=u8} class {=usize} logits {=[?]}",
                    i,
                    LABELS[i],
                    s.class,
                    s.integer()
                );
            }
            Err(e) => {
                defmt::error!("image {=usize}: {}", i, e);
                semihosting::process::exit(3)
            }
        }
    }
    defmt::info!(
        "done: {=usize}/{=usize} correct; stack high-water {=usize} B of {=usize} B free",
        correct,
        IMAGE_COUNT,
        stack.used(),
        stack.size()
    );
    semihosting::process::exit(0)
}
