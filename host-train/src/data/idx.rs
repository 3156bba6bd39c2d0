//! The idx file format (LeCun's MNIST format, also used by Fashion-MNIST), raw or gzipped.
//!
//! Layout (all integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic: `0x00 0x00 <type> <ndim>`; type `0x08` = unsigned byte |
//! | 4 | 4·ndim | dimension sizes, outermost first |
//! | 4+4·ndim | ∏dims | data, row-major |
//!
//! Images are `0x00000803` (N × rows × cols), labels `0x00000801` (N). The file must hold exactly
//! header + ∏dims bytes: a shorter file is truncated, a longer one has trailing bytes; both are
//! errors. A gzipped file (name ending in `.gz`) is decompressed while reading and the same checks
//! apply to the decompressed stream; at most one byte past the expected length is read, so a file
//! with a lying header cannot make the reader buffer more than the data that is really there.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// Magic of an unsigned-byte idx file with 3 dimensions (images).
pub const MAGIC_IMAGES: u32 = empf_core::idx::MAGIC_U8_IMAGES;
/// Magic of an unsigned-byte idx file with 1 dimension (labels).
pub const MAGIC_LABELS: u32 = empf_core::idx::MAGIC_U8_LABELS;

/// A decoded idx array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimension sizes, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data; `data.len() == dims.iter().product()`.
    pub data: Vec<u8>,
}

/// Reads and validates an idx file of unsigned bytes with the given magic (which fixes the number
/// of dimensions: its low byte). Gzip is chosen by the `.gz` extension.
pub fn read_idx(path: &Path, expected_magic: u32) -> Result<IdxArray, DataError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
                also_tried_gz: false,
            }
        } else {
            DataError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let buffered = BufReader::new(file);
    if is_gz(path) {
        parse_idx(MultiGzDecoder::new(buffered), path, expected_magic, true)
    } else {
        parse_idx(buffered, path, expected_magic, false)
    }
}

/// Parses an idx stream. `path` is only used in error messages; `gz` selects the wording of read
/// errors (a corrupt gzip stream is reported as such).
///
/// A gzip stream is read on to its end after the data (at most [`GZ_DRAIN_LIMIT`] more
/// decompressed bytes, counted and dropped), whatever the content checks said: only the end of
/// the stream makes the decoder compare the CRC-32 and length of its trailer, so a corrupt
/// archive is reported as corrupt — not as a bad magic, bad dimensions or trailing bytes that its
/// garbage happens to decompress to.
pub fn parse_idx<R: Read>(
    mut reader: R,
    path: &Path,
    expected_magic: u32,
    gz: bool,
) -> Result<IdxArray, DataError> {
    let parsed = parse_idx_content(&mut reader, path, expected_magic, gz);
    if !gz {
        return parsed;
    }
    let mut rest = (&mut reader).take(GZ_DRAIN_LIMIT);
    match io::copy(&mut rest, &mut io::sink()) {
        Err(source) => Err(DataError::Decompress {
            path: path.to_path_buf(),
            source,
        }),
        // Bytes after the data the content check did not see: they are trailing bytes.
        Ok(n) if n > 0 => parsed.and_then(|arr| {
            Err(DataError::TrailingBytes {
                path: path.to_path_buf(),
                expected: (4 + 4 * arr.dims.len() + arr.data.len()) as u64,
            })
        }),
        Ok(_) => parsed,
    }
}

/// How far past the announced data a gzip stream is decompressed to reach its trailer (so that
/// a small "bomb" costs bounded time; past it the stream is reported as having trailing bytes
/// without its checksum being verified).
pub const GZ_DRAIN_LIMIT: u64 = 64 << 20;

