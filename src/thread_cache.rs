//! Per-thread caches of free slices: the allocate/release fast path.
//!
//! Each thread keeps, per pool and per size class, a small stack of slices it may hand out or take
//! back without touching any shared cache line. Slices in a cache still count as in use in their
//! region's state word, so a region cannot be retired under a cache (the region protocol is
//! unchanged by caching; the loom models cover it directly).
//!
//! # Bounds and give-back
//!
//! * A class caches at most [`SizeClasses::cache_capacity`](crate::size_class::SizeClasses)
//!   slices (32 slices or 1 MiB, whichever is less, at least one; under a budget at most 1/16 of
//!   it). A full cache gives half of itself back to the regions in one batch; an empty one takes
//!   half a cache from one region in one batch.
//! * `trim()`, a budget shortage and closing the pool bump the pool's trim generation; every
//!   thread compares it on each call into that pool and, when it moved, gives its whole cache back
//!   first. A thread's caches are given back when it exits.
//! * While a thread waits for budget (`allocate_timeout`), releases bypass caches so the waiter is
//!   woken by the slice it waits for.
//! * A thread that never calls the pool again keeps its cached slices until it exits: at most the
//!   bound above per class, and they are counted in `PoolStats::cached_bytes`.
//!
//! Allocation and release counts are kept per thread, in counters only that thread writes (plain
//! loads and stores, no read-modify-write); `stats()` sums them. The fast path writes one counter
//! per operation; how many slices a cache holds is derived, not stored:
//! `cached = releases - allocations + adjust`, where `adjust` changes only on the slow paths
//! (plus the slices a refill brought in, minus the slices a flush gave back).

use std::cell::RefCell;

use crate::budget::{Signals, WAITER_MASK};
use crate::class_pool::Shortage;
use crate::pool::PoolShared;
use crate::region::{give_back, RegionRef, Released, MAX_BATCH, ZERO_TAG};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{const_thread_local, epoch, Arc};

/// Counters of one thread for one pool; written by that thread only.
#[derive(Debug, Default)]
pub(crate) struct ClassCounters {
    pub(crate) allocations: AtomicU64,
    pub(crate) releases: AtomicU64,
    /// Slices that entered the cache on slow paths minus slices that left it on slow paths
    /// (wrapping; see the module docs).
    adjust: AtomicU64,
}

impl ClassCounters {
    /// Slices in the cache, as far as a reader on another thread can tell (exact when the owner is
    /// quiet).
    pub(crate) fn cached(&self) -> usize {
        let r = self.releases.load(Ordering::Relaxed);
        let a = self.allocations.load(Ordering::Relaxed);
        let adj = self.adjust.load(Ordering::Relaxed);
        let v = r.wrapping_sub(a).wrapping_add(adj) as i64;
        v.max(0) as usize
    }
}

#[inline]
fn bump(c: &AtomicU64) {
    add(c, 1);
}

