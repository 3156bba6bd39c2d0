//! The ±1 convolution on 8-bit spikes, several taps per instruction (integer path).
//!
//! The reference kernel ([`super::conv::bconv_planes`]) adds one spike per tap per output into
//! an `i32` plane in memory: a load, a load, an add and a store per MAC. This one is
//! output-stationary and SWAR in plain Rust: one `u32` load brings 4 spikes (4 neighbouring
//! outputs of one tap), split into two words of two 16-bit lanes (`v & 0x00FF00FF`,
//! `(v >> 8) & 0x00FF00FF`) and added to accumulators that stay in registers for a block of
//! [`LANES`] outputs over all selected taps. A lane gains at most 255 per tap, so it is folded
//! into `i32` every [`empf_dsp::FLUSH`] taps, before it could carry into its neighbour.
//!
//! `Σ s·x = 2·Σ_{s=+1} x − Σ x` as in the reference, with `Σ x` over all taps once per layer.
//! Output channels go in pairs: the taps fall in four classes by their signs in the two
//! channels, three classes are summed and the largest is `Σ x` minus the other three, so a pair
//! sums at most 3/4 of its taps (3/8 per channel; a channel alone sums its minority sign, at
//! most 1/2). The taps of each class are listed once per pair (and time step) as element
//! offsets (`u16`) into the input copy.
//!
//! Variants, all exact: on Cortex-M4/M7/M33 the block loop is `empf-dsp`'s `uxtab16` assembly;
//! on hosts 4 blocks are summed per pass in 16-bit lanes the compiler vectorises
//! ([`GROUP_BLOCKS`]); and a wide input whose elements are all in `0..=65535` (the sums an
//! average pool makes of spikes) is copied as 16-bit elements, two per word, folded every
//! `65535 / max` taps ([`Input`]).
//!
//! The input copy is zero-padded and, for stride `s > 1`, split into `s×s` phase planes
//! (`xq[c][py][px][i][j] = xpad[c][py + s·i][px + s·j]`), so that the inputs of one tap for
//! consecutive outputs are consecutive elements whatever the stride. Outputs are indexed "wide",
//! `n = oy·Wq + ox` over the phase width `Wq` (columns `ox ≥ OW` are computed and dropped), the
//! stride-1 case being the reference kernel's wide layout. Integer sums are exact, so the result
//! is the reference kernel's bit for bit (`tests::spike_bconv_equals_reference`,
//! `tests::sum16_bconv_equals_reference`).

use super::conv::ConvGeom;
use super::fixed::{OutDot, OutRequant};
use crate::bits::sign_at;
use empf_dsp::TapList;

/// Outputs per block (3 words of 4 spikes, 6 accumulator words in registers; with 4 words the
/// Cortex-M4's 13 registers no longer hold the loop and LLVM spills accumulators).
pub(crate) const LANES: usize = empf_dsp::LANES;

/// The geometry of one spike ±1 conv in the phase layout; `None` from [`SpikeConv::new`] when
/// a tap offset does not fit the `u16` list (the layer then runs the reference kernel).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpikeConv {
    /// Stride: phases per axis.
    s: usize,
    /// Rows and columns of one phase plane.
    hq: usize,
    wq: usize,
    /// Wide outputs `(OH−1)·Wq + OW`, rounded up to whole blocks.
    blocks: usize,
    /// Elements of the phase copy, including the slack the last block reads.
    copy_elems: usize,
    /// Bytes per element of the copy: 1 for 8-bit spikes, 2 for 16-bit sums ([`Input`]).
    elem_bytes: usize,
}

impl SpikeConv {
    /// The geometry for inputs of `elem_bytes` bytes per copied element ([`Input::BYTES`]).
    pub fn new(g: &ConvGeom, elem_bytes: usize) -> Option<SpikeConv> {
        let s = g.stride;
        let (hp, wp) = (
            g.input.h as usize + 2 * g.pad,
            g.input.w as usize + 2 * g.pad,
        );
        // Stride 1: a row's right padding is the next row's left padding (zeros both), so a
        // row takes `W + pad` elements, not `W + 2·pad`: fewer wide outputs computed only to be
        // dropped (a 7×7 plane with padding 1: 55 instead of 61, 5 blocks instead of 6). Reads
        // past a row's end land in the next row's left padding, or in the slack after the last
        // row; `OW ≤ W + pad` as `pad < k`.
        let wq = if s == 1 && g.pad < g.kernel {
            g.input.w as usize + g.pad
        } else {
            wp.div_ceil(s)
        };
        let hq = hp.div_ceil(s);
        let c = g.input.c as usize;
        // In u64 first: a validated model bounds every tensor, not every stride-split padded
        // copy; past this check every offset (below `phases`) fits a usize.
        let phases = c as u64 * (s * s) as u64 * hq as u64 * wq as u64;
        if phases > crate::MAX_NUMEL as u64 {
            return None;
        }
        let len = (g.oh - 1) * wq + g.ow;
        let blocks = len.div_ceil(LANES);
        let sc = SpikeConv {
            s,
            hq,
            wq,
            blocks,
            copy_elems: 0,
            elem_bytes,
        };
        // The largest tap offset: last channel, every phase and shift of the kernel.
        let k = g.kernel;
        if k * k > MAX_KERNEL_TAPS {
            return None;
        }
        let max_off = (0..k)
            .flat_map(|ky| (0..k).map(move |kx| sc.offset(c - 1, ky, kx)))
            .max()?;
        if max_off > u16::MAX as usize {
            return None;
        }
        Some(SpikeConv {
            copy_elems: (phases as usize).max(max_off + blocks * LANES),
            ..sc
        })
    }

