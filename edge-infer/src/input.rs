//! Input files for `edge-infer run`: IDX3 image files (u8 pixels, normalised with the dataset
//! mean/std), NumPy `.npy` (float32 little-endian, C order) and raw little-endian `.f32` files.
//!
//! Float inputs (`.npy`, `.f32`) are taken as already preprocessed; only IDX pixels are normalised.

use std::path::{Path, PathBuf};

use empf_core::{PixelNorm, Shape};

/// How u8 IDX pixels become floats: `(p/255 − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalize {
    /// Fashion-MNIST: mean 0.2860, std 0.3530.
    FashionMnist,
    /// MNIST: mean 0.1307, std 0.3081.
    Mnist,
    /// `p / 255` only.
    None,
}

impl Normalize {
    /// The pixel transform, as `empf-core` (and the firmware) define it.
    pub fn pixel_norm(self) -> PixelNorm {
        match self {
            Normalize::FashionMnist => PixelNorm::FASHION_MNIST,
            Normalize::Mnist => PixelNorm::MNIST,
            Normalize::None => PixelNorm::UNIT,
        }
    }
}

/// The file kinds `edge-infer` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// IDX3 (`0x00000803`) u8 images.
    Idx3,
    /// NumPy `.npy`, `<f4`.
    Npy,
    /// Raw little-endian f32, exactly `C·H·W` values.
    RawF32,
}

/// Why an input file cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file cannot be read.
    #[error("{path}: cannot read input file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's kind cannot be told from its extension or first bytes.
    #[error("{path}: unknown input format (expected an IDX3 image file, .npy or .f32)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The magic bytes are not those of the format.
    #[error("{path}: bad magic: {detail}")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The header is malformed.
    #[error("{path}: bad header: {detail}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The element type is not float32 little-endian.
    #[error("{path}: unsupported dtype {found} (expected float32 little-endian '<f4')")]
    WrongDtype {
        /// The file.
        path: PathBuf,
        /// The dtype in the header.
        found: String,
    },
    /// The data's shape does not match the model input.
    #[error("{path}: shape {found} does not match the model input {expected}")]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// Shape in the file.
        found: String,
        /// Model input shape.
        expected: String,
    },
    /// The file holds fewer or more bytes than its header (or the model input) implies.
    #[error("{path}: wrong size: {found} bytes of data, expected {expected}")]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Bytes present.
        found: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The gzip stream is corrupt (bad deflate data or CRC).
    #[error("{path}: corrupt gzip data: {source}")]
    CorruptGzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The header announces more data than the reader accepts.
    #[error("{path}: the idx header announces {announced} bytes of data, more than the limit of {cap} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes announced (saturated).
        announced: u64,
        /// The limit.
        cap: u64,
    },
    /// Data continues past what the header announces.
    #[error("{path}: trailing data after the {expected} bytes of data the idx header announces")]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Bytes announced.
        expected: u64,
    },
    /// A value is NaN or infinite.
    #[error(
        "{path}: value {value} at element {index} is not finite (inputs must be finite numbers)"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Index of the first bad element in the file's data.
        index: usize,
        /// The value.
        value: f32,
    },
    /// `--index` is past the last image.
    #[error("{path}: index {index} out of range (file holds {count} images)")]
    IndexOutOfRange {
        /// The file.
        path: PathBuf,
        /// The index asked for.
        index: usize,
        /// Images in the file.
        count: usize,
    },
}

fn shape_str(s: Shape) -> String {
    format!("{}x{}x{}", s.c, s.h, s.w)
}

/// Tells the format from the extension, then from the magic bytes.
pub fn detect_format(path: &Path, bytes: &[u8]) -> Result<InputFormat, InputError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".npy") {
        return Ok(InputFormat::Npy);
    }
    if name.ends_with(".f32") {
        return Ok(InputFormat::RawF32);
    }
    if name.contains("idx3") || name.ends_with(".idx") {
        return Ok(InputFormat::Idx3);
    }
    if bytes.starts_with(b"\x93NUMPY") {
        return Ok(InputFormat::Npy);
    }
    if bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08 {
        return Ok(InputFormat::Idx3);
    }
    Err(InputError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Reads one input of `shape` from `path`. `index` picks an image from IDX3 files and from
/// `(N,C,H,W)` arrays (default 0).
pub fn load_input(
    path: &Path,
    index: Option<usize>,
    shape: Shape,
    norm: Normalize,
) -> Result<Vec<f32>, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_input(path, &bytes, index, shape, norm)
}