fn parse_idx_content<R: Read>(
    mut reader: R,
    path: &Path,
    expected_magic: u32,
    gz: bool,
) -> Result<IdxArray, DataError> {
    let read_err = |source: io::Error| {
        if gz {
            DataError::Decompress {
                path: path.to_path_buf(),
                source,
            }
        } else {
            DataError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    use empf_core::idx::{self as core_idx, IdxError};
    let ndim = ((expected_magic & 0xff) as usize).min(core_idx::MAX_DIMS);
    let header_len = core_idx::header_len(ndim);

    let mut header = Vec::with_capacity(header_len);
    (&mut reader)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(read_err)?;
    // The header itself is empf-core's parser (shared with edge-infer).
    let parsed = core_idx::parse_header(&header, expected_magic).map_err(|e| match e {
        IdxError::IdxBadMagic { expected, found } => DataError::BadMagic {
            path: path.to_path_buf(),
            expected,
            found,
        },
        IdxError::IdxTruncatedHeader { found, .. } => DataError::Truncated {
            path: path.to_path_buf(),
            what: "header",
            expected: header_len as u64,
            found: found as u64,
        },
        e => DataError::BadDims {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    let dims: Vec<usize> = parsed.dims().iter().map(|&d| d as usize).collect();
    let data_len = Some(parsed.data_len())
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| DataError::BadDims {
            path: path.to_path_buf(),
            reason: format!("dimensions {dims:?} overflow the address space"),
        })?;

    // Read at most one byte more than expected, to detect trailing data without buffering it.
    let mut data = Vec::new();
    (&mut reader)
        .take(data_len + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    let found = data.len() as u64;
    if found < data_len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "data",
            expected: header_len as u64 + data_len,
            found: header_len as u64 + found,
        });
    }
    if found > data_len {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            expected: header_len as u64 + data_len,
        });
    }
    Ok(IdxArray { dims, data })
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Finds `<dir>/<name>` or else `<dir>/<name>.gz`. The raw file wins when both exist (it is what
/// torchvision leaves next to the archive, and is faster to read).
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::MissingFile {
        path: raw,
        also_tried_gz: true,
    })
}

/// Encodes an idx file of unsigned bytes (used by tests and fixtures). The caller provides a
/// consistent `dims`/`data` pair; the magic is `0x0000_08<ndim>`.
pub fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, 0x08, dims.len() as u8]);
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], magic: u32) -> Result<IdxArray, DataError> {
        parse_idx(bytes, Path::new("mem.idx"), magic, false)
    }

    #[test]
    fn encodes_exact_bytes() {
        let bytes = encode_idx(&[2, 1, 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            bytes,
            [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]
        );
        let arr = parse(&bytes, MAGIC_IMAGES).expect("valid");
        assert_eq!(arr.dims, [2, 1, 3]);
        assert_eq!(arr.data, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn every_prefix_is_truncated_or_bad_magic_never_a_panic() {
        let bytes = encode_idx(&[3], &[1, 2, 3]);
        for cut in 0..bytes.len() {
            let err = parse(&bytes[..cut], MAGIC_LABELS).expect_err("prefix must fail");
            assert!(
                matches!(err, DataError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn corrupt_gzip_is_reported_as_corrupt_whatever_it_inflates_to() {
        // Varied bytes so that deflate emits literals, matches and lengths to corrupt.
        let data: Vec<u8> = (0..3 * 6 * 5)
            .map(|i| ((i * i * 31 + i / 7) % 256) as u8)
            .collect();
        let idx = encode_idx(&[3, 6, 5], &data);
        let gz = gzip(&idx);
        let parse_gz = |bytes: &[u8]| {
            parse_idx(
                MultiGzDecoder::new(bytes),
                Path::new("x.gz"),
                MAGIC_IMAGES,
                true,
            )
        };
        let ok = parse_gz(&gz).unwrap();
        assert_eq!(ok.data, data);
        // Every byte after the 10-byte gzip header (the deflate stream, then the CRC-32 and
        // length trailer), altered: each must be reported as a corrupt archive, never as bad
        // magic, dimensions, truncation or trailing bytes, nor accepted. Before the stream was
        // read to its end, flips that inflate to more data gave "trailing bytes after …".
        let mut kinds = std::collections::BTreeMap::new();
        for at in 10..gz.len() {
            for flip in [0x01u8, 0x10, 0xff] {
                let mut bad = gz.clone();
                bad[at] ^= flip;
                match parse_gz(&bad) {
                    Err(DataError::Decompress { .. }) => {}
                    // The unused padding bits of deflate's last byte: nothing changed.
                    Ok(arr) if arr.data == data => {}
                    other => {
                        *kinds
                            .entry(format!("{other:?}").chars().take(40).collect::<String>())
                            .or_insert(0) += 1;
                    }
                }
            }
        }
        assert!(kinds.is_empty(), "not reported as corrupt gzip: {kinds:?}");
        // A valid archive whose content is longer than announced still has trailing bytes.
        let mut long = idx.clone();
        long.push(0);
        let err = parse_gz(&gzip(&long)).unwrap_err();
        assert!(matches!(err, DataError::TrailingBytes { .. }), "{err}");
    }

    #[test]
    fn huge_dims_do_not_allocate_or_overflow() {
        let bytes = encode_idx(&[u32::MAX, u32::MAX, u32::MAX], &[0; 10]);
        let err = parse(&bytes, MAGIC_IMAGES).expect_err("must fail");
        assert!(
            matches!(err, DataError::BadDims { .. } | DataError::Truncated { .. }),
            "{err}"
        );
    }
}
