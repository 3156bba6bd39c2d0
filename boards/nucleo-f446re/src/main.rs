//! NUCLEO-F446RE (STM32F446RE, Cortex-M4F with FPU): classifies 28×28 8-bit images received on
//! the ST-LINK virtual COM port (USART2, PA2/PA3, 115200 8N1) with the embedded model on the
//! float path, all time steps in parallel, and replies `class <k> scores …` (protocol:
//! `empf-board-app`). LD2 (PA5) is on while an image is classified, and left on if the model
//! does not load. Each result is also logged over defmt (RTT).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use empf_board_app::{Board, PixelNorm};
use panic_probe as _;
use stm32f4xx_hal::{pac, prelude::*, rcc::Config};

include!(concat!(env!("OUT_DIR"), "/sizes.rs"));

/// The model stays in flash; `empf-core` decodes it in place. Word alignment keeps the option of
/// zero-copy typed views open and costs at most 3 bytes.
#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.empf")));

/// Core clock: HSI (16 MHz, needs no solder-bridge option for the ST-LINK's 8 MHz MCO) through
/// the PLL to the F446's maximum (the HAL switches the regulator to over-drive).
const SYSCLK_MHZ: u32 = 180;

#[entry]
fn main() -> ! {
    // `static mut` inside `#[entry]` is handed out once as a safe `&'static mut` by cortex-m-rt.
    static mut ARENA: [u32; ARENA_WORDS] = [0; ARENA_WORDS];
    static mut PIXELS: [u8; INPUT_PIXELS] = [0; INPUT_PIXELS];

    let Some(dp) = pac::Peripherals::take() else {
        defmt::panic!("device peripherals already taken")
    };
    let mut rcc = dp.RCC.freeze(Config::hsi().sysclk(SYSCLK_MHZ.MHz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let led = gpioa.pa5.into_push_pull_output();
    let Ok(serial) = dp
        .USART2
        .serial::<u8>((gpioa.pa2, gpioa.pa3), 115_200.bps(), &mut rcc)
    else {
        defmt::panic!("USART2: 115200 8N1 not reachable from the bus clock")
    };

    defmt::info!(
        "empf on NUCLEO-F446RE ({=u32} MHz): model {=usize} B in flash, arena {=usize} B, float path, parallel",
        rcc.clocks.sysclk().raw() / 1_000_000,
        MODEL.0.len(),
        ARENA_WORDS * 4
    );
    let mut board = Board::new(serial, led);
    // PATH and MODE come from build.rs, which sized ARENA for them.
    let mut clf = match board.load(&MODEL.0, PATH, MODE, PixelNorm::FASHION_MNIST, ARENA) {
        Ok(c) => c,
        Err(e) => {
            // Already reported on the UART, and LD2 is on.
            defmt::error!("model rejected: {}", e);
            loop {
                cortex_m::asm::wfi();
            }
        }
    };
    defmt::info!(
        "ready: send `IMG` + {=usize} pixels on USART2",
        INPUT_PIXELS
    );
    loop {
        match board.serve_one(&mut clf, PIXELS) {
            Ok(s) => defmt::info!("class {=usize} logits {=[?]}", s.class, s.float()),
            Err(e) => defmt::warn!("image not classified: {}", e),
        }
    }
}
