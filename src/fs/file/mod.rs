//! `MappedFile`: one open, mapped file.
//!
//! Every access follows the same shape, written once in [`access`](MappedFile::access)
//! (`access.rs`): fail fast if the file is poisoned; enter the file's gate (so no cut or remap
//! runs meanwhile); read the length the registry entry says; split the range into pieces that lie
//! in one mapping each (the whole-file mapping, or windows); copy each piece through raw pointers
//! inside the fault guard; leave the gate (and, if the whole-file mapping was too short, remap
//! and go again). Only the read fast path (`read.rs`) does it by hand, for its cost.
//!
//! The rooms: `open.rs` maps a file; `access.rs` is the shape above, the remap and the re-read
//! of the length; `read.rs` the tuned read path and the general read; `write.rs` writes, growth,
//! appends and `set_len`; `sync.rs` syncs and advice; `in_place.rs` `with_view` and
//! `with_bytes`; `cursor.rs` the std `Read`/`Write`/`Seek` impls over the handle's cursor.

mod access;
mod cursor;
mod in_place;
mod open;
mod read;
mod sync;
mod write;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::config::{MapConfig, MapMode, SyncMode};
use super::copy::SMALL;
use super::flusher::FlushRegistration;
use super::registry::{FileEntry, Registered};
use super::whole::WholeMap;
use super::window::WindowCache;
use crate::fault::FileFaultState;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};

/// The largest file length and offset (`off_t` is signed).
const MAX_LEN: u64 = i64::MAX as u64;

/// What a handle shares with the periodic flusher: the descriptor, the registry entry and
/// whether the handle wrote since the last sync.
#[derive(Debug)]
pub(crate) struct FileCore {
    file: File,
    reg: Registered,
    path: PathBuf,
    /// Set by writes and length changes not yet synced; cleared by whoever syncs.
    pub(crate) dirty: AtomicBool,
}

impl FileCore {
    pub(crate) fn entry(&self) -> &FileEntry {
        &self.reg.entry
    }
}

/// How the handle maps the file.
#[derive(Debug)]
enum View {
    Whole(WholeMap),
    Windows(WindowCache),
}

/// An open file of an [`MmapFs`](super::MmapFs) (or a [`SharedMemory`](super::SharedMemory)),
/// read and written through a memory mapping.
///
/// Bytes are copied in and out (`read_at`, `write_at`, `Read`, `Write`), or looked at in place
/// through a [`MappedView`](super::MappedView) ([`with_view`](Self::with_view)) that copies and
/// hands out atomics. The safe API never lends a `&[u8]` into the mapping, because the file can
/// change or shrink under it (another handle, thread or process) and a fault there must become an
/// error of the operation; [`with_bytes`](Self::with_bytes) does, as an `unsafe fn` whose caller
/// promises nobody changes the range meanwhile.
///
/// Positioned I/O (`read_at`, `write_at`) takes `&self` and may run from many threads at once.
/// `Read`/`Write`/`Seek` share one cursor per handle.
#[derive(Debug)]
pub struct MappedFile {
    // Field order is drop order: leave the flusher first, then unmap (each extent drops its
    // fault registration before its mapping), then leave the registry and close the file.
    /// Held for its `Drop` (unsubscribes from the flusher, and keeps the flusher alive).
    _flush: Option<FlushRegistration>,
    view: View,
    core: Arc<FileCore>,
    /// The registry entry, also reachable through `core`; kept here too so the read path
    /// reaches it in one load instead of two.
    entry: Arc<FileEntry>,
    /// The entry's fault state, kept here for the same reason (one load instead of two).
    fault: Arc<FileFaultState>,
    mode: MapMode,
    sync: SyncMode,
    cfg: MapConfig,
    /// A copy-on-write handle keeps the length it opened with (it cannot change the file).
    cow_len: u64,
    /// The small-read fast path's bound: a read of at most [`SMALL`] bytes at an offset below
    /// this lies inside the whole-file mapping and below `cow_len`.
    ///
    /// # Invariant
    ///
    /// `min(mapping length, cow_len) - SMALL` (0 if that is negative) for a whole-file view,
    /// changed only together with the mapping (under a resize of the gate), so inside an access
    /// it agrees with [`WholeMap::base`]; always 0 for a windowed view, so that no offset passes
    /// it and the fast path needs no check of the view's kind.
    small_end: AtomicU64,
    /// Opened with `O_APPEND`: `Write::write` goes to the file's current end (`write_at` keeps
    /// its offset, as POSIX `pwrite` does).
    append: bool,
    cursor: Mutex<u64>,
    finished: AtomicBool,
}

