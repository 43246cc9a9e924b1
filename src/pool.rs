//! `SegmentPool`: the public handle, its builder, and the state its regions share.

use std::fmt;
use std::panic::Location;
use std::path::PathBuf;
use std::time::Duration;

use crate::budget::{Budget, Signals};
use crate::class_pool::{map_memory, ClassConfig, ClassPool, Shortage};
use crate::diagnostics::{DiagState, Diagnostics, LeakReport};
use crate::observer::{ObserverList, RegionObserver};
use crate::region::{into_ref, PurgeMode, Region, RegionRef, ZERO_TAG};
use crate::segment::Segment;
use crate::size_class::{SizeClasses, DEFAULT_SIZE_CLASSES, NO_CLASS};
use crate::stats::{ClassStats, PeakCounter, PoolStats};
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{epoch, Arc, Mutex};
use crate::thread_cache::{self, ClassCache, ClassCounters};
use crate::{Error, Result};

/// Where a pool's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backing {
    /// Anonymous private memory (`MAP_PRIVATE | MAP_ANONYMOUS`).
    #[default]
    Anonymous,
    /// Files created in this directory, one per region, that no other process can open
    /// (`O_TMPFILE`), given their full size with `posix_fallocate` before they are mapped
    /// `MAP_SHARED`, so a full disk is an `Err` from `allocate`, never a SIGBUS later.
    ///
    /// A page of such a region that is lost all the same (an I/O error at page-in, the file cut
    /// through `/proc/<pid>/map_files`) is not caught: touching it raises `SIGBUS` and the
    /// process dies, as it would on any memory it lost. A segment is a plain `&mut [u8]` and has
    /// no operation that could report it; see `docs/faults.md`.
    File(PathBuf),
}

/// Empty regions a class keeps by default: as many as fit in this many bytes, at least one.
const RETAINED_EMPTY_BYTES: usize = 16 << 20;

/// How long a free slice stays dirty before the decay purger gives its pages back, by default
/// (docs/design.md, "Giving memory back", says why one second).
pub const DEFAULT_PURGE_DECAY: Duration = Duration::from_secs(1);

/// Largest region a pool accepts (its free-slice metadata stays small).
pub(crate) const MAX_REGION: usize = 1 << 30;

pub(crate) type PressureFn = dyn Fn(usize) + Send + Sync + 'static;

/// Configures and builds a [`SegmentPool`]. Every value is checked by [`build`](Self::build).
pub struct SegmentPoolBuilder {
    size_classes: Vec<usize>,
    region_size: Option<usize>,
    budget: Option<usize>,
    shared_budget: Option<Budget>,
    backing: Backing,
    on_pressure: Option<Box<PressureFn>>,
    huge_pages: bool,
    prefault: bool,
    retain_empty_regions: Option<usize>,
    empty_region_grace: Duration,
    purge_decay: Option<Duration>,
    thread_cache: bool,
    diagnostics: Diagnostics,
}

impl fmt::Debug for SegmentPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentPoolBuilder")
            .field("size_classes", &self.size_classes)
            .field("region_size", &self.region_size)
            .field("budget", &self.budget)
            .field("shared_budget", &self.shared_budget)
            .field("backing", &self.backing)
            .field("on_pressure", &self.on_pressure.is_some())
            .field("huge_pages", &self.huge_pages)
            .field("prefault", &self.prefault)
            .field("retain_empty_regions", &self.retain_empty_regions)
            .field("empty_region_grace", &self.empty_region_grace)
            .field("purge_decay", &self.purge_decay)
            .field("thread_cache", &self.thread_cache)
            .field("diagnostics", &self.diagnostics)
            .finish()
    }
}

impl Default for SegmentPoolBuilder {
    fn default() -> Self {
        Self {
            size_classes: DEFAULT_SIZE_CLASSES.to_vec(),
            region_size: None,
            budget: None,
            shared_budget: None,
            backing: Backing::Anonymous,
            on_pressure: None,
            huge_pages: true,
            prefault: false,
            retain_empty_regions: None,
            empty_region_grace: Duration::from_secs(1),
            purge_decay: Some(DEFAULT_PURGE_DECAY),
            thread_cache: true,
            diagnostics: Diagnostics::Off,
        }
    }
}

