//! The file I/O section of `segpool bench`: `segpool::fs::MappedFile` against `std::fs::File`
//! positioned I/O (`pread`/`pwrite`), a sequential `Read::read`, and a raw `memmap2` copy, on a
//! file in the page cache.
//!
//! Every cell is measured in the same process, in the same run: for each run, every (row,
//! contender) cell is timed once, and a cell's value is the median of its runs. The contenders of
//! a row take turns starting first from one run to the next, so the caches a cell leaves behind
//! favour none of them. Offsets come from a fixed-seed xorshift: every contender reads or writes
//! the same offsets in the same order.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs, SyncMode};
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error + Send + Sync>;

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

/// One contender's numbers in one row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileCell {
    pub contender: String,
    /// Median of `runs_ns`.
    pub median_ns: f64,
    /// ns per operation of every run, in run order.
    pub runs_ns: Vec<f64>,
}

/// One operation's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRow {
    pub op: Op,
    /// Bytes per operation.
    pub block: usize,
    pub cells: Vec<FileCell>,
}

impl FileRow {
    pub fn ns(&self, contender: &str) -> Option<f64> {
        self.cells
            .iter()
            .find(|c| c.contender == contender)
            .map(|c| c.median_ns)
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
    pub rows: Vec<FileRow>,
    /// The fault guard's cost on a warm 64-byte `read_at`: [`GUARD_CELLS`], in order.
    #[serde(default)]
    pub guard: Vec<FileCell>,
    /// The page-cache row: mmap mode against direct I/O (`None` where the file system has no
    /// direct I/O).
    #[serde(default)]
    pub page_cache: Option<crate::bench_direct::DirectReport>,
    pub targets: Vec<crate::bench::Target>,
}

/// The two cells of the guard comparison: `MappedFile::read_at` with the fault guard, and the
/// same path without it (`read_at_unguarded`, from the `bench-internals` feature).
pub const GUARD_CELLS: [&str; 2] = ["read_at", "read_at, no guard"];

/// Bytes per warm read, and the span of the file the warm reads walk (cache- and TLB-warm).
const WARM_BLOCK: usize = 64;
const WARM_SPAN: u64 = 64 * 1024;

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
        MapConfig {
            mode: MapMode::ReadWrite,
            sync: SyncMode::Never,
            ..MapConfig::default()
        },
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

    let mut rows: Vec<FileRow> = Op::ALL
        .iter()
        .map(|&op| FileRow {
            op,
            block: op.block(),
            cells: op
                .contenders()
                .iter()
                .map(|c| FileCell {
                    contender: c.name().to_string(),
                    median_ns: 0.0,
                    runs_ns: Vec::new(),
                })
                .collect(),
        })
        .collect();
    let mut guard: Vec<FileCell> = GUARD_CELLS
        .iter()
        .map(|c| FileCell {
            contender: c.to_string(),
            median_ns: 0.0,
            runs_ns: Vec::new(),
        })
        .collect();
    let mut buf = page_buf(MIB)?;
    for run in 0..runs {
        eprint!("\rfiles: run {}/{runs}", run + 1);
        for row in rows.iter_mut() {
            let who = row.op.contenders();
            for k in 0..who.len() {
                let i = (k + run as usize) % who.len();
                let ns = time(&s, row.op, who[i], run, &mut buf, per_cell)
                    .map_err(|e| format!("{} ({}): {e}", who[i].name(), row.op.label()))?;
                row.cells[i].runs_ns.push(ns);
            }
        }
        for k in 0..GUARD_CELLS.len() {
            let i = (k + run as usize) % GUARD_CELLS.len();
            let ns = time_warm_read(&s.mapped, i == 0, &mut buf[..WARM_BLOCK], per_cell)
                .map_err(|e| format!("{} (warm 64 B read_at): {e}", GUARD_CELLS[i]))?;
            guard[i].runs_ns.push(ns);
        }
    }
    eprintln!();
    for cell in rows
        .iter_mut()
        .flat_map(|r| r.cells.iter_mut())
        .chain(guard.iter_mut())
    {
        cell.median_ns = crate::bench::median(&cell.runs_ns);
    }
    let filesystem = filesystem_of(tmp.path());
    // Unmapped first: the page cache row evicts the file, and mapped pages would stay.
    drop(s);
    drop(fs);
    let page_cache = crate::bench_direct::measure(tmp.path(), name, len)?;
    tmp.close()?;
    let targets = targets(&rows, &guard);
    Ok(FileReport {
        file_len: len,
        filesystem,
        runs,
        run_ms: per_cell.as_millis() as u64,
        seconds: started.elapsed().as_secs_f64(),
        contenders: COLUMNS.iter().map(|s| s.to_string()).collect(),
        rows,
        guard,
        page_cache,
        targets,
    })
}

