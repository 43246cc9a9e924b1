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
//!   it). A class above 4 MiB caches one slice, only while the thread's cached bytes in such
//!   classes of the pool stay within `THREAD_LARGE_CACHE_BYTES` (checked where the release's push
//!   missed: the fast path never caches these classes). A full cache gives its older three
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
//! registry (which reads only the counters, for `stats()`). The thread's `Vec<PoolCache>` owns
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

use std::cell::{Cell, RefCell};
use std::ptr::{self, NonNull};

use crate::budget::WAITER_MASK;
use crate::class_pool::Shortage;
use crate::pool::PoolShared;
use crate::region::{give_back, give_back_uncounted, RegionRef, Released, MAX_BATCH, ZERO_TAG};
use crate::size_class::{CACHE_MAX_BYTES, CACHE_MAX_SLICES, THREAD_LARGE_CACHE_BYTES};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{arc_slice, const_thread_local, epoch, Arc, UnsafeCell};

/// Allocation and release counts of one class. In a thread's [`ClassCache`] only that thread
/// writes them (a load and a store); in a pool's `departed` counts, any thread adds to them with
/// read-modify-writes.
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
    /// quiet; for the owner, the cache's length).
    pub(crate) fn cached(&self) -> usize {
        let r = self.releases.load(Ordering::Relaxed);
        let a = self.allocations.load(Ordering::Relaxed);
        let adj = self.adjust.load(Ordering::Relaxed);
        let v = r.wrapping_sub(a).wrapping_add(adj) as i64;
        v.max(0) as usize
    }
}

/// Adds `n` to a single-writer counter: a load and a store, no locked instruction.
#[inline(always)]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A cached slice: its address (with `ZERO_TAG` when known zero) and its region.
type Slot = (usize, RegionRef);

/// What an unused slot holds (never read as a slice).
const NO_SLOT: Slot = (0, RegionRef(NonNull::dangling()));

