//! A region: one large mapping carved into equal slices of one size class.
//!
//! # The state word and the retire protocol
//!
//! `state` packs the region's in-use count with a `RETIRED` bit. The count is the number of
//! slices *outside* the free stack: live segments, slices parked in thread caches, and
//! reservations being popped. It changes exactly once per slice on the way out ([`Region::take`]
//! reserves before it pops) and exactly once on the way back ([`Region::give_back`] pushes before
//! it decrements).
//!
//! * Taking slices is a CAS that refuses a retired region: once `RETIRED` is set the count can
//!   only fall, so nobody can hand out a slice of a region that is being torn down (invariant 1).
//! * Giving back pushes the slices onto the free stack *before* the decrement (invariant 3): after
//!   the decrement the region may be destroyed, so nothing may touch it after.
//! * Retiring an empty region is a CAS from `0` to `RETIRED | 1`: the retirer holds a reference of
//!   its own while it unlinks the region from its class, then drops it. Retiring a region that
//!   still has slices out (the pool was dropped) sets `RETIRED` and adds the retirer's reference in
//!   one CAS.
//! * Whoever moves the word to exactly `RETIRED` (count zero) destroys the region: that transition
//!   happens once, so exactly one party unmaps (invariant 5).
//! * Destroying unmaps the memory at once (no slice of it exists) but frees the metadata only
//!   after an epoch grace period, because another thread may have loaded the region's address from
//!   its class list just before the unlink and may still CAS its state word (invariant 4).
//!
//! # Purging
//!
//! [`purge`] gives the pages of free slices back to the OS without unmapping the region. It
//! joins the protocol as one more taker: it reserves every free slice in the state word (so the
//! region cannot be destroyed under the `madvise`, and no allocator can pop them), pops them,
//! discards the dirty ones, pushes them all back with the [`PURGED`] mark on the discarded ones,
//! then drops its reservation like any give-back. A slice being purged is owned by the purger
//! alone, exactly as a slice in a thread cache is owned by its thread; a live or cached slice is
//! never on the free stack, so the purger never sees it.

use std::ptr::NonNull;

mod memory;
mod owner;

pub(crate) use memory::{map_memory, RegionMemory};
pub(crate) use owner::{Owner, RegionOwner, SliceCounts};

use crate::free_stack::{FreeStack, AGED, MARK_SHIFT, PURGED};
use crate::size_class::NO_CLASS;
use crate::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use crate::sync::epoch::{Guard, Shared};
use crate::sync::Mutex;

/// Set in the state word once the region is retired.
pub(crate) const RETIRED: usize = 1 << (usize::BITS - 1);

/// The slices a region hands out per batch at most (stack buffers are sized by it).
pub(crate) const MAX_BATCH: usize = 128;

/// Marks a slice address as known to be zero (bit 0 is free: slices are page-aligned).
pub(crate) const ZERO_TAG: usize = 1;

/// The fields of a region that takes and give-backs write, on their own 128-byte block (two
/// cache lines: the adjacent-line prefetcher's unit).
#[derive(Debug)]
#[repr(C, align(128))]
struct Hot {
    state: AtomicUsize,
    free: FreeStack,
    /// Slices with an index at or above this mark were never handed out (so they are zero).
    fresh_mark: AtomicU32,
    /// A hint for the purger: non-zero when slices were given back since its last pass (or it
    /// left aged slices to purge next time). Written only when it moves.
    released: AtomicU32,
}

/// One mapped region of one size class.
///
/// # Invariants
///
/// * `state` is as described in the module docs; `count(state) <= slices`.
/// * `base..base + slices * slice_size` is mapped while `memory` is `Some`, which it is until the
///   state word reached `RETIRED` with count zero.
/// * The `Region` allocation itself lives until an epoch grace period after it was destroyed.
#[derive(Debug)]
pub(crate) struct Region {
    /// What every take and give-back writes, together (one line to move between cores per
    /// batch, not one per field) and away from the read-mostly fields every release reads
    /// (`class`, `owner`).
    hot: Hot,
    base: usize,
    slice_shift: u32,
    /// Distance between the starts of two slices: `1 << slice_shift`, or under
    /// `Diagnostics::Full` the slice size plus one guard page (see `crate::diagnostics::guard`).
    stride: usize,
    /// Bytes one slice accounts for: the class size, or a dedicated mapping's exact length.
    slice_bytes: usize,
    slices: u32,
    pub(crate) class: u8,
    /// The pool has diagnostics on: a release calls into `crate::diagnostics` first.
    pub(crate) diagnosed: bool,
    pub(crate) pool_id: u64,
    pub(crate) id: u64,
    /// The pool the region belongs to (see `owner.rs`): kept alive by the region.
    pub(crate) owner: Owner,
    /// The memory is a shared mapping of a nameless file (`Backing::File`).
    file_backed: bool,
    /// Free slices may be purged: a class region of a pool without poison (poison must survive
    /// until the slice is handed out again, to be checked).
    purgeable: bool,
    memory: Mutex<Option<RegionMemory>>,
}

