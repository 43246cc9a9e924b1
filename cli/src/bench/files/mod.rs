//! The file I/O section of `segpool bench`: `segpool::fs::MappedFile` against `std::fs::File`
//! positioned I/O (`pread`/`pwrite`), a sequential `Read::read`, and a raw `memmap2` copy, on a
//! file in the page cache; then the page-cache row (`page_cache`), mmap mode against direct I/O.
//!
//! Every cell is measured in the same process, in the same run: for each run, every (row,
//! contender) cell is timed once, and a cell's value is the median of its runs. The contenders of
//! a row take turns starting first from one run to the next, so the caches a cell leaves behind
//! favour none of them. Offsets come from a fixed-seed xorshift: every contender reads or writes
//! the same offsets in the same order.
//!
//! `timing` times one cell; `report` draws the table and judges the claims.

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs, SyncMode};
use serde::{Deserialize, Serialize};

use super::claim::Claim;
use super::table::Cells;
use crate::Error;

mod page_cache;
mod report;
mod timing;

const MIB: usize = 1 << 20;

/// One measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// 64 bytes at a random 64-byte-aligned offset.
    Random64Read,
    /// 4 KiB at a random page-aligned offset.
    Random4kRead,
    /// 1 MiB after 1 MiB, from the start again at the end.
    Sequential1mRead,
    /// 4 KiB at a random page-aligned offset.
    Random4kWrite,
}

impl Op {
    pub const ALL: [Op; 4] = [
        Op::Random64Read,
        Op::Random4kRead,
        Op::Sequential1mRead,
        Op::Random4kWrite,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Op::Random64Read => "random 64 B read",
            Op::Random4kRead => "random 4 KiB read",
            Op::Sequential1mRead => "sequential 1 MiB read",
            Op::Random4kWrite => "random 4 KiB write",
        }
    }

    fn block(self) -> usize {
        match self {
            Op::Random64Read => 64,
            Op::Random4kRead | Op::Random4kWrite => 4096,
            Op::Sequential1mRead => MIB,
        }
    }

    /// Operations between two reads of the clock.
    fn batch(self) -> u64 {
        match self {
            Op::Sequential1mRead => 4,
            _ => 256,
        }
    }

    fn contenders(self) -> &'static [Contender] {
        match self {
            Op::Sequential1mRead => &[
                Contender::Segpool,
                Contender::Pread,
                Contender::Read,
                Contender::Memmap2,
            ],
            _ => &[Contender::Segpool, Contender::Pread, Contender::Memmap2],
        }
    }
}

/// Who performs the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    /// `MappedFile::read_at` / `write_at`.
    Segpool,
    /// `FileExt::read_at` / `write_at` on a `std::fs::File`.
    Pread,
    /// `Read::read` on a `std::fs::File` (sequential row only).
    Read,
    /// `ptr::copy_nonoverlapping` from / to a `memmap2::MmapMut` of the same file.
    Memmap2,
}

/// Column order of the file table.
pub const COLUMNS: [&str; 4] = ["segpool", "pread/pwrite", "read()", "memmap2"];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Segpool => COLUMNS[0],
            Contender::Pread => COLUMNS[1],
            Contender::Read => COLUMNS[2],
            Contender::Memmap2 => COLUMNS[3],
        }
    }
}

/// One operation's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub op: Op,
    /// Bytes per operation.
    pub block: usize,
    /// One cell per contender of the operation, one run each per run.
    pub cells: Cells,
}

impl Row {
    pub fn ns(&self, contender: &str) -> Option<f64> {
        self.cells.ns(contender)
    }
}

/// Everything the file section produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileReport {
    /// Length of the file, bytes.
    pub file_len: u64,
    /// The filesystem the file was on (from /proc/self/mounts).
    pub filesystem: String,
    pub runs: u32,
    pub run_ms: u64,
    pub seconds: f64,
    /// Contender names in column order.
    pub contenders: Vec<String>,
    pub rows: Vec<Row>,
    /// The page-cache row: mmap mode against direct I/O (`None` where the file system has no
    /// direct I/O).
    #[serde(default)]
    pub page_cache: Option<page_cache::PageCacheReport>,
    #[serde(alias = "targets")]
    pub claims: Vec<Claim>,
}

/// A page-aligned buffer (an anonymous mapping): a copy whose destination is a few bytes off
/// the source modulo 4096 can hit a slow `rep movsb` path, which would measure the buffer's
/// placement, not the layer.
fn page_buf(len: usize) -> Result<memmap2::MmapMut, Error> {
    let mut m = memmap2::MmapMut::map_anon(len)?;
    m.fill(0x5a);
    Ok(m)
}

/// The benchmark's deterministic offsets: xorshift64* from a fixed seed, reduced to
/// `0..len / align` by a multiply-shift (no division on the timed path), times `align`.
#[derive(Clone)]
struct Offsets {
    x: u64,
    slots: u64,
    align: u64,
}

impl Offsets {
    fn new(seed: u64, len: u64, align: u64) -> Self {
        Self {
            x: seed | 1,
            slots: len / align,
            align,
        }
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.x ^= self.x >> 12;
        self.x ^= self.x << 25;
        self.x ^= self.x >> 27;
        let r = self.x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (((r as u128) * (self.slots as u128)) >> 64) as u64 * self.align
    }
}

