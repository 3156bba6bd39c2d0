//! The trainer's one RNG module: PCG32 (XSH-RR 64/32) for data order and augmentation,
//! SplitMix64 ([`splitmix64`], [`InitRng`]) for seed derivation and weight initialisation, and
//! SplitMix64's finaliser ([`mix64`]) for pure functions of `(seed, epoch, batch)`.
//!
//!
//! The generator and its seeding are exactly O'Neill's reference `pcg32_random_r` /
//! `pcg32_srandom_r` (pcg-random.org, minimal C library), so `Rng::new(42, 54)` yields the
//! published demo sequence `0xa15c02b7, 0x7b47f409, …`.
//!
//! Everything the trainer draws (shuffles, weight init, augmentation) goes through this type, so a
//! run is reproducible from its seed, and the whole state ([`RngState`], two `u64`s) can be stored
//! in a checkpoint's metadata as a string and restored exactly.
//!
//! Conventions:
//! * [`Rng::uniform_f32`] is in `[0, 1)` with 24 random bits; [`Rng::uniform_f64`] uses 53 bits.
//! * [`Rng::normal_pair`] is Box–Muller computed in `f64`: `r = sqrt(-2 ln(1 - u1))`,
//!   `(r cos 2πu2, r sin 2πu2)` with `u1, u2` from [`Rng::uniform_f64`] (in that order).
//! * [`Rng::shuffle`] is Fisher–Yates from the last element down, `j = below(i + 1)`.
//! * [`Rng::below`] is Lemire's unbiased multiply-and-reject method on 64-bit draws.

use std::fmt;
use std::str::FromStr;

/// Multiplier of the PCG32 LCG.
const PCG_MULT: u64 = 6_364_136_223_846_793_005;

/// Stream used by [`Rng::seed_from_u64`] (any odd-or-even value works; the stream is made odd).
pub const DEFAULT_STREAM: u64 = 0xda3e_39cb_94b9_5bdb;

/// Errors of this module (only parsing a stored state can fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RngError {
    /// The text is not of the form `pcg32:<state hex>:<inc hex>` with an odd increment.
    #[error("invalid RNG state string {text:?}: expected `pcg32:<16 hex digits>:<16 hex digits>` with an odd increment")]
    ParseState {
        /// The text that failed to parse.
        text: String,
    },
}

/// SplitMix64 step (Steele, Lea & Flood; Vigna's reference `splitmix64.c`).
///
/// Advances `state` by the golden-ratio increment and returns the mixed output. Used to derive
/// independent seeds from small integers (seed, epoch, worker index).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mix64(*state)
}

/// SplitMix64's output function (a bijective 64-bit finaliser): hashes a word that already
/// combines its inputs, e.g. `(seed, epoch, batch)` in [`crate::train::random_bp_step`].
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Small deterministic RNG for weight initialisation (SplitMix64; Steele, Lea & Flood 2014).
///
/// Only used to draw initial weights, so statistical quality beyond SplitMix64 is not needed;
/// what matters is that the same seed gives the same network on every machine.
#[derive(Clone, Debug)]
pub struct InitRng {
    state: u64,
}

impl InitRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        InitRng { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_range(&mut self, lo: f32, hi: f32) -> f32 {
        (lo as f64 + (hi as f64 - lo as f64) * self.uniform()) as f32
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// `n` values uniform in `[-bound, bound)`.
    pub fn uniform_vec(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform_range(-bound, bound)).collect()
    }

    /// `n` values normal with mean 0 and standard deviation `std`.
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| std * self.normal()).collect()
    }
}

/// The complete state of an [`Rng`]; `Display`/`FromStr` give a stable text form for
/// checkpoint metadata: `pcg32:<state as 16 hex digits>:<inc as 16 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RngState {
    /// LCG state.
    pub state: u64,
    /// LCG increment (always odd).
    pub inc: u64,
}

impl fmt::Display for RngState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pcg32:{:016x}:{:016x}", self.state, self.inc)
    }
}

impl FromStr for RngState {
    type Err = RngError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || RngError::ParseState {
            text: text.to_owned(),
        };
        let mut parts = text.split(':');
        let (Some("pcg32"), Some(state), Some(inc), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let hex = |s: &str| {
            if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                u64::from_str_radix(s, 16).ok()
            } else {
                None
            }
        };
        let (Some(state), Some(inc)) = (hex(state), hex(inc)) else {
            return Err(err());
        };
        if inc & 1 == 0 {
            return Err(err());
        }
        Ok(RngState { state, inc })
    }
}

