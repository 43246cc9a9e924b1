//! One size class: its regions, and the ones among them with room, oldest first.
//!
//! Two structures, both behind mutexes that the allocate/release fast path never takes:
//!
//! * `regions`, every live region of the class, keyed by region id (so in the order it was
//!   mapped). Growing inserts and retiring removes, each O(log regions): nothing is copied or
//!   scanned per region. Its lock also serialises growth, so two refills that both find no room
//!   map one region, not two. Purging, stats, `trim()` and closing walk it: they are not per
//!   allocation, and stay O(regions). A region that empties beyond the retained count is found
//!   by its id and retired on its own, without a walk (`on_emptied`).
//! * `with_room`, the regions that may have a free slice, keyed by region id (ids grow with age
//!   within a class, so the first key is the oldest region). A refill takes from the first entry
//!   and drops entries it finds full; a give-back that takes a region from full to not full (its
//!   own `fetch_sub` on the state word tells it, see `region::drop_ref`) puts it back. So a refill
//!   finds a region with room without looking at any full one, and older regions still fill
//!   first while newer ones drain and go back.
//!
//! The invariants that make that sound are written next to `ClassPool::with_room`.

use std::collections::BTreeMap;
use std::io;

use crate::clock::Clock;
use crate::region::{drop_ref, purge, PurgeMode, RegionRef, Released};
use crate::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use crate::sync::epoch::{self, Guard};
use crate::sync::Mutex;

