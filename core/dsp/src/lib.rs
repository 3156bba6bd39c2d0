//! The inner loops of `empf-core`'s ±1 convolution on 8-bit spikes: for a block of [`LANES`]
//! neighbouring outputs, the sums `Σ_{off ∈ list} win[off + j]`, `j < LANES` ([`block_sums`]),
//! or prefix sums of one list cut in segments ([`block_sums_upto`]); a tap list's largest offset
//! ([`TapList::new`]); and the requantisation of a run of outputs ([`requant_run`]).
//!
//! `core` is `#![forbid(unsafe_code)]`; the Cortex-M DSP-extension versions of these loops need
//! `asm!` (the `uxtab16`, `usub16`/`sel` and `ssat` intrinsics are unstable), so they live here,
//! selected by target (`build.rs`): the assembly on ARMv7E-M (Cortex-M4/M7) and on ARMv8-M
//! Mainline built with `+dsp` (Cortex-M33), the plain-Rust twins ([`block_sums_portable`],
//! [`requant_run_portable`]) elsewhere. Both are exact integer arithmetic, so they agree bit
//! for bit: checked on the host for the twins against plain definitions, and on the target by
//! [`self_check`], which the QEMU firmware runs at start-up
//! (the conformance test requires its line on the emulated Cortex-M4F and M33, and every logit
//! of firmware built with the DSP kernels to equal `empf-core`'s on the host).
//!
//! The block sums split one 32-bit load of 4 spikes into two words of two 16-bit lanes (bytes
//! 0, 2 and bytes 1, 3) and add them to six accumulator registers for 12 outputs. A lane gains
//! at most 255 per tap, so the accumulators are folded into `i32` every [`FLUSH`] taps, before
//! one could overflow into its neighbour. The portable code does `v & 0x00FF00FF` and
//! `(v >> 8) & 0x00FF00FF` and two adds (LLVM emits `uxtb16` + `add` on the M4); the DSP loop
//! does each split and add in one `uxtab16`, takes two taps per pass, and has no bounds checks:
//! every offset is checked once per list against the window (the largest offset of a
//! [`TapList`]).
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

/// Outputs per block: 3 words of 4 spikes, 6 accumulator words in registers.
pub const LANES: usize = 12;
/// Taps a 16-bit lane can take before it is folded into `i32`: `257·255 = 65535`.
pub const FLUSH: usize = 257;

/// Which inner loop this build selected: `"dsp"` (the DSP-extension assembly) or `"portable"`.
pub const KERNEL: &str = if cfg!(empf_dsp) { "dsp" } else { "portable" };

