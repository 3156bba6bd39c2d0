//! The paper's parameter-memory rule ("Param.(B)", spec §5.5).
//!
//! In the HD_LIF code (`utils.print_model_param_info`) binary conv weights count 0.25 B each
//! (2 bits), ternary conv weights 0.375 B (3 bits), every other weight (FP convs, Linear, SECA
//! Conv1d) 4 B, and BN / neuron parameters and running statistics are excluded (as are the α
//! scales, which a caller simply lists as [`ParamKind::Excluded`]). The report also gives the
//! FP32 size of the counted weights and the size at 1 bit per binary weight (ternary at 2 bits),
//! the figure the paper does *not* use.
//!
//! Sizes are kept in bits (integers), so the byte figures are exact.

use std::fmt;

/// How a tensor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// ±1 weights of a BConv: 0.25 B each in the paper's figure, 1 bit at best.
    Binary,
    /// Ternary weights: 0.375 B each in the paper's figure, 2 bits at best.
    Ternary,
    /// Full-precision weights (stem conv, classifier, SECA): 4 B each.
    FullPrecision,
    /// BN affine parameters, running statistics, neuron parameters: not counted.
    Excluded,
}

impl ParamKind {
    /// Bits per element in the paper's figure.
    pub fn paper_bits(self) -> u64 {
        match self {
            ParamKind::Binary => 2,
            ParamKind::Ternary => 3,
            ParamKind::FullPrecision => 32,
            ParamKind::Excluded => 0,
        }
    }

    /// Bits per element when packed as tightly as the values allow.
    pub fn packed_bits(self) -> u64 {
        match self {
            ParamKind::Binary => 1,
            ParamKind::Ternary => 2,
            ParamKind::FullPrecision => 32,
            ParamKind::Excluded => 0,
        }
    }
}

/// Parameter counts and memory of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamReport {
    /// Elements of binary tensors.
    pub binary: u64,
    /// Elements of ternary tensors.
    pub ternary: u64,
    /// Elements of full-precision tensors.
    pub full_precision: u64,
    /// Elements of excluded tensors (BN, neuron, running stats).
    pub excluded: u64,
    /// Size in the paper's accounting, in bits.
    pub paper_bits: u64,
    /// Size with binary at 1 bit and ternary at 2 bits per weight, in bits.
    pub packed_bits: u64,
}

impl ParamReport {
    /// Accumulates `(name, numel, kind)` entries (the name is only for the caller's benefit).
    pub fn from_params<'a>(params: impl IntoIterator<Item = (&'a str, usize, ParamKind)>) -> Self {
        let mut r = ParamReport::default();
        for (_, numel, kind) in params {
            r.add(numel as u64, kind);
        }
        r
    }

    /// Adds `numel` elements of `kind`.
    pub fn add(&mut self, numel: u64, kind: ParamKind) {
        let slot = match kind {
            ParamKind::Binary => &mut self.binary,
            ParamKind::Ternary => &mut self.ternary,
            ParamKind::FullPrecision => &mut self.full_precision,
            ParamKind::Excluded => &mut self.excluded,
        };
        *slot = slot.saturating_add(numel);
        self.paper_bits = self
            .paper_bits
            .saturating_add(numel.saturating_mul(kind.paper_bits()));
        self.packed_bits = self
            .packed_bits
            .saturating_add(numel.saturating_mul(kind.packed_bits()));
    }

    /// Weights that count (binary + ternary + full precision).
    pub fn counted_params(&self) -> u64 {
        self.binary
            .saturating_add(self.ternary)
            .saturating_add(self.full_precision)
    }

    /// Every element, excluded ones included.
    pub fn total_params(&self) -> u64 {
        self.counted_params().saturating_add(self.excluded)
    }

    /// The paper's "Param.(B)" in bytes.
    pub fn paper_bytes(&self) -> f64 {
        self.paper_bits as f64 / 8.0
    }

    /// Bytes with binary weights at 1 bit (ternary at 2).
    pub fn packed_bytes(&self) -> f64 {
        self.packed_bits as f64 / 8.0
    }

    /// Bytes if every counted weight were FP32 (the paper's "FP32 total" column).
    pub fn fp32_bytes(&self) -> u64 {
        self.counted_params().saturating_mul(4)
    }
}

impl fmt::Display for ParamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "params: {} counted ({} binary, {} ternary, {} FP) + {} excluded; \
             Param.(B) {:.3} MB (paper rule), {:.3} MB at 1 bit/binary weight, {:.2} MB as FP32",
            self.counted_params(),
            self.binary,
            self.ternary,
            self.full_precision,
            self.excluded,
            self.paper_bytes() / 1e6,
            self.packed_bytes() / 1e6,
            self.fp32_bytes() as f64 / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet18_cifar10_matches_spec_table() {
        // Spec §5.5: 6 858 FP, 11 157 504 binary → 44.66 MB FP32, 2.817 MB paper, 1.42 MB 1-bit.
        let r = ParamReport::from_params([
            ("fp", 6_858, ParamKind::FullPrecision),
            ("binary", 11_157_504, ParamKind::Binary),
            ("bn", 9_600, ParamKind::Excluded),
        ]);
        assert_eq!(r.paper_bytes(), 6_858.0 * 4.0 + 11_157_504.0 / 4.0);
        assert_eq!(format!("{:.3}", r.paper_bytes() / 1e6), "2.817");
        assert_eq!(format!("{:.2}", r.fp32_bytes() as f64 / 1e6), "44.66");
        assert_eq!(format!("{:.2}", r.packed_bytes() / 1e6), "1.42");
        assert_eq!(r.counted_params(), 11_164_362);
        assert_eq!(r.total_params(), 11_173_962);
    }

    #[test]
    fn resnet34_ternary_matches_spec_table() {
        // 522 408 FP + 21 258 240 ternary → 10.06 MB ("v3's figure").
        let r = ParamReport::from_params([
            ("fp", 522_408, ParamKind::FullPrecision),
            ("t", 21_258_240, ParamKind::Ternary),
        ]);
        assert_eq!(format!("{:.2}", r.paper_bytes() / 1e6), "10.06");
    }

    #[test]
    fn small_hand_case() {
        // conv 3x3x1x8 binary = 72 → 18 B (paper) / 9 B (1-bit); fc 8→10 + bias = 90 FP → 360 B;
        // BN 2·8 + running 2·8 + neuron 4 = 36 excluded.
        let r = ParamReport::from_params([
            ("conv.weight", 72, ParamKind::Binary),
            ("bn.weight", 8, ParamKind::Excluded),
            ("bn.bias", 8, ParamKind::Excluded),
            ("bn.running_mean", 8, ParamKind::Excluded),
            ("bn.running_var", 8, ParamKind::Excluded),
            ("neuron.lambda", 4, ParamKind::Excluded),
            ("fc.weight", 80, ParamKind::FullPrecision),
            ("fc.bias", 10, ParamKind::FullPrecision),
        ]);
        assert_eq!(r.paper_bytes(), 378.0);
        assert_eq!(r.packed_bytes(), 369.0);
        assert_eq!(r.fp32_bytes(), 648);
        assert_eq!(
            (r.counted_params(), r.excluded, r.total_params()),
            (162, 36, 198)
        );
        assert!(r.to_string().contains("162 counted"));
    }
}
