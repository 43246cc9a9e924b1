//! One thread's cache of one size class of one pool: its inline slots, its counters, and how
//! it gives slices back to their regions (see the module docs of `crate::pool::thread_cache`).

use std::cell::Cell;
use std::ptr::NonNull;

use crate::pool::PoolShared;
use crate::region::{give_back_uncounted, RegionRef, Released};
use crate::size_class::{CACHE_MAX_BYTES, CACHE_MAX_SLICES};
use crate::stats::ClassCounters;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{epoch, UnsafeCell};

/// Adds `n` to a single-writer counter: a load and a store, no locked instruction.
#[inline(always)]
pub(super) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A cached slice: its address (with `ZERO_TAG` when known zero) and its region.
pub(super) type Slot = (usize, RegionRef);

/// What an unused slot holds (never read as a slice).
pub(super) const NO_SLOT: Slot = (0, RegionRef(NonNull::dangling()));

/// One thread's cache of one size class of one pool.
///
/// # Invariants
///
/// * Its length is `counters.cached()` (derived, module docs), and `length <= cap <=
///   CACHE_MAX_SLICES` (`cap` is 1 for a byte-bounded class).
/// * `slots[..length]` are slices of this class of this pool, each counted in its region and
///   owned by the cache alone.
/// * Only the owning thread (whose `PoolCache` holds the array) touches `slots` or `uncounted`,
///   or writes the counters. Other threads (`stats()`, through the pool's `threads`) only load the
///   counters.
/// * `uncounted` slices were given back to their regions (their state words already dropped
///   them) but not yet subtracted from the pool's out-of-free-list counts; it is below
///   `UNCOUNTED_CACHES * cap` between calls, and zero after a full give-back.
// Aligned to two cache lines (the adjacent-line prefetcher's unit): the caches of two threads
// never share a line, whatever the allocator places next to them.
#[repr(align(128))]
pub(crate) struct ClassCache {
    pub(crate) counters: ClassCounters,
    /// The bound the fast path checks.
    pub(super) cap: usize,
    /// The class is above `CACHE_MAX_BYTES` (8 MiB and up by default) and cached: one slice
    /// (`cap` is 1; which of these classes are cached keeps the thread's total within
    /// `THREAD_LARGE_CACHE_BYTES`, see `SizeClasses::cache_capacities`). A refill takes exactly
    /// one slice, and a release that finds the slot taken goes to its region.
    pub(super) byte_bounded: bool,
    /// The class's slice size (what a segment's `len()` is).
    pub(super) size: usize,
    /// The class's index in its pool.
    pub(super) class: u8,
    /// Slices this cache gave back to their regions that the pool's out-of-free-list counts
    /// (`SliceCounts::returned`) do not show yet: at most `UNCOUNTED_CACHES * cap`. See
    /// [`ClassCache::count_returned`].
    pub(super) uncounted: Cell<usize>,
    /// Every access goes through the sync shim's cell, so the loom models see it.
    pub(super) slots: UnsafeCell<[Slot; CACHE_MAX_SLICES]>,
}

/// A thread cache tells the pool's out-of-free-list counts about the slices it gave back once
/// they add up to this many caches' worth (and whenever it gives everything back or takes a
/// batch). Those counts are two lines that every batch of every thread would otherwise write:
/// when one thread allocates and another releases, the releasing side leaves them alone for
/// several batches. The cost: the counts, and so the peaks `stats()` reports, may be higher
/// than the truth by up to this many caches' worth per thread (they stay upper bounds).
pub(crate) const UNCOUNTED_CACHES: usize = 4;

// SAFETY: shared `&ClassCache` on other threads only load the atomic counters; `slots` and
// `uncounted` are read and written by the owning thread alone (invariants above).
unsafe impl Sync for ClassCache {}

impl std::fmt::Debug for ClassCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassCache")
            .field("counters", &self.counters)
            .field("cap", &self.cap)
            .field("size", &self.size)
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

impl ClassCache {
    pub(super) fn new(class: u8, size: usize, cap: usize) -> Self {
        Self {
            counters: ClassCounters::default(),
            cap: if size > CACHE_MAX_BYTES {
                cap.min(1)
            } else {
                cap.min(CACHE_MAX_SLICES)
            },
            byte_bounded: size > CACHE_MAX_BYTES && cap > 0,
            size,
            class,
            uncounted: Cell::new(0),
            slots: UnsafeCell::new([NO_SLOT; CACHE_MAX_SLICES]),
        }
    }

    /// The owner's view of the length (and the release count it was derived from).
    #[inline(always)]
    pub(super) fn len_and_releases(&self) -> (usize, u64) {
        let c = &self.counters;
        let r = c.releases.load(Ordering::Relaxed);
        let len = r
            .wrapping_sub(c.allocations.load(Ordering::Relaxed))
            .wrapping_add(c.adjust.load(Ordering::Relaxed));
        (len as usize, r)
    }

    /// Takes the most recently cached slice.
    ///
    /// # Safety
    ///
    /// * The calling thread owns this cache.
    #[inline(always)]
    pub(super) unsafe fn pop(&self) -> Option<Slot> {
        let c = &self.counters;
        let a = c.allocations.load(Ordering::Relaxed);
        let len = c
            .releases
            .load(Ordering::Relaxed)
            .wrapping_sub(a)
            .wrapping_add(c.adjust.load(Ordering::Relaxed)) as usize;
        // One comparison covers both "empty" (wraps to usize::MAX) and the bound.
        let slot = self.slots.with(|slots| {
            // SAFETY: the caller owns the cache, so nothing writes `slots` now.
            unsafe { &*slots }.get(len.wrapping_sub(1)).copied()
        })?;
        c.allocations.store(a.wrapping_add(1), Ordering::Relaxed);
        Some(slot)
    }

