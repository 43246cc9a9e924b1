//! `MappedExtent`: one mapping of part of a file (a window, or the whole-file mapping), registered
//! with the fault guard for as long as it is mapped.

use std::fs::File;
use std::io;

use super::config::{Advice, MapConfig, MapMode};
use crate::fault::{self, FileFaultState, RangeRegistration};
use crate::os::{self, Mapping, Protection, Sharing};
use crate::sync::Arc;

/// A file mapping of `map.len()` bytes starting at file offset `offset`.
///
/// # Invariants
///
/// * `_registration` (held only for its `Drop`, which deregisters the range) covers exactly `map`, and is dropped before `map` (fields drop in
///   declaration order), so the fault guard never recovers a fault in an address range that was
///   unmapped and maybe reused.
/// * Every access to `map`'s memory runs inside [`FileFaultState::guarded`] of the file's state,
///   through raw pointers and atomics (the bytes may change under us: another handle, thread or
///   process). The only references into it are `MappedView`'s atomics and the slice of the
///   `unsafe` `with_bytes`, whose caller promises nobody writes it meanwhile.
#[derive(Debug)]
pub(crate) struct MappedExtent {
    _registration: RangeRegistration,
    map: Mapping,
    offset: u64,
}

impl MappedExtent {
    /// Maps `len` bytes of `file` at `offset` (page-aligned) as `mode` says, registers the range
    /// with the fault guard, and applies the hints of `cfg` to the part that is inside the file
    /// (`file_len` bytes long): prefaulting or locking pages past the end would fault.
    pub(crate) fn map(
        file: &File,
        offset: u64,
        len: usize,
        mode: MapMode,
        cfg: &MapConfig,
        file_len: u64,
        state: &Arc<FileFaultState>,
    ) -> io::Result<MappedExtent> {
        Self::map_with(file, offset, len, mode, cfg, file_len, state, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn map_with(
        file: &File,
        offset: u64,
        len: usize,
        mode: MapMode,
        cfg: &MapConfig,
        file_len: u64,
        state: &Arc<FileFaultState>,
        map_populate: bool,
    ) -> io::Result<MappedExtent> {
        let (protection, sharing) = match mode {
            MapMode::ReadOnly => (Protection::Read, Sharing::Shared),
            MapMode::ReadWrite => (Protection::ReadWrite, Sharing::Shared),
            MapMode::CopyOnWrite => (Protection::ReadWrite, Sharing::Private),
        };
        let map = Mapping::file(file, offset, len, protection, sharing, map_populate)?;
        // SAFETY: `map` is a live file mapping we own; the registration is stored next to it and
        // dropped first (see the type invariant), and every access goes through `guarded`.
        let registration =
            unsafe { fault::register(map.as_ptr(), map.len(), state) }.map_err(io::Error::from)?;
        let extent = MappedExtent {
            _registration: registration,
            map,
            offset,
        };
        let page = os::page_size() as u64;
        let in_file = file_len.saturating_sub(offset).min(extent.map.len() as u64);
        let in_file = (in_file.div_ceil(page) * page) as usize;
        if cfg.huge_pages {
            extent.map.advise_huge_pages();
        }
        if cfg.advice != Advice::Normal {
            extent
                .map
                .advise_range(0, extent.map.len(), cfg.advice.to_os())?;
        }
        if cfg.populate && !map_populate && in_file > 0 {
            // Read-populate even for writable maps: MADV_POPULATE_WRITE would dirty (shared) or
            // privately copy (copy-on-write) every page of the file.
            match extent.map.populate_range(0, in_file, false) {
                // A kernel before 5.14 has no MADV_POPULATE_READ: map again with MAP_POPULATE.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    drop(extent);
                    return Self::map_with(file, offset, len, mode, cfg, file_len, state, true);
                }
                r => r?,
            }
        }
        if cfg.lock && in_file > 0 {
            extent
                .map
                .lock_range(0, in_file)
                .map_err(|e| lock_error(e, in_file))?;
        }
        Ok(extent)
    }

    /// The first mapped byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Mapped bytes (a multiple of the page size).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The file offset of the first mapped byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The mapping itself, for `msync` and `madvise`.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }
}

fn lock_error(e: io::Error, len: usize) -> io::Error {
    let limit = match os::file::memlock_limit() {
        Some(l) => format!("{l} bytes"),
        None => "unlimited".into(),
    };
    io::Error::new(
        e.kind(),
        format!("mlock of {len} bytes refused ({e}); RLIMIT_MEMLOCK is {limit}: raise it (ulimit -l) or set MapConfig::lock to false"),
    )
}
