//! The fault ranges: the table of our file-mapped address ranges, fixed capacity, read lock-free
//! from the SIGBUS handler.
//!
//! # Algorithm
//!
//! A static array of [`CAPACITY`] slots. Each slot holds one range (`start..end`), whether its
//! replacement page may be writable, and a raw pointer to the [`FileFaultState`] that a fault in
//! the range poisons. Writers (register, deregister) are serialised by an ordinary mutex that the
//! handler never touches; the handler reads slots without any lock:
//!
//! * **A seqlock per slot** (`seq`, odd while a writer changes the slot) gives the handler a
//!   consistent `(start, end, writable, state)` tuple or tells it to read again.
//! * **A per-slot reader count** (`readers`) keeps the state alive while the handler uses it. The
//!   handler increments `readers` *before* it reads `seq`; deregistration makes `seq` odd *before*
//!   it reads `readers`, and waits for zero. Both sides use `SeqCst`, so (the store-buffering
//!   argument) at least one of them sees the other: either the handler sees the slot changing and
//!   does not use the pointer, or deregistration sees the handler inside and waits for it to
//!   leave. Only then does the registration drop its `Arc`, so the handler never dereferences a
//!   freed state.
//! * **A high-water mark** (`used`) bounds the handler's scan to slots ever handed out.
//!
//! The slots use `core::sync::atomic` directly, not the `crate::sync` shim: the signal handler
//! must use plain lock-free hardware atomics, which model-checker atomics are not.

use core::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::sync::{Arc, Mutex};

use super::FileFaultState;

/// How many ranges can be registered at once, process-wide.
///
/// Every live file mapping of the file layer (each `MappedFile` window, each `SharedMemory`)
/// takes one slot (a `Backing::File` pool's regions take none: their faults are not caught). 4096 is far above what one process keeps mapped in
/// practice and small enough for the handler to scan quickly (it only scans slots ever used).
/// When all are taken, registering fails: the mapping is refused rather than left unprotected.
pub const CAPACITY: usize = 4096;

/// How often the handler re-reads a slot that keeps changing under it before giving up on it. A
/// slot only changes when it is (de)registered, under the writers' mutex, so a few retries suffice;
/// the bound keeps the handler from spinning if it interrupted a writer on its own thread.
const MAX_READ_RETRIES: usize = 64;

struct Slot {
    /// Seqlock: odd while a writer is changing the fields below.
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    writable: AtomicBool,
    /// Kept alive by the `Arc` in the registration that owns this slot; null when free.
    state: AtomicPtr<FileFaultState>,
    /// Handlers currently holding `state` from this slot.
    readers: AtomicUsize,
}

impl Slot {
    const fn free() -> Slot {
        Slot {
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            writable: AtomicBool::new(false),
            state: AtomicPtr::new(std::ptr::null_mut()),
            readers: AtomicUsize::new(0),
        }
    }

