//! A fixed-budget page cache over a file, as a database engine would have one.
//!
//! * Pages are 4 KiB segments from a pool whose budget is the cache's size: the cache can never
//!   take more memory than that, whatever the workload.
//! * A miss allocates a segment and reads the page from the file through `segpool::fs`.
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
//! and asserts that the pool never mapped more than the budget.
//!
//! ```sh
//! cargo run --release --example page_cache
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use segpool::fs::{Advice, MapConfig, MapMode, MappedFile, MmapFs};
use segpool::{Segment, SegmentPool};

const PAGE: usize = 4096;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pages: 16_384, // a 64 MiB file
            budget: 4 << 20,
            reads: 400_000,
            threads: 2,
            skew: 1.0,
        }
    }
}

pub struct Report {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub peak_mapped: usize,
    pub peak_resident: usize,
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

pub struct PageCache {
    file: MappedFile,
    pool: SegmentPool,
    table: Arc<Mutex<Table>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl PageCache {
    pub fn new(file: MappedFile, budget: usize) -> Result<PageCache> {
        let table = Arc::new(Mutex::new(Table::default()));
        let evictions = Arc::new(AtomicU64::new(0));
        let (t, e) = (Arc::clone(&table), Arc::clone(&evictions));
        let pool = SegmentPool::builder()
            .size_classes(&[PAGE])
            .budget(budget)
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
        self.file.read_exact_at(&mut seg, page * PAGE as u64)?;
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

/// Builds the file in `dir`, runs the workload, and checks every page read.
pub fn run(dir: &Path, cfg: &Config) -> Result<Report> {
    let fs = MmapFs::new(
        dir,
        MapConfig {
            mode: MapMode::ReadWrite,
            ..MapConfig::default()
        },
    )?;
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

    let file = MmapFs::new(dir, MapConfig::default())?.open("table.db")?;
    file.advise(0, file.len(), Advice::Random)?;
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
    let report = Report {
        hits: cache.hits.load(Ordering::Relaxed),
        misses: cache.misses.load(Ordering::Relaxed),
        evictions: cache.evictions.load(Ordering::Relaxed),
        peak_mapped: stats.peak_mapped_bytes,
        peak_resident: cache.table.lock().unwrap().peak_resident,
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
    let cfg = Config::default();
    let dir = tempfile::tempdir()?;
    let r = run(dir.path(), &cfg)?;
    let reads = r.hits + r.misses;
    println!(
        "{} zipfian reads (s = {}) of a {} MiB file through a {} MiB cache: hit rate {:.1}% \
         ({} hits, {} misses, {} evictions); at most {} pages resident; peak memory {} KiB \
         mapped of a {} KiB budget",
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
        cfg.budget >> 10
    );
    Ok(())
}
