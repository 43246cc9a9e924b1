//! A fixed-budget page cache over a file, as a database engine would have one.
//!
//! * Pages are 4 KiB segments from a pool whose budget is the cache's size: the cache can never
//!   take more memory than that, whatever the workload.
//! * A miss allocates a segment and reads the page from the file through `segpool::fs`: a
//!   `MappedFile` (mmap mode), or with `--direct` a `DirectFile` (`O_DIRECT`), so the kernel keeps
//!   no second copy of the pages in its page cache: the cache's budget is then all the memory
//!   the file costs.
//! * Eviction is a clock (second chance) that runs from the pool's `on_pressure` callback: when
//!   an allocation would take the pool past its budget, the pool asks the cache to free a page,
//!   hands the freed slice to the allocation that asked first, and asks again while that is not
//!   enough. No separate "is the cache full?" bookkeeping can drift from the truth, and an
//!   allocation never fails while the cache has a page to evict (the rules are in the rustdoc of
//!   `SegmentPoolBuilder::on_pressure`).
//! * Lock order: the pool calls `on_pressure` from inside `allocate`, and the callback locks the
//!   cache's table; so the table's lock is never held while allocating.
//! * The callback owns the table, hence segments of its own pool: the pool drops it with its last
//!   handle, so nothing leaks.
//!
//! A zipfian read workload from several threads prints the hit rate, checks every page it reads,
//! and asserts that the pool never mapped more than the budget. Then the cache shrinks in steps
//! (as a server hands memory to something else), and the pool's resident memory follows its size
//! with no call: free pages go back after the pool's purge decay (set short here, [`DECAY`]),
//! even though every region keeps some cached pages.
//!
//! ```sh
//! cargo run --release --example page_cache
//! cargo run --release --example page_cache -- --direct
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segpool::fs::{Advice, DirectFile, MapConfig, MapMode, MappedFile, MmapFs};
use segpool::{Segment, SegmentPool};

const PAGE: usize = 4096;
/// How long a page the cache let go keeps its memory (the pool's purge decay).
pub const DECAY: Duration = Duration::from_millis(100);

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

pub struct Config {
    /// Pages in the file.
    pub pages: u64,
    /// The cache's memory budget in bytes.
    pub budget: usize,
    /// Page reads in the workload (split over the threads).
    pub reads: u64,
    pub threads: usize,
    /// The zipf exponent: 0 is uniform; around 1 is typical of database page accesses.
    pub skew: f64,
    /// Read misses with direct I/O instead of through a mapping.
    pub direct: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pages: 16_384, // a 64 MiB file
            budget: 4 << 20,
            reads: 400_000,
            threads: 2,
            skew: 1.0,
            direct: false,
        }
    }
}

pub struct Report {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub peak_mapped: usize,
    pub peak_resident: usize,
    /// Pages of the file the kernel holds in its page cache after the run (none in direct mode:
    /// the cache's budget is then all the memory the file costs).
    pub kernel_cached_pages: usize,
    /// As the cache shrank: (pages cached, bytes of the pool resident once the decay passed).
    pub shrink: Vec<(usize, usize)>,
}

struct Frame {
    page: u64,
    seg: Segment,
    referenced: bool,
}

/// The cache's table: page number -> frame slot, the frames, and the clock hand.
#[derive(Default)]
struct Table {
    slots: HashMap<u64, usize>,
    frames: Vec<Option<Frame>>,
    free: Vec<usize>,
    hand: usize,
    resident: usize,
    peak_resident: usize,
}

impl Table {
    /// The clock: skip (and clear) referenced frames, evict the first unreferenced one; repeat
    /// until `n` pages are gone or the table is empty.
    fn evict(&mut self, n: usize) -> usize {
        let mut evicted = 0;
        let mut steps = 0;
        while evicted < n && self.resident > 0 && steps < 3 * self.frames.len() {
            steps += 1;
            self.hand = (self.hand + 1) % self.frames.len();
            let Some(f) = &mut self.frames[self.hand] else {
                continue;
            };
            if f.referenced {
                f.referenced = false;
                continue;
            }
            let f = self.frames[self.hand].take().expect("checked above");
            self.slots.remove(&f.page);
            self.free.push(self.hand);
            self.resident -= 1;
            evicted += 1;
            drop(f.seg); // back to the pool: this is what makes room under the budget
        }
        evicted
    }

    fn insert(&mut self, page: u64, seg: Segment) {
        let frame = Frame {
            page,
            seg,
            referenced: true,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.frames[i] = Some(frame);
                i
            }
            None => {
                self.frames.push(Some(frame));
                self.frames.len() - 1
            }
        };
        self.slots.insert(page, slot);
        self.resident += 1;
        self.peak_resident = self.peak_resident.max(self.resident);
    }
}