#[inline]
fn add(c: &AtomicU64, n: u64) {
    // Single writer: a load and a store, no locked instruction.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One thread's counters for one pool.
#[derive(Debug)]
pub(crate) struct ThreadCounters {
    pub(crate) classes: Box<[Arc<ClassCounters>]>,
}

impl ThreadCounters {
    pub(crate) fn new(classes: usize) -> Self {
        Self {
            classes: (0..classes)
                .map(|_| Arc::new(ClassCounters::default()))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct ClassCache {
    /// Slice addresses (with `ZERO_TAG` when known zero) and their regions.
    slices: Vec<(usize, RegionRef)>,
    cap: usize,
    /// This thread's counters for the class (also in the pool's registry, for `stats()`).
    counters: Arc<ClassCounters>,
}

#[derive(Debug)]
struct PoolCache {
    shared: Arc<PoolShared>,
    /// The signals word when this cache last synchronised (see `Signals`).
    seen: u64,
    classes: Box<[ClassCache]>,
    counters: Arc<ThreadCounters>,
}

impl PoolCache {
    fn new(shared: &Arc<PoolShared>) -> Self {
        let counters = shared.register_thread();
        Self {
            shared: Arc::clone(shared),
            seen: shared.signals(),
            classes: shared
                .classes
                .iter()
                .zip(counters.classes.iter())
                .map(|(c, k)| ClassCache {
                    slices: Vec::with_capacity(c.cache_capacity),
                    cap: c.cache_capacity,
                    counters: Arc::clone(k),
                })
                .collect(),
            counters,
        }
    }

    fn give_back_all(&mut self) {
        for (i, c) in self.classes.iter_mut().enumerate() {
            give_back_batch(&self.shared, &mut c.slices);
            add(
                &self.counters.classes[i].adjust,
                (c.slices.len() as u64).wrapping_neg(),
            );
            c.slices.clear();
        }
    }

    /// Catches up with the pool's trim generation; false if the pool is closed (drop the entry).
    fn sync(&mut self) -> bool {
        let now = self.shared.signals();
        if !Signals::same_generation(now, self.seen) {
            self.give_back_all();
        }
        self.seen = now;
        !self.shared.is_closed()
    }
}

impl Drop for PoolCache {
    fn drop(&mut self) {
        self.give_back_all();
        self.shared.unregister_thread(&self.counters);
    }
}

const_thread_local! {
    static CACHES: RefCell<Vec<PoolCache>> = RefCell::new(Vec::new());
}

/// Gives cached slices back to their regions, one batch per region (reorders `items`; the caller
/// forgets them afterwards).
fn give_back_batch(shared: &PoolShared, items: &mut [(usize, RegionRef)]) {
    if items.is_empty() {
        return;
    }
    items.sort_unstable_by_key(|&(_, r)| r.0.as_ptr() as usize);
    let guard = epoch::pin();
    let mut addrs = [0usize; MAX_BATCH];
    for group in items.chunk_by(|a, b| a.1 == b.1) {
        let region = group[0].1;
        for chunk in group.chunks(MAX_BATCH) {
            for (a, &(addr, _)) in addrs.iter_mut().zip(chunk) {
                *a = addr;
            }
            // SAFETY: the cache owned these slices (each counted in its region), and we are pinned.
            let outcome = unsafe { give_back(region, &addrs[..chunk.len()], &guard) };
            if outcome == Released::Emptied {
                // SAFETY: pinned since before the give-back, so the metadata is readable.
                let class = unsafe { region.get() }.class as usize;
                shared.classes[class].on_emptied(region, &guard);
            }
        }
    }
    shared.budget.notify();
}

/// Gives one slice straight back to its region (no cache, or the cache must be bypassed).
///
/// # Safety
///
/// * `addr` is a slice of `region`, owned by the caller and counted in the region.
pub(crate) unsafe fn release_direct(region: RegionRef, addr: usize) {
    // SAFETY: the caller owns a slice of it: the region is alive.
    let r = unsafe { region.get() };
    let shared = Arc::clone(&r.pool);
    let class = r.class as usize;
    let guard = epoch::pin();
    // SAFETY: forwarded from the caller; pinned.
    let outcome = unsafe { give_back(region, &[addr], &guard) };
    if outcome == Released::Emptied {
        shared.classes[class].on_emptied(region, &guard);
    }
    shared.count_direct_release(class);
    shared.budget.notify();
}

/// The fast path of `allocate`: a cached slice of `class` for `shared`, if this thread has one.
/// `None` for a pool with diagnostics, whose allocations go through [`pop_diagnosed`].
#[inline(always)]
pub(crate) fn pop(shared: &PoolShared, class: usize) -> Option<(usize, RegionRef)> {
    if shared.diagnosed {
        return None;
    }
    pop_diagnosed(shared, class)
}

/// [`pop`] for any pool, diagnostics or not.
#[inline(always)]
pub(crate) fn pop_diagnosed(shared: &PoolShared, class: usize) -> Option<(usize, RegionRef)> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let entry = caches.first_mut()?;
            if entry.shared.id != shared.id
                || !Signals::same_generation(entry.seen, shared.signals())
            {
                return None;
            }
            let cache = &mut entry.classes[class];
            let s = cache.slices.pop()?;
            bump(&cache.counters.allocations);
            Some(s)
        })
        .ok()
        .flatten()
}

/// Runs `f` on this thread's cache for `shared` (created on first use, moved to the front, synced
/// with the trim generation). `None` when there is no usable cache: during thread-local
/// destruction, re-entrantly, or when the pool is closed.
fn with_entry<R>(shared: &Arc<PoolShared>, f: impl FnOnce(&mut PoolCache) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            // Drop entries of closed pools (giving their slices back) while we are here.
            caches.retain_mut(|e| e.shared.id == shared.id || e.sync());
            let pos = match caches.iter().position(|e| e.shared.id == shared.id) {
                Some(p) => p,
                None => {
                    if shared.is_closed() {
                        return None;
                    }
                    caches.push(PoolCache::new(shared));
                    caches.len() - 1
                }
            };
            caches.swap(0, pos);
            if !caches[0].sync() {
                caches.swap_remove(0);
                return None;
            }
            Some(f(&mut caches[0]))
        })
        .ok()
        .flatten()
}

