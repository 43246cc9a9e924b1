//! Writing: `write_at` through the mapping, growth of the file (reserved on disk before the bytes
//! go in), appends, and `set_len`.

use std::io;

use super::access::Step;
use super::{invalid, MappedFile, MAX_LEN};
use crate::fs::config::{MapMode, SyncMode};
use crate::fs::copy::copy_to_shared;
use crate::fs::gate;
use crate::os;
use crate::sync::atomic::Ordering;

impl MappedFile {
    /// Grows the file on disk to at least `end` bytes, reserving the space (`posix_fallocate`)
    /// so that a full disk is an error here instead of a fault at the write. Readers do not see
    /// the new length yet: the write publishes it after its bytes are in.
    pub(super) fn grow(&self, end: u64) -> io::Result<()> {
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
    pub(super) fn reserve_append(&self, n: usize) -> io::Result<u64> {
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
        let cow = self.mode == MapMode::CopyOnWrite;
        let immediate = self.sync == SyncMode::Immediate && self.mode == MapMode::ReadWrite;
        let entry = self.entry();
        // How far the file may be written: a copy-on-write handle up to the length it reads
        // (`limit`), any other up to the space reserved on disk.
        let room = |limit: u64| {
            if cow {
                limit
            } else {
                entry.reserved.load(Ordering::Acquire)
            }
        };
        if end > room(self.limit()) {
            self.grow(end)?; // refuses on a copy-on-write handle: it cannot grow the file
        }
        let src = buf.as_ptr();
        let fault = self.fault();
        let core = &self.core;
        let ((), access) = self.access(|round| {
            if end > room(round.limit) {
                // Cut by another handle between the growth and here: grow again.
                return Err(Step::Grow(end));
            }
            round.pieces(offset, buf.len(), |extent, roff, boff, k| {
                fault
                    // SAFETY: `roff + k <= extent.len()` (pieces), the extent stays mapped
                    // (gate or Arc), `src + boff .. + k` lies in `buf`. `buf` does not overlap
                    // the range written: the safe API lends no reference into a mapping, and a
                    // `with_bytes` slice may not be written while it lives (its contract).
                    // Mapped memory is only accessed atomically (copy.rs).
                    .guarded(|| unsafe { copy_to_shared(src.add(boff), extent.ptr().add(roff), k) })
                    .map_err(io::Error::from)?;
                if immediate {
                    let r = extent.mapping().sync_range(roff, k, true);
                    if let Err(e) = &r {
                        fault.poison(extent.ptr() as usize + roff);
                        tracing::error!(path = %core.path.display(), error = %e, "msync failed; file poisoned");
                    }
                    r?;
                }
                Ok(())
            })?;
            if !cow {
                // Publish the length only now that the bytes are in, and while the access still
                // keeps a cut out.
                entry.len.fetch_max(end, Ordering::AcqRel);
            }
            Ok(())
        })?;
        drop(access);
        if !cow {
            entry.bump();
        }
        if immediate {
            *self.entry().last_sync.lock() = Some((offset, buf.len() as u64));
        } else if self.mode == MapMode::ReadWrite {
            self.core.dirty.store(true, Ordering::Release);
        }
        Ok(buf.len())
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
}