    /// Element offset of tap `(c, ky, kx)` in the phase copy.
    #[inline(always)]
    fn offset(&self, c: usize, ky: usize, kx: usize) -> usize {
        let s = self.s;
        ((c * s + ky % s) * s + kx % s) * self.hq * self.wq + (ky / s) * self.wq + kx / s
    }

    /// Scratch words: the phase copy, the `Σ x` lanes (`i32`), the tap list (`u16` per tap and
    /// [`LIST_SLACK`]).
    pub fn scratch_words(&self, taps: usize) -> usize {
        self.copy_bytes().div_ceil(4) + self.blocks * LANES + (taps + LIST_SLACK).div_ceil(2)
    }

    fn copy_bytes(&self) -> usize {
        self.copy_elems * self.elem_bytes
    }
}

/// What the kernel reads: 8-bit spikes (`u8`, 4 per word) or non-negative integer tensors below
/// 2^16 (`i32`, copied as `u16`, 2 per word: the sums an average pool makes of spikes,
/// 0..=1020, checked by the caller).
pub(crate) trait Input: Copy {
    /// Bytes per element of the phase copy.
    const BYTES: usize;
    /// Writes `src[0], src[step], …` (`n` of them) as elements `at..at + n` of the copy.
    fn store_run(src: &[Self], step: usize, n: usize, xq: &mut [u8], at: usize);
    /// [`block_sums`] for this element size; `flush`: taps a 16-bit lane takes before it is
    /// folded (the caller's bound for `u16` inputs; `u8` uses `empf_dsp::FLUSH`).
    fn block_sums(win: &[u8], taps: &TapList<'_>, out: &mut [i32; LANES], flush: usize);
    /// Prefix sums of one list, `out[s]` over `taps[..ends[s]]` (`empf_dsp::block_sums_upto`).
    fn sums_upto(
        win: &[u8],
        taps: &TapList<'_>,
        ends: [usize; 3],
        out: [&mut [i32; LANES]; 3],
        flush: usize,
    );
    /// `out[j] = Σ_{off ∈ offs} win[off + j]` for `j < lanes` (`lanes ≤ GROUP`), in 16-bit
    /// lanes the compiler vectorises (hosts; see [`GROUP_BLOCKS`]).
    fn wide_sums(win: &[u8], offs: &[u16], lanes: usize, out: &mut [i32; GROUP], flush: usize);
}

/// Blocks summed per pass over a tap list. On hosts with vector units a pass covers 4 blocks
/// (48 outputs in 16-bit lanes, which the compiler vectorises: SSE2 on any x86-64, NEON on
/// AArch64); a microcontroller sums one block in registers ([`block_sums`]). The block layout
/// and the scratch are the same on every target.
const GROUP_BLOCKS: usize = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
    4
} else {
    1
};
/// Outputs per pass.
const GROUP: usize = GROUP_BLOCKS * LANES;

/// Sums of blocks `b..b + n` (`n ≤ GROUP_BLOCKS`) over `taps` into `out[..n·LANES]`.
#[inline(always)]
fn group_sums<X: Input>(
    xq: &[u8],
    b: usize,
    n: usize,
    taps: &TapList<'_>,
    flush: usize,
    out: &mut [i32; GROUP],
) {
    let win = &xq[b * LANES * X::BYTES..];
    if GROUP_BLOCKS == 1 {
        let block: &mut [i32; LANES] = (&mut out[..LANES]).try_into().unwrap();
        X::block_sums(win, taps, block, flush);
    } else {
        X::wide_sums(win, taps.offsets(), n * LANES, out, flush);
    }
}

/// Prefix sums (ends `ends`) of blocks `b..b + n` over `taps` into `out[s][..n·LANES]`: on a
/// microcontroller [`Input::sums_upto`] (one pass for 8-bit spikes), on hosts the vectorised
/// pass per segment, then added up.
#[inline(always)]
fn group_sums_upto<X: Input>(
    xq: &[u8],
    b: usize,
    n: usize,
    taps: &TapList<'_>,
    ends: [usize; 3],
    flush: usize,
    out: &mut [[i32; GROUP]; 3],
) {
    let win = &xq[b * LANES * X::BYTES..];
    if GROUP_BLOCKS == 1 {
        fn block(o: &mut [i32; GROUP]) -> &mut [i32; LANES] {
            (&mut o[..LANES]).try_into().unwrap()
        }
        let [o0, o1, o2] = out;
        X::sums_upto(win, taps, ends, [block(o0), block(o1), block(o2)], flush);
    } else {
        let offs = taps.offsets();
        let mut start = 0;
        for (s, &end) in ends.iter().enumerate() {
            X::wide_sums(win, &offs[start..end], n * LANES, &mut out[s], flush);
            if s > 0 {
                let (done, rest) = out.split_at_mut(s);
                for (v, &p) in rest[0][..n * LANES]
                    .iter_mut()
                    .zip(&done[s - 1][..n * LANES])
                {
                    *v = v.wrapping_add(p);
                }
            }
            start = end;
        }
    }
}

/// The vectorisable pass: `acc[j] += load(j)` over the taps, folded into `out` (cleared first)
/// every `flush` taps (16-bit lanes). A full group has a constant trip count.
#[inline(always)]
fn wide_pass(
    offs: &[u16],
    lanes: usize,
    out: &mut [i32; GROUP],
    flush: usize,
    load: impl Fn(usize, &mut [u16]),
) {
    out[..lanes].fill(0);
    for chunk in offs.chunks(flush.max(1)) {
        let mut acc = [0u16; GROUP];
        if lanes == GROUP {
            for &off in chunk {
                load(off as usize, &mut acc);
            }
        } else {
            for &off in chunk {
                load(off as usize, &mut acc[..lanes]);
            }
        }
        for (o, &a) in out[..lanes].iter_mut().zip(&acc[..lanes]) {
            *o = o.wrapping_add(a as i32);
        }
    }
}

