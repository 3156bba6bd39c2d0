//! MD5 of published archives, checked once per file version.
//!
//! Hashing CIFAR's 160 MB archive takes a few seconds, so after a successful check a marker
//! `<file>.verified` is written next to it holding `md5 size mtime` of the file that was hashed.
//! A later run that finds a marker with the same checksum, size and modification time skips the
//! hash; any change of the file (a new download, a truncation) changes size or mtime and forces a
//! new check. A directory that cannot be written (a read-only dataset mount) only means the hash
//! runs every time.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use md5::{Digest, Md5};

use super::DataError;

/// The marker's path for `file`.
pub fn marker_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    file.with_file_name(name)
}

/// `md5 size mtime-ns` of the file as it is now (without hashing): the marker's identity part.
fn identity(file: &Path) -> Result<(u64, u128), DataError> {
    let meta = fs::metadata(file).map_err(|source| read_error(file, source))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), mtime))
}

fn read_error(file: &Path, source: io::Error) -> DataError {
    if source.kind() == io::ErrorKind::NotFound {
        DataError::MissingFile {
            path: file.to_path_buf(),
            also_tried_gz: false,
        }
    } else {
        DataError::Read {
            path: file.to_path_buf(),
            source,
        }
    }
}

/// The MD5 of a file, lower-case hex.
pub fn md5_hex(file: &Path) -> Result<String, DataError> {
    let mut f = File::open(file).map_err(|source| read_error(file, source))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|source| read_error(file, source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// How [`verify_md5`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The file was hashed now (and a marker written if possible).
    Hashed,
    /// A marker for this very file version said it was checked before.
    Remembered,
}

/// Checks that `file` has MD5 `expected` (lower-case hex), remembering a success in a marker.
pub fn verify_md5(file: &Path, expected: &str) -> Result<Verified, DataError> {
    let (size, mtime) = identity(file)?;
    let marker = marker_path(file);
    let line = format!("{expected} {size} {mtime}");
    // Only a small marker is read (a huge file in its place is ignored, not loaded).
    let remembered = File::open(&marker).ok().and_then(|f| {
        let mut s = String::new();
        f.take(256).read_to_string(&mut s).ok()?;
        Some(s.trim() == line)
    });
    if remembered == Some(true) {
        return Ok(Verified::Remembered);
    }
    let found = md5_hex(file)?;
    if found != expected {
        // A stale marker must not vouch for anything.
        let _ = fs::remove_file(&marker);
        return Err(DataError::Checksum {
            path: file.to_path_buf(),
            expected: expected.to_owned(),
            found,
        });
    }
    // Unwritable directory: fine, the next run hashes again.
    let _ = fs::write(&marker, format!("{line}\n"));
    Ok(Verified::Hashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_strings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        fs::write(&p, b"").unwrap();
        assert_eq!(md5_hex(&p).unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
        fs::write(&p, b"The quick brown fox jumps over the lazy dog").unwrap();
        assert_eq!(md5_hex(&p).unwrap(), "9e107d9d372bb6826bd81d3542a419d6");
    }

    #[test]
    fn verified_once_then_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("archive.tar.gz");
        fs::write(&p, b"The quick brown fox jumps over the lazy dog").unwrap();
        let good = "9e107d9d372bb6826bd81d3542a419d6";
        assert_eq!(verify_md5(&p, good).unwrap(), Verified::Hashed);
        assert!(marker_path(&p).is_file());
        assert_eq!(verify_md5(&p, good).unwrap(), Verified::Remembered);
        // A different expected sum is never vouched for by the marker.
        let err = verify_md5(&p, "00000000000000000000000000000000").unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(&p.display().to_string()));
        // The file changes (size): hashed again, and now wrong.
        fs::write(&p, b"The quick brown fox jumps over the lazy dog.").unwrap();
        let err = verify_md5(&p, good).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(
            !marker_path(&p).exists(),
            "a failed check removes the marker"
        );
        let missing = dir.path().join("nope.tar.gz");
        assert!(matches!(
            verify_md5(&missing, good),
            Err(DataError::MissingFile { .. })
        ));
    }
}