/// A region pointer that can sit in shared lists and thread caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionRef(pub(crate) NonNull<Region>);

// SAFETY: a `Region` is shared by design: every mutable field is atomic or behind a mutex, and the
// protocol above says when the pointer may be dereferenced; the pointer itself is just an address.
unsafe impl Send for RegionRef {}
// SAFETY: as for `Send`.
unsafe impl Sync for RegionRef {}

impl RegionRef {
    /// # Safety
    ///
    /// * The caller holds a reference on the region (a slice of it, or a reservation) or is pinned
    ///   in an epoch during which the region was reachable from its class list.
    pub(crate) unsafe fn get<'a>(self) -> &'a Region {
        // SAFETY: the caller's reference or pin keeps the allocation alive (invariants above).
        unsafe { self.0.as_ref() }
    }
}

/// What a new region is (the pool computes it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionSpec {
    /// Its size class, or `NO_CLASS` for a dedicated mapping.
    pub(crate) class: u8,
    /// The slice size: the class size, or a dedicated mapping's length rounded up to a power of
    /// two (so that index arithmetic stays a shift).
    pub(crate) slice_size: usize,
    /// Distance between slice starts: the slice size, or more under `Diagnostics::Full` (a
    /// dedicated mapping has one slice: ignored).
    pub(crate) stride: usize,
    /// The region's id in its pool.
    pub(crate) id: u64,
}

impl Region {
    /// Builds the metadata for `memory`. A dedicated region (`spec.class == NO_CLASS`: one large
    /// segment) starts as `RETIRED | 1` with its one slice already out: it is never in a class
    /// list, and the segment's release destroys it.
    pub(crate) fn new(owner: Owner, spec: RegionSpec, memory: RegionMemory) -> Self {
        let RegionSpec {
            class,
            slice_size,
            stride,
            id,
        } = spec;
        let born_retired = class == NO_CLASS;
        // A dedicated region has one slice of `slice_size` covering the whole mapping.
        let stride = if born_retired { slice_size } else { stride };
        let slices = if born_retired {
            1
        } else {
            (memory.mapping.len() / stride) as u32
        };
        let free = FreeStack::full(slices);
        if born_retired {
            owner.counts().taken(class, memory.mapping.len());
        }
        let (diagnosed, poisons) = owner.reports().diagnostics();
        let fresh_mark = if born_retired {
            let mut first = [0usize; 1];
            free.pop_into(&mut first);
            1
        } else {
            0
        };
        Self {
            hot: Hot {
                state: AtomicUsize::new(if born_retired { RETIRED | 1 } else { 0 }),
                free,
                fresh_mark: AtomicU32::new(fresh_mark),
                released: AtomicU32::new(0),
            },
            base: memory.mapping.as_ptr() as usize,
            slice_shift: slice_size.trailing_zeros(),
            stride,
            slice_bytes: if born_retired {
                memory.mapping.len()
            } else {
                slice_size
            },
            slices,
            class,
            diagnosed,
            purgeable: !born_retired && !poisons,
            pool_id: owner.reports().pool_id(),
            id,
            owner,
            file_backed: memory.file_backed,
            memory: Mutex::new(Some(memory)),
        }
    }

    pub(crate) fn slices(&self) -> usize {
        self.slices as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.slices as usize * self.stride
    }

    /// Bytes one slice accounts for: a segment's length (the class size, or a dedicated
    /// mapping's exact length).
    #[inline(always)]
    pub(crate) fn slice_bytes(&self) -> usize {
        self.slice_bytes
    }

    pub(crate) fn slice_size(&self) -> usize {
        1 << self.slice_shift
    }

    /// Slices outside the free stack right now (a snapshot).
    pub(crate) fn in_use(&self) -> usize {
        self.hot.state.load(Ordering::Acquire) & !RETIRED
    }

