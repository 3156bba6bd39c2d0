//! `cargo xtask mcu-bench`: counts the instructions one inference of the embedded model takes,
//! per layer, on the integer and the float path, sequential and parallel. Run under QEMU with
//! `-icount shift=0`, where SysTick (processor clock) advances by a fixed number of executed
//! instructions per tick; the firmware measures that ratio first with a loop of known length.
//! Prints over defmt (semihosting):
//! `calibration {loop instructions} {ticks}`, then per run `run {path} {mode}`,
//! `layer {index} {ticks}` (summed over steps; layer 0 includes loading the input) and
//! `total {ticks} logits [..]` (integer) or `total {ticks} logit-bits [..]` (float, exact bits),
//! which the host compares with `empf-core`. The arena is sized for the largest run (float, parallel).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::{syst::SystClkSource, SCB, SYST};
use cortex_m_rt::{entry, exception};
use defmt_semihosting as _;
use empf_core::{Mode, Model, PixelNorm};

include!(concat!(env!("OUT_DIR"), "/sizes.rs"));

#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.empf")));
static IMAGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/images.u8"));

/// Most layers timed one by one (a longer model is timed in total only).
const MAX_TIMED_LAYERS: usize = 64;
/// Iterations of the calibration loop (two instructions each).
const CALIBRATION_ITERATIONS: u32 = 1_000_000;

/// SysTick reloads (every 2^24 ticks), counted by its exception.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// SysTick ticks since it started: reloads × 2^24 + how far the down-counter has run. A reload
/// that happened but whose exception is still pending (interrupts are masked here) is counted.
/// Not inlined, so that an instruction trace of this firmware (QEMU `-d exec`) can be split into
/// layers at its calls (`scripts/mcu-profile.py`).
#[inline(never)]
fn ticks() -> u64 {
    cortex_m::interrupt::free(|_| {
        let mut v = SYST::get_current();
        let mut w = WRAPS.load(Ordering::Relaxed);
        if SCB::is_pendst_pending() {
            v = SYST::get_current();
            w += 1;
        }
        ((w as u64) << 24) + (0xFF_FFFF - v) as u64
    })
}

/// Exactly `2·n` instructions (`subs` and `bne` per iteration), for the calibration.
#[inline(never)]
fn spin(n: u32) {
    // SAFETY: the loop only decrements a register it owns and sets the flags; it reads and
    // writes no memory and leaves the stack alone (`nomem, nostack`). `n ≥ 1` at every call.
    unsafe {
        core::arch::asm!("1:", "subs {0}, {0}, #1", "bne 1b", inout(reg) n => _, options(nomem, nostack));
    }
}

#[entry]
fn main() -> ! {
    static mut ARENA: [u32; ARENA_WORDS] = [0; ARENA_WORDS];
    static mut INPUT_I8: [i8; INPUT_PIXELS] = [0; INPUT_PIXELS];
    static mut INPUT_F32: [f32; INPUT_PIXELS] = [0.0; INPUT_PIXELS];
    let mut core = match cortex_m::Peripherals::take() {
        Some(p) => p,
        None => semihosting::process::exit(4),
    };
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(0xFF_FFFF);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
    // The current value reads 0 until the first reload.
    while SYST::get_current() == 0 {}

    let t0 = ticks();
    spin(CALIBRATION_ITERATIONS);
    let t1 = ticks();
    defmt::info!(
        "calibration {=u32} {=u64}",
        2 * CALIBRATION_ITERATIONS,
        t1 - t0
    );

    let model = match Model::decode(&MODEL.0) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("model rejected: {}", e);
            semihosting::process::exit(2)
        }
    };
    defmt::info!(
        "model {=usize} B, {=usize} layers, T={=usize}",
        MODEL.0.len(),
        model.layer_count(),
        model.time_steps()
    );
    let pixels = &IMAGES[..INPUT_PIXELS];
    let arena = &mut ARENA[..];
    let classes = model.classes().min(32);
    for (integer, mode, name) in [
        (true, Mode::Sequential, "integer sequential"),
        (true, Mode::Parallel, "integer parallel"),
        (false, Mode::Sequential, "float sequential"),
        (false, Mode::Parallel, "float parallel"),
    ] {
        if integer && model.fixed_meta().is_none() {
            continue;
        }
        defmt::info!("run {=str}", name);
        let mut timer = Timer {
            per: [0; MAX_TIMED_LAYERS],
            start: 0,
            last: 0,
        };
        let (mut ints, mut bits) = ([0i32; 32], [0u32; 32]);
        let result = if integer {
            let out = &mut ints[..classes];
            let x = &mut INPUT_I8[..];
            let r = Model::quantize_pixels(&PIXEL_TABLE, pixels, x).and_then(|_| {
                timer.start();
                model.infer_fixed_hooked(x, mode, arena, out, &mut |li| timer.lap(li))
            });
            timer.stop();
            r
        } else {
            let mut out = [0f32; 32];
            let x = &mut INPUT_F32[..];
            let r = PixelNorm::FASHION_MNIST.apply_all(pixels, x).and_then(|_| {
                timer.start();
                let out = &mut out[..classes];
                model.infer_float_hooked(x, mode, arena, out, &mut |li| timer.lap(li))
            });
            timer.stop();
            // The exact bits, so the host can compare them.
            for (b, v) in bits.iter_mut().zip(&out[..classes]) {
                *b = v.to_bits();
            }
            r
        };
        if let Err(e) = result {
            defmt::error!("{=str}: {}", name, e);
            semihosting::process::exit(3)
        }
        for (li, &t) in timer.per.iter().enumerate().take(model.layer_count()) {
            defmt::info!("layer {=usize} {=u64}", li, t);
        }
        let total = timer.last - timer.start;
        if integer {
            defmt::info!("total {=u64} logits {=[?]}", total, ints[..classes]);
        } else {
            defmt::info!("total {=u64} logit-bits {=[?]}", total, bits[..classes]);
        }
    }
    semihosting::process::exit(0)
}

/// Ticks per layer of one run.
struct Timer {
    per: [u64; MAX_TIMED_LAYERS],
    start: u64,
    last: u64,
}

impl Timer {
    fn start(&mut self) {
        self.start = ticks();
        self.last = self.start;
    }
    /// Layer `li` finished: it took the ticks since the previous lap.
    fn lap(&mut self, li: usize) {
        let now = ticks();
        if let Some(p) = self.per.get_mut(li) {
            *p += now - self.last;
        }
        self.last = now;
    }
    fn stop(&mut self) {
        self.last = ticks();
    }
}