/// The slow path of `allocate`: refills this thread's cache of `class` with one batch from a
/// region (mapping one if needed) and returns one slice of it.
pub(crate) fn refill(
    shared: &Arc<PoolShared>,
    class: usize,
) -> Result<(usize, RegionRef), Shortage> {
    let taken = with_entry(shared, |entry| {
        let cap = entry.classes[class].cap;
        if cap == 0 {
            return None;
        }
        let want = (cap / 2).max(1) + 1;
        let mut buf = [0usize; MAX_BATCH];
        let guard = epoch::pin();
        let result = shared.classes[class].take(shared, &mut buf[..want.min(MAX_BATCH)], &guard);
        Some(result.map(|(region, n)| {
            let cache = &mut entry.classes[class];
            cache.slices.extend(buf[1..n].iter().map(|&a| (a, region)));
            let counters = &cache.counters;
            bump(&counters.allocations);
            add(&counters.adjust, n as u64);
            (buf[0], region)
        }))
    })
    .flatten();
    match taken {
        Some(r) => r,
        None => {
            // Uncached: take exactly one slice.
            let mut buf = [0usize; 1];
            let guard = epoch::pin();
            let (region, _) = shared.classes[class].take(shared, &mut buf, &guard)?;
            shared.count_direct_allocation(class);
            Ok((buf[0], region))
        }
    }
}

/// Releases a slice: into this thread's cache when it has room, else back to the region.
///
/// # Safety
///
/// * `addr` is a slice of `region` (a class region, not a dedicated one), owned by the caller and
///   counted in the region.
#[inline(always)]
pub(crate) unsafe fn release(region: RegionRef, addr: usize) {
    // SAFETY: the caller owns a slice of the region, so it is alive.
    let r = unsafe { region.get() };
    let addr = addr & !ZERO_TAG;
    let cached = CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let entry = caches.first_mut()?;
            // One load tells both: the generation moved (give the cache back first), or a thread
            // waits for budget (release to the region so the waiter gets the slice).
            // `r.diagnosed` is the one diagnostics branch of the release fast path.
            let now = entry.shared.signals();
            if entry.shared.id != r.pool_id || r.diagnosed || now != entry.seen & !WAITER_MASK {
                return None;
            }
            let class = r.class as usize;
            let cache = &mut entry.classes[class];
            if cache.slices.len() >= cache.cap {
                return None;
            }
            cache.slices.push((addr, region));
            bump(&cache.counters.releases);
            Some(())
        })
        .ok()
        .flatten();
    if cached.is_none() {
        // SAFETY: forwarded from the caller.
        unsafe { release_slow(region, addr) };
    }
}

/// # Safety
///
/// As for [`release`].
#[cold]
unsafe fn release_slow(region: RegionRef, addr: usize) {
    // SAFETY: the caller owns a slice of the region, so it is alive.
    let r = unsafe { region.get() };
    if r.diagnosed {
        // SAFETY: forwarded from the caller, who owns the slice.
        unsafe { crate::diagnostics::on_release_slice(r, addr, r.slice_size()) };
    }
    let shared = Arc::clone(&r.pool);
    let class = r.class as usize;
    // `with_entry` first gives the cache back if the trim generation moved (a budget waiter's
    // trim bumps it), so a waiter also gets the slices this thread had cached.
    let cached = with_entry(&shared, |entry| {
        let cache = &mut entry.classes[class];
        if cache.cap == 0 || entry.shared.budget.has_waiters() {
            return false;
        }
        let counters = &cache.counters;
        if cache.slices.len() >= cache.cap {
            let spill = cache.slices.len() - cache.cap / 2;
            give_back_batch(&entry.shared, &mut cache.slices[..spill]);
            cache.slices.drain(..spill);
            add(&counters.adjust, (spill as u64).wrapping_neg());
        }
        cache.slices.push((addr, region));
        bump(&counters.releases);
        true
    })
    .unwrap_or(false);
    if !cached {
        // SAFETY: forwarded from the caller.
        unsafe { release_direct(region, addr) };
    }
}

/// Gives this thread's cached slices of `shared` back to their regions now.
pub(crate) fn flush_current_thread(shared: &PoolShared) {
    let _ = CACHES.try_with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            for e in caches.iter_mut().filter(|e| e.shared.id == shared.id) {
                e.give_back_all();
            }
        }
    });
}
