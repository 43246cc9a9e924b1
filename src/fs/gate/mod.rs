//! The access gate: lets any number of accesses to a file's mapped memory run at once, and lets
//! a resize (cutting the file, replacing a mapping) wait until none is running.
//!
//! Why it exists: cutting a file under a running copy makes that copy fault (SIGBUS), which
//! poisons the file for every handle; and a mapping may only be unmapped once nobody copies
//! through it.
//!
//! # The protocol: an asymmetric fence
//!
//! Accesses are the hot path (a warm 64-byte `read_at` is a few ns of copying), resizes are rare.
//! So an access does no locked read-modify-write on shared memory; the resizer pays instead, like
//! the readers and the writer of userspace RCU with `membarrier`.
//!
//! * Every thread owns a [`ReaderSlot`], a thread-local word that only it writes, listed among
//!   the process's reader slots while the thread lives (`reader_slots.rs`). The slot says which
//!   gate the thread is inside on the fast path, or that it is free.
//! * **Enter** (fast path, the thread's slot free): store the gate's address in the slot
//!   (`Relaxed`); a *reader fence*; load the gate's `state` (`Acquire`). If `RESIZING` is set,
//!   free the slot, wake the resizer and take the slow path; else the access runs.
//! * **Leave**: free the slot (`Release`: the access's loads and stores come first); a reader
//!   fence; load `state`; if `RESIZING` is set, wake the resizer (lock, notify).
//! * **Resize**: set `RESIZING` in `state`; a *resizer barrier*; then, under the gate's mutex,
//!   wait (condition variable, with a timed re-check) until no slot names this gate and the
//!   count of counted accesses (below) is 0; mark the resize `ACTIVE` (a compare-exchange from
//!   "pending, count 0"); act; clear both bits and wake waiters.
//!
//! The two fences come in two forms, chosen once per process (`barrier::init`) and recorded in
//! each thread's slot when it is listed (the free value says which), so the fast path reads no
//! global flag:
//!
//! * with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (registered once per process): the
//!   reader fence is a compiler fence only, and the resizer barrier is the `membarrier` call,
//!   which runs a full memory barrier on every CPU running a thread of the process (and a
//!   thread that is not running passes one at its next context switch);
//! * without it (an old kernel, a seccomp filter, the loom and shuttle models): both are
//!   `fence(SeqCst)`. The loom model checks the protocol in this form; the `membarrier` form is
//!   the same protocol with the reader's fence promoted to a full barrier by the resizer's call
//!   (the argument below).
//!
//! [`Gate::try_enter`] enters the fast path; [`Gate::fast_enter`] is the same for `read_at`,
//! where every instruction counts, with the fence form fixed to `membarrier`'s.
//!
//! Why a resize never acts while a fast-path access runs. Take a reader whose slot store `S`
//! precedes its state load `L` in program order (the compiler fence keeps that order in the
//! code). With `membarrier`, the reader executes a full barrier at some point `B` while the
//! resizer is inside the call. If `B` comes after `S`, `S` is visible to every load the resizer
//! makes after the call returns: the scan sees the slot and waits for the leave. If `B` comes
//! before `S`, then `L` comes after `B`, and `B` comes after the resizer's `RESIZING` store
//! (made before the call, whose entry is a full barrier): `L` sees `RESIZING` and the reader
//! backs out before touching the mapping. With fences, it is the store-buffering pattern with a
//! `SeqCst` fence on each side: the scan sees `S`, or `L` sees `RESIZING`, or both.
//!
//! Why a leave never leaves the resizer asleep: the same argument with `S` the store of 0 and
//! `L` the check for `RESIZING`: either the resizer's scan (after the barrier; it rescans under
//! the mutex before each wait) sees the slot free, or the leaving reader sees `RESIZING` and
//! notifies under the mutex, which orders the notification after the resizer's
//! check-then-wait. The timed re-check is a second line only.
//!
//! # Nested accesses
//!
//! A thread whose slot is taken (an access inside a `with_bytes` closure, maybe on another file)
//! uses the *counted* path: `fetch_add` on `state`, `fetch_sub` when leaving, as before. A
//! `with_bytes` closure may start another access; if a resize is pending, that nested access
//! must not wait for it (the resize waits for the outer access: a deadlock), so a thread inside
//! `with_bytes` enters even while a resize is pending, unless that resize is already `ACTIVE`
//! (then the thread holds no access on this gate, the resize waits for nothing it holds, and
//! waiting is safe). A resize only becomes active while the count is 0, in one compare-exchange
//! on `state`, so such an entry is either counted before (and the resize waits for it) or sees
//! `ACTIVE`. A resize from inside `with_bytes` is refused with an error for the same reason.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

