//! Reading an `empf-core` model file without trusting its size: the 16-byte header is read
//! first and the length it announces is compared with the file's size before the body is read,
//! so a huge or sparse file given as a model is refused without being loaded into memory.
//!
//! The header layout is `empf_core::format`'s (magic, version, flags, body length, CRC); this
//! module only looks at the magic and the body length, and leaves every other check to
//! `Model::decode`, so the two cannot disagree on what a valid file is.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use empf_core::format::{HEADER_LEN, MAGIC};

/// Why a model file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// Opening or reading failed.
    #[error("{}: cannot read the model file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Not a regular file (a directory, a FIFO, a device: no size to check).
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file's size is not the header's length plus the body length the header announces.
    #[error(
        "{}: the file is {file_len} bytes but its header announces {expected} \
         ({HEADER_LEN}-byte header + {body_len}-byte body): truncated, padded or not a model file",
        path.display()
    )]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// Its size.
        file_len: u64,
        /// The body length in the header.
        body_len: u32,
        /// Header + body length.
        expected: u64,
    },
}

/// Reads a model file whose size agrees with its header. A file too short for a header or
/// without the `EMPF` magic is returned as far as it was read (at most [`HEADER_LEN`] bytes), so
/// that `Model::decode` reports it in its own words (too short, bad magic).
pub fn read_model_file(path: &Path) -> Result<Vec<u8>, ModelFileError> {
    let read_err = |source| ModelFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(ModelFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let file_len = meta.len();
    let mut reader = file;
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&mut reader)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    if head.len() < HEADER_LEN || head[..4] != MAGIC {
        return Ok(head);
    }
    let body_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let expected = HEADER_LEN as u64 + u64::from(body_len);
    let mismatch = |file_len| ModelFileError::LengthMismatch {
        path: path.to_path_buf(),
        file_len,
        body_len,
        expected,
    };
    if file_len != expected {
        return Err(mismatch(file_len));
    }
    // The size is now the header's own claim, confirmed by the file system; the file can still
    // change while it is read, so what arrives is counted again (one byte more is asked for).
    let mut bytes = head;
    bytes
        .try_reserve_exact(body_len as usize)
        .map_err(|e| read_err(io::Error::new(io::ErrorKind::OutOfMemory, e.to_string())))?;
    reader
        .take(u64::from(body_len) + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 != expected {
        return Err(mismatch(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use empf_core::format::Header;

    fn model_bytes(body: &[u8]) -> Vec<u8> {
        let mut v = Header::for_body(body).unwrap().to_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn reads_a_file_whose_size_matches_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.empf");
        let bytes = model_bytes(b"some body bytes");
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_model_file(&p).unwrap(), bytes);
    }

    #[test]
    fn a_huge_sparse_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse.empf");
        // A valid 16-byte header announcing a 10-byte body, then a 2 GiB hole: refused from the
        // size alone (reading it whole would take 2 GiB of memory and seconds of I/O).
        let mut head = model_bytes(&[0u8; 10]);
        head.truncate(HEADER_LEN);
        std::fs::write(&p, &head).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(2 << 30).unwrap();
        let err = read_model_file(&p).unwrap_err();
        assert!(
            matches!(
                err,
                ModelFileError::LengthMismatch {
                    file_len,
                    expected: 26,
                    ..
                } if file_len == 2 << 30
            ),
            "{err}"
        );
        assert!(err.to_string().contains("sparse.empf"), "{err}");
    }

    #[test]
    fn short_or_foreign_files_are_left_to_the_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"EMPF\x01").unwrap();
        assert_eq!(read_model_file(&p).unwrap(), b"EMPF\x01");
        std::fs::write(&p, vec![7u8; 1000]).unwrap();
        assert_eq!(read_model_file(&p).unwrap(), vec![7u8; HEADER_LEN]);
        assert!(matches!(
            read_model_file(dir.path()),
            Err(ModelFileError::NotAFile { .. })
        ));
        assert!(matches!(
            read_model_file(&dir.path().join("missing")),
            Err(ModelFileError::Read { .. })
        ));
    }
}