/// Checks this build's kernels where they run: [`block_sums`] against a plain byte-by-byte sum,
/// [`TapList`]'s largest offset against a plain maximum, [`block_sums_upto`] against
/// [`block_sums_portable`] and [`requant_run`] against [`requant_run_portable`], on `cases`
/// deterministic pseudo-random windows and lists (up to 300 taps, so more than one [`FLUSH`]
/// chunk; every fourth window all 255). The QEMU firmware runs it at start-up on each emulated core, which
/// is how the assembly is tested: host tests only reach the portable kernels. `Err(case)`: the
/// first case that differs.
pub fn self_check(cases: u32) -> Result<(), u32> {
    let mut st = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || lcg(&mut st);
    let mut win = [0u8; 256 + LANES];
    let mut offs = [0u16; 300];
    for case in 0..cases {
        for b in win.iter_mut() {
            *b = if case % 4 == 0 { 255 } else { next() as u8 };
        }
        let n = (next() % 301) as usize;
        for o in offs.iter_mut().take(n) {
            *o = (next() % 257) as u16;
        }
        let offs = &offs[..n];
        let list = TapList::new(offs);
        let want_max = offs.iter().fold(0u16, |m, &o| m.max(o)) as usize;
        if cfg!(empf_dsp) && list.max != want_max {
            return Err(case);
        }
        let mut want = [0i32; LANES];
        for &o in offs {
            for (j, w) in want.iter_mut().enumerate() {
                *w += win[o as usize + j] as i32;
            }
        }
        let mut got = [-1i32; LANES];
        block_sums(&win, &list, &mut got);
        if got != want {
            return Err(case);
        }
        // Prefix sums of the same list cut in three, against three portable sums.
        let (e0, e1) = ((next() as usize) % (n + 1), (next() as usize) % (n + 1));
        let ends = [e0.min(e1), e0.max(e1), n];
        let mut got = [[-1i32; LANES]; 3];
        block_sums_upto(&win, &list, ends, got.each_mut());
        for (g, &end) in got.iter().zip(&ends) {
            let mut want = [0i32; LANES];
            block_sums_portable(&win, &offs[..end], &mut want);
            if *g != want {
                return Err(case);
            }
        }
        // The requantisation of a run of outputs, against the portable kernel: class sums and
        // totals as a layer has them, constants around the committed models' (shifts 1..=31,
        // 16-bit multipliers, offsets that saturate some outputs).
        let sh = 1 + next() % 31;
        let m = (next() % 65536) as i32 - 32768;
        let c = (1i64 << (sh - 1)) + (((next() % 80_000) as i64 - 40_000) << sh);
        let k = RequantRun::new(c, m, sh).expect("shift in 1..=31");
        let n = (next() % 40) as usize;
        let (mut t, mut p, mut q) = ([0i32; 40], [0i32; 40], [0i32; 40]);
        for ((t, p), q) in t.iter_mut().zip(&mut p).zip(&mut q).take(n) {
            *t = (next() % 300_000) as i32;
            *p = (next() % (*t as u32 + 1)) as i32;
            *q = (next() % ((*t - *p) as u32 + 1)) as i32;
        }
        let (mut want, mut got) = ([0i32; 40], [1i32; 40]);
        requant_run_portable(&k, &t, &p, &q, &mut want[..n]);
        requant_run(&k, &t, &p, &q, &mut got[..n]);
        if got[..n] != want[..n] || got[n..] != [1; 40][n..] {
            return Err(case);
        }
    }
    Ok(())
}

/// A small deterministic generator for [`self_check`] and the tests (no dependency needed in a
/// `no_std` crate).
fn lcg(state: &mut u64) -> u32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 33) as u32
}

/// A list of tap offsets with its largest offset, found once when the list is made and then
/// used by every block that sums it (the DSP kernel's one bounds check per call).
#[derive(Clone, Copy, Debug)]
pub struct TapList<'a> {
    offs: &'a [u16],
    // Read by the DSP kernel only.
    #[cfg_attr(not(empf_dsp), allow(dead_code))]
    max: usize,
}

impl<'a> TapList<'a> {
    /// Wraps `offs`. Only the DSP kernel reads the largest offset, so only there is it found
    /// (the portable kernel checks each offset as it reads).
    pub fn new(offs: &'a [u16]) -> TapList<'a> {
        #[cfg(empf_dsp)]
        let max = max_dsp(offs) as usize;
        #[cfg(not(empf_dsp))]
        let max = 0;
        TapList { offs, max }
    }

    /// The offsets.
    pub fn offsets(&self) -> &'a [u16] {
        self.offs
    }
}

/// The largest of `offs` (0 if empty), two at a time with the DSP extension: `usub16` compares
/// both halves of a word against the running maxima and `sel` keeps the larger of each, so a
/// list costs 2 instructions per offset instead of 5 (built once per list per time step,
/// it was an eighth of a binary conv's instructions on the MCU model).
#[cfg(empf_dsp)]
fn max_dsp(offs: &[u16]) -> u16 {
    let quads = offs.len() / 4;
    let mut m = 0u32;
    if quads > 0 {
        let p = offs.as_ptr();
        // SAFETY: `p.add(4·quads)` is at most one past the end of `offs`. The loop reads the
        // `4·quads ≤ offs.len()` `u16`s from `p` as `2·quads` word loads (`u16` alignment is
        // enough: ARMv7-M and ARMv8-M Mainline allow unaligned `ldr`), all inside `offs`;
        // `quads > 0`, so the do-while loop's first pass is in bounds. It writes only its
        // register operands and the flags (GE and NZCV), reads no other memory and does not
        // touch the stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {v}, [{p}], #4",
                "ldr {w}, [{p}], #4",
                "usub16 {t}, {m}, {v}",
                "sel {m}, {m}, {v}",
                "usub16 {t}, {m}, {w}",
                "sel {m}, {m}, {w}",
                "cmp {p}, {end}",
                "bne 2b",
                p = inout(reg) p => _,
                end = in(reg) p.add(4 * quads),
                m = inout(reg) m,
                v = out(reg) _,
                w = out(reg) _,
                t = out(reg) _,
                options(nostack, readonly),
            );
        }
    }
    let tail = offs[4 * quads..].iter().fold(0u16, |a, &o| a.max(o));
    (m as u16).max((m >> 16) as u16).max(tail)
}