/// ns per warm 64-byte `read_at` (offsets walking the first 64 KiB of the file), with the
/// fault guard or without it, timed for about `per_cell`.
fn time_warm_read(
    f: &MappedFile,
    guarded: bool,
    buf: &mut [u8],
    per_cell: Duration,
) -> Result<f64, Error> {
    // Both called through an opaque function pointer: neither is inlined into this loop (the
    // compiler would inline one and not the other), so the comparison is the guard alone.
    type ReadAt = fn(&MappedFile, &mut [u8], u64) -> std::io::Result<usize>;
    let read: ReadAt = black_box(if guarded {
        MappedFile::read_at
    } else {
        MappedFile::read_at_unguarded
    });
    let mut i = 0u64;
    let mut one = |buf: &mut [u8]| -> Result<(), Error> {
        i += 1;
        // A stride of 7 blocks: every line of the span in turn, not one line over and over.
        let o = (i * 7 * WARM_BLOCK as u64) % (WARM_SPAN - WARM_BLOCK as u64);
        let n = read(f, buf, black_box(o))?;
        black_box(n);
        black_box(&mut *buf);
        Ok(())
    };
    const BATCH: u64 = 1024;
    for _ in 0..BATCH {
        one(buf)?;
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    loop {
        for _ in 0..BATCH {
            one(buf)?;
        }
        done += BATCH;
        let el = t0.elapsed();
        if el >= per_cell {
            return Ok(el.as_nanos() as f64 / done as f64);
        }
    }
}

/// ns per operation of `who` doing `op`, timed for about `per_cell`.
fn time(
    s: &Subject,
    op: Op,
    who: Contender,
    run: u32,
    buf: &mut [u8],
    per_cell: Duration,
) -> Result<f64, Error> {
    let block = op.block();
    let buf = &mut buf[..block];
    // Same seed for every contender in a run; a new one each run.
    let seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((run as u64 + 1) << 32) ^ block as u64;
    let mut offs = Offsets::new(seed, s.len, block as u64);
    let mut seq = 0u64;
    let next_seq = |seq: &mut u64| {
        let o = *seq;
        *seq = (*seq + block as u64) % s.len;
        o
    };
    if who == Contender::Read {
        (&s.reader).seek(SeekFrom::Start(0))?;
    }
    let raw = s.raw.as_ptr() as *mut u8;
    let batch = op.batch();
    // The next offset of a read: walking the file, or random.
    let mut next = || {
        if op == Op::Sequential1mRead {
            next_seq(&mut seq)
        } else {
            offs.next()
        }
    };
    // One closure, and so one loop of its own, per contender, with the closure inlined into its
    // loop: each is compiled (and its registers allocated) as a program doing only that would
    // be, whatever the compiler's inlining heuristics make of closures of different sizes.
    match (op, who) {
        (Op::Sequential1mRead, Contender::Read) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                let mut got = 0;
                while got < block {
                    match (&s.reader).read(&mut buf[got..])? {
                        0 => {
                            (&s.reader).seek(SeekFrom::Start(0))?;
                        }
                        n => got += n,
                    }
                }
                black_box(&mut *buf);
                Ok(())
            },
        ),
        (_, Contender::Read) => Err("read() only runs the sequential row".into()),
        (Op::Random4kWrite, Contender::Segpool) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.mapped.write_at(buf, offs.next())?);
                Ok(())
            },
        ),
        (Op::Random4kWrite, Contender::Pread) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.std.write_at(buf, offs.next())?);
                Ok(())
            },
        ),
        (Op::Random4kWrite, Contender::Memmap2) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                let o = offs.next();
                // SAFETY: `o + block <= len`, the mapping's length; `buf` is not in it.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), raw.add(o as usize), block) };
                black_box(raw);
                Ok(())
            },
        ),
        (_, Contender::Segpool) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.mapped.read_at(buf, next())?);
                black_box(&mut *buf);
                Ok(())
            },
        ),
        (_, Contender::Pread) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.std.read_at(buf, next())?);
                black_box(&mut *buf);
                Ok(())
            },
        ),
        (_, Contender::Memmap2) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                let o = next();
                // SAFETY: `o + block <= len`, the mapping's length; `buf` is not in it.
                unsafe {
                    std::ptr::copy_nonoverlapping(raw.add(o as usize), buf.as_mut_ptr(), block)
                };
                black_box(&mut *buf);
                Ok(())
            },
        ),
    }
}