impl SegmentPoolBuilder {
    /// The slice sizes: powers of two, at least 4096, strictly increasing. Default: 4 KiB, 16 KiB,
    /// 64 KiB, 256 KiB, 1 MiB, then every power of two up to 1 GiB ([`DEFAULT_SIZE_CLASSES`]).
    ///
    /// [`DEFAULT_SIZE_CLASSES`]: crate::DEFAULT_SIZE_CLASSES
    pub fn size_classes(mut self, sizes: &[usize]) -> Self {
        self.size_classes = sizes.to_vec();
        self
    }

    /// The size of every region (a multiple of 4096, at most 1 GiB); a class larger than it gets
    /// regions of one slice. Default: 32 slices per region, at least 2 MiB and at most 32 MiB
    /// (but at least one slice), and at most a quarter of the budget (but at least one slice).
    pub fn region_size(mut self, bytes: usize) -> Self {
        self.region_size = Some(bytes);
        self
    }

    /// A hard limit on the bytes the pool maps (regions plus dedicated mappings), in a
    /// [`Budget`] of the pool's own ([`SegmentPool::budget`]).
    pub fn budget(mut self, bytes: usize) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// Counts the pool's mappings against `budget`, which other pools and
    /// [`Reservation`](crate::Reservation)s may share: the sum of all of them never exceeds its
    /// limit, and a shortage in any of them asks the pressure callbacks of every pool on it
    /// before it fails. Regions are sized from its limit as for [`budget`](Self::budget), which
    /// cannot be set as well.
    pub fn shared_budget(mut self, budget: &Budget) -> Self {
        self.shared_budget = Some(budget.clone());
        self
    }