mod reader_slots;

pub(crate) use reader_slots::ReaderSlot;
use reader_slots::{FREE, FREE_FENCED, UNLISTED};

use crate::sync::atomic::{fence, AtomicU64, Ordering};
use crate::sync::{thread_local, Condvar, Mutex};

/// Set in `state` while a resize is pending or running.
const RESIZING: u64 = 1 << 63;
/// Set in `state` (with `RESIZING`) once the resize saw no access and acts.
const ACTIVE: u64 = 1 << 62;
/// The bits of `state` that count the running counted accesses.
const COUNT: u64 = !(RESIZING | ACTIVE);

thread_local! {
    /// How many `with_bytes` closures this thread is inside.
    // Not `const { .. }`: loom's `thread_local!` does not take that form.
    #[allow(clippy::missing_const_for_thread_local)]
    static SCOPED_DEPTH: Cell<usize> = Cell::new(0);
}

/// # Invariants
///
/// `state & COUNT` counts the counted accesses that are running (entered and not yet left);
/// `RESIZING` is set while a resize is pending or running, `ACTIVE` only with `RESIZING`, once
/// the resize saw the count at 0 and no [`ReaderSlot`] naming this gate after the resizer
/// barrier (see the module docs). While `ACTIVE` is set no access runs: fast-path entries back
/// out on `RESIZING`, counted entries on `RESIZING` (or, inside `with_bytes`, on `ACTIVE`).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

/// One running access; leaves the gate when dropped. Not `Send`: a fast-path access is
/// announced in the entering thread's slot, which only that thread may clear.
#[derive(Debug)]
pub(crate) struct AccessGuard<'a> {
    gate: &'a Gate,
    /// The slot that announces this access, or `None` for a counted access.
    slot: Option<&'a ReaderSlot>,
    /// The value the slot goes back to ([`FREE`] or [`FREE_FENCED`]).
    free: usize,
    _not_send: PhantomData<*const ()>,
}

/// An exclusive resize: no access runs while it lives.
#[derive(Debug)]
pub(crate) struct ResizeGuard<'a> {
    gate: &'a Gate,
}

impl Gate {
    fn addr(&self) -> usize {
        self as *const Gate as usize
    }