/// `out[j] = Σ_{off ∈ taps} win[off + j]` for `j < LANES` (wrapping `i32`; the sums replace
/// what `out` held), by the kernel this target selects.
///
/// # Panics
/// If an offset plus [`LANES`] exceeds `win.len()` (a caller bug: `empf-core` sizes the window
/// for its largest tap offset).
#[inline(always)]
pub fn block_sums(win: &[u8], taps: &TapList<'_>, out: &mut [i32; LANES]) {
    sums_upto(win, taps, [taps.offs.len()], [out], selected);
}

/// Prefix sums of one list in one pass: `out[s][j] = Σ_{off ∈ taps[..ends[s]]} win[off + j]`
/// (`ends` ascending, the last one the list's length). A binary conv's three class lists of a
/// channel pair, laid end to end, give in one call what three [`block_sums`] calls would, the
/// per-call work (bounds check, fold) once.
///
/// # Panics
/// As [`block_sums`], and if `ends` is not ascending up to `taps`' length.
#[inline(always)]
pub fn block_sums_upto(
    win: &[u8],
    taps: &TapList<'_>,
    ends: [usize; 3],
    out: [&mut [i32; LANES]; 3],
) {
    let offs = taps.offs;
    if offs.len() > FLUSH {
        // Long lists (more than FLUSH taps in all): the general path, which folds.
        sums_upto(win, taps, ends, out, selected);
        return;
    }
    check(win, taps, &ends);
    // At most FLUSH taps: the lanes carry on from segment to segment without a fold.
    let [o0, o1, o2] = out;
    let a0 = selected(win, &offs[..ends[0]], [0; 6]);
    *o0 = unpack(a0);
    let a1 = selected(win, &offs[ends[0]..ends[1]], a0);
    *o1 = unpack(a1);
    let a2 = selected(win, &offs[ends[1]..ends[2]], a1);
    *o2 = unpack(a2);
}

/// The segment ends cover the list in order, and (on DSP targets, whose accumulation reads
/// without checks) the list's largest offset is inside the window.
#[inline(always)]
fn check(win: &[u8], taps: &TapList<'_>, ends: &[usize]) {
    let offs = taps.offs;
    assert!(
        ends.windows(2).all(|w| w[0] <= w[1]) && ends.last() == Some(&offs.len()),
        "block sums: segment ends {ends:?} do not cover the {} taps",
        offs.len()
    );
    // Every load reads `win[off..off + LANES]` for an `off` of `offs`, so all of them are in
    // bounds if the largest offset is.
    assert!(
        !cfg!(empf_dsp) || offs.is_empty() || taps.max + LANES <= win.len(),
        "spike block sum: tap offset {} + {LANES} outside a {}-byte window",
        taps.max,
        win.len()
    );
}

/// [`block_sums`] in plain Rust, on every target.
#[inline(always)]
pub fn block_sums_portable(win: &[u8], offs: &[u16], out: &mut [i32; LANES]) {
    // No largest offset needed: the portable accumulation checks every access.
    let taps = TapList { offs, max: 0 };
    sums_upto(win, &taps, [offs.len()], [out], acc_portable);
}

/// The accumulation this target selects, for at most [`FLUSH`] taps (so no lane can carry).
/// On DSP targets its caller has checked the list's largest offset against the window.
#[inline(always)]
fn selected(win: &[u8], offs: &[u16], acc: [u32; 6]) -> [u32; 6] {
    #[cfg(empf_dsp)]
    return acc_dsp(win, offs, acc);
    #[cfg(not(empf_dsp))]
    acc_portable(win, offs, acc)
}

