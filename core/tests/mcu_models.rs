//! The committed microcontroller models fit the 64 KiB of RAM of the smallest board they are
//! made for (the LM3S6965 of the QEMU test): the integer path's sequential arena plus a stack
//! allowance. The allowance is about 3× the stack high-water mark the QEMU firmware measures
//! (2.8 KiB with the MCU model), for interrupt frames and defmt.

use empf_core::{Mode, Model};

const RAM: usize = 64 * 1024;
const STACK_ALLOWANCE: usize = 8 * 1024;

fn integer_sequential_bytes(file: &[u8]) -> usize {
    let m = Model::decode(file).expect("committed model decodes");
    m.arena_words_integer(Mode::Sequential) * 4
}

#[test]
fn mcu_models_fit_64_kib_with_their_stack() {
    for (name, file) in [
        (
            "fmnist-mcu.empf",
            &include_bytes!("../../boards/models/fmnist-mcu.empf")[..],
        ),
        (
            "fmnist-mcu-wide.empf",
            &include_bytes!("../../boards/models/fmnist-mcu-wide.empf")[..],
        ),
    ] {
        let arena = integer_sequential_bytes(file);
        println!("{name}: integer sequential arena {arena} bytes + {STACK_ALLOWANCE} stack");
        assert!(
            arena + STACK_ALLOWANCE <= RAM,
            "{name}: arena {arena} + stack {STACK_ALLOWANCE} > {RAM}"
        );
    }
}

/// The wide preset is the point of the 8-bit arena: it must need more RAM than the MCU model
/// (else the test above proves nothing new) while fitting all the same.
#[test]
fn wide_model_uses_the_ram_the_mcu_model_leaves() {
    let mcu = integer_sequential_bytes(include_bytes!("../../boards/models/fmnist-mcu.empf"));
    let wide = integer_sequential_bytes(include_bytes!("../../boards/models/fmnist-mcu-wide.empf"));
    assert!(wide > mcu, "wide {wide} <= mcu {mcu}");
}