/// [`load_input`] on bytes already read (`path` names them in errors).
pub fn parse_input(
    path: &Path,
    bytes: &[u8],
    index: Option<usize>,
    shape: Shape,
    norm: Normalize,
) -> Result<Vec<f32>, InputError> {
    match detect_format(path, bytes)? {
        InputFormat::Idx3 => parse_idx3(path, bytes, index, shape, norm),
        InputFormat::Npy => parse_npy(path, bytes, index, shape),
        InputFormat::RawF32 => parse_raw(path, bytes, index, shape),
    }
}

fn check_index(path: &Path, index: Option<usize>, count: usize) -> Result<usize, InputError> {
    let i = index.unwrap_or(0);
    if i >= count {
        return Err(InputError::IndexOutOfRange {
            path: path.to_path_buf(),
            index: i,
            count,
        });
    }
    Ok(i)
}

fn parse_idx3(
    path: &Path,
    b: &[u8],
    index: Option<usize>,
    shape: Shape,
    norm: Normalize,
) -> Result<Vec<f32>, InputError> {
    use empf_core::idx::{parse_header, IdxError, MAGIC_U8_IMAGES, MAGIC_U8_LABELS};
    let p = || path.to_path_buf();
    // The header is empf-core's parser (shared with host-train).
    let header = parse_header(b, MAGIC_U8_IMAGES).map_err(|e| match e {
        IdxError::IdxBadMagic { found, .. } => {
            let detail = if found == MAGIC_U8_LABELS {
                "0x00000801 is an IDX1 label file, not IDX3 images".to_string()
            } else {
                format!("0x{found:08x} (expected 0x00000803, IDX3 u8 images)")
            };
            InputError::BadMagic { path: p(), detail }
        }
        _ => InputError::WrongSize {
            path: p(),
            found: b.len(),
            expected: 16,
        },
    })?;
    // An IDX3 magic parses to three dimensions; anything else is refused, never indexed.
    let [n, rows, cols] = *header.dims() else {
        return Err(InputError::BadHeader {
            path: p(),
            detail: format!("{} dimensions, expected 3", header.dims().len()),
        });
    };
    let (n, rows, cols) = (n as usize, rows as usize, cols as usize);
    if shape.c != 1 || rows != shape.h as usize || cols != shape.w as usize {
        return Err(InputError::WrongShape {
            path: p(),
            found: format!("1x{rows}x{cols}"),
            expected: shape_str(shape),
        });
    }
    let plane = rows * cols;
    let expected = n
        .checked_mul(plane)
        .and_then(|v| v.checked_add(16))
        .unwrap_or(usize::MAX);
    if b.len() != expected {
        return Err(InputError::WrongSize {
            path: p(),
            found: b.len(),
            expected,
        });
    }
    let i = check_index(path, index, n)?;
    let norm = norm.pixel_norm();
    Ok(b[16 + i * plane..16 + (i + 1) * plane]
        .iter()
        .map(|&px| norm.apply(px))
        .collect())
}

/// The parsed fields of a `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// `descr`, e.g. `<f4`.
    pub descr: String,
    /// `fortran_order`.
    pub fortran_order: bool,
    /// `shape`.
    pub shape: Vec<usize>,
    /// Offset of the data.
    pub data_offset: usize,
}

