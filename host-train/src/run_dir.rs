//! A training run's directory: one writer at a time, and no leftovers of interrupted writes.
//!
//! * [`RunLock`] is an advisory lock (`flock` through std's `File::try_lock`) on
//!   `<dir>/.host-train.lock`, held for the whole run. Two `host-train train` on the same
//!   `--out` would otherwise both append to `metrics.csv` and rename checkpoints over each other.
//!   The holder writes its pid into the file so that the refused process can name it. The lock
//!   goes with the process (a `kill -9` releases it), so the file itself is never stale; it is
//!   left in place, because deleting a lock file lets two processes lock two different files.
//! * [`remove_stale_temps`] deletes the temporary files that an interrupted atomic write
//!   (`checkpoint::atomic_write`) left behind. Only the lock holder may call it: under the lock
//!   no other process writes in the directory, so every such file is a leftover.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".host-train.lock";

/// Errors of this module; each names the file or directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunDirError {
    /// Creating, locking, reading or writing failed.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error(
        "{}: another host-train ({}) is using this run directory (lock {} held); wait for it to \
         finish or choose another --out",
        dir.display(),
        holder.map_or_else(|| "pid not recorded yet".to_owned(), |p| format!("pid {p}")),
        lock.display()
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: Option<u32>,
    },
}

/// The lock on a run directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks `dir` (which must exist) without waiting, and records this process's pid.
    pub fn acquire(dir: &Path) -> Result<RunLock, RunDirError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |op, source| RunDirError::Io {
            path: path.clone(),
            op,
            source,
        };
        // Not truncated on open: the holder's pid must survive a refused process's open.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err("open lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Best effort: the holder may not have written its pid yet.
                let _ = file.read_to_string(&mut text);
                return Err(RunDirError::Busy {
                    dir: dir.to_path_buf(),
                    lock: path.clone(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| io_err("write pid to lock file", e))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the temporary files `checkpoint::atomic_write` uses for `target`
/// (`.<name>.tmp.<pid>.<n>` beside it) and returns their paths. Call it only while holding the
/// directory's [`RunLock`] and not during a write of `target` by this process.
pub fn remove_stale_temps(target: &Path) -> Result<Vec<PathBuf>, RunDirError> {
    let Some(name) = target.file_name() else {
        return Ok(Vec::new());
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io_err = |path: &Path, op, source| RunDirError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(dir, "list directory", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "list directory", e))?;
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "remove stale temporary file", e)),
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).expect("first lock");
        let err = RunLock::acquire(dir.path()).expect_err("second lock must fail");
        let pid = std::process::id();
        assert!(
            matches!(&err, RunDirError::Busy { holder: Some(p), .. } if *p == pid),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            pid.to_string()
        );
        drop(first);
        // Released on drop: the next run takes it.
        RunLock::acquire(dir.path()).expect("lock after release");
    }

    #[test]
    fn stale_temporary_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("checkpoint.safetensors");
        for name in [
            ".checkpoint.safetensors.tmp.123.0",
            ".checkpoint.safetensors.tmp.456.7",
            "checkpoint.safetensors",
            ".model.empf.tmp.1.0",
            "metrics.csv",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = remove_stale_temps(&target).unwrap();
        assert_eq!(
            removed,
            [
                dir.path().join(".checkpoint.safetensors.tmp.123.0"),
                dir.path().join(".checkpoint.safetensors.tmp.456.7")
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".model.empf.tmp.1.0",
                "checkpoint.safetensors",
                "metrics.csv"
            ]
        );
        assert!(remove_stale_temps(&dir.path().join("none/ck"))
            .unwrap()
            .is_empty());
    }
}