/// Where misses read from.
pub enum Source {
    /// Through the file's mapping (the kernel's page cache keeps its own copy of every page).
    Mapped(MappedFile),
    /// With `O_DIRECT`, from the device into the segment.
    Direct(DirectFile),
}

impl Source {
    fn read_page(&self, seg: &mut Segment, page: u64) -> Result<()> {
        let offset = page * PAGE as u64;
        match self {
            Source::Mapped(f) => f.read_exact_at(seg, offset)?,
            Source::Direct(f) => {
                let n = f.read_at(seg, offset)?;
                if n != PAGE {
                    return Err(format!("page {page}: the file ended after {n} bytes").into());
                }
            }
        }
        Ok(())
    }
}

pub struct PageCache {
    file: Source,
    pool: SegmentPool,
    table: Arc<Mutex<Table>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl PageCache {
    pub fn new(file: Source, budget: usize) -> Result<PageCache> {
        let table = Arc::new(Mutex::new(Table::default()));
        let evictions = Arc::new(AtomicU64::new(0));
        let (t, e) = (Arc::clone(&table), Arc::clone(&evictions));
        let pool = SegmentPool::builder()
            .size_classes(&[PAGE])
            .budget(budget)
            .purge_decay(DECAY)
            .on_pressure(move |needed| {
                // Called by `allocate` with no pool lock held, and never while we hold `table`;
                // `needed` is one page (one page of the class is enough). The pool calls again
                // while that is not enough.
                let evicted = t.lock().unwrap().evict(needed.div_ceil(PAGE));
                e.fetch_add(evicted as u64, Ordering::Relaxed);
            })
            .build()?;
        Ok(PageCache {
            file,
            pool,
            table,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
        })
    }

    /// Evicts pages until at most `pages` are cached; returns how many are.
    pub fn shrink_to(&self, pages: usize) -> usize {
        let mut t = self.table.lock().unwrap();
        while t.resident > pages {
            let n = t.resident - pages;
            t.evict(n);
        }
        t.resident
    }

    /// Bytes of the pool resident in memory now.
    pub fn resident_bytes(&self) -> usize {
        self.pool.stats().resident_bytes
    }

    /// Runs `f` on page `page`'s bytes, reading the page from the file on a miss.
    pub fn with_page<R>(&self, page: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        {
            let mut t = self.table.lock().unwrap();
            if let Some(&slot) = t.slots.get(&page) {
                let frame = t.frames[slot].as_mut().expect("mapped slots hold a frame");
                frame.referenced = true;
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(f(&frame.seg));
            }
        }
        // Miss: allocate without the table's lock (the pool may call on_pressure, which takes
        // it), read the page, then publish it unless another thread was faster.
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut seg = self.pool.allocate(PAGE)?;
        self.file.read_page(&mut seg, page)?;
        let mut t = self.table.lock().unwrap();
        if let Some(&slot) = t.slots.get(&page) {
            let frame = t.frames[slot].as_mut().expect("mapped slots hold a frame");
            return Ok(f(&frame.seg)); // ours is dropped, back to the pool
        }
        let r = f(&seg);
        t.insert(page, seg);
        Ok(r)
    }
}

/// Page `p`: its number, then bytes derived from it.
fn page_bytes(p: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&p.to_le_bytes());
    for (k, b) in out[8..].iter_mut().enumerate() {
        *b = (p as usize ^ k.wrapping_mul(31)) as u8;
    }
}

fn page_ok(p: u64, bytes: &[u8]) -> bool {
    bytes.len() == PAGE
        && bytes[..8] == p.to_le_bytes()
        && bytes[8..]
            .iter()
            .enumerate()
            .step_by(97)
            .all(|(k, &b)| b == (p as usize ^ k.wrapping_mul(31)) as u8)
}

/// Zipf over `0..n`: page `k` has weight 1 / (k + 1)^s. Inverse transform over the CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut u64) -> u64 {
        // xorshift64*, then a uniform in [0, 1).
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        let u = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// Writes the file back and drops its pages from the kernel's page cache.
fn drop_from_page_cache(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path)?;
    f.sync_all()?;
    // SAFETY: an advice call on a descriptor we own; it changes no memory of ours.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(format!("posix_fadvise: {}", std::io::Error::from_raw_os_error(r)).into());
    }
    Ok(())
}

/// How many of the file's pages are in the kernel's page cache (`mincore` over a mapping that
/// is never touched).
fn kernel_cached_pages(path: &Path, pages: u64) -> Result<usize> {
    let f = std::fs::File::open(path)?;
    let len = pages as usize * PAGE;
    // SAFETY: the mapping is only given to `mincore`, never read.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    let mut vec = vec![0u8; pages as usize];
    // SAFETY: `map` is a live mapping of `len` bytes; `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut _, len, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("mincore: {}", std::io::Error::last_os_error()).into());
    }
    Ok(vec.iter().filter(|&&v| v & 1 != 0).count())
}

