//! CIFAR-10 and CIFAR-100, binary versions (Krizhevsky's site), from the archive or extracted.
//!
//! Record layout (no header; records back to back):
//!
//! | set | bytes per record | fields |
//! |---|---|---|
//! | CIFAR-10 | 3 073 | label (0–9), then 3 072 pixels |
//! | CIFAR-100 | 3 074 | coarse label (0–19), fine label (0–99), then 3 072 pixels |
//!
//! Pixels are 1 024 red, 1 024 green, 1 024 blue, each plane row-major 32×32: planar CHW, which
//! is the [`Dataset`] layout, so a record is copied as it is. CIFAR-100 uses the fine labels
//! (100 classes).
//!
//! Files, looked up in `dir` in this order:
//! 1. extracted: `dir/cifar-10-batches-bin/` (or `dir` itself) with `data_batch_1.bin` …
//!    `data_batch_5.bin`, `test_batch.bin`, optional `batches.meta.txt`; CIFAR-100:
//!    `dir/cifar-100-binary/` (or `dir`) with `train.bin`, `test.bin`, optional
//!    `fine_label_names.txt`;
//! 2. the archive `dir/cifar-10-binary.tar.gz` / `dir/cifar-100-binary.tar.gz`, whose MD5 is
//!    checked against the published one ([`checksum::verify_md5`], remembered per file version)
//!    and which is streamed through gzip and tar: only the needed members are read, each at
//!    most its expected size plus one byte.
//!
//! A file holds at most its official number of records (10 000 per CIFAR-10 batch, 50 000 /
//! 10 000 for CIFAR-100's train / test); fewer whole records are accepted (small fixtures), a
//! partial record or more records are errors, as is a label out of range.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{checksum, DataError, Dataset, Split, TrainTest};

/// The two CIFAR sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarKind {
    /// 10 classes, 5 training batch files.
    Cifar10,
    /// 100 fine classes (20 coarse, unused).
    Cifar100,
}

/// Pixels per image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

impl CifarKind {
    /// Bytes per record.
    pub fn record_len(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1 + IMAGE_BYTES,
            CifarKind::Cifar100 => 2 + IMAGE_BYTES,
        }
    }

    /// Number of (fine) classes.
    pub fn classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }

    /// The archive's name.
    pub fn archive_name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-binary.tar.gz",
            CifarKind::Cifar100 => "cifar-100-binary.tar.gz",
        }
    }

    /// The published MD5 of the archive.
    pub fn archive_md5(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "c32a1d4ab5d03f1284b67883e8d87530",
            CifarKind::Cifar100 => "03b5dce01913d631647c71ecec9e9cb8",
        }
    }

    /// The folder the archive extracts to.
    pub fn folder(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }

    /// The record files of a split with the most records each may hold.
    pub fn files(self, split: Split) -> Vec<(&'static str, usize)> {
        match (self, split) {
            (CifarKind::Cifar10, Split::Train) => vec![
                ("data_batch_1.bin", 10_000),
                ("data_batch_2.bin", 10_000),
                ("data_batch_3.bin", 10_000),
                ("data_batch_4.bin", 10_000),
                ("data_batch_5.bin", 10_000),
            ],
            (CifarKind::Cifar10, Split::Test) => vec![("test_batch.bin", 10_000)],
            (CifarKind::Cifar100, Split::Train) => vec![("train.bin", 50_000)],
            (CifarKind::Cifar100, Split::Test) => vec![("test.bin", 10_000)],
        }
    }

    /// The class-names file (one name a line).
    pub fn names_file(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "batches.meta.txt",
            CifarKind::Cifar100 => "fine_label_names.txt",
        }
    }
}

/// Parses records into a dataset; `path` names the file in errors.
pub fn parse_records(
    bytes: &[u8],
    kind: CifarKind,
    max_records: usize,
    path: &Path,
) -> Result<Dataset, DataError> {
    let rec = kind.record_len();
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is not a whole number of {rec}-byte {kind:?} records",
                bytes.len()
            ),
        });
    }
    let n = bytes.len() / rec;
    if n > max_records {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("{n} records, more than the {max_records} of the official file"),
        });
    }
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (index, r) in bytes.chunks_exact(rec).enumerate() {
        let (label, limit) = match kind {
            CifarKind::Cifar10 => (r[0], 10),
            CifarKind::Cifar100 => {
                if r[0] >= 20 {
                    return Err(DataError::BadLabel {
                        path: path.to_path_buf(),
                        index,
                        value: r[0].into(),
                        num_classes: 20,
                    });
                }
                (r[1], 100)
            }
        };
        if usize::from(label) >= limit {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                index,
                value: label.into(),
                num_classes: limit,
            });
        }
        labels.push(u16::from(label));
        images.extend_from_slice(&r[rec - IMAGE_BYTES..]);
    }
    Dataset::with_shape(images, labels, 3, 32, 32, kind.classes())
}

