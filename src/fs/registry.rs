//! The per-file registry: every handle on the same file in the process (same device and inode,
//! whatever path opened it) shares one [`FileEntry`].
//!
//! The entry is what makes handles agree: the length every handle reads up to, the generation
//! every writer bumps, the gate a resize waits on, and the one fault state the SIGBUS guard
//! poisons for all of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::gate::Gate;
use crate::fault::FileFaultState;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};

/// What the process knows about one file, shared by all its handles.
///
/// # Invariants
///
/// * `len` is the length readers see; `reserved` is the file's size on disk as far as this
///   process made or saw it, and `len <= reserved <= the size on disk` (unless someone outside the
///   process cut the file: a fault). `reserved` grows under `resize` before a growing write
///   copies; `len` grows (`fetch_max`) only after the bytes are copied, so a reader on another
///   handle never sees the new length before the bytes (only a concurrent growing write's zeros
///   in between, as with `pwrite`). Both go down only together, under `resize` with the gate
///   closed, so no access runs past the end of the file while it is cut: a cut of ours
///   ([`FileEntry::cut`]: `set_len`, a truncating open) and a cut made outside the process once
///   a stat shows it ([`FileEntry::adopt`]).
/// * `generation` only grows; every write, `set_len` and growth through any handle bumps it
///   after its effect is visible.
/// * `fault` is the only fault state of this file in the process.
#[derive(Debug)]
pub(crate) struct FileEntry {
    pub(crate) len: AtomicU64,
    pub(crate) reserved: AtomicU64,
    pub(crate) generation: AtomicU64,
    pub(crate) fault: Arc<FileFaultState>,
    pub(crate) gate: Gate,
    /// The last range made durable through any handle, as (offset, length); one lock for the
    /// two words (never a torn pair).
    pub(crate) last_sync: Mutex<Option<(u64, u64)>>,
    /// Serialises length changes (growth, cuts, external re-stats) and remaps.
    pub(crate) resize: Mutex<()>,
}

impl FileEntry {
    #[inline]
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Takes a size the kernel reported (under `resize`): growth by someone else becomes
    /// visible. A smaller size is ignored here; [`adopt`](Self::adopt) takes cuts.
    pub(crate) fn catch_up(&self, size: u64) {
        self.reserved.fetch_max(size, Ordering::AcqRel);
        if self.len.fetch_max(size, Ordering::AcqRel) < size {
            self.bump();
        }
    }

    /// Makes the entry agree with `size`, the file's size as the kernel reported it by a stat
    /// made under `resize` (which the caller holds). Growth by someone else becomes visible
    /// ([`catch_up`](Self::catch_up)). A size below `reserved` can only come from a cut made
    /// outside the process (every length change of ours is made under `resize`): it is taken as
    /// a cut of our own, with the gate closed, so readers stop at the new end instead of
    /// faulting past it. A thread inside a `with_bytes` closure gets `WouldBlock` for that cut.
    pub(crate) fn adopt(&self, size: u64) -> std::io::Result<()> {
        if size >= self.reserved.load(Ordering::Acquire) {
            self.catch_up(size);
            return Ok(());
        }
        let _g = self.gate.resize()?;
        // `len <= reserved` is kept: both go down together, with no access running. A growing
        // write in flight re-checks `reserved` inside its access and grows again.
        if self.len() > size {
            self.len.store(size, Ordering::Release);
        }
        self.reserved.store(size, Ordering::Release);
        self.bump();
        Ok(())
    }

    /// Cuts the file to `len` (at most `reserved`) through the resize protocol: waits until no
    /// access of any handle runs, `ftruncate`s, and lowers both lengths. The caller holds
    /// `resize`.
    pub(crate) fn cut(&self, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        // Cutting pages under a running copy would fault it: wait for every access to leave.
        let _g = self.gate.resize()?;
        crate::os::file::truncate(file, len)?;
        self.len.store(len, Ordering::Release);
        self.reserved.store(len, Ordering::Release);
        self.bump();
        Ok(())
    }

    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

type Key = (u64, u64);
type Table = Mutex<HashMap<Key, (Arc<FileEntry>, usize)>>;

/// Entries with the number of live handles on each. An entry leaves the map with its last
/// handle, so a file reopened after every handle closed (maybe after a fault) starts healthy.
fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A handle's membership in the registry; leaving it when dropped.
#[derive(Debug)]
pub(crate) struct Registered {
    key: Key,
    pub(crate) entry: Arc<FileEntry>,
}

/// Joins (or creates) the entry of `file`, which is `(dev, ino)`. A new entry starts from the
/// file's size; an existing entry takes it if the file grew behind the process's back.
pub(crate) fn join(
    file: &std::fs::File,
    dev: u64,
    ino: u64,
    path: PathBuf,
) -> std::io::Result<Registered> {
    let key = (dev, ino);
    let mut t = table().lock();
    let slot = t.entry(key).or_insert_with(|| {
        let entry = Arc::new(FileEntry {
            len: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            fault: FileFaultState::new(Some(path)),
            gate: Gate::default(),
            last_sync: Mutex::new(None),
            resize: Mutex::new(()),
        });
        (entry, 0)
    });
    slot.1 += 1;
    let reg = Registered {
        key,
        entry: Arc::clone(&slot.0),
    };
    drop(t);
    // Inside a with_bytes closure a resizer may hold the resize mutex while it waits for this
    // thread's access: skip the catch-up (a later read at the end re-stats).
    if !super::gate::in_scoped_access() {
        let _r = reg.entry.resize.lock();
        // Stat under the lock: a size read before a concurrent cut would undo the cut.
        let size = crate::os::file::stat(file)?.size;
        reg.entry.adopt(size)?;
    }
    Ok(reg)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut t = table().lock();
        if let Some(slot) = t.get_mut(&self.key) {
            slot.1 -= 1;
            if slot.1 == 0 {
                t.remove(&self.key);
            }
        }
    }
}

/// How many handles the process has open on the file `(dev, ino)` (`fs/tests/`).
#[cfg(all(test, not(any(miri, loom, shuttle))))]
pub(crate) fn handles(dev: u64, ino: u64) -> usize {
    table().lock().get(&(dev, ino)).map_or(0, |s| s.1)
}
