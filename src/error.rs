//! The one error type of segpool.

use std::path::PathBuf;

/// Result alias used throughout segpool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// segpool's error: one word, a box holding the [`ErrorKind`] that says what went wrong.
///
/// One word so that `Result<Segment>` is two words (the segment's pair, or a null first word and
/// this box) instead of five. A function that is not inlined still returns it through memory
/// (rustc returns a two-variant enum with data in both through a pointer), but now as two 8-byte
/// stores that the caller's two 8-byte loads are forwarded from; the five-word result had its
/// segment written with one 16-byte store, and an 8-byte load of the upper half waited for it to
/// reach the cache (measured on AMD EPYC: `docs/design.md`, "Two words"). Errors are the slow
/// path; the box is allocated only there.
///
/// Match on [`kind`](Error::kind) for the numbers:
///
/// ```
/// use segpool::{ErrorKind, SegmentPool};
///
/// let pool = SegmentPool::builder().budget(1 << 20).build()?;
/// match pool.allocate(4 << 20) {
///     Err(e) => match e.kind() {
///         ErrorKind::BudgetExceeded { requested, budget, .. } => {
///             assert_eq!((*requested, *budget), (4 << 20, 1 << 20))
///         }
///         other => panic!("unexpected error: {other}"),
///     },
///     Ok(_) => panic!("4 MiB does not fit a budget of 1 MiB"),
/// }
/// # Ok::<(), segpool::Error>(())
/// ```
#[derive(thiserror::Error)]
#[error(transparent)]
pub struct Error {
    kind: Box<ErrorKind>,
}

impl Error {
    /// What went wrong, with its numbers.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The [`ErrorKind`], taken out of its box (to move its fields out).
    pub fn into_kind(self) -> ErrorKind {
        *self.kind
    }
}

impl From<ErrorKind> for Error {
    #[cold]
    fn from(kind: ErrorKind) -> Self {
        Error {
            kind: Box::new(kind),
        }
    }
}

/// Prints the kind alone, as if the box were not there (`BudgetExceeded { requested: .. }`).
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.kind, f)
    }
}

/// Everything that can go wrong in segpool, with the numbers a caller needs to act; an
/// [`Error`] holds one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
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
        let kind = match e.kind() {
            ErrorKind::Map(_) => {
                let ErrorKind::Map(io) = e.into_kind() else {
                    unreachable!("matched as Map just above")
                };
                return io;
            }
            ErrorKind::ZeroSize | ErrorKind::InvalidConfig(_) | ErrorKind::TooLarge { .. } => {
                std::io::ErrorKind::InvalidInput
            }
            ErrorKind::BudgetExceeded { .. } => std::io::ErrorKind::OutOfMemory,
            ErrorKind::Faulted { .. } => std::io::ErrorKind::Other,
            #[cfg(feature = "io-uring")]
            ErrorKind::FixedBuffers { source, .. } => source
                .as_ref()
                .map_or(std::io::ErrorKind::Unsupported, |s| s.kind()),
        };
        std::io::Error::new(kind, e)
    }
}

const _: () = assert!(std::mem::size_of::<Error>() == std::mem::size_of::<usize>());
const _: () = assert!(
    std::mem::size_of::<Result<crate::Segment>>() == 2 * std::mem::size_of::<usize>(),
    "a Result<Segment> is two words"
);
const _: () = assert!(std::mem::size_of::<Result<usize>>() == 2 * std::mem::size_of::<usize>());