impl Input for u8 {
    const BYTES: usize = 1;
    #[inline(always)]
    fn store_run(src: &[u8], step: usize, n: usize, xq: &mut [u8], at: usize) {
        let dst = &mut xq[at..at + n];
        if step == 1 {
            dst.copy_from_slice(&src[..n]);
        } else {
            // `src` holds the `n` elements: one check here, none in the loop.
            let src = &src[..(n - 1) * step + 1];
            for (j, d) in dst.iter_mut().enumerate() {
                *d = src[j * step];
            }
        }
    }
    #[inline(always)]
    fn block_sums(win: &[u8], taps: &TapList<'_>, out: &mut [i32; LANES], _flush: usize) {
        block_sums(win, taps, out);
    }
    #[inline(always)]
    fn sums_upto(
        win: &[u8],
        taps: &TapList<'_>,
        ends: [usize; 3],
        out: [&mut [i32; LANES]; 3],
        _flush: usize,
    ) {
        empf_dsp::block_sums_upto(win, taps, ends, out);
    }
    #[inline(always)]
    fn wide_sums(win: &[u8], offs: &[u16], lanes: usize, out: &mut [i32; GROUP], _flush: usize) {
        wide_pass(offs, lanes, out, empf_dsp::FLUSH, |off, acc| {
            let s = &win[off..off + acc.len()];
            for (a, &v) in acc.iter_mut().zip(s) {
                *a = a.wrapping_add(v as u16);
            }
        });
    }
}

impl Input for i32 {
    const BYTES: usize = 2;
    #[inline(always)]
    fn store_run(src: &[i32], step: usize, n: usize, xq: &mut [u8], at: usize) {
        let dst = xq[2 * at..2 * (at + n)].chunks_exact_mut(2);
        for (d, &v) in dst.zip(src.iter().step_by(step)) {
            // In range: the caller checked `0 <= x <= u16::MAX` ([`u16_range`]).
            d.copy_from_slice(&(v as u16).to_le_bytes());
        }
    }
    #[inline(always)]
    fn block_sums(win: &[u8], taps: &TapList<'_>, out: &mut [i32; LANES], flush: usize) {
        block_sums_u16(win, taps.offsets(), out, flush);
    }
    #[inline(always)]
    fn sums_upto(
        win: &[u8],
        taps: &TapList<'_>,
        ends: [usize; 3],
        out: [&mut [i32; LANES]; 3],
        flush: usize,
    ) {
        let (offs, mut start) = (taps.offsets(), 0);
        let mut prev = [0i32; LANES];
        for (o, &end) in out.into_iter().zip(&ends) {
            block_sums_u16(win, &offs[start..end], o, flush);
            for (v, p) in o.iter_mut().zip(&mut prev) {
                *v = v.wrapping_add(*p);
                *p = *v;
            }
            start = end;
        }
    }
    #[inline(always)]
    fn wide_sums(win: &[u8], offs: &[u16], lanes: usize, out: &mut [i32; GROUP], flush: usize) {
        wide_pass(offs, lanes, out, flush, |off, acc| {
            let s = &win[2 * off..2 * (off + acc.len())];
            for (a, v) in acc.iter_mut().zip(s.chunks_exact(2)) {
                *a = a.wrapping_add(u16::from_le_bytes([v[0], v[1]]));
            }
        });
    }
}

/// `Some(max)` when every element is in `0..=u16::MAX` (the 16-bit kernel applies).
pub(crate) fn u16_range(x: &[i32]) -> Option<u16> {
    let (lo, hi) = x
        .iter()
        .fold((0i32, 0i32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    (lo >= 0 && hi <= u16::MAX as i32).then_some(hi as u16)
}

/// Taps a 16-bit lane can add before it is folded, for elements up to `max`.
pub(crate) fn u16_flush(max: u16) -> usize {
    (u16::MAX / max.max(1)) as usize
}

/// [`block_sums`] on `u16` elements (2 per word, no split: a lane's values are below 2^16 and
/// it is folded every `flush` taps, before it could carry). Plain Rust on every target.
#[inline(always)]
fn block_sums_u16(win: &[u8], offs: &[u16], out: &mut [i32; LANES], flush: usize) {
    #[inline(always)]
    fn word(s: &[u8], i: usize) -> u32 {
        u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]])
    }
    *out = [0; LANES];
    for chunk in offs.chunks(flush.max(1)) {
        let (mut w0, mut w1, mut w2, mut w3, mut w4, mut w5) = (0u32, 0u32, 0u32, 0u32, 0u32, 0u32);
        for &off in chunk {
            let o = 2 * off as usize;
            let s = &win[o..o + 2 * LANES];
            w0 += word(s, 0);
            w1 += word(s, 1);
            w2 += word(s, 2);
            w3 += word(s, 3);
            w4 += word(s, 4);
            w5 += word(s, 5);
        }
        // Word i holds outputs 2i (low half) and 2i + 1 (high half).
        for (i, wd) in [w0, w1, w2, w3, w4, w5].into_iter().enumerate() {
            out[2 * i] = out[2 * i].wrapping_add((wd & 0xFFFF) as i32);
            out[2 * i + 1] = out[2 * i + 1].wrapping_add((wd >> 16) as i32);
        }
    }
}

/// Sums `xq[base + off + j]` over the offsets in `offs`, for the `LANES` outputs `j`, into
/// `out` (replacing its contents; wrapping, as the reference accumulates). `win` starts at
/// `base`. The loop is `empf-dsp`'s: Cortex-M DSP-extension assembly where the target has it,
/// plain-Rust SWAR elsewhere (the same sums).
#[inline(always)]
fn block_sums(win: &[u8], offs: &TapList<'_>, out: &mut [i32; LANES]) {
    empf_dsp::block_sums(win, offs, out);
}

