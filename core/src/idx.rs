//! The idx header (LeCun's MNIST format, also Fashion-MNIST's), parsed without allocation, so
//! the trainer and the edge runner read the same bytes the same way.
//!
//! Layout (all integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic: `0x00 0x00 <type> <ndim>`; type `0x08` = unsigned byte |
//! | 4 | 4·ndim | dimension sizes, outermost first |
//! | 4+4·ndim | ∏dims | data, row-major |
//!
//! Images are `0x00000803` (N × rows × cols), labels `0x00000801` (N). This module parses the
//! header and slices images out of the data; reading files (raw or gzip, bounded) stays with the
//! std callers, which name the file in their errors. Its error type is its own: input files are
//! a different boundary from model files ([`crate::Error`]).

use core::fmt;

/// Magic of an unsigned-byte idx file with 3 dimensions (images).
pub const MAGIC_U8_IMAGES: u32 = 0x0000_0803;
/// Magic of an unsigned-byte idx file with 1 dimension (labels).
pub const MAGIC_U8_LABELS: u32 = 0x0000_0801;
/// Most dimensions a header may have (the magic's low byte allows 255; real files use 1–3).
pub const MAX_DIMS: usize = 8;

/// Why bytes are not the idx header asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IdxError {
    /// Fewer bytes than the header needs (`needed` for the magic or the whole header).
    IdxTruncatedHeader {
        /// Bytes the header needs so far.
        needed: usize,
        /// Bytes there are.
        found: usize,
    },
    /// The magic is not the expected one.
    IdxBadMagic {
        /// The magic expected.
        expected: u32,
        /// The magic found.
        found: u32,
    },
    /// The magic announces more than [`MAX_DIMS`] dimensions.
    IdxTooManyDims {
        /// Dimensions announced.
        ndim: usize,
    },
    /// `∏ dims` does not fit in 64 bits.
    IdxDimsOverflow,
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IdxError::IdxTruncatedHeader { needed, found } => {
                write!(f, "truncated idx header: {found} of {needed} bytes")
            }
            IdxError::IdxBadMagic { expected, found } => {
                let hint = match found {
                    MAGIC_U8_LABELS => " (an idx label file)",
                    MAGIC_U8_IMAGES => " (an idx image file)",
                    _ => "",
                };
                write!(
                    f,
                    "bad magic 0x{found:08x}{hint}, expected 0x{expected:08x}"
                )
            }
            IdxError::IdxTooManyDims { ndim } => {
                write!(f, "idx header with {ndim} dimensions (at most {MAX_DIMS})")
            }
            IdxError::IdxDimsOverflow => write!(f, "idx dimensions overflow 64 bits"),
        }
    }
}

impl core::error::Error for IdxError {}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdxHeader {
    magic: u32,
    ndim: usize,
    dims: [u32; MAX_DIMS],
}

impl IdxHeader {
    /// The magic.
    pub fn magic(&self) -> u32 {
        self.magic
    }

    /// Dimension sizes, outermost first.
    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.ndim]
    }

    /// Header length in bytes (`4 + 4·ndim`).
    pub fn len(&self) -> usize {
        header_len(self.ndim)
    }

    /// Never true (a header has at least its magic); for the `len`/`is_empty` pair.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Data bytes the header announces, `∏ dims` (checked when parsing).
    pub fn data_len(&self) -> u64 {
        self.dims()
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(u64::from(d)))
    }

    /// Bytes per outermost item (`∏ dims[1..]`: one image of an images file, 1 for labels).
    pub fn item_len(&self) -> u64 {
        self.dims()
            .iter()
            .skip(1)
            .fold(1u64, |a, &d| a.saturating_mul(u64::from(d)))
    }

    /// Item `index` of `data` (the bytes after the header), or `None` past the end or when
    /// `data` is shorter than announced.
    pub fn item<'a>(&self, data: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let n = usize::try_from(self.item_len()).ok()?;
        let count = usize::try_from(*self.dims().first()?).ok()?;
        if index >= count {
            return None;
        }
        data.get(index.checked_mul(n)?..index.checked_add(1)?.checked_mul(n)?)
    }
}

/// Header length for `ndim` dimensions.
pub const fn header_len(ndim: usize) -> usize {
    4 + 4 * ndim
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the header at the start of `bytes` (which may go on with the data), requiring
/// `expected_magic` (its low byte fixes the number of dimensions). The magic is checked before
/// the length of the rest, so a file of another kind is named as such even when short.
pub fn parse_header(bytes: &[u8], expected_magic: u32) -> Result<IdxHeader, IdxError> {
    if bytes.len() < 4 {
        return Err(IdxError::IdxTruncatedHeader {
            needed: 4,
            found: bytes.len(),
        });
    }
    let magic = be_u32(bytes, 0);
    if magic != expected_magic {
        return Err(IdxError::IdxBadMagic {
            expected: expected_magic,
            found: magic,
        });
    }
    let ndim = (magic & 0xff) as usize;
    if ndim > MAX_DIMS {
        return Err(IdxError::IdxTooManyDims { ndim });
    }
    let needed = header_len(ndim);
    if bytes.len() < needed {
        return Err(IdxError::IdxTruncatedHeader {
            needed,
            found: bytes.len(),
        });
    }
    let mut dims = [0u32; MAX_DIMS];
    for (i, d) in dims.iter_mut().enumerate().take(ndim) {
        *d = be_u32(bytes, 4 + 4 * i);
    }
    dims[..ndim]
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(u64::from(d)))
        .ok_or(IdxError::IdxDimsOverflow)?;
    Ok(IdxHeader { magic, ndim, dims })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: [u8; 22] = [
        0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6,
    ];

    #[test]
    fn parses_exact_bytes_and_slices_items() {
        let h = parse_header(&FILE, MAGIC_U8_IMAGES).unwrap();
        assert_eq!(h.dims(), [2, 1, 3]);
        assert_eq!((h.len(), h.data_len(), h.item_len()), (16, 6, 3));
        let data = &FILE[h.len()..];
        assert_eq!(h.item(data, 1), Some(&[4u8, 5, 6][..]));
        assert_eq!(h.item(data, 2), None);
        assert_eq!(h.item(&data[..5], 1), None, "short data");
    }

    #[test]
    fn every_prefix_and_wrong_kind_is_an_error_never_a_panic() {
        for cut in 0..16 {
            let e = parse_header(&FILE[..cut], MAGIC_U8_IMAGES).unwrap_err();
            assert!(
                matches!(e, IdxError::IdxTruncatedHeader { .. }),
                "{cut}: {e:?}"
            );
        }
        let e = parse_header(&FILE, MAGIC_U8_LABELS).unwrap_err();
        assert_eq!(
            e,
            IdxError::IdxBadMagic {
                expected: 0x801,
                found: 0x803
            }
        );
        let huge = [
            0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        assert_eq!(
            parse_header(&huge, MAGIC_U8_IMAGES).unwrap_err(),
            IdxError::IdxDimsOverflow
        );
        let many = [0, 0, 8, 200];
        assert!(matches!(
            parse_header(&many, 0x08c8).unwrap_err(),
            IdxError::IdxTooManyDims { ndim: 200 }
        ));
    }
}