    /// Where the memory comes from. Default: [`Backing::Anonymous`].
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// Called when an allocation finds no room under the budget (after the pool unmapped its own
    /// empty regions), so the program can release segments: a page cache evicts here.
    ///
    /// The rules (`docs/design.md`, "The pressure protocol"):
    ///
    /// * It runs on the allocating thread, inside [`SegmentPool::allocate`] (and the other
    ///   allocating calls), with no lock of the pool or its budget held. It must not hold a lock
    ///   that a caller of `allocate` may hold while it allocates: a page cache allocates without
    ///   holding its table's lock, and the callback takes that lock to evict.
    /// * Its argument is what would satisfy the request: the class's slice size when releasing
    ///   one segment of that class is enough (the class has regions mapped), otherwise the bytes
    ///   of the region or dedicated mapping that has to be mapped.
    /// * Segments of this pool released while it runs, on any thread, go to the allocations
    ///   waiting for room in the order they asked, never to a newcomer.
    /// * After it returns the allocation takes what was handed to it or tries again, and calls
    ///   it again as long as the previous call released anything. An allocation fails with
    ///   `BudgetExceeded` only after a call that released nothing (and after the other pools on
    ///   a shared budget were asked too). Releasing one segment per call is enough.
    /// * Several threads may run it at once. An allocation made from inside it does not call it
    ///   again: a shortage there fails at once.
    /// * The pool owns it until its last handle is dropped, then drops it, and with it anything
    ///   it owns (the segments of a cache it captured). It must not own a `SegmentPool` handle
    ///   of its own pool: that pool would then never be dropped.
    pub fn on_pressure<F: Fn(usize) + Send + Sync + 'static>(mut self, f: F) -> Self {
        self.on_pressure = Some(Box::new(f));
        self
    }

    /// Advise anonymous regions of 2 MiB and more `MADV_HUGEPAGE` (default: on).
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// Prefault new regions with `MADV_POPULATE_WRITE` (default: off). A refusal (`ENOMEM`) is an
    /// `Err` from the allocation that needed the region.
    pub fn prefault(mut self, on: bool) -> Self {
        self.prefault = on;
        self
    }

    /// How many empty regions each class keeps mapped for reuse; a region that becomes empty
    /// beyond that is unmapped at once, and `trim()` unmaps the rest. Default: as many as fit in
    /// 16 MiB per class, at least one (eight 2 MiB regions, two 8 MiB regions, one 32 MiB
    /// region), so a burst does not pin its peak while a steady flow does not map and unmap a
    /// region every few allocations.
    pub fn retain_empty_regions(mut self, regions: usize) -> Self {
        self.retain_empty_regions = Some(regions);
        self
    }

    /// How long after a class mapped a region it keeps more empty regions than
    /// [`retain_empty_regions`](Self::retain_empty_regions) (default: one second). A class whose
    /// demand swings maps and unmaps regions over and over without it; `Duration::ZERO` unmaps
    /// surplus empty regions the moment they become empty.
    pub fn empty_region_grace(mut self, grace: Duration) -> Self {
        self.empty_region_grace = grace;
        self
    }

    /// How long a free slice may keep its pages before they go back to the OS with no call
    /// (default: [`DEFAULT_PURGE_DECAY`], one second). A background thread (one for the whole
    /// process, started when the first pool with a decay maps its first region, ended when the
    /// last such pool is dropped) passes over the pool every half decay: a free slice it finds
    /// free on two passes in a row is purged (`MADV_DONTNEED`, or `MADV_REMOVE` for file-backed
    /// pools), so a slice is purged after it sat free between half the decay and the whole
    /// decay (plus the time a pass takes).
    ///
    /// `None` turns the background purging off (only [`SegmentPool::trim`] purges).
    /// `Some(Duration::ZERO)` purges every free slice on every pass, one pass per millisecond.
    /// A purged slice costs a page fault per page when it is next written, and reads zero, so
    /// [`SegmentPool::allocate_zeroed`] does not clear it. Pools with `Diagnostics::Full` never
    /// purge (the poison of released slices must survive until it is checked).
    pub fn purge_decay(mut self, decay: impl Into<Option<Duration>>) -> Self {
        self.purge_decay = decay.into();
        self
    }

    /// Per-thread caches of free slices (default: on). Off, every allocation and release goes to
    /// the regions' shared free lists.
    pub fn thread_cache(mut self, on: bool) -> Self {
        self.thread_cache = on;
        self
    }

    /// What the pool records about its segments (default: [`Diagnostics::Off`]): where they were
    /// allocated (for [`SegmentPool::leaks`]), and under [`Diagnostics::Full`] poison on release
    /// and guard pages. See `docs/diagnostics.md` for what each level costs.
    pub fn diagnostics(mut self, level: Diagnostics) -> Self {
        self.diagnostics = level;
        self
    }

    /// Checks the configuration and builds the pool. No memory is mapped until the first
    /// allocation.
    pub fn build(mut self) -> Result<SegmentPool> {
        let classes = SizeClasses::new(&self.size_classes)?;
        let page = crate::os::page_size();
        let budget = match (self.shared_budget.take(), self.budget) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidConfig(
                    "budget and shared_budget: set one of them, not both".into(),
                ))
            }
            (Some(b), None) => b,
            (None, Some(limit)) => Budget::new(limit),
            (None, None) => Budget::unlimited(),
        };
        // Regions and caches are sized from the limit, whichever budget it comes from.
        self.budget = budget.limit_opt();
        if self.diagnostics.is_full() {
            crate::diagnostics::guard::install_hook()?;
        }
        if self.diagnostics == Diagnostics::Sampled(0) {
            return Err(Error::InvalidConfig(
                "diagnostics: Sampled(n) needs n >= 1".into(),
            ));
        }
        if let Some(b) = self.budget {
            if b < page {
                return Err(Error::InvalidConfig(format!(
                    "budget: {b} bytes is less than one page ({page} bytes)"
                )));
            }
        }
        if let Some(r) = self.region_size {
            if r == 0 || r % page != 0 {
                return Err(Error::InvalidConfig(format!(
                    "region_size: {r} is not a positive multiple of the page size ({page})"
                )));
            }
            if r > MAX_REGION {
                return Err(Error::InvalidConfig(format!(
                    "region_size: {r} is larger than the maximum of {MAX_REGION} bytes"
                )));
            }
            if let Some(b) = self.budget.filter(|&b| r > b) {
                return Err(Error::InvalidConfig(format!(
                    "region_size: {r} is larger than the budget ({b} bytes): no region could ever be mapped"
                )));
            }
        }
        if let Backing::File(dir) = &self.backing {
            crate::os::file::anonymous_file(dir).map_err(|e| {
                Error::InvalidConfig(format!("backing directory {}: {e}", dir.display()))
            })?;
        }
        let clock = crate::class_pool::Clock::new();
        static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let class_pools = classes
            .sizes()
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut region = SizeClasses::region_size(size, self.region_size, self.budget);
                let stride = if self.diagnostics.is_full() {
                    crate::diagnostics::guard::stride(size, page)
                } else {
                    size
                };
                if stride != size {
                    region =
                        crate::diagnostics::guard::region_size(region, size, stride, self.budget);
                }
                let cache = if self.thread_cache {
                    SizeClasses::cache_capacity(size, self.budget)
                } else {
                    0
                };
                let retain = self
                    .retain_empty_regions
                    .unwrap_or((RETAINED_EMPTY_BYTES / region).max(1));
                let config = ClassConfig {
                    index: i as u8,
                    size,
                    region_size: region,
                    stride,
                    cache_capacity: cache,
                    retain_empty: retain,
                    grace: self.empty_region_grace,
                };
                ClassPool::new(config, clock)
            })
            .collect::<Vec<_>>();
        let n = class_pools.len();
        let diag = DiagState::new(self.diagnostics);
        let shared = PoolShared {
            diagnosed: diag.is_some(),
            diag,
            dedicated_allocations: AtomicU64::new(0),
            dedicated_releases: AtomicU64::new(0),
            id: NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            size_classes: classes,
            classes: class_pools.into_boxed_slice(),
            signals: Signals::new(),
            budget: budget.clone(),
            mapped: PeakCounter::default(),
            class_slices: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            backing: self.backing,
            huge_pages: self.huge_pages,
            prefault: self.prefault,
            closed: AtomicBool::new(false),
            next_region_id: AtomicU64::new(1),
            threads: Mutex::new(Vec::new()),
            departed: (0..n).map(|_| ClassCounters::default()).collect(),
            out_bytes: PeakCounter::default(),
            dedicated_segments: AtomicUsize::new(0),
            dedicated_bytes: AtomicUsize::new(0),
            purge_decay: self.purge_decay.filter(|_| !self.diagnostics.is_full()),
            purger_registered: AtomicBool::new(false),
            purging: Mutex::new(()),
            purged_bytes: AtomicU64::new(0),
            observers: Mutex::new(Vec::new()),
        };
        let shared = Arc::new(shared);
        let hook = std::sync::Arc::new(PoolHook {
            shared: Arc::clone(&shared),
            on_pressure: self.on_pressure,
        });
        budget.join(&hook);
        Ok(SegmentPool {
            _handle: Arc::new(PoolHandle {
                shared: Arc::clone(&shared),
                hook,
            }),
            shared,
        })
    }
}

