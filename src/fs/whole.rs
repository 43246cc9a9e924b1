//! The whole-file view: one mapping from offset 0, at least as long as the file, replaced by a
//! longer one when the file outgrows it.
//!
//! Readers load the current mapping with one atomic load and no lock: the pointer is only
//! replaced, and the old mapping only unmapped, while the file's gate is closed for a resize,
//! that is while no access runs (see `gate/mod.rs`).

use super::extent::MappedExtent;
use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// # Invariants
///
/// `current` is never null; it points to a `MappedExtent` leaked from a `Box` that this value owns.
/// It is replaced (and the old box freed) only while the file's gate is held for a resize.
/// `base` and `cap` are that extent's address and length, stored beside it so the read path
/// loads them without first loading `current` (two independent loads instead of a chain); they
/// change together with `current`, so inside an access the three agree.
#[derive(Debug)]
pub(crate) struct WholeMap {
    current: AtomicPtr<MappedExtent>,
    base: AtomicPtr<u8>,
    cap: AtomicUsize,
}

impl WholeMap {
    pub(crate) fn new(extent: MappedExtent) -> Self {
        Self {
            base: AtomicPtr::new(extent.ptr()),
            cap: AtomicUsize::new(extent.len()),
            current: AtomicPtr::new(Box::into_raw(Box::new(extent))),
        }
    }

    /// The current mapping's first byte and length.
    ///
    /// # Safety
    ///
    /// * As for [`current`](Self::current): the caller holds an access of the file's gate for as
    ///   long as it uses the pointer.
    #[inline]
    pub(crate) unsafe fn base_and_cap(&self) -> (*mut u8, usize) {
        (
            self.base.load(Ordering::Acquire),
            self.cap.load(Ordering::Acquire),
        )
    }

    /// The current mapping's first byte.
    ///
    /// # Safety
    ///
    /// * As for [`base_and_cap`](Self::base_and_cap).
    #[inline(always)]
    pub(crate) unsafe fn base(&self) -> *mut u8 {
        self.base.load(Ordering::Acquire)
    }

    /// The current mapping.
    ///
    /// # Safety
    ///
    /// * The caller holds an access of the file's gate (`Gate::enter`) for as long as it uses the
    ///   returned reference (a replacement waits for every access to leave).
    pub(crate) unsafe fn current(&self) -> &MappedExtent {
        // SAFETY: never null and points to a live box (type invariant); the caller's access keeps
        // `replace` from freeing it while the reference is used.
        unsafe { &*self.current.load(Ordering::Acquire) }
    }

    /// Installs `new` and returns the old mapping, to be dropped by the caller.
    ///
    /// # Safety
    ///
    /// * The caller holds the file's gate for a resize (`Gate::resize`), so no access holds a
    ///   reference from [`current`](Self::current).
    pub(crate) unsafe fn replace(&self, new: MappedExtent) -> Box<MappedExtent> {
        self.base.store(new.ptr(), Ordering::Release);
        self.cap.store(new.len(), Ordering::Release);
        let old = self
            .current
            .swap(Box::into_raw(Box::new(new)), Ordering::AcqRel);
        // SAFETY: `old` came from `Box::into_raw` (type invariant) and is no longer reachable
        // through `current`; no access uses it (the caller's resize guard).
        unsafe { Box::from_raw(old) }
    }
}

impl Drop for WholeMap {
    fn drop(&mut self) {
        let ptr = self.current.load(Ordering::Acquire);
        // SAFETY: `&mut self`: nobody else can reach the pointer; it came from `Box::into_raw`.
        drop(unsafe { Box::from_raw(ptr) });
    }
}