/// ns per call of `one`: a warm-up batch, then whole batches of `batch` calls until `per_cell`
/// has passed. Not inlined: every contender's closure gets a loop of its own.
#[inline(never)]
fn timed(
    batch: u64,
    per_cell: Duration,
    mut one: impl FnMut() -> Result<(), Error>,
) -> Result<f64, Error> {
    for _ in 0..batch {
        one()?;
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    loop {
        for _ in 0..batch {
            one()?;
        }
        done += batch;
        let el = t0.elapsed();
        if el >= per_cell {
            return Ok(el.as_nanos() as f64 / done as f64);
        }
    }
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

fn targets(rows: &[FileRow], guard: &[FileCell]) -> Vec<crate::bench::Target> {
    use crate::bench::Target;
    let nan = f64::NAN;
    let row = |op: Op| rows.iter().find(|r| r.op == op);
    let ns = |op: Op, c: &str| row(op).and_then(|r| r.ns(c)).unwrap_or(nan);
    let mut out = Vec::new();
    for (op, want) in [(Op::Random64Read, 10.0), (Op::Random4kRead, 1.5)] {
        let (sp, pr) = (ns(op, "segpool"), ns(op, "pread/pwrite"));
        out.push(Target {
            target: format!("{}: at least {want}x faster than pread", op.label()),
            holds: pr / sp >= want,
            detail: format!("pread {} / segpool {} = {:.2}x", num(pr), num(sp), pr / sp),
        });
    }
    let (sp, rd) = (
        ns(Op::Sequential1mRead, "segpool"),
        ns(Op::Sequential1mRead, "read()"),
    );
    out.push(Target {
        target: "sequential 1 MiB read: at least as fast as read()".into(),
        holds: sp <= rd,
        detail: format!(
            "segpool {} ({}) vs read() {} ({})",
            num(sp),
            gbps(MIB, sp),
            num(rd),
            gbps(MIB, rd)
        ),
    });
    let (op, x) = rows
        .iter()
        .map(|r| {
            (
                r.op,
                r.ns("segpool").unwrap_or(nan) / r.ns("memmap2").unwrap_or(nan),
            )
        })
        .fold((Op::Random64Read, f64::MIN), |a, b| {
            if b.1 > a.1 || b.1.is_nan() {
                b
            } else {
                a
            }
        });
    out.push(Target {
        target: "every row: within 10% of the raw memmap2 copy".into(),
        holds: x <= 1.10,
        detail: format!("worst segpool/memmap2 {x:.2}x ({})", op.label()),
    });
    if let Some((on, off)) = guard_ns(guard) {
        out.push(Target {
            target: "warm 64 B read_at: the fault guard within 10% of the same read_at without it"
                .into(),
            holds: on <= off * 1.10,
            detail: format!(
                "guarded {} / unguarded {} = {:.2}x",
                num(on),
                num(off),
                on / off
            ),
        });
    }
    out
}

/// (guarded, unguarded) ns of the warm 64-byte `read_at`, if measured.
fn guard_ns(guard: &[FileCell]) -> Option<(f64, f64)> {
    let ns = |name: &str| {
        guard
            .iter()
            .find(|c| c.contender == name)
            .map(|c| c.median_ns)
    };
    Some((ns(GUARD_CELLS[0])?, ns(GUARD_CELLS[1])?))
}

/// The guard comparison as one sentence (empty if not measured).
fn guard_line(r: &FileReport) -> String {
    match guard_ns(&r.guard) {
        Some((on, off)) => format!(
            "warm 64 B read_at (fault guard): guarded {}, unguarded {} (guarded/unguarded {:.2}x)",
            num(on),
            num(off),
            on / off
        ),
        None => String::new(),
    }
}

fn num(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

fn gbps(block: usize, ns: f64) -> String {
    format!("{:.1} GB/s", block as f64 / ns)
}

fn cells(row: &FileRow) -> Vec<String> {
    let sp = row.ns("segpool");
    COLUMNS
        .iter()
        .map(|&c| match (row.ns(c), sp) {
            (None, _) => String::new(),
            (Some(ns), _) if c == "segpool" => num(ns),
            (Some(ns), Some(sp)) if c == "memmap2" => {
                format!("{} (segpool/memmap2 {:.2}x)", num(ns), sp / ns)
            }
            (Some(ns), Some(sp)) => format!("{} ({:.2}x)", num(ns), ns / sp),
            (Some(ns), None) => num(ns),
        })
        .collect()
}

fn throughput(row: &FileRow) -> String {
    if row.op != Op::Sequential1mRead {
        return String::new();
    }
    COLUMNS
        .iter()
        .filter_map(|&c| row.ns(c).map(|ns| format!("{c} {}", gbps(row.block, ns))))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn text_table(r: &FileReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ns per operation on a {} file in the page cache ({}), median of {} runs; \
         pread/read() (x/segpool), memmap2 (segpool/memmap2)",
        crate::bytes_text(r.file_len as usize),
        r.filesystem,
        r.runs
    );
    let widths = [22, 10, 16, 16, 30];
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(s, "{c:<w$} ");
            } else {
                let _ = write!(s, "{c:>w$} ");
            }
        }
        s.trim_end().to_string()
    };
    let mut header = vec!["operation".to_string()];
    header.extend(COLUMNS.iter().map(|s| s.to_string()));
    let _ = writeln!(out, "{}", line(&header));
    for row in &r.rows {
        let mut cols = vec![row.op.label().to_string()];
        cols.extend(cells(row));
        let _ = writeln!(out, "{}", line(&cols));
    }
    for row in &r.rows {
        let t = throughput(row);
        if !t.is_empty() {
            let _ = writeln!(out, "{}: {t}", row.op.label());
        }
    }
    let g = guard_line(r);
    if !g.is_empty() {
        let _ = writeln!(out, "{g}");
    }
    if let Some(p) = &r.page_cache {
        let _ = write!(out, "{}", crate::bench_direct::table(p));
    }
    out
}

