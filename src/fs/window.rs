//! The window cache: a bounded set of fixed-size windows over a file larger than what a handle
//! may map at once.
//!
//! Windows are `size` bytes (whole pages) at file offsets that are multiples of `size`, so any
//! byte belongs to exactly one window and a copy crossing a window boundary is split in pieces.
//! At most `max` windows stay in the cache; mapping one more unmaps the least recently used. A
//! window is reference-counted: an access holds its `Arc` while it copies, so an eviction by
//! another thread never unmaps memory in use (the mapping goes when the last user lets go). So
//! the bound is `max` cached windows plus at most one in flight per running access.

use std::fs::File;
use std::io;

use super::config::{MapConfig, MapMode};
use super::extent::MappedExtent;
use crate::fault::FileFaultState;
use crate::sync::{Arc, Mutex};

/// # Invariants
///
/// `lru` holds at most `max` windows, with distinct offsets, each a multiple of `size`;
/// the most recently used is last.
#[derive(Debug)]
pub(crate) struct WindowCache {
    size: u64,
    max: usize,
    lru: Mutex<Vec<Arc<MappedExtent>>>,
}

impl WindowCache {
    pub(crate) fn new(size: u64, max: usize) -> Self {
        let page = crate::os::page_size() as u64;
        Self {
            size: size.div_ceil(page) * page,
            max,
            // `max` may be huge (validated only against the address space): grow on demand.
            lru: Mutex::new(Vec::with_capacity(max.min(16) + 1)),
        }
    }

    /// The window size in bytes (whole pages).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The window holding file offset `offset`, mapped if needed.
    pub(crate) fn get(
        &self,
        file: &File,
        offset: u64,
        mode: MapMode,
        cfg: &MapConfig,
        file_len: u64,
        state: &Arc<FileFaultState>,
    ) -> io::Result<Arc<MappedExtent>> {
        let start = offset - offset % self.size;
        let mut lru = self.lru.lock();
        if let Some(i) = lru.iter().position(|w| w.offset() == start) {
            let w = lru.remove(i);
            lru.push(Arc::clone(&w));
            return Ok(w);
        }
        // Mapping under the lock keeps two threads from mapping the same window twice; the
        // syscall is short next to the page faults the window will take.
        let w = Arc::new(MappedExtent::map(
            file,
            start,
            self.size as usize,
            mode,
            cfg,
            file_len,
            state,
        )?);
        lru.push(Arc::clone(&w));
        if lru.len() > self.max {
            let evicted = lru.remove(0);
            drop(lru);
            drop(evicted);
        }
        Ok(w)
    }

    /// The windows mapped right now (for `advise`, and tests of the bound).
    pub(crate) fn mapped(&self) -> Vec<Arc<MappedExtent>> {
        self.lru.lock().clone()
    }
}
