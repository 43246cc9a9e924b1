//! `MappedFile`: one open, mapped file.
//!
//! Every access follows the same shape: fail fast if the file is poisoned; enter the file's gate
//! (so no cut or remap runs meanwhile); read the length the registry entry says; split the range
//! into pieces that lie in one mapping each (the whole-file mapping, or windows); copy each
//! piece through raw pointers inside the fault guard; leave the gate.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::config::{Advice, MapConfig, MapMode, SyncMode};
use super::copy::{copy_from_shared, copy_small_from_shared, copy_to_shared, SMALL};
use super::flusher::{FlushRegistration, Flusher};
use super::gate::{self, AccessGuard, ScopedAccess};
use super::extent::MappedExtent;
use super::registry::{self, FileEntry, Registered};
use super::view::MappedView;
use super::whole::WholeMap;
use super::window::WindowCache;
use crate::fault::FileFaultState;
use crate::os;
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

    /// `fdatasync`; a writeback error poisons the file (the data may be lost).
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        let r = os::file::sync_data(&self.file);
        self.after_sync(r, 0, self.entry().len())
    }

    fn after_sync(&self, r: io::Result<()>, offset: u64, len: u64) -> io::Result<()> {
        match r {
            Ok(()) => {
                *self.entry().last_sync.lock() = Some((offset, len));
                Ok(())
            }
            Err(e) => {
                // Writeback errors (EIO, ENOSPC) mean written bytes may be lost: every handle
                // must learn it, so the file is poisoned like at a fault. The address is unknown.
                self.entry().fault.poison(0);
                tracing::error!(path = %self.path.display(), error = %e, "sync of a mapped file failed; file poisoned");
                Err(e)
            }
        }
    }
}

/// How the handle maps the file.
#[derive(Debug)]
enum View {
    Whole(WholeMap),
    Windows(WindowCache),
}

/// Why an access had to stop before it was done.
enum Step {
    /// The whole-file mapping is shorter than this many bytes: remap and retry.
    Remap(u64),
    Io(io::Error),
}

impl From<io::Error> for Step {
    fn from(e: io::Error) -> Self {
        Step::Io(e)
    }
}

/// An open file of an [`MmapFs`](super::MmapFs) (or a [`SharedMemory`](super::SharedMemory)),
/// read and written through a memory mapping.
///
/// Bytes are copied in and out (`read_at`, `write_at`, `Read`, `Write`), or looked at in place
/// through a [`MappedView`] ([`with_view`](Self::with_view)) that copies and hands out atomics.
/// The safe API never lends a `&[u8]` into the mapping, because the file can change or shrink
/// under it (another handle, thread or process) and a fault there must become an error of the
/// operation; [`with_bytes`](Self::with_bytes) does, as an `unsafe fn` whose caller promises
/// nobody changes the range meanwhile.
///
/// Positioned I/O (`read_at`, `write_at`) takes `&self` and may run from many threads at once.
/// `Read`/`Write`/`Seek` share one cursor per handle.
#[derive(Debug)]
pub struct MappedFile {
    // Field order is drop order: leave the flusher first, then unmap (each region drops its
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
    /// Maps `file`. With `truncate`, the file is first cut to 0 bytes through the registry's
    /// resize protocol (as `set_len(0)`), so that every other handle of the process on it sees
    /// the cut instead of faulting: a truncating open must not let the kernel cut the file.
    pub(crate) fn from_file(
        file: File,
        path: PathBuf,
        cfg: &MapConfig,
        flusher: Option<&Arc<Flusher>>,
        truncate: bool,
    ) -> io::Result<MappedFile> {
        cfg.validate()?;
        let id = os::file::stat(&file)?;
        if !id.regular {
            return Err(invalid(format!("{} is not a regular file", path.display())));
        }
        let (_, writable) = os::file::access_mode(&file)?;
        let append = os::file::appends(&file)?;
        // A descriptor opened without write access cannot carry a shared writable mapping: the
        // handle is read-only and its writes are refused like in ReadOnly mode.
        let mode = if cfg.mode == MapMode::ReadWrite && !writable {
            MapMode::ReadOnly
        } else {
            cfg.mode
        };
        let reg = registry::join(&file, id.dev, id.ino, path.clone())?;
        reg.entry.fault.check().map_err(io::Error::from)?;
        let mut cut = false;
        if truncate {
            gate::refuse_in_scoped_access()?;
            let _r = reg.entry.resize.lock();
            // Stat under the lock (as `join` does): an empty file needs no cut and no gate.
            reg.entry.adopt(os::file::stat(&file)?.size)?;
            if reg.entry.reserved.load(Ordering::Acquire) > 0 {
                reg.entry.cut(&file, 0)?;
                cut = true;
            }
        }
        let len = reg.entry.len();
        let cow_len = if mode == MapMode::CopyOnWrite {
            len
        } else {
            u64::MAX
        };
        let view = match cfg.window {
            Some(w) => View::Windows(WindowCache::new(w, cfg.max_windows)),
            None => View::Whole(WholeMap::new(MappedExtent::map(
                &file,
                0,
                whole_capacity(len, len)?,
                mode,
                cfg,
                len,
                &reg.entry.fault,
            )?)),
        };
        let core = Arc::new(FileCore {
            file,
            reg,
            path,
            dirty: AtomicBool::new(cut),
        });
        let flush = match (cfg.sync, mode, flusher) {
            (SyncMode::Periodic(_), MapMode::ReadWrite, Some(f)) => {
                Some(Flusher::register(f, Arc::clone(&core)))
            }
            _ => None,
        };
        Ok(MappedFile {
            _flush: flush,
            entry: Arc::clone(&core.reg.entry),
            fault: Arc::clone(&core.reg.entry.fault),
            core,
            mode,
            sync: cfg.sync,
            cfg: cfg.clone(),
            // SAFETY: the view is ours alone until this handle is returned.
            small_end: AtomicU64::new(unsafe { small_end(&view, cow_len) }),
            view,
            cow_len,
            append,
            cursor: Mutex::new(0),
            finished: AtomicBool::new(false),
        })
    }

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