    /// Writes the slot under its seqlock. Caller holds the writers' mutex.
    fn write(&self, start: usize, end: usize, writable: bool, state: *mut FileFaultState) {
        let seq = self.seq.load(Ordering::Relaxed);
        debug_assert!(seq % 2 == 0);
        // SeqCst: deregistration's "seq odd, then read readers" must not be reordered (see the
        // module docs).
        self.seq.store(seq.wrapping_add(1), Ordering::SeqCst);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.writable.store(writable, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
        // Release: a reader that sees the new even value sees the fields above.
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// A consistent snapshot of the slot, or `None` if it is free, changing, or kept changing.
    /// Async-signal-safe.
    fn read(&self) -> Option<(usize, usize, bool, *mut FileFaultState)> {
        for _ in 0..MAX_READ_RETRIES {
            let s1 = self.seq.load(Ordering::SeqCst);
            if s1 % 2 == 1 {
                // Being (de)registered: a range being registered is not protected yet, one being
                // deregistered no longer is (its owner is about to unmap it and no access may be
                // running). Retry a bounded number of times in case it is a re-registration.
                core::hint::spin_loop();
                continue;
            }
            let start = self.start.load(Ordering::Relaxed);
            let end = self.end.load(Ordering::Relaxed);
            let writable = self.writable.load(Ordering::Relaxed);
            let state = self.state.load(Ordering::Relaxed);
            // Acquire fence: the field loads above complete before `seq` is read again.
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (!state.is_null()).then_some((start, end, writable, state));
            }
        }
        None
    }
}

/// The slot array. Statics so the handler reaches them without any pointer that could dangle.
static SLOTS: [Slot; CAPACITY] = [const { Slot::free() }; CAPACITY];

/// Number of slots ever handed out: the handler scans `SLOTS[..used]`. Only grows.
static USED: AtomicUsize = AtomicUsize::new(0);

/// Free slots below the high-water mark; only writers touch it, under its mutex.
static FREE: std::sync::LazyLock<Mutex<Vec<usize>>> =
    std::sync::LazyLock::new(|| Mutex::new(Vec::new()));

/// A range found for a faulting address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit {
    /// The registered range (page-aligned).
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Whether the range was mapped writable (the replacement page gets the same access).
    pub(crate) writable: bool,
}

/// Error of [`insert`]: every slot is taken.
#[derive(Debug)]
pub(crate) struct Full;

/// Occupies a free slot with `start..end` (page-aligned by the caller) and `state`, whose `Arc`
/// the caller keeps until [`remove`] returned. Returns the slot index.
pub(crate) fn insert(
    start: usize,
    end: usize,
    writable: bool,
    state: &Arc<FileFaultState>,
) -> Result<usize, Full> {
    let mut free = FREE.lock();
    let index = match free.pop() {
        Some(i) => i,
        None => {
            let i = USED.load(Ordering::Relaxed);
            if i == CAPACITY {
                return Err(Full);
            }
            i
        }
    };
    SLOTS[index].write(start, end, writable, Arc::as_ptr(state).cast_mut());
    // Publish the high-water mark after the slot is written, so a handler scanning up to it finds
    // a complete slot.
    if index == USED.load(Ordering::Relaxed) {
        USED.store(index + 1, Ordering::Release);
    }
    Ok(index)
}

/// Frees slot `index`, then waits until no handler still holds the state pointer it had. When
/// this returns the caller may drop the state's `Arc`.
pub(crate) fn remove(index: usize) {
    let slot = &SLOTS[index];
    {
        let mut free = FREE.lock();
        slot.write(0, 0, false, std::ptr::null_mut());
        free.push(index);
    }
    // The clearing write made `seq` odd with SeqCst before this SeqCst load: a handler that
    // incremented `readers` before that either saw the change or is counted here.
    while slot.readers.load(Ordering::SeqCst) != 0 {
        // A handler holds the state only while it poisons it (a few atomic stores), so this wait
        // is short. The handler runs on another thread: this thread is not inside it.
        crate::sync::spin_hint();
        std::thread::yield_now();
    }
}

/// How many slots are taken right now.
pub(crate) fn registered() -> usize {
    let free = FREE.lock();
    USED.load(Ordering::Relaxed) - free.len()
}

/// Finds every registered range containing `addr` and calls `poison` with its state while the
/// state is pinned; returns the first range found. Async-signal-safe: no lock, no allocation,
/// bounded work.
pub(crate) fn poison_ranges_containing(
    addr: usize,
    mut poison: impl FnMut(&FileFaultState),
) -> Option<Hit> {
    let used = USED.load(Ordering::Acquire);
    let mut first = None;
    for slot in &SLOTS[..used] {
        // Cheap unpinned look first, so a fault costs one atomic increment per *matching* slot
        // rather than per slot.
        match slot.read() {
            Some((start, end, _, _)) if (start..end).contains(&addr) => {}
            _ => continue,
        }
        // Pin, then read again: only a snapshot taken while pinned may be dereferenced.
        slot.readers.fetch_add(1, Ordering::SeqCst);
        if let Some((start, end, writable, state)) = slot.read() {
            if (start..end).contains(&addr) {
                // SAFETY: the snapshot was read after `readers` was incremented (SeqCst), and
                // the slot still held it, so the registration that owns the `Arc` behind `state`
                // had not started deregistering when we pinned; its `remove` waits for `readers`
                // to drop to zero before the `Arc` may be dropped. So `state` points to a live
                // `FileFaultState` until the decrement below.
                poison(unsafe { &*state });
                first.get_or_insert(Hit {
                    start,
                    end,
                    writable,
                });
            }
        }
        slot.readers.fetch_sub(1, Ordering::SeqCst);
    }
    first
}

