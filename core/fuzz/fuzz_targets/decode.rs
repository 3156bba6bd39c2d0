//! `cargo +nightly fuzz run decode` (from `core/`): arbitrary bytes → decode → every inference
//! path. Any panic is a bug: decode must reject what inference cannot run.
#![no_main]
use empf_core::{format::HEADER_LEN, format::Header, Mode, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Half the inputs get a valid header so the fuzzer explores the body, not the checksum.
    let mut file = data.to_vec();
    if file.len() >= HEADER_LEN && file[0] & 1 == 1 {
        let h = Header::for_body(&file[HEADER_LEN..]).unwrap();
        file[..HEADER_LEN].copy_from_slice(&h.to_bytes());
    }
    let Ok(m) = Model::decode(&file) else { return };
    let n = m.input_shape().numel();
    if n > 1 << 16 || m.arena_bytes() > 64 << 20 {
        return; // keep each run fast; sizes are validated, not the point here
    }
    let x = vec![0.5f32; n];
    let mut out = vec![0.0; m.classes()];
    let mut arena = vec![0u32; m.arena_bytes() / 4];
    for mode in [Mode::Sequential, Mode::Parallel] {
        let _ = m.infer_float(&x, mode, &mut arena, &mut out);
        let mut q = vec![0; m.classes()];
        let _ = m.infer_fixed(&vec![1i8; n], mode, &mut arena, &mut q);
    }
});
