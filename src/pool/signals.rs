//! The signals word: the one word of a pool that the allocate and release fast paths read.
//!
//! Its high bits are the trim generation: `trim()`, a budget shortage and closing the pool move
//! it, and every thread that sees it moved gives its cached slices back before it goes on (see
//! `crate::pool::thread_cache`). Its low bits count the allocations of the pool queued on its
//! budget (`crate::budget`, `crate::pool::wait`): while there is one, releases skip the caches, so
//! the waiter gets the slice it waits for.

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicU64, Ordering};

/// One word read on every allocate and release of a pool: the trim generation in the high bits,
/// the number of allocations of this pool queued on its budget in the low [`WAITER_BITS`] bits.
#[derive(Debug)]
pub(crate) struct Signals {
    word: CachePadded<AtomicU64>,
}

/// Bits of the signals word that count waiters.
pub(crate) const WAITER_BITS: u32 = 20;
/// Mask of the waiter count.
pub(crate) const WAITER_MASK: u64 = (1 << WAITER_BITS) - 1;

impl Signals {
    pub(crate) fn new() -> Self {
        Self {
            word: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The current word (trim generation and waiter count).
    #[inline(always)]
    pub(crate) fn load(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// Moves the trim generation: every thread gives its cache back on its next call.
    pub(crate) fn bump_generation(&self) {
        self.word.fetch_add(1 << WAITER_BITS, Ordering::AcqRel);
    }

    /// Whether two words have the same trim generation.
    #[inline(always)]
    pub(crate) fn same_generation(a: u64, b: u64) -> bool {
        (a ^ b) >> WAITER_BITS == 0
    }

    /// An allocation of this pool is queued: releases skip the caches from now on. (More than
    /// 2^20 - 1 at once would carry into the generation: harmless, every cache gives back once.)
    pub(crate) fn add_waiter(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn remove_waiter(&self) {
        self.word.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether an allocation of this pool is queued.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.load() & WAITER_MASK != 0
    }
}