/// PCG32 generator. Cheap to copy; `Clone` gives an independent copy of the same sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
    inc: u64,
}

impl Rng {
    /// `pcg32_srandom_r(initstate, initseq)`: `initseq` selects one of 2^63 streams.
    pub fn new(initstate: u64, initseq: u64) -> Self {
        let mut rng = Rng {
            state: 0,
            inc: (initseq << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(initstate);
        rng.next_u32();
        rng
    }

    /// Generator for a plain seed, on [`DEFAULT_STREAM`].
    pub fn seed_from_u64(seed: u64) -> Self {
        Self::new(seed, DEFAULT_STREAM)
    }

    /// Generator for `(seed, stream)` with both mixed through SplitMix64, so that nearby seeds and
    /// nearby streams (e.g. consecutive epochs) give unrelated sequences. Deterministic: the same
    /// pair always gives the same sequence.
    pub fn for_stream(seed: u64, stream: u64) -> Self {
        let mut s = seed;
        let initstate = splitmix64(&mut s);
        let mut t = stream ^ 0x5851_f42d_4c95_7f2d;
        let initseq = splitmix64(&mut t);
        Self::new(initstate, initseq)
    }

    /// Restores a generator from a saved state.
    pub fn from_state(state: RngState) -> Self {
        Rng {
            state: state.state,
            inc: state.inc | 1,
        }
    }

    /// The full state, for checkpointing.
    pub fn state(&self) -> RngState {
        RngState {
            state: self.state,
            inc: self.inc,
        }
    }

    /// Next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
        // Truncations below are the algorithm (take the low 32 bits / the top 5 bits).
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Next 64 random bits: two 32-bit draws, the first one in the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// Uniform in `[0, 1)`: the top 24 bits of one 32-bit draw times 2^-24.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in `[0, 1)`: the top 53 bits of [`Rng::next_u64`] times 2^-53.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)` (for `low < high`; returns `low` when the range is empty).
    pub fn uniform_range_f32(&mut self, low: f32, high: f32) -> f32 {
        let u = self.uniform_f32();
        let x = low + (high - low) * u;
        // Rounding can land exactly on `high`; keep the half-open contract.
        if x < high {
            x
        } else {
            low
        }
    }

    /// Two independent standard normal values (Box–Muller in `f64`, see the module docs).
    pub fn normal_pair(&mut self) -> (f32, f32) {
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (1.0 - u1).ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        ((r * theta.cos()) as f32, (r * theta.sin()) as f32)
    }

    /// One normal value `mean + std · z` (uses the first value of a [`Rng::normal_pair`]).
    pub fn normal_f32(&mut self, mean: f32, std: f32) -> f32 {
        mean + std * self.normal_pair().0
    }

    /// Fills `out` with `mean + std · z`, using both values of each Box–Muller pair in order.
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = mean + std * a;
            pair[1] = mean + std * b;
        }
        if let [last] = chunks.into_remainder() {
            *last = self.normal_f32(mean, std);
        }
    }

    /// Fills `out` with uniform values in `[low, high)`.
    pub fn fill_uniform(&mut self, out: &mut [f32], low: f32, high: f32) {
        for x in out {
            *x = self.uniform_range_f32(low, high);
        }
    }

    /// Uniform integer in `0..n` without bias (Lemire). Returns 0 when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        // Truncation to the low 64 bits is the method.
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Uniform index in `0..n` (`usize` convenience over [`Rng::below`]; 0 when `n == 0`).
    pub fn index(&mut self, n: usize) -> usize {
        // usize ≤ 64 bits on every supported target, so both conversions are lossless.
        self.below(n as u64) as usize
    }

    /// In-place Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pcg32-demo reference output for `pcg32_srandom_r(&rng, 42u, 54u)`.
    const PCG32_42_54: [u32; 6] = [
        0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e,
    ];

    /// `Rng::new(42, 54).shuffle(&mut [0, 1, 2, 3, 4])`.
    const PINNED_SHUFFLE_42_54: [usize; 5] = [0, 1, 4, 2, 3];

    #[test]
    fn pcg32_matches_reference_sequence() {
        let mut rng = Rng::new(42, 54);
        let got: Vec<u32> = (0..6).map(|_| rng.next_u32()).collect();
        assert_eq!(got, PCG32_42_54);
    }

    #[test]
    fn init_rng_is_splitmix64() {
        let (mut state, mut init) = (1234u64, InitRng::new(1234));
        for _ in 0..8 {
            assert_eq!(init.next_u64(), splitmix64(&mut state));
        }
    }