/// The state shared by a pool's handles, its regions and the thread caches that hold its slices.
/// It outlives the last `SegmentPool` handle until its last region is destroyed.
pub(crate) struct PoolShared {
    pub(crate) id: u64,
    /// `diag.is_some()`, read by the allocate fast path (one predictable branch).
    pub(crate) diagnosed: bool,
    /// Records, poison and guard state; `None` when diagnostics are off.
    pub(crate) diag: Option<Box<DiagState>>,
    dedicated_allocations: AtomicU64,
    dedicated_releases: AtomicU64,
    pub(crate) size_classes: SizeClasses,
    pub(crate) classes: Box<[ClassPool]>,
    /// The trim generation and the count of this pool's allocations queued on the budget: the
    /// one word the fast paths read (see `crate::budget`).
    pub(crate) signals: Signals,
    /// The budget the pool's mappings count against (its own, or shared with other pools).
    pub(crate) budget: Budget,
    /// Bytes this pool has mapped (regions and dedicated mappings), and the most it ever had.
    mapped: PeakCounter,
    /// Slices of each class in the pool's live regions: what a class's out-of-free-list peak
    /// is clamped to.
    class_slices: Box<[AtomicUsize]>,
    pub(crate) backing: Backing,
    huge_pages: bool,
    prefault: bool,
    closed: AtomicBool,
    next_region_id: AtomicU64,
    /// The caches of the threads that have one for this pool (read for their counters).
    threads: Mutex<Vec<Arc<[ClassCache]>>>,
    /// Counts of threads that have exited, and of uncached allocations and releases (atomic
    /// read-modify-writes: these paths are not the fast path).
    departed: Box<[ClassCounters]>,
    /// Bytes out of the free lists (segments, cached slices, dedicated mappings) and their peak.
    out_bytes: PeakCounter,
    dedicated_segments: AtomicUsize,
    dedicated_bytes: AtomicUsize,
    /// The decay time of the background purger (`None`: only `trim()` purges).
    pub(crate) purge_decay: Option<Duration>,
    /// Set when the pool was handed to the background purger (at its first region).
    purger_registered: AtomicBool,
    /// Held by a purge pass over the pool: one pass at a time, and an allocation short of budget
    /// waits for the pass in flight (whose reservations hide free slices) before it fails.
    purging: Mutex<()>,
    /// Bytes of free slices purged since the pool was built.
    purged_bytes: AtomicU64,
    /// Told when regions are mapped and before they are unmapped (`crate::observer`); locked only
    /// then, never on the allocate/release path.
    observers: Mutex<ObserverList>,
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
    fn reserve_mapping(&self, class: u8, len: usize, slices: usize) -> bool {
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
    fn release_mapping(&self, class: u8, len: usize, slices: usize) {
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
            &this.backing,
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

    fn close(&self) {
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

/// What a pool's budget reaches it by: the pool's state and its pressure callback. The last
/// `SegmentPool` handle owns it; the budget holds it weakly, so dropping that handle drops the
/// callback and what it owns (a cache's segments keep the pool's shared state alive, and the
/// callback would keep them: held by the shared state, it would never be dropped).
pub(crate) struct PoolHook {
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) on_pressure: Option<Box<PressureFn>>,
}

/// The last `SegmentPool` handle closes the pool when it is dropped, then drops the pressure
/// callback (field order).
struct PoolHandle {
    shared: Arc<PoolShared>,
    hook: std::sync::Arc<PoolHook>,
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        if self.shared.diag.is_some() {
            let report = leaks(&self.shared);
            if !report.is_empty() {
                tracing::warn!(
                    target: "segpool",
                    pool = self.shared.id,
                    outstanding = report.outstanding,
                    recorded = report.segments.len(),
                    report = %report,
                    "pool dropped with segments outstanding"
                );
            }
        }
        self.shared.close();
    }
}

/// A pool of page-aligned segments in size classes, carved from mmap'd regions.
///
/// Cloning is cheap (a shared handle). The pool is closed when the last clone is dropped: its empty
/// regions are unmapped at once, and regions that still have live segments are unmapped when the
/// last of those segments is released.
#[derive(Clone)]
pub struct SegmentPool {
    /// The pool's state, reached in one step by the fast path (the same `Arc` as
    /// `handle.shared`).
    shared: Arc<PoolShared>,
    /// Counts the user's handles: the last one closes the pool.
    _handle: Arc<PoolHandle>,
}

impl fmt::Debug for SegmentPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.shared, f)
    }
}