    /// Whether this handle wrote bytes that are not yet synced (diagnostics, tests).
    #[doc(hidden)]
    pub fn is_dirty(&self) -> bool {
        self.core.dirty.load(Ordering::Acquire)
    }

    /// The last range made durable through any handle of this file, as `(offset, len)`
    /// (diagnostics, tests).
    #[doc(hidden)]
    pub fn last_synced_range(&self) -> Option<(u64, u64)> {
        *self.entry().last_sync.lock()
    }

    /// How many windows this handle has mapped right now (0 without windows).
    #[doc(hidden)]
    pub fn mapped_windows(&self) -> usize {
        match &self.view {
            View::Whole(_) => 0,
            View::Windows(w) => w.mapped().len(),
        }
    }

    /// How many handles the process has open on this file (all paths).
    #[doc(hidden)]
    pub fn handles_on_file(&self) -> usize {
        os::file::stat(&self.core.file).map_or(0, |id| registry::handles(id.dev, id.ino))
    }

    /// The fault state shared by every handle of this file in the process.
    pub fn fault_state(&self) -> &Arc<FileFaultState> {
        self.fault()
    }

    /// Runs `f` on each piece of `offset..offset + n` that lies in one mapping: `f(region,
    /// offset in region, offset in the caller's buffer, length)`.
    ///
    /// # Safety
    ///
    /// * The caller holds an access of the file's gate for the whole call, and
    ///   `offset + n <= self.limit()` was read inside it.
    unsafe fn pieces(
        &self,
        offset: u64,
        n: usize,
        mut f: impl FnMut(&MappedExtent, usize, usize, usize) -> io::Result<()>,
    ) -> Result<(), Step> {
        match &self.view {
            View::Whole(w) => {
                // SAFETY: the caller holds an access of the gate (this fn's contract).
                let r = unsafe { w.current() };
                let end = offset + n as u64;
                if end > r.len() as u64 {
                    return Err(Step::Remap(end));
                }
                f(r, offset as usize, 0, n)?;
            }
            View::Windows(cache) => {
                let file_len = self.limit();
                let mut done = 0usize;
                while done < n {
                    let pos = offset + done as u64;
                    let w = cache.get(
                        &self.core.file,
                        pos,
                        self.mode,
                        &self.cfg,
                        file_len,
                        self.fault(),
                    )?;
                    let roff = (pos - w.offset()) as usize;
                    let k = (n - done).min(w.len() - roff);
                    f(&w, roff, done, k)?;
                    done += k;
                }
            }
        }
        Ok(())
    }

    /// Replaces the whole-file mapping by one of at least `need` bytes.
    fn remap(&self, need: u64) -> io::Result<()> {
        let View::Whole(w) = &self.view else {
            return Ok(());
        };
        gate::refuse_in_scoped_access()?;
        let entry = self.entry();
        let _resize = entry.resize.lock();
        let cap = {
            let _g = entry.gate.enter();
            // SAFETY: inside an access of the gate.
            unsafe { w.current() }.len()
        };
        if cap as u64 >= need {
            return Ok(());
        }
        let len = entry.len();
        let region = MappedExtent::map(
            &self.core.file,
            0,
            whole_capacity(need.max(cap as u64 * 2), len)?,
            self.mode,
            &self.cfg,
            len,
            self.fault(),
        )?;
        let guard = entry.gate.resize()?;
        // SAFETY: the gate is held for a resize: no access uses the old mapping.
        let old = unsafe { w.replace(region) };
        // Under the same resize, so the bound changes together with the mapping (invariant).
        // SAFETY: we hold the gate for a resize.
        let end = unsafe { small_end(&self.view, self.cow_len) };
        self.small_end.store(end, Ordering::Relaxed);
        drop(guard);
        drop(old);
        Ok(())
    }