/// The prefix sums, folded into `i32` every [`FLUSH`] taps, by `accumulate`.
#[inline(always)]
fn sums_upto<const N: usize>(
    win: &[u8],
    taps: &TapList<'_>,
    ends: [usize; N],
    out: [&mut [i32; LANES]; N],
    accumulate: impl Fn(&[u8], &[u16], [u32; 6]) -> [u32; 6],
) {
    let offs = taps.offs;
    check(win, taps, &ends);
    // `base`: lanes folded so far (only when a list is longer than FLUSH); `acc`: the lanes.
    let (mut base, mut folded) = ([0i32; LANES], false);
    let (mut acc, mut since, mut start) = ([0u32; 6], 0usize, 0usize);
    for (o, &end) in out.into_iter().zip(&ends) {
        let mut seg = &offs[start..end];
        while !seg.is_empty() {
            let (now, rest) = seg.split_at(seg.len().min(FLUSH - since));
            acc = accumulate(win, now, acc);
            since += now.len();
            seg = rest;
            if since == FLUSH {
                let lanes = unpack(acc);
                for (b, l) in base.iter_mut().zip(lanes) {
                    *b = b.wrapping_add(l);
                }
                (acc, since, folded) = ([0; 6], 0, true);
            }
        }
        *o = unpack(acc);
        if folded {
            for (v, &b) in o.iter_mut().zip(&base) {
                *v = v.wrapping_add(b);
            }
        }
        start = end;
    }
}

/// The 12 lanes of the six accumulator words: word pair `i`'s even lanes are outputs `4i` and
/// `4i+2`, its odd lanes `4i+1` and `4i+3`. Straight-line code, two instructions an output.
#[inline(always)]
fn unpack(acc: [u32; 6]) -> [i32; LANES] {
    let [e0, o0, e1, o1, e2, o2] = acc;
    [
        e0 & 0xFFFF,
        o0 & 0xFFFF,
        e0 >> 16,
        o0 >> 16,
        e1 & 0xFFFF,
        o1 & 0xFFFF,
        e1 >> 16,
        o1 >> 16,
        e2 & 0xFFFF,
        o2 & 0xFFFF,
        e2 >> 16,
        o2 >> 16,
    ]
    .map(|l| l as i32)
}

/// Adds the 12 outputs of `offs` (at most [`FLUSH`]) to `acc` in plain Rust, on every target:
/// one (unaligned, allowed from ARMv7-M on) 32-bit load of 4 spikes split into two words of
/// two 16-bit lanes. Written out by hand (no arrays, no inner loop) so that at the firmware's
/// `opt-level = "s"` the six accumulators stay in registers.
#[inline(always)]
fn acc_portable(win: &[u8], offs: &[u16], acc: [u32; 6]) -> [u32; 6] {
    #[inline(always)]
    fn word(s: &[u8], i: usize) -> u32 {
        u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]])
    }
    const M: u32 = 0x00FF_00FF;
    let [mut e0, mut o0, mut e1, mut o1, mut e2, mut o2] = acc;
    for &off in offs {
        let off = off as usize;
        let s = &win[off..off + LANES];
        let (v0, v1, v2) = (word(s, 0), word(s, 1), word(s, 2));
        e0 += v0 & M;
        o0 += (v0 >> 8) & M;
        e1 += v1 & M;
        o1 += (v1 >> 8) & M;
        e2 += v2 & M;
        o2 += (v2 >> 8) & M;
    }
    [e0, o0, e1, o1, e2, o2]
}