pub fn markdown_table(r: &FileReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| operation | {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(COLUMNS.len()));
    for row in &r.rows {
        let _ = writeln!(out, "| {} | {} |", row.op.label(), cells(row).join(" | "));
    }
    for row in &r.rows {
        let t = throughput(row);
        if !t.is_empty() {
            let _ = writeln!(out, "\n{}: {t}.", row.op.label());
        }
    }
    let g = guard_line(r);
    if !g.is_empty() {
        let _ = writeln!(out, "\n{g}.");
    }
    if let Some(p) = &r.page_cache {
        let _ = write!(out, "\n{}", crate::bench_direct::table(p));
    }
    out
}

/// The file section of docs/benchmarks.md.
pub fn docs_section(r: &FileReport, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## File I/O\n");
    let _ = writeln!(
        out,
        "ns per operation (lower is better) on a {} file in the page cache ({}), median of {} \
         runs of {} ms per cell, measured by the same command in the same run ({:.1} s for this \
         section). In parentheses: pread/pwrite's and read()'s time divided by segpool's (above \
         1: segpool is faster), and segpool's time divided by memmap2's (above 1: segpool is \
         slower than the raw copy). A shared 2-core VM: compare ratios within one run.\n",
        crate::bytes_text(r.file_len as usize),
        r.filesystem,
        r.runs,
        r.run_ms,
        r.seconds
    );
    let _ = writeln!(out, "```sh\n{command}\n```\n");
    let _ = writeln!(out, "### Columns\n");
    let _ = writeln!(out, "- **segpool**: `MappedFile::read_at`/`write_at` of a file opened by `MmapFs` with `MapMode::ReadWrite`, `SyncMode::Never`, no window (the whole file mapped), every access under the SIGBUS fault guard.");
    let _ = writeln!(out, "- **pread/pwrite**: `std::fs::File` with `std::os::unix::fs::FileExt::read_at`/`write_at`.");
    let _ = writeln!(out, "- **read()**: `std::io::Read::read` on a second `std::fs::File`, 1 MiB at a time, sequentially (sequential row only).");
    let _ = writeln!(out, "- **memmap2**: `ptr::copy_nonoverlapping` from/to a `memmap2::MmapMut` of the same file: the copy alone, no checks, no guard.\n");
    let _ = writeln!(out, "- **warm 64 B read_at** (below the table): `MappedFile::read_at` of 64 bytes at offsets walking the first 64 KiB of the file (cache- and TLB-warm), with the fault guard, against the same path without it (`read_at_unguarded`, a hidden entry point of the `bench-internals` feature): what the guard costs.\n");
    let _ = writeln!(out, "- **page cache** (below the table): a cache of 4 KiB segments from a pool with a budget smaller than the file, filled on misses (allocate, read the page; the oldest page is dropped at the budget) through `MappedFile::read_exact_at` (mmap mode, `Advice::Random`) or `DirectFile::read_at` (`O_DIRECT`, direct mode), from a cold start (the file written back and dropped from the page cache before each mode). Memory: the pool's peak mapped bytes plus the file's pages left in the kernel's page cache (`mincore`).\n");
    let _ = writeln!(out, "The file is written, then read once through each of the three (page cache and both mappings' page tables warm). Random offsets come from a fixed-seed xorshift64*, aligned to the block size; every contender gets the same offsets in the same order within a run; the sequential row reads 1 MiB after 1 MiB and wraps at the end. Every buffer is page-aligned. The contenders of a row take turns going first from one run to the next.\n");
    let _ = writeln!(out, "### Table\n");
    out.push_str(&markdown_table(r));
    let _ = writeln!(out, "\n### Claims, and what this run measured\n");
    for t in &r.targets {
        let _ = writeln!(out, "- {}", crate::bench::claim_text(t));
    }
    out
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
            assert_eq!(row.cells.len(), row.op.contenders().len());
            assert!(row.cells.iter().all(|c| c.median_ns > 0.0));
        }
        assert_eq!(r.targets.len(), 5);
        assert_eq!(r.guard.len(), GUARD_CELLS.len());
        assert!(r.guard.iter().all(|c| c.median_ns > 0.0));
        let docs = docs_section(&r, "x");
        assert!(docs.contains("| random 64 B read |"));
        assert!(docs.contains("warm 64 B read_at (fault guard): guarded"));
        // The page cache row, where the temp folder's file system has direct I/O.
        if let Some(p) = &r.page_cache {
            assert_eq!(p.modes.len(), 2);
            assert!(docs.contains("| direct |"));
        }
        // The temp folder is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