/// Entries past the last tap in the list buffer: [`pair_lists`] writes a sign word's taps
/// of one class through a 32-entry window from the class's write position.
const LIST_SLACK: usize = 32;

/// Largest `kernel²` the kernel takes (a larger binary conv runs the reference kernel; at most
/// 96: `TapOffsets::ext` holds `kernel² + 32` entries of 128).
const MAX_KERNEL_TAPS: usize = 64;

/// Tap offsets of one layer: tap `t = c·k² + j` (the sign rows' `[c][ky][kx]` order) sits at
/// element `c·channel + within[j]` of the phase copy ([`SpikeConv::offset`]).
struct TapOffsets {
    within: [u16; MAX_KERNEL_TAPS],
    /// `ext[w]`, `w < kk + 32`: the offset of the tap `w` taps after the first tap of a
    /// channel, relative to that channel (the 32 taps of a sign word may run into the next
    /// channels). Wrapping `u16`: entries past the last tap are never used. 128 entries
    /// (≥ MAX_KERNEL_TAPS + 32): [`pair_lists`] slices 32 of them from any `w < kk`.
    ext: [u16; 128],
    kk: usize,
    channel: usize,
    channels: usize,
}

impl TapOffsets {
    fn new(g: &ConvGeom, sc: &SpikeConv) -> TapOffsets {
        let k = g.kernel;
        let mut within = [0u16; MAX_KERNEL_TAPS];
        for (j, w) in within.iter_mut().take(k * k).enumerate() {
            // Fits: `SpikeConv::new` checked every offset against `u16::MAX`.
            *w = sc.offset(0, j / k, j % k) as u16;
        }
        let (kk, channel) = (k * k, sc.s * sc.s * sc.hq * sc.wq);
        let mut ext = [0u16; 128];
        for (w, e) in ext.iter_mut().take(kk + 32).enumerate() {
            *e = ((w / kk * channel) as u16).wrapping_add(within[w % kk]);
        }
        TapOffsets {
            within,
            ext,
            kk,
            channel,
            channels: g.input.c as usize,
        }
    }

    /// Every tap's offset, in tap order.
    #[inline(always)]
    fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.channels).flat_map(move |c| {
            self.within[..self.kk]
                .iter()
                .map(move |&w| (c * self.channel) as u16 + w)
        })
    }
}

/// Fills `list` with the byte offsets of the taps whose sign is `want` (`None`: every tap) and
/// returns how many.
fn tap_list(taps: &TapOffsets, row: &[u8], want: Option<bool>, list: &mut [u16]) -> usize {
    let mut n = 0;
    for (t, off) in taps.iter().enumerate() {
        if want.is_none_or(|w| sign_at(row, t) == w) {
            list[n] = off;
            n += 1;
        }
    }
    n
}

