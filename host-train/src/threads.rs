//! The `--threads` rule of every `host-train` command: at least 1, at most the number of threads
//! this machine runs at once ([`std::thread::available_parallelism`], which honours CPU affinity
//! and cgroup quotas). More threads than that only add scheduling overhead, and an unbounded
//! count lets a typo (`--threads 100000`) spawn thousands of threads that make no progress.

use std::num::NonZeroUsize;

/// Why a `--threads` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThreadsError {
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    Zero,
    /// More threads than the machine runs at once.
    #[error(
        "--threads {requested} is more than the {available} threads this machine runs at once \
         (available parallelism); use at most --threads {available}"
    )]
    TooMany {
        /// The value asked for.
        requested: usize,
        /// The machine's available parallelism.
        available: usize,
    },
}

/// The machine's available parallelism (1 when it cannot be determined).
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The thread count to use: `requested` if it is in `1..=available`, `available` when none was
/// asked for.
pub fn resolve(requested: Option<usize>, available: usize) -> Result<usize, ThreadsError> {
    let available = available.max(1);
    match requested {
        None => Ok(available),
        Some(0) => Err(ThreadsError::Zero),
        Some(n) if n > available => Err(ThreadsError::TooMany {
            requested: n,
            available,
        }),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_available_parallelism() {
        assert_eq!(resolve(None, 4), Ok(4));
        assert_eq!(resolve(Some(1), 4), Ok(1));
        assert_eq!(resolve(Some(4), 4), Ok(4));
        assert_eq!(resolve(Some(0), 4), Err(ThreadsError::Zero));
        let err = resolve(Some(100_000), 4).unwrap_err();
        assert_eq!(
            err,
            ThreadsError::TooMany {
                requested: 100_000,
                available: 4
            }
        );
        assert!(err.to_string().contains("at most --threads 4"), "{err}");
        // An unknown parallelism (reported as 0) still allows one thread.
        assert_eq!(resolve(None, 0), Ok(1));
        assert!(available() >= 1);
    }
}
