//! Reader slots: one word per thread, written only by its owner, that names the gate the thread
//! is inside on the fast path (the gate's protocol, in `gate/mod.rs`). The slots of all live
//! threads that entered a gate are listed process-wide, so that a resizer can scan them for its
//! gate; a thread's slot leaves the list when the thread exits.

use crate::sync::atomic::{AtomicUsize, Ordering};

/// What a [`ReaderSlot`] holds when it names no gate (a gate's address is never this small).
/// Free, and this thread's fences are compiler fences (the process uses `membarrier`).
pub(super) const FREE: usize = 0;
/// Free, and this thread's fences are `fence(SeqCst)` (no `membarrier`).
pub(super) const FREE_FENCED: usize = 1;
/// The thread has not entered a gate yet: the slot is not listed.
pub(super) const UNLISTED: usize = 2;
/// The thread is exiting and its slot left the list: accesses are counted.
#[cfg_attr(any(loom, shuttle), allow(dead_code))]
pub(super) const RETIRED: usize = 3;

/// One thread's announcement of the gate it is inside on the fast path. Each thread's slot is a
/// thread-local (one load from the thread pointer on the fast path, no pointer to chase), listed
/// among the process's reader slots while the thread lives.
///
/// # Invariants
///
/// * Only the owning thread writes `gate`; other threads (resizers) only load it, through the
///   list of reader slots.
/// * `gate` is the address of the [`Gate`](super::Gate) the owner is inside on the fast path,
///   from its store in [`Gate::try_enter_in`](super::Gate::try_enter_in) to the store that ends
///   that access (or backs out of the entry); otherwise it is [`FREE`] or [`FREE_FENCED`] (which
///   fence the owner uses, chosen when the slot was listed), or [`UNLISTED`] / [`RETIRED`] (the
///   slot is not listed and the owner only makes counted accesses).
#[derive(Debug)]
pub(crate) struct ReaderSlot {
    pub(super) gate: AtomicUsize,
}

impl ReaderSlot {
    /// A free slot whose owner uses `fence(SeqCst)` (the loom model owns such slots).
    #[cfg_attr(not(all(loom, test)), allow(dead_code))]
    pub(crate) fn fenced() -> Self {
        ReaderSlot {
            gate: AtomicUsize::new(FREE_FENCED),
        }
    }

    /// Whether a thread announces being inside the gate at `addr`. `Acquire`: if the slot was
    /// cleared by a leave, that access's loads and stores happen before what the caller does
    /// next.
    #[cfg_attr(any(loom, shuttle), allow(dead_code))]
    pub(crate) fn names(&self, addr: usize) -> bool {
        self.gate.load(Ordering::Acquire) == addr
    }
}

#[cfg(all(test, not(any(miri, loom, shuttle))))]
pub(super) use list::count;
pub(super) use list::{add, any_names, current};

/// The list of reader slots: the slot of every live thread that entered a gate.
#[cfg(not(any(loom, shuttle)))]
mod list {
    use std::cell::Cell;
    use std::sync::OnceLock;

    use super::{AtomicUsize, Ordering, ReaderSlot, FREE, FREE_FENCED, RETIRED, UNLISTED};
    use crate::fs::gate::barrier;
    use crate::sync::Mutex;

    /// A listed slot: a pointer into a live thread's thread-local storage.
    struct Listed(*const ReaderSlot);

    // SAFETY: the pointer is only dereferenced under the list's lock, and a thread removes its
    // slot (under that lock) before its thread-local storage is freed (`Owner`'s drop runs
    // first), so the pointee is alive whichever thread holds the lock.
    unsafe impl Send for Listed {}

    fn slots() -> &'static Mutex<Vec<Listed>> {
        static SLOTS: OnceLock<Mutex<Vec<Listed>>> = OnceLock::new();
        SLOTS.get_or_init(|| Mutex::new(Vec::new()))
    }

    std::thread_local! {
        /// This thread's slot. No destructor, so usable at any time, also from other
        /// thread-locals' destructors; its storage lives until the thread is gone.
        static SLOT: ReaderSlot = const {
            ReaderSlot {
                gate: AtomicUsize::new(UNLISTED),
            }
        };
        /// Takes the slot out of the list when the thread exits.
        static OWNER: Owner = const { Owner(Cell::new(false)) };
    }

    struct Owner(Cell<bool>);

    impl Drop for Owner {
        fn drop(&mut self) {
            if self.0.get() {
                SLOT.with(|slot| {
                    debug_assert!(
                        slot.gate.load(Ordering::Relaxed) <= FREE_FENCED,
                        "a thread exits inside an access"
                    );
                    // From here on this thread's accesses are counted: nobody scans the slot.
                    slot.gate.store(RETIRED, Ordering::Relaxed);
                    let me: *const ReaderSlot = slot;
                    slots().lock().retain(|r| r.0 != me);
                });
            }
        }
    }

    /// This thread's slot.
    #[inline]
    pub(in crate::fs::gate) fn current<'a>() -> Option<&'a ReaderSlot> {
        let p: *const ReaderSlot = SLOT.with(|s| s as *const ReaderSlot);
        // SAFETY: a thread-local's storage lives as long as its thread, and the reference does
        // not leave the thread: it goes into an `AccessGuard`, which is not `Send` and borrows
        // the gate for no longer than the caller's access (which ends before the thread does).
        Some(unsafe { &*p })
    }

    /// Puts this thread's slot (`slot`, from [`current`]) in the list and frees it.
    pub(in crate::fs::gate) fn add(slot: &ReaderSlot) {
        let free = if barrier::init() { FREE } else { FREE_FENCED };
        match OWNER.try_with(|o| o.0.set(true)) {
            Ok(()) => {
                slots().lock().push(Listed(slot));
                slot.gate.store(free, Ordering::Relaxed);
            }
            // Called from a thread-local destructor after `OWNER` is gone: nobody would take
            // the slot out of the list again, so it never goes in.
            Err(_) => slot.gate.store(RETIRED, Ordering::Relaxed),
        }
    }

    /// Whether any listed slot names the gate at `addr`.
    pub(in crate::fs::gate) fn any_names(addr: usize) -> bool {
        slots().lock().iter().any(|r| {
            // SAFETY: listed slots are alive while they are in the list (see `Listed`), and we
            // hold its lock.
            unsafe { &*r.0 }.names(addr)
        })
    }

    /// How many slots the list holds: one per live thread that entered a gate.
    #[cfg(all(test, not(miri)))]
    pub(in crate::fs::gate) fn count() -> usize {
        slots().lock().len()
    }
}

/// Under the models every access is counted; the loom model drives the fast path with slots of
/// its own through [`Gate::try_enter_in`](super::Gate::try_enter_in) and
/// [`Gate::resize_with`](super::Gate::resize_with).
#[cfg(any(loom, shuttle))]
mod list {
    use super::ReaderSlot;

    #[inline]
    pub(in crate::fs::gate) fn current<'a>() -> Option<&'a ReaderSlot> {
        None
    }

    pub(in crate::fs::gate) fn add(_slot: &ReaderSlot) {}

    pub(in crate::fs::gate) fn any_names(_addr: usize) -> bool {
        false
    }
}