    /// Caches `slot` if there is room.
    ///
    /// # Safety
    ///
    /// * The calling thread owns this cache, and `slot` is a slice of its class and pool that the
    ///   caller owns (the cache owns it after `true`).
    #[inline(always)]
    pub(super) unsafe fn push(&self, slot: Slot) -> bool {
        let (len, r) = self.len_and_releases();
        if len >= self.cap {
            return false;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.push_unchecked(len, r, slot) }
    }

    /// Caches `slot` at `len` (the caller checked the bound).
    ///
    /// # Safety
    ///
    /// * As for [`push`](Self::push); `(len, r)` is [`len_and_releases`](Self::len_and_releases)
    ///   now.
    #[inline(always)]
    pub(super) unsafe fn push_unchecked(&self, len: usize, r: u64, slot: Slot) -> bool {
        let stored = self.slots.with_mut(|slots| {
            // SAFETY: the caller owns the cache, so no other reference to `slots` exists now.
            let Some(s) = unsafe { &mut *slots }.get_mut(len) else {
                return false;
            };
            *s = slot;
            true
        });
        if !stored {
            return false;
        }
        self.counters
            .releases
            .store(r.wrapping_add(1), Ordering::Relaxed);
        true
    }

    /// Caches slices a slow path brought in from `region` (the caller checked the room).
    ///
    /// # Safety
    ///
    /// * As for [`push`](Self::push), for every address; `len + addrs.len() <= cap`.
    pub(super) unsafe fn stash(&self, addrs: &[usize], region: RegionRef) {
        let (len, _) = self.len_and_releases();
        self.slots.with_mut(|slots| {
            // SAFETY: the caller owns the cache.
            let slots = unsafe { &mut *slots };
            for (s, &a) in slots[len..len + addrs.len()].iter_mut().zip(addrs) {
                *s = (a, region);
            }
        });
        add(&self.counters.adjust, addrs.len() as u64);
    }

    /// Gives the oldest `n` cached slices back to their regions and keeps the rest.
    ///
    /// # Safety
    ///
    /// * The calling thread owns this cache; `n <=` its length.
    pub(super) unsafe fn give_back_oldest(&self, shared: &PoolShared, n: usize) {
        let (len, _) = self.len_and_releases();
        self.slots.with_mut(|slots| {
            // SAFETY: the caller owns the cache.
            let slots = unsafe { &mut *slots };
            give_back_batch(shared, &mut slots[..n]);
            slots.copy_within(n..len, 0);
        });
        add(&self.counters.adjust, (n as u64).wrapping_neg());
        // SAFETY: the caller owns the cache.
        unsafe { self.count_returned(shared, n, false) };
    }

    /// Adds `n` slices given back (uncounted) to `uncounted`, and tells the pool's counts about
    /// all of them once they reach the bound (`UNCOUNTED_CACHES` caches' worth), or now with
    /// `now`.
    ///
    /// # Safety
    ///
    /// * The calling thread owns this cache.
    pub(super) unsafe fn count_returned(&self, shared: &PoolShared, n: usize, now: bool) {
        let pending = self.uncounted.get() + n;
        if now || pending >= UNCOUNTED_CACHES * self.cap {
            if pending > 0 {
                shared.counts.returned(self.class, pending * self.size);
            }
            self.uncounted.set(0);
        } else {
            self.uncounted.set(pending);
        }
    }

    /// Gives every cached slice back, and counts every slice given back.
    ///
    /// # Safety
    ///
    /// * The calling thread owns this cache.
    pub(super) unsafe fn give_back_all(&self, shared: &PoolShared) {
        let (len, _) = self.len_and_releases();
        // SAFETY: forwarded.
        unsafe { self.give_back_oldest(shared, len) };
        // SAFETY: forwarded.
        unsafe { self.count_returned(shared, 0, true) };
    }

    /// Counts an allocation a slow path served from slices it brought in itself.
    pub(super) fn count_slow_allocation(&self) {
        add(&self.counters.allocations, 1);
        add(&self.counters.adjust, 1);
    }
}

/// Gives cached slices back to their regions, one batch per region (reorders `items`; the caller
/// forgets them afterwards). The pool's out-of-free-list counts are not told: the caller counts
/// the slices itself (`ClassCache::count_returned`).
pub(super) fn give_back_batch(shared: &PoolShared, items: &mut [Slot]) {
    if items.is_empty() {
        return;
    }
    // One batch per region: group by region (most batches come from one region, and need no
    // sort at all).
    if !items.windows(2).all(|w| w[0].1 == w[1].1) {
        items.sort_unstable_by_key(|&(_, r)| r.0.as_ptr() as usize);
    }
    let guard = epoch::pin();
    for group in items.chunk_by(|a, b| a.1 == b.1) {
        let region = group[0].1;
        let addrs = group.iter().map(|&(addr, _)| addr);
        // SAFETY: the cache owned these slices (each counted in its region), and we are pinned.
        let outcome = unsafe { give_back_uncounted(region, addrs, &guard) };
        if outcome == Released::Emptied {
            // SAFETY: pinned since before the give-back, so the metadata is readable.
            let class = unsafe { region.get() }.class as usize;
            // SAFETY: as above: the cache owned slices of `region` when `guard` was pinned.
            unsafe { shared.classes[class].on_emptied(region, &guard) };
        }
    }
    shared.budget.notify();
}
