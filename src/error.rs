//! The one error type of segpool.

use std::path::PathBuf;

/// Result alias used throughout segpool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in segpool, with the numbers a caller needs to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Mapping `requested` more bytes would take the pool past its budget.
    ///
    /// `requested` is the size the caller asked for, `needed` what had to fit under the budget to
    /// serve it (a new region of that class, a dedicated mapping, or a reservation's bytes),
    /// `used` what the budget counted at the time of the failure (the mappings of every pool on
    /// it plus reservations), `budget` the limit; all bytes.
    #[error("budget exceeded: requested {requested} bytes (needs {needed} more bytes under the budget), {used} of {budget} bytes used")]
    BudgetExceeded {
        /// The size the caller asked for.
        requested: usize,
        /// Bytes that had to fit under the budget to serve it.
        needed: usize,
        /// Bytes the budget counted when the request failed: mapped by its pools (regions and
        /// dedicated mappings) plus held by reservations.
        used: usize,
        /// The budget's limit in bytes.
        budget: usize,
    },
    /// A request for zero bytes.
    #[error("cannot allocate a zero-sized segment")]
    ZeroSize,
    /// A request so large that it cannot be represented (it overflows when rounded to pages).
    #[error("request of {requested} bytes is too large to map")]
    TooLarge {
        /// The requested size in bytes.
        requested: usize,
    },
    /// A builder or configuration value that cannot work; the message names the bad value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The operating system refused to map, reserve or prefault memory.
    #[error("mapping memory failed: {0}")]
    Map(#[source] std::io::Error),
    /// A file-backed mapping lost its pages (the file was truncated, an I/O error happened at
    /// page-in, or the disk was full at a write fault). The file is poisoned: every later
    /// operation on it fails with this error until it is closed and reopened.
    #[error("file mapping faulted at {addr:#x}{}", path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Faulted {
        /// The file, when known.
        path: Option<PathBuf>,
        /// The faulting address (the first fault seen on this file).
        addr: usize,
    },
    /// The pool's memory could not be registered as io_uring fixed buffers
    /// (`segpool::uring::FixedBuffers::register`); the message says why and what to change, the
    /// source is the kernel's error when there is one.
    #[cfg(feature = "io-uring")]
    #[error("io_uring fixed buffers: {message}")]
    FixedBuffers {
        /// What was refused, and why.
        message: String,
        /// The kernel's error, when it refused.
        #[source]
        source: Option<std::io::Error>,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Map(io) => io,
            Error::ZeroSize | Error::InvalidConfig(_) | Error::TooLarge { .. } => {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
            }
            Error::BudgetExceeded { .. } => std::io::Error::new(std::io::ErrorKind::OutOfMemory, e),
            Error::Faulted { .. } => std::io::Error::other(e),
            #[cfg(feature = "io-uring")]
            Error::FixedBuffers { ref source, .. } => {
                let kind = source
                    .as_ref()
                    .map_or(std::io::ErrorKind::Unsupported, |s| s.kind());
                std::io::Error::new(kind, e)
            }
        }
    }
}