/// Builds the file in `dir`, runs the workload, and checks every page read.
pub fn run(dir: &Path, cfg: &Config) -> Result<Report> {
    let fs = MmapFs::new(dir, MapConfig::default().mode(MapMode::ReadWrite))?;
    let f = fs.create("table.db")?;
    let mut chunk = vec![0u8; 16 * PAGE];
    for first in (0..cfg.pages).step_by(16) {
        let n = (cfg.pages - first).min(16) as usize;
        for (i, p) in chunk.chunks_exact_mut(PAGE).take(n).enumerate() {
            page_bytes(first + i as u64, p);
        }
        f.write_all_at(&chunk[..n * PAGE], first * PAGE as u64)?;
    }
    f.close()?;
    // Start cold, as after a restart: the file on disk, none of it in the kernel's page cache.
    let path = dir.join("table.db");
    drop_from_page_cache(&path)?;

    let fs = MmapFs::new(dir, MapConfig::default())?;
    let file = if cfg.direct {
        Source::Direct(fs.open_direct("table.db")?)
    } else {
        let file = fs.open("table.db")?;
        file.advise(0, file.len(), Advice::Random)?;
        Source::Mapped(file)
    };
    let cache = PageCache::new(file, cfg.budget)?;
    let zipf = Zipf::new(cfg.pages, cfg.skew);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..cfg.threads as u64)
            .map(|t| {
                let (cache, zipf) = (&cache, &zipf);
                s.spawn(move || -> Result<()> {
                    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                    for _ in 0..cfg.reads / cfg.threads as u64 {
                        let p = zipf.sample(&mut rng);
                        if !cache.with_page(p, |b| page_ok(p, b))? {
                            return Err(format!("page {p} has the wrong bytes").into());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a reader panicked")??;
        }
        Ok(())
    })?;
    let stats = cache.pool.stats();
    // Shrink in quarters; after each step, wait (up to the decay and a second) for the pool's
    // resident memory to come down to the cache's size, plus this thread's cache of free pages.
    let full = cache.table.lock().unwrap().resident;
    let slack = cfg.budget / 16 + cfg.budget / 10;
    let mut shrink = vec![(full, cache.resident_bytes())];
    for quarters in (0..4).rev() {
        let pages = cache.shrink_to(full * quarters / 4);
        let deadline = std::time::Instant::now() + DECAY + Duration::from_secs(1);
        let mut resident = cache.resident_bytes();
        while resident > pages * PAGE + slack && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            resident = cache.resident_bytes();
        }
        shrink.push((pages, resident));
    }
    let report = Report {
        hits: cache.hits.load(Ordering::Relaxed),
        misses: cache.misses.load(Ordering::Relaxed),
        evictions: cache.evictions.load(Ordering::Relaxed),
        peak_mapped: stats.peak_mapped_bytes,
        peak_resident: cache.table.lock().unwrap().peak_resident,
        kernel_cached_pages: kernel_cached_pages(&path, cfg.pages)?,
        shrink,
    };
    assert!(
        report.peak_mapped <= cfg.budget,
        "the cache mapped {} bytes, over its budget of {}",
        report.peak_mapped,
        cfg.budget
    );
    assert!(report.peak_resident * PAGE <= cfg.budget);
    Ok(report)
}

fn main() -> Result<()> {
    let mut cfg = Config::default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--direct" => cfg.direct = true,
            other => return Err(format!("unknown argument {other:?} (known: --direct)").into()),
        }
    }
    // In the current folder: /tmp may be tmpfs, which has no direct I/O.
    let dir = tempfile::tempdir_in(".")?;
    let r = run(dir.path(), &cfg)?;
    let reads = r.hits + r.misses;
    println!(
        "{} mode: {} zipfian reads (s = {}) of a {} MiB file through a {} MiB cache: hit rate {:.1}% \
         ({} hits, {} misses, {} evictions); at most {} pages resident; peak memory {} KiB \
         mapped of a {} KiB budget; {} KiB of the file left in the kernel's page cache",
        if cfg.direct { "direct" } else { "mmap" },
        reads,
        cfg.skew,
        (cfg.pages as usize * PAGE) >> 20,
        cfg.budget >> 20,
        100.0 * r.hits as f64 / reads.max(1) as f64,
        r.hits,
        r.misses,
        r.evictions,
        r.peak_resident,
        r.peak_mapped >> 10,
        cfg.budget >> 10,
        (r.kernel_cached_pages * PAGE) >> 10
    );
    println!(
        "the cache shrinks; the pool's resident memory follows (purge decay {} ms, no call):",
        DECAY.as_millis()
    );
    for (pages, resident) in &r.shrink {
        println!(
            "  {:>5} pages cached ({:>5} KiB)   pool resident {:>5} KiB",
            pages,
            (pages * PAGE) >> 10,
            resident >> 10
        );
    }
    Ok(())
}