/// Value text after `'key':` in a Python dict literal (up to the matching `,` / `}` at depth 0).
fn dict_value<'h>(h: &'h str, key: &str) -> Option<&'h str> {
    let pat1 = format!("'{key}'");
    let pat2 = format!("\"{key}\"");
    let at = h
        .find(&pat1)
        .map(|i| i + pat1.len())
        .or_else(|| h.find(&pat2).map(|i| i + pat2.len()))?;
    let rest = h[at..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            (None, ',' | '}') if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Parses the header of a `.npy` file (versions 1, 2 and 3).
pub fn parse_npy_header(path: &Path, b: &[u8]) -> Result<NpyHeader, InputError> {
    let bad = |detail: String| InputError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    if !b.starts_with(b"\x93NUMPY") {
        return Err(InputError::BadMagic {
            path: path.to_path_buf(),
            detail: "missing \\x93NUMPY".into(),
        });
    }
    if b.len() < 10 {
        return Err(bad("truncated before the header length".into()));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 => {
            if b.len() < 12 {
                return Err(bad("truncated before the header length".into()));
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| {
            bad(format!(
                "header of {hlen} bytes runs past the end of the file"
            ))
        })?;
    let h = std::str::from_utf8(&b[start..end]).map_err(|_| bad("header is not text".into()))?;
    let h = h.trim();
    if !h.starts_with('{') {
        return Err(bad("header is not a dict".into()));
    }
    let descr = dict_value(h, "descr").ok_or_else(|| bad("no 'descr'".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
    let fortran = dict_value(h, "fortran_order").ok_or_else(|| bad("no 'fortran_order'".into()))?;
    let fortran_order = match fortran {
        "False" => false,
        "True" => true,
        other => return Err(bad(format!("bad fortran_order {other}"))),
    };
    let shape_s = dict_value(h, "shape").ok_or_else(|| bad("no 'shape'".into()))?;
    let inner = shape_s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad(format!("bad shape {shape_s}")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("bad shape {shape_s}")))?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        data_offset: end,
    })
}

fn parse_npy(
    path: &Path,
    b: &[u8],
    index: Option<usize>,
    shape: Shape,
) -> Result<Vec<f32>, InputError> {
    let h = parse_npy_header(path, b)?;
    if h.descr != "<f4" {
        return Err(InputError::WrongDtype {
            path: path.to_path_buf(),
            found: h.descr,
        });
    }
    if h.fortran_order && h.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(InputError::BadHeader {
            path: path.to_path_buf(),
            detail: "fortran_order arrays are not supported (save in C order)".into(),
        });
    }
    let (c, hh, w) = (shape.c as usize, shape.h as usize, shape.w as usize);
    let wrong_shape = || InputError::WrongShape {
        path: path.to_path_buf(),
        found: format!("{:?}", h.shape),
        expected: format!("({c}, {hh}, {w}), (1, {c}, {hh}, {w}) or (N, {c}, {hh}, {w})"),
    };
    let n = match h.shape.as_slice() {
        [a, b2, d] if (*a, *b2, *d) == (c, hh, w) => 1,
        [n, a, b2, d] if (*a, *b2, *d) == (c, hh, w) => *n,
        _ => return Err(wrong_shape()),
    };
    let numel = shape.numel();
    let data = &b[h.data_offset..];
    let expected = n.saturating_mul(numel).saturating_mul(4);
    if data.len() != expected {
        return Err(InputError::WrongSize {
            path: path.to_path_buf(),
            found: data.len(),
            expected,
        });
    }
    let i = check_index(path, index, n)?;
    finite(
        path,
        le_f32s(&data[i * numel * 4..(i + 1) * numel * 4]),
        i * numel,
    )
}

/// `x` if every value is finite, else [`InputError::NonFinite`] naming the first bad one
/// (`offset` = index of `x[0]` in the file's data).
fn finite(path: &Path, x: Vec<f32>, offset: usize) -> Result<Vec<f32>, InputError> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(x),
        Some(j) => Err(InputError::NonFinite {
            path: path.to_path_buf(),
            index: offset + j,
            value: x[j],
        }),
    }
}

fn le_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn parse_raw(
    path: &Path,
    b: &[u8],
    index: Option<usize>,
    shape: Shape,
) -> Result<Vec<f32>, InputError> {
    let expected = shape.numel() * 4;
    if b.len() != expected {
        return Err(InputError::WrongSize {
            path: path.to_path_buf(),
            found: b.len(),
            expected,
        });
    }
    check_index(path, index, 1)?;
    finite(path, le_f32s(b), 0)
}