    /// Bytes of this region resident in memory (`mincore`); 0 once it was unmapped.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.memory
            .lock()
            .as_ref()
            .map_or(0, |m| m.mapping.resident_bytes().unwrap_or(0))
    }

    /// The first byte of the region.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The region as a `RegionObserver` sees it.
    pub(crate) fn info(&self) -> crate::observer::RegionInfo {
        crate::observer::RegionInfo {
            id: self.id,
            base: self.base,
            len: self.len(),
            file_backed: self.file_backed,
        }
    }

    /// Takes up to `out.len()` slices: reserves them in the state word (refused if retired or
    /// full), then pops them. Writes slice addresses (with [`ZERO_TAG`] set on slices never handed
    /// out before or purged since) and returns how many, and whether the region was empty before
    /// (for the class's empty-region count).
    pub(crate) fn take(&self, out: &mut [usize]) -> (usize, bool) {
        let want = out.len().min(MAX_BATCH);
        let mut cur = self.hot.state.load(Ordering::Relaxed);
        let n = loop {
            if cur & RETIRED != 0 {
                return (0, false);
            }
            let n = want.min(self.slices as usize - cur);
            if n == 0 {
                return (0, false);
            }
            match self.hot.state.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break n,
                Err(actual) => cur = actual,
            }
        };
        let was_empty = cur == 0;
        self.owner.counts().taken(self.class, n * self.slice_bytes);
        // The indices go straight into `out` and become addresses in place (no scratch array to
        // clear on every batch).
        let out = &mut out[..n];
        // Every reservation can pop: at all times the free stack holds at least
        // `slices - count + (slices pushed but not yet decremented)` entries, and a reservation
        // only takes what `slices - count` allowed.
        let popped = self.hot.free.pop_into(out);
        assert_eq!(popped, n, "region free stack shorter than its reservation");
        let index = |e: usize| e & ((1 << MARK_SHIFT) - 1);
        let max = out.iter().map(|&e| index(e)).max().unwrap_or(0) as u32;
        // The mark only grows; write it only when this batch moves it (most takes reuse slices
        // below it, and a read-modify-write would take the line from every other core).
        let mark = self.hot.fresh_mark.load(Ordering::Acquire);
        let fresh_from = if max < mark {
            mark
        } else {
            self.hot.fresh_mark.fetch_max(max + 1, Ordering::AcqRel)
        };
        for o in out.iter_mut() {
            let i = index(*o);
            let purged = (*o >> MARK_SHIFT) as u32 & PURGED != 0;
            let tag = if purged || i >= fresh_from as usize {
                ZERO_TAG
            } else {
                0
            };
            *o = (self.base + i * self.stride) | tag;
        }
        (n, was_empty)
    }

    /// The slice index of a slice address of this region (tag bits ignored).
    pub(crate) fn index_of(&self, addr: usize) -> u32 {
        let off = (addr & !ZERO_TAG) - self.base;
        debug_assert!(off < self.len() && off % self.stride == 0);
        if self.stride == 1 << self.slice_shift {
            (off >> self.slice_shift) as u32
        } else {
            (off / self.stride) as u32
        }
    }

    /// The region was retired (it refuses takers; it may still have slices out).
    pub(crate) fn is_retired(&self) -> bool {
        self.hot.state.load(Ordering::Acquire) & RETIRED != 0
    }

    /// Retires the region if it is empty: CAS `0 → RETIRED | 1`. On success the caller owns one
    /// reference and must unlink the region, then [`Region::drop_ref`] it.
    pub(crate) fn try_retire_empty(&self) -> bool {
        self.hot
            .state
            .compare_exchange(0, RETIRED | 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Retires the region whatever its count (the pool is closing), taking a reference of the
    /// caller's own. Returns whether it was empty. Must not be called twice on one region (only
    /// the class, under its lock, retires, and it unlinks what it retired).
    pub(crate) fn retire(&self) -> bool {
        let prev = self.hot.state.fetch_add(RETIRED | 1, Ordering::AcqRel);
        assert_eq!(prev & RETIRED, 0, "region retired twice");
        prev == 0
    }
}

/// The outcome of dropping references on a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// Slices remain out.
    InUse,
    /// The count reached zero on a live region: it is empty (and can be retired).
    Emptied,
    /// The count reached zero on a retired region: the caller destroyed it.
    Destroyed,
}

/// Gives slices back to `region`: pushes them onto its free stack, then drops their count.
///
/// # Safety
///
/// * Every address in `addrs` is a slice of `region` owned by the caller (counted in its state).
/// * `guard` was pinned before the call (the region may be destroyed by this call or, right after
///   the decrement, by another thread; the guard keeps its metadata readable meanwhile).
pub(crate) unsafe fn give_back(region: RegionRef, addrs: &[usize], guard: &Guard) -> Released {
    // SAFETY: the caller owns slices of the region, so it is alive.
    let r = unsafe { region.get() };
    r.owner
        .counts()
        .returned(r.class, addrs.len() * r.slice_bytes);
    // SAFETY: forwarded from the caller.
    unsafe { give_back_uncounted(region, addrs.iter().copied(), guard) }
}

