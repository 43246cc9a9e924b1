//! A lock-free stack of free slice indices: where allocators find a region's free slices.
//!
//! A Treiber stack over an index array. The links live beside the slices, never inside them:
//! writing a link into a free slice would touch (and fault in) memory nobody asked for, and would
//! overwrite the poison pattern the diagnostics rely on.
//!
//! The head packs a 32-bit tag with `index + 1` (0 means empty). Every successful CAS bumps the
//! tag, so a pop that read `next[top]` before another thread popped `top` and pushed it back with a
//! different link fails its CAS instead of installing a stale link (the ABA problem). A tag wraps
//! after 2^32 operations on one region between a thread's load and its CAS, which cannot happen in
//! the microseconds that window lasts.
//!
//! # Marks
//!
//! The top bits of `next[i]` say something about slice `i` itself, not about its successor:
//! [`PURGED`] (its pages were given back to the OS: it reads zero) and [`AGED`] (the decay purger
//! found it free on a pass and will purge it on the next one if it is still free). They are
//! written with the link by whoever pushes `i` (so an ordinary give-back clears them: the slice
//! may be dirty) and read with it by the pop that takes `i`, under the same ordering as the link.
//! Indices stay below `2^29` (a region has at most 2^18 slices), so the marks never meet a link.

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const EMPTY: u32 = 0;

/// Mark: the slice's pages were purged since it was last handed out (it reads zero).
pub(crate) const PURGED: u32 = 1 << 31;
/// Mark: the decay purger saw the slice free (and not purged) on its last pass.
pub(crate) const AGED: u32 = 1 << 30;
/// Both marks.
pub(crate) const MARKS: u32 = PURGED | AGED;
/// Where [`FreeStack::pop_into`] puts an entry's marks (the index is below `2^32`).
pub(crate) const MARK_SHIFT: u32 = 32;

/// The free slices of one region.
///
/// # Invariants
///
/// * Each index `0..len` is either on the stack exactly once or owned by exactly one party (a
///   reservation in progress, a thread cache, or a live segment).
/// * `next[i]` is written only by the party that owns `i`, before it pushes `i`; while `i` is on
///   the stack its link does not change.
#[derive(Debug)]
pub(crate) struct FreeStack {
    head: AtomicU64,
    next: Box<[AtomicU32]>,
}

