//! Bit-packed ±1 weights.
//!
//! A binary layer with `rows` outputs and `row_len` weights per output stores its signs as `rows`
//! rows of [`row_bytes`]`(row_len)` bytes each, so every output channel starts on a byte boundary.
//! Inside a row, weight `i` (in `[in][ky][kx]` order for convs) is bit `i % 8` (LSB first) of byte
//! `i / 8`; bit value 1 means +1 and 0 means −1. Unused high bits of a row's last byte are 0.

/// Bytes per packed row of `row_len` signs.
pub const fn row_bytes(row_len: usize) -> usize {
    row_len.div_ceil(8)
}

/// Sign `i` of a packed row: `true` for +1, `false` for −1. `i` must be `< 8·row.len()`.
#[inline(always)]
pub fn sign_at(row: &[u8], i: usize) -> bool {
    (row[i / 8] >> (i % 8)) & 1 == 1
}

/// Packs `rows × row_len` values (row-major) by sign: `v >= 0` (and NaN-free zero) → +1, else −1.
///
/// `sign(0)` is taken as +1: a binary weight is never 0 on the wire, unlike `torch.sign(0) == 0`.
#[cfg(feature = "alloc")]
pub fn pack_signs(values: &[f32], rows: usize, row_len: usize) -> alloc::vec::Vec<u8> {
    let rb = row_bytes(row_len);
    let mut out = alloc::vec![0u8; rows * rb];
    for r in 0..rows {
        for i in 0..row_len {
            if values[r * row_len + i] >= 0.0 {
                out[r * rb + i / 8] |= 1 << (i % 8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        // Row 0: + - - + + + + - | -  -> bits 0b0111_1001 = 0x79, then 0b0000_0000
        // Row 1: all + (9 values) -> 0xFF, 0x01 (high bits of the last byte stay 0)
        let v = [
            1.0, -1.0, -2.0, 0.5, 0.0, 3.0, 1.0, -0.1, -5.0, //
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ];
        let packed = pack_signs(&v, 2, 9);
        assert_eq!(packed, [0x79, 0x00, 0xFF, 0x01]);
        assert!(sign_at(&packed[0..2], 0));
        assert!(!sign_at(&packed[0..2], 1));
        assert!(!sign_at(&packed[0..2], 8));
        assert!(sign_at(&packed[2..4], 8));
        assert_eq!(row_bytes(9), 2);
        assert_eq!(row_bytes(8), 1);
        assert_eq!(row_bytes(0), 0);
    }

    proptest::proptest! {
        #[test]
        fn pack_then_read(rows in 1usize..5, row_len in 1usize..40, seed in 0u64..1000) {
            let n = rows * row_len;
            let vals: alloc::vec::Vec<f32> = (0..n)
                .map(|i| if (seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407)) >> 33) & 1 == 1 { 1.0 } else { -1.0 })
                .collect();
            let packed = pack_signs(&vals, rows, row_len);
            proptest::prop_assert_eq!(packed.len(), rows * row_bytes(row_len));
            for r in 0..rows {
                let row = &packed[r * row_bytes(row_len)..(r + 1) * row_bytes(row_len)];
                for i in 0..row_len {
                    proptest::prop_assert_eq!(sign_at(row, i), vals[r * row_len + i] >= 0.0);
                }
            }
        }
    }
}
