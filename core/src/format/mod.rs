//! The empf model file: a 16-byte header followed by a postcard body.
//!
//! Byte tables live in `core/spec/format.md`. This module holds the header codec and the wire
//! types; [`crate::Model`] validates a decoded body once, and the encoder (feature `alloc`) is the
//! only way the trainer writes files.

mod wire;
pub use wire::*;

#[cfg(feature = "alloc")]
mod encode;
#[cfg(feature = "alloc")]
pub use encode::encode_model;

use crate::crc32::crc32;
use crate::Error;

/// First four bytes of every model file.
pub const MAGIC: [u8; 4] = *b"EMPF";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 16;

/// The fixed-size header that precedes the postcard body. All integers little-endian.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `EMPF` |
/// | 4 | 2 | format version (1) |
/// | 6 | 2 | flags (reserved, must be 0) |
/// | 8 | 4 | body length in bytes |
/// | 12 | 4 | CRC-32 (IEEE) of the body |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Reserved flags; 0 in v1.
    pub flags: u16,
    /// Length of the body that follows the header.
    pub body_len: u32,
    /// CRC-32 of the body.
    pub crc: u32,
}

impl Header {
    /// The header for `body`.
    pub fn for_body(body: &[u8]) -> Result<Header, Error> {
        let body_len = u32::try_from(body.len()).map_err(|_| Error::EncodeTooLarge)?;
        Ok(Header {
            version: FORMAT_VERSION,
            flags: 0,
            body_len,
            crc: crc32(body),
        })
    }

    /// The 16 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.crc.to_le_bytes());
        out
    }
}

/// Checks the header of a whole model file and returns it with the body it covers.
///
/// Checks run in the order magic, version, flags, length, CRC, so the error names the first
/// thing that is wrong.
pub fn split_header(bytes: &[u8]) -> Result<(Header, &[u8]), Error> {
    let (head, body) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or(Error::DecodeTooShort)?;
    if head[0..4] != MAGIC {
        return Err(Error::DecodeBadMagic);
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != FORMAT_VERSION {
        return Err(Error::DecodeUnsupportedVersion { found: version });
    }
    let flags = u16::from_le_bytes([head[6], head[7]]);
    if flags != 0 {
        return Err(Error::DecodeBadFlags);
    }
    let body_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if body.len() as u64 != body_len as u64 {
        return Err(Error::DecodeLengthMismatch);
    }
    let crc = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    if crc32(body) != crc {
        return Err(Error::DecodeBadCrc);
    }
    Ok((
        Header {
            version,
            flags,
            body_len,
            crc,
        },
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_exact_bytes() {
        let body = b"123456789";
        let h = Header::for_body(body).unwrap();
        assert_eq!(
            h.to_bytes(),
            [
                b'E', b'M', b'P', b'F', // magic
                1, 0, // version 1, LE
                0, 0, // flags
                9, 0, 0, 0, // body length 9
                0x26, 0x39, 0xF4, 0xCB, // CRC-32 0xCBF43926, LE
            ]
        );
    }

    #[test]
    fn header_errors_in_order() {
        let body = b"abc";
        let mut file = Header::for_body(body).unwrap().to_bytes().to_vec();
        file.extend_from_slice(body);
        assert!(split_header(&file).is_ok());
        assert_eq!(split_header(&file[..15]), Err(Error::DecodeTooShort));
        let mut bad = file.clone();
        bad[0] = b'X';
        assert_eq!(split_header(&bad), Err(Error::DecodeBadMagic));
        let mut bad = file.clone();
        bad[4] = 2;
        assert_eq!(
            split_header(&bad),
            Err(Error::DecodeUnsupportedVersion { found: 2 })
        );
        let mut bad = file.clone();
        bad[7] = 1;
        assert_eq!(split_header(&bad), Err(Error::DecodeBadFlags));
        assert_eq!(
            split_header(&file[..file.len() - 1]),
            Err(Error::DecodeLengthMismatch)
        );
        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(split_header(&bad), Err(Error::DecodeBadCrc));
    }
}
