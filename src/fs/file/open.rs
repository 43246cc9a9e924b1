//! Opening: maps a file and joins the registry entry of every handle on it.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use super::{invalid, small_end, FileCore, MappedFile, View};
use crate::fs::config::{MapConfig, MapMode, SyncMode};
use crate::fs::extent::MappedExtent;
use crate::fs::flusher::Flusher;
use crate::fs::gate;
use crate::fs::registry;
use crate::fs::whole::WholeMap;
use crate::fs::window::WindowCache;
use crate::os;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Mutex};

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
}

/// The length of a whole-file mapping for `need` bytes: whole pages, at least one, and at most
/// what the address space holds.
pub(super) fn whole_capacity(need: u64, file_len: u64) -> io::Result<usize> {
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
