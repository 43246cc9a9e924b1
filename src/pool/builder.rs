//! [`SegmentPoolBuilder`]: the pool's configuration, checked and turned into a pool.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{PoolHandle, PoolHook, PoolShared, SegmentPool, Signals};
use crate::budget::Budget;
use crate::class_pool::{ClassConfig, ClassPool};
use crate::diagnostics::{DiagState, Diagnostics};
use crate::region::SliceCounts;
use crate::size_class::{SizeClasses, DEFAULT_SIZE_CLASSES, MAX_REGION};
use crate::stats::ClassCounters;
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use crate::sync::{Arc, Mutex};
use crate::{ErrorKind, Result};

/// Where a pool's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
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

impl Backing {
    /// The directory of file-backed regions (`None`: anonymous memory).
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        match self {
            Backing::Anonymous => None,
            Backing::File(dir) => Some(dir),
        }
    }
}

/// Empty regions a class keeps by default: as many as fit in this many bytes, at least one.
const RETAINED_EMPTY_BYTES: usize = 16 << 20;

/// How long a free slice stays dirty before the decay purger gives its pages back, by default
/// (docs/design.md, "Giving memory back", says why one second).
pub const DEFAULT_PURGE_DECAY: Duration = Duration::from_secs(1);

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
    /// beyond that is unmapped at once (outside the
    /// [`empty_region_grace`](Self::empty_region_grace)), and `trim()` unmaps the rest. Default:
    /// as many as fit in 16 MiB per class, at least one (eight 2 MiB regions, two 8 MiB regions,
    /// one 32 MiB region), so a burst does not pin its peak while a steady flow does not map and
    /// unmap a region every few allocations.
    pub fn retain_empty_regions(mut self, regions: usize) -> Self {
        self.retain_empty_regions = Some(regions);
        self
    }

    /// How long a class keeps more empty regions than
    /// [`retain_empty_regions`](Self::retain_empty_regions) after it mapped a region, or after
    /// demand came back to that surplus (a slice taken from one of those empty regions); default:
    /// one second. A class whose demand swings (a pipeline whose buffers all come back at the end
    /// of each batch) maps and unmaps regions over and over without it, every page faulting in
    /// again. Once it is over, the surplus is unmapped when the next region empties, or by the
    /// next decay pass ([`purge_decay`](Self::purge_decay)) if none does; `Duration::ZERO` unmaps
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
    ///
    /// What one thread may hold cached per pool: in a class up to 4 MiB, 128 slices or 4 MiB,
    /// whichever is less (at least one slice); in the classes above 4 MiB, one slice each, for
    /// the smallest of them whose sizes add up to within 1 GiB (with the default classes, 8 MiB
    /// to 512 MiB; the 1 GiB class is not cached). Under a [`budget`](Self::budget) a class
    /// caches at most a sixteenth of it, and nothing if one slice is more than that. Cached
    /// slices count in [`PoolStats::cached_bytes`](crate::PoolStats::cached_bytes) and go back
    /// to the regions on [`SegmentPool::trim`], when the budget runs short, and when the thread
    /// exits.
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
                return Err(ErrorKind::InvalidConfig(
                    "budget and shared_budget: set one of them, not both".into(),
                )
                .into())
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
            return Err(
                ErrorKind::InvalidConfig("diagnostics: Sampled(n) needs n >= 1".into()).into(),
            );
        }
        if let Some(b) = self.budget {
            if b < page {
                return Err(ErrorKind::InvalidConfig(format!(
                    "budget: {b} bytes is less than one page ({page} bytes)"
                ))
                .into());
            }
        }
        if let Some(r) = self.region_size {
            if r == 0 || r % page != 0 {
                return Err(ErrorKind::InvalidConfig(format!(
                    "region_size: {r} is not a positive multiple of the page size ({page})"
                ))
                .into());
            }
            if r > MAX_REGION {
                return Err(ErrorKind::InvalidConfig(format!(
                    "region_size: {r} is larger than the maximum of {MAX_REGION} bytes"
                ))
                .into());
            }
            if let Some(b) = self.budget.filter(|&b| r > b) {
                return Err(ErrorKind::InvalidConfig(format!(
                    "region_size: {r} is larger than the budget ({b} bytes): no region could ever be mapped"
                )).into());
            }
        }
        if let Backing::File(dir) = &self.backing {
            crate::os::file::anonymous_file(dir).map_err(|e| {
                ErrorKind::InvalidConfig(format!("backing directory {}: {e}", dir.display()))
            })?;
        }
        let clock = crate::clock::Clock::new();
        static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let cache_caps = if self.thread_cache {
            SizeClasses::cache_capacities(classes.sizes(), self.budget)
        } else {
            vec![0; classes.sizes().len()]
        };
        let class_pools = classes
            .sizes()
            .iter()
            .zip(cache_caps)
            .enumerate()
            .map(|(i, (&size, cache))| {
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
        let counts = SliceCounts::new(classes.sizes());
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
            counts,
            backing: self.backing,
            huge_pages: self.huge_pages,
            prefault: self.prefault,
            closed: AtomicBool::new(false),
            next_region_id: AtomicU64::new(1),
            threads: Mutex::new(Vec::new()),
            departed: (0..n).map(|_| ClassCounters::default()).collect(),
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
