//! Faults become errors: the SIGBUS guard over segpool's file mappings.
//!
//! A file mapping loses pages when the file is truncated by someone else, when the disk returns
//! an I/O error at page-in, or when a write fault finds the disk full. The kernel then sends
//! SIGBUS, which kills the process. This module catches SIGBUS on the ranges segpool registered,
//! poisons the file they belong to, maps a zero page over the lost page so the access completes,
//! and lets the operation that touched it return an error of kind [`ErrorKind::Faulted`]. Every
//! fault elsewhere, and every SIGSEGV, behaves exactly as without segpool. `docs/faults.md` has the full story.
//!
//! * [`FileFaultState`]: one per file, shared by every handle and mapping of it; its
//!   [`guarded`](FileFaultState::guarded) runs an access under the fault protocol.
//! * [`register`]: adds a mapped range to the fault ranges (installing the handler on first
//!   use); the returned [`RangeRegistration`] removes it when dropped.
//! * [`handler_installed`]: whether our handler is still the process's SIGBUS action.
//!
//! The protocol every access to file-mapped memory follows: fail fast if the file is poisoned;
//! read the fault counter; access; fence; read the counter again; if it moved, the access may
//! have seen a replacement zero page (or written into one): return `Err`.
//!
//! The modules: `handler` (the claim on SIGBUS: recovering a lost page), `ranges` (the fault
//! ranges: the fixed-capacity lock-free table of guarded address ranges the claim reads); the
//! handler itself, its installation and the chain to the previous action are in
//! `crate::os::signal`.

mod handler;
mod ranges;

use std::path::{Path, PathBuf};

// The fields the signal handler writes are plain hardware atomics, not the `crate::sync` shim:
// a model checker's atomics are neither lock-free nor async-signal-safe.
use core::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

use crate::sync::Arc;
use crate::{Error, ErrorKind, Result};

pub use ranges::CAPACITY as MAX_RANGES;

/// The fault state of one file, shared by every handle and mapping of it in the process.
///
/// # Invariants
///
/// `faults` only grows, and the file is poisoned exactly when it is non-zero (one word, so the
/// guard's fail-fast check and its after-access check are one load each). `first_addr` is written
/// before `faults` first grows, so a reader that sees a fault sees an address. The signal handler
/// writes these fields: they are lock-free atomics only.
#[derive(Debug)]
pub struct FileFaultState {
    path: Option<PathBuf>,
    faults: AtomicU64,
    first_addr: AtomicUsize,
}