/// Class names from a names file's bytes: non-empty lines, trimmed.
fn parse_names(bytes: &[u8], kind: CifarKind, path: &Path) -> Result<Vec<String>, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DataError::Format {
        path: path.to_path_buf(),
        reason: "class names are not UTF-8".into(),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() != kind.classes() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("{} class names, expected {}", names.len(), kind.classes()),
        });
    }
    Ok(names)
}

/// Reads at most `limit` bytes; one more means the source is too long.
fn read_bounded<R: Read>(r: R, limit: u64, path: &Path, gz: bool) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out).map_err(|source| {
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
    })?;
    if out.len() as u64 > limit {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("longer than the {limit} bytes this file may have"),
        });
    }
    Ok(out)
}

fn open(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|source| {
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
    })
}

/// Where the extracted files are, if they are: `dir/<folder>/` or `dir` itself.
fn extracted_dir(dir: &Path, kind: CifarKind) -> Option<PathBuf> {
    let first = kind.files(Split::Test)[0].0;
    [dir.join(kind.folder()), dir.to_path_buf()]
        .into_iter()
        .find(|d| d.join(first).is_file())
}

fn load_extracted(d: &Path, kind: CifarKind, split: Split) -> Result<Dataset, DataError> {
    let mut parts = Vec::new();
    for (name, max) in kind.files(split) {
        let path = d.join(name);
        let bytes = read_bounded(open(&path)?, (max * kind.record_len()) as u64, &path, false)?;
        parts.push(parse_records(&bytes, kind, max, &path)?);
    }
    let mut set = Dataset::concat(parts).ok_or_else(|| DataError::Format {
        path: d.to_path_buf(),
        reason: "no record files".into(),
    })?;
    let names_path = d.join(kind.names_file());
    if names_path.is_file() {
        let bytes = read_bounded(open(&names_path)?, 64 << 10, &names_path, false)?;
        set = set.with_class_names(parse_names(&bytes, kind, &names_path)?)?;
    }
    Ok(set)
}