    /// Enters an access unless a resize is pending or running (then `None`, and the caller
    /// takes a path that waits).
    #[inline]
    pub(crate) fn try_enter(&self) -> Option<AccessGuard<'_>> {
        if let Some(slot) = reader_slots::current() {
            let free = slot.gate.load(Ordering::Relaxed);
            if free <= FREE_FENCED {
                return self.enter_announced(slot, free);
            }
            if free == UNLISTED {
                return self.list_and_enter(slot);
            }
        }
        // Nested in another access of this thread, or the thread is exiting.
        self.try_enter_counted()
    }

    #[cold]
    #[inline(never)]
    fn list_and_enter<'a>(&'a self, slot: &'a ReaderSlot) -> Option<AccessGuard<'a>> {
        reader_slots::add(slot);
        self.try_enter()
    }

    /// Enters a fast-path access if the fast path can enter at once: this thread's slot is
    /// free, its fences are compiler fences (the process uses `membarrier`), and no resize is
    /// pending. Otherwise returns `None` without entering (having woken a resizer it backed out
    /// from), and the caller takes a path that enters with [`enter`](Self::enter) (which also
    /// lists the thread's slot the first time, and runs the same protocol with
    /// `fence(SeqCst)` where `membarrier` is missing).
    ///
    /// The same protocol as [`try_enter`](Self::try_enter), for the read path, whose cost is
    /// counted in instructions: with the fence form fixed, the fences are no instructions and no
    /// branches.
    #[inline(always)]
    pub(crate) fn fast_enter(&self) -> Option<AccessGuard<'_>> {
        let slot = reader_slots::current()?;
        if slot.gate.load(Ordering::Relaxed) != FREE {
            return None;
        }
        if !self.announce(slot, FREE) {
            // The resizer may have seen the slot and wait for it.
            self.wake_resizer();
            return None;
        }
        Some(AccessGuard {
            gate: self,
            slot: Some(slot),
            free: FREE,
            _not_send: PhantomData,
        })
    }

    /// The fast path, announced in `slot`, which must be the calling thread's own slot and
    /// free; the guard must be dropped on the calling thread (it is not `Send`). For the loom
    /// model, which owns its slots.
    #[cfg_attr(not(all(loom, test)), allow(dead_code))]
    pub(crate) fn try_enter_in<'a>(&'a self, slot: &'a ReaderSlot) -> Option<AccessGuard<'a>> {
        let free = slot.gate.load(Ordering::Relaxed);
        assert!(free <= FREE_FENCED, "one fast-path access per slot");
        self.enter_announced(slot, free)
    }

    /// The fast path (module docs); `free` is the slot's value now.
    #[inline]
    fn enter_announced<'a>(&'a self, slot: &'a ReaderSlot, free: usize) -> Option<AccessGuard<'a>> {
        if self.announce(slot, free) {
            return Some(AccessGuard {
                gate: self,
                slot: Some(slot),
                free,
                _not_send: PhantomData,
            });
        }
        // A resize is pending: the resizer may have seen the slot and wait for it.
        self.wake_resizer();
        None
    }

    /// The enter of the fast path (module docs) in `slot`, free with value `free`: announces
    /// this gate in the slot and returns true, or, if a resize is pending, frees the slot again
    /// and returns false; the caller must then call [`wake_resizer`](Self::wake_resizer).
    #[inline(always)]
    fn announce(&self, slot: &ReaderSlot, free: usize) -> bool {
        slot.gate.store(self.addr(), Ordering::Relaxed);
        barrier::reader(free);
        // Acquire: pairs with the `Release` that ends a resize, so the mapping and length a
        // finished resize installed are what the access reads.
        if self.state.load(Ordering::Acquire) & RESIZING == 0 {
            return true;
        }
        slot.gate.store(free, Ordering::Release);
        false
    }

    #[inline]
    fn try_enter_counted(&self) -> Option<AccessGuard<'_>> {
        let s = self.state.fetch_add(1, Ordering::Acquire);
        if s & RESIZING == 0 {
            return Some(AccessGuard::counted(self));
        }
        self.leave_counted();
        None
    }

    /// Enters an access, waiting while a resize runs.
    pub(crate) fn enter(&self) -> AccessGuard<'_> {
        loop {
            if let Some(g) = self.try_enter() {
                return g;
            }
            if in_scoped_access() {
                // Nested in a `with_bytes` closure, which may hold an access on this gate that
                // the pending resize waits for: enter anyway unless the resize already acts.
                let s = self.state.fetch_add(1, Ordering::Acquire);
                if s & ACTIVE == 0 {
                    return AccessGuard::counted(self);
                }
                self.leave_counted();
            }
            let mut g = self.lock.lock();
            while self.state.load(Ordering::Acquire) & RESIZING != 0 {
                g = self
                    .cv
                    .wait_until(&self.lock, g, Instant::now() + Duration::from_millis(50));
            }
        }
    }

    /// Frees `slot` (the leave of a fast-path access); returns whether a resize is pending,
    /// in which case the caller must call [`wake_resizer`](Self::wake_resizer).
    #[inline(always)]
    fn leave_slot(&self, slot: &ReaderSlot, free: usize) -> bool {
        slot.gate.store(free, Ordering::Release);
        barrier::reader(free);
        self.state.load(Ordering::Relaxed) & RESIZING != 0
    }

    #[inline]
    fn leave_counted(&self) {
        let s = self.state.fetch_sub(1, Ordering::Release);
        if s & RESIZING != 0 && s & COUNT == 1 {
            self.wake_resizer();
        }
    }

    #[cold]
    pub(crate) fn wake_resizer(&self) {
        // An access left (or backed out) while a resize waits: wake it. Taking the lock orders
        // this notification after the resizer's check-then-wait (it checks under the lock).
        let _g = self.lock.lock();
        self.cv.notify_all();
    }

    /// Waits until no access runs and keeps new ones out until the guard is dropped. Callers
    /// serialise resizes among themselves (the registry entry's resize mutex).
    pub(crate) fn resize(&self) -> io::Result<ResizeGuard<'_>> {
        self.resize_with(reader_slots::any_names)
    }

    /// [`resize`](Self::resize), with `any_names(addr)` saying whether a reader slot names the
    /// gate at `addr` (all listed slots; the loom model passes its own).
    pub(crate) fn resize_with(
        &self,
        any_names: impl Fn(usize) -> bool,
    ) -> io::Result<ResizeGuard<'_>> {
        refuse_in_scoped_access()?;
        let prev = self.state.fetch_or(RESIZING, Ordering::SeqCst);
        debug_assert_eq!(prev & RESIZING, 0, "resizes are serialised by the caller");
        // From here on the guard clears the bits again, also if the barrier fails.
        let guard = ResizeGuard { gate: self };
        // After the `RESIZING` store, before any scan (the module docs' argument).
        barrier::resizer()?;
        let mut g = self.lock.lock();
        loop {
            if !any_names(self.addr())
                && self
                    .state
                    .compare_exchange(
                        RESIZING,
                        RESIZING | ACTIVE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                break;
            }
            g = self
                .cv
                .wait_until(&self.lock, g, Instant::now() + Duration::from_millis(50));
        }
        drop(g);
        Ok(guard)
    }
}

