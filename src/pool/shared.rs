//! `PoolShared`: the state a pool's handles, its regions and its thread caches share, its
//! counts, and what its regions report to it.

use std::fmt;
use std::time::Duration;

use super::{Backing, Signals};
use crate::budget::Budget;
use crate::class_pool::{ClassPool, Shortage};
use crate::diagnostics::DiagState;
use crate::observer::{ObserverList, RegionObserver};
use crate::region::{into_ref, map_memory, PurgeMode, Region, RegionRef};
use crate::size_class::{SizeClasses, NO_CLASS};
use crate::stats::{ClassCounters, PeakCounter};
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{epoch, Arc, Mutex};
use crate::thread_cache::{self, ClassCache};

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
    /// Bytes this pool has mapped (regions and dedicated mappings), and the most it ever had.
    pub(super) mapped: PeakCounter,
    /// Slices of each class in the pool's live regions: what a class's out-of-free-list peak
    /// is clamped to.
    pub(super) class_slices: Box<[AtomicUsize]>,
    pub(crate) backing: Backing,
    pub(super) huge_pages: bool,
    pub(super) prefault: bool,
    pub(super) closed: AtomicBool,
    pub(super) next_region_id: AtomicU64,
    /// The caches of the threads that have one for this pool (read for their counters).
    pub(super) threads: Mutex<Vec<Arc<[ClassCache]>>>,
    /// Counts of threads that have exited, and of uncached allocations and releases (atomic
    /// read-modify-writes: these paths are not the fast path).
    pub(super) departed: Box<[ClassCounters]>,
    /// Bytes out of the free lists (segments, cached slices, dedicated mappings) and their peak.
    pub(super) out_bytes: PeakCounter,
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
        self.class_slices[class].load(Ordering::Relaxed) > 0
    }

    /// Takes `len` bytes of the budget for a mapping of class `class` (`NO_CLASS`: dedicated)
    /// with `slices` slices.
    pub(super) fn reserve_mapping(&self, class: u8, len: usize, slices: usize) -> bool {
        if self.budget.try_reserve(len).is_err() {
            return false;
        }
        // Counted before any slice of it can be taken, so the peaks clamped to these counts
        // never read low.
        self.mapped.add(len);
        if let Some(c) = self.class_slices.get(class as usize) {
            c.fetch_add(slices, Ordering::Relaxed);
        }
        true
    }

    /// Gives back what [`reserve_mapping`](Self::reserve_mapping) took (the mapping is gone).
    pub(super) fn release_mapping(&self, class: u8, len: usize, slices: usize) {
        if let Some(c) = self.class_slices.get(class as usize) {
            c.fetch_sub(slices, Ordering::Relaxed);
        }
        self.mapped.sub(len);
        self.budget.release(len);
    }

    /// Bytes out of the free lists as the pool counts them (an upper bound: thread caches count
    /// their give-backs late, see `thread_cache::UNCOUNTED_CACHES`).
    pub(crate) fn out_bytes_now(&self) -> usize {
        self.out_bytes.now()
    }

    /// Bytes this pool has mapped right now.
    pub(crate) fn mapped_now(&self) -> usize {
        self.mapped.now()
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

    /// Slices of `class` (`NO_CLASS`: a dedicated mapping) left the free lists (taken by a
    /// thread cache or a segment).
    pub(crate) fn note_taken(&self, class: u8, bytes: usize) {
        // The counts may be high (give-backs counted late); their peaks are clamped to what
        // exists, so they stay bounds that are possible.
        self.out_bytes.add_capped(bytes, self.mapped.now());
        if let Some(c) = self.classes.get(class as usize) {
            c.out.add_capped(
                bytes / c.size,
                self.class_slices[class as usize].load(Ordering::Relaxed),
            );
        }
    }

    /// Slices came back to the free lists.
    pub(crate) fn note_returned(&self, class: u8, bytes: usize) {
        self.out_bytes.sub(bytes);
        if let Some(c) = self.classes.get(class as usize) {
            c.out.sub(bytes / c.size);
        }
    }

    /// Maps a new region for class `class` (budget first).
    pub(crate) fn new_region(
        this: &Arc<Self>,
        class: u8,
        slice_size: usize,
        len: usize,
    ) -> std::result::Result<RegionRef, Shortage> {
        let slices = len / this.classes[class as usize].stride;
        if !this.reserve_mapping(class, len, slices) {
            return Err(Shortage::Budget { needed: len });
        }
        let guarded = this.classes[class as usize].stride != slice_size;
        let memory = map_memory(
            this.backing.dir(),
            len,
            this.huge_pages && !guarded,
            this.prefault,
        )
        .and_then(|m| {
            if guarded {
                crate::diagnostics::guard::protect(
                    &m.mapping,
                    slice_size,
                    this.classes[class as usize].stride,
                )?;
            }
            Ok(m)
        })
        .map_err(|e| {
            this.release_mapping(class, len, slices);
            Shortage::Map(e)
        })?;
        let id = this.next_region_id.fetch_add(1, Ordering::Relaxed);
        if let Some(decay) = this.purge_decay {
            if !this.purger_registered.swap(true, Ordering::Relaxed) {
                crate::purge::register(this, decay);
            }
        }
        Ok(into_ref(Region::new(
            Arc::clone(this),
            class,
            slice_size,
            memory,
            id,
            false,
        )))
    }

    /// Tells the observers that a region of a size class was mapped (`ClassPool::grow`, under
    /// the class lock, before any slice of it is handed out).
    pub(crate) fn region_mapped(&self, region: &Region) {
        let observers = self.observers.lock();
        if observers.is_empty() {
            return;
        }
        let info = region.info();
        for o in observers.iter() {
            // The observer reports and counts its own failure; the region just stays unknown
            // to it.
            let _ = o.mapped(&info);
        }
    }

    /// Tells the observers that a region is about to be unmapped (`region::destroy`, with the
    /// memory still mapped). Dedicated mappings were never reported, so they are not here either.
    pub(crate) fn region_unmapping(&self, region: &Region) {
        if region.class == NO_CLASS {
            return;
        }
        let observers = self.observers.lock();
        if observers.is_empty() {
            return;
        }
        let info = region.info();
        for o in observers.iter() {
            o.unmapping(&info);
        }
    }

    /// Adds an observer, then tells it about every region already mapped (see
    /// `crate::observer` for why no region is missed). On the first error the observer is
    /// removed again and the error returned; the observer is told `unmapping` for nothing it
    /// accepted, so it lets go of those itself.
    // Used by the io_uring fixed-buffer table and the loom models only.
    #[cfg_attr(not(any(feature = "io-uring", loom)), allow(dead_code))]
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
    #[cfg_attr(not(any(feature = "io-uring", loom)), allow(dead_code))]
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

    /// Called by a region's destroyer after it unmapped `len` bytes.
    pub(crate) fn region_unmapped(&self, class: u8, id: u64, base: usize, len: usize) {
        if let Some(d) = &self.diag {
            d.forget_range(base, len);
        }
        let slices = if class == NO_CLASS {
            self.dedicated_segments.fetch_sub(1, Ordering::Relaxed);
            self.dedicated_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dedicated_releases.fetch_add(1, Ordering::Relaxed);
            0
        } else {
            let c = &self.classes[class as usize];
            c.regions_unmapped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: "segpool",
                region = id,
                class = c.size,
                bytes = len,
                "region unmapped"
            );
            len / c.stride
        };
        self.release_mapping(class, len, slices);
    }

    /// Unmaps every empty region now (after this thread gave its cached slices back, and after
    /// telling other threads to give theirs back on their next call), then purges the free slices
    /// of the regions left. Returns bytes unmapped.
    pub(crate) fn trim(&self) -> usize {
        let bytes = self.reclaim();
        let purged = self.purge(PurgeMode::All);
        tracing::debug!(target: "segpool", bytes, purged, mapped = self.mapped.now(), "trim");
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
            .map(|c| c.retire_empty(None, usize::MAX, &guard))
            .sum()
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if self.purger_registered.load(Ordering::Relaxed) {
            crate::purge::unregister(self);
        }
        self.signals.bump_generation();
        thread_cache::flush_current_thread(self);
        let guard = epoch::pin();
        for c in self.classes.iter() {
            c.close(&guard);
        }
    }
}
