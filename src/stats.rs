//! What a pool reports about itself.

use std::fmt;

/// A snapshot of a pool's memory, taken by [`SegmentPool::stats`](crate::SegmentPool::stats).
///
/// Counts are read one after another while other threads may allocate and release, so they are
/// exact only when the pool is quiet; each one is exact for its own moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Bytes the pool has mapped right now: every region (used or not) plus every dedicated
    /// mapping. This is what the budget bounds.
    pub mapped_bytes: usize,
    /// Bytes of segments the user holds right now: the size of every live segment (its class size,
    /// or its page-rounded size for a dedicated mapping).
    pub in_use_bytes: usize,
    /// Bytes of free slices parked in per-thread caches (free, but not available to other
    /// threads until given back; `trim()` makes them go back).
    pub cached_bytes: usize,
    /// The budget in bytes, if one was set.
    pub budget_bytes: Option<usize>,
    /// The highest number of bytes that were out of the regions' free lists at once: live
    /// segments, dedicated mappings, and slices held in thread caches. It is an upper bound of the
    /// peak of `in_use_bytes` (higher by at most what thread caches held at that moment).
    pub peak_in_use_bytes: usize,
    /// The highest `mapped_bytes` ever reached.
    pub peak_mapped_bytes: usize,
    /// Regions mapped right now (all classes; dedicated mappings not included).
    pub regions: usize,
    /// Regions mapped since the pool was built.
    pub regions_mapped: u64,
    /// Regions unmapped since the pool was built (by `trim()`, by the empty-region bound, or by
    /// budget pressure).
    pub regions_unmapped: u64,
    /// Live segments served by a dedicated mapping (requests above the largest class).
    pub dedicated_segments: usize,
    /// Bytes mapped for those dedicated segments (included in `mapped_bytes` and `in_use_bytes`).
    pub dedicated_bytes: usize,
    /// Regions of a file-backed pool whose file faulted (a SIGBUS was caught in them: the file
    /// was truncated behind the pool's back, or an I/O error happened at page-in). They hand out
    /// no more slices and are unmapped once their segments are released. Bytes read from such a
    /// region after the fault are zeros, not the data that was written.
    pub faulted_regions: usize,
    /// Threads blocked in `allocate_timeout` waiting for room under the budget right now.
    pub budget_waiters: usize,
    /// One entry per size class, smallest first.
    pub classes: Vec<ClassStats>,
}

/// The counts of one size class. Slices are `size` bytes each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// The slice size of this class in bytes.
    pub size: usize,
    /// Slices held by the user as live segments.
    pub in_use: usize,
    /// Slices on the regions' free lists, available to any thread.
    pub free: usize,
    /// Free slices parked in per-thread caches.
    pub cached: usize,
    /// Regions of this class mapped right now.
    pub regions: usize,
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
            "mapped {} (peak {}), in use {} (peak {}), cached {}, budget {}",
            mib(self.mapped_bytes),
            mib(self.peak_mapped_bytes),
            mib(self.in_use_bytes),
            mib(self.peak_in_use_bytes),
            mib(self.cached_bytes),
            budget
        )?;
        writeln!(
            f,
            "regions {} live, {} mapped, {} unmapped, {} faulted; dedicated {} segments, {}",
            self.regions,
            self.regions_mapped,
            self.regions_unmapped,
            self.faulted_regions,
            self.dedicated_segments,
            mib(self.dedicated_bytes)
        )?;
        writeln!(
            f,
            "{:>8} {:>9} {:>9} {:>8} {:>8} {:>12} {:>12}",
            "class", "in use", "free", "cached", "regions", "allocations", "releases"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:>8} {:>9} {:>9} {:>8} {:>8} {:>12} {:>12}",
                size_label(c.size),
                c.in_use,
                c.free,
                c.cached,
                c.regions,
                c.allocations,
                c.releases
            )?;
        }
        Ok(())
    }
}