/// Largest idx data `read_idx` accepts by default (1 GiB; Fashion-MNIST's train set is 47 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// An idx file: its dimensions and data bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    /// `Π dims` bytes.
    pub data: Vec<u8>,
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the stream.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads an idx file (raw, or gzip by its `.gz` name) with magic `magic`: the header first, then
/// exactly the `Π dims` bytes it announces (refused above `max_bytes` before anything is
/// allocated), then checks that the data ends there. A gzip stream is decompressed only as far
/// as that (plus a bounded look past it to tell trailing data from a corrupt stream); its CRC is
/// checked at its end.
pub fn read_idx(path: &Path, magic: u32, max_bytes: u64) -> Result<Idx, InputError> {
    use std::io::Read;
    let p = || path.to_path_buf();
    let file = std::fs::File::open(path).map_err(|source| InputError::Io { path: p(), source })?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut r: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let err = |source: std::io::Error| {
        if gz {
            InputError::CorruptGzip { path: p(), source }
        } else {
            InputError::Io { path: p(), source }
        }
    };
    use empf_core::idx::{self as core_idx, IdxError};
    let nd = ((magic & 0xFF) as usize).min(core_idx::MAX_DIMS);
    let mut hd = vec![0u8; core_idx::header_len(nd)];
    let got = read_full(&mut r, &mut hd).map_err(err)?;
    // The header itself is empf-core's parser (shared with host-train).
    let header = core_idx::parse_header(&hd[..got], magic).map_err(|e| match e {
        IdxError::IdxTruncatedHeader { needed: 4, found } => InputError::WrongSize {
            path: p(),
            found,
            expected: 4,
        },
        IdxError::IdxTruncatedHeader { needed, found } => InputError::BadHeader {
            path: p(),
            detail: format!("truncated: {} of {} dimension bytes", found - 4, needed - 4),
        },
        IdxError::IdxBadMagic { found, .. } => InputError::BadMagic {
            path: p(),
            detail: format!("0x{found:08x} (expected 0x{magic:08x})"),
        },
        IdxError::IdxDimsOverflow => InputError::TooLarge {
            path: p(),
            announced: u64::MAX,
            cap: max_bytes,
        },
        e => InputError::BadHeader {
            path: p(),
            detail: e.to_string(),
        },
    })?;
    let dims: Vec<usize> = header.dims().iter().map(|&d| d as usize).collect();
    let n = header.data_len();
    if n > max_bytes {
        return Err(InputError::TooLarge {
            path: p(),
            announced: n,
            cap: max_bytes,
        });
    }
    // Grows with what arrives, so a short file allocates no more than it holds.
    let mut data = Vec::new();
    (&mut r).take(n).read_to_end(&mut data).map_err(err)?;
    if (data.len() as u64) < n {
        return Err(InputError::WrongSize {
            path: p(),
            found: data.len(),
            expected: n as usize,
        });
    }
    let mut probe = [0u8; 1];
    if read_full(&mut r, &mut probe).map_err(err)? > 0 {
        // More data: read on (at most 64 MiB, into a small buffer) in case the stream is
        // corrupt, which is the better report.
        let mut sink = vec![0u8; 1 << 16];
        let mut left = 64u64 << 20;
        while left > 0 {
            match r.read(&mut sink) {
                Ok(0) => break,
                Ok(k) => left = left.saturating_sub(k as u64),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(e)),
            }
        }
        return Err(InputError::TrailingData {
            path: p(),
            expected: n,
        });
    }
    Ok(Idx { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[f32]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        for v in data {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    const S: Shape = Shape { c: 1, h: 2, w: 2 };

    #[test]
    fn npy_shapes_and_errors() {
        let p = Path::new("x.npy");
        let d = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let b = npy("<f4", "(1, 2, 2)", &d[..4]);
        assert_eq!(
            parse_input(p, &b, None, S, Normalize::None).unwrap(),
            &d[..4]
        );
        let b = npy("<f4", "(2, 1, 2, 2)", &d);
        assert_eq!(
            parse_input(p, &b, Some(1), S, Normalize::None).unwrap(),
            &d[4..]
        );
        assert!(matches!(
            parse_input(p, &b, Some(2), S, Normalize::None),
            Err(InputError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            parse_input(p, &b[..b.len() - 1], None, S, Normalize::None),
            Err(InputError::WrongSize { .. })
        ));
        let b = npy("<f8", "(1, 2, 2)", &d);
        assert!(matches!(
            parse_input(p, &b, None, S, Normalize::None),
            Err(InputError::WrongDtype { .. })
        ));
        let b = npy("<f4", "(3, 3)", &d);
        assert!(matches!(
            parse_input(p, &b, None, S, Normalize::None),
            Err(InputError::WrongShape { .. })
        ));
    }

    #[test]
    fn idx3_normalises() {
        let mut b = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2];
        b.extend_from_slice(&[0, 255, 0, 255]);
        let x = parse_input(Path::new("a-idx3-ubyte"), &b, None, S, Normalize::Mnist).unwrap();
        assert!((x[1] - (1.0 - 0.1307) / 0.3081).abs() < 1e-5);
        let e = parse_input(Path::new("a-idx3-ubyte"), &b, Some(1), S, Normalize::Mnist);
        assert!(e.unwrap_err().to_string().contains("a-idx3-ubyte"));
    }
}