    /// Re-reads the file's length from the kernel (another process may have grown or cut it)
    /// and returns the length this handle may read up to.
    fn refresh_len(&self) -> io::Result<u64> {
        // Inside a with_bytes closure the resize mutex may be held by a resizer waiting for this
        // very access: keep the length as known.
        if self.mode != MapMode::CopyOnWrite && !gate::in_scoped_access() {
            let _r = self.entry().resize.lock();
            self.adopt_real_len()?;
        }
        Ok(self.limit())
    }

    /// Stats the file and makes the registry entry agree with its size (growth and cuts made
    /// outside the process); returns the size. The caller holds the entry's `resize` lock: a
    /// size read before a concurrent cut of ours would undo the cut.
    fn adopt_real_len(&self) -> io::Result<u64> {
        let size = os::file::stat(&self.core.file)?.size;
        self.entry().adopt(size)?;
        Ok(size)
    }

    /// Grows the file on disk to at least `end` bytes, reserving the space (`posix_fallocate`)
    /// so that a full disk is an error here instead of a fault at the write. Readers do not see
    /// the new length yet: the write publishes it after its bytes are in.
    fn grow(&self, end: u64) -> io::Result<()> {
        if self.mode == MapMode::CopyOnWrite {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a copy-on-write handle cannot grow the file (its writes never reach the file)",
            ));
        }
        gate::refuse_in_scoped_access()?;
        let entry = self.entry();
        let _r = entry.resize.lock();
        if entry.reserved.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        // The file's real size, not the one last seen: someone outside may have grown it (the
        // reservation starts there) or cut it (the cut is taken first, so the new length is
        // what std's `pwrite` would leave).
        let size = self.adopt_real_len()?;
        let cur = entry.reserved.load(Ordering::Acquire);
        if cur >= end {
            return Ok(());
        }
        os::file::reserve(&self.core.file, size, end - size)?;
        entry.reserved.store(end, Ordering::Release);
        Ok(())
    }

    /// Where an append of `n` bytes goes: the file's real end, past every growing write of the
    /// process in flight (their ranges are reserved), whose `n` bytes are reserved here under
    /// the same lock, so two appends of the process never get the same offset.
    fn reserve_append(&self, n: usize) -> io::Result<u64> {
        self.fail_fast()?;
        self.check_writable()?;
        if self.mode == MapMode::CopyOnWrite {
            // Refused by the growth the write needs.
            return Ok(self.limit());
        }
        gate::refuse_in_scoped_access()?;
        let entry = self.entry();
        let _r = entry.resize.lock();
        let size = self.adopt_real_len()?;
        let offset = entry.reserved.load(Ordering::Acquire);
        let end = self.check_range(offset, n as u64)?;
        os::file::reserve(&self.core.file, size, end - size)?;
        entry.reserved.store(end, Ordering::Release);
        Ok(offset)
    }

    /// Reads up to `buf.len()` bytes at `offset`; `Ok(0)` at or past the end of the file.
    //
    // `#[inline]` on purpose, so the fast path is compiled in the caller's crate. Small random
    // reads are bound by how many of them the CPU keeps in flight, so every instruction counts
    // (docs/files.md, "The read path"): compiled in an executable, the thread's reader slot is
    // one load at a fixed offset from the thread pointer, while compiled in this library it is
    // reached through `__tls_get_addr`, a call that costs the fast path a stack frame and
    // saved registers. The rare cases go through cold functions out of line.
    #[inline]
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.len() <= SMALL {
            self.read_small::<true>(buf, offset)
        } else {
            self.read_at_large(buf, offset)
        }
    }

    /// `read_at` of more than [`SMALL`] bytes: the same fast path, whose copy has a loop and a
    /// string move (and so registers to spare, which the small reads need not). Out of line, so
    /// the small path stays small where `read_at` is inlined.
    #[inline(never)]
    fn read_at_large(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_large::<true>(buf, offset)
    }

    /// [`read_at`](Self::read_at) without the fault guard on its fast path, for measuring what
    /// the guard costs (`benches/fault_guard.rs`, `segpool bench`). Not for use: a fault during
    /// the copy is not reported, and the bytes read may then be zeros.
    #[cfg(feature = "bench-internals")]
    #[doc(hidden)]
    #[inline]
    pub fn read_at_unguarded(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.len() <= SMALL {
            self.read_small::<false>(buf, offset)
        } else {
            self.read_large::<false>(buf, offset)
        }
    }

    /// The body of `read_at` for at most [`SMALL`] bytes, kept as short as it can be: small
    /// random reads are bound by memory latency, and the fewer instructions each read takes,
    /// the more of them the CPU overlaps (docs/files.md, "The read path"). It handles a read of
    /// a whole-file mapping that lies before the end of the file and at an offset below
    /// [`small_end`](Self::small_end) (so inside the mapping), with no resize pending and this
    /// thread in no other access (`Gate::fast_enter`). Everything else (windows, whose bound is
    /// 0; a read near or at the end of the file; a remap that is due; nested accesses) goes to
    /// the general path, and a fault or a poisoned file to [`read_faulted`](Self::read_faulted),
    /// both out of line. `GUARDED` is false only for
    /// [`read_at_unguarded`](Self::read_at_unguarded).
    #[inline(always)]
    fn read_small<const GUARDED: bool>(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = buf.len();
        // Free where it is inlined: every caller has just checked it.
        assert!(n <= SMALL);
        let Some(access) = self.entry.gate.fast_enter() else {
            return self.read_at_general(buf, offset);
        };
        // Inside the access, so the bound and the mapping agree (invariant of `small_end`).
        // `offset < small_end <= i64::MAX`, so `offset + n` cannot overflow.
        if offset >= self.small_end.load(Ordering::Relaxed) || offset + n as u64 > self.entry.len()
        {
            drop(access);
            return self.read_at_general(buf, offset);
        }
        let View::Whole(w) = &self.view else {
            // SAFETY: `small_end` is 0 for a windowed view (its invariant), and `offset` is
            // below it, so the view is whole.
            unsafe { std::hint::unreachable_unchecked() }
        };
        let dst = buf.as_mut_ptr();
        // SAFETY: `offset + n <= small_end + SMALL <= mapping length` (the invariant of
        // `small_end`, which agrees with the mapping inside our access), and the mapping stays
        // mapped while the access lasts; `buf` is a `&mut`, which cannot overlap a mapping that
        // the safe API never lends out as a reference (and `with_bytes`' callers promise no
        // write overlaps their slice); mapped memory is only accessed atomically (copy.rs);
        // `n <= SMALL` (asserted above).
        let copy = || unsafe { copy_small_from_shared(w.base().add(offset as usize), dst, n) };
        self.finish_read::<GUARDED>(access, copy, n)
    }

    /// The body of `read_at` for more than [`SMALL`] bytes: the same protocol as
    /// [`read_small`](Self::read_small), with a bounds check of the mapping's length (the
    /// buffer may be of any length) and the general copy. Callers pass more than [`SMALL`] bytes.
    #[inline(always)]
    fn read_large<const GUARDED: bool>(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let View::Whole(w) = &self.view else {
            return self.read_at_general(buf, offset);
        };
        let Some(access) = self.entry.gate.fast_enter() else {
            return self.read_at_general(buf, offset);
        };
        let n = buf.len();
        // SAFETY: we are inside an access of the file's gate until `access` is dropped.
        let (base, cap) = unsafe { w.base_and_cap() };
        let end = offset.checked_add(n as u64);
        if end.is_none_or(|end| end > self.limit().min(cap as u64)) {
            // Not all of `buf` lies before the end of the file (a short read, or none) and in
            // the mapping (a remap is due): the general path.
            drop(access);
            return self.read_at_general(buf, offset);
        }
        let dst = buf.as_mut_ptr();
        // SAFETY: `offset + n <= cap` (checked above), and the mapping at `base` stays mapped
        // while the access lasts; `dst..dst + n` is `buf`, a `&mut` that cannot overlap the
        // mapping (as in `read_small`); mapped memory is only accessed atomically (copy.rs).
        let copy = || unsafe { copy_from_shared(base.add(offset as usize), dst, n) };
        self.finish_read::<GUARDED>(access, copy, n)
    }

    /// The end both fast reads share: runs `copy` (of `n` bytes, inside `access`) under the
    /// fault guard unless `GUARDED` is false, leaves the gate, and reports a fault out of line.
    #[inline(always)]
    fn finish_read<const GUARDED: bool>(
        &self,
        access: AccessGuard<'_>,
        copy: impl FnOnce(),
        n: usize,
    ) -> io::Result<usize> {
        let clean = if GUARDED {
            self.fault.guarded_read_ok(copy)
        } else {
            copy();
            true
        };
        drop(access);
        if !clean {
            return Err(self.read_faulted());
        }
        Ok(n)
    }

    /// The error of a read whose copy faulted: the handler poisoned the file before it replaced
    /// the page, so the fault state has the error.
    #[cold]
    #[inline(never)]
    fn read_faulted(&self) -> io::Error {
        fault_to_io(self.fault.error())
    }

    #[inline(never)]
    fn read_at_general(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fail_fast()?;
        // As `pread`: a range past `off_t` is refused (even when empty or past the end).
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let mut refreshed = false;
        loop {
            let entry = self.entry();
            let gate = entry.gate.enter();
            let limit = self.limit();
            // A read reaching past the known length depends on the real one (someone outside
            // may have grown or cut the file): stat once. Reads inside it never ask the kernel.
            if !refreshed && offset.saturating_add(buf.len() as u64) > limit {
                drop(gate);
                refreshed = true;
                self.refresh_len()?;
                continue;
            }
            if offset >= limit {
                return Ok(0);
            }
            let n = (buf.len() as u64).min(limit - offset) as usize;
            let dst = buf.as_mut_ptr();
            let fault = self.fault();
            let copy = |region: &MappedExtent, roff: usize, boff: usize, k: usize| {
                fault
                    // SAFETY: `roff + k <= region.len()` (pieces), the region stays mapped
                    // (gate or the window's Arc), `dst + boff .. + k` lies in `buf`, and `buf`
                    // (a `&mut`) cannot overlap the mapping (as in `read_small`); mapped memory
                    // is only accessed atomically (copy.rs).
                    .guarded_read(|| unsafe {
                        copy_from_shared(region.ptr().add(roff), dst.add(boff), k)
                    })
                    .map_err(io::Error::from)
            };
            // SAFETY: we hold `gate` and read `limit` inside it.
            let r = unsafe { self.pieces(offset, n, copy) };
            match r {
                Ok(()) => return Ok(n),
                Err(Step::Remap(need)) => {
                    drop(gate);
                    self.remap(need)?;
                }
                Err(Step::Io(e)) => return Err(e),
            }
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "end of file at offset {offset} ({} bytes left to read)",
                            buf.len()
                        ),
                    ))
                }
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`, growing the file if it ends past the end. Returns
    /// `buf.len()`. `ReadOnly`: `PermissionDenied`. `Immediate`: the written range is durable
    /// when this returns. On a handle opened with `append(true)` it still writes at `offset`, as
    /// POSIX `pwrite` does (std on Linux appends there instead); `Write::write` appends.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.fail_fast()?;
        self.check_writable()?;
        // Before the empty case, as `pwrite`: a range past `off_t` is refused even when empty.
        let end = self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let immediate = self.sync == SyncMode::Immediate && self.mode == MapMode::ReadWrite;
        let entry = self.entry();
        loop {
            if self.mode == MapMode::CopyOnWrite {
                if end > self.limit() {
                    self.grow(end)?; // refuses: a copy-on-write handle cannot grow the file
                }
            } else if end > entry.reserved.load(Ordering::Acquire) {
                self.grow(end)?;
            }
            let gate = entry.gate.enter();
            let room = if self.mode == MapMode::CopyOnWrite {
                self.limit()
            } else {
                entry.reserved.load(Ordering::Acquire)
            };
            if end > room {
                // Cut by another handle between the growth and here: grow again.
                continue;
            }
            let src = buf.as_ptr();
            let fault = self.fault();
            let core = &self.core;
            let copy = |region: &MappedExtent, roff: usize, boff: usize, k: usize| {
                fault
                    // SAFETY: `roff + k <= region.len()` (pieces), the region stays mapped
                    // (gate or Arc), `src + boff .. + k` lies in `buf`. `buf` does not overlap
                    // the range written: the safe API lends no reference into a mapping, and a
                    // `with_bytes` slice may not be written while it lives (its contract).
                    // Mapped memory is only accessed atomically (copy.rs).
                    .guarded(|| unsafe { copy_to_shared(src.add(boff), region.ptr().add(roff), k) })
                    .map_err(io::Error::from)?;
                if immediate {
                    let r = region.mapping().sync_range(roff, k, true);
                    if let Err(e) = &r {
                        fault.poison(region.ptr() as usize + roff);
                        tracing::error!(path = %core.path.display(), error = %e, "msync failed; file poisoned");
                    }
                    r?;
                }
                Ok(())
            };
            // SAFETY: we hold `gate` and read the limit inside it.
            let r = unsafe { self.pieces(offset, buf.len(), copy) };
            match r {
                Ok(()) => {
                    if self.mode != MapMode::CopyOnWrite {
                        // Publish the length only now that the bytes are in, and while the
                        // access still keeps a cut out.
                        entry.len.fetch_max(end, Ordering::AcqRel);
                    }
                    drop(gate);
                    if self.mode != MapMode::CopyOnWrite {
                        entry.bump();
                    }
                    if immediate {
                        *self.entry().last_sync.lock() = Some((offset, buf.len() as u64));
                    } else if self.mode == MapMode::ReadWrite {
                        self.core.dirty.store(true, Ordering::Release);
                    }
                    return Ok(buf.len());
                }
                Err(Step::Remap(need)) => {
                    drop(gate);
                    self.remap(need)?;
                }
                Err(Step::Io(e)) => return Err(e),
            }
        }
    }

    /// Writes all of `buf` at `offset` (`write_at` always writes everything or fails).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset).map(|_| ())
    }

    /// Sets the file's length: growing reserves the space (`posix_fallocate`), cutting waits for
    /// running accesses of every handle on the file. Either starts from the file's real size, so
    /// a length changed outside the process is set exactly too. `ReadOnly`: `PermissionDenied`;
    /// `CopyOnWrite`: `Unsupported` (the file is never changed through such a handle).
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.fail_fast()?;
        self.check_writable()?;
        if self.mode == MapMode::CopyOnWrite {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a copy-on-write handle cannot change the file's length",
            ));
        }
        if len > MAX_LEN {
            return Err(invalid(format!(
                "length {len} is past the largest file size ({MAX_LEN})"
            )));
        }
        gate::refuse_in_scoped_access()?;
        let entry = self.entry();
        let _r = entry.resize.lock();
        // The real size: a length grown outside the process must be cut like one of ours.
        let size = self.adopt_real_len()?;
        let reserved = entry.reserved.load(Ordering::Acquire);
        if len > reserved {
            os::file::reserve(&self.core.file, size, len - size)?;
            entry.reserved.store(len, Ordering::Release);
            entry.len.store(len, Ordering::Release);
            entry.bump();
        } else {
            // Also when `len` is between the published length and the reservation: a growing
            // write in flight re-checks the reservation inside its access and grows again.
            entry.cut(&self.core.file, len)?;
        }
        self.core.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes every written byte and the length durable (`fsync`), whatever the sync mode.
    /// Read-only and copy-on-write handles have nothing to sync.
    pub fn sync_all(&self) -> io::Result<()> {
        self.fail_fast()?;
        if self.mode != MapMode::ReadWrite {
            return Ok(());
        }
        self.core.dirty.store(false, Ordering::Release);
        let r = os::file::sync_all(&self.core.file);
        self.core.after_sync(r, 0, self.entry().len())
    }

    /// Makes `offset..offset + len` durable (`msync(MS_SYNC)` of those pages). A zero `len` is
    /// an error; the part past the end of the file is ignored.
    pub fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fail_fast()?;
        if len == 0 {
            return Err(invalid("sync_range of zero bytes".into()));
        }
        self.check_range(offset, len)?;
        if self.mode != MapMode::ReadWrite {
            return Ok(());
        }
        loop {
            let entry = self.entry();
            let gate = entry.gate.enter();
            let limit = self.limit();
            if offset >= limit {
                return Ok(());
            }
            let n = len.min(limit - offset);
            let n = usize::try_from(n).map_err(|_| {
                invalid(format!(
                    "range of {n} bytes is larger than the address space"
                ))
            })?;
            let fault = self.fault();
            // SAFETY: we hold `gate` and read `limit` inside it.
            let r = unsafe {
                self.pieces(offset, n, |region, roff, _, k| {
                    let r = region.mapping().sync_range(roff, k, true);
                    if r.is_err() {
                        fault.poison(region.ptr() as usize + roff);
                    }
                    r
                })
            };
            match r {
                Ok(()) => {
                    *self.entry().last_sync.lock() = Some((offset, n as u64));
                    return Ok(());
                }
                Err(Step::Remap(need)) => {
                    drop(gate);
                    self.remap(need)?;
                }
                Err(Step::Io(e)) => {
                    tracing::error!(path = %self.core.path.display(), error = %e, "msync failed; file poisoned");
                    return Err(e);
                }
            }
        }
    }

    /// Applies `advice` to the mapped pages of `offset..offset + len` (with windows: the windows
    /// mapped now; windows mapped later get the configured advice). A zero `len` is an error.
    pub fn advise(&self, offset: u64, len: u64, advice: Advice) -> io::Result<()> {
        self.fail_fast()?;
        if len == 0 {
            return Err(invalid("advise of zero bytes".into()));
        }
        let end = self.check_range(offset, len)?;
        let page = os::page_size() as u64;
        let apply = |region: &MappedExtent| -> io::Result<()> {
            let rs = region.offset();
            let re = rs + region.len() as u64;
            let s = offset.max(rs);
            let e = end.min(re);
            if s >= e {
                return Ok(());
            }
            let s_al = (s - rs) / page * page;
            let e_al = ((e - rs).div_ceil(page) * page).min(region.len() as u64);
            region
                .mapping()
                .advise_range(s_al as usize, (e_al - s_al) as usize, advice.to_os())
        };
        match &self.view {
            View::Whole(w) => {
                let _g = self.entry().gate.enter();
                // SAFETY: inside an access of the gate.
                apply(unsafe { w.current() })
            }
            View::Windows(c) => c.mapped().iter().try_for_each(|r| apply(r)),
        }
    }

    /// Runs `f` on the file's bytes `offset..offset + len` in place, without a copy, and returns
    /// its result, or an error if the file faulted while `f` ran (the bytes `f` saw may then be
    /// zeros, so its result is discarded). The range must lie inside the file (`UnexpectedEof`
    /// otherwise).
    ///
    /// [`with_view`](Self::with_view) is the safe way to look at mapped bytes without a copy.
    ///
    /// The slice is only valid inside `f`. Changing the file's length from inside `f` (a growing
    /// write, `set_len`, through any handle of this file), or a read that needs a remap, fails
    /// with `WouldBlock` instead of deadlocking: those wait until no access runs, and `f`'s runs.
    ///
    /// # Safety
    ///
    /// A `&[u8]` promises that its bytes do not change while it lives; the file is mapped
    /// `MAP_SHARED` and nothing in segpool can stop others from changing it. The caller promises,
    /// for the whole time `f` runs:
    ///
    /// * no other handle, thread or process writes any byte of `offset..offset + len` (through
    ///   this or another `MappedFile` or `SharedMemory`, `std::fs::File`, another mapping, or a
    ///   [`MappedView`] atomic), and neither does `f` itself (a `write_at` from the slice into
    ///   a range that overlaps it breaks this promise too);
    /// * nobody truncates the file below `offset + len` (a truncation is caught, poisons the file
    ///   and discards `f`'s result, but `f` has then seen its bytes change to zeros).
    ///
    /// This is the stance of `memmap2`, whose `Mmap::map` is `unsafe` for the same reason.
    pub unsafe fn with_bytes<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        self.scoped(offset, len, false, |ptr| {
            // SAFETY: `ptr..ptr + len` lies in a live mapping inside the file for as long as `f`
            // runs (`scoped`'s promise), or is dangling with `len == 0`; the slice cannot outlive
            // `f`. That its bytes do not change while it lives is the caller's promise (this
            // fn's contract); a fault is caught by the guard, which discards the result.
            f(unsafe { std::slice::from_raw_parts(ptr, len) })
        })
    }

    /// Runs `f` on a [`MappedView`] of the file's bytes `offset..offset + len`, without a copy,
    /// and returns its result, or an error if the file faulted while `f` ran (the view may then
    /// have read zeros and its stores may be lost, so the result is discarded and the file is
    /// poisoned). The range must lie inside the file (`UnexpectedEof` otherwise).
    ///
    /// The view reads by copy and hands out aligned atomics, never a `&[u8]`, so bytes that
    /// another thread or process changes meanwhile are no undefined behaviour (see
    /// [`MappedView`]'s `## Safety`). It lives only inside `f`. Changing the file's length from
    /// inside `f`, or a read that needs a remap, fails with `WouldBlock`, as in
    /// [`with_bytes`](Self::with_bytes).
    ///
    /// ```no_run
    /// use std::sync::atomic::Ordering;
    /// use segpool::fs::{MmapFs, MapConfig, MapMode};
    /// # fn main() -> std::io::Result<()> {
    /// let fs = MmapFs::new("/tmp/app", MapConfig { mode: MapMode::ReadWrite, ..MapConfig::default() })?;
    /// let f = fs.create("state")?;
    /// f.set_len(4096)?;
    /// // A sequence number at offset 0, shared with every process that maps the file.
    /// let seq = f.with_view(0, 64, |v| v.atomic_u64(0).fetch_add(1, Ordering::AcqRel))?;
    /// # let _ = seq; Ok(()) }
    /// ```
    pub fn with_view<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&MappedView) -> R,
    ) -> io::Result<R> {
        let writable = self.mode != MapMode::ReadOnly;
        self.scoped(offset, len, writable, |ptr| {
            // SAFETY: `ptr..ptr + len` lies in a live mapping of the file offsets `offset..`
            // inside the file while `f` runs (`scoped`'s promise), and the view is lent to `f`
            // by reference only, so it is gone when `scoped` releases the mapping; mapped memory
            // is only accessed atomically in this process (copy.rs, the view); the mapping is
            // `PROT_WRITE` unless the mode is `ReadOnly`.
            let view = unsafe { MappedView::new(ptr, len, offset, writable) };
            f(&view)
        })
    }

    /// Resolves `offset..offset + len` to a pointer into a live mapping inside the file and runs
    /// `f` on it inside the file's gate, under the fault guard (`write`: the full guard, for an
    /// `f` that may store), and returns its result or the fault's error. The mapping stays
    /// mapped, and no cut of the range runs through this process, until `f` returns. `len == 0`
    /// passes a dangling pointer.
    fn scoped<R>(
        &self,
        offset: u64,
        len: usize,
        write: bool,
        f: impl FnOnce(*mut u8) -> R,
    ) -> io::Result<R> {
        self.fail_fast()?;
        let end = self.check_range(offset, len as u64)?;
        let mut refreshed = false;
        loop {
            let entry = self.entry();
            let gate = entry.gate.enter();
            let limit = self.limit();
            if end > limit {
                drop(gate);
                if !refreshed && self.refresh_len()? >= end {
                    refreshed = true;
                    continue;
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("bytes {offset}..{end} are past the end of the file ({limit} bytes)"),
                ));
            }
            if len == 0 {
                drop(gate);
                return Ok(f(std::ptr::NonNull::dangling().as_ptr()));
            }
            let mut window_hold: Option<Arc<MappedExtent>> = None;
            let mut temp_hold: Option<MappedExtent> = None;
            let ptr = match &self.view {
                View::Whole(w) => {
                    // SAFETY: inside an access of the gate.
                    let r = unsafe { w.current() };
                    if end > r.len() as u64 {
                        drop(gate);
                        self.remap(end)?;
                        continue;
                    }
                    // SAFETY: `offset < end <= r.len()`.
                    unsafe { r.ptr().add(offset as usize) }
                }
                View::Windows(cache) => {
                    let size = cache.size();
                    if offset / size == (end - 1) / size {
                        let w = cache.get(
                            &self.core.file,
                            offset,
                            self.mode,
                            &self.cfg,
                            limit,
                            self.fault(),
                        )?;
                        // SAFETY: `offset` lies in this window (same window index as computed).
                        let p = unsafe { w.ptr().add((offset - w.offset()) as usize) };
                        window_hold = Some(w);
                        p
                    } else {
                        // Spans windows: one mapping of exactly the range, for this call only.
                        let page = os::page_size() as u64;
                        let start = offset / page * page;
                        let r = MappedExtent::map(
                            &self.core.file,
                            start,
                            (end - start) as usize,
                            self.mode,
                            &self.cfg,
                            limit,
                            self.fault(),
                        )?;
                        // SAFETY: `offset - start < page <= r.len()`.
                        let p = unsafe { r.ptr().add((offset - start) as usize) };
                        temp_hold = Some(r);
                        p
                    }
                }
            };
            let _scope = ScopedAccess::begin();
            // `f` runs inside the fault guard; a view's atomics may store, so then the guard
            // is the full one (a store into a replacement page must be seen before the check).
            let r = if write {
                self.fault().guarded(|| f(ptr))
            } else {
                self.fault().guarded_read(|| f(ptr))
            };
            drop(_scope);
            drop(gate);
            drop(window_hold);
            drop(temp_hold);
            return r.map_err(io::Error::from);
        }
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