/// What a class needs from its pool to grow: a new region of the class, mapped under the
/// pool's budget with the pool as its owner. Called under the class lock, before any slice of
/// the region is handed out, so the pool tells its region observers there (`crate::observer`).
pub(crate) trait MapRegion {
    /// Maps a region of `class` (budget first).
    fn map_region(&self, class: &ClassPool) -> Result<RegionRef, Shortage>;
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
    /// How long the class keeps surplus empty regions after it mapped a region, or took a slice
    /// from an empty region while it kept a surplus (see `on_emptied`).
    grace_ns: u64,
    /// When the grace period last started ends (the pool clock's nanoseconds).
    grace_until_ns: AtomicU64,
    clock: Clock,
    /// Every live region of the class, by region id (oldest first). Its lock serialises growth
    /// and retirement and is never taken on the fast path nor by a refill that finds room. A
    /// region leaves it only after it was retired (its state word refuses new takers).
    regions: Mutex<BTreeMap<u64, RegionRef>>,
    /// The regions that may have room, by region id (oldest first).
    ///
    /// # Invariants (under this lock)
    ///
    /// * Every entry is a live, linked region of this class: an entry is inserted only after
    ///   checking, under this lock, that the region is not retired, and a retirer removes the
    ///   regions it retired, under this lock, before it drops its reference (so before any of
    ///   them can be destroyed). A pointer read from here under the lock may be dereferenced.
    /// * Every linked, non-retired region with a free slice is an entry, or a give-back that took
    ///   it from full to not full is on its way to insert it. A region becomes not full only by a
    ///   give-back's `fetch_sub` from exactly `slices` (inserts afterwards, under this lock) or
    ///   by being mapped (`grow` inserts it); an entry is removed only when the remover saw the
    ///   region full (or retired) under this lock, and any later step out of full is a
    ///   `fetch_sub` whose insert, needing this lock, comes after the removal.
    ///
    /// Lock order: `regions` before `with_room`; nothing else is taken while holding it but the
    /// atomics of one region.
    with_room: Mutex<BTreeMap<u64, RegionRef>>,
    /// Regions a refill looked at (unit tests check that a refill does not scan).
    #[cfg(test)]
    pub(crate) visited: AtomicU64,
    /// Regions a search for empty regions to retire looked at (unit tests check that a region
    /// emptied beyond the retained count is retired without one).
    #[cfg(test)]
    pub(crate) retire_visited: AtomicU64,
    /// Regions whose state word is exactly 0 (live, nothing out). Updated after the transition
    /// it counts, so it can be off by the transitions in flight (even negative for a moment); it
    /// only steers when to retire, and retiring re-checks the state word itself.
    empty_regions: AtomicIsize,
    pub(crate) regions_mapped: AtomicU64,
    pub(crate) regions_unmapped: AtomicU64,
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
            grace_until_ns: AtomicU64::new(0),
            clock,
            regions: Mutex::new(BTreeMap::new()),
            with_room: Mutex::new(BTreeMap::new()),
            #[cfg(test)]
            visited: AtomicU64::new(0),
            #[cfg(test)]
            retire_visited: AtomicU64::new(0),
            empty_regions: AtomicIsize::new(0),
            regions_mapped: AtomicU64::new(0),
            regions_unmapped: AtomicU64::new(0),
        }
    }

    /// A copy of the region list. Each region in it was linked after `_guard` was pinned, so
    /// its metadata stays readable while the guard is (invariant 4 of `docs/design.md`), even if
    /// it is retired meanwhile.
    fn list_copy(&self, _guard: &Guard) -> Vec<RegionRef> {
        self.regions.lock().values().copied().collect()
    }

    /// Takes up to `out.len()` slices from one region, mapping a new region if none has room.
    pub(crate) fn take(
        &self,
        pool: &impl MapRegion,
        out: &mut [usize],
        guard: &Guard,
    ) -> Result<(RegionRef, usize), Shortage> {
        if let Some(got) = self.take_existing(out, guard) {
            return Ok(got);
        }
        self.grow(pool, out, guard)
    }

    /// Takes from the oldest region with room, dropping the full ones it meets from
    /// `with_room`. Never looks at a region that was full when the refill before saw it.
    fn take_existing(&self, out: &mut [usize], _guard: &Guard) -> Option<(RegionRef, usize)> {
        let mut room = self.with_room.lock();
        while let Some((&id, &r)) = room.first_key_value() {
            #[cfg(test)]
            self.visited.fetch_add(1, Ordering::Relaxed);
            // SAFETY: an entry of `with_room`, read under its lock, is live (its invariants).
            let region = unsafe { r.get() };
            let (n, was_empty) = region.take(out);
            // Full now (or retired, which `with_room` never holds): the next give-back that
            // frees a slice of it puts it back, after we release the lock.
            if n == 0 || region.in_use() >= region.slices() {
                room.remove(&id);
            }
            if n > 0 {
                if was_empty {
                    let before = self.empty_regions.fetch_sub(1, Ordering::Relaxed);
                    // Demand came back while the class kept more empty regions than it retains:
                    // its demand swings, so the grace period starts again. (A class whose
                    // demand rises and falls with every batch, as a pipeline's does, would
                    // otherwise unmap its surplus at the first fall after the grace period and
                    // map it again at the next rise, all its pages faulting in again.) Only
                    // then: a refill that takes the one empty region the class retains reads no
                    // clock (with one-slice regions every refill takes an empty region, and
                    // reads the clock only while others are empty too).
                    if before > self.retain() {
                        self.start_grace();
                    }
                }
                return Some((r, n));
            }
        }
        None
    }

    /// A give-back took `region` from full to not full (`region::drop_ref`): list it as having
    /// room again, unless it was retired meanwhile.
    ///
    /// # Safety
    ///
    /// * `region` is a region of this class that the caller's pinned guard keeps readable (the
    ///   caller held a reference on it when it was pinned).
    pub(crate) unsafe fn on_room(&self, region: RegionRef) {
        let mut room = self.with_room.lock();
        // SAFETY: forwarded from the caller.
        let r = unsafe { region.get() };
        // Checked under the lock: a retirer sets `RETIRED` before it takes this lock to remove
        // what it retired, so either we see the bit, or our insert comes first and it removes it.
        if !r.is_retired() {
            room.insert(r.id, region);
        }
    }

    fn grow(
        &self,
        pool: &impl MapRegion,
        out: &mut [usize],
        guard: &Guard,
    ) -> Result<(RegionRef, usize), Shortage> {
        let mut list = self.regions.lock();
        // Another thread may have grown the class while we waited.
        if let Some(got) = self.take_existing(out, guard) {
            return Ok(got);
        }
        // Observers learn of the region (in `map_region`) before any slice of it is handed out.
        let region = pool.map_region(self)?;
        // SAFETY: the region was just made and is not shared yet; it lives until destroyed.
        let fresh = unsafe { region.get() };
        let (n, _) = fresh.take(out);
        debug_assert!(n > 0);
        // O(log regions): the list is not copied.
        list.insert(fresh.id, region);
        // Nobody else holds a slice of it yet, so no give-back can race this.
        if fresh.in_use() < fresh.slices() {
            self.with_room.lock().insert(fresh.id, region);
        }
        self.regions_mapped.fetch_add(1, Ordering::Relaxed);
        self.start_grace();
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

    /// Starts the grace period now (a region was mapped, or demand came back to a surplus).
    fn start_grace(&self) {
        self.grace_until_ns.store(
            self.clock.now_ns().saturating_add(self.grace_ns),
            Ordering::Relaxed,
        );
    }

    /// Whether the grace period runs now (it keeps a surplus of empty regions mapped).
    pub(crate) fn in_grace(&self) -> bool {
        self.clock.now_ns() < self.grace_until_ns.load(Ordering::Relaxed)
    }

    /// How many empty regions the class keeps mapped, as the signed count compares it.
    fn retain(&self) -> isize {
        self.retain_empty.min(isize::MAX as usize) as isize
    }

    /// Called by whoever moved `region`'s count to zero. When the class keeps more empty regions
    /// than it retains, unmaps the surplus, unless the grace period runs: the class mapped a
    /// region, or took a slice from an empty region while it kept a surplus, within the last
    /// `grace`. A flow whose demand swings (slices allocated on one thread, released on another;
    /// a pipeline whose buffers all come back at the end of each batch) keeps a varying number
    /// of regions briefly empty, and unmapping each one would map a new one moments later.
    ///
    /// The region that just emptied goes first, found by its id (O(log regions), no walk): in the
    /// steady state that is the whole surplus. Only a surplus left from the grace period (regions
    /// that emptied while it ran) is looked for among the others, newest first.
    ///
    /// # Safety
    ///
    /// * `region` is a region of this class that the caller's pinned `guard` keeps readable (the
    ///   caller held a reference on it when it was pinned).
    pub(crate) unsafe fn on_emptied(&self, region: RegionRef, guard: &Guard) {
        let empty = self.empty_regions.fetch_add(1, Ordering::Relaxed) + 1;
        let retain = self.retain();
        if empty <= retain {
            return;
        }
        if self.in_grace() {
            return;
        }
        // SAFETY: forwarded from the caller.
        let gone = unsafe { self.retire_one(region, guard) };
        // A surplus beyond this region: regions that emptied during the grace period, or, if
        // this one was taken again meanwhile, whatever surplus there is now. (A surplus of one
        // that an emptier on another thread is about to retire is not looked for: that thread
        // retires its own region.)
        let rest = self.empty_regions.load(Ordering::Relaxed) - retain;
        if rest > 0 && (empty - retain > 1 || !gone) {
            self.retire_empty(rest as usize, guard);
        }
    }

    /// Retires and unmaps `region` if it is still linked and empty; returns whether it did.
    ///
    /// # Safety
    ///
    /// As for [`on_emptied`](Self::on_emptied).
    unsafe fn retire_one(&self, region: RegionRef, guard: &Guard) -> bool {
        // SAFETY: the caller's pin keeps the metadata readable, linked or not.
        let id = unsafe { region.get() }.id;
        let list = self.regions.lock();
        if list.get(&id) != Some(&region) {
            // Retired and unlinked already (by a trim, a close, or another emptier's search).
            return false;
        }
        // SAFETY: linked, and the list cannot change while we hold its lock.
        let r = unsafe { region.get() };
        if !r.try_retire_empty() {
            return false;
        }
        self.retired(r);
        self.unlink_and_drop(list, vec![region], guard);
        true
    }

    /// Retires and unmaps up to `limit` empty regions, newest first; returns the bytes unmapped.
    /// Looks at the regions from the newest until it found them: `trim()` and a surplus left from
    /// the grace period, not a release in the steady state, which [`on_emptied`](Self::on_emptied)
    /// serves without it.
    pub(crate) fn retire_empty(&self, limit: usize, guard: &Guard) -> usize {
        let mut retired = Vec::new();
        let list = self.regions.lock();
        for &r in list.values().rev() {
            if retired.len() >= limit {
                break;
            }
            #[cfg(test)]
            self.retire_visited.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `r` is in the list, which cannot change while we hold the lock.
            let region = unsafe { r.get() };
            if region.try_retire_empty() {
                self.retired(region);
                retired.push(r);
            }
        }
        if retired.is_empty() {
            return 0;
        }
        self.unlink_and_drop(list, retired, guard)
    }

    /// Counts a region this class just retired (`try_retire_empty` succeeded).
    fn retired(&self, region: &crate::region::Region) {
        self.empty_regions.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            target: "segpool",
            region = region.id,
            class = self.size,
            bytes = region.len(),
            "region retired"
        );
    }

    /// Unlinks regions this class retired (each holding the retirer's reference, taken by
    /// `try_retire_empty`) from both lists, releases the class lock, then drops the references,
    /// which unmaps them; returns the bytes unmapped.
    fn unlink_and_drop(
        &self,
        mut list: crate::sync::MutexGuard<'_, BTreeMap<u64, RegionRef>>,
        retired: Vec<RegionRef>,
        guard: &Guard,
    ) -> usize {
        {
            // Before the references are dropped below (see `with_room`).
            let mut room = self.with_room.lock();
            for &r in &retired {
                // SAFETY: we hold the retirer's reference.
                let id = unsafe { r.get() }.id;
                room.remove(&id);
                list.remove(&id);
            }
        }
        drop(list);
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
        for r in self.list_copy(guard) {
            // SAFETY: `r` was in the list after `guard` was pinned (`list_copy`).
            let done = unsafe { purge(r, mode, guard) };
            bytes += done.bytes;
            if done.was_empty {
                self.empty_regions.fetch_sub(1, Ordering::Relaxed);
            }
            if done.outcome == Some(Released::Emptied) {
                // SAFETY: `r` was in the list after `guard` was pinned (`list_copy`).
                unsafe { self.on_emptied(r, guard) };
            }
        }
        self.retire_expired_surplus(guard);
        bytes
    }

    /// Unmaps the empty regions beyond the retained count once the grace period is over. An
    /// emptying unmaps the surplus itself when the grace period is over (`on_emptied`); this
    /// serves the regions that emptied while it ran and were not touched again, which would
    /// otherwise stay mapped until `trim()`. Every decay pass calls it (through `purge`): a
    /// load of the count and, with a surplus, of the clock.
    fn retire_expired_surplus(&self, guard: &Guard) {
        let surplus = self.empty_regions.load(Ordering::Relaxed) - self.retain();
        if surplus > 0 && !self.in_grace() {
            self.retire_empty(surplus as usize, guard);
        }
    }

    /// Retires every region (the pool is closing). Regions with slices out are destroyed by the
    /// last give-back.
    pub(crate) fn close(&self, guard: &Guard) {
        let all = {
            let mut list = self.regions.lock();
            let all: Vec<RegionRef> = std::mem::take(&mut *list).into_values().collect();
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
            // After the retires (an insert checks `RETIRED` under this lock) and before the
            // references are dropped below (see `with_room`).
            self.with_room.lock().clear();
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
    #[cfg_attr(not(any(feature = "io-uring", all(loom, test))), allow(dead_code))]
    pub(crate) fn for_each_listed<E>(
        &self,
        mut f: impl FnMut(&crate::region::Region) -> Result<(), E>,
    ) -> Result<(), E> {
        let list = self.regions.lock();
        for &r in list.values() {
            // SAFETY: `r` is in the list, which cannot change while we hold its lock (the class
            // lock: growth and retirement take it), so it is alive.
            f(unsafe { r.get() })?;
        }
        Ok(())
    }

    /// Checks, with nothing in flight, that every linked region with a free slice is listed in
    /// `with_room` and that every entry there is linked and not retired.
    #[cfg(all(test, not(shuttle)))]
    pub(crate) fn check_with_room(&self) {
        let list = self.regions.lock();
        let room = self.with_room.lock();
        for &r in list.values() {
            // SAFETY: linked, and the list cannot change while we hold its lock.
            let region = unsafe { r.get() };
            if region.in_use() < region.slices() {
                assert!(
                    room.contains_key(&region.id),
                    "a region with room is not listed"
                );
            }
        }
        for (id, r) in room.iter() {
            assert_eq!(list.get(id), Some(r), "a listed region {id} is not linked");
            // SAFETY: linked (checked above) while we hold the list's lock.
            let region = unsafe { r.get() };
            assert!(!region.is_retired(), "a listed region is retired");
        }
    }

    /// Ends the grace period now (tests of what happens after it).
    #[cfg(all(test, not(loom), not(shuttle)))]
    pub(crate) fn end_grace(&self) {
        self.grace_until_ns.store(0, Ordering::Relaxed);
    }

    /// Counts over the live regions (a snapshot), with `mincore` for the resident bytes.
    pub(crate) fn snapshot(&self) -> ClassSnapshot {
        self.snapshot_pinned(&epoch::pin())
    }

    fn snapshot_pinned(&self, guard: &Guard) -> ClassSnapshot {
        let mut s = ClassSnapshot::default();
        for r in self.list_copy(guard) {
            // SAFETY: `r` was in the list after `guard` was pinned (`list_copy`).
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