/// One ±1 conv layer on spikes: `y[o]` (`OH×OW` per channel) `= finish(o)(Σ_t sign·x)`, the
/// same values as [`super::conv::bconv_planes`] on the same spikes. `scratch` holds at least
/// [`SpikeConv::scratch_words`] words.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bconv_spikes<X: Input>(
    g: &ConvGeom,
    sc: &SpikeConv,
    x: &[X],
    flush: usize,
    y: &mut [i32],
    scratch: &mut [u32],
    signs: &[u8],
    finish: impl Fn(usize) -> OutRequant,
) {
    let taps = g.taps();
    let (c_in, h, w) = (g.input.c as usize, g.input.h as usize, g.input.w as usize);
    debug_assert_eq!(sc.elem_bytes, X::BYTES);
    let (copy, rest) = scratch.split_at_mut(sc.copy_bytes().div_ceil(4));
    let (total, rest) = rest.split_at_mut(sc.blocks * LANES);
    let xq: &mut [u8] = &mut bytemuck::cast_slice_mut(copy)[..sc.copy_bytes()];
    let total: &mut [i32] = bytemuck::cast_slice_mut(total);
    let list: &mut [u16] =
        &mut bytemuck::cast_slice_mut(&mut rest[..(taps + LIST_SLACK).div_ceil(2)])
            [..taps + LIST_SLACK];

    // The padded phase copy: input (iy, ix) sits at padded (iy + pad, ix + pad).
    xq.fill(0);
    let (s, plane_q) = (sc.s, sc.hq * sc.wq);
    // Element `(c, iy, ix)` goes to `((c·s + py % s)·s + px % s)·plane + (py / s)·Wq + px / s`
    // (`py = iy + pad`, `px = ix + pad`): per row, one run per phase column `px % s`.
    for phase in 0..s {
        // The first column of this phase: `(ix0 + pad) % s == phase`.
        let ix0 = (phase + s - g.pad % s) % s;
        if ix0 >= w {
            continue;
        }
        let (n, col) = ((w - ix0).div_ceil(s), phase * plane_q + (ix0 + g.pad) / s);
        for c in 0..c_in {
            for iy in 0..h {
                let py = iy + g.pad;
                let row = &x[(c * h + iy) * w + ix0..(c * h + iy + 1) * w];
                let at = (c * s + py % s) * s * plane_q + (py / s) * sc.wq + col;
                X::store_run(row, s, n, xq, at);
            }
        }
    }
    let xq: &[u8] = xq;

    let rb = crate::bits::row_bytes(taps);
    let offsets = TapOffsets::new(g, sc);
    let all = tap_list(&offsets, &[], None, list);
    let all = TapList::new(&list[..all]);
    let mut b = 0;
    while b < sc.blocks {
        let n = GROUP_BLOCKS.min(sc.blocks - b);
        let mut sums = [0i32; GROUP];
        group_sums::<X>(xq, b, n, &all, flush, &mut sums);
        total[b * LANES..(b + n) * LANES].copy_from_slice(&sums[..n * LANES]);
        b += n;
    }

    let plane = g.oh * g.ow;
    let mut outs = y.chunks_exact_mut(plane).enumerate();
    while let Some((o, ya)) = outs.next() {
        let ra = &signs[o * rb..(o + 1) * rb];
        let Some((_, yb)) = outs.next() else {
            single::<X>(g, sc, &offsets, xq, flush, total, ra, list, finish(o), ya);
            break;
        };
        let rbits = &signs[(o + 1) * rb..(o + 2) * rb];
        // Classes of taps by (sign in a, sign in b), index 2·[a = +1] + [b = +1]; the largest
        // class is not summed but taken as `Σ x` minus the other three, so a pair of channels
        // sums at most 3/4 of its taps (3/8 per channel, against 1/2 for one channel alone).
        let counts = class_counts(ra, rbits, taps);
        let skip = (0..4).max_by_key(|&k| counts[k]).unwrap_or(0);
        // `Σ s·x = σ·(Σ x − 2·S)` for a channel, `σ` its sign in the skipped class and `S` the
        // inputs of its taps of the other sign: two of the three summed classes. Of those, `X`
        // (`skip ^ 3`: both signs flipped) is in both channels' `S`, `A` (`skip ^ 2`) in a's
        // only, `B` (`skip ^ 1`) in b's only. Listed end to end as A, X, B, one pass gives the
        // prefix sums `P_A`, `P_A + P_X = S_a` and `P_A + P_X + P_B`, and `S_b` is the last
        // minus the first: the reference's value in wrapping `i32` arithmetic.
        let summed = [skip ^ 2, skip ^ 3, skip ^ 1];
        let mut starts = [0usize; 4];
        for (q, &k) in summed.iter().enumerate() {
            starts[k] = if q == 0 {
                0
            } else {
                starts[summed[q - 1]] + counts[summed[q - 1]]
            };
        }
        let ends = [
            counts[summed[0]],
            counts[summed[0]] + counts[summed[1]],
            taps - counts[skip],
        ];
        pair_lists(&offsets, ra, rbits, summed, starts, list);
        let sign_a = |k: usize| if k >= 2 { 1i32 } else { -1 };
        let sign_b = |k: usize| if k & 1 == 1 { 1i32 } else { -1 };
        let (da, db) = (
            OutDot::new(finish(o), sign_a(skip)),
            OutDot::new(finish(o + 1), sign_b(skip)),
        );
        let pair = TapList::new(&list[..ends[2]]);
        let mut at = OutCursor::default();
        let mut b = 0;
        // Overwritten by every block (the block sums replace, not add).
        let mut sums = [[0i32; GROUP]; 3];
        let zero = [0i32; GROUP];
        while b < sc.blocks {
            let n = GROUP_BLOCKS.min(sc.blocks - b);
            group_sums_upto::<X>(xq, b, n, &pair, ends, flush, &mut sums);
            let tot = &total[b * LANES..(b + n) * LANES];
            b += n;
            at.runs(tot.len(), sc.wq, g.ow, plane, |j, i, len| {
                let (p, zero) = (|q: usize| &sums[q][j..j + len], &zero[..len]);
                finish_run(&tot[j..], [p(1), zero], &da, &mut ya[i..i + len]);
                finish_run(&tot[j..], [p(2), p(0)], &db, &mut yb[i..i + len]);
            });
        }
    }
}

/// Where the next wide output goes: its column in the wide row and its index in the plane.
#[derive(Clone, Copy, Default)]
struct OutCursor {
    ox: usize,
    at: usize,
}

impl OutCursor {
    /// The plane index of the current wide output, if it is a real one (not a padding column
    /// `ox ≥ OW`, not past the last row), and a step to the next.
    #[inline(always)]
    fn next(&mut self, wq: usize, ow: usize, plane: usize) -> Option<usize> {
        let here = (self.ox < ow && self.at < plane).then_some(self.at);
        self.at += here.is_some() as usize;
        self.ox += 1;
        if self.ox == wq {
            self.ox = 0;
        }
        here
    }

    /// The runs of real outputs among the next `n` wide outputs, as `(j, i, len)`: wide
    /// outputs `j..j + len` of the block go to plane indices `i..i + len`; then steps past them.
    #[inline(always)]
    fn runs(
        &mut self,
        n: usize,
        wq: usize,
        ow: usize,
        plane: usize,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let mut j = 0;
        while j < n {
            let here = if self.ox < ow {
                (ow - self.ox).min(n - j)
            } else {
                0
            };
            let len = here.min(plane - self.at.min(plane));
            if len > 0 {
                f(j, self.at, len);
                self.at += len;
            }
            // Skip to the next row's start (or the block's end).
            let step = (wq - self.ox).min(n - j);
            j += step;
            self.ox += step;
            if self.ox == wq {
                self.ox = 0;
            }
        }
    }
}

/// `y[j] = d(Σx[j], p[j] − q[j])` along one run of outputs (`p − q`: a channel's `S`, from the
/// pair's prefix sums). Not inlined: a small function of its own keeps the requantisation
/// constants in registers.
#[inline(never)]
fn finish_run(tot: &[i32], parts: [&[i32]; 2], d: &OutDot, y: &mut [i32]) {
    let [p, q] = parts;
    match d.fast() {
        Some(k) => empf_dsp::requant_run(k, tot, p, q, y),
        None => {
            let outs = y.iter_mut().zip(tot).zip(p.iter().zip(q));
            outs.for_each(|((y, &t), (&p, &q))| *y = d.apply(t, p.wrapping_sub(q)));
        }
    }
}

