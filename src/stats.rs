//! What a pool reports about itself.
//!
//! Three byte counts describe a pool's memory, from the outside in:
//!
//! * **mapped**: address space the pool has `mmap`'d (regions, used or not, and dedicated
//!   mappings). This is what the budget bounds. It costs address space and, for file backing,
//!   disk blocks; it costs RAM only where it is resident.
//! * **resident**: the part of the regions that occupies RAM right now (`mincore`). Pages a
//!   segment never touched are not resident; pages a released segment touched stay resident
//!   until their region is unmapped.
//! * **in use**: bytes of segments the user holds right now. Free slices (on the regions' free
//!   lists, or parked in thread caches) are mapped but not in use.

use std::fmt;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a pool's memory, taken by [`SegmentPool::stats`](crate::SegmentPool::stats).
///
/// Counts are read one after another while other threads may allocate and release, so they are
/// exact only when the pool is quiet; each one is exact for its own moment. "Since the pool was
/// built" counts only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolStats {
    /// Bytes the pool has mapped right now: every region (used or not) plus every dedicated
    /// mapping. This is what the pool counts against its budget (on a shared budget, other pools
    /// and reservations count beside it: see `Budget::used`). Under `Diagnostics::Full` it
    /// includes the guard pages.
    pub mapped_bytes: usize,
    /// Bytes of the pool's regions that are resident in RAM right now, measured with `mincore(2)`
    /// over every live region when the snapshot is taken (dedicated mappings not included). Never
    /// more than the regions' share of `mapped_bytes`.
    pub resident_bytes: usize,
    /// Bytes of segments the user holds right now: the size of every live segment (its class size,
    /// or its page-rounded size for a dedicated mapping). Slices in thread caches are not in use.
    pub in_use_bytes: usize,
    /// Bytes of free slices parked in per-thread caches (free, but not available to other
    /// threads until given back; `trim()` makes them go back).
    pub cached_bytes: usize,
    /// The limit of the pool's budget in bytes (its own, or the shared one), if it has one.
    pub budget_bytes: Option<usize>,
    /// The highest number of bytes that were out of the regions' free lists at once: live
    /// segments, dedicated mappings, and slices held in thread caches. It is an upper bound of the
    /// peak of `in_use_bytes` (higher by at most what thread caches held at that moment, plus
    /// what threads had given back to the regions but not counted yet: at most four caches'
    /// worth per thread and class). Each time it moves it is clamped to what the pool had mapped
    /// at that moment, so it never exceeds `peak_mapped_bytes` (nor the budget).
    pub peak_in_use_bytes: usize,
    /// The highest `mapped_bytes` ever reached (exact).
    pub peak_mapped_bytes: usize,
    /// Segments handed out since the pool was built (every class, and dedicated mappings).
    pub allocations: u64,
    /// Segments released since the pool was built (every class, and dedicated mappings).
    /// `allocations - releases` is the number of live segments.
    pub releases: u64,
    /// Regions mapped right now (all classes; dedicated mappings not included).
    pub regions: usize,
    /// Regions mapped since the pool was built.
    pub regions_mapped: u64,
    /// Regions unmapped since the pool was built (by `trim()`, by the empty-region bound, or by
    /// budget pressure).
    pub regions_unmapped: u64,
    /// Bytes of free slices whose pages were given back to the OS inside regions that stayed
    /// mapped, since the pool was built (by `trim()` and by the decay purger). A slice counts
    /// each time it is purged.
    pub purged_bytes: u64,
    /// Live segments served by a dedicated mapping (requests above the largest class).
    pub dedicated_segments: usize,
    /// Bytes mapped for those dedicated segments (included in `mapped_bytes` and `in_use_bytes`).
    pub dedicated_bytes: usize,
    /// Allocations queued for room under the pool's budget right now: waiting in
    /// `allocate_timeout` or `allocate_async`, or running a pressure callback inside `allocate`
    /// (on a shared budget, those of every pool on it).
    pub budget_waiters: usize,
    /// Writes after release detected since the pool was built: slices handed out again whose
    /// poison pattern was damaged. Only `Diagnostics::Full` checks; otherwise always 0.
    pub write_after_release: u64,
    /// One entry per size class, smallest first.
    pub classes: Vec<ClassStats>,
}

/// The pool's byte counts from its counters alone, taken by
/// [`SegmentPool::usage`](crate::SegmentPool::usage): what a server polls to see how close it is
/// to its budget. Each field means what the field of the same name in [`PoolStats`] means.
///
/// A [`PoolStats`] snapshot walks every region of every class and asks `mincore(2)` about each
/// (for the resident bytes and the per-class free slices), so its cost grows with what the pool
/// has mapped; `usage()` makes no system call, allocates nothing and visits no region: its cost
/// is one pass over the classes for each live thread that has used the pool, whatever the pool
/// holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolUsage {
    /// Bytes the pool has mapped right now (what it counts against its budget).
    pub mapped_bytes: usize,
    /// Bytes of segments the user holds right now (dedicated mappings included).
    pub in_use_bytes: usize,
    /// Bytes of free slices parked in per-thread caches.
    pub cached_bytes: usize,
    /// Bytes mapped for live segments above the largest class (included in `mapped_bytes` and
    /// `in_use_bytes`).
    pub dedicated_bytes: usize,
    /// Live segments above the largest class.
    pub dedicated_segments: usize,
    /// The limit of the pool's budget in bytes (its own, or the shared one), if it has one.
    pub budget_bytes: Option<usize>,
    /// Allocations queued for room under the pool's budget right now.
    pub budget_waiters: usize,
}