fn pack(tag: u32, top: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(top)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

impl FreeStack {
    /// A stack holding every index `0..len`, lowest on top (so a fresh region is handed out in
    /// address order).
    pub(crate) fn full(len: u32) -> Self {
        let next = (0..len)
            .map(|i| AtomicU32::new(if i + 1 < len { i + 2 } else { EMPTY }))
            .collect();
        let top = if len > 0 { 1 } else { EMPTY };
        Self {
            head: AtomicU64::new(pack(0, top)),
            next,
        }
    }

    /// Pops up to `out.len()` indices into `out`; returns how many. One CAS for the whole batch:
    /// the links walked are stable while the tag is unchanged (see the invariants). (`usize`
    /// entries: the caller turns each index into an address in place.) Each entry carries the
    /// slice's marks shifted by [`MARK_SHIFT`]: `index | (marks as usize) << MARK_SHIFT`.
    pub(crate) fn pop_into(&self, out: &mut [usize]) -> usize {
        if out.is_empty() {
            return 0;
        }
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (tag, top) = unpack(head);
            if top == EMPTY {
                return 0;
            }
            self.prefetch_links(top);
            let mut n = 0;
            let mut cur = top;
            while cur != EMPTY && n < out.len() {
                let link = self.next[(cur - 1) as usize].load(Ordering::Relaxed);
                out[n] = (cur - 1) as usize | ((link & MARKS) as usize) << MARK_SHIFT;
                n += 1;
                cur = link & !MARKS;
            }
            match self.head.compare_exchange_weak(
                head,
                pack(tag.wrapping_add(1), cur),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return n,
                Err(actual) => head = actual,
            }
        }
    }

    /// Starts loading, all at once, the lines of `next` that a walk from `top` will read (the
    /// whole array when it is at most `PREFETCH_LINES` lines, else that many lines around `top`).
    ///
    /// When one thread allocates and another releases, the top of the stack is often the chain
    /// the other thread just pushed: its links sit in lines that the other core wrote. Walked one
    /// dependent load at a time, each line costs a cross-core miss in turn; prefetched, the
    /// misses overlap (docs/design.md, "The batch path"). A prefetch is only a hint: it changes
    /// no value and cannot fault.
    #[inline]
    fn prefetch_links(&self, top: u32) {
        const PER_LINE: usize = 64 / std::mem::size_of::<u32>();
        const PREFETCH_LINES: usize = 64;
        const WINDOW: usize = PER_LINE * PREFETCH_LINES;
        let len = self.next.len();
        let (start, end) = if len <= WINDOW {
            (0, len)
        } else {
            let s = (top.saturating_sub(1) as usize)
                .saturating_sub(WINDOW / 2)
                .min(len - WINDOW);
            (s, s + WINDOW)
        };
        #[cfg(all(target_arch = "x86_64", not(loom), not(shuttle)))]
        for i in (start..end).step_by(PER_LINE) {
            // SAFETY: `i < len`, so the pointer is inside `next`; a prefetch reads nothing into
            // the program and cannot fault.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.next.as_ptr().add(i).cast::<i8>(),
                );
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(shuttle))))]
        let _ = (start, end);
    }

    /// Links `indices` into a chain (in their order) and pushes it with one CAS. The caller owns
    /// every index. The slices' marks are cleared (they may be dirty now).
    pub(crate) fn push_all(&self, indices: impl IntoIterator<Item = u32>) {
        self.push_marked(indices);
    }

    /// [`push_all`](Self::push_all) where each item is `index | marks` ([`PURGED`], [`AGED`]):
    /// the marks are stored with the slice's link.
    pub(crate) fn push_marked(&self, items: impl IntoIterator<Item = u32>) {
        let mut items = items.into_iter();
        let Some(first) = items.next() else {
            return;
        };
        let mut last = first;
        for item in items {
            self.next[(last & !MARKS) as usize]
                .store(((item & !MARKS) + 1) | (last & MARKS), Ordering::Relaxed);
            last = item;
        }
        let first = first & !MARKS;
        let (last, last_marks) = (last & !MARKS, last & MARKS);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let (tag, top) = unpack(head);
            self.next[last as usize].store(top | last_marks, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(tag.wrapping_add(1), first + 1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }
}

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests {
    use super::*;

    #[test]
    fn pops_in_address_order_and_round_trips() {
        let s = FreeStack::full(5);
        let mut out = [0usize; 3];
        assert_eq!(s.pop_into(&mut out), 3);
        assert_eq!(out, [0, 1, 2]);
        s.push_all([1, 0]);
        let mut all = [9usize; 8];
        assert_eq!(s.pop_into(&mut all), 4);
        assert_eq!(&all[..4], &[1, 0, 3, 4]);
        assert_eq!(s.pop_into(&mut all), 0);
    }

    #[test]
    fn marks_travel_with_their_slice_and_a_plain_push_clears_them() {
        let s = FreeStack::full(4);
        let mut out = [0usize; 4];
        assert_eq!(s.pop_into(&mut out), 4);
        s.push_marked([2 | PURGED, 0, 3 | AGED, 1 | PURGED]);
        let mut got = [0usize; 4];
        assert_eq!(s.pop_into(&mut got), 4);
        let m = |v: u32| (v as usize) << MARK_SHIFT;
        assert_eq!(got, [2 | m(PURGED), 0, 3 | m(AGED), 1 | m(PURGED)]);
        s.push_all([1, 2]);
        let mut again = [0usize; 4];
        assert_eq!(s.pop_into(&mut again), 2);
        assert_eq!(&again[..2], &[1, 2]);
    }
}
