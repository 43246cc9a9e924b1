//! The access gate: lets any number of accesses to a file's mapped memory run at once, and lets
//! a resize (cutting the file, replacing a mapping) wait until none is running.
//!
//! Why it exists: cutting a file under a running copy makes that copy fault (SIGBUS), which
//! poisons the file for every handle; and a mapping may only be unmapped once nobody copies
//! through it. Accesses are the hot path, so entering is one atomic add and leaving one atomic
//! subtract (no lock); only a resize takes the mutex and waits.
//!
//! Re-entrancy: a `with_bytes` closure runs inside an access and may start another access on
//! the same file. If a resize is waiting, that nested access must not wait for it (the resize
//! waits for the outer access: a deadlock), so a thread inside `with_bytes` enters even while a
//! resize is pending. That is safe because the resize only acts once the count is zero. A resize
//! from inside `with_bytes` is refused with an error for the same reason.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{thread_local, Condvar, Mutex};

/// Set in `state` while a resize is pending or running.
const RESIZING: u64 = 1 << 63;

thread_local! {
    /// How many `with_bytes` closures this thread is inside.
    // Not `const { .. }`: loom's `thread_local!` does not take that form.
    #[allow(clippy::missing_const_for_thread_local)]
    static SCOPED_DEPTH: Cell<usize> = Cell::new(0);
}

/// # Invariants
///
/// `state & !RESIZING` counts the accesses that are running (entered and not yet left). While a
/// resize holds [`ResizeGuard`], that count is zero and stays zero except for nested accesses
/// of a thread that itself holds an access (which the resize never is, see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

/// One running access; leaves the gate when dropped.
#[derive(Debug)]
pub(crate) struct AccessGuard<'a> {
    gate: &'a Gate,
}

/// An exclusive resize: no access runs while it lives.
#[derive(Debug)]
pub(crate) struct ResizeGuard<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// Enters an access unless a resize is pending or running (then `None`, and the caller
    /// takes a path that waits).
    #[inline]
    pub(crate) fn try_enter(&self) -> Option<AccessGuard<'_>> {
        let s = self.state.fetch_add(1, Ordering::Acquire);
        if s & RESIZING == 0 {
            return Some(AccessGuard { gate: self });
        }
        self.leave();
        None
    }

    /// Enters an access, waiting while a resize runs.
    pub(crate) fn enter(&self) -> AccessGuard<'_> {
        loop {
            let s = self.state.fetch_add(1, Ordering::Acquire);
            if s & RESIZING == 0 || SCOPED_DEPTH.with(Cell::get) > 0 {
                return AccessGuard { gate: self };
            }
            self.leave();
            let mut g = self.lock.lock();
            while self.state.load(Ordering::Acquire) & RESIZING != 0 {
                g = self
                    .cv
                    .wait_until(&self.lock, g, Instant::now() + Duration::from_millis(50));
            }
        }
    }

    #[inline]
    fn leave(&self) {
        let s = self.state.fetch_sub(1, Ordering::Release);
        if s & RESIZING != 0 && s & !RESIZING == 1 {
            self.wake_resizer();
        }
    }

    #[cold]
    fn wake_resizer(&self) {
        {
            // The last access left while a resize waits: wake it. Taking the lock orders this
            // notification after the resizer's check-then-wait (it checks under the lock).
            let _g = self.lock.lock();
            self.cv.notify_all();
        }
    }

    /// Waits until no access runs and keeps new ones out until the guard is dropped. Callers
    /// serialise resizes among themselves (the registry entry's resize mutex).
    pub(crate) fn resize(&self) -> io::Result<ResizeGuard<'_>> {
        refuse_in_scoped_access()?;
        let prev = self.state.fetch_or(RESIZING, Ordering::AcqRel);
        debug_assert_eq!(prev & RESIZING, 0, "resizes are serialised by the caller");
        let mut g = self.lock.lock();
        while self.state.load(Ordering::Acquire) & !RESIZING != 0 {
            g = self
                .cv
                .wait_until(&self.lock, g, Instant::now() + Duration::from_millis(50));
        }
        Ok(ResizeGuard { gate: self })
    }
}

impl Drop for AccessGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.gate.leave();
    }
}

impl Drop for ResizeGuard<'_> {
    fn drop(&mut self) {
        self.gate.state.fetch_and(!RESIZING, Ordering::Release);
        let _g = self.gate.lock.lock();
        self.gate.cv.notify_all();
    }
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