/// The outcome of one attempt to serve an allocation.
pub(crate) enum Attempt {
    /// A segment, and whether its bytes are known to be zero.
    Done(Segment, bool),
    Short {
        needed: usize,
    },
}

impl SegmentPool {
    /// A builder with the defaults (see [`SegmentPoolBuilder`]).
    pub fn builder() -> SegmentPoolBuilder {
        SegmentPoolBuilder::default()
    }

    /// A pool with every default: the default size classes, anonymous memory, no budget.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    #[inline(always)]
    pub(crate) fn shared(&self) -> &Arc<PoolShared> {
        &self.shared
    }

    pub(crate) fn hook(&self) -> &std::sync::Arc<PoolHook> {
        &self._handle.hook
    }

    /// The budget the pool's mappings count against: the one given to
    /// [`SegmentPoolBuilder::shared_budget`], or the pool's own.
    pub fn budget(&self) -> &Budget {
        &self.shared.budget
    }

    /// A segment of at least `size` bytes: the smallest class that fits, or a dedicated mapping
    /// (rounded up to pages) above the largest class. Its contents are unspecified (zero when the
    /// memory is fresh; use [`allocate_zeroed`](Self::allocate_zeroed) to be sure).
    ///
    /// Fails with `ZeroSize`, `TooLarge`, `BudgetExceeded` (after unmapping the pool's own empty
    /// regions and asking the pressure callbacks, see
    /// [`on_pressure`](SegmentPoolBuilder::on_pressure)), or `Map`.
    #[inline]
    #[track_caller]
    pub fn allocate(&self, size: usize) -> Result<Segment> {
        self.allocate_inner(size).map(|(seg, _)| seg)
    }

    /// Like [`allocate`](Self::allocate), and the bytes are zero. Slices never handed out before
    /// are known to be zero already and are not written; reused ones are cleared.
    #[track_caller]
    pub fn allocate_zeroed(&self, size: usize) -> Result<Segment> {
        let (mut seg, zero) = self.allocate_inner(size)?;
        if !zero {
            seg.fill(0);
        }
        Ok(seg)
    }

