//! `PoolShared`: the state a pool's handles, its regions and its thread caches share, its
//! counts, and what its regions report to it.

use std::fmt;
use std::time::Duration;

use super::thread_cache::{self, ClassCache};
use super::{Backing, Signals};
use crate::budget::Budget;
use crate::class_pool::ClassPool;
use crate::diagnostics::DiagState;
use crate::observer::{ObserverList, RegionObserver};
use crate::region::{PurgeMode, Region, SliceCounts};
use crate::size_class::SizeClasses;
use crate::stats::ClassCounters;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{epoch, Arc, Mutex};

/// The state shared by a pool's handles, its regions and the thread caches that hold its slices.
/// It outlives the last `SegmentPool` handle until its last region is destroyed.
pub(crate) struct PoolShared {
    pub(crate) id: u64,
    /// `diag.is_some()`, read by the allocate fast path (one predictable branch).
    pub(crate) diagnosed: bool,
    /// Records, poison and guard state; `None` when diagnostics are off.
    pub(crate) diag: Option<Box<DiagState>>,
    pub(super) dedicated_allocations: AtomicU64,
    pub(super) dedicated_releases: AtomicU64,
    pub(crate) size_classes: SizeClasses,
    pub(crate) classes: Box<[ClassPool]>,
    /// The trim generation and the count of this pool's allocations queued on the budget: the
    /// one word the fast paths read (see `crate::budget`).
    pub(crate) signals: Signals,
    /// The budget the pool's mappings count against (its own, or shared with other pools).
    pub(crate) budget: Budget,
    /// Bytes mapped and out of the free lists, per pool and per class: what the regions report
    /// their takes and give-backs to (`crate::region::SliceCounts`).
    pub(crate) counts: SliceCounts,
    pub(super) backing: Backing,
    pub(super) huge_pages: bool,
    pub(super) prefault: bool,
    pub(super) closed: AtomicBool,
    pub(super) next_region_id: AtomicU64,
    /// The caches of the threads that have one for this pool (read for their counters).
    pub(super) threads: Mutex<Vec<Arc<[ClassCache]>>>,
    /// Counts of threads that have exited, and of uncached allocations and releases (atomic
    /// read-modify-writes: these paths are not the fast path).
    pub(super) departed: Box<[ClassCounters]>,
    pub(super) dedicated_segments: AtomicUsize,
    pub(super) dedicated_bytes: AtomicUsize,
    /// The decay time of the background purger (`None`: only `trim()` purges).
    pub(crate) purge_decay: Option<Duration>,
    /// Set when the pool was handed to the background purger (at its first region).
    pub(super) purger_registered: AtomicBool,
    /// Held by a purge pass over the pool: one pass at a time, and an allocation short of budget
    /// waits for the pass in flight (whose reservations hide free slices) before it fails.
    pub(super) purging: Mutex<()>,
    /// Bytes of free slices purged since the pool was built.
    pub(super) purged_bytes: AtomicU64,
    /// Told when regions are mapped and before they are unmapped (`crate::observer`); locked only
    /// then, never on the allocate/release path.
    pub(super) observers: Mutex<ObserverList>,
}

impl fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolShared")
            .field("id", &self.id)
            .field("classes", &self.size_classes.sizes())
            .field("budget", &self.budget.limit_opt())
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

impl PoolShared {
    /// The pool `region` belongs to.
    #[inline(always)]
    pub(crate) fn of(region: &Region) -> &PoolShared {
        // SAFETY: every region is made by a pool, with its `PoolShared` as owner
        // (`pool/regions.rs`: the only calls of `Owner::new`).
        unsafe { region.owner.get::<PoolShared>() }
    }