/// The value of [`MappedFile::small_end`] for `view`.
///
/// # Safety
///
/// * No replacement of `view`'s mapping runs meanwhile: the caller opens the file (nothing else
///   can reach the view yet) or holds the file's gate for a resize.
unsafe fn small_end(view: &View, cow_len: u64) -> u64 {
    match view {
        // SAFETY: no replacement runs (the caller's contract), which is what an access of the
        // gate would ensure.
        View::Whole(w) => (unsafe { w.current() }.len() as u64)
            .min(cow_len)
            .saturating_sub(SMALL as u64),
        View::Windows(_) => 0,
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl MappedFile {
    #[inline]
    fn entry(&self) -> &FileEntry {
        &self.entry
    }

    fn fault(&self) -> &Arc<FileFaultState> {
        &self.fault
    }

    fn fail_fast(&self) -> io::Result<()> {
        self.fault().check().map_err(io::Error::from)
    }

    /// The length this handle reads up to.
    #[inline]
    fn limit(&self) -> u64 {
        self.entry().len().min(self.cow_len)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.mode == MapMode::ReadOnly {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is mapped read-only", self.core.path.display()),
            ));
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<u64> {
        offset
            .checked_add(len)
            .filter(|&e| e <= MAX_LEN)
            .ok_or_else(|| invalid(format!("range of {len} bytes at offset {offset} is past the largest file size ({MAX_LEN})")))
    }

    /// The length of the file in bytes, as this process last saw or set it.
    pub fn len(&self) -> u64 {
        self.limit()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's generation: bumped by every write, `set_len` and growth through any handle of
    /// this file in the process (copy-on-write writes, which do not change the file, excepted).
    pub fn generation(&self) -> u64 {
        self.entry().generation.load(Ordering::Acquire)
    }

    /// The path this handle was opened with.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// The mode this handle maps with (`ReadOnly` if the descriptor was opened without write
    /// access, whatever the configuration said).
    pub fn mode(&self) -> MapMode {
        self.mode
    }

    /// The fault state shared by every handle of this file in the process.
    pub fn fault_state(&self) -> &Arc<FileFaultState> {
        self.fault()
    }

    /// Closes the handle, syncing first if the sync mode asks for it (`OnClose`, `Periodic`, or
    /// a length change under `Immediate`), and returns what went wrong: a sync error, or the
    /// fault error if the file was poisoned. Dropping does the same and reports through
    /// `tracing` events.
    pub fn close(self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&self) -> io::Result<()> {
        if self.finished.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.fail_fast()?;
        if self.mode == MapMode::ReadWrite
            && self.sync != SyncMode::Never
            && self.core.dirty.swap(false, Ordering::AcqRel)
        {
            self.core.sync_data()?;
        }
        Ok(())
    }
}

/// What the crate's own tests look at (`fs/tests/`): not part of the API.
#[cfg(all(test, not(any(miri, loom, shuttle))))]
impl MappedFile {
    /// Whether this handle wrote bytes that are not yet synced.
    pub(crate) fn is_dirty(&self) -> bool {
        self.core.dirty.load(Ordering::Acquire)
    }

    /// The last range made durable through any handle of this file, as `(offset, len)`.
    pub(crate) fn last_synced_range(&self) -> Option<(u64, u64)> {
        *self.entry().last_sync.lock()
    }

    /// How many windows this handle has mapped right now (0 without windows).
    pub(crate) fn mapped_windows(&self) -> usize {
        match &self.view {
            View::Whole(_) => 0,
            View::Windows(w) => w.mapped().len(),
        }
    }

    /// How many handles the process has open on this file (all paths).
    pub(crate) fn handles_on_file(&self) -> usize {
        crate::os::file::stat(&self.core.file)
            .map_or(0, |id| super::registry::handles(id.dev, id.ino))
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!(path = %self.core.path.display(), error = %e, "closing a mapped file failed");
        }
    }
}
