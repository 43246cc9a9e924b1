//! What a region reports to: its owner (the pool's shared state), which the region layer knows
//! only through [`RegionOwner`], and the slice counts the owner keeps ([`SliceCounts`]).
//!
//! The region layer sits below the pool: it never names the pool's types. A region holds its
//! owner as an [`Owner`], a strong reference whose type it does not know, which
//!
//! * keeps the owner alive as long as the region's metadata lives (the pool's shared state
//!   outlives its last handle until its last region is freed);
//! * reaches the owner's [`SliceCounts`] with a plain pointer, so the takes and give-backs of the
//!   batch paths count without a virtual call;
//! * reports the rare events (a full region has room again, a region is about to be unmapped and
//!   was unmapped) through the [`RegionOwner`] trait, a virtual call each: none of them is on the
//!   allocate/release fast path, and each comes with a lock or an `munmap` of its own;
//! * hands the owner back, typed, to the layers above that made the region and know its type
//!   ([`Owner::get`]): the thread caches' fast path compares and reads it with no call at all.

#[cfg(debug_assertions)]
use std::any::TypeId;
use std::fmt;
use std::ptr::NonNull;

use super::{Region, RegionRef};
use crate::stats::PeakCounter;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Arc;

/// What a region tells its owner, off the allocate/release fast path.
pub(crate) trait RegionOwner: Send + Sync + 'static {
    /// The counts the owner's regions report their takes and give-backs to.
    fn slice_counts(&self) -> &SliceCounts;

    /// The id of the owner (the pool), copied into each region for observers.
    fn pool_id(&self) -> u64;

    /// Whether the owner records its segments (a release calls into the diagnostics first), and
    /// whether it poisons released slices (then they are never purged: the poison must survive
    /// until the slice is handed out again, to be checked).
    fn diagnostics(&self) -> (bool, bool);

    /// A give-back took `region` from full to not full: list it as having room again.
    ///
    /// # Safety
    ///
    /// * `region` is a live class region of this owner, kept readable by the caller's pin (the
    ///   caller held a reference on it when it was pinned).
    unsafe fn region_has_room(&self, region: RegionRef);

    /// `region` is about to be unmapped (its memory still mapped).
    fn region_unmapping(&self, region: &Region);

    /// `region`'s `len` bytes were unmapped.
    fn region_unmapped(&self, region: &Region, len: usize);
}

/// The counts a pool keeps of its slices and mappings, told by every take and give-back of its
/// regions and by the pool as it maps and unmaps.
#[derive(Debug)]
pub(crate) struct SliceCounts {
    /// Bytes out of the free lists (segments, cached slices, dedicated mappings) and their peak.
    /// An upper bound: thread caches count their give-backs late (see
    /// `thread_cache::UNCOUNTED_CACHES`).
    pub(crate) out_bytes: PeakCounter,
    /// Bytes mapped (regions and dedicated mappings), and the most there ever were.
    pub(crate) mapped: PeakCounter,
    /// Per size class.
    pub(crate) classes: Box<[ClassSlices]>,
}

/// The slice counts of one size class.
#[derive(Debug)]
pub(crate) struct ClassSlices {
    /// The slice size.
    size: usize,
    /// Slices of this class out of the regions' free lists right now (segments and cached
    /// slices), and the highest that ever was. Updated per batch, on the slow paths only.
    pub(crate) out: PeakCounter,
    /// Slices of the class in the live regions: what `out`'s peak is clamped to.
    pub(crate) slices: AtomicUsize,
}