    /// Tells the diagnostics of `region`'s pool that the segment at `addr`, `len` bytes, is
    /// being released.
    ///
    /// # Safety
    ///
    /// * `addr..addr + len` is a live segment's slice of `region`, owned by the caller, who gives
    ///   it back right after this call and touches it no more.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn diagnose_release(region: &Region, addr: usize, len: usize) {
        if let Some(d) = &Self::of(region).diag {
            // SAFETY: the caller owns these bytes exclusively (see above).
            let bytes = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
            d.on_release(region, bytes);
        }
    }

    /// A new strong reference to the pool `region` belongs to.
    pub(crate) fn arc_of(region: &Region) -> Arc<PoolShared> {
        // SAFETY: as for `of`.
        unsafe { region.owner.to_arc::<PoolShared>() }
    }

    #[inline]
    /// The signals word: the trim generation (bumped by `trim()`, budget pressure and close:
    /// thread caches give everything back when they see it move) and the budget waiter count.
    pub(crate) fn signals(&self) -> u64 {
        self.signals.load()
    }

    /// Whether an allocation of this pool is queued on the budget (releases skip the caches).
    pub(crate) fn has_waiters(&self) -> bool {
        self.signals.has_waiters()
    }

    /// Whether class `class` has regions mapped (so a released segment of it frees a slice).
    pub(crate) fn class_has_regions(&self, class: usize) -> bool {
        self.counts.classes[class].slices.load(Ordering::Relaxed) > 0
    }

    /// Takes `len` bytes of the budget for a mapping of class `class` (`NO_CLASS`: dedicated)
    /// with `slices` slices.
    pub(super) fn reserve_mapping(&self, class: u8, len: usize, slices: usize) -> bool {
        if self.budget.try_reserve(len).is_err() {
            return false;
        }
        // Counted before any slice of it can be taken, so the peaks clamped to these counts
        // never read low.
        self.counts.mapped.add(len);
        if let Some(c) = self.counts.classes.get(class as usize) {
            c.slices.fetch_add(slices, Ordering::Relaxed);
        }
        true
    }

    /// Gives back what [`reserve_mapping`](Self::reserve_mapping) took (the mapping is gone).
    pub(super) fn release_mapping(&self, class: u8, len: usize, slices: usize) {
        if let Some(c) = self.counts.classes.get(class as usize) {
            c.slices.fetch_sub(slices, Ordering::Relaxed);
        }
        self.counts.mapped.sub(len);
        self.budget.release(len);
    }

    /// Bytes out of the free lists as the pool counts them (an upper bound: thread caches count
    /// their give-backs late, see `thread_cache::UNCOUNTED_CACHES`).
    pub(crate) fn out_bytes_now(&self) -> usize {
        self.counts.out_bytes.now()
    }

    /// Bytes this pool has mapped right now.
    pub(crate) fn mapped_now(&self) -> usize {
        self.counts.mapped.now()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn register_thread(&self, caches: Arc<[ClassCache]>) {
        self.threads.lock().push(caches);
    }

    /// Folds an exiting cache's counts into `departed` and forgets it.
    pub(crate) fn unregister_thread(&self, caches: &Arc<[ClassCache]>) {
        let mut threads = self.threads.lock();
        if let Some(pos) = threads.iter().position(|t| Arc::ptr_eq(t, caches)) {
            threads.swap_remove(pos);
        }
        for (d, c) in self.departed.iter().zip(caches.iter().map(|c| &c.counters)) {
            d.allocations
                .fetch_add(c.allocations.load(Ordering::Relaxed), Ordering::Relaxed);
            d.releases
                .fetch_add(c.releases.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub(crate) fn count_direct_allocation(&self, class: usize) {
        self.departed[class]
            .allocations
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_direct_release(&self, class: usize) {
        self.departed[class]
            .releases
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Adds an observer, then tells it about every region already mapped (see
    /// `crate::observer` for why no region is missed). On the first error the observer is
    /// removed again and the error returned; the observer is told `unmapping` for nothing it
    /// accepted, so it lets go of those itself.
    // Used by the io_uring fixed-buffer table and the loom models only.
    #[cfg_attr(not(any(feature = "io-uring", all(loom, test))), allow(dead_code))]
    pub(crate) fn add_observer(
        &self,
        observer: std::sync::Arc<dyn RegionObserver>,
    ) -> std::io::Result<()> {
        // No purge pass runs while an observer comes in: a pass that began before it saw no
        // observer and may be dropping pages the observer is about to pin (see `purge`).
        let _no_purge = self.purging.lock();
        self.observers.lock().push(observer.clone());
        let walked = self
            .classes
            .iter()
            .try_for_each(|c| c.for_each_listed(|r| observer.mapped(&r.info())));
        if walked.is_err() {
            self.remove_observer(&observer);
        }
        walked
    }

    /// Removes an observer; once this returns it is not called again.
    // Used by the io_uring fixed-buffer table and the loom models only.
    #[cfg_attr(not(any(feature = "io-uring", all(loom, test))), allow(dead_code))]
    pub(crate) fn remove_observer(&self, observer: &std::sync::Arc<dyn RegionObserver>) {
        self.observers
            .lock()
            .retain(|o| !std::sync::Arc::ptr_eq(o, observer));
    }

    /// Where the pool's memory comes from.
    // Used by the io_uring fixed-buffer table only.
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Unmaps every empty region now (after this thread gave its cached slices back, and after
    /// telling other threads to give theirs back on their next call), then purges the free slices
    /// of the regions left. Returns bytes unmapped.
    pub(crate) fn trim(&self) -> usize {
        let bytes = self.reclaim();
        let purged = self.purge(PurgeMode::All);
        tracing::debug!(target: "segpool", bytes, purged, mapped = self.mapped_now(), "trim");
        bytes
    }

    /// What budget pressure does: the unmapping half of `trim()` (purging maps nothing less),
    /// after waiting for a purge pass in flight, whose reservations hide free slices from
    /// allocators while it runs.
    pub(crate) fn reclaim(&self) -> usize {
        self.signals.bump_generation();
        thread_cache::flush_current_thread(self);
        drop(self.purging.lock());
        self.unmap_empty_regions()
    }

    /// One purge pass over every class (`region::purge`); returns the bytes discarded.
    pub(crate) fn purge(&self, mode: PurgeMode) -> usize {
        let _one_pass = self.purging.lock();
        // A pool with observers (io_uring fixed buffers) is not purged: the kernel pins a
        // registered region's pages, and dropping them would give the process fresh pages while
        // fixed I/O kept going to the old ones. Observers come in under `purging` (`add_observer`).
        if !self.observers.lock().is_empty() {
            return 0;
        }
        let guard = epoch::pin();
        let bytes: usize = self.classes.iter().map(|c| c.purge(mode, &guard)).sum();
        if bytes > 0 {
            self.purged_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        bytes
    }

    /// Unmaps every region that is empty now (no trim generation bump, no cache flush).
    pub(crate) fn unmap_empty_regions(&self) -> usize {
        let guard = epoch::pin();
        self.classes
            .iter()
            .map(|c| c.retire_empty(usize::MAX, &guard))
            .sum()
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if self.purger_registered.load(Ordering::Relaxed) {
            super::purge::unregister(self);
        }
        self.signals.bump_generation();
        thread_cache::flush_current_thread(self);
        let guard = epoch::pin();
        for c in self.classes.iter() {
            c.close(&guard);
        }
    }
}
