//! Durability and advice: `fdatasync` for the flusher and `close`, `sync_all`, `sync_range`, and
//! `madvise` of mapped ranges. A failed sync poisons the file: written bytes may be lost.

use std::io;

use super::access::Step;
use super::{invalid, FileCore, MappedFile, View};
use crate::fs::config::{Advice, MapMode};
use crate::fs::extent::MappedExtent;
use crate::fs::flusher::Flushable;
use crate::os;
use crate::sync::atomic::Ordering;

impl FileCore {
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

impl Flushable for FileCore {
    fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    fn flush(&self) -> bool {
        // A failure poisons the file and is reported as an event by `sync_data`.
        !self.entry().fault.is_faulted() && self.sync_data().is_ok()
    }
}

impl MappedFile {
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
        let fault = self.fault();
        let path = &self.core.path;
        let (synced, _access) = self.access(|round| {
            let limit = round.limit;
            if offset >= limit {
                return Ok(None);
            }
            let n = len.min(limit - offset);
            let n = usize::try_from(n).map_err(|_| {
                invalid(format!(
                    "range of {n} bytes is larger than the address space"
                ))
            })?;
            round
                .pieces(offset, n, |extent, roff, _, k| {
                    let r = extent.mapping().sync_range(roff, k, true);
                    if r.is_err() {
                        fault.poison(extent.ptr() as usize + roff);
                    }
                    r
                })
                .inspect_err(|step| {
                    if let Step::Io(e) = step {
                        tracing::error!(path = %path.display(), error = %e, "msync failed; file poisoned");
                    }
                })?;
            Ok(Some(n as u64))
        })?;
        if let Some(n) = synced {
            *self.entry().last_sync.lock() = Some((offset, n));
        }
        Ok(())
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
        let apply = |extent: &MappedExtent| -> io::Result<()> {
            let rs = extent.offset();
            let re = rs + extent.len() as u64;
            let s = offset.max(rs);
            let e = end.min(re);
            if s >= e {
                return Ok(());
            }
            let s_al = (s - rs) / page * page;
            let e_al = ((e - rs).div_ceil(page) * page).min(extent.len() as u64);
            extent
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
}