    #[test]
    fn splitmix64_matches_reference() {
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220a8397b1dcdaf);
        assert_eq!(splitmix64(&mut s), 0x6e789e6aa1b965f4);
        assert_eq!(splitmix64(&mut s), 0x06c45d188009454f);
        let mut s = 1_234_567u64;
        assert_eq!(splitmix64(&mut s), 6457827717110365317);
        assert_eq!(splitmix64(&mut s), 3203168211198807973);
    }

    #[test]
    fn u64_uniform_and_normal_follow_the_documented_formulas() {
        let w = PCG32_42_54.map(u64::from);
        let mut rng = Rng::new(42, 54);
        assert_eq!(rng.next_u64(), (w[0] << 32) | w[1]);

        let mut rng = Rng::new(42, 54);
        let expect_f32 = (w[0] >> 8) as f64 / 16_777_216.0;
        assert_eq!(f64::from(rng.uniform_f32()), expect_f32);

        let mut rng = Rng::new(42, 54);
        let u = |hi: u64, lo: u64| (((hi << 32) | lo) >> 11) as f64 / 9_007_199_254_740_992.0;
        let (u1, u2) = (u(w[0], w[1]), u(w[2], w[3]));
        let r = (-2.0 * (1.0 - u1).ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        let (a, b) = rng.normal_pair();
        assert_eq!(a, (r * t.cos()) as f32);
        assert_eq!(b, (r * t.sin()) as f32);
        // The same pair, computed independently (Python, f64), pinned as literals.
        assert!(
            (f64::from(a) - -0.203_090_840_578_415_6).abs() < 1e-6,
            "{a}"
        );
        assert!(
            (f64::from(b) - -1.396_043_061_018_603_9).abs() < 1e-6,
            "{b}"
        );
    }

    #[test]
    fn normal_moments_are_sane() {
        let mut rng = Rng::seed_from_u64(7);
        let mut v = vec![0.0f32; 200_001];
        rng.fill_normal(&mut v, 1.0, 2.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        assert!((var - 4.0).abs() < 0.06, "var {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn uniform_in_range() {
        let mut rng = Rng::seed_from_u64(1);
        for _ in 0..10_000 {
            let x = rng.uniform_f32();
            assert!((0.0..1.0).contains(&x));
            let y = rng.uniform_range_f32(-0.5, 0.25);
            assert!((-0.5..0.25).contains(&y));
        }
    }

    #[test]
    fn below_is_in_range_and_covers_all_values() {
        let mut rng = Rng::seed_from_u64(3);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            let k = rng.below(7);
            assert!(k < 7);
            seen[k as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn shuffle_is_deterministic_permutation() {
        let a = Rng::for_stream(42, 3).permutation(1000);
        let b = Rng::for_stream(42, 3).permutation(1000);
        let c = Rng::for_stream(42, 4).permutation(1000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Pinned: the shuffle defines the data order of every run, so it must not change
        // silently. Derivation from the reference draws (Lemire: j = (x·(i+1)) >> 64 on
        // next_u64 = (0xa15c02b7 << 32 | 0x7b47f409), …) is checked here too.
        let w = PCG32_42_54.map(u64::from);
        let j4 = ((u128::from((w[0] << 32) | w[1]) * 5) >> 64) as usize;
        let j3 = ((u128::from((w[2] << 32) | w[3]) * 4) >> 64) as usize;
        let j2 = ((u128::from((w[4] << 32) | w[5]) * 3) >> 64) as usize;
        let mut expect = [0usize, 1, 2, 3, 4];
        expect.swap(4, j4);
        expect.swap(3, j3);
        expect.swap(2, j2);
        let mut rng = Rng::new(42, 54);
        let mut small = [0usize, 1, 2, 3, 4];
        rng.shuffle(&mut small);
        assert_eq!(small, expect);
        assert_eq!(small, PINNED_SHUFFLE_42_54);
    }

    #[test]
    fn state_round_trips_through_text() {
        let mut rng = Rng::seed_from_u64(99);
        rng.next_u32();
        let text = rng.state().to_string();
        let restored = Rng::from_state(text.parse().expect("valid state text"));
        let mut a = rng.clone();
        let mut b = restored;
        for _ in 0..10 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
        for bad in [
            "",
            "pcg32",
            "pcg32:00:01",
            "pcg64:0000000000000000:0000000000000001",
            "pcg32:0000000000000000:0000000000000002",
            "pcg32:000000000000000g:0000000000000001",
            "pcg32:0000000000000000:0000000000000001:x",
        ] {
            assert!(bad.parse::<RngState>().is_err(), "{bad:?} accepted");
        }
    }
}