#[cfg(all(test, not(any(loom, shuttle))))]
mod tests {
    //! The ranges' protocol without signals: threads playing the handler scan the ranges
    //! while others register and deregister ranges. These ranges are plain numbers, never
    //! touched as memory, so no mapping is needed.

    use super::*;
    use crate::fault::FileFaultState;
    use std::sync::atomic::AtomicBool as StdBool;

    /// Fake addresses far from anything mapped (the ranges never dereference them).
    const BASE: usize = 0x7000_0000_0000;
    const SPAN: usize = 1 << 20;

    /// The tests below fill or watch the one process-wide table: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    const ROUNDS: usize = 5_000;

    #[test]
    fn a_state_is_never_poisoned_after_its_registration_is_removed() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let stop = StdBool::new(false);
        // The address the owner has registered right now, so the "handler" looks where it matters.
        let target = AtomicUsize::new(BASE);
        /// Stops the "handler" however the scope ends, so a failing owner cannot hang the test.
        struct StopOnDrop<'a>(&'a StdBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let hit = std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            // The "handler": poisons whatever is registered at the target address, non-stop.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let addr = target.load(Ordering::Relaxed) + 123;
                    poison_ranges_containing(addr, |state| state.mark_faulted(addr));
                }
            });
            // The owner: register, deregister, then check nothing poisons the state any more.
            let mut hit = 0;
            for round in 0..ROUNDS {
                let state = FileFaultState::new(None);
                let start = BASE + (round % 4) * SPAN;
                target.store(start, Ordering::Relaxed);
                let index = insert(start, start + SPAN, true, &state).unwrap();
                // Stay registered until the handler found us (or a while): the removal below
                // then races with a handler that is still inside this slot.
                for _ in 0..1_000 {
                    if state.fault_count() > 0 {
                        break;
                    }
                    crate::sync::spin_hint();
                }
                remove(index);
                let after_remove = state.fault_count();
                hit += usize::from(after_remove > 0);
                // Give a stale handler the chance to show up.
                for _ in 0..200 {
                    crate::sync::spin_hint();
                }
                assert_eq!(
                    state.fault_count(),
                    after_remove,
                    "poisoned after deregistration"
                );
            }
            hit
        });
        // The handler did find registered ranges (the test exercised the race at all).
        println!("{hit} of {ROUNDS} registrations were hit while registered");
        assert!(hit > 0, "no registration was ever hit by the handler");
        assert_eq!(registered(), 0);
    }

    #[test]
    fn full_ranges_are_refused_then_have_room_again() {
        // Nothing else in the library's test binary registers (and `SERIAL` keeps the other
        // ranges test out): fill them completely.
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let state = FileFaultState::new(None);
        let before = registered();
        let mut taken = Vec::new();
        while let Ok(i) = insert(BASE, BASE + 4096, false, &state) {
            taken.push(i);
        }
        assert_eq!(registered(), CAPACITY);
        assert_eq!(taken.len(), CAPACITY - before);
        let freed = taken.pop().unwrap();
        remove(freed);
        assert!(insert(BASE, BASE + 4096, false, &state)
            .map(|i| taken.push(i))
            .is_ok());
        for i in taken {
            remove(i);
        }
        assert_eq!(registered(), before);
    }
}
