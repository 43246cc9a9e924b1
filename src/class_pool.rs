//! One size class: its regions, in a list readers traverse without a lock.
//!
//! The list is copy-on-write: readers pin an epoch and load it; writers (growing by a region,
//! retiring regions) hold the class lock, publish a new list, and defer the free of the old one.
//! A region leaves the list only after it was retired (its state word refuses new takers), and its
//! metadata is freed only after a grace period, so a reader that loaded it just before the unlink
//! can still CAS its state word safely.

use std::io;

use crate::os::Mapping;
use crate::pool::PoolShared;
use crate::region::{drop_ref, purge, PurgeMode, RegionMemory, RegionRef, Released};
use crate::stats::PeakCounter;
use crate::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use crate::sync::epoch::{self, Atomic, Guard, Owned};
use crate::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct RegionList {
    regions: Vec<RegionRef>,
}

/// Nanoseconds since the pool was built (for the empty-region grace period).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Self(std::time::Instant::now())
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Why a class could not hand out a slice.
#[derive(Debug)]
pub(crate) enum Shortage {
    /// A new region would exceed the budget; `mapped` is what was mapped at that moment.
    Budget { needed: usize },
    /// The OS refused the mapping (or the file reservation).
    Map(io::Error),
}

/// The regions of one size class.
#[derive(Debug)]
pub(crate) struct ClassPool {
    pub(crate) index: u8,
    pub(crate) size: usize,
    pub(crate) region_size: usize,
    /// Distance between slice starts in this class's regions: `size`, or `size` plus a guard page
    /// under `Diagnostics::Full`. `region_size` is a whole number of strides.
    pub(crate) stride: usize,
    pub(crate) cache_capacity: usize,
    /// Empty regions kept mapped; more are unmapped when one empties (see `on_emptied`).
    retain_empty: usize,
    /// How long after mapping a region the class keeps surplus empty regions.
    grace_ns: u64,
    last_grow_ns: AtomicU64,
    clock: Clock,
    regions: Atomic<RegionList>,
    /// Serialises changes to `regions` (growth and retirement); never taken on the fast path.
    lock: Mutex<()>,
    /// Regions whose state word is exactly 0 (live, nothing out). Updated after the transition
    /// it counts, so it can be off by the transitions in flight (even negative for a moment); it
    /// only steers when to retire, and retiring re-checks the state word itself.
    empty_regions: AtomicIsize,
    pub(crate) regions_mapped: AtomicU64,
    pub(crate) regions_unmapped: AtomicU64,
    /// Slices of this class out of the regions' free lists right now (segments and cached
    /// slices), and the highest that ever was. Updated per batch, on the slow paths only.
    pub(crate) out: PeakCounter,
}

/// What [`ClassPool::snapshot`] reports.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ClassSnapshot {
    pub(crate) regions: usize,
    pub(crate) slices: usize,
    pub(crate) out: usize,
    pub(crate) mapped_bytes: usize,
    pub(crate) resident_bytes: usize,
}

/// How one class is laid out and when it gives memory back (computed by the builder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassConfig {
    pub(crate) index: u8,
    /// The slice size.
    pub(crate) size: usize,
    pub(crate) region_size: usize,
    /// Distance between slices: the size, plus a guard page under `Diagnostics::Full`.
    pub(crate) stride: usize,
    pub(crate) cache_capacity: usize,
    pub(crate) retain_empty: usize,
    pub(crate) grace: std::time::Duration,
}

impl ClassPool {
    pub(crate) fn new(config: ClassConfig, clock: Clock) -> Self {
        let ClassConfig {
            index,
            size,
            region_size,
            stride,
            cache_capacity,
            retain_empty,
            grace,
        } = config;
        debug_assert!(stride >= size && region_size % stride == 0);
        Self {
            index,
            size,
            region_size,
            stride,
            cache_capacity,
            retain_empty,
            grace_ns: u64::try_from(grace.as_nanos()).unwrap_or(u64::MAX),
            last_grow_ns: AtomicU64::new(0),
            clock,
            regions: Atomic::new(RegionList::default()),
            lock: Mutex::new(()),
            empty_regions: AtomicIsize::new(0),
            regions_mapped: AtomicU64::new(0),
            regions_unmapped: AtomicU64::new(0),
            out: PeakCounter::default(),
        }
    }