/// [`acc_portable`] with the DSP extension: per two taps one `ldr` (both offsets), a `uxtah`
/// and an `add` (their addresses), six `ldr` and twelve `uxtab16`, and the loop's compare and
/// branch (23 instructions for two taps of 12 outputs, against about 48 for the portable code
/// at `opt-level = "s"`); an odd tap first, alone. The caller has checked the largest offset.
#[cfg(empf_dsp)]
#[inline(always)]
fn acc_dsp(win: &[u8], offs: &[u16], acc: [u32; 6]) -> [u32; 6] {
    let [mut e0, mut o0, mut e1, mut o1, mut e2, mut o2] = acc;
    let (one, pairs) = offs.split_at(offs.len() % 2);
    if let [off] = one {
        // SAFETY: reads the 12 bytes `win[off..off + 12]` (three unaligned word loads at
        // `+0, +4, +8`, allowed on ARMv7-M and ARMv8-M Mainline), in bounds: the caller checked
        // the list's largest offset (`TapList::new` found it and its fields are private)
        // against the window. Writes only its register operands, reads no other memory.
        unsafe {
            core::arch::asm!(
                "ldr {v}, [{a}]",
                "uxtab16 {e0}, {e0}, {v}",
                "uxtab16 {o0}, {o0}, {v}, ror #8",
                "ldr {v}, [{a}, #4]",
                "uxtab16 {e1}, {e1}, {v}",
                "uxtab16 {o1}, {o1}, {v}, ror #8",
                "ldr {v}, [{a}, #8]",
                "uxtab16 {e2}, {e2}, {v}",
                "uxtab16 {o2}, {o2}, {v}, ror #8",
                a = in(reg) win.as_ptr().add(*off as usize),
                v = out(reg) _,
                e0 = inout(reg) e0,
                o0 = inout(reg) o0,
                e1 = inout(reg) e1,
                o1 = inout(reg) o1,
                e2 = inout(reg) e2,
                o2 = inout(reg) o2,
                options(nostack, readonly, preserves_flags),
            );
        }
    }
    if !pairs.is_empty() {
        let range = pairs.as_ptr_range();
        // SAFETY: the loop reads the `u16`s from `range.start` up to `range.end` (an even,
        // non-empty part of `offs`, so the do-while loop's first pass is in bounds) as word
        // loads, two offsets each (unaligned: allowed on ARMv7-M and ARMv8-M Mainline), and for
        // each offset `off` the 12 bytes `win[off..off + 12]` (three unaligned word loads at
        // `+0, +4, +8`), in bounds: the caller checked the list's largest offset (`TapList::new`
        // found it and its fields are private) against the window. `uxtah` adds the low offset
        // to the window's address, `add … lsr #16` the high one. It writes only its register
        // operands and the flags (`cmp`), reads no other memory and does not touch the stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldr {ab}, [{p}], #4",
                "uxtah {a}, {w}, {ab}",
                "ldr {v}, [{a}]",
                "uxtab16 {e0}, {e0}, {v}",
                "uxtab16 {o0}, {o0}, {v}, ror #8",
                "ldr {v}, [{a}, #4]",
                "uxtab16 {e1}, {e1}, {v}",
                "uxtab16 {o1}, {o1}, {v}, ror #8",
                "ldr {v}, [{a}, #8]",
                "uxtab16 {e2}, {e2}, {v}",
                "uxtab16 {o2}, {o2}, {v}, ror #8",
                "add {a}, {w}, {ab}, lsr #16",
                "ldr {v}, [{a}]",
                "uxtab16 {e0}, {e0}, {v}",
                "uxtab16 {o0}, {o0}, {v}, ror #8",
                "ldr {v}, [{a}, #4]",
                "uxtab16 {e1}, {e1}, {v}",
                "uxtab16 {o1}, {o1}, {v}, ror #8",
                "ldr {v}, [{a}, #8]",
                "uxtab16 {e2}, {e2}, {v}",
                "uxtab16 {o2}, {o2}, {v}, ror #8",
                "cmp {p}, {end}",
                "bne 2b",
                p = inout(reg) range.start => _,
                end = in(reg) range.end,
                w = in(reg) win.as_ptr(),
                ab = out(reg) _,
                a = out(reg) _,
                v = out(reg) _,
                e0 = inout(reg) e0,
                o0 = inout(reg) o0,
                e1 = inout(reg) e1,
                o1 = inout(reg) o1,
                e2 = inout(reg) e2,
                o2 = inout(reg) o2,
                options(nostack, readonly),
            );
        }
    }
    [e0, o0, e1, o1, e2, o2]
}

/// Outputs of [`requant_run`] saturate to `±(2^SAT_BITS − 1)` (`empf-core`'s `ACT_LIMIT`).
pub const SAT_BITS: u32 = 20;

