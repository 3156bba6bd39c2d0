//! Selects the DSP-extension kernel by target: every ARMv7E-M core (Cortex-M4/M7) has the DSP
//! instructions; an ARMv8-M Mainline core (Cortex-M33/M35P/M55) has them only as an option, so
//! there the kernel is used when the build says so (`-C target-feature=+dsp`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(empf_dsp)");
    let target = std::env::var("TARGET").unwrap_or_default();
    // `dsp` is an unstable target feature: stable rustc does not report it in
    // `CARGO_CFG_TARGET_FEATURE`, so read the flags the build was given.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let plus_dsp = flags.split('\x1f').any(|f| {
        f.split(',').any(|x| {
            x.trim_start_matches("-C")
                .trim_start_matches("target-feature=")
                == "+dsp"
        })
    });
    let dsp = target.starts_with("thumbv7em") || (target.starts_with("thumbv8m.main") && plus_dsp);
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if dsp {
        println!("cargo::rustc-cfg=empf_dsp");
    }
}
