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
//!   slices (128 slices or 4 MiB, whichever is less, at least one; under a budget at most 1/16 of
//!   it). A class above 4 MiB caches one slice, and only the smallest of those classes whose
//!   sizes add up to within `THREAD_LARGE_CACHE_BYTES` are cached (decided when the pool is
//!   built, so the fast path needs no count of the thread's bytes); a release of such a class
//!   that finds its slot taken goes to the region. A full cache gives its older three
//!   quarters back to the regions in one batch per region; an empty one fills up (`cap - 1` kept, one handed out) from one region in one batch.
//!   When one thread allocates and another releases, every slice goes through these batches, so
//!   their size sets what each pair pays.
//! * The pool's out-of-free-list counts (behind the `stats()` peaks) hear of a cache's
//!   give-backs late: after [`UNCOUNTED_CACHES`] caches' worth, the thread's next take, a full
//!   give-back or its exit. The counts (and peaks) stay upper bounds; region state words, which
//!   the reclamation protocol relies on, are always exact.
//! * `trim()`, a budget shortage and closing the pool bump the pool's trim generation; every
//!   thread compares it on each call into that pool and, when it moved, gives its whole cache back
//!   first. A thread's caches are given back when it exits.
//! * While a thread waits for budget (`allocate_timeout`), releases bypass caches so the waiter is
//!   woken by the slice it waits for.
//! * A thread that never calls the pool again keeps its cached slices until it exits: at most the
//!   bound above per class, and they are counted in `PoolStats::cached_bytes`.
//!
//! # Layout of the fast path
//!
//! A thread's caches for one pool are one allocation, `Arc<[ClassCache]>`, shared with the pool's
//! list of its thread caches (`threads`, which `stats()` reads only the counters of). The thread's `Vec<PoolCache>` owns
//! them; the pool it used last on a slow path is at the front and is mirrored in [`FAST`], a
//! `const` thread-local without a destructor (so reaching it is a plain TLS access): the pool's
//! address, the signals word seen, and the address of its class caches. An allocation compares the
//! pool's address and the signals word, then pops from `classes[class]`; a release does the same
//! with the pool its region names. Nothing else is read, no shared line is written.
//!
//! Allocation and release counts are kept per thread, in counters only that thread writes (plain
//! loads and stores, no read-modify-write); `stats()` sums them. How many slices a cache holds is
//! not stored but derived from them, so the count `stats()` reports is the cache's own length:
//! `len = releases - allocations + adjust`, where `adjust` changes only on the slow paths (plus
//! the slices a refill brought in, minus the slices a flush gave back).

use std::ptr;

use crate::class_pool::Shortage;
use crate::pool::PoolShared;
use crate::region::{give_back, RegionRef, Released, MAX_BATCH, ZERO_TAG};
use crate::sync::{epoch, Arc};

mod class_cache;
mod local;

pub(crate) use class_cache::ClassCache;
#[cfg(all(test, not(loom), not(shuttle)))]
pub(crate) use class_cache::UNCOUNTED_CACHES;
#[cfg(all(loom, test))]
pub(crate) use local::exit_current_thread;
pub(crate) use local::flush_current_thread;
use local::{with_entry, FAST};

/// Gives one slice straight back to its region (no cache, or the cache must be bypassed).
///
/// # Safety
///
/// * `addr` is a slice of `region`, owned by the caller and counted in the region.
pub(crate) unsafe fn release_direct(region: RegionRef, addr: usize) {
    // SAFETY: the caller owns a slice of it: the region is alive.
    let r = unsafe { region.get() };
    let shared = PoolShared::arc_of(r);
    let class = r.class as usize;
    // An allocation of this class is queued on the budget: the slice is its, still counted in
    // the region (see `crate::budget`).
    if shared.has_waiters()
        && shared.budget.offer(
            &*shared as *const PoolShared as usize,
            r.class,
            addr,
            region,
        )
    {
        shared.count_direct_release(class);
        return;
    }
    let guard = epoch::pin();
    // SAFETY: forwarded from the caller; pinned.
    let outcome = unsafe { give_back(region, &[addr], &guard) };
    if outcome == Released::Emptied {
        // SAFETY: we owned a slice of `region` when `guard` was pinned.
        unsafe { shared.classes[class].on_emptied(region, &guard) };
    }
    shared.count_direct_release(class);
    shared.budget.notify();
}

/// The fast path of `allocate`: a cached slice of `class` for `shared`, if this thread has one,
/// with the class's size. `None` sends the caller to the slow path (which also serves pools with
/// diagnostics: they are never on the fast path).
///
/// # Safety
///
/// * `class` is a class of `shared` (`class < shared.classes.len()`).
#[inline(always)]
pub(crate) unsafe fn pop(shared: &PoolShared, class: usize) -> Option<(usize, RegionRef, usize)> {
    FAST.try_with(|f| {
        if !ptr::eq(f.pool.get(), shared) || shared.signals() != f.seen.get() {
            return None;
        }
        // SAFETY: `FAST` describes `shared`'s cache (its invariants), whose class array has one
        // entry per class of `shared`, and `class` is one (the caller).
        let cache = unsafe { &*f.classes.get().add(class) };
        // SAFETY: this thread owns the caches `FAST` points at.
        let (addr, region) = unsafe { cache.pop() }?;
        Some((addr, region, cache.size))
    })
    .ok()
    .flatten()
}