impl SliceCounts {
    /// Counts for classes of these slice sizes, all zero.
    pub(crate) fn new(sizes: &[usize]) -> Self {
        Self {
            out_bytes: PeakCounter::default(),
            mapped: PeakCounter::default(),
            classes: sizes
                .iter()
                .map(|&size| ClassSlices {
                    size,
                    out: PeakCounter::default(),
                    slices: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    /// Slices of `class` (`NO_CLASS`: a dedicated mapping) left the free lists (taken by a
    /// thread cache or a segment).
    pub(crate) fn taken(&self, class: u8, bytes: usize) {
        // The counts may be high (give-backs counted late); their peaks are clamped to what
        // exists, so they stay bounds that are possible.
        self.out_bytes.add_capped(bytes, self.mapped.now());
        if let Some(c) = self.classes.get(class as usize) {
            c.out
                .add_capped(bytes / c.size, c.slices.load(Ordering::Relaxed));
        }
    }

    /// Slices came back to the free lists.
    pub(crate) fn returned(&self, class: u8, bytes: usize) {
        self.out_bytes.sub(bytes);
        if let Some(c) = self.classes.get(class as usize) {
            c.out.sub(bytes / c.size);
        }
    }
}

/// A region's strong reference to its owner, whose type the region layer does not know.
///
/// # Invariants
///
/// * `ptr` came from `Arc::into_raw` of an `Arc<T>` (`T` the type `new` was called with) and
///   owns one strong count of it, which `release` (that `T`'s) gives back on drop.
/// * `counts` points at that owner's [`SliceCounts`] (inside the same allocation, or kept alive
///   by it), so it is valid as long as `self` is.
pub(crate) struct Owner {
    ptr: NonNull<dyn RegionOwner>,
    counts: NonNull<SliceCounts>,
    release: unsafe fn(NonNull<()>),
    /// The owner's type, to check typed reads in debug builds.
    #[cfg(debug_assertions)]
    type_id: TypeId,
}

// SAFETY: `Owner` is an `Arc` of a `RegionOwner`, which is `Send + Sync`; the counts pointer
// points into it and `SliceCounts` is `Sync` (atomics only).
unsafe impl Send for Owner {}
// SAFETY: as for `Send`.
unsafe impl Sync for Owner {}

impl Owner {
    /// A reference to `owner` for one region (one strong count of the `Arc`).
    pub(crate) fn new<T: RegionOwner>(owner: &Arc<T>) -> Self {
        /// Gives back the strong count of an `Owner` of a `T`.
        ///
        /// # Safety
        ///
        /// * `ptr` came from `Arc::<T>::into_raw` and its count is given back once.
        unsafe fn release<T>(ptr: NonNull<()>) {
            // SAFETY: forwarded from the caller.
            drop(unsafe { Arc::from_raw(ptr.as_ptr() as *const T) });
        }
        let raw: *const T = Arc::into_raw(Arc::clone(owner));
        // SAFETY: `Arc::into_raw` never returns null.
        let ptr = unsafe { NonNull::new_unchecked(raw as *mut T) };
        Self {
            counts: NonNull::from(owner.slice_counts()),
            ptr,
            release: release::<T>,
            #[cfg(debug_assertions)]
            type_id: TypeId::of::<T>(),
        }
    }

    /// The owner, for its reports.
    pub(crate) fn reports(&self) -> &dyn RegionOwner {
        // SAFETY: `ptr` holds a strong count, so the owner is alive while `self` is.
        unsafe { self.ptr.as_ref() }
    }

    /// The owner's slice counts.
    #[inline(always)]
    pub(crate) fn counts(&self) -> &SliceCounts {
        // SAFETY: valid as long as `self` is (invariants).
        unsafe { self.counts.as_ref() }
    }

    /// The owner, as the type it was made from.
    ///
    /// # Safety
    ///
    /// * `T` is the type this owner was made from ([`Owner::new`]): the layer that made the
    ///   region knows it (checked in debug builds).
    #[inline(always)]
    pub(crate) unsafe fn get<T: RegionOwner>(&self) -> &T {
        #[cfg(debug_assertions)]
        assert!(
            self.type_id == TypeId::of::<T>(),
            "an owner read as another type"
        );
        // SAFETY: `ptr` points at a live `T` (the caller's type, invariants), kept alive by
        // `self`.
        unsafe { &*(self.ptr.as_ptr() as *const T) }
    }

    /// A new strong reference to the owner, as the type it was made from.
    ///
    /// # Safety
    ///
    /// * As for [`get`](Self::get).
    pub(crate) unsafe fn to_arc<T: RegionOwner>(&self) -> Arc<T> {
        #[cfg(debug_assertions)]
        assert!(
            self.type_id == TypeId::of::<T>(),
            "an owner read as another type"
        );
        let raw = self.ptr.as_ptr() as *const T;
        // SAFETY: `raw` came from `Arc::<T>::into_raw` (the caller's type, invariants) and still
        // holds our count, so the allocation is alive; the new count is owned by the `Arc`
        // made from it.
        unsafe {
            Arc::increment_strong_count(raw);
            Arc::from_raw(raw)
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // SAFETY: `release` is the one for the type `ptr` was made from, and this is the one time
        // this count is given back (invariants).
        unsafe { (self.release)(self.ptr.cast()) };
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owner")
            .field("pool", &self.reports().pool_id())
            .finish_non_exhaustive()
    }
}