/// One output channel's requantisation as [`requant_run`] computes it: `y = sat((c + m·a) >> sh)`
/// with `1 ≤ sh ≤ 31`, where the caller has made sure `(c + m·a) >> sh` fits an `i32` for
/// every `a` it passes (then the low 32 bits of the shift are the value; `empf-core` checks
/// this once per channel and takes its plain path otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct RequantRun {
    c: i64,
    m: i32,
    sh: u32,
    rsh: u32,
}

impl RequantRun {
    /// `None` unless `1 ≤ sh ≤ 31`.
    pub fn new(c: i64, m: i32, sh: u32) -> Option<RequantRun> {
        (1..=31).contains(&sh).then_some(RequantRun {
            c,
            m,
            sh,
            rsh: 32 - sh,
        })
    }
}

/// `y[j] = sat((c + m·(t[j] − 2·(p[j] − q[j]))) >> sh)` for `j < y.len()` (`t`, `p`, `q` at
/// least as long; the sums in wrapping 32-bit, the product and `c` in 64-bit arithmetic, the
/// shift keeping the low 32 bits, `sat` clamping to `±(2^SAT_BITS − 1)`): a binary conv's
/// outputs from its all-taps sums `t` and prefix sums of its class lists `p`, `q` (the taps of
/// one sign are those between them), by the kernel this target selects.
///
/// # Panics
/// If `t`, `p` or `q` is shorter than `y`.
#[inline(always)]
pub fn requant_run(k: &RequantRun, t: &[i32], p: &[i32], q: &[i32], y: &mut [i32]) {
    assert!(
        t.len() >= y.len() && p.len() >= y.len() && q.len() >= y.len(),
        "requant run: inputs shorter than the {} outputs",
        y.len()
    );
    #[cfg(empf_dsp)]
    requant_run_dsp(k, t, p, q, y);
    #[cfg(not(empf_dsp))]
    requant_run_portable(k, t, p, q, y);
}

/// [`requant_run`] in plain Rust, on every target.
#[inline(always)]
pub fn requant_run_portable(k: &RequantRun, t: &[i32], p: &[i32], q: &[i32], y: &mut [i32]) {
    const L: i32 = (1 << SAT_BITS) - 1;
    for (((y, &t), &p), &q) in y.iter_mut().zip(t).zip(p).zip(q) {
        let a = t.wrapping_sub(p.wrapping_sub(q).wrapping_mul(2));
        let z = k.c.wrapping_add(k.m as i64 * a as i64);
        let v = ((z as u32) >> k.sh) | (((z >> 32) as u32) << k.rsh);
        *y = (v as i32).clamp(-L, L);
    }
}