impl fmt::Display for PoolUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let budget = self.budget_bytes.map_or_else(|| "none".to_string(), mib);
        write!(
            f,
            "mapped {}, in use {} (dedicated {}), cached {}, budget {} ({} waiting)",
            mib(self.mapped_bytes),
            mib(self.in_use_bytes),
            mib(self.dedicated_bytes),
            mib(self.cached_bytes),
            budget,
            self.budget_waiters
        )
    }
}

/// The counts of one size class. Slices are `size` bytes each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClassStats {
    /// The slice size of this class in bytes.
    pub size: usize,
    /// Slices held by the user as live segments.
    pub in_use: usize,
    /// The highest number of slices of this class that were out of the regions' free lists at
    /// once since the pool was built: live segments plus slices parked in thread caches (so an
    /// upper bound of the peak of `in_use`; thread caches count what they give back late, by at
    /// most four caches' worth per thread, which can only make it higher). Each time it moves it
    /// is clamped to the slices the class's regions had at that moment, so it never exceeds the
    /// slices that existed.
    pub peak_in_use: usize,
    /// Slices on the regions' free lists, available to any thread.
    pub free: usize,
    /// Free slices parked in per-thread caches.
    pub cached: usize,
    /// Regions of this class mapped right now.
    pub regions: usize,
    /// Bytes of those regions (including guard pages under `Diagnostics::Full`).
    pub mapped_bytes: usize,
    /// Bytes of those regions resident in RAM right now (`mincore`).
    pub resident_bytes: usize,
    /// Segments of this class handed out since the pool was built.
    pub allocations: u64,
    /// Segments of this class released since the pool was built.
    pub releases: u64,
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let budget = self.budget_bytes.map_or_else(|| "none".to_string(), mib);
        writeln!(
            f,
            "mapped {} (peak {}), resident {}, in use {} (peak {}), cached {}, budget {}",
            mib(self.mapped_bytes),
            mib(self.peak_mapped_bytes),
            mib(self.resident_bytes),
            mib(self.in_use_bytes),
            mib(self.peak_in_use_bytes),
            mib(self.cached_bytes),
            budget
        )?;
        writeln!(
            f,
            "regions {} live, {} mapped, {} unmapped; dedicated {} segments, {}",
            self.regions,
            self.regions_mapped,
            self.regions_unmapped,
            self.dedicated_segments,
            mib(self.dedicated_bytes)
        )?;
        writeln!(
            f,
            "allocations {}, releases {}, writes after release {}, purged {}",
            self.allocations,
            self.releases,
            self.write_after_release,
            mib(self.purged_bytes as usize)
        )?;
        writeln!(
            f,
            "{:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>12} {:>12} {:>12} {:>12}",
            "class",
            "in use",
            "peak",
            "free",
            "cached",
            "regions",
            "mapped",
            "resident",
            "allocations",
            "releases"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>12} {:>12} {:>12} {:>12}",
                size_label(c.size),
                c.in_use,
                c.peak_in_use,
                c.free,
                c.cached,
                c.regions,
                mib(c.mapped_bytes),
                mib(c.resident_bytes),
                c.allocations,
                c.releases
            )?;
        }
        Ok(())
    }
}

/// A count that goes up and down, with the highest value it reached. Written by the slow paths
/// of every thread (one batch at a time), so it sits on its own 128-byte block: its writes never
/// take a line that the fast paths read (the size-class table, a class's region list) from
/// another core.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct PeakCounter {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl PeakCounter {
    /// Adds `n`; moves the peak if this passed it (no write to the peak otherwise).
    pub(crate) fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Adds `n`; moves the peak to the new count, but to no more than `cap` (what exists: the
    /// count may be high while give-backs are counted late, and a peak above what exists would
    /// be a figure that cannot be true).
    pub(crate) fn add_capped(&self, n: usize, cap: usize) {
        let now = (self.now.fetch_add(n, Ordering::Relaxed) + n).min(cap);
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn sub(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn now(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Allocation and release counts of one class. In a thread's [`ClassCache`] only that thread
/// writes them (a load and a store); in a pool's `departed` counts, any thread adds to them with
/// read-modify-writes.
#[derive(Debug, Default)]
pub(crate) struct ClassCounters {
    pub(crate) allocations: AtomicU64,
    pub(crate) releases: AtomicU64,
    /// Slices that entered the cache on slow paths minus slices that left it on slow paths
    /// (wrapping; see `crate::pool::thread_cache`).
    pub(crate) adjust: AtomicU64,
}

impl ClassCounters {
    /// Slices in the cache, as far as a reader on another thread can tell (exact when the owner is
    /// quiet; for the owner, the cache's length).
    pub(crate) fn cached(&self) -> usize {
        let r = self.releases.load(Ordering::Relaxed);
        let a = self.allocations.load(Ordering::Relaxed);
        let adj = self.adjust.load(Ordering::Relaxed);
        let v = r.wrapping_sub(a).wrapping_add(adj) as i64;
        v.max(0) as usize
    }
}