/// [`give_back`] without telling the pool's out-of-free-list counts: the caller counts the
/// slices later with `SliceCounts::returned` (a thread cache batches that, see
/// `thread_cache`).
///
/// # Safety
///
/// As for [`give_back`].
pub(crate) unsafe fn give_back_uncounted(
    region: RegionRef,
    addrs: impl ExactSizeIterator<Item = usize>,
    guard: &Guard,
) -> Released {
    // SAFETY: the caller owns slices of the region, so it is alive (count > 0).
    let r = unsafe { region.get() };
    let n = addrs.len();
    // One chain, linked straight from the addresses (no scratch array to clear).
    r.hot.free.push_all(addrs.map(|a| r.index_of(a)));
    // Tell the purger (after the push: a pass that clears the hint and then pops either finds
    // these slices or sees the hint set again).
    if r.hot.released.load(Ordering::Relaxed) == 0 {
        r.hot.released.store(1, Ordering::Relaxed);
    }
    // SAFETY: forwarded from the caller: these are its counted slices, and it is pinned.
    unsafe { drop_ref(region, n, guard) }
}

/// Drops `n` references (slices or a retirer's reference) from `region`; destroys it when the
/// word reaches `RETIRED` with count zero.
///
/// # Safety
///
/// * The caller owns `n` references counted in the region's state.
/// * `guard` was pinned before the call.
pub(crate) unsafe fn drop_ref(region: RegionRef, n: usize, guard: &Guard) -> Released {
    // SAFETY: the caller's references keep the region alive until the decrement, and its pin keeps
    // the metadata readable after it.
    let r = unsafe { region.get() };
    let prev = r.hot.state.fetch_sub(n, Ordering::AcqRel);
    debug_assert!(prev & !RETIRED >= n, "region count underflow");
    let now = prev - n;
    if prev == r.slices as usize {
        // Full to not full (a live region: `prev` has no `RETIRED` bit): list it with its class
        // as having room again. Only this step out of full needs it, so a give-back to a region
        // with room already takes no lock.
        // SAFETY: a live class region of its owner, kept readable by the caller's pin.
        unsafe { r.owner.reports().region_has_room(region) };
    }
    if now == RETIRED {
        // SAFETY: we moved the word to RETIRED|0: no slice is out and no one can take one, and this
        // transition happens once, so we are the only destroyer.
        unsafe { destroy(region, guard) };
        Released::Destroyed
    } else if now == 0 {
        Released::Emptied
    } else {
        Released::InUse
    }
}

/// Unmaps the region's memory now and frees its metadata after the grace period.
///
/// # Safety
///
/// * The caller moved the state word to `RETIRED` with count zero, and the region is no longer in
///   its class's list.
/// * `guard` is pinned.
unsafe fn destroy(region: RegionRef, guard: &Guard) {
    // SAFETY: the caller's pin keeps the metadata alive for this call.
    let r = unsafe { region.get() };
    let memory = r.memory.lock().take();
    debug_assert!(memory.is_some(), "region destroyed twice");
    if let Some(memory) = memory {
        let len = memory.mapping.len();
        // Observers (io_uring fixed-buffer tables) let go of the memory before it is unmapped.
        r.owner.reports().region_unmapping(r);
        drop(memory);
        r.owner.reports().region_unmapped(r, len);
    }
    // SAFETY: the region was allocated by `Owned::new` (see `ClassPool::grow`) and is unreachable
    // from the class list; threads that loaded it before the unlink are pinned, and the deferred
    // free runs only after they unpin.
    unsafe { guard.defer_destroy(Shared::from(region.0.as_ptr() as *const Region)) };
}

/// Allocates region metadata where epoch reclamation can later free it (`defer_destroy` frees
/// it as the `Box` it is).
pub(crate) fn into_ref(region: Region) -> RegionRef {
    RegionRef(NonNull::from(Box::leak(Box::new(region))))
}

/// What [`purge`] gives back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PurgeMode {
    /// Every dirty free slice (`trim()`).
    All,
    /// Dirty free slices the previous pass already found free ([`AGED`]); the others are marked
    /// aged for the next pass (the decay purger, which the models leave out).
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    Aged,
}