impl<'a> AccessGuard<'a> {
    fn counted(gate: &'a Gate) -> Self {
        AccessGuard {
            gate,
            slot: None,
            free: FREE,
            _not_send: PhantomData,
        }
    }
}

impl Drop for AccessGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        match self.slot {
            Some(slot) => {
                if self.gate.leave_slot(slot, self.free) {
                    self.gate.wake_resizer();
                }
            }
            None => self.gate.leave_counted(),
        }
    }
}

impl Drop for ResizeGuard<'_> {
    fn drop(&mut self) {
        self.gate
            .state
            .fetch_and(!(RESIZING | ACTIVE), Ordering::Release);
        let _g = self.gate.lock.lock();
        self.gate.cv.notify_all();
    }
}

/// The two fences of the protocol (module docs), and the choice between their forms.
#[cfg(not(any(loom, shuttle)))]
mod barrier {
    // A compiler fence is no synchronisation a model checker tracks (the models use real
    // fences), so it comes from core, not from the `crate::sync` shim.
    use core::sync::atomic::compiler_fence;
    use std::sync::OnceLock;

    use super::{fence, io, Ordering, FREE};
    use crate::os;

    /// Chooses the form once per process; returns whether it is `membarrier`. A thread's slot
    /// records the answer when it is listed ([`FREE`] or `FREE_FENCED`), so the fast path reads
    /// no global flag; every resizer asks here, and gets the same answer.
    pub(super) fn init() -> bool {
        *CHOSEN.get_or_init(|| {
            let ok = os::membarrier::register_private_expedited();
            if !ok {
                tracing::debug!("membarrier unavailable: mapped-file accesses use full fences");
            }
            ok
        })
    }

