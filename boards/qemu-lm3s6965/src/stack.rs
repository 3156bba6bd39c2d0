//! Stack high-water mark: paint the free RAM between the end of `.bss` and the stack pointer
//! with a pattern at start-up, later find the lowest word that changed.

const PAINT: u32 = 0xDEAD_BEEF;

extern "C" {
    /// End of `.bss`/`.uninit`, start of the free RAM (cortex-m-rt's linker script).
    static mut __sheap: u32;
    /// Initial stack pointer: the top of RAM (cortex-m-rt's linker script).
    static _stack_start: u32;
}

/// The painted region.
pub struct Stack {
    bottom: usize,
    top: usize,
}

/// Paints from the end of `.bss` up to 64 bytes below the current stack pointer.
pub fn paint() -> Stack {
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let end = sp.saturating_sub(64) & !3;
    let mut p = bottom;
    while p < end {
        // SAFETY: [bottom, end) lies between the end of the statics and below the live stack
        // frames (64 bytes of margin under SP); nothing else uses that RAM (no heap).
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    Stack { bottom, top }
}

impl Stack {
    /// Bytes between the end of `.bss` and the top of RAM: all the stack can ever have.
    pub fn size(&self) -> usize {
        self.top - self.bottom
    }
    /// Most bytes of stack used so far (from the top of RAM down to the lowest changed word).
    pub fn used(&self) -> usize {
        let mut p = self.bottom;
        // SAFETY: reads of word-aligned RAM inside [bottom, top), which is mapped and owned by
        // this program; the stack above the first changed word is not examined.
        while p < self.top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        self.top - p
    }
}