/// What one [`purge`] of a region did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Bytes discarded.
    pub(crate) bytes: usize,
    /// The region was empty before the purge reserved its free slices.
    pub(crate) was_empty: bool,
    /// What dropping the purge's reservation did (`Emptied`: the caller reports it).
    pub(crate) outcome: Option<Released>,
}

/// Gives the pages of `region`'s dirty free slices back to the OS (see the module docs) and
/// marks them [`PURGED`]: they read zero, so `allocate_zeroed` does not clear them again.
///
/// Anonymous regions use `MADV_DONTNEED` (the next touch maps a zero page); file-backed ones
/// `MADV_REMOVE` (the file's blocks are freed, as `fallocate(PUNCH_HOLE | KEEP_SIZE)` would).
/// A slice the OS refused to discard goes back unmarked.
///
/// # Safety
///
/// * `guard` is pinned, and `region` was reachable from its class list under it.
pub(crate) unsafe fn purge(region: RegionRef, mode: PurgeMode, guard: &Guard) -> Purged {
    // SAFETY: the caller's pin and the list it loaded `region` from keep the metadata readable.
    let r = unsafe { region.get() };
    let mut done = Purged::default();
    if !r.purgeable || r.hot.released.load(Ordering::Relaxed) == 0 {
        return done;
    }
    // Cleared before the pops: a give-back that pushes after them sets it again.
    r.hot.released.store(0, Ordering::Relaxed);
    // Reserve every free slice, as a take does (refused once retired).
    let mut cur = r.hot.state.load(Ordering::Relaxed);
    let n = loop {
        if cur & RETIRED != 0 {
            return done;
        }
        let n = r.slices as usize - cur;
        if n == 0 {
            return done;
        }
        match r
            .hot
            .state
            .compare_exchange_weak(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => break n,
            Err(actual) => cur = actual,
        }
    };
    done.was_empty = cur == 0;
    let mut popped = vec![0usize; n];
    // As in `take`: a reservation always finds its slices on the stack.
    let got = r.hot.free.pop_into(&mut popped);
    assert_eq!(got, n, "region free stack shorter than its reservation");
    // The slices are ours now: nobody else can pop them, and the region cannot be destroyed
    // while our reservation counts them.
    let fresh = r.hot.fresh_mark.load(Ordering::Acquire) as usize;
    let mut back: Vec<u32> = Vec::with_capacity(n);
    let mut dirty: Vec<u32> = Vec::new();
    let mut aged_left = false;
    for &e in &popped {
        let i = (e & ((1 << MARK_SHIFT) - 1)) as u32;
        let marks = (e >> MARK_SHIFT) as u32;
        if marks & PURGED != 0 || i as usize >= fresh {
            // Known zero: purged before, or never handed out (marked, so a later take that
            // finds it below a moved watermark still knows).
            back.push(i | PURGED);
        } else if mode == PurgeMode::All || marks & AGED != 0 {
            dirty.push(i);
        } else {
            back.push(i | AGED);
            aged_left = true;
        }
    }
    if !dirty.is_empty() {
        dirty.sort_unstable();
        let memory = r.memory.lock();
        let memory = memory
            .as_ref()
            .expect("a region with a reservation is mapped");
        let file_backed = memory.file_backed;
        let size = r.slice_size();
        let mut start = 0;
        while start < dirty.len() {
            let mut end = start + 1;
            while end < dirty.len() && dirty[end] == dirty[end - 1] + 1 {
                end += 1;
            }
            let offset = dirty[start] as usize * r.stride;
            let len = (end - start - 1) * r.stride + size;
            // SAFETY: the slices `dirty[start..end]` (and, stride being the size for purgeable
            // regions, the bytes between them) are ours alone: popped under our reservation, so
            // no segment, cache or other taker holds them, and no pointer into them is in use.
            let result = unsafe { memory.mapping.discard(offset, len, file_backed) };
            match result {
                Ok(()) => {
                    back.extend(dirty[start..end].iter().map(|&i| i | PURGED));
                    done.bytes += (end - start) * size;
                }
                Err(e) => {
                    tracing::warn!(target: "segpool", region = r.id, error = %e, "purge refused");
                    back.extend_from_slice(&dirty[start..end]);
                }
            }
            start = end;
        }
    }
    r.hot.free.push_marked(back);
    if aged_left {
        r.hot.released.store(1, Ordering::Relaxed);
    }
    // SAFETY: the reservation is ours (n slices counted above, all pushed back); pinned.
    done.outcome = Some(unsafe { drop_ref(region, n, guard) });
    done
}