    fn list<'g>(&self, guard: &'g Guard) -> &'g [RegionRef] {
        let list = self.regions.load(Ordering::Acquire, guard);
        // SAFETY: the list is replaced only under the class lock, and the old one is freed through
        // `defer_destroy`, so it stays valid while `guard` is pinned. It is never null.
        unsafe { list.as_ref() }.map_or(&[], |l| l.regions.as_slice())
    }

    fn publish(&self, regions: Vec<RegionRef>, guard: &Guard) {
        let old = self
            .regions
            .swap(Owned::new(RegionList { regions }), Ordering::AcqRel, guard);
        // SAFETY: the old list is unreachable now; readers that loaded it are pinned.
        unsafe { guard.defer_destroy(old) };
    }

    /// Takes up to `out.len()` slices from one region, mapping a new region if none has room.
    pub(crate) fn take(
        &self,
        pool: &Arc<PoolShared>,
        out: &mut [usize],
        guard: &Guard,
    ) -> Result<(RegionRef, usize), Shortage> {
        if let Some(got) = self.take_existing(out, guard) {
            return Ok(got);
        }
        self.grow(pool, out, guard)
    }

    fn take_existing(&self, out: &mut [usize], guard: &Guard) -> Option<(RegionRef, usize)> {
        for &r in self.list(guard) {
            // SAFETY: `r` was in the list loaded under `guard`.
            let region = unsafe { r.get() };
            if region.in_use() >= region.slices() {
                continue;
            }
            let (n, was_empty) = region.take(out);
            if n > 0 {
                if was_empty {
                    self.empty_regions.fetch_sub(1, Ordering::Relaxed);
                }
                return Some((r, n));
            }
        }
        None
    }

    fn grow(
        &self,
        pool: &Arc<PoolShared>,
        out: &mut [usize],
        guard: &Guard,
    ) -> Result<(RegionRef, usize), Shortage> {
        let _g = self.lock.lock();
        // Another thread may have grown the class while we waited.
        if let Some(got) = self.take_existing(out, guard) {
            return Ok(got);
        }
        let region = PoolShared::new_region(pool, self.index, self.size, self.region_size)?;
        // Observers learn of the region before any slice of it is handed out.
        // SAFETY: the region was just made and is not shared yet; it lives until destroyed.
        pool.region_mapped(unsafe { region.get() });
        // SAFETY: as above.
        let (n, _) = unsafe { region.get() }.take(out);
        debug_assert!(n > 0);
        let mut list = self.list(guard).to_vec();
        list.push(region);
        self.publish(list, guard);
        self.regions_mapped.fetch_add(1, Ordering::Relaxed);
        self.last_grow_ns
            .store(self.clock.now_ns(), Ordering::Relaxed);
        // SAFETY: the region is in the list and we hold the class lock, without which it cannot be
        // retired, so it is alive.
        let r = unsafe { region.get() };
        tracing::debug!(
            target: "segpool",
            region = r.id,
            class = self.size,
            bytes = r.len(),
            slices = r.slices(),
            "region mapped"
        );
        Ok((region, n))
    }

    /// Called by whoever moved `region`'s count to zero. When the class keeps more empty regions than it retains, unmaps the surplus
    /// (newest first), unless the class mapped a region within the grace period: a flow whose
    /// demand swings (slices allocated on one thread, released on another) keeps a varying number
    /// of regions briefly empty, and unmapping each one would map a new one moments later.
    pub(crate) fn on_emptied(&self, guard: &Guard) {
        let empty = self.empty_regions.fetch_add(1, Ordering::Relaxed) + 1;
        let retain = self.retain_empty.min(isize::MAX as usize) as isize;
        if empty > retain {
            let since_grow = self
                .clock
                .now_ns()
                .saturating_sub(self.last_grow_ns.load(Ordering::Relaxed));
            if since_grow >= self.grace_ns {
                self.retire_empty(None, (empty - retain) as usize, guard);
            }
        }
    }

    /// Retires and unmaps up to `limit` empty regions (only `only`, if given), newest first;
    /// returns the bytes unmapped.
    pub(crate) fn retire_empty(
        &self,
        only: Option<RegionRef>,
        limit: usize,
        guard: &Guard,
    ) -> usize {
        let mut retired = Vec::new();
        {
            let _g = self.lock.lock();
            let list = self.list(guard);
            let mut keep = Vec::with_capacity(list.len());
            for &r in list.iter().rev() {
                // SAFETY: `r` is in the list, which cannot change while we hold the lock.
                let region = unsafe { r.get() };
                if retired.len() < limit && only.is_none_or(|o| o == r) && region.try_retire_empty()
                {
                    self.empty_regions.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(
                        target: "segpool",
                        region = region.id,
                        class = self.size,
                        bytes = region.len(),
                        "region retired"
                    );
                    retired.push(r);
                } else {
                    keep.push(r);
                }
            }
            if retired.is_empty() {
                return 0;
            }
            keep.reverse();
            self.publish(keep, guard);
        }
        let mut bytes = 0;
        for r in retired {
            // SAFETY: metadata is alive (we hold the retirer's reference).
            let len = unsafe { r.get() }.len();
            // SAFETY: we own the retirer's reference, taken by `try_retire_empty`, and are pinned.
            let outcome = unsafe { drop_ref(r, 1, guard) };
            debug_assert_eq!(
                outcome,
                Released::Destroyed,
                "an empty retired region has no slices out"
            );
            bytes += len;
        }
        bytes
    }

    /// Purges the free slices of every live region of the class (`region::purge`); returns the
    /// bytes discarded. A region that the purge's reservation was last out of is reported as
    /// emptied, as a give-back would.
    pub(crate) fn purge(&self, mode: PurgeMode, guard: &Guard) -> usize {
        let mut bytes = 0;
        for &r in self.list(guard) {
            // SAFETY: `r` was in the list loaded under `guard`.
            let done = unsafe { purge(r, mode, guard) };
            bytes += done.bytes;
            if done.was_empty {
                self.empty_regions.fetch_sub(1, Ordering::Relaxed);
            }
            if done.outcome == Some(Released::Emptied) {
                self.on_emptied(guard);
            }
        }
        bytes
    }

    /// Retires every region (the pool is closing). Regions with slices out are destroyed by the
    /// last give-back.
    pub(crate) fn close(&self, guard: &Guard) {
        let all = {
            let _g = self.lock.lock();
            let all = self.list(guard).to_vec();
            for &r in &all {
                // SAFETY: `r` is in the list, which cannot change while we hold the lock.
                let region = unsafe { r.get() };
                let was_empty = region.retire();
                if was_empty {
                    self.empty_regions.fetch_sub(1, Ordering::Relaxed);
                }
                tracing::debug!(
                    target: "segpool",
                    region = region.id,
                    class = self.size,
                    bytes = region.len(),
                    // Minus the retirer's own reference.
                    in_use = region.in_use().saturating_sub(1),
                    "region retired"
                );
            }
            self.publish(Vec::new(), guard);
            all
        };
        for r in all {
            // SAFETY: `retire` gave us one reference; we are pinned.
            unsafe { drop_ref(r, 1, guard) };
        }
    }

    /// Calls `f` on every region in the class list, under the class lock (so none of them is
    /// retired meanwhile); stops at the first error.
    // Used by the io_uring fixed-buffer table and the loom models only.
    #[cfg_attr(not(any(feature = "io-uring", loom)), allow(dead_code))]
    pub(crate) fn for_each_listed<E>(
        &self,
        mut f: impl FnMut(&crate::region::Region) -> Result<(), E>,
    ) -> Result<(), E> {
        let _g = self.lock.lock();
        let guard = epoch::pin();
        for &r in self.list(&guard) {
            // SAFETY: `r` is in the list, which cannot change while we hold the lock.
            f(unsafe { r.get() })?;
        }
        Ok(())
    }

    /// Counts over the live regions (a snapshot), with `mincore` for the resident bytes.
    pub(crate) fn snapshot(&self) -> ClassSnapshot {
        self.snapshot_pinned(&epoch::pin())
    }

    fn snapshot_pinned(&self, guard: &Guard) -> ClassSnapshot {
        let mut s = ClassSnapshot::default();
        for &r in self.list(guard) {
            // SAFETY: `r` was in the list loaded under `guard`.
            let region = unsafe { r.get() };
            s.regions += 1;
            s.slices += region.slices();
            s.out += region.in_use();
            s.mapped_bytes += region.len();
            s.resident_bytes += region.resident_bytes();
        }
        s
    }
}