/// [`pop`] on the slow path (any pool, diagnostics or not).
pub(crate) fn pop_slow(shared: &Arc<PoolShared>, class: usize) -> Option<(usize, RegionRef)> {
    with_entry(
        shared,
        || Arc::clone(shared),
        |entry| {
            // SAFETY: this thread owns its entries.
            entry.classes.get(class).and_then(|c| unsafe { c.pop() })
        },
    )
    .flatten()
}

/// Runs `f` on a buffer of `min(n, MAX_BATCH)` entries, from an array sized so that a small
/// batch (the large classes take a few slices at a time) does not clear a large one.
#[inline(always)]
fn with_buffer<R>(n: usize, f: impl FnOnce(&mut [usize]) -> R) -> R {
    let n = n.min(MAX_BATCH);
    if n <= 8 {
        f(&mut [0; 8][..n])
    } else if n <= 16 {
        f(&mut [0; 16][..n])
    } else {
        f(&mut [0; MAX_BATCH][..n])
    }
}

/// The slow path of `allocate`: a slice from this thread's cache of `class`, refilled with one
/// batch from a region (mapping one if needed) when it is empty.
pub(crate) fn refill(
    shared: &Arc<PoolShared>,
    class: usize,
) -> Result<(usize, RegionRef), Shortage> {
    let taken = with_entry(
        shared,
        || Arc::clone(shared),
        |entry| {
            let cache = &entry.classes[class];
            if cache.cap == 0 {
                return None;
            }
            // SAFETY: this thread owns its entries.
            if let Some(slot) = unsafe { cache.pop() } {
                // The fast path missed for another reason (a budget waiter, a new generation).
                return Some(Ok(slot));
            }
            // Count what this thread gave back before taking (the take writes the same counts).
            if cache.uncounted.get() > 0 {
                // SAFETY: this thread owns the cache.
                unsafe { cache.count_returned(shared, 0, true) };
            }
            // Fill the cache: one slice for the caller, `cap - 1` (at least one) to keep.
            let want = if cache.byte_bounded {
                1
            } else {
                cache.cap.max(2)
            };
            Some(with_buffer(want, |buf| {
                let guard = epoch::pin();
                let result = shared.classes[class].take(shared, buf, &guard);
                result.map(|(region, n)| {
                    // SAFETY: this thread owns the cache, which is empty and has room for `want - 1`;
                    // the region handed these slices to us.
                    unsafe { cache.stash(&buf[1..n], region) };
                    cache.count_slow_allocation();
                    (buf[0], region)
                })
            }))
        },
    )
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
    let pool = PoolShared::of(r);
    let cached = FAST
        .try_with(|f| {
            // One load tells both: the generation moved (give the cache back first), or a thread
            // waits for budget (release to the region so the waiter gets the slice). A pool with
            // diagnostics is never in `FAST`, so its releases take the slow path.
            if !ptr::eq(f.pool.get(), pool) || pool.signals() != f.seen.get() {
                return false;
            }
            // SAFETY: `FAST` describes this pool's cache (its invariants), with one entry per
            // class; a class region's `class` is a class of its pool.
            let cache = unsafe { &*f.classes.get().add(r.class as usize) };
            // SAFETY: this thread owns the cache; the caller hands us the slice.
            unsafe { cache.push((addr, region)) }
        })
        .unwrap_or(false);
    if !cached {
        // SAFETY: forwarded from the caller.
        unsafe { release_slow(region, addr) };
    }
}

/// # Safety
///
/// As for [`release`].
#[cold]
#[inline(never)]
unsafe fn release_slow(region: RegionRef, addr: usize) {
    // SAFETY: the caller owns a slice of the region, so it is alive.
    let r = unsafe { region.get() };
    if r.diagnosed {
        // SAFETY: forwarded from the caller, who owns the slice.
        unsafe { PoolShared::diagnose_release(r, addr, r.slice_size()) };
    }
    // Borrowed, not cloned (no read-modify-write of the pool's reference count per batch): the
    // slice we hold keeps the region, hence its reference to the pool, alive until
    // `release_direct` below gives it back.
    let shared = PoolShared::of(r);
    let class = r.class as usize;
    // `with_entry` first gives the cache back if the trim generation moved (a budget waiter's
    // trim bumps it), so a waiter also gets the slices this thread had cached.
    let cached = with_entry(
        shared,
        || PoolShared::arc_of(r),
        |entry| {
            let cache = &entry.classes[class];
            if entry.shared.has_waiters() {
                return false;
            }
            if cache.cap == 0 {
                return false;
            }
            if cache.byte_bounded {
                // Its one slot: cached if free (the fast path found it taken, but a flush by
                // `with_entry` may have emptied it), else the slice goes to its region.
                // SAFETY: this thread owns the cache; the caller hands us the slice.
                return unsafe { cache.push((addr, region)) };
            }
            // SAFETY: this thread owns the cache; the caller hands us the slice.
            if unsafe { cache.push((addr, region)) } {
                return true;
            }
            // Full: give the older three quarters back in one batch, then cache this one.
            let (len, _) = cache.len_and_releases();
            // SAFETY: this thread owns the cache; `len - cap / 4 <= len`.
            unsafe { cache.give_back_oldest(&entry.shared, len - cache.cap / 4) };
            // SAFETY: as above; there is room now (`cap / 4 < cap`).
            unsafe { cache.push((addr, region)) }
        },
    )
    .unwrap_or(false);
    if !cached {
        // SAFETY: forwarded from the caller.
        unsafe { release_direct(region, addr) };
    }
}