/// [`requant_run`] with the DSP extension: per output three loads, the two differences (`sub`,
/// `sub` with a shifted operand), the 64-bit constant (`ldrd`), one `smlal`, the 64-bit shift
/// as two 32-bit shifts and an `orr`, the saturation (`ssat` to 21 bits, which allows `−2^20`,
/// then one conditional add for it), the store and the loop: 17 instructions.
#[cfg(empf_dsp)]
#[inline(always)]
fn requant_run_dsp(k: &RequantRun, t: &[i32], p: &[i32], q: &[i32], y: &mut [i32]) {
    const _: () = assert!(SAT_BITS == 20, "the ssat below saturates to 21 signed bits");
    if y.is_empty() {
        return;
    }
    let range = y.as_mut_ptr_range();
    // SAFETY: `y` is non-empty, so the do-while loop's first pass is in bounds; it runs
    // `y.len()` times, reading `t`, `p`, `q` (each at least `y.len()` long, asserted by the
    // caller) one word per pass from their starts, and writing `y` one word per pass up to its
    // end; it reads the 8-byte-aligned `k.c` with `ldrd`. It writes only its register operands,
    // the flags and `y`, and does not touch the stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {t}, [{pt}], #4",
            "ldr {s}, [{pp}], #4",
            "ldr {x}, [{pq}], #4",
            "sub {s}, {s}, {x}",
            "sub {t}, {t}, {s}, lsl #1",
            "ldrd {s}, {x}, [{k}]",
            "smlal {s}, {x}, {t}, {m}",
            "lsr {s}, {s}, {sh}",
            "lsl {x}, {x}, {rsh}",
            "orr {s}, {s}, {x}",
            "ssat {s}, #21, {s}",
            "cmn {s}, #0x100000",
            "it eq",
            "addeq {s}, {s}, #1",
            "str {s}, [{py}], #4",
            "cmp {py}, {end}",
            "bne 2b",
            pt = inout(reg) t.as_ptr() => _,
            pp = inout(reg) p.as_ptr() => _,
            pq = inout(reg) q.as_ptr() => _,
            py = inout(reg) range.start => _,
            end = in(reg) range.end,
            k = in(reg) &k.c,
            m = in(reg) k.m,
            sh = in(reg) k.sh,
            rsh = in(reg) k.rsh,
            t = out(reg) _,
            s = out(reg) _,
            x = out(reg) _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: one byte at a time.
    fn naive(win: &[u8], offs: &[u16]) -> [i32; LANES] {
        let mut out = [0i32; LANES];
        for &o in offs {
            for (j, a) in out.iter_mut().enumerate() {
                *a = a.wrapping_add(win[o as usize + j] as i32);
            }
        }
        out
    }

    #[test]
    fn selected_and_portable_equal_the_plain_sum() {
        let mut st = 7u64;
        for case in 0..400 {
            let len = 12 + (lcg(&mut st) % 700) as usize;
            let win: [u8; 712] = core::array::from_fn(|_| {
                if case % 5 == 0 {
                    255
                } else {
                    lcg(&mut st) as u8
                }
            });
            let win = &win[..len];
            // Up to 700 taps: more than one FLUSH chunk, with all-255 windows near the limit.
            let n = (lcg(&mut st) % 700) as usize;
            let offs: [u16; 700] =
                core::array::from_fn(|_| (lcg(&mut st) % (len as u32 - 11)) as u16);
            let offs = &offs[..n];
            let want = naive(win, offs);
            // Whatever `out` held is replaced.
            for start in [0i32, -5, i32::MAX] {
                let mut a = [start; LANES];
                block_sums(win, &TapList::new(offs), &mut a);
                let mut b = [start; LANES];
                block_sums_portable(win, offs, &mut b);
                assert_eq!(a, want, "case {case}");
                assert_eq!(b, want, "case {case}");
            }
        }
    }

    /// The portable requantisation equals the plain `i64` expression wherever its contract
    /// holds (`(c + m·a) >> sh` fits an `i32`), saturated or not.
    #[test]
    fn requant_run_portable_equals_the_plain_expression() {
        let mut st = 3u64;
        let l = (1i64 << SAT_BITS) - 1;
        let mut checked = 0;
        for _ in 0..20_000 {
            let sh = 1 + lcg(&mut st) % 31;
            let m = (lcg(&mut st) % 131_071) as i32 - 65_535;
            let c = (1i64 << (sh - 1)) + (((lcg(&mut st) % 200_000) as i64 - 100_000) << sh);
            let t = (lcg(&mut st) % 600_000) as i32;
            let p = (lcg(&mut st) % (t as u32 + 1)) as i32;
            let q = (lcg(&mut st) % ((t - p) as u32 + 1)) as i32;
            let a = t as i64 - 2 * (p as i64 - q as i64);
            let z = (c + m as i64 * a) >> sh;
            if z < i32::MIN as i64 || z > i32::MAX as i64 {
                continue;
            }
            let k = RequantRun::new(c, m, sh).unwrap();
            let mut y = [0];
            requant_run_portable(&k, &[t], &[p], &[q], &mut y);
            assert_eq!(y[0] as i64, z.clamp(-l, l), "c {c} m {m} sh {sh} a {a}");
            checked += 1;
        }
        assert!(checked > 10_000, "{checked}");
        assert!(RequantRun::new(0, 1, 0).is_none() && RequantRun::new(0, 1, 32).is_none());
    }

    #[test]
    fn self_check_passes() {
        assert_eq!(self_check(64), Ok(()));
    }

    #[test]
    #[should_panic]
    fn an_offset_past_the_window_panics() {
        let win = [0u8; 20];
        let mut out = [0; LANES];
        block_sums(&win, &TapList::new(&[9]), &mut out);
    }
}