/// The bits of byte `i` of a sign row that are taps (the last byte may be partly unused).
fn last_byte_mask(taps: usize, i: usize) -> u8 {
    if (i + 1) * 8 <= taps {
        0xFF
    } else {
        ((1u16 << (taps - i * 8)) - 1) as u8
    }
}

/// Sign word `i` of a packed row: taps `32·i..32·i + 32` as bits, little-endian (a row is
/// `⌈taps/8⌉` bytes); bits past the row or past `taps` are 0 (they are 0 in a well-formed file
/// but not in a corrupt one: masked, so no class gets a tap the layer does not have).
#[inline(always)]
fn sign_word(row: &[u8], i: usize, taps: usize) -> u32 {
    let at = 4 * i;
    let w = match row.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => {
            let mut b = [0u8; 4];
            for (d, &v) in b.iter_mut().zip(row.get(at..).unwrap_or(&[])) {
                *d = v;
            }
            u32::from_le_bytes(b)
        }
    };
    match taps.saturating_sub(at * 8) {
        left @ 0..=31 => w & ((1u32 << left) - 1),
        _ => w,
    }
}

/// `f(a, b, valid)` for each sign word of two rows of `taps` signs, in order: whole words read
/// straight (one load each), the last partial one through [`sign_word`], `valid` its bits that
/// are taps.
#[inline(always)]
fn sign_words(ra: &[u8], rb: &[u8], taps: usize, mut f: impl FnMut(u32, u32, u32)) {
    #[inline(always)]
    fn word(row: &[u8], i: usize) -> u32 {
        let b = &row[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    let full = taps / 32;
    for i in 0..full {
        f(word(ra, i), word(rb, i), !0);
    }
    if taps % 32 != 0 {
        let valid = (1u32 << (taps % 32)) - 1;
        f(sign_word(ra, full, taps), sign_word(rb, full, taps), valid);
    }
}

/// How many taps of a channel pair fall in each class `2·[a = +1] + [b = +1]`.
fn class_counts(ra: &[u8], rb: &[u8], taps: usize) -> [usize; 4] {
    let (mut pa, mut pb, mut pab) = (0usize, 0usize, 0usize);
    sign_words(ra, rb, taps, |a, b, _| {
        pa += a.count_ones() as usize;
        pb += b.count_ones() as usize;
        pab += (a & b).count_ones() as usize;
    });
    [taps + pab - pa - pb, pb - pab, pa - pab, pab]
}

/// The tap offsets of a channel pair's classes `summed` (see [`bconv_spikes`]), class `k` from
/// `list[starts[k]]` on.
#[inline(never)]
fn pair_lists(
    taps: &TapOffsets,
    ra: &[u8],
    rb: &[u8],
    summed: [usize; 3],
    starts: [usize; 4],
    list: &mut [u16],
) {
    let (kk, channel, ext) = (taps.kk, taps.channel, &taps.ext);
    let total = taps.channels * kk;
    let mut pos = summed.map(|k| starts[k]);
    // Per sign word, one bit mask of its 32 taps per class; each summed class visits only its
    // own taps (count trailing zeros, clear the lowest bit), so the skipped class costs nothing.
    let (mut c0, mut w0) = (0usize, 0usize);
    sign_words(ra, rb, total, |a, b, valid| {
        let masks = [!(a | b) & valid, !a & b, a & !b, a & b];
        let base = (c0 * channel) as u16;
        // The three classes' write positions stay in registers. The word's 32 table entries,
        // and 32 list entries from the class's write position (the list has `LIST_SLACK` past
        // its last tap): one bounds check each per word and class, none per tap (`& 31`: a tap
        // within the word, a count below 32).
        let e: &[u16; 32] = ext[w0..w0 + 32].try_into().expect("w0 < kk ≤ 64");
        for (p, &k) in pos.iter_mut().zip(&summed) {
            let mut m = masks[k & 3];
            if m == 0 {
                continue;
            }
            let dst: &mut [u16; 32] = (&mut list[*p..*p + 32]).try_into().expect("slack");
            let mut n = 0;
            while m != 0 {
                dst[n & 31] = base.wrapping_add(e[m.trailing_zeros() as usize & 31]);
                n += 1;
                m &= m - 1;
            }
            *p += n;
        }
        w0 += 32;
        while w0 >= kk {
            w0 -= kk;
            c0 += 1;
        }
    });
}

/// One output channel alone (the last of an odd count): its minority-sign taps.
#[allow(clippy::too_many_arguments)]
fn single<X: Input>(
    g: &ConvGeom,
    sc: &SpikeConv,
    offsets: &TapOffsets,
    xq: &[u8],
    flush: usize,
    total: &[i32],
    row: &[u8],
    list: &mut [u16],
    finish: OutRequant,
    yo: &mut [i32],
) {
    let taps = g.taps();
    let plus = row
        .iter()
        .enumerate()
        .map(|(i, &b)| (b & last_byte_mask(taps, i)).count_ones() as usize)
        .sum::<usize>();
    // The minority sign: at most half the taps are summed.
    let minority_plus = plus <= taps - plus;
    let n = tap_list(offsets, row, Some(minority_plus), list);
    let minority = TapList::new(&list[..n]);
    // `Σ s·x = 2·P − Σ x` (minority +1) or `Σ x − 2·P` (minority −1).
    let d = OutDot::new(finish, if minority_plus { -1 } else { 1 });
    let plane = yo.len();
    let mut at = OutCursor::default();
    let mut b = 0;
    while b < sc.blocks {
        let n = GROUP_BLOCKS.min(sc.blocks - b);
        let mut part = [0i32; GROUP];
        group_sums::<X>(xq, b, n, &minority, flush, &mut part);
        let tot = &total[b * LANES..(b + n) * LANES];
        b += n;
        for (&p, &t) in part.iter().zip(tot) {
            if let Some(i) = at.next(sc.wq, g.ow, plane) {
                yo[i] = d.apply(t, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::bconv_planes;
    use super::*;
    use crate::model::Shape;
    use proptest::prelude::*;

    /// Scratch for both kernels on `g`.
    fn scratch_for(g: &ConvGeom, sc: &SpikeConv) -> Vec<u32> {
        let (c, h, w) = (g.input.c as usize, g.input.h as usize, g.input.w as usize);
        let padded = c * (h + 2 * g.pad) * (w + 2 * g.pad);
        vec![
            0xDEAD_BEEF;
            (padded + 2 * g.oh * g.ow + 4 * (w + 2 * g.pad) * g.oh + 8)
                .max(sc.scratch_words(g.taps()))
        ]
    }

    /// Both kernels on `cout` channels of `g` with these spikes and sign rows.
    fn case(
        g: ConvGeom,
        cout: usize,
        spikes: Vec<u8>,
        signs: Vec<u8>,
    ) -> Result<(), TestCaseError> {
        let sc = SpikeConv::new(&g, 1).expect("small geometry fits u16 offsets");
        compare(g, &sc, cout, &spikes, empf_dsp::FLUSH, &signs)
    }

    /// The same with 16-bit inputs (`x`, all in `0..=65535`), the pooled-spike kernel.
    fn case16(g: ConvGeom, cout: usize, x: Vec<i32>, signs: Vec<u8>) -> Result<(), TestCaseError> {
        let sc = SpikeConv::new(&g, 2).expect("small geometry fits u16 offsets");
        let flush = u16_flush(u16_range(&x).expect("inputs in 0..=65535"));
        compare(g, &sc, cout, &x, flush, &signs)
    }

    fn compare<X: Input + crate::infer::conv::PmIn<i32>>(
        g: ConvGeom,
        sc: &SpikeConv,
        cout: usize,
        x: &[X],
        flush: usize,
        signs: &[u8],
    ) -> Result<(), TestCaseError> {
        let plane = g.oh * g.ow;
        let mut want = vec![0i32; cout * plane];
        let mut got = vec![0i32; cout * plane];
        // Channel-dependent requantisations (so channels cannot be swapped unnoticed), every
        // third one off the fast path; a multiplier of 1 and no shift in channel 0 keeps the
        // raw sums visible.
        let a_max = g.taps() as u64 * x.iter().map(|v| v.widen().max(0) as u64).max().unwrap_or(0);
        let rq = |o: usize| {
            let (m, sh, off) = match o % 3 {
                0 if o == 0 => (1, 0, 0),
                2 => (-(20_000 + 777 * o as i32), 0, -(o as i64)),
                _ => (
                    30_000 + 1234 * o as i32,
                    12 + (o % 5) as u8,
                    3000 - 2000 * o as i64,
                ),
            };
            OutRequant::new(m, sh, off, a_max)
        };
        // The reference kernel requantises with the plain `i64` expression.
        let finish = |o: usize, a: i32| rq(o).plain(a);
        let mut scratch = scratch_for(&g, sc);
        bconv_planes(&g, x, &mut want, &mut scratch, signs, finish);
        let mut scratch = scratch_for(&g, sc);
        bconv_spikes(&g, sc, x, flush, &mut got, &mut scratch, signs, rq);
        prop_assert_eq!(got, want, "{:?}", g);
        Ok(())
    }

    /// Geometry, spikes (random, all 0 or all 255) and sign rows (random, all +1, all −1).
    fn inputs() -> impl Strategy<Value = (u32, u32, u32, u8, u8, u8, usize, Vec<u8>, Vec<u8>)> {
        (
            1u32..=9,
            1u32..=12,
            1u32..=12,
            prop::sample::select(vec![1u8, 2, 3, 5]),
            1u8..=3,
            0u8..=2,
            1usize..=9,
        )
            .prop_filter(
                "kernel fits the padded input",
                |&(_, h, w, k, _, pad, _)| {
                    pad < k && h + 2 * pad as u32 >= k as u32 && w + 2 * pad as u32 >= k as u32
                },
            )
            .prop_flat_map(|(c, h, w, k, stride, pad, cout)| {
                let n = (c * h * w) as usize;
                let taps = c as usize * k as usize * k as usize;
                let rb = crate::bits::row_bytes(taps);
                let spikes = prop_oneof![
                    prop::collection::vec(any::<u8>(), n),
                    Just(vec![0u8; n]),
                    Just(vec![255u8; n]),
                    prop::collection::vec(prop::sample::select(vec![0u8, 255]), n),
                ];
                let row = prop_oneof![
                    prop::collection::vec(any::<u8>(), rb),
                    Just(vec![0xFFu8; rb]),
                    Just(vec![0u8; rb]),
                ];
                let rows = (prop::collection::vec(row, cout), any::<bool>());
                let signs = rows.prop_map(move |(rows, dirty)| {
                    // Unused high bits of a row's last byte are 0 on the wire; set (a corrupt
                    // file) in half the cases, where they must be ignored as the reference does.
                    let mut flat: Vec<u8> = rows.concat();
                    if taps % 8 != 0 && !dirty {
                        for r in 0..cout {
                            flat[r * rb + rb - 1] &= (1u8 << (taps % 8)) - 1;
                        }
                    }
                    flat
                });
                (Just((c, h, w, k, stride, pad, cout)), spikes, signs)
            })
            .prop_map(|((c, h, w, k, s, p, o), x, signs)| (c, h, w, k, s, p, o, x, signs))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]
        /// The SWAR kernel equals the reference kernel bit for bit: odd channel counts, every
        /// stride 1–3 and padding 0–2, 1×1 to 5×5 kernels, all-zero and all-255 spikes.
        #[test]
        fn spike_bconv_equals_reference(
            (c, h, w, k, stride, pad, cout, spikes, signs) in inputs()
        ) {
            case(ConvGeom::new(Shape { c, h, w }, k, stride, pad), cout, spikes, signs)?;
        }

        /// The 16-bit kernel equals the reference on the same geometries, with pooled-spike
        /// sums (0..=1020), values up to 65535 (a fold every tap) and all-zero inputs.
        #[test]
        fn sum16_bconv_equals_reference(
            (c, h, w, k, stride, pad, cout, spikes, signs) in inputs(),
            scale in prop::sample::select(vec![4i32, 257, 0]),
        ) {
            let x: Vec<i32> = spikes.iter().map(|&v| v as i32 * scale).collect();

            case16(ConvGeom::new(Shape { c, h, w }, k, stride, pad), cout, x, signs)?;
        }
    }

    /// The one-block kernels (what microcontrollers run) and the vectorised group pass (what
    /// hosts run) give the same sums: 8-bit spikes and 16-bit sums, with folds.
    #[test]
    fn block_and_group_sums_agree() {
        let mut st = 11u64;
        let mut next = move || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (st >> 33) as u32
        };
        for case in 0..300 {
            let len = 2 * GROUP + 40 + (next() % 200) as usize;
            let max16 = [1020u32, 65535, 3][case % 3];
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let words: Vec<u8> = (0..len)
                .flat_map(|_| ((next() % (max16 + 1)) as u16).to_le_bytes())
                .collect();
            let n_offs = (next() % 600) as usize;
            let offs: Vec<u16> = (0..n_offs)
                .map(|_| (next() as usize % (len - GROUP)) as u16)
                .collect();
            let taps = TapList::new(&offs);
            let flush16 = u16_flush(max16 as u16);
            for n in 1..=GROUP_BLOCKS {
                let (mut g8, mut g16) = ([0i32; GROUP], [0i32; GROUP]);
                u8::wide_sums(&bytes, &offs, n * LANES, &mut g8, 0);
                i32::wide_sums(&words, &offs, n * LANES, &mut g16, flush16);
                for blk in 0..n {
                    let (mut b8, mut b16) = ([0i32; LANES], [0i32; LANES]);
                    u8::block_sums(&bytes[blk * LANES..], &taps, &mut b8, 0);
                    i32::block_sums(&words[2 * blk * LANES..], &taps, &mut b16, flush16);
                    assert_eq!(b8[..], g8[blk * LANES..(blk + 1) * LANES], "case {case}");
                    assert_eq!(b16[..], g16[blk * LANES..(blk + 1) * LANES], "case {case}");
                }
            }
        }
    }

    /// The tap offsets are [`SpikeConv::offset`] in sign-row order.
    #[test]
    fn tap_offsets_equal_offset() {
        for (c, k, stride, pad) in [
            (1, 1, 1, 0),
            (3, 3, 1, 1),
            (2, 3, 2, 1),
            (4, 5, 3, 2),
            (2, 8, 2, 0),
        ] {
            let g = ConvGeom::new(Shape { c, h: 9, w: 8 }, k, stride, pad);
            let sc = SpikeConv::new(&g, 1).unwrap();
            let k = k as usize;
            let want: Vec<u16> = (0..c as usize)
                .flat_map(|c| (0..k).flat_map(move |ky| (0..k).map(move |kx| (c, ky, kx))))
                .map(|(c, ky, kx)| sc.offset(c, ky, kx) as u16)
                .collect();
            let got: Vec<u16> = TapOffsets::new(&g, &sc).iter().collect();
            assert_eq!(got, want, "{g:?}");
        }
        // A kernel with more than MAX_KERNEL_TAPS taps runs the reference kernel.
        let g = ConvGeom::new(Shape { c: 1, h: 9, w: 9 }, 9, 1, 0);
        assert!(SpikeConv::new(&g, 1).is_none());
    }

    /// More taps than a 16-bit lane holds between folds (257): all-255 spikes over 600 taps
    /// of one sign would carry into the neighbouring lane without the fold.
    #[test]
    fn lanes_fold_before_they_carry() {
        let (c, k) = (67u32, 3u8);
        let taps = c as usize * 9;
        let rb = crate::bits::row_bytes(taps);
        // Channel 0: all +1 except one tap (minority −1); channel 1: all −1 (minority +1,
        // every tap summed); channel 2: alternating.
        // Channels 3..=6 (three pairs and one alone in all): every third, two in five, all +1,
        // the first half.
        let mut signs = vec![0u8; 7 * rb];
        for t in 0..taps {
            let plus = [
                t != 5,
                false,
                t % 2 == 0,
                t % 3 == 0,
                t % 5 < 2,
                true,
                t < taps / 2,
            ];
            for (o, _) in plus.iter().enumerate().filter(|(_, &p)| p) {
                signs[o * rb + t / 8] |= 1 << (t % 8);
            }
        }
        let spikes = vec![255u8; c as usize * 5 * 6];
        for stride in [1, 2] {
            let g = ConvGeom::new(Shape { c, h: 5, w: 6 }, k, stride, 1);
            case(g, 7, spikes.clone(), signs.clone()).unwrap();
            // 16-bit: 1020 (pooled 255s) folds every 64 taps, 65535 every tap.
            for v in [1020, 65535] {
                let x = vec![v; spikes.len()];
                case16(g, 7, x, signs.clone()).unwrap();
            }
        }
    }
}
