//! The page-cache row of `segpool bench`'s file section: a budgeted cache of 4 KiB segments over
//! a file larger than its budget, filled on misses through a `MappedFile` (mmap mode) or a
//! `DirectFile` (`O_DIRECT`, direct mode). It reports the latency of a miss and the memory the
//! cache costs: the pool's pages, plus the file's pages the kernel keeps in its page cache
//! (counted with `mincore`), which direct mode does not fill.
//!
//! Both modes start with the file evicted from the page cache and read the same random pages in
//! the same order; the cache evicts its oldest page when the pool's budget is reached.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::time::Instant;

use segpool::fs::{Advice, MapConfig, MmapFs};
use segpool::{Segment, SegmentPool};
use serde::{Deserialize, Serialize};

use crate::bench::table::{Align, Table};
use crate::Error;

const PAGE: usize = 4096;

/// Page reads per mode: several times the largest budget's pages, so most reads evict.
const MISSES: usize = 4096;

/// One mode's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeReport {
    /// `mmap` or `direct`.
    pub mode: String,
    /// Median and 99th percentile ns per miss (allocate a segment, read the page into it).
    pub miss_median_ns: f64,
    pub miss_p99_ns: f64,
    /// The pool's peak mapped bytes (bounded by the budget).
    pub pool_bytes: usize,
    /// Bytes of the file in the kernel's page cache after the reads.
    pub page_cache_bytes: usize,
}

/// The comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageCacheReport {
    pub file_len: u64,
    pub budget: usize,
    pub misses: usize,
    pub modes: Vec<ModeReport>,
}

/// The cache's budget for a file of `len` bytes: a sixteenth of it, at most 4 MiB.
pub fn budget_for(len: u64) -> usize {
    ((len / 16) as usize).clamp(64 * PAGE, 4 << 20)
}

/// Runs both modes on the file `name` in `dir` (`len` bytes). `Ok(None)` (with a note on stderr)
/// where the file system has no direct I/O.
pub fn measure(dir: &Path, name: &str, len: u64) -> Result<Option<PageCacheReport>, Error> {
    let budget = budget_for(len);
    let fs = MmapFs::new(dir, MapConfig::default())?;
    let direct = match fs.open_direct(name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            eprintln!("files: no page-cache row: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let pages = len / PAGE as u64;
    let mut modes = Vec::new();
    for mode in ["mmap", "direct"] {
        evict(&dir.join(name))?;
        let pool = SegmentPool::builder()
            .size_classes(&[PAGE])
            .budget(budget)
            .build()?;
        let mut cache: VecDeque<Segment> = VecDeque::new();
        let mut ns = Vec::with_capacity(MISSES);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mapped = if mode == "mmap" {
            let f = fs.open(name)?;
            f.advise(0, f.len(), Advice::Random)?;
            Some(f)
        } else {
            None
        };
        for _ in 0..MISSES {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let page =
                (((x.wrapping_mul(0x2545_f491_4f6c_dd1d) as u128) * pages as u128) >> 64) as u64;
            if cache.len() == budget / PAGE {
                cache.pop_front();
            }
            let t0 = Instant::now();
            let mut seg = pool.allocate(PAGE)?;
            match &mapped {
                Some(f) => f.read_exact_at(&mut seg, page * PAGE as u64)?,
                None => {
                    let n = direct.read_at(&mut seg, page * PAGE as u64)?;
                    if n != PAGE {
                        return Err(format!("direct read of page {page}: {n} bytes").into());
                    }
                }
            }
            ns.push(t0.elapsed().as_nanos() as f64);
            cache.push_back(seg);
        }
        let page_cache_bytes = cached_pages(&dir.join(name), len)? * PAGE;
        drop(mapped);
        drop(cache);
        ns.sort_by(f64::total_cmp);
        modes.push(ModeReport {
            mode: mode.to_string(),
            miss_median_ns: ns[ns.len() / 2],
            miss_p99_ns: ns[ns.len() * 99 / 100],
            pool_bytes: pool.stats().peak_mapped_bytes,
            page_cache_bytes,
        });
    }
    evict(&dir.join(name))?;
    Ok(Some(PageCacheReport {
        file_len: len,
        budget,
        misses: MISSES,
        modes,
    }))
}

/// Writes back and drops the file's pages from the page cache (`fdatasync`, then
/// `POSIX_FADV_DONTNEED`): both modes start cold.
fn evict(path: &Path) -> Result<(), Error> {
    let f = std::fs::File::open(path)?;
    f.sync_data()?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// Pages of the file's first `len` bytes in the page cache (`mincore` over a fresh mapping,
/// which reports the page cache whatever this mapping touched: it touches nothing).
fn cached_pages(path: &Path, len: u64) -> Result<usize, Error> {
    let f = std::fs::File::open(path)?;
    // SAFETY: the mapping is only given to mincore, never read; the file is the bench's own.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    let mut vec = vec![0u8; (len as usize).div_ceil(PAGE)];
    // SAFETY: `map` is a live mapping of `len` bytes and `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut _, len as usize, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("mincore: {}", io::Error::last_os_error()).into());
    }
    Ok(vec.iter().filter(|&&v| v & 1 != 0).count())
}

fn us(ns: f64) -> String {
    format!("{:.1} us", ns / 1000.0)
}

impl PageCacheReport {
    /// The comparison as a line saying what was measured and a table (Markdown, also readable
    /// as text).
    pub fn table(&self) -> String {
        let mut t = Table::new([
            ("mode", 0, Align::Left),
            ("miss median", 0, Align::Right),
            ("miss p99", 0, Align::Right),
            ("pool", 0, Align::Right),
            ("kernel page cache", 0, Align::Right),
            ("memory, total", 0, Align::Right),
        ]);
        for m in &self.modes {
            t.push(vec![
                m.mode.clone(),
                us(m.miss_median_ns),
                us(m.miss_p99_ns),
                crate::bytes_text(m.pool_bytes),
                crate::bytes_text(m.page_cache_bytes),
                crate::bytes_text(m.pool_bytes + m.page_cache_bytes),
            ]);
        }
        format!(
            "page cache of 4 KiB pages under a {} budget over a {} file, {} random misses from a \
             cold start:\n\n{}",
            crate::bytes_text(self.budget),
            crate::bytes_text(self.file_len as usize),
            self.misses,
            t.markdown()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_mode_keeps_the_page_cache_empty() {
        let dir = tempfile::tempdir().unwrap();
        let len = 4u64 << 20;
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut data = Vec::new();
        for _ in 0..4 {
            data.extend_from_slice(&chunk);
        }
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let Some(r) = measure(dir.path(), "f", len).unwrap() else {
            println!("skipped: no direct I/O on the temp folder's file system");
            return;
        };
        assert_eq!(r.modes.len(), 2);
        assert!(r.budget < len as usize);
        for m in &r.modes {
            assert!(m.pool_bytes <= r.budget && m.pool_bytes > 0, "{m:?}");
            assert!(m.miss_median_ns > 0.0 && m.miss_p99_ns >= m.miss_median_ns);
        }
        assert!(r.modes[0].page_cache_bytes > r.budget, "{:?}", r.modes[0]);
        assert_eq!(r.modes[1].page_cache_bytes, 0, "{:?}", r.modes[1]);
        assert!(r.table().contains("| direct |"));
    }
}