/// Streams the archive once and returns both splits. `expected_md5` is the checksum the archive
/// must have (`None`: not checked — for archives made by tests).
pub fn load_archive(
    archive: &Path,
    kind: CifarKind,
    expected_md5: Option<&str>,
) -> Result<TrainTest, DataError> {
    if let Some(md5) = expected_md5 {
        checksum::verify_md5(archive, md5)?;
    }
    let gz = flate2::read::MultiGzDecoder::new(BufReader::new(open(archive)?));
    let mut tar = tar::Archive::new(gz);
    let member = |name: &str| format!("{}/{name}", kind.folder());
    let wanted: Vec<(String, usize)> = [Split::Train, Split::Test]
        .iter()
        .flat_map(|&s| kind.files(s))
        .map(|(n, max)| (member(n), max))
        .collect();
    let mut found: Vec<Option<Dataset>> = vec![None; wanted.len()];
    let mut names = None;
    for entry in tar.entries().map_err(|e| archive_error(archive, e))? {
        let entry = entry.map_err(|e| archive_error(archive, e))?;
        let name = entry
            .path()
            .map_err(|e| archive_error(archive, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let shown = archive.join(&name);
        if let Some(k) = wanted.iter().position(|(n, _)| *n == name) {
            let max = wanted[k].1;
            let bytes = read_bounded(entry, (max * kind.record_len()) as u64, &shown, true)?;
            found[k] = Some(parse_records(&bytes, kind, max, &shown)?);
        } else if name == member(kind.names_file()) {
            let bytes = read_bounded(entry, 64 << 10, &shown, true)?;
            names = Some(parse_names(&bytes, kind, &shown)?);
        }
    }
    // Read the gzip stream to its end (tar stops at its zero blocks, before the gzip trailer):
    // only then does the decoder compare the trailer's CRC-32 and length, so a damaged archive
    // is reported as damaged. Bounded, like idx's drain.
    let mut rest = tar.into_inner().take(super::idx::GZ_DRAIN_LIMIT);
    io::copy(&mut rest, &mut io::sink()).map_err(|e| archive_error(archive, e))?;
    let mut sets = found.into_iter().zip(&wanted).map(|(d, (n, _))| {
        d.ok_or_else(|| DataError::Format {
            path: archive.to_path_buf(),
            reason: format!("the archive has no member {n}"),
        })
    });
    let train_files = kind.files(Split::Train).len();
    let train: Vec<Dataset> = sets.by_ref().take(train_files).collect::<Result<_, _>>()?;
    let test: Vec<Dataset> = sets.collect::<Result<_, _>>()?;
    let join = |parts: Vec<Dataset>| -> Result<Dataset, DataError> {
        let set = Dataset::concat(parts).ok_or_else(|| DataError::Format {
            path: archive.to_path_buf(),
            reason: "no record members".into(),
        })?;
        match &names {
            Some(n) => set.with_class_names(n.clone()),
            None => Ok(set),
        }
    };
    Ok(TrainTest {
        train: join(train)?,
        test: join(test)?,
    })
}

/// A tar error: a read error from the gzip layer is a corrupt archive; anything else is a
/// malformed tar.
fn archive_error(archive: &Path, e: io::Error) -> DataError {
    DataError::Decompress {
        path: archive.to_path_buf(),
        source: e,
    }
}

/// Loads both splits of `kind` from `dir` (extracted files first, else the official archive,
/// MD5-checked); see the module docs.
pub fn load_train_test(dir: &Path, kind: CifarKind) -> Result<TrainTest, DataError> {
    if let Some(d) = extracted_dir(dir, kind) {
        return Ok(TrainTest {
            train: load_extracted(&d, kind, Split::Train)?,
            test: load_extracted(&d, kind, Split::Test)?,
        });
    }
    let archive = dir.join(kind.archive_name());
    if archive.is_file() {
        return load_archive(&archive, kind, Some(kind.archive_md5()));
    }
    Err(DataError::Format {
        path: dir.to_path_buf(),
        reason: format!(
            "no {kind:?} files: neither {} (nor the files in {}) nor {}",
            dir.join(kind.folder()).display(),
            dir.display(),
            archive.display()
        ),
    })
}

/// Loads one split (from the archive this streams it whole once; prefer [`load_train_test`]).
pub fn load(dir: &Path, kind: CifarKind, split: Split) -> Result<Dataset, DataError> {
    if let Some(d) = extracted_dir(dir, kind) {
        return load_extracted(&d, kind, split);
    }
    let tt = load_train_test(dir, kind)?;
    Ok(match split {
        Split::Train => tt.train,
        Split::Test => tt.test,
    })
}

/// Test fixtures: CIFAR records and archives in the real layout.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use std::io::Write;

    /// `n` records; image `i` has pixel `p` = `(7i + p) mod 256`, labels `i mod classes`
    /// (coarse `i mod 20`).
    pub fn records(kind: CifarKind, n: usize, seed: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            match kind {
                CifarKind::Cifar10 => out.push(((i + seed) % 10) as u8),
                CifarKind::Cifar100 => {
                    out.push(((i + seed) % 20) as u8);
                    out.push(((i + seed) % 100) as u8);
                }
            }
            out.extend((0..IMAGE_BYTES).map(|p| ((7 * (i + seed) + p) % 256) as u8));
        }
        out
    }

    /// A `.tar.gz` with the real member names (folder prefix), `n` records per file, the names
    /// file, and an unrelated member first; `skip` leaves one member out.
    pub fn archive(kind: CifarKind, n: usize, skip: Option<&str>) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut add = |name: String, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, bytes).unwrap();
        };
        add(format!("{}/readme.html", kind.folder()), b"<html></html>");
        let mut seed = 0;
        for split in [Split::Train, Split::Test] {
            for (name, _) in kind.files(split) {
                if Some(name) != skip {
                    add(format!("{}/{name}", kind.folder()), &records(kind, n, seed));
                }
                seed += n;
            }
        }
        let names: String = (0..kind.classes()).map(|c| format!("class{c}\n")).collect();
        add(
            format!("{}/{}", kind.folder(), kind.names_file()),
            names.as_bytes(),
        );
        let mut gz = tar.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    /// The error of a result that must fail (without printing a whole dataset if it did not).
    fn fails<T>(r: Result<T, DataError>) -> DataError {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    fn names(err: &DataError, p: &Path) {
        let msg = err.to_string();
        assert!(
            msg.contains(&p.display().to_string()),
            "{msg:?} does not name {}",
            p.display()
        );
    }

    #[test]
    fn extracted_cifar10_and_cifar100_load_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d10 = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&d10).unwrap();
        let mut seed = 0;
        for split in [Split::Train, Split::Test] {
            for (name, _) in CifarKind::Cifar10.files(split) {
                std::fs::write(d10.join(name), records(CifarKind::Cifar10, 3, seed)).unwrap();
                seed += 3;
            }
        }
        let names10 = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
        std::fs::write(d10.join("batches.meta.txt"), names10).unwrap();
        let tt = load_train_test(dir.path(), CifarKind::Cifar10).unwrap();
        assert_eq!((tt.train.len(), tt.test.len()), (15, 3));
        assert_eq!(
            (tt.train.channels(), tt.train.height(), tt.train.width()),
            (3, 32, 32)
        );
        assert_eq!(tt.train.classes(), 10);
        // Sample 4 is the second record of data_batch_2 (seed 3): i + seed = 4.
        assert_eq!(tt.train.label(4), Some(4));
        let img = tt.train.image(4).unwrap();
        assert_eq!(img[0], 28);
        assert_eq!(
            img[1024],
            ((28 + 1024) % 256) as u8,
            "green plane follows red"
        );
        assert_eq!(tt.test.label(0), Some(15 % 10));
        assert_eq!(tt.train.class_names().unwrap()[9], "truck");

        let d100 = dir.path().join("c100");
        std::fs::create_dir(&d100).unwrap();
        std::fs::write(d100.join("train.bin"), records(CifarKind::Cifar100, 5, 0)).unwrap();
        std::fs::write(d100.join("test.bin"), records(CifarKind::Cifar100, 2, 97)).unwrap();
        let tt = load_train_test(&d100, CifarKind::Cifar100).unwrap();
        assert_eq!(tt.train.classes(), 100);
        assert_eq!(tt.test.labels(), &[97, 98]);
        assert!(tt.train.class_names().is_none());
    }

    #[test]
    fn archive_loads_the_same_as_extracted_and_checks_md5() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [CifarKind::Cifar10, CifarKind::Cifar100] {
            let path = dir.path().join(kind.archive_name());
            std::fs::write(&path, archive(kind, 4, None)).unwrap();
            let tt = load_archive(&path, kind, None).unwrap();
            let per_file = 4;
            assert_eq!(tt.train.len(), per_file * kind.files(Split::Train).len());
            assert_eq!(tt.test.len(), 4);
            let seed = tt.train.len();
            assert_eq!(
                tt.test.image(1).unwrap(),
                &records(kind, 2, seed)[kind.record_len() + kind.record_len() - IMAGE_BYTES..]
            );
            assert_eq!(tt.train.class_names().unwrap()[1], "class1");
            // The right checksum passes and is remembered; the official one is refused.
            let md5 = checksum::md5_hex(&path).unwrap();
            assert!(load_archive(&path, kind, Some(&md5)).is_ok());
            assert!(checksum::marker_path(&path).is_file());
            let err = fails(load_train_test(dir.path(), kind));
            assert!(matches!(err, DataError::Checksum { .. }), "{err}");
            names(&err, &path);
            assert!(err.to_string().contains(kind.archive_md5()));
        }
    }

    #[test]
    fn corrupt_inputs_give_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let kind = CifarKind::Cifar10;
        // A missing member.
        let path = dir.path().join("a.tar.gz");
        std::fs::write(&path, archive(kind, 2, Some("data_batch_3.bin"))).unwrap();
        let err = fails(load_archive(&path, kind, None));
        assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
        names(&err, &path);
        // Truncated archive, at several cuts: an error, never a panic.
        let full = archive(kind, 2, None);
        for cut in [0, 5, 30, full.len() / 3, full.len() - 9, full.len() - 1] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = fails(load_archive(&path, kind, None));
            names(&err, &path);
        }
        // Garbage that is not gzip.
        std::fs::write(&path, b"this is not an archive at all").unwrap();
        names(&fails(load_archive(&path, kind, None)), &path);
        // A record file with a partial record, one with a bad label, one too long.
        let rec = records(kind, 2, 0);
        let p = dir.path().join("x.bin");
        let err = fails(parse_records(&rec[..rec.len() - 1], kind, 10, &p));
        assert!(matches!(err, DataError::Format { .. }), "{err}");
        names(&err, &p);
        let mut bad = rec.clone();
        bad[kind.record_len()] = 10;
        let err = fails(parse_records(&bad, kind, 10, &p));
        assert!(
            matches!(
                err,
                DataError::BadLabel {
                    index: 1,
                    value: 10,
                    ..
                }
            ),
            "{err}"
        );
        let err = fails(parse_records(&rec, kind, 1, &p));
        assert!(err.to_string().contains("more than"), "{err}");
        let mut bad = records(CifarKind::Cifar100, 1, 0);
        bad[0] = 25;
        assert!(parse_records(&bad, CifarKind::Cifar100, 1, &p).is_err());
        // An extracted file longer than the official one is refused without reading it all.
        let d = dir.path().join("ext");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("test_batch.bin"),
            vec![0u8; 10_001 * kind.record_len()],
        )
        .unwrap();
        let err = fails(load(&d, kind, Split::Test));
        names(&err, &d.join("test_batch.bin"));
        // Nothing there at all.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = fails(load_train_test(&empty, kind));
        assert!(err.to_string().contains(kind.archive_name()), "{err}");
    }
}