    static CHOSEN: OnceLock<bool> = OnceLock::new();

    /// Chooses the fence form (as without `membarrier`) if no form was chosen yet; returns
    /// whether the gates use fences now.
    #[cfg(all(test, not(miri)))]
    pub(super) fn choose_fences() -> bool {
        !*CHOSEN.get_or_init(|| false)
    }

    /// The reader fence, in the form the thread's slot records (`free`).
    #[inline(always)]
    pub(super) fn reader(free: usize) {
        if free == FREE {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The resizer barrier: after the `RESIZING` store, before the scan of the slots.
    pub(super) fn resizer() -> io::Result<()> {
        if init() {
            // Registered, so the call cannot fail (EPERM is "not registered"); if it still did,
            // readers relying on it would be unprotected: the resize must not go on. The error
            // reaches the caller, whose resize guard reopens the gate.
            os::membarrier::private_expedited().map_err(|e| {
                io::Error::other(format!(
                    "membarrier failed after registration ({e}): the resize was not done"
                ))
            })
        } else {
            fence(Ordering::SeqCst);
            Ok(())
        }
    }
}

/// Under the models there is no `membarrier`: both fences are `fence(SeqCst)`.
#[cfg(any(loom, shuttle))]
mod barrier {
    use super::{fence, Ordering};

    #[inline]
    pub(super) fn reader(_free: usize) {
        fence(Ordering::SeqCst);
    }

    pub(super) fn resizer() -> std::io::Result<()> {
        fence(Ordering::SeqCst);
        Ok(())
    }
}

/// How many reader slots are listed: one per live thread that entered a gate.
#[cfg(all(test, not(any(miri, loom, shuttle))))]
pub(crate) fn reader_slot_count() -> usize {
    reader_slots::count()
}

/// Whether the gates use `membarrier` (compiler fences on the fast path) rather than full
/// fences; chooses the form on the first call.
#[cfg(all(test, not(any(miri, loom, shuttle))))]
pub(crate) fn uses_membarrier() -> bool {
    barrier::init()
}

/// Makes the gates use fences, as on a kernel without `membarrier`, if the process has not
/// chosen yet; returns whether they use fences.
#[cfg(all(test, not(any(miri, loom, shuttle))))]
pub(crate) fn choose_fences() -> bool {
    barrier::choose_fences()
}

/// Whether the current thread runs inside a `with_bytes` closure. Such a thread holds an
/// access, so it must not wait for anything a resizer holds while waiting for accesses (the
/// entry's resize mutex): callers refuse or skip that work instead.
pub(crate) fn in_scoped_access() -> bool {
    SCOPED_DEPTH.with(Cell::get) > 0
}

fn refuse() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "cannot resize or remap a mapped file from inside a with_bytes closure",
    )
}

/// `Err(WouldBlock)` inside a `with_bytes` closure (see [`in_scoped_access`]).
pub(crate) fn refuse_in_scoped_access() -> io::Result<()> {
    if in_scoped_access() {
        Err(refuse())
    } else {
        Ok(())
    }
}

/// Marks the current thread as inside a `with_bytes` closure for the guard's lifetime.
#[derive(Debug)]
pub(crate) struct ScopedAccess(());

impl ScopedAccess {
    pub(crate) fn begin() -> Self {
        SCOPED_DEPTH.with(|d| d.set(d.get() + 1));
        ScopedAccess(())
    }
}

impl Drop for ScopedAccess {
    fn drop(&mut self) {
        SCOPED_DEPTH.with(|d| d.set(d.get() - 1));
    }
}
