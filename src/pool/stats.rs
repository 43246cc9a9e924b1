//! What a pool reports about itself: [`PoolStats`], [`PoolUsage`] and the leak report, all from
//! one fold of the per-thread counts ([`class_total`]).

use super::thread_cache::ClassCache;
use super::{PoolShared, SegmentPool};
use crate::diagnostics::{Diagnostics, LeakReport};
use crate::stats::{ClassStats, PoolStats, PoolUsage};
use crate::sync::atomic::Ordering;
use crate::sync::Arc;

/// One class's counts, summed over the threads that have left and the pool's thread caches.
#[derive(Debug, Default, Clone, Copy)]
struct ClassTotals {
    /// Allocations served since the pool was built (wrapping).
    allocations: u64,
    /// Releases since the pool was built (wrapping).
    releases: u64,
    /// Slices in the thread caches right now.
    cached: usize,
}

impl ClassTotals {
    /// Segments of the class the user holds right now (allocations minus releases, never below
    /// zero): [`ClassStats::in_use`](crate::ClassStats::in_use).
    fn outstanding(&self) -> usize {
        (self.allocations.wrapping_sub(self.releases) as i64).max(0) as usize
    }
}

/// The counts of class `class` of `shared`: those of the threads that have left plus those of
/// each live thread's cache in `threads`, the pool's registry of thread caches. The caller holds
/// the registry's lock: an exiting thread moves its counts from its cache to `departed` under it,
/// so reading `departed` outside it could miss them both (or count them twice).
fn class_total(shared: &PoolShared, threads: &[Arc<[ClassCache]>], class: usize) -> ClassTotals {
    let d = &shared.departed[class];
    let mut s = ClassTotals {
        allocations: d.allocations.load(Ordering::Relaxed),
        releases: d.releases.load(Ordering::Relaxed),
        cached: 0,
    };
    for t in threads {
        let c = &t[class].counters;
        s.allocations = s
            .allocations
            .wrapping_add(c.allocations.load(Ordering::Relaxed));
        s.releases = s.releases.wrapping_add(c.releases.load(Ordering::Relaxed));
        s.cached += c.cached();
    }
    s
}

/// The per-class counts of `shared`, one entry per class (see [`class_total`]).
fn class_totals(shared: &PoolShared) -> Vec<ClassTotals> {
    let threads = shared.threads.lock();
    (0..shared.classes.len())
        .map(|class| class_total(shared, &threads, class))
        .collect()
}

impl SegmentPool {
    /// The segments still out, with where each was allocated when that was recorded (see
    /// [`Diagnostics`]). Under `Off` the report only counts them.
    pub fn leaks(&self) -> LeakReport {
        leaks(self.shared())
    }

    /// A snapshot of the pool's counts; `Display` prints it as a table.
    ///
    /// It visits every region of every class, and asks `mincore(2)` about each for its resident
    /// bytes: its cost grows with the regions mapped (`segpool bench --only growth` measures it
    /// from 1 to 50,000 regions). To poll the byte counts, use [`usage`](Self::usage), whose cost
    /// does not depend on what the pool holds.
    pub fn stats(&self) -> PoolStats {
        let shared = self.shared();
        let mut classes: Vec<ClassStats> = shared
            .classes
            .iter()
            .zip(class_totals(shared))
            .map(|(c, t)| ClassStats {
                size: c.size,
                allocations: t.allocations,
                releases: t.releases,
                cached: t.cached,
                in_use: t.outstanding(),
                ..ClassStats::default()
            })
            .collect();
        // The peaks only grow, and each out-of-free-list peak was clamped to what was mapped
        // when it was recorded: read them first, so none of them exceeds the mapped peak read
        // after.
        let peak_in_use_bytes = shared.counts.out_bytes.peak();
        let class_peaks: Vec<usize> = shared.counts.classes.iter().map(|c| c.out.peak()).collect();
        let mut stats = PoolStats {
            budget_bytes: shared.budget.limit_opt(),
            peak_in_use_bytes,
            peak_mapped_bytes: shared.counts.mapped.peak(),
            mapped_bytes: shared.counts.mapped.now(),
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

    /// The pool's byte counts (in use, cached, mapped, dedicated, the budget) from its counters
    /// alone: no system call, no allocation, no region visited, so it costs the same at one
    /// region as at 50,000 (one pass over the classes for each live thread that has used the
    /// pool). The figures are those [`stats`](Self::stats) reports under the same names; like
    /// them, they are exact when the pool is quiet.
    ///
    /// ```
    /// # fn main() -> segpool::Result<()> {
    /// let pool = segpool::SegmentPool::builder().budget(64 << 20).build()?;
    /// let seg = pool.allocate(10_000)?; // a 16 KiB slice
    /// let u = pool.usage();
    /// assert_eq!(u.in_use_bytes, 16 << 10);
    /// // Shed load before the budget refuses anything.
    /// let nearly_full = u.mapped_bytes > u.budget_bytes.unwrap() / 10 * 9;
    /// assert!(!nearly_full);
    /// # drop(seg);
    /// # Ok(())
    /// # }
    /// ```
    pub fn usage(&self) -> PoolUsage {
        let shared = self.shared();
        let (mut in_use_bytes, mut cached_bytes) = (0, 0);
        {
            let threads = shared.threads.lock();
            for (class, c) in shared.classes.iter().enumerate() {
                let t = class_total(shared, &threads, class);
                in_use_bytes += t.outstanding() * c.size;
                cached_bytes += t.cached * c.size;
            }
        }
        let dedicated_bytes = shared.dedicated_bytes.load(Ordering::Relaxed);
        PoolUsage {
            mapped_bytes: shared.counts.mapped.now(),
            in_use_bytes: in_use_bytes + dedicated_bytes,
            cached_bytes,
            dedicated_bytes,
            dedicated_segments: shared.dedicated_segments.load(Ordering::Relaxed),
            budget_bytes: shared.budget.limit_opt(),
            budget_waiters: shared.budget.waiters(),
        }
    }
}

/// The leak report of a pool: every live segment counted, the recorded ones listed.
pub(super) fn leaks(shared: &PoolShared) -> LeakReport {
    let outstanding = shared.dedicated_segments.load(Ordering::Relaxed)
        + class_totals(shared)
            .iter()
            .map(ClassTotals::outstanding)
            .sum::<usize>();
    LeakReport {
        level: shared.diag.as_ref().map_or(Diagnostics::Off, |d| d.level()),
        outstanding,
        segments: shared
            .diag
            .as_ref()
            .map_or_else(Vec::new, |d| d.leaks(|c| shared.classes[c].size)),
    }
}
