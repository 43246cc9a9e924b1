//! Faults become errors: the SIGBUS guard over segpool's file mappings.
//!
//! INTERFACE STUB: the signal handler and the lock-free range registry are not installed yet.
//! The types and functions below are the contract the file layer and the pool's file-backed
//! regions program against; the implementation behind them fills in the handler.
//!
//! The protocol every access to file-mapped memory follows (see `docs/faults.md`):
//! fail fast if the file is poisoned; read the fault counter; fence; access; fence; read the
//! counter again; if it moved, the access may have seen a replacement zero page: return `Err`.

use std::path::PathBuf;

use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::Arc;
use crate::{Error, Result};

/// The fault state of one file, shared by every handle and mapping of it in the process.
///
/// # Invariants
///
/// `faulted` only goes from `false` to `true`. `faults` only grows. `first_addr` is written
/// before `faulted` is set (so a reader that sees `faulted` sees an address).
#[derive(Debug)]
pub struct FileFaultState {
    path: Option<PathBuf>,
    faulted: AtomicBool,
    faults: AtomicU64,
    first_addr: AtomicUsize,
}

impl FileFaultState {
    /// A fresh, healthy state for the file at `path` (if known).
    pub fn new(path: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            path,
            faulted: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            first_addr: AtomicUsize::new(0),
        })
    }

    /// Whether the file has faulted (it stays poisoned until every handle is closed).
    pub fn is_faulted(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
    }

    /// How many faults were caught on this file.
    pub fn fault_count(&self) -> u64 {
        self.faults.load(Ordering::Acquire)
    }

    /// `Err(Faulted)` if the file is poisoned.
    pub fn check(&self) -> Result<()> {
        if self.is_faulted() {
            Err(self.error())
        } else {
            Ok(())
        }
    }

    /// The error every operation on a poisoned file returns.
    pub fn error(&self) -> Error {
        Error::Faulted {
            path: self.path.clone(),
            addr: self.first_addr.load(Ordering::Acquire),
        }
    }

    /// Marks the file poisoned without a signal (EFAULT from a syscall, a failed msync/fsync).
    pub fn poison(&self, addr: usize) {
        let _ =
            self.first_addr
                .compare_exchange(0, addr.max(1), Ordering::AcqRel, Ordering::Acquire);
        self.faults.fetch_add(1, Ordering::AcqRel);
        self.faulted.store(true, Ordering::Release);
    }

    /// Runs `access` (which touches this file's mapped memory) under the fault protocol: returns
    /// `Err(Faulted)` without running it if the file is already poisoned, and `Err(Faulted)` if a
    /// fault was caught on this file while it ran (its result is then discarded, because it may
    /// have read a replacement zero page or written into one).
    pub fn guarded<R>(&self, access: impl FnOnce() -> R) -> Result<R> {
        self.check()?;
        let before = self.faults.load(Ordering::Acquire);
        std::sync::atomic::fence(Ordering::SeqCst);
        let r = access();
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.faults.load(Ordering::Acquire) != before || self.is_faulted() {
            return Err(self.error());
        }
        Ok(r)
    }
}

/// A registered range of file-mapped memory; the range is deregistered when this is dropped.
/// Drop it *before* unmapping the range.
#[derive(Debug)]
pub struct RangeRegistration {
    _state: Arc<FileFaultState>,
}

/// Registers `start..start + len` (one of our file mappings) so a SIGBUS inside it poisons
/// `state` and is recovered instead of killing the process. Installs the handler on first use.
///
/// Fails (with `Error::Map`) when the registry is full: a mapping is refused rather than left
/// unprotected.
///
/// # Safety
///
/// * `start..start + len` is a live file mapping owned by the caller (the handler maps an
///   anonymous zero page over a faulting page of it, which is only harmless in a file mapping
///   whose accesses all go through [`FileFaultState::guarded`]).
/// * The returned registration is dropped before the range is unmapped.
pub unsafe fn register(
    start: *const u8,
    len: usize,
    state: &Arc<FileFaultState>,
) -> Result<RangeRegistration> {
    let _ = (start, len);
    Ok(RangeRegistration {
        _state: Arc::clone(state),
    })
}

/// Whether segpool's SIGBUS handler is the one currently installed for the process.
pub fn handler_installed() -> bool {
    false
}