/// The length of a whole-file mapping for `need` bytes: whole pages, at least one, and at most
/// what the address space holds.
fn whole_capacity(need: u64, file_len: u64) -> io::Result<usize> {
    let page = os::page_size() as u64;
    need.max(1)
        .checked_next_multiple_of(page)
        .filter(|&c| c <= isize::MAX as u64 / 2)
        .map(|c| c as usize)
        .ok_or_else(|| {
            invalid(format!(
                "a file of {file_len} bytes is too large to map whole: set MapConfig::window"
            ))
        })
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!(path = %self.core.path.display(), error = %e, "closing a mapped file failed");
        }
    }
}

impl Read for &MappedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pos = self.cursor.lock();
        let n = self.read_at(buf, *pos)?;
        *pos += n as u64;
        Ok(n)
    }
}

impl Write for &MappedFile {
    /// Writes at the cursor, or with `O_APPEND` at the file's current end (also when another
    /// handle or process grew it), leaving the cursor after the bytes written, as `write(2)`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pos = self.cursor.lock();
        let offset = if self.append && !buf.is_empty() {
            self.reserve_append(buf.len())?
        } else {
            *pos
        };
        let n = self.write_at(buf, offset)?;
        *pos = offset + n as u64;
        Ok(n)
    }

    /// Nothing is buffered: bytes are in the mapping once `write` returns. Durability is the
    /// sync mode's business (or `sync_all`).
    fn flush(&mut self) -> io::Result<()> {
        self.fail_fast()
    }
}

impl Seek for &MappedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let mut cur = self.cursor.lock();
        let (base, delta) = match pos {
            SeekFrom::Start(n) => (n, 0),
            // The real end, as `lseek(SEEK_END)`: someone outside may have changed it.
            SeekFrom::End(d) => (self.refresh_len()?, d),
            SeekFrom::Current(d) => (*cur, d),
        };
        let new = base
            .checked_add_signed(delta)
            .filter(|&p| p <= MAX_LEN)
            .ok_or_else(|| {
                invalid(format!(
                    "seek to {base} {delta:+} is before the start or past the largest file size"
                ))
            })?;
        *cur = new;
        Ok(new)
    }
}

impl Read for MappedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for MappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl Seek for MappedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        (&*self).seek(pos)
    }
}

/// The `io::Error` of a fault, out of line: the read fast path pays nothing for it until it
/// happens.
#[cold]
#[inline(never)]
fn fault_to_io(e: crate::Error) -> io::Error {
    io::Error::from(e)
}