impl Drop for ClassPool {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no other thread can reach the list any more.
        let list = unsafe { self.regions.load(Ordering::Relaxed, epoch::unprotected()) };
        if !list.is_null() {
            // SAFETY: as above; every region was destroyed before the pool's shared state could
            // be dropped (each region holds an `Arc` to it), so only the list itself remains.
            drop(unsafe { list.into_owned() });
        }
    }
}

/// Makes the memory of a region or dedicated mapping for the given backing.
pub(crate) fn map_memory(
    backing: &crate::pool::Backing,
    len: usize,
    huge_pages: bool,
    prefault: bool,
) -> io::Result<RegionMemory> {
    use crate::os::{file, Protection, Sharing};
    const HUGE: usize = 2 << 20;
    match backing {
        crate::pool::Backing::Anonymous => {
            let huge = huge_pages && len >= HUGE;
            let mapping = Mapping::anonymous(len, if huge { HUGE } else { 4096 })?;
            if huge {
                mapping.advise_huge_pages();
            }
            if prefault {
                mapping.populate_write()?;
            }
            Ok(RegionMemory {
                mapping,
                file_backed: false,
            })
        }
        crate::pool::Backing::File(dir) => {
            let f = file::anonymous_file(dir)?;
            file::reserve(&f, 0, len as u64)?;
            let mapping = Mapping::file(&f, 0, len, Protection::ReadWrite, Sharing::Shared, false)?;
            if prefault {
                mapping.populate_write()?;
            }
            // Not registered with the fault guard (see `RegionMemory`). The mapping keeps the
            // nameless file alive; the descriptor can go.
            drop(f);
            Ok(RegionMemory {
                mapping,
                file_backed: true,
            })
        }
    }
}
