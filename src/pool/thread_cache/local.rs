//! A thread's caches: one entry per pool it uses (`CACHES`), the front one mirrored for the fast
//! path (`FAST`), and the borrow that keeps the two consistent (`CachesBorrow`).

use std::cell::{Cell, RefCell};
use std::ptr;

use super::class_cache::ClassCache;
use crate::pool::{PoolShared, Signals, WAITER_MASK};
use crate::sync::{arc_slice, const_thread_local, Arc};

/// One thread's caches for one pool, owned by that thread's [`CACHES`].
#[derive(Debug)]
pub(super) struct PoolCache {
    pub(super) shared: Arc<PoolShared>,
    /// The signals word when this cache last synchronised, waiter count masked out (see
    /// `Signals`).
    pub(super) seen: u64,
    /// One per class; shared with the pool's `threads`, through which only the counters are read.
    pub(super) classes: Arc<[ClassCache]>,
}

impl PoolCache {
    pub(super) fn new(shared: Arc<PoolShared>) -> Self {
        let classes = arc_slice(
            shared
                .classes
                .iter()
                .map(|c| ClassCache::new(c.index, c.size, c.cache_capacity))
                .collect(),
        );
        shared.register_thread(Arc::clone(&classes));
        Self {
            seen: shared.signals() & !WAITER_MASK,
            shared,
            classes,
        }
    }

    pub(super) fn give_back_all(&mut self) {
        for c in self.classes.iter() {
            // SAFETY: this thread owns its `PoolCache`, hence the class caches.
            unsafe { c.give_back_all(&self.shared) };
        }
    }

    /// Catches up with the pool's trim generation; false if the pool is closed (drop the entry).
    pub(super) fn sync(&mut self) -> bool {
        let now = self.shared.signals();
        if !Signals::same_generation(now, self.seen) {
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
pub(super) struct Fast {
    pub(super) pool: Cell<*const PoolShared>,
    pub(super) seen: Cell<u64>,
    pub(super) classes: Cell<*const ClassCache>,
}

impl Fast {
    pub(super) const fn empty() -> Self {
        Self {
            pool: Cell::new(ptr::null()),
            seen: Cell::new(0),
            classes: Cell::new(ptr::null()),
        }
    }

    /// Mirrors `entry` (or nothing, for a pool with diagnostics, which always takes the slow
    /// paths so that every allocation and release is recorded).
    pub(super) fn install(&self, entry: Option<&PoolCache>) {
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
pub(super) struct Caches(RefCell<Vec<PoolCache>>);

impl Drop for Caches {
    fn drop(&mut self) {
        // The entries are about to go: nothing may reach them through `FAST` any more.
        let _ = FAST.try_with(|f| f.pool.set(ptr::null()));
    }
}

const_thread_local! {
    /// No destructor, so reaching it is a plain thread-local access.
    pub(super) static FAST: Fast = Fast::empty();
}

const_thread_local! {
    static CACHES: Caches = Caches(RefCell::new(Vec::new()));
}

/// A mutable borrow of the thread's caches that keeps `FAST` out of the way: cleared while the
/// borrow lives, re-pointed at the front entry when it ends (unless unwinding).
pub(super) struct CachesBorrow<'a>(pub(super) std::cell::RefMut<'a, Vec<PoolCache>>);

impl<'a> CachesBorrow<'a> {
    /// `None` when the caches are borrowed already (a re-entrant call, from a pressure callback
    /// that releases segments).
    pub(super) fn new(caches: &'a Caches) -> Option<Self> {
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

/// Runs `f` on this thread's cache for `shared` (created on first use, moved to the front, synced
/// with the trim generation). `None` when there is no usable cache: during thread-local
/// destruction, re-entrantly, or when the pool is closed.
///
/// `new_ref` makes the reference to the pool that a new cache keeps (called only then: a caller
/// that reached the pool through a region it holds does not touch the pool's reference count
/// otherwise).
pub(super) fn with_entry<R>(
    shared: &PoolShared,
    new_ref: impl FnOnce() -> Arc<PoolShared>,
    f: impl FnOnce(&mut PoolCache) -> R,
) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = CachesBorrow::new(caches)?;
            let caches = &mut caches.0;
            // Drop entries of closed pools (giving their slices back) while we are here. (A
            // thread that uses one pool has one entry, this one: nothing to look at.)
            if caches.len() > 1 || caches.first().is_some_and(|e| !ptr::eq(&*e.shared, shared)) {
                caches.retain_mut(|e| ptr::eq(&*e.shared, shared) || e.sync());
            }
            let pos = match caches.iter().position(|e| ptr::eq(&*e.shared, shared)) {
                Some(p) => p,
                None => {
                    if shared.is_closed() {
                        return None;
                    }
                    caches.push(PoolCache::new(new_ref()));
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

/// Gives back and forgets this thread's caches now, as the thread's exit does (the same
/// `PoolCache` drops). The loom models end each model thread with it: loom runs a thread's
/// thread-local destructors after `join` has returned and in no fixed order (so an execution could
/// not be replayed), where std runs them before the thread can be joined.
#[cfg(all(loom, test))]
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