/// One thread's cache of one size class of one pool.
///
/// # Invariants
///
/// * Its length is `counters.cached()` (derived, module docs), and `length <= cap <=
///   CACHE_MAX_SLICES`, or `length <= 1` for a byte-bounded class (whose `cap` is 0).
/// * `slots[..length]` are slices of this class of this pool, each counted in its region and
///   owned by the cache alone.
/// * Only the owning thread (whose `PoolCache` holds the array) touches `slots` or `uncounted`,
///   or writes the counters. Other threads (the pool's registry, for `stats()`) only load the
///   counters.
/// * `uncounted` slices were given back to their regions (their state words already dropped
///   them) but not yet subtracted from the pool's out-of-free-list counts; it is below
///   `UNCOUNTED_CACHES * cap` between calls, and zero after a full give-back.
// Aligned to two cache lines (the adjacent-line prefetcher's unit): the caches of two threads
// never share a line, whatever the allocator places next to them.
#[repr(align(128))]
pub(crate) struct ClassCache {
    pub(crate) counters: ClassCounters,
    /// The bound the fast path checks. 0 for a byte-bounded class, whose fast path never caches.
    cap: usize,
    /// The class is above `CACHE_MAX_BYTES` (8 MiB and up by default): the slow release caches
    /// one slice while the thread's cached bytes in such classes of this pool stay within
    /// `THREAD_LARGE_CACHE_BYTES` (see [`release_slow`]), and a refill takes exactly one slice.
    byte_bounded: bool,
    /// The class's slice size (what a segment's `len()` is).
    size: usize,
    /// The class's index in its pool.
    class: u8,
    /// Slices this cache gave back to their regions that the pool's out-of-free-list counts
    /// (`PoolShared::note_returned`) do not show yet: at most `UNCOUNTED_CACHES * cap`. See
    /// [`ClassCache::count_returned`].
    uncounted: Cell<usize>,
    /// Every access goes through the sync shim's cell, so the loom models see it.
    slots: UnsafeCell<[Slot; CACHE_MAX_SLICES]>,
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
    fn new(class: u8, size: usize, cap: usize) -> Self {
        Self {
            counters: ClassCounters::default(),
            cap: if size > CACHE_MAX_BYTES {
                0
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
    fn len_and_releases(&self) -> (usize, u64) {
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
    unsafe fn pop(&self) -> Option<Slot> {
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
    unsafe fn push(&self, slot: Slot) -> bool {
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
    unsafe fn push_unchecked(&self, len: usize, r: u64, slot: Slot) -> bool {
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
    unsafe fn stash(&self, addrs: &[usize], region: RegionRef) {
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
    unsafe fn give_back_oldest(&self, shared: &PoolShared, n: usize) {
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
    unsafe fn count_returned(&self, shared: &PoolShared, n: usize, now: bool) {
        let pending = self.uncounted.get() + n;
        if now || pending >= UNCOUNTED_CACHES * self.cap {
            if pending > 0 {
                shared.note_returned(self.class, pending * self.size);
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
    unsafe fn give_back_all(&self, shared: &PoolShared) {
        let (len, _) = self.len_and_releases();
        // SAFETY: forwarded.
        unsafe { self.give_back_oldest(shared, len) };
        // SAFETY: forwarded.
        unsafe { self.count_returned(shared, 0, true) };
    }

    /// Counts an allocation a slow path served from slices it brought in itself.
    fn count_slow_allocation(&self) {
        add(&self.counters.allocations, 1);
        add(&self.counters.adjust, 1);
    }
}

/// One thread's caches for one pool, owned by that thread's [`CACHES`].
#[derive(Debug)]
struct PoolCache {
    shared: Arc<PoolShared>,
    /// The signals word when this cache last synchronised, waiter count masked out (see
    /// `Signals`).
    seen: u64,
    /// One per class; shared with the pool's registry, which reads only the counters.
    classes: Arc<[ClassCache]>,
}

impl PoolCache {
    fn new(shared: &Arc<PoolShared>) -> Self {
        let classes = arc_slice(
            shared
                .classes
                .iter()
                .map(|c| ClassCache::new(c.index, c.size, c.cache_capacity))
                .collect(),
        );
        shared.register_thread(Arc::clone(&classes));
        Self {
            shared: Arc::clone(shared),
            seen: shared.signals() & !WAITER_MASK,
            classes,
        }
    }

    fn give_back_all(&mut self) {
        for c in self.classes.iter() {
            // SAFETY: this thread owns its `PoolCache`, hence the class caches.
            unsafe { c.give_back_all(&self.shared) };
        }
    }

    /// Catches up with the pool's trim generation; false if the pool is closed (drop the entry).
    fn sync(&mut self) -> bool {
        let now = self.shared.signals();
        if !crate::budget::Signals::same_generation(now, self.seen) {
            self.give_back_all();
        }
        self.seen = now & !WAITER_MASK;
        !self.shared.is_closed()
    }
}

impl Drop for PoolCache {
    fn drop(&mut self) {
        self.give_back_all();
        self.shared.unregister_thread(&self.classes);
    }
}

/// The fast path's view of the thread's front cache entry.
///
/// # Invariants
///
/// When `pool` is non-null: the thread's `CACHES` is not borrowed, and its first entry is the
/// cache of the pool at `pool` (so it holds an `Arc` of it: the pool is alive), with its class
/// array at `classes` and `seen` as its signals word; that pool has no diagnostics. Any code that
/// borrows `CACHES` clears `pool` first ([`CachesBorrow`]); null is always a safe state (every
/// call then takes the slow path).
struct Fast {
    pool: Cell<*const PoolShared>,
    seen: Cell<u64>,
    classes: Cell<*const ClassCache>,
}

impl Fast {
    const fn empty() -> Self {
        Self {
            pool: Cell::new(ptr::null()),
            seen: Cell::new(0),
            classes: Cell::new(ptr::null()),
        }
    }

    /// Mirrors `entry` (or nothing, for a pool with diagnostics, which always takes the slow
    /// paths so that every allocation and release is recorded).
    fn install(&self, entry: Option<&PoolCache>) {
        match entry {
            Some(e) if !e.shared.diagnosed => {
                self.seen.set(e.seen);
                self.classes.set(e.classes.as_ptr());
                self.pool.set(&*e.shared as *const PoolShared);
            }
            _ => self.pool.set(ptr::null()),
        }
    }
}

/// The thread's caches; dropped at thread exit, which gives every cached slice back.
struct Caches(RefCell<Vec<PoolCache>>);

impl Drop for Caches {
    fn drop(&mut self) {
        // The entries are about to go: nothing may reach them through `FAST` any more.
        let _ = FAST.try_with(|f| f.pool.set(ptr::null()));
    }
}

const_thread_local! {
    /// No destructor, so reaching it is a plain thread-local access.
    static FAST: Fast = Fast::empty();
}

const_thread_local! {
    static CACHES: Caches = Caches(RefCell::new(Vec::new()));
}

/// A mutable borrow of the thread's caches that keeps `FAST` out of the way: cleared while the
/// borrow lives, re-pointed at the front entry when it ends (unless unwinding).
struct CachesBorrow<'a>(std::cell::RefMut<'a, Vec<PoolCache>>);

impl<'a> CachesBorrow<'a> {
    /// `None` when the caches are borrowed already (a re-entrant call, from a pressure callback
    /// that releases segments).
    fn new(caches: &'a Caches) -> Option<Self> {
        let b = caches.0.try_borrow_mut().ok()?;
        let _ = FAST.try_with(|f| f.pool.set(ptr::null()));
        Some(Self(b))
    }
}

impl Drop for CachesBorrow<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let front = self.0.first();
            let _ = FAST.try_with(|f| f.install(front));
        }
    }
}

/// Gives cached slices back to their regions, one batch per region (reorders `items`; the caller
/// forgets them afterwards). The pool's out-of-free-list counts are not told: the caller counts
/// the slices itself (`ClassCache::count_returned`).
fn give_back_batch(shared: &PoolShared, items: &mut [Slot]) {
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
            shared.classes[class].on_emptied(&guard);
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
        shared.classes[class].on_emptied(&guard);
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
    with_entry(shared, |entry| {
        // SAFETY: this thread owns its entries.
        entry.classes.get(class).and_then(|c| unsafe { c.pop() })
    })
    .flatten()
}

/// Runs `f` on this thread's cache for `shared` (created on first use, moved to the front, synced
/// with the trim generation). `None` when there is no usable cache: during thread-local
/// destruction, re-entrantly, or when the pool is closed.
fn with_entry<R>(shared: &Arc<PoolShared>, f: impl FnOnce(&mut PoolCache) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = CachesBorrow::new(caches)?;
            let caches = &mut caches.0;
            // Drop entries of closed pools (giving their slices back) while we are here. (A
            // thread that uses one pool has one entry, this one: nothing to look at.)
            if caches.len() > 1
                || caches
                    .first()
                    .is_some_and(|e| !ptr::eq(&*e.shared, &**shared))
            {
                caches.retain_mut(|e| ptr::eq(&*e.shared, &**shared) || e.sync());
            }
            let pos = match caches.iter().position(|e| ptr::eq(&*e.shared, &**shared)) {
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
    let taken = with_entry(shared, |entry| {
        let cache = &entry.classes[class];
        if cache.cap == 0 && !cache.byte_bounded {
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
    let pool: &PoolShared = &r.pool;
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
            if unsafe { cache.push((addr, region)) } {
                return true;
            }
            if !cache.byte_bounded {
                return false;
            }
            // SAFETY: as above, `FAST` points at this pool's whole class array, one entry per
            // class of the pool.
            let classes =
                unsafe { std::slice::from_raw_parts(f.classes.get(), pool.classes.len()) };
            // SAFETY: this thread owns the caches; the caller hands us the slice.
            unsafe { push_byte_bounded(classes, cache, (addr, region)) }
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
        unsafe { crate::diagnostics::on_release_slice(r, addr, r.slice_size()) };
    }
    // Borrowed, not cloned (no read-modify-write of the pool's reference count per batch): the
    // slice we hold keeps the region, hence its `Arc` of the pool, alive until
    // `release_direct` below gives it back.
    let shared = &r.pool;
    let class = r.class as usize;
    // `with_entry` first gives the cache back if the trim generation moved (a budget waiter's
    // trim bumps it), so a waiter also gets the slices this thread had cached.
    let cached = with_entry(shared, |entry| {
        let cache = &entry.classes[class];
        if entry.shared.has_waiters() {
            return false;
        }
        if cache.byte_bounded {
            // SAFETY: this thread owns its entries; the caller hands us the slice.
            return unsafe { push_byte_bounded(&entry.classes, cache, (addr, region)) };
        }
        if cache.cap == 0 {
            return false;
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
    })
    .unwrap_or(false);
    if !cached {
        // SAFETY: forwarded from the caller.
        unsafe { release_direct(region, addr) };
    }
}

/// Caches a slice of a byte-bounded class (above `CACHE_MAX_BYTES`): one per class, and only
/// while this thread's cached bytes in such classes of this pool stay within
/// `THREAD_LARGE_CACHE_BYTES`.
///
/// # Safety
///
/// * The calling thread owns `classes` (one pool's caches) and `cache` is one of them; `slot` is
///   a slice of its class that the caller owns (the cache owns it after `true`).
unsafe fn push_byte_bounded(classes: &[ClassCache], cache: &ClassCache, slot: Slot) -> bool {
    let (len, r) = cache.len_and_releases();
    if len >= 1 {
        return false;
    }
    let held: usize = classes
        .iter()
        .filter(|c| c.byte_bounded)
        .map(|c| c.counters.cached() * c.size)
        .sum();
    if held + cache.size > THREAD_LARGE_CACHE_BYTES {
        return false;
    }
    debug_assert!(cache.size > CACHE_MAX_BYTES);
    // SAFETY: forwarded from the caller; the cache is empty, so slot 0 is free.
    unsafe { cache.push_unchecked(len, r, slot) }
}

/// Gives back and forgets this thread's caches now, as the thread's exit does (the same
/// `PoolCache` drops). The loom models end each model thread with it: loom runs a thread's
/// thread-local destructors after `join` has returned and in no fixed order (so an execution could
/// not be replayed), where std runs them before the thread can be joined.
#[cfg(loom)]
pub(crate) fn exit_current_thread() {
    let entries = CACHES.with(|caches| {
        let mut caches = CachesBorrow::new(caches).expect("not called from inside the pool");
        std::mem::take(&mut *caches.0)
    });
    drop(entries);
}

/// Gives this thread's cached slices of `shared` back to their regions now.
pub(crate) fn flush_current_thread(shared: &PoolShared) {
    let _ = CACHES.try_with(|caches| {
        if let Some(mut caches) = CachesBorrow::new(caches) {
            for e in caches.0.iter_mut().filter(|e| ptr::eq(&*e.shared, shared)) {
                e.give_back_all();
            }
        }
    });
}

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests {
    use crate::SegmentPool;

    /// Slices given back by a thread cache reach the pool's out-of-free-list counts late (at most
    /// `UNCOUNTED_CACHES` caches' worth per thread), never early, and all of them once the
    /// thread exits: the counts stay upper bounds of what the regions hold out, and come back to
    /// zero when everything is back.
    #[test]
    fn returns_are_counted_late_never_early_and_all_at_exit() {
        const SIZE: usize = 64 << 10;
        // No decay purger: a purge pass reserves the free slices it purges in their regions'
        // words, so `exact` below would count them as out while the pass runs (under Miri,
        // whose clock runs slowly enough for the purger to start, it did).
        let pool = SegmentPool::builder()
            .size_classes(&[SIZE])
            .huge_pages(false)
            .purge_decay(None)
            .build()
            .unwrap();
        let shared = pool.shared().clone();
        let class = &shared.classes[0];
        let cap = class.cache_capacity;
        assert!(cap > 1);
        // Slices out of the regions' free lists, as the regions count them.
        let exact = || class.snapshot().out;
        let segs: Vec<_> = (0..10 * cap)
            .map(|_| pool.allocate(SIZE).unwrap())
            .collect();
        let (to_main, from_releaser) = std::sync::mpsc::channel();
        let (to_releaser, from_main) = std::sync::mpsc::channel::<()>();
        let releaser = std::thread::spawn(move || {
            drop(segs);
            to_main.send(()).unwrap();
            // Stay alive (its cache and its uncounted returns with it) until told to exit.
            from_main.recv().unwrap();
        });
        from_releaser.recv().unwrap();
        let (counted, peak) = (class.out.now(), class.out.peak());
        assert!(
            counted >= exact(),
            "counted {counted} below the regions' {}",
            exact()
        );
        assert!(
            counted <= exact() + super::UNCOUNTED_CACHES * cap,
            "counted {counted}, regions {}",
            exact()
        );
        assert!(peak >= 10 * cap);
        to_releaser.send(()).unwrap();
        releaser.join().unwrap();
        // The releaser's cache and its uncounted returns went back when it exited; this
        // thread's cache goes back with `trim`.
        pool.trim();
        assert_eq!(exact(), 0);
        assert_eq!(class.out.now(), 0);
        assert_eq!(shared.out_bytes_now(), 0);
    }
}