    #[inline(always)]
    #[track_caller]
    fn allocate_inner(&self, size: usize) -> Result<(Segment, bool)> {
        let shared = self.shared();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if let Some(class) = shared.size_classes.class_of(size) {
            // A pool with diagnostics is never on the fast path: it takes the slow path, which
            // pops the thread cache itself and then records the allocation.
            // SAFETY: `class_of` gives a class of this pool.
            if let Some((addr, region, len)) = unsafe { thread_cache::pop(shared, class) } {
                // SAFETY: the cache handed this slice to us alone; it belongs to `region`, whose
                // class size is `len`.
                let seg = unsafe { Segment::from_slice(addr, region, len) };
                return Ok((seg, addr & ZERO_TAG != 0));
            }
        }
        self.allocate_slow(size, Location::caller())
    }

    /// Hands a segment that is about to be returned to the diagnostics (records, poison check):
    /// the slice at `addr` (tag bits included) of `region`, `len` bytes.
    #[cold]
    #[inline(never)]
    fn diagnose(&self, addr: usize, region: RegionRef, len: usize, at: &'static Location<'static>) {
        if let Some(d) = &self.shared().diag {
            d.on_allocate(addr, region, len, at);
        }
    }

    /// The segments still out, with where each was allocated when that was recorded (see
    /// [`Diagnostics`]). Under `Off` the report only counts them.
    pub fn leaks(&self) -> LeakReport {
        leaks(self.shared())
    }

    /// Like [`allocate`](Self::allocate), but when the budget is exhausted it waits up to
    /// `timeout` for segments to be released (or regions unmapped) instead of failing at once.
    /// Waiters (this and [`allocate_async`](Self::allocate_async)) are served in the order they
    /// started waiting. A request that could never fit the budget fails at once.
    #[track_caller]
    pub fn allocate_timeout(&self, size: usize, timeout: Duration) -> Result<Segment> {
        let at = Location::caller();
        // A timeout too long for an `Instant` waits without a deadline.
        let deadline = crate::sync::deadline_after(timeout);
        let needed = match self.allocate(size) {
            // Waiting cannot help a request larger than the whole budget.
            Err(Error::BudgetExceeded { needed, budget, .. }) if needed <= budget => needed,
            other => return other,
        };
        let (seg, zero) = crate::wait::wait_blocking(self, size, needed, deadline)?;
        self.diagnose_segment(&seg, zero, at);
        Ok(seg)
    }

