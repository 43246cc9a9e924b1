//! The shape every access but the read fast path shares, written once: enter the gate, read the
//! length, split the range into pieces that lie in one mapping each, and when something must be
//! done outside the gate first (a remap, a re-read of the length, a growth), leave, do it, and go
//! again ([`MappedFile::access`]).

use std::io;

use super::open::whole_capacity;
use super::{small_end, MappedFile, View};
use crate::fs::config::MapMode;
use crate::fs::extent::MappedExtent;
use crate::fs::gate::{self, AccessGuard};
use crate::os;
use crate::sync::atomic::Ordering;

/// Why a round of an access stopped before it was done: what must happen outside the gate
/// before the next round, or the error that ends the access.
pub(super) enum Step {
    /// The whole-file mapping is shorter than this many bytes: remap, and go again.
    Remap(u64),
    /// The range depends on the file's real length (someone outside the process may have grown
    /// or cut the file): re-read it from the kernel, and go again.
    Refresh,
    /// The file must first grow to this many bytes on disk: grow, and go again.
    Grow(u64),
    /// The access failed: the error ends it.
    Io(io::Error),
}

impl From<io::Error> for Step {
    fn from(e: io::Error) -> Self {
        Step::Io(e)
    }
}

/// One round of an access ([`MappedFile::access`]).
///
/// # Invariant
///
/// A round exists only inside an access of the file's gate (only `access` makes one: `file` is
/// private to this module, and the round is lent to the closure by reference), so the mappings
/// it hands out stay mapped while the round runs.
pub(super) struct Round<'a> {
    file: &'a MappedFile,
    /// The length this handle reads up to, read inside the gate.
    pub(super) limit: u64,
    /// Whether an earlier round of this access re-read the length ([`Step::Refresh`]).
    pub(super) refreshed: bool,
}

impl MappedFile {
    /// Runs an access of the file's mapped memory: enters the file's gate, reads the length this
    /// handle reads up to, and runs `round` inside the gate. When the round stops at a [`Step`]
    /// that can be cleared, leaves the gate, clears it and goes again; an error ends the access.
    /// Returns the round's result with the access still held: the caller drops it once its
    /// result no longer needs the gate (a write publishes its length first).
    pub(super) fn access<R>(
        &self,
        mut round: impl FnMut(&Round<'_>) -> Result<R, Step>,
    ) -> io::Result<(R, AccessGuard<'_>)> {
        let mut refreshed = false;
        loop {
            let access = self.entry().gate.enter();
            let step = match round(&Round {
                file: self,
                limit: self.limit(),
                refreshed,
            }) {
                Ok(r) => return Ok((r, access)),
                Err(step) => step,
            };
            drop(access);
            match step {
                Step::Remap(need) => self.remap(need)?,
                Step::Refresh => {
                    refreshed = true;
                    self.refresh_len()?;
                }
                Step::Grow(end) => self.grow(end)?,
                Step::Io(e) => return Err(e),
            }
        }
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
        let extent = MappedExtent::map(
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
        let old = unsafe { w.replace(extent) };
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
    pub(super) fn refresh_len(&self) -> io::Result<u64> {
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
    pub(super) fn adopt_real_len(&self) -> io::Result<u64> {
        let size = os::file::stat(&self.core.file)?.size;
        self.entry().adopt(size)?;
        Ok(size)
    }
}

impl Round<'_> {
    /// Runs `f` on each piece of `offset..offset + n` that lies in one mapping: `f(extent,
    /// offset in extent, offset in the caller's buffer, length)`. The whole-file mapping may be
    /// too short for the range: then `Step::Remap` before any piece. The range lies inside the
    /// file (the caller checked it against [`limit`](Self::limit) or the reservation); a piece
    /// past the end would fault, which the guard turns into an error that poisons the file.
    pub(super) fn pieces(
        &self,
        offset: u64,
        n: usize,
        mut f: impl FnMut(&MappedExtent, usize, usize, usize) -> io::Result<()>,
    ) -> Result<(), Step> {
        let file = self.file;
        match &file.view {
            View::Whole(w) => {
                // SAFETY: a round runs inside an access of the gate (`Round`'s invariant).
                let r = unsafe { w.current() };
                let end = offset + n as u64;
                if end > r.len() as u64 {
                    return Err(Step::Remap(end));
                }
                f(r, offset as usize, 0, n)?;
            }
            View::Windows(cache) => {
                let file_len = file.limit();
                let mut done = 0usize;
                while done < n {
                    let pos = offset + done as u64;
                    let w = cache.get(
                        &file.core.file,
                        pos,
                        file.mode,
                        &file.cfg,
                        file_len,
                        file.fault(),
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
}
