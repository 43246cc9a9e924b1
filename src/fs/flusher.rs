//! The periodic flusher: one background thread per `MmapFs` with `SyncMode::Periodic`, which
//! syncs the dirty files of that `MmapFs` at the configured interval.
//!
//! Lifetime: the `MmapFs` (all its clones) and each of its open files hold an `Arc<Flusher>`.
//! When the last of them goes, `Flusher::drop` tells the thread to stop and joins it, so the
//! thread never outlives its users (the memmapfs flusher was never stopped). The thread itself
//! holds only the shared state and the files' cores, never a `Flusher`, so it cannot keep
//! itself alive and is never asked to join itself.

use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sync::{Arc, Condvar, Mutex};

/// What the flusher needs of a file: whether it was written since its last sync, and a sync.
/// The file layer implements it (for its shared file core), so the flusher knows nothing of
/// files and the dependency runs one way.
pub(crate) trait Flushable: Send + Sync + std::fmt::Debug {
    /// Whether the file was written since the last [`take_dirty`](Self::take_dirty).
    fn is_dirty(&self) -> bool;
    /// Clears the dirty mark; true when it was set (the caller then owes the file a sync).
    fn take_dirty(&self) -> bool;
    /// Syncs the file's data, unless it is poisoned by a fault; true when it synced. A failure
    /// is the file's to report (it poisons the file and emits an event): no caller waits here.
    fn flush(&self) -> bool;
}

/// A shared file core is flushable as the core is. The flusher keeps its files as
/// `std::sync::Arc<dyn Flushable>` holding one of these: the sync shim's `Arc` is loom's under
/// `--cfg loom`, and loom's `Arc` cannot be coerced to a trait object.
impl<T: Flushable> Flushable for Arc<T> {
    fn is_dirty(&self) -> bool {
        T::is_dirty(self)
    }
    fn take_dirty(&self) -> bool {
        T::take_dirty(self)
    }
    fn flush(&self) -> bool {
        T::flush(self)
    }
}

/// A file as the flusher holds it (see the `Arc<T>` implementation above).
type FlushEntry = std::sync::Arc<dyn Flushable>;

#[derive(Debug, Default)]
struct State {
    files: Vec<(u64, FlushEntry)>,
    next_id: u64,
    stop: bool,
    running: bool,
    rounds: u64,
    flushed: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread (stop) and waiters on progress (`FlusherStatus::wait_for_rounds`).
    cv: Condvar,
    interval: Duration,
}

/// Owner of the flusher thread; dropping the last `Arc<Flusher>` stops and joins it.
#[derive(Debug)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A file's subscription to the flusher; unsubscribes when dropped.
#[derive(Debug)]
pub(crate) struct FlushRegistration {
    flusher: Arc<Flusher>,
    id: u64,
}

impl Flusher {
    pub(crate) fn start(interval: Duration) -> io::Result<Arc<Flusher>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                running: true,
                ..State::default()
            }),
            cv: Condvar::new(),
            interval,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("segpool-flush".into())
            .spawn(move || run(&s))?;
        Ok(Arc::new(Flusher {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    pub(crate) fn register<F: Flushable + 'static>(
        this: &Arc<Self>,
        core: Arc<F>,
    ) -> FlushRegistration {
        let entry: FlushEntry = std::sync::Arc::new(core);
        let mut st = this.shared.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.files.push((id, entry));
        FlushRegistration {
            flusher: Arc::clone(this),
            id,
        }
    }

    pub(crate) fn status(&self) -> FlusherStatus {
        FlusherStatus {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Marks the thread stopped however `run` ends (returning or unwinding), so
/// `FlusherStatus::is_running` never reports a thread that is gone.
struct Exit<'a>(&'a Shared);

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        self.0.state.lock().running = false;
        self.0.cv.notify_all();
    }
}

fn run(shared: &Shared) {
    // Declared before the guard `st`, so dropped after it: `Exit` takes the lock itself.
    let _exit = Exit(shared);
    let mut st = shared.state.lock();
    loop {
        // An interval too long for an `Instant` (`Duration::MAX`) means: only at close.
        let deadline = crate::sync::deadline_after(shared.interval);
        while !st.stop && deadline.is_none_or(|d| Instant::now() < d) {
            st = shared.cv.wait_deadline(&shared.state, st, deadline);
        }
        if st.stop {
            break;
        }
        let dirty: Vec<FlushEntry> = st
            .files
            .iter()
            .filter(|(_, f)| f.is_dirty())
            .map(|(_, f)| std::sync::Arc::clone(f))
            .collect();
        drop(st);
        let mut flushed = 0;
        for f in dirty {
            if f.take_dirty() && f.flush() {
                flushed += 1;
            }
        }
        st = shared.state.lock();
        st.rounds += 1;
        st.flushed += flushed;
        shared.cv.notify_all();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.lock().take() {
            if t.join().is_err() {
                tracing::error!("the segpool flusher thread panicked");
            }
        }
    }
}

impl Drop for FlushRegistration {
    fn drop(&mut self) {
        self.flusher
            .shared
            .state
            .lock()
            .files
            .retain(|(id, _)| *id != self.id);
    }
}

/// A view of an `MmapFs`'s periodic flusher that does not keep it alive: to watch it work and
/// to see that it stopped.
#[derive(Debug, Clone)]
pub struct FlusherStatus {
    shared: Arc<Shared>,
}

impl FlusherStatus {
    /// Whether the thread still runs. It stops (and has stopped by the time the last handle's
    /// drop returns) when the `MmapFs` and all its files are gone.
    pub fn is_running(&self) -> bool {
        self.shared.state.lock().running
    }

    /// Flush rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.shared.state.lock().rounds
    }

    /// Files synced so far (a file counts once per round in which it was dirty).
    pub fn files_flushed(&self) -> u64 {
        self.shared.state.lock().flushed
    }

    /// Waits until at least `n` files were flushed in total, or `timeout` passed, or the thread
    /// stopped; returns whether `n` was reached. A timeout too long for an `Instant`
    /// (`Duration::MAX`) waits without a deadline.
    pub fn wait_for_flushes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = crate::sync::deadline_after(timeout);
        let mut st = self.shared.state.lock();
        while st.flushed < n && st.running && deadline.is_none_or(|d| Instant::now() < d) {
            st = self
                .shared
                .cv
                .wait_deadline(&self.shared.state, st, deadline);
        }
        st.flushed >= n
    }
}