    /// Like [`allocate_timeout`](Self::allocate_timeout) without a timeout, as a future: when the
    /// budget is exhausted it waits, without blocking the thread, until segments are released,
    /// regions unmapped (a release, a `trim()`, a pressure callback) or room is given back to a
    /// shared budget. It needs no particular runtime (it keeps the waker it is polled with).
    ///
    /// Waiters, async and blocking, are served in the order they started waiting. Dropping the
    /// future before it completes leaves nothing behind: it leaves the queue, and a segment that
    /// was handed to it goes to the next waiter or back to the pool. The first poll tries at
    /// once (and may run the pressure callback, see
    /// [`on_pressure`](SegmentPoolBuilder::on_pressure)); a request that could never fit the
    /// budget fails at once.
    #[track_caller]
    pub fn allocate_async(
        &self,
        size: usize,
    ) -> impl std::future::Future<Output = Result<Segment>> + Send + 'static {
        crate::wait::AllocateFuture::new(self.clone(), size, Location::caller())
    }

    /// [`allocate`](Self::allocate) for a caller location recorded elsewhere.
    pub(crate) fn allocate_located(
        &self,
        size: usize,
        at: &'static Location<'static>,
    ) -> Result<Segment> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        self.allocate_slow(size, at).map(|(seg, _)| seg)
    }

    /// Unmaps every region that has no segment in use, now, and returns the bytes unmapped. This
    /// thread's cached slices go back first; other threads give theirs back on their next call
    /// into the pool (or when they exit), so regions they hold are unmapped by a later `trim()`.
    ///
    /// Then purges the free slices of the regions that stay mapped: their pages go back to the
    /// OS (`MADV_DONTNEED`, or `MADV_REMOVE` for file-backed pools) while the address space
    /// stays; they read zero when handed out again. Those bytes are not in the return value
    /// (nothing was unmapped) but in [`PoolStats::purged_bytes`].
    pub fn trim(&self) -> usize {
        self.shared().trim()
    }

    /// A snapshot of the pool's counts; `Display` prints it as a table.
    pub fn stats(&self) -> PoolStats {
        let shared = self.shared();
        // Under the registry's lock: an exiting thread moves its counts from the registry to
        // `departed` under it, so reading `departed` first could miss them both.
        let threads = shared.threads.lock();
        let mut classes: Vec<ClassStats> = shared
            .classes
            .iter()
            .zip(shared.departed.iter())
            .map(|(c, d)| ClassStats {
                size: c.size,
                allocations: d.allocations.load(Ordering::Relaxed),
                releases: d.releases.load(Ordering::Relaxed),
                ..ClassStats::default()
            })
            .collect();
        for t in threads.iter() {
            for (s, c) in classes.iter_mut().zip(t.iter().map(|c| &c.counters)) {
                s.allocations += c.allocations.load(Ordering::Relaxed);
                s.releases += c.releases.load(Ordering::Relaxed);
                s.cached += c.cached();
            }
        }
        drop(threads);
        // The peaks only grow, and each out-of-free-list peak was clamped to what was mapped
        // when it was recorded: read them first, so none of them exceeds the mapped peak read
        // after.
        let peak_in_use_bytes = shared.out_bytes.peak();
        let class_peaks: Vec<usize> = shared.classes.iter().map(|c| c.out.peak()).collect();
        let mut stats = PoolStats {
            budget_bytes: shared.budget.limit_opt(),
            peak_in_use_bytes,
            peak_mapped_bytes: shared.mapped.peak(),
            mapped_bytes: shared.mapped.now(),
            dedicated_segments: shared.dedicated_segments.load(Ordering::Relaxed),
            dedicated_bytes: shared.dedicated_bytes.load(Ordering::Relaxed),
            budget_waiters: shared.budget.waiters(),
            purged_bytes: shared.purged_bytes.load(Ordering::Relaxed),
            write_after_release: shared
                .diag
                .as_ref()
                .map_or(0, |d| d.write_after_release.load(Ordering::Relaxed)),
            ..PoolStats::default()
        };
        for ((s, c), peak) in classes
            .iter_mut()
            .zip(shared.classes.iter())
            .zip(class_peaks)
        {
            let snap = c.snapshot();
            s.in_use = s.allocations.saturating_sub(s.releases) as usize;
            s.regions = snap.regions;
            s.free = snap.slices.saturating_sub(snap.out);
            s.peak_in_use = peak;
            s.mapped_bytes = snap.mapped_bytes;
            s.resident_bytes = snap.resident_bytes;
            stats.resident_bytes += snap.resident_bytes;
            stats.allocations += s.allocations;
            stats.releases += s.releases;
            stats.regions += snap.regions;
            stats.regions_mapped += c.regions_mapped.load(Ordering::Relaxed);
            stats.regions_unmapped += c.regions_unmapped.load(Ordering::Relaxed);
            stats.in_use_bytes += s.in_use * s.size;
            stats.cached_bytes += s.cached * s.size;
        }
        stats.in_use_bytes += stats.dedicated_bytes;
        stats.allocations += shared.dedicated_allocations.load(Ordering::Relaxed);
        stats.releases += shared.dedicated_releases.load(Ordering::Relaxed);
        stats.classes = classes;
        stats
    }

    #[cold]
    fn allocate_slow(
        &self,
        size: usize,
        at: &'static Location<'static>,
    ) -> Result<(Segment, bool)> {
        let shared = self.shared();
        if !shared.diagnosed {
            return self.allocate_slow_inner(size);
        }
        let cached = shared
            .size_classes
            .class_of(size)
            .and_then(|class| Some((class, thread_cache::pop_slow(shared, class)?)));
        let (seg, zero) = match cached {
            Some((class, (addr, region))) => (
                // SAFETY: the cache handed this slice to us alone; it belongs to `region`.
                unsafe { Segment::from_slice(addr, region, shared.classes[class].size) },
                addr & ZERO_TAG != 0,
            ),
            None => self.allocate_slow_inner(size)?,
        };
        self.diagnose_segment(&seg, zero, at);
        Ok((seg, zero))
    }

    pub(crate) fn diagnose_segment(
        &self,
        seg: &Segment,
        zero: bool,
        at: &'static Location<'static>,
    ) {
        if !self.shared().diagnosed {
            return;
        }
        let tag = if zero { ZERO_TAG } else { 0 };
        self.diagnose(seg.as_ptr() as usize | tag, seg.region_ref(), seg.len(), at);
    }

    fn allocate_slow_inner(&self, size: usize) -> Result<(Segment, bool)> {
        let shared = self.shared();
        let needed = match self.attempt(size)? {
            Attempt::Done(seg, zero) => return Ok((seg, zero)),
            Attempt::Short { needed } => needed,
        };
        if needed > shared.budget.limit() {
            return Err(shared.budget.exceeded(size, needed));
        }
        // 1. Unmap our own empty regions (any class) and tell other threads to give their cached
        //    slices back, then try again.
        shared.reclaim();
        let needed = match self.attempt(size)? {
            Attempt::Done(seg, zero) => return Ok((seg, zero)),
            Attempt::Short { needed } => needed,
        };
        // 2. The pressure protocol (`crate::wait`).
        crate::wait::press(self, size, needed)
    }

    /// One try at serving `size` without pressure handling.
    pub(crate) fn attempt(&self, size: usize) -> Result<Attempt> {
        let shared = self.shared();
        match shared.size_classes.class_of(size) {
            Some(class) => match thread_cache::refill(shared, class) {
                // SAFETY: `refill` handed this slice to us alone; it belongs to `region`.
                Ok((addr, region)) => Ok(Attempt::Done(
                    unsafe { Segment::from_slice(addr, region, shared.classes[class].size) },
                    addr & ZERO_TAG != 0,
                )),
                Err(Shortage::Budget { needed }) => Ok(Attempt::Short { needed }),
                Err(Shortage::Map(e)) => Err(Error::Map(e)),
            },
            None => self.attempt_dedicated(size),
        }
    }

    fn attempt_dedicated(&self, size: usize) -> Result<Attempt> {
        let shared = self.shared();
        let len = crate::os::round_up(size, crate::os::page_size())
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or(Error::TooLarge { requested: size })?;
        if !shared.reserve_mapping(NO_CLASS, len, 0) {
            return Ok(Attempt::Short { needed: len });
        }
        // One mmap and one munmap, nothing more: no huge-page alignment (an over-sized map and
        // trims) and no madvise for a mapping that lives as long as one segment.
        let memory = match map_memory(&shared.backing, len, false, shared.prefault) {
            Ok(m) => m,
            Err(e) => {
                shared.release_mapping(NO_CLASS, len, 0);
                return Err(Error::Map(e));
            }
        };
        let id = shared.next_region_id.fetch_add(1, Ordering::Relaxed);
        let region = into_ref(Region::new(
            Arc::clone(shared),
            NO_CLASS,
            len.next_power_of_two(),
            memory,
            id,
            true,
        ));
        shared.dedicated_segments.fetch_add(1, Ordering::Relaxed);
        shared.dedicated_allocations.fetch_add(1, Ordering::Relaxed);
        shared.dedicated_bytes.fetch_add(len, Ordering::Relaxed);
        // SAFETY: the region was born with its one slice out, for this segment.
        let base = unsafe { region.get() }.base();
        // SAFETY: the dedicated region's one slice is this segment's alone.
        Ok(Attempt::Done(
            unsafe { Segment::from_slice(base, region, len) },
            true,
        ))
    }
}