impl FileFaultState {
    /// A fresh, healthy state for the file at `path` (if known).
    pub fn new(path: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            path,
            faults: AtomicU64::new(0),
            first_addr: AtomicUsize::new(0),
        })
    }

    /// The file's path, when known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the file has faulted (it stays poisoned until every handle is closed).
    pub fn is_faulted(&self) -> bool {
        self.fault_count() != 0
    }

    /// How many faults were caught on this file (signals and [`poison`](Self::poison) calls).
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
    // Never inlined: the guarded fast paths call it only on failure, and building it inline
    // would cost them registers (spills) on every successful access.
    #[cold]
    #[inline(never)]
    pub fn error(&self) -> Error {
        ErrorKind::Faulted {
            path: self.path.clone(),
            addr: self.first_addr.load(Ordering::Acquire),
        }
        .into()
    }

    /// Marks the file poisoned without a signal (EFAULT from a syscall, a failed msync/fsync).
    pub fn poison(&self, addr: usize) {
        self.mark_faulted(addr);
    }

    /// Records a fault at `addr`. Async-signal-safe (two lock-free atomic operations): the
    /// handler calls it before it replaces the page.
    fn mark_faulted(&self, addr: usize) {
        // The address first: whoever sees the count move reads it in `error`.
        let _ =
            self.first_addr
                .compare_exchange(0, addr.max(1), Ordering::SeqCst, Ordering::SeqCst);
        self.faults.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs `access` (which touches this file's mapped memory) under the fault protocol: returns
    /// `Err(Faulted)` without running it if the file is already poisoned, and `Err(Faulted)` if a
    /// fault was caught on this file while it ran (its result is then discarded, because it may
    /// have read a replacement zero page or written into one).
    ///
    /// Correct for reads and writes. For an access that only reads, [`guarded_read`] is the same
    /// check with a cheaper fence.
    ///
    /// `access` must not let a reference into the mapping escape: copy out, or finish the work
    /// inside the closure, because the result is only known to be good after the final check.
    ///
    /// [`guarded_read`]: Self::guarded_read
    #[inline]
    pub fn guarded<R>(&self, access: impl FnOnce() -> R) -> Result<R> {
        // Fail fast, and the "before" value of the counter, in one load (0 = healthy). Acquire:
        // the access below cannot be performed before this load.
        if self.faults.load(Ordering::Acquire) != 0 {
            return Err(self.error());
        }
        let r = access();
        // SeqCst (a full barrier): the access's loads *and stores* are performed before the
        // counter is read again. A store that landed in a replacement page could otherwise still
        // sit in the store buffer while an old counter value is read (store-load reordering).
        fence(Ordering::SeqCst);
        self.finish(r)
    }

    /// [`guarded`](Self::guarded) for an access that only **reads** the mapping: the fence after
    /// the access orders loads before loads (`Acquire`), which is free on x86-64 and a `dmb ishld`
    /// on AArch64, instead of a full barrier.
    ///
    /// Why that is enough: the handler poisons the state before it maps the replacement page, and
    /// the page-table change happens in a system call that completes those stores first. A load
    /// that saw the replacement page therefore happened after the counter moved, and the counter
    /// load ordered after it sees the move. Do not use this for writes (see `guarded`).
    #[inline]
    pub fn guarded_read<R>(&self, access: impl FnOnce() -> R) -> Result<R> {
        let mut out = None;
        match (self.guarded_read_ok(|| out = Some(access())), out) {
            (true, Some(r)) => Ok(r),
            _ => Err(self.error()),
        }
    }

    /// The protocol of [`guarded_read`](Self::guarded_read), for a hot path that only needs to
    /// know whether the access is good: `false` if the file was poisoned before or during it
    /// (the caller then reports the error on a slower path). No error value is built here.
    #[inline(always)]
    pub(crate) fn guarded_read_ok(&self, access: impl FnOnce()) -> bool {
        if self.faults.load(Ordering::Acquire) != 0 {
            return false;
        }
        access();
        fence(Ordering::Acquire);
        self.faults.load(Ordering::Relaxed) == 0
    }

    /// The after-access check: the counter was 0 before the access, so any fault on this file
    /// since then (caught by the handler, or reported with `poison`) shows as non-zero.
    #[inline]
    fn finish<R>(&self, r: R) -> Result<R> {
        if self.faults.load(Ordering::Relaxed) != 0 {
            return Err(self.error());
        }
        Ok(r)
    }
}

/// Which access a registered mapping allows; the page that replaces a lost page gets the same, so
/// a stray write into a replaced page of a read-only mapping still dies of SIGSEGV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Mapped `PROT_READ`.
    Read,
    /// Mapped `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// A registered range of file-mapped memory; the range is deregistered when this is dropped.
/// Drop it *before* unmapping the range.
#[derive(Debug)]
#[must_use = "dropping the registration takes the range out of the fault ranges at once"]
pub struct RangeRegistration {
    slot: usize,
    start: usize,
    end: usize,
    /// Keeps the state the range's slot points to alive; dropped only after the slot is cleared
    /// and no handler holds it (see `ranges::remove`).
    state: Arc<FileFaultState>,
}

impl RangeRegistration {
    /// The state a fault in this range poisons.
    pub fn state(&self) -> &Arc<FileFaultState> {
        &self.state
    }

    /// The registered range, widened to whole pages.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

impl Drop for RangeRegistration {
    fn drop(&mut self) {
        // Waits until no handler still uses the pointer to `state`; `state` is dropped after.
        ranges::remove(self.slot);
    }
}

/// Registers `start..start + len` (one of our file mappings) so a SIGBUS inside it poisons
/// `state` and is recovered instead of killing the process. Installs the handler on first use.
///
/// The range is widened to whole pages (a page belongs to one mapping only). A lost page is
/// replaced by a read-write zero page; use [`register_with_access`] for a read-only mapping.
///
/// Fails (with `ErrorKind::Map`) when the fault ranges are full ([`MAX_RANGES`] ranges): a mapping
/// is refused rather than left unprotected; also when the range is empty or wraps around, or the
/// handler cannot be installed.
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
    // SAFETY: the caller upholds `register`'s contract, which is this function's.
    unsafe { register_with_access(start, len, state, Access::ReadWrite) }
}

/// [`register`] for a mapping with the given `access` (the replacement page gets the same).
///
/// # Safety
///
/// As for [`register`]; and `access` is no more than what the mapping allows.
pub unsafe fn register_with_access(
    start: *const u8,
    len: usize,
    state: &Arc<FileFaultState>,
    access: Access,
) -> Result<RangeRegistration> {
    let page = crate::os::page_size();
    let invalid = |what: &str| {
        ErrorKind::Map(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            what.to_owned(),
        ))
        .into()
    };
    if start.is_null() || len == 0 {
        return Err(invalid("cannot register an empty or null range"));
    }
    let first = start as usize & !(page - 1);
    let end = (start as usize)
        .checked_add(len)
        .and_then(|e| crate::os::round_up(e, page))
        .ok_or_else(|| invalid("registered range wraps around the address space"))?;
    handler::ensure_installed()?;
    let slot = ranges::insert(first, end, access == Access::ReadWrite, state).map_err(
        |ranges::Full| {
            ErrorKind::Map(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("the fault ranges are full ({MAX_RANGES} ranges): file mapping refused"),
            ))
        },
    )?;
    Ok(RangeRegistration {
        slot,
        start: first,
        end,
        state: Arc::clone(state),
    })
}

/// Whether segpool's SIGBUS handler is the one currently installed for the process.
///
/// `false` before the first registration, and after another library replaced it (then faults on
/// our mappings kill the process again, or go to that library's handler): check it after loading
/// code that may install signal handlers (JVMs, language runtimes, crash reporters).
pub fn handler_installed() -> bool {
    handler::installed()
}

/// How many faults the handler recovered since the process started, over all files.
pub fn recovered_faults() -> u64 {
    handler::recovered()
}

/// How many ranges are registered right now (at most [`MAX_RANGES`]).
pub fn registered_ranges() -> usize {
    ranges::registered()
}
