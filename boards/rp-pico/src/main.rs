//! Raspberry Pi Pico (RP2040, Cortex-M0+ without FPU): classifies 28×28 8-bit images received on
//! UART0 (GP0 TX, GP1 RX, 115200 8N1) with the embedded model on the integer path, all time
//! steps in parallel, and replies `class <k> scores …` (protocol: `empf-board-app`). The
//! on-board LED (GP25) is on while an image is classified, and left on if the model does not
//! load. Each result is also logged over defmt (RTT). Runs on core 0; core 1 stays asleep.
#![no_std]
#![no_main]

use defmt_rtt as _;
use empf_board_app::Board;
use panic_probe as _;
use rp2040_hal::{
    self as hal,
    clocks::init_clocks_and_plls,
    fugit::RateExtU32,
    gpio::{FunctionUart, Pins},
    pac,
    uart::{DataBits, StopBits, UartConfig, UartPeripheral},
    Clock, Sio, Watchdog,
};

include!(concat!(env!("OUT_DIR"), "/sizes.rs"));

/// Second-stage boot loader (first 256 bytes of flash): sets up XIP for any flash chip that
/// answers the standard 03h read command, which includes the Pico's W25Q080.
#[link_section = ".boot2"]
#[used]
static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_GENERIC_03H;

/// The Pico's crystal.
const XOSC_HZ: u32 = 12_000_000;

/// The model stays in flash; `empf-core` decodes it in place. Word alignment keeps the option of
/// zero-copy typed views open and costs at most 3 bytes.
#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.empf")));

#[hal::entry]
fn main() -> ! {
    // `static mut` inside `#[entry]` is handed out once as a safe `&'static mut` by cortex-m-rt.
    static mut ARENA: [u32; ARENA_WORDS] = [0; ARENA_WORDS];
    static mut PIXELS: [u8; INPUT_PIXELS] = [0; INPUT_PIXELS];

    let Some(mut pac) = pac::Peripherals::take() else {
        defmt::panic!("device peripherals already taken")
    };
    let mut watchdog = Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = init_clocks_and_plls(
        XOSC_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        defmt::panic!("clock setup failed (crystal or PLLs)")
    };
    let sio = Sio::new(pac.SIO);
    let pins = Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let led = pins.gpio25.into_push_pull_output();
    let uart_pins = (
        pins.gpio0.into_function::<FunctionUart>(),
        pins.gpio1.into_function::<FunctionUart>(),
    );
    let Ok(serial) = UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS).enable(
        UartConfig::new(115_200.Hz(), DataBits::Eight, None, StopBits::One),
        clocks.peripheral_clock.freq(),
    ) else {
        defmt::panic!("UART0: 115200 8N1 not reachable from the peripheral clock")
    };

    defmt::info!(
        "empf on RP2040 ({=u32} MHz): model {=usize} B in flash, arena {=usize} B, integer path, parallel",
        clocks.system_clock.freq().to_MHz(),
        MODEL.0.len(),
        ARENA_WORDS * 4
    );
    let mut board = Board::new(serial, led);
    // Pixel table from the build script: nothing float is linked into this firmware.
    let mut clf = match board.load_integer(&MODEL.0, MODE, PIXEL_TABLE, ARENA) {
        Ok(c) => c,
        Err(e) => {
            // Already reported on the UART, and the LED is on.
            defmt::error!("model rejected: {}", e);
            loop {
                cortex_m::asm::wfi();
            }
        }
    };
    defmt::info!("ready: send `IMG` + {=usize} pixels on UART0", INPUT_PIXELS);
    loop {
        match board.serve_one(&mut clf, PIXELS) {
            Ok(s) => defmt::info!("class {=usize} logits {=[?]}", s.class, s.integer()),
            Err(e) => defmt::warn!("image not classified: {}", e),
        }
    }
}