/// The leak report of a pool: every live segment counted, the recorded ones listed.
fn leaks(shared: &PoolShared) -> LeakReport {
    let mut outstanding = shared.dedicated_segments.load(Ordering::Relaxed);
    let mut per_class = vec![0u64; shared.classes.len()];
    // `departed` under the registry's lock, as in `stats()`.
    let threads = shared.threads.lock();
    for (p, d) in per_class.iter_mut().zip(shared.departed.iter()) {
        *p = d
            .allocations
            .load(Ordering::Relaxed)
            .wrapping_sub(d.releases.load(Ordering::Relaxed));
    }
    for t in threads.iter() {
        for (p, c) in per_class.iter_mut().zip(t.iter().map(|c| &c.counters)) {
            *p = p
                .wrapping_add(c.allocations.load(Ordering::Relaxed))
                .wrapping_sub(c.releases.load(Ordering::Relaxed));
        }
    }
    drop(threads);
    outstanding += per_class
        .iter()
        .map(|&n| (n as i64).max(0) as usize)
        .sum::<usize>();
    LeakReport {
        level: shared.diag.as_ref().map_or(Diagnostics::Off, |d| d.level()),
        outstanding,
        segments: shared
            .diag
            .as_ref()
            .map_or_else(Vec::new, |d| d.leaks(shared)),
    }
}