/// The open file, three ways.
struct Subject {
    mapped: MappedFile,
    std: std::fs::File,
    /// A second handle for sequential `read()`, with its own cursor.
    reader: std::fs::File,
    raw: memmap2::MmapMut,
    len: u64,
}

/// Creates `len` bytes of patterned data in a temp folder under `dir`, warms the page cache and
/// both mappings, runs every cell `runs` times, and removes the file.
pub fn measure(dir: &Path, len: u64, runs: u32, per_cell: Duration) -> Result<FileReport, Error> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix(".segpool-bench-")
        .tempdir_in(dir)
        .map_err(|e| format!("cannot make a temp folder in {}: {e}", dir.display()))?;
    let name = "bench.bin";
    let path = tmp.path().join(name);
    eprint!("files: writing {} ...", crate::bytes_text(len as usize));
    {
        let f = std::fs::File::create(&path)?;
        let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        for i in 0..len / MIB as u64 {
            f.write_all_at(&chunk, i * MIB as u64)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        // On disk and clean: no writeback of the creation runs during the measurements.
        f.sync_all()?;
    }
    let std = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let reader = std::fs::File::open(&path)?;
    let fs = MmapFs::new(
        tmp.path(),
        MapConfig::default()
            .mode(MapMode::ReadWrite)
            .sync(SyncMode::Never),
    )?;
    let mapped = fs.open(name)?;
    // SAFETY: nothing else changes or truncates the file (a private temp folder) while mapped.
    let raw = unsafe { memmap2::MmapMut::map_mut(&std)? };
    let s = Subject {
        mapped,
        std,
        reader,
        raw,
        len,
    };
    // Warm: the page cache (read once) and both mappings' page tables.
    let mut sink = page_buf(MIB)?;
    for i in 0..len as usize / MIB {
        let o = i * MIB;
        s.std.read_exact_at(&mut sink, o as u64)?;
        s.mapped.read_exact_at(&mut sink, o as u64)?;
        sink.copy_from_slice(&s.raw[o..o + MIB]);
    }
    black_box(&sink[..]);
    eprintln!(" done");

    let mut rows: Vec<Row> = Op::ALL
        .iter()
        .map(|&op| Row {
            op,
            block: op.block(),
            cells: Cells::default(),
        })
        .collect();
    let mut buf = page_buf(MIB)?;
    for run in 0..runs {
        eprint!("\rfiles: run {}/{runs}", run + 1);
        for row in rows.iter_mut() {
            let who = row.op.contenders();
            for k in 0..who.len() {
                let c = who[(k + run as usize) % who.len()];
                let ns = timing::time(&s, row.op, c, run, &mut buf, per_cell)
                    .map_err(|e| format!("{} ({}): {e}", c.name(), row.op.label()))?;
                row.cells.record(c.name(), ns);
            }
        }
    }
    eprintln!();
    for row in &mut rows {
        row.cells.settle();
    }
    let filesystem = filesystem_of(tmp.path());
    // Unmapped first: the page cache row evicts the file, and mapped pages would stay.
    drop(s);
    drop(fs);
    let page_cache = page_cache::measure(tmp.path(), name, len)?;
    tmp.close()?;
    let claims = report::claims(&rows);
    Ok(FileReport {
        file_len: len,
        filesystem,
        runs,
        run_ms: per_cell.as_millis() as u64,
        seconds: started.elapsed().as_secs_f64(),
        contenders: COLUMNS.iter().map(|s| s.to_string()).collect(),
        rows,
        page_cache,
        claims,
    })
}

/// The filesystem type of the longest mount point containing `path`.
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, ty) = (f.next()?, f.next()?, f.next()?);
            Some((PathBuf::from(at.replace("\\040", " ")), ty.to_string()))
        })
        .filter(|(at, _)| path.starts_with(at))
        .max_by_key(|(at, _)| at.as_os_str().len())
        .map_or_else(|| "unknown".into(), |(_, ty)| ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_aligned_in_range_and_repeatable() {
        let len = 256u64 << 20;
        for align in [64u64, 4096] {
            let a: Vec<u64> = {
                let mut o = Offsets::new(7, len, align);
                (0..10_000).map(|_| o.next()).collect()
            };
            let mut o = Offsets::new(7, len, align);
            let b: Vec<u64> = (0..10_000).map(|_| o.next()).collect();
            assert_eq!(a, b);
            assert!(a.iter().all(|&x| x % align == 0 && x + align <= len));
            // Spread over the file, not stuck in one corner.
            assert!(a.iter().any(|&x| x < len / 4) && a.iter().any(|&x| x > len / 4 * 3));
        }
    }

    #[test]
    fn a_small_run_measures_every_cell() {
        let dir = tempfile::tempdir().unwrap();
        let r = measure(dir.path(), 4 << 20, 1, Duration::from_millis(1)).unwrap();
        assert_eq!(r.rows.len(), 4);
        for row in &r.rows {
            assert_eq!(row.cells.0.len(), row.op.contenders().len());
            assert!(row.cells.0.iter().all(|c| c.median_ns > 0.0));
        }
        assert_eq!(r.claims.len(), 4);
        let docs = r.docs_section("x");
        assert!(docs.contains("| random 64 B read |"));
        assert!(docs.contains("benches/fault_guard.rs"));
        // The page cache row, where the temp folder's file system has direct I/O.
        if let Some(p) = &r.page_cache {
            assert_eq!(p.modes.len(), 2);
            assert!(docs.contains("| direct |"));
        }
        // The temp folder is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
