//! Classifies the embedded Fashion-MNIST test images with the embedded model and reports each
//! prediction with its summed logits over defmt (semihosting transport). Integer path,
//! sequential mode by default (Cortex-M3: no FPU); `EMPF_BOARD_PATH=float` /
//! `EMPF_BOARD_MODE=parallel` at build time select the others (float logits are printed as
//! their exact bits). Exit code: 0 done, 2 model rejected, 3 an image failed, 4 the kernel
//! self-check failed.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_semihosting as _;
use empf_board_app::{Classifier, Path, PixelNorm};

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
        "empf on Cortex-M3: model {=usize} B in flash, {=usize} images, arena {=usize} B, {} path, {} mode",
        MODEL.0.len(),
        IMAGE_COUNT,
        ARENA_WORDS * 4,
        PATH,
        MODE
    );
    // The binary convs' inner loop as this core runs it (the DSP-extension assembly on the
    // Cortex-M4F and M33 builds) against plain sums, before anything depends on it.
    match empf_dsp::self_check(32) {
        Ok(()) => defmt::info!(
            "kernel self-check: {=str} kernel equals the plain sums on 32 cases",
            empf_dsp::KERNEL
        ),
        Err(case) => {
            defmt::error!(
                "kernel self-check: {=str} kernel differs at case {=u32}",
                empf_dsp::KERNEL,
                case
            );
            semihosting::process::exit(4)
        }
    }
    // The integer path takes the build script's pixel table: no float code in that firmware.
    let loaded = match PATH {
        Path::Integer => Classifier::new_integer(&MODEL.0, MODE, PIXEL_TABLE, ARENA),
        Path::Float => Classifier::new(&MODEL.0, PATH, MODE, PixelNorm::FASHION_MNIST, ARENA),
    };
    let mut clf = match loaded {
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
                match PATH {
                    Path::Integer => defmt::info!(
                        "image {=usize} label {=u8} class {=usize} logits {=[?]}",
                        i,
                        LABELS[i],
                        s.class,
                        s.integer()
                    ),
                    // The exact f32 bits, so the host can compare bit for bit.
                    Path::Float => {
                        let mut bits = [0u32; empf_board_app::MAX_CLASSES];
                        for (b, v) in bits.iter_mut().zip(s.float()) {
                            *b = v.to_bits();
                        }
                        defmt::info!(
                            "image {=usize} label {=u8} class {=usize} logit-bits {=[?]}",
                            i,
                            LABELS[i],
                            s.class,
                            bits[..s.float().len()]
                        )
                    }
                }
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
