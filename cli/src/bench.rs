//! `segpool bench`: ns per allocate+release pair for segpool and its peers, side by side; then
//! the file I/O section (`bench_files`) and the memory section (`bench_memory`), unless `--only`
//! picks one.
//!
//! Every cell of the table is measured in the same process, in the same run: for each run, every
//! (pattern, size, allocator) cell is timed once, the contenders of a row taking turns going
//! first, so machine noise spreads over all allocators alike; a cell's value is the median of its
//! runs. In the main table memory is never touched: the numbers are the cost of the bookkeeping,
//! not of page faults. The large section (2 MiB to 256 MiB, against lgalloc, mimalloc and
//! jemalloc) also has touched rows, one byte written per 4 KiB page, where an allocator that
//! hands out fresh pages pays their faults.
//!
//! The producer/consumer rows are the exception: there the target is segpool's cost over the
//! bare channel, and the channel alone swings by about a third from one cell to the next (thread
//! scheduling on two cores, futex parking where the channel is shallow), so the difference of two
//! medians measured apart is mostly noise. Instead segpool and the channel are timed back to back
//! in `PC_PAIRS` pairs of half-length cells per run, and the target is judged on the median of
//! the per-pair differences: whatever slows the machine for a moment slows both halves of a pair.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bench_files::{self, FileReport};
use crate::peers::{self, Allocator};
use crate::plot;

/// Pairs between two reads of the clock.
const BATCH: u64 = 256;
/// Capacity of the channel in the producer/consumer pattern: deep enough that the two threads
/// rarely park (a shallow channel measures futex wake-ups, not allocators), but at most
/// `IN_FLIGHT_BYTES` of buffers in flight.
/// Above 1 MiB (the large section) the channel holds at most 256 MiB of buffers, and at least 4.
fn channel_bound(size: usize) -> usize {
    if size > 1 << 20 {
        (LARGE_IN_FLIGHT_BYTES / size).clamp(4, 64)
    } else {
        (IN_FLIGHT_BYTES / size).clamp(64, 1024)
    }
}
const IN_FLIGHT_BYTES: usize = 64 << 20;
const LARGE_IN_FLIGHT_BYTES: usize = 256 << 20;
const CHANNEL_BOUND_TEXT: &str =
    "min(1024, max(64, 64 MiB / size)); above 1 MiB min(64, max(4, 256 MiB / size))";
/// The small classes the main table measures; the benchmark also asks for one size above the
/// largest class of the default pool (1 GiB).
const CLASSES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
const ABOVE_LARGEST: usize = 2 << 30;
/// The large section: sizes of large classes, in 1 and 2 threads, untouched and touched.
const LARGE_SIZES: [usize; 4] = [2 << 20, 8 << 20, 64 << 20, 256 << 20];
/// The large sizes of the producer/consumer rows (untouched).
const LARGE_PC_SIZES: [usize; 3] = [2 << 20, 8 << 20, 64 << 20];
/// The growth rows: ns per allocation while one class grows (every segment kept live), timed
/// over `GROWTH_WINDOW` regions' worth of allocations starting at each of these region counts.
const GROWTH_AT: [usize; 4] = [1, 1_000, 10_000, 50_000];
/// The growth rows' class: 64 KiB slices in the default 2 MiB regions (huge pages off), so 50,000
/// regions are 100 GiB of untouched address space and 1.6 million live segments.
const GROWTH_SLICE: usize = 64 << 10;
const GROWTH_SLICES: usize = (2 << 20) / GROWTH_SLICE;
const GROWTH_WINDOW: usize = 100;
/// The growth rows are measured this many times, each time in a new pool, and each row keeps
/// its fastest window: a window is a fraction of a millisecond, which one preemption on a busy
/// machine can multiply.
const GROWTH_RUNS: usize = 3;
/// Passes of the churn rows over the same slices: one untimed, then the timed ones.
const GROWTH_CHURN_PASSES: usize = 5;
/// What the growth target allows: the cost at the largest region count over the cost at one
/// region.
const GROWTH_TOLERANCE: f64 = 0.20;

/// How much slower than the fastest peer a large row may be and still meet its target: the
/// touched rows are the cost of the page writes for every allocator that reuses its memory, and
/// two such cells differ by a few percent from run to run.
const LARGE_TOLERANCE: f64 = 0.05;
/// Back-to-back (segpool, channel) pairs per run in each producer/consumer row; each of the two
/// cells of a pair is timed for half of `--run-ms`, so a row's run takes `PC_PAIRS` run lengths
/// for the two of them.
const PC_PAIRS: u32 = 4;
/// What the producer/consumer target allows segpool over the channel, in ns per pair.
const PC_OVER_CHANNEL_NS: f64 = 30.0;

/// Options of `segpool bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs per cell; the table shows the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,
    /// Milliseconds each cell is timed for, per run.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    run_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the table as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Also plot ns per pair by size class (log scale) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Regenerate docs/benchmarks.md, docs/benchmarks.json, docs/bench-alloc.svg and the table in
    /// README.md (between its bench markers).
    #[arg(long)]
    update_docs: bool,
    /// The docs folder `--update-docs` writes to (default: the repository's docs/).
    #[arg(long, value_name = "DIR")]
    docs_dir: Option<PathBuf>,
    /// Run only one section: `alloc` (allocate+release pairs, with the growth rows), `growth`
    /// (the growth rows alone), `files` (file I/O against pread/pwrite, read() and memmap2) or
    /// `memory`. All run by default; `--update-docs` needs all.
    #[arg(long, value_name = "SECTION", conflicts_with = "update_docs")]
    only: Option<Section>,
    /// Milliseconds each file I/O cell is timed for, per run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    files_run_ms: u64,
    /// Length of the file the file I/O section reads and writes (whole MiB, at least 2 MiB; a
    /// number with K, M, G or T: 256M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::parse_size)]
    file_size: usize,
    /// Folder in which the file I/O section makes its temp folder (default: the current one).
    #[arg(long, value_name = "DIR", default_value = ".")]
    files_dir: PathBuf,
}

impl Args {
    /// Whether this run measures the C peers (the growth rows alone measure segpool only).
    pub fn needs_peers(&self) -> bool {
        self.only != Some(Section::Growth)
    }
}

/// A section of `segpool bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// ns per allocate+release pair against glibc, mimalloc, jemalloc and mmap; large sizes
    /// against lgalloc, mimalloc and jemalloc.
    Alloc,
    /// ns per file operation against pread/pwrite, read() and memmap2.
    Files,
    /// Resident memory over time after 90% of 100 MiB of 4 KiB buffers is released, against
    /// glibc, mimalloc and jemalloc.
    Memory,
    /// ns per allocation while one class grows (part of `alloc`, alone).
    Growth,
}

/// How threads use the allocator in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// One thread allocates and releases at once.
    OneThread,
    /// Two threads, each allocating and releasing its own (ns per pair per thread).
    TwoThreads,
    /// One thread allocates, another releases what it receives through a bounded channel.
    ProducerConsumer,
}

impl Pattern {
    pub const ALL: [Pattern; 3] = [
        Pattern::OneThread,
        Pattern::TwoThreads,
        Pattern::ProducerConsumer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Pattern::OneThread => "1 thread",
            Pattern::TwoThreads => "2 threads, each own",
            Pattern::ProducerConsumer => "producer/consumer",
        }
    }

    fn sizes(self) -> Vec<usize> {
        let mut s = CLASSES.to_vec();
        if self == Pattern::OneThread {
            s.push(ABOVE_LARGEST);
        }
        s
    }
}

/// One allocator's numbers in one row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub allocator: String,
    /// Median of `runs_ns`.
    pub median_ns: f64,
    /// ns per pair of every cell timed, in order: one per run, except segpool and the channel in
    /// a producer/consumer row, which have `PC_PAIRS` half-length cells per run.
    pub runs_ns: Vec<f64>,
}

/// One (pattern, size) row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub pattern: Pattern,
    pub size: usize,
    pub cells: Vec<Cell>,
    /// Producer/consumer rows only: segpool minus channel, in ns per pair, for every pair of
    /// cells timed back to back, in order (`PC_PAIRS` per run). The target is judged on their
    /// median.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paired_over_channel_ns: Vec<f64>,
    /// One byte written per 4 KiB page of every buffer between allocate and release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub touched: bool,
}

impl Row {
    pub fn ns(&self, allocator: &str) -> Option<f64> {
        self.cells
            .iter()
            .find(|c| c.allocator == allocator)
            .map(|c| c.median_ns)
    }

    /// Adds one timed cell of `allocator`.
    fn record(&mut self, allocator: &str, ns: f64) {
        match self.cells.iter_mut().find(|c| c.allocator == allocator) {
            Some(c) => c.runs_ns.push(ns),
            None => self.cells.push(Cell {
                allocator: allocator.to_string(),
                median_ns: 0.0,
                runs_ns: vec![ns],
            }),
        }
    }
}

/// Where the numbers were measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub transparent_hugepage: String,
}

/// A claim of the project's about its figures, and whether this run's table meets it: the
/// figures depend on the machine, so a claim not met is reported, not treated as a failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub target: String,
    pub holds: bool,
    pub detail: String,
}

/// System calls per allocate+release pair, by kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallsPerPair {
    pub pairs: u64,
    pub mmap: f64,
    pub munmap: f64,
    /// Every other kind (`madvise`, `mprotect`, `msync`, `mlock`).
    pub other: f64,
}

/// Counts the mapping system calls of `PAIRS` allocate+release pairs above the largest class on
/// a fresh default pool, after one pair of warm-up. The counters are process-wide: nothing else
/// runs meanwhile.
fn count_above_largest() -> Result<CallsPerPair, Error> {
    const PAIRS: u64 = 1000;
    let pool = segpool::SegmentPool::new()?;
    drop(pool.allocate(ABOVE_LARGEST)?);
    let before = segpool::diagnostics::mapping_calls();
    for _ in 0..PAIRS {
        black_box(pool.allocate(ABOVE_LARGEST)?);
    }
    let c = segpool::diagnostics::mapping_calls().since(&before);
    let per = |n: u64| n as f64 / PAIRS as f64;
    Ok(CallsPerPair {
        pairs: PAIRS,
        mmap: per(c.mmap),
        munmap: per(c.munmap),
        other: per(c.total() - c.mmap - c.munmap),
    })
}

/// One growth row: allocations timed while a class grew from `regions` regions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrowthPoint {
    pub regions: usize,
    pub ns_per_allocation: f64,
    /// ns per release+allocation pair when half of the slices of `GROWTH_WINDOW` regions spread
    /// over the whole pool (oldest first) come back and are allocated again: refills that find
    /// room in old regions among many full ones.
    #[serde(default)]
    pub ns_per_churn_pair: f64,
}

/// Times allocations while one class grows: a pool of `GROWTH_SLICE` slices in regions of
/// `GROWTH_SLICES` slices, every segment kept live, timed over `GROWTH_WINDOW` regions' worth of
/// allocations from each count in `GROWTH_AT` (the allocations in between are not timed), the
/// fastest of `GROWTH_RUNS` runs per row.
fn measure_growth() -> Result<Vec<GrowthPoint>, Error> {
    let mut best = measure_growth_once()?;
    for _ in 1..GROWTH_RUNS {
        for (b, p) in best.iter_mut().zip(measure_growth_once()?) {
            b.ns_per_allocation = b.ns_per_allocation.min(p.ns_per_allocation);
            b.ns_per_churn_pair = b.ns_per_churn_pair.min(p.ns_per_churn_pair);
        }
    }
    Ok(best)
}

fn measure_growth_once() -> Result<Vec<GrowthPoint>, Error> {
    const SLICE: usize = GROWTH_SLICE;
    let pool = segpool::SegmentPool::builder()
        .size_classes(&[SLICE])
        .region_size(GROWTH_SLICES * SLICE)
        .huge_pages(false)
        .build()?;
    let last = GROWTH_AT[GROWTH_AT.len() - 1];
    let mut held = Vec::with_capacity((last + GROWTH_WINDOW) * GROWTH_SLICES);
    let mut out = Vec::new();
    for &at in &GROWTH_AT {
        eprint!("\rgrowth: {at} regions");
        while held.len() < (at - 1) * GROWTH_SLICES {
            held.push(Some(pool.allocate(SLICE)?));
        }
        let regions = pool.stats().regions;
        let n = GROWTH_WINDOW * GROWTH_SLICES;
        let t0 = Instant::now();
        for _ in 0..n {
            held.push(Some(pool.allocate(SLICE)?));
        }
        let ns = t0.elapsed().as_nanos() as f64 / n as f64;
        black_box(held.last().map(|s| s.as_ref().map(|s| s.as_ptr())));
        // Churn: half the slices of every `step`-th region come back, then as many are
        // allocated again (no region empties, so none is unmapped in between).
        let step = (held.len() / GROWTH_SLICES / GROWTH_WINDOW).max(1);
        let slots: Vec<usize> = (0..GROWTH_WINDOW)
            .flat_map(|k| {
                let first = k * step * GROWTH_SLICES;
                first..first + GROWTH_SLICES / 2
            })
            .collect();
        // The first pass brings those regions' metadata (and the slots) into the cache, as the
        // allocations just before the window did for the first row: the passes timed after it
        // compare the pool's work, not which memory a workload touched last.
        let mut t0 = Instant::now();
        for pass in 0..GROWTH_CHURN_PASSES {
            if pass == 1 {
                t0 = Instant::now();
            }
            for &i in &slots {
                held[i] = None;
            }
            for &i in &slots {
                held[i] = Some(pool.allocate(SLICE)?);
            }
        }
        let timed = (GROWTH_CHURN_PASSES - 1) * slots.len();
        let churn = t0.elapsed().as_nanos() as f64 / timed as f64;
        out.push(GrowthPoint {
            regions,
            ns_per_allocation: ns,
            ns_per_churn_pair: churn,
        });
    }
    eprintln!();
    Ok(out)
}

/// "Allocation cost does not grow with the pool": the last growth row within
/// `GROWTH_TOLERANCE` of the first.
fn growth_target(points: &[GrowthPoint]) -> Target {
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            return Target {
                target: "growth: allocation cost flat as the pool grows".into(),
                holds: false,
                detail: "not measured".into(),
            }
        }
    };
    let ratio = last.ns_per_allocation / first.ns_per_allocation;
    let churn_ratio = last.ns_per_churn_pair / first.ns_per_churn_pair;
    let by_count: Vec<String> = points
        .iter()
        .map(|p| {
            format!(
                "{} regions {} (churn {})",
                p.regions,
                ns_text(p.ns_per_allocation),
                ns_text(p.ns_per_churn_pair)
            )
        })
        .collect();
    Target {
        target: format!(
            "growth: allocation and churn from {} regions within {:.0}% of from {}",
            last.regions,
            GROWTH_TOLERANCE * 100.0,
            first.regions
        ),
        holds: ratio <= 1.0 + GROWTH_TOLERANCE && churn_ratio <= 1.0 + GROWTH_TOLERANCE,
        detail: format!(
            "{} ({ratio:.2}x, churn {churn_ratio:.2}x)",
            by_count.join(", ")
        ),
    }
}

fn growth_text(points: &[GrowthPoint]) -> String {
    let mut out = String::from(
        "growth: one 64 KiB class grows, segments kept live (fastest of 3 runs)\n  \
         allocation: ns per allocation over the next 100 regions' worth\n  \
         churn: ns per release+allocation pair, half of 100 regions spread over the pool\n  \
         (the same slices 4 times, after one untimed pass)\n",
    );
    for p in points {
        let _ = writeln!(
            out,
            "  from {:>6} regions: allocation {}, churn {}",
            p.regions,
            ns_text(p.ns_per_allocation),
            ns_text(p.ns_per_churn_pair)
        );
    }
    out
}

/// Everything one `segpool bench` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub runs: u32,
    pub run_ms: u64,
    /// Back-to-back (segpool, channel) pairs per run in each producer/consumer row, each cell
    /// timed for `run_ms / 2`.
    #[serde(default)]
    pub pc_pairs_per_run: u32,
    /// Capacity of the producer/consumer channel.
    pub channel_bound: String,
    pub seconds: f64,
    /// Allocator names in column order.
    pub allocators: Vec<String>,
    pub rows: Vec<Row>,
    /// The large section: segpool against lgalloc, mimalloc and jemalloc at large sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_rows: Vec<Row>,
    /// The growth rows: (regions when the window started, ns per allocation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub growth: Vec<GrowthPoint>,
    /// Memory-mapping system calls per allocate+release pair above the largest class, counted
    /// by `segpool::diagnostics::mapping_calls` over a loop of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_largest_calls: Option<CallsPerPair>,
    pub targets: Vec<Target>,
    /// The file I/O section, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileReport>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs the benchmark and writes what `args` asks for.
pub fn run(args: Args) -> Result<(), Error> {
    let docs = args.docs_dir.clone().unwrap_or_else(default_docs_dir);
    if args.update_docs && !docs.is_dir() {
        return Err(format!("docs folder {} does not exist", docs.display()).into());
    }
    let readme = readme_beside(&docs);
    if args.update_docs {
        if let Some(r) = &readme {
            // Fail before a minute of measuring, not after.
            splice_readme(&std::fs::read_to_string(r)?, "")
                .map_err(|e| format!("{}: {e}", r.display()))?;
        }
    }
    let (alloc, files, memory) = match args.only {
        None => (true, true, true),
        Some(Section::Alloc) => (true, false, false),
        Some(Section::Files) => (false, true, false),
        Some(Section::Memory) => (false, false, true),
        Some(Section::Growth) => (false, false, false),
    };
    let growth_alone = args.only == Some(Section::Growth);
    if !alloc && args.plot.is_some() {
        return Err("--plot draws the allocator section: drop --only".into());
    }
    if files {
        if args.file_size % (1 << 20) != 0 || args.file_size < 2 << 20 {
            return Err(format!(
                "--file-size {}: use whole MiB, at least 2M",
                crate::bytes_text(args.file_size)
            )
            .into());
        }
        if !args.files_dir.is_dir() {
            return Err(format!("--files-dir {}: not a folder", args.files_dir.display()).into());
        }
    }
    // Fail before a minute of measuring, not after.
    for p in [&args.json, &args.markdown, &args.plot]
        .into_iter()
        .flatten()
    {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(format!("cannot write {}: its folder does not exist", p.display()).into());
        }
    }
    let started = Instant::now();
    let (rows, large_rows, growth) = if alloc {
        let per_cell = Duration::from_millis(args.run_ms);
        (
            measure(args.runs, per_cell)?,
            measure_large(args.runs, per_cell)?,
            measure_growth()?,
        )
    } else if growth_alone {
        (Vec::new(), Vec::new(), measure_growth()?)
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let files = if files {
        Some(bench_files::measure(
            &args.files_dir,
            args.file_size as u64,
            args.runs,
            Duration::from_millis(args.files_run_ms),
        )?)
    } else {
        None
    };
    let above_largest_calls = if alloc {
        Some(count_above_largest()?)
    } else {
        None
    };
    let mut report = Report {
        machine: machine(),
        command: command_line(),
        runs: args.runs,
        run_ms: args.run_ms,
        pc_pairs_per_run: PC_PAIRS,
        channel_bound: CHANNEL_BOUND_TEXT.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        allocators: COLUMNS.iter().map(|s| s.to_string()).collect(),
        rows,
        large_rows,
        growth,
        above_largest_calls,
        targets: Vec::new(),
        files,
    };
    if alloc {
        report.targets = targets(&report.rows, report.above_largest_calls.as_ref());
        report.targets.extend(large_targets(&report.large_rows));
        report.targets.push(growth_target(&report.growth));
        print!("{}", text_table(&report));
        println!();
        print!("{}", large_text_table(&report));
        println!();
        print!("{}", growth_text(&report.growth));
        println!();
        print_targets(&report.targets);
    } else if growth_alone {
        report.targets.push(growth_target(&report.growth));
        print!("{}", growth_text(&report.growth));
        println!();
        print_targets(&report.targets);
    }
    if let Some(f) = &report.files {
        if alloc {
            println!();
        }
        print!("{}", bench_files::text_table(f));
        println!();
        print_targets(&f.targets);
    }
    if memory {
        if alloc || report.files.is_some() {
            println!();
        }
        crate::bench_memory::run()?;
    }
    println!("measured in {:.1} s", started.elapsed().as_secs_f64());

    if let Some(p) = &args.json {
        write(p, &serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(p) = &args.markdown {
        let mut md = String::new();
        if alloc {
            md.push_str(&markdown_table(&report));
            md.push('\n');
            md.push_str(&large_markdown_table(&report));
        }
        if let Some(f) = &report.files {
            if alloc {
                md.push('\n');
            }
            md.push_str(&bench_files::markdown_table(f));
        }
        write(p, &md)?;
    }
    if let Some(p) = &args.plot {
        plot::svg(&report, p)?;
    }
    if args.update_docs {
        let svg = docs.join("bench-alloc.svg");
        plot::svg(&report, &svg)?;
        write(
            &docs.join("benchmarks.json"),
            &serde_json::to_string_pretty(&report)?,
        )?;
        write(&docs.join("benchmarks.md"), &docs_page(&report))?;
        println!("wrote {}", docs.display());
        if let Some(r) = &readme {
            let old = std::fs::read_to_string(r)?;
            let new = splice_readme(&old, &readme_table(&report))
                .map_err(|e| format!("{}: {e}", r.display()))?;
            write(r, &new)?;
            println!("wrote the table in {}", r.display());
        }
    }
    Ok(())
}

fn print_targets(targets: &[Target]) {
    for t in targets {
        println!("claim: {}", claim_text(t));
    }
}

/// A claim, what this run measured, and whether the measurement meets the claim, said neutrally:
/// the figures depend on the machine (its CPU is named with the table).
pub fn claim_text(t: &Target) -> String {
    format!(
        "{}; measured: {} ({})",
        t.target,
        t.detail,
        if t.holds {
            "met"
        } else {
            "not met on this machine"
        }
    )
}

const README_BEGIN: &str = "<!-- bench:begin -->";
const README_END: &str = "<!-- bench:end -->";

/// The README.md in the folder above `docs`, if there is one.
fn readme_beside(docs: &Path) -> Option<PathBuf> {
    let r = std::fs::canonicalize(docs)
        .ok()?
        .parent()?
        .join("README.md");
    r.is_file().then_some(r)
}

/// `readme` with everything between the bench markers replaced by `table`.
fn splice_readme(readme: &str, table: &str) -> Result<String, String> {
    let begin = readme
        .find(README_BEGIN)
        .ok_or_else(|| format!("no {README_BEGIN} marker"))?;
    let end = readme
        .find(README_END)
        .filter(|&e| e > begin)
        .ok_or_else(|| format!("no {README_END} marker after {README_BEGIN}"))?;
    Ok(format!(
        "{}{README_BEGIN}\n{table}{}",
        &readme[..begin],
        &readme[end..]
    ))
}

/// The README's copy of the table: what was measured, where, and the table itself.
fn readme_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo run --release --features peers -- bench --update-docs`; do not edit by hand. -->\n"
    );
    let _ = writeln!(
        out,
        "ns per allocate+release pair (lower is better), memory untouched, median of {} runs; \
         in parentheses each peer's time divided by segpool's (above 1: segpool is faster). \
         Measured on {} ({} CPUs), Linux {}, shared with other work: rows under 100 ns vary by \
         20-30% between runs. Columns and method: [docs/benchmarks.md].\n",
        r.runs, r.machine.cpu, r.machine.cpus, r.machine.kernel
    );
    out.push_str(&markdown_table(r));
    out
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

fn default_docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
}

/// Column order of every table.
const COLUMNS: [&str; 7] = [
    "segpool", "floor", "glibc", "mimalloc", "jemalloc", "mmap", "channel",
];

fn measure(runs: u32, per_cell: Duration) -> Result<Vec<Row>, Error> {
    let pool = segpool::SegmentPool::new()?;
    let segpool = peers::Segpool(pool);
    let floor = peers::ThreadLocalFloor;
    let glibc = peers::system();
    let mimalloc = peers::mimalloc();
    let jemalloc = peers::jemalloc();
    let mmap = peers::MmapPerBuffer;
    let channel = peers::Nothing;

    let mut rows: Vec<Row> = Pattern::ALL
        .iter()
        .flat_map(|&p| {
            p.sizes().into_iter().map(move |size| Row {
                pattern: p,
                size,
                cells: Vec::new(),
                paired_over_channel_ns: Vec::new(),
                touched: false,
            })
        })
        .collect();
    for run in 0..runs {
        eprint!("\rrun {}/{runs}", run + 1);
        for row in rows.iter_mut() {
            let (p, s) = (row.pattern, row.size);
            // The contenders take turns going first from one run to the next, so whatever the
            // previous cell leaves behind (caches, frequency, the other core's state) favours
            // none of them.
            for k in 0..6 {
                match (k + run as usize) % 6 {
                    0 if p == Pattern::ProducerConsumer => {
                        // Paired with the channel, segpool first in even runs and second in
                        // odd ones, so neither side of a pair is always the one that follows
                        // the other.
                        let half = per_cell / 2;
                        for _ in 0..PC_PAIRS {
                            let (sp, ch) = if run % 2 == 0 {
                                let sp = time(&segpool, p, s, false, half)?;
                                (sp, time(&channel, p, s, false, half)?)
                            } else {
                                let ch = time(&channel, p, s, false, half)?;
                                (time(&segpool, p, s, false, half)?, ch)
                            };
                            row.record("segpool", sp);
                            row.record("channel", ch);
                            row.paired_over_channel_ns.push(sp - ch);
                        }
                    }
                    0 => row.record("segpool", time(&segpool, p, s, false, per_cell)?),
                    1 => row.record("floor", time(&floor, p, s, false, per_cell)?),
                    2 => row.record("glibc", time(&glibc, p, s, false, per_cell)?),
                    3 if peers::C_PEERS => {
                        row.record("mimalloc", time(&mimalloc, p, s, false, per_cell)?)
                    }
                    4 if peers::C_PEERS => {
                        row.record("jemalloc", time(&jemalloc, p, s, false, per_cell)?)
                    }
                    // Without the `peers` feature (only the tests measure then).
                    3 | 4 => {}
                    _ => row.record("mmap", time(&mmap, p, s, false, per_cell)?),
                }
            }
        }
    }
    eprintln!();
    for cell in rows.iter_mut().flat_map(|r| r.cells.iter_mut()) {
        cell.median_ns = median(&cell.runs_ns);
    }
    Ok(rows)
}

/// Column order of the large section.
const LARGE_COLUMNS: [&str; 5] = ["segpool", "lgalloc", "mimalloc", "jemalloc", "channel"];

/// The large section: like [`measure`], with lgalloc among the peers, at large sizes, untouched
/// and touched. A pool of its own, so the main table's pool is not mixed in.
fn measure_large(runs: u32, per_cell: Duration) -> Result<Vec<Row>, Error> {
    let segpool = peers::Segpool(segpool::SegmentPool::new()?);
    let lgalloc = peers::lgalloc();
    let mimalloc = peers::mimalloc();
    let jemalloc = peers::jemalloc();
    let channel = peers::Nothing;
    let mut rows = Vec::new();
    for touched in [false, true] {
        for pattern in [Pattern::OneThread, Pattern::TwoThreads] {
            for size in LARGE_SIZES {
                rows.push((pattern, size, touched));
            }
        }
    }
    rows.extend(
        LARGE_PC_SIZES
            .iter()
            .map(|&s| (Pattern::ProducerConsumer, s, false)),
    );
    let mut rows: Vec<Row> = rows
        .into_iter()
        .map(|(pattern, size, touched)| Row {
            pattern,
            size,
            cells: Vec::new(),
            paired_over_channel_ns: Vec::new(),
            touched,
        })
        .collect();
    for run in 0..runs {
        eprint!("\rlarge sizes: run {}/{runs}", run + 1);
        for row in rows.iter_mut() {
            let (p, s, t) = (row.pattern, row.size, row.touched);
            for k in 0..4 {
                match (k + run as usize) % 4 {
                    0 if p == Pattern::ProducerConsumer => {
                        let half = per_cell / 2;
                        for _ in 0..PC_PAIRS {
                            let (sp, ch) = if run % 2 == 0 {
                                let sp = time(&segpool, p, s, t, half)?;
                                (sp, time(&channel, p, s, t, half)?)
                            } else {
                                let ch = time(&channel, p, s, t, half)?;
                                (time(&segpool, p, s, t, half)?, ch)
                            };
                            row.record("segpool", sp);
                            row.record("channel", ch);
                            row.paired_over_channel_ns.push(sp - ch);
                        }
                    }
                    0 => row.record("segpool", time(&segpool, p, s, t, per_cell)?),
                    1 => row.record("lgalloc", time(&lgalloc, p, s, t, per_cell)?),
                    2 if peers::C_PEERS => {
                        row.record("mimalloc", time(&mimalloc, p, s, t, per_cell)?)
                    }
                    3 if peers::C_PEERS => {
                        row.record("jemalloc", time(&jemalloc, p, s, t, per_cell)?)
                    }
                    _ => {}
                }
            }
        }
    }
    eprintln!();
    for cell in rows.iter_mut().flat_map(|r| r.cells.iter_mut()) {
        cell.median_ns = median(&cell.runs_ns);
    }
    Ok(rows)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// ns per pair of `a` in pattern `p` at `size` (writing one byte per page of every buffer when
/// `touch`), timed for about `per_cell`.
fn time<A: Allocator>(
    a: &A,
    p: Pattern,
    size: usize,
    touch: bool,
    per_cell: Duration,
) -> Result<f64, Error> {
    match p {
        Pattern::OneThread => own_pairs(a, size, touch, per_cell, None),
        Pattern::TwoThreads => {
            let barrier = Barrier::new(2);
            let b = &barrier;
            std::thread::scope(|s| {
                let t = s.spawn(move || own_pairs(a, size, touch, per_cell, Some(b)));
                let mine = own_pairs(a, size, touch, per_cell, Some(b));
                let theirs = t.join().map_err(|_| "benchmark thread panicked")?;
                Ok((mine? + theirs?) / 2.0)
            })
        }
        Pattern::ProducerConsumer => producer_consumer(a, size, per_cell),
    }
    .map_err(|e: Error| format!("{} ({}, {size} bytes): {e}", a.name(), p.label()).into())
}

/// Writes one byte into every 4 KiB page of the `size` bytes at `addr`.
fn touch_pages(addr: usize, size: usize) {
    for off in (0..size).step_by(peers::PAGE) {
        // SAFETY: `addr` is a buffer of at least `size` bytes that the caller owns and that no
        // one else reads or writes.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u8, 1) };
    }
}

/// Allocate+release pairs on this thread (writing one byte per page of each buffer when
/// `touch`); after warming up, waits at `start` (if any) so two threads time the same period.
fn own_pairs<A: Allocator>(
    a: &A,
    size: usize,
    touch: bool,
    per_cell: Duration,
    start: Option<&Barrier>,
) -> Result<f64, Error> {
    let pairs = |n: u64| -> Result<(), String> {
        for _ in 0..n {
            let b = a.alloc(size)?;
            if touch {
                touch_pages(A::addr(&b), size);
            }
            black_box(A::addr(&b));
            a.release(b, size);
        }
        Ok(())
    };
    // Touched pairs cost microseconds to milliseconds: fewer per clock read.
    let batch = if touch {
        (BATCH * (64 << 10) / size as u64).max(1)
    } else {
        BATCH
    };
    pairs(batch)?;
    if let Some(b) = start {
        b.wait();
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    loop {
        pairs(batch)?;
        done += batch;
        let el = t0.elapsed();
        if el >= per_cell {
            return Ok(el.as_nanos() as f64 / done as f64);
        }
    }
}

/// One thread allocates and sends through a bounded channel; another receives and releases.
/// ns per pair = time until the consumer has released everything / pairs.
fn producer_consumer<A: Allocator>(a: &A, size: usize, per_cell: Duration) -> Result<f64, Error> {
    let (tx, rx) = sync_channel::<A::Buf>(channel_bound(size));
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let b = &barrier;
        let consumer = s.spawn(move || {
            // Warm-up: the producer sends BATCH buffers before the barrier.
            for _ in 0..BATCH {
                match rx.recv() {
                    Ok(buf) => a.release(buf, size),
                    Err(_) => return None,
                }
            }
            b.wait();
            let mut n = 0u64;
            while let Ok(buf) = rx.recv() {
                a.release(buf, size);
                n += 1;
            }
            Some((Instant::now(), n))
        });
        let produced = (|| -> Result<(Instant, u64), String> {
            for _ in 0..BATCH {
                tx.send(a.alloc(size)?).map_err(|_| "consumer is gone")?;
            }
            b.wait();
            let t0 = Instant::now();
            let mut n = 0u64;
            loop {
                for _ in 0..BATCH {
                    tx.send(a.alloc(size)?).map_err(|_| "consumer is gone")?;
                }
                n += BATCH;
                if t0.elapsed() >= per_cell {
                    return Ok((t0, n));
                }
            }
        })();
        drop(tx);
        let consumed = consumer.join().map_err(|_| "consumer thread panicked")?;
        let (t0, n) = produced?;
        let (end, got) = consumed.ok_or("consumer ended early")?;
        if got != n {
            return Err(format!("consumer released {got} of {n} buffers").into());
        }
        Ok((end - t0).as_nanos() as f64 / n as f64)
    })
}

fn targets(rows: &[Row], calls: Option<&CallsPerPair>) -> Vec<Target> {
    let mut out = Vec::new();
    let of = |p: Pattern| rows.iter().filter(move |r| r.pattern == p);
    let classes = |p: Pattern| of(p).filter(|r| CLASSES.contains(&r.size));

    let worst = |it: &mut dyn Iterator<Item = (usize, f64)>| {
        it.fold(
            (0usize, f64::MIN),
            // A NaN (a missing cell) is the worst, so the target fails instead of skipping it.
            |acc, x| {
                if acc.1.is_nan() || !(x.1.is_nan() || x.1 > acc.1) {
                    acc
                } else {
                    x
                }
            },
        )
    };
    let (s, ns) = worst(
        &mut classes(Pattern::OneThread).map(|r| (r.size, r.ns("segpool").unwrap_or(f64::NAN))),
    );
    out.push(Target {
        target: "1 thread, every class: <= 12 ns per pair".into(),
        holds: ns <= 12.0,
        detail: format!("worst {} at {}", ns_text(ns), size_text(s)),
    });
    let (s, x) = worst(&mut classes(Pattern::OneThread).map(|r| {
        (
            r.size,
            r.ns("segpool").unwrap_or(f64::NAN) / r.ns("floor").unwrap_or(f64::NAN),
        )
    }));
    out.push(Target {
        target: "1 thread, every class: <= 2.5x the thread-local floor".into(),
        holds: x <= 2.5,
        detail: format!("worst {x:.2}x at {}", size_text(s)),
    });
    let (s, ns) = worst(
        &mut classes(Pattern::TwoThreads).map(|r| (r.size, r.ns("segpool").unwrap_or(f64::NAN))),
    );
    out.push(Target {
        target: "2 threads each own, every class: <= 15 ns per pair per thread".into(),
        holds: ns <= 15.0,
        detail: format!("worst {} at {}", ns_text(ns), size_text(s)),
    });
    out.push(producer_consumer_target(rows, &CLASSES));
    if let Some(r) = of(Pattern::OneThread).find(|r| r.size == ABOVE_LARGEST) {
        let (sp, mm) = (
            r.ns("segpool").unwrap_or(f64::NAN),
            r.ns("mmap").unwrap_or(f64::NAN),
        );
        // Counted, not timed: the timing ratio to a bare mmap+munmap is kernel time (most of
        // it) and moves with the machine, so it goes in the detail only.
        let timing = format!(
            "timing: segpool {} vs mmap+munmap {} ({:.2}x)",
            ns_text(sp),
            ns_text(mm),
            sp / mm
        );
        out.push(Target {
            target: format!(
                "above the largest class ({}): one mmap + one munmap",
                size_text(ABOVE_LARGEST)
            ),
            holds: calls.is_some_and(|c| c.mmap == 1.0 && c.munmap == 1.0 && c.other == 0.0),
            detail: match calls {
                Some(c) => format!(
                    "counted over {} pairs: {:.2} mmap + {:.2} munmap + {:.2} other calls per pair; {timing}",
                    c.pairs, c.mmap, c.munmap, c.other
                ),
                None => format!("not counted; {timing}"),
            },
        });
    }
    out
}

/// "Allocate on one thread, release on another: no more than the cost of the channel that
/// carries the segment plus 30 ns", at every class. Judged on the median of each row's paired
/// differences (segpool minus channel, timed back to back), not on the difference of the two
/// medians, which the channel's swings from cell to cell dominate; that difference is shown
/// beside it for comparison. A class without paired differences fails.
fn producer_consumer_target(rows: &[Row], sizes: &[usize]) -> Target {
    let mut holds = true;
    let mut missing = Vec::new();
    let mut by_class = Vec::new();
    // (size, paired median, pairs, difference of medians) of the worst class.
    let mut worst: Option<(usize, f64, usize, f64)> = None;
    for &size in sizes {
        let row = rows
            .iter()
            .find(|r| r.pattern == Pattern::ProducerConsumer && r.size == size)
            .filter(|r| !r.paired_over_channel_ns.is_empty());
        let Some(r) = row else {
            holds = false;
            missing.push(size_text(size));
            continue;
        };
        let paired = median(&r.paired_over_channel_ns);
        let of_medians = r.ns("segpool").unwrap_or(f64::NAN) - r.ns("channel").unwrap_or(f64::NAN);
        // Written so that a NaN fails.
        holds &= paired <= PC_OVER_CHANNEL_NS;
        by_class.push(format!(
            "{} {} / {}",
            size_text(size),
            signed_ns(paired),
            signed_ns(of_medians)
        ));
        // The worst is the largest, or the first NaN.
        if worst.is_none_or(|w| !w.1.is_nan() && (paired.is_nan() || paired > w.1)) {
            worst = Some((size, paired, r.paired_over_channel_ns.len(), of_medians));
        }
    }
    let mut detail = String::new();
    if !missing.is_empty() {
        let _ = write!(detail, "no paired differences at {}; ", missing.join(", "));
    }
    if let Some((size, paired, n, of_medians)) = worst {
        let _ = write!(
            detail,
            "median of {n} paired differences: {} at {} (difference of medians: {}); \
             by class, paired / difference of medians: {}",
            signed_ns(paired),
            size_text(size),
            signed_ns(of_medians),
            by_class.join(", ")
        );
    }
    let which = if sizes == CLASSES {
        "every class".to_string()
    } else {
        sizes
            .iter()
            .map(|&s| size_text(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Target {
        target: format!("producer/consumer, {which}: <= channel + {PC_OVER_CHANNEL_NS:.0} ns"),
        holds,
        detail,
    }
}

/// The large section's targets: at every large size, 1 and 2 threads, untouched and touched,
/// segpool no slower than the fastest of lgalloc, mimalloc and jemalloc (within
/// `LARGE_TOLERANCE`); and allocate on one thread, release on another, within the channel's cost
/// plus `PC_OVER_CHANNEL_NS`.
fn large_targets(rows: &[Row]) -> Vec<Target> {
    let mut holds = true;
    let mut worst: Option<(f64, String)> = None;
    let mut missing = Vec::new();
    for touched in [false, true] {
        for pattern in [Pattern::OneThread, Pattern::TwoThreads] {
            for size in LARGE_SIZES {
                let label = format!(
                    "{} {}{}",
                    pattern.label(),
                    size_text(size),
                    if touched { " touched" } else { "" }
                );
                let row = rows
                    .iter()
                    .find(|r| r.pattern == pattern && r.size == size && r.touched == touched);
                let ratio = row.map_or(f64::NAN, |r| {
                    let best = ["lgalloc", "mimalloc", "jemalloc"]
                        .iter()
                        .map(|p| r.ns(p).unwrap_or(f64::NAN))
                        .fold(
                            f64::INFINITY,
                            |a, b| if b.is_nan() { f64::NAN } else { a.min(b) },
                        );
                    r.ns("segpool").unwrap_or(f64::NAN) / best
                });
                if ratio.is_nan() {
                    missing.push(label.clone());
                }
                // Written so that a NaN fails.
                holds &= ratio <= 1.0 + LARGE_TOLERANCE;
                if worst.as_ref().is_none_or(|w| ratio.is_nan() || ratio > w.0) && !ratio.is_nan() {
                    worst = Some((ratio, label));
                }
            }
        }
    }
    let mut detail = String::new();
    if !missing.is_empty() {
        let _ = write!(detail, "not measured: {}; ", missing.join(", "));
    }
    if let Some((ratio, label)) = worst {
        let _ = write!(detail, "worst {ratio:.2}x the fastest peer at {label}");
    }
    vec![
        Target {
            target: format!(
                "large sizes ({} to {}), 1 and 2 threads, untouched and touched: <= the fastest of lgalloc, mimalloc, jemalloc (+{:.0}%)",
                size_text(LARGE_SIZES[0]),
                size_text(LARGE_SIZES[LARGE_SIZES.len() - 1]),
                LARGE_TOLERANCE * 100.0
            ),
            holds,
            detail,
        },
        producer_consumer_target(rows, &LARGE_PC_SIZES),
    ]
}

pub fn size_text(bytes: usize) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn ns_text(ns: f64) -> String {
    format!("{} ns", num(ns))
}

/// "+12.3 ns", "-245 ns": a difference, with its sign.
fn signed_ns(ns: f64) -> String {
    if ns.is_nan() {
        return "n/a".into();
    }
    format!("{}{} ns", if ns < 0.0 { "-" } else { "+" }, num(ns.abs()))
}

fn num(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}

/// "value (ratio to segpool)" for a peer, plain value for segpool; empty when not measured.
fn cell_text(row: &Row, name: &str) -> String {
    let Some(ns) = row.ns(name) else {
        return String::new();
    };
    if name == "segpool" {
        return num(ns);
    }
    match row.ns("segpool") {
        Some(sp) if sp > 0.0 => format!("{} ({:.2}x)", num(ns), ns / sp),
        _ => num(ns),
    }
}

fn text_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ns per allocate+release pair, median of {} runs (peer (peer/segpool)); memory untouched",
        r.runs
    );
    let widths = [20, 8, 9, 15, 15, 15, 15, 15, 15];
    let mut header = vec!["pattern".to_string(), "size".to_string()];
    header.extend(COLUMNS.iter().map(|s| s.to_string()));
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i < 2 {
                let _ = write!(s, "{c:<w$} ");
            } else {
                let _ = write!(s, "{c:>w$} ");
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header));
    for row in &r.rows {
        let mut cols = vec![row.pattern.label().to_string(), size_text(row.size)];
        cols.extend(COLUMNS.iter().map(|c| cell_text(row, c)));
        let _ = writeln!(out, "{}", line(&cols));
    }
    out
}

/// The row label of the large section: the pattern, and whether pages were touched.
fn large_label(row: &Row) -> String {
    if row.touched {
        format!("{}, touched", row.pattern.label())
    } else {
        row.pattern.label().to_string()
    }
}

fn large_text_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "large sizes: ns per allocate+release pair, median of {} runs (peer (peer/segpool)); touched: one byte written per 4 KiB page",
        r.runs
    );
    let _ = write!(out, "{:<32} {:<9}", "pattern", "size");
    for c in LARGE_COLUMNS {
        let _ = write!(out, " {c:>20}");
    }
    out.push('\n');
    for row in &r.large_rows {
        let _ = write!(out, "{:<32} {:<9}", large_label(row), size_text(row.size));
        for c in LARGE_COLUMNS {
            let _ = write!(out, " {:>20}", cell_text(row, c));
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

fn large_markdown_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| pattern | size | {} |", LARGE_COLUMNS.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(LARGE_COLUMNS.len()));
    for row in &r.large_rows {
        let cols: Vec<String> = LARGE_COLUMNS.iter().map(|c| cell_text(row, c)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            large_label(row),
            size_text(row.size),
            cols.join(" | ")
        );
    }
    out
}

fn markdown_table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| pattern | size | {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(COLUMNS.len()));
    for row in &r.rows {
        let cols: Vec<String> = COLUMNS.iter().map(|c| cell_text(row, c)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.pattern.label(),
            size_text(row.size),
            cols.join(" | ")
        );
    }
    out
}

fn docs_page(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "<!-- Generated by `segpool bench --update-docs`; do not edit by hand. -->\n"
    );
    let _ = writeln!(
        out,
        "ns per allocate+release pair, memory untouched, median of {} runs of {} ms per cell; \
         in parentheses each peer's time divided by segpool's (above 1: segpool is faster). \
         Every buffer is page-aligned (4096); the contenders of a row take turns going first \
         from one run to the next. In the producer/consumer rows, segpool and channel are \
         instead timed in {} back-to-back pairs of {} ms cells per run, and their cells are the \
         median of all {} such cells (see the claims for why). Rows under 100 ns vary by \
         20-30% between runs on a shared 2-core VM: compare ratios within one run. The file \
         I/O section follows the allocator claims.\n",
        r.runs,
        r.run_ms,
        r.pc_pairs_per_run,
        half_ms_text(r.run_ms),
        r.pc_pairs_per_run * r.runs
    );
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "- CPU: {} ({} CPUs)", r.machine.cpu, r.machine.cpus);
    let _ = writeln!(out, "- Kernel: Linux {}", r.machine.kernel);
    let _ = writeln!(
        out,
        "- Transparent huge pages: {}\n",
        r.machine.transparent_hugepage
    );
    let _ = writeln!(out, "## Command\n");
    let _ = writeln!(out, "```sh\n{}\n```\n", r.command);
    let _ = writeln!(out, "Measured in {:.1} s.\n", r.seconds);
    let _ = writeln!(out, "## Columns\n");
    let _ = writeln!(out, "- **segpool**: `SegmentPool::new()` (defaults: thread caches on), `allocate(size)` then drop.");
    let _ = writeln!(out, "- **floor**: pop and push on a thread-local `Vec` of addresses: the least a per-thread cache can cost.");
    let _ = writeln!(out, "- **glibc**, **mimalloc**, **jemalloc**: `std::alloc::System`, `mimalloc::MiMalloc`, `tikv_jemallocator::Jemalloc` through `GlobalAlloc::alloc`/`dealloc` with 4096 alignment (none installed as the global allocator).");
    let _ = writeln!(
        out,
        "- **mmap**: one anonymous `mmap` and one `munmap` per buffer."
    );
    let _ = writeln!(
        out,
        "- **channel**: the bare cost of the bounded `std::sync::mpsc::sync_channel` (capacity {}) that carries buffers in the producer/consumer pattern, measured alone, with messages as large as a `Segment` ({} bytes): the channel that carries a segment.\n",
        r.channel_bound,
        std::mem::size_of::<segpool::Segment>()
    );
    let _ = writeln!(out, "Patterns: *1 thread* allocates and releases at once; *2 threads, each own* is the same on two threads at once (ns per pair per thread); *producer/consumer* allocates on one thread and releases on another (ns per pair, channel included). {} is above the largest class (a dedicated mapping in segpool).\n", size_text(ABOVE_LARGEST));
    let _ = writeln!(out, "## Table\n");
    out.push_str(&markdown_table(r));
    let _ = writeln!(out, "\n![ns per pair by size class](bench-alloc.svg)\n");
    let _ = writeln!(out, "## Large sizes\n");
    let _ = writeln!(
        out,
        "segpool (its default pool: classes up to 1 GiB) against **lgalloc** (`lgalloc::allocate`/`deallocate`, default configuration: per-thread caches of 32 MiB per class, no background worker), mimalloc and jemalloc, at sizes of the large classes. *touched*: one byte is written into every 4 KiB page of each buffer between allocate and release, so an allocator that hands out fresh pages pays their faults. The producer/consumer rows carry at most {} of buffers in the channel (at least 4).\n",
        size_text(LARGE_IN_FLIGHT_BYTES)
    );
    out.push_str(&large_markdown_table(r));
    out.push('\n');
    let _ = writeln!(out, "## Growth\n");
    let _ = writeln!(
        out,
        "ns per allocation while one class grows, every segment kept live: a pool of 64 KiB slices in 2 MiB regions of {GROWTH_SLICES} slices (huge pages off), timed over {GROWTH_WINDOW} regions' worth of allocations from each region count; then *churn*: half the slices of {GROWTH_WINDOW} regions spread evenly over the pool (oldest first) are released and allocated again, {} times (the first untimed: it brings those regions' metadata into the cache, as the allocations just before did for the first row), ns per release+allocation pair. Each row is the fastest of {GROWTH_RUNS} runs, each in a new pool.\n",
        GROWTH_CHURN_PASSES
    );
    let _ = writeln!(out, "| regions | ns per allocation | churn: ns per pair |");
    let _ = writeln!(out, "|---:|---:|---:|");
    for p in &r.growth {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            p.regions,
            num(p.ns_per_allocation),
            num(p.ns_per_churn_pair)
        );
    }
    out.push('\n');
    let _ = writeln!(out, "## Claims, and what this run measured\n");
    let _ = writeln!(
        out,
        "The producer/consumer claim (segpool at most {PC_OVER_CHANNEL_NS:.0} ns per pair over \
         the channel that carries the segment) is judged on paired differences. In every run, each producer/consumer row times segpool \
         and the channel back to back in {} pairs of {} ms cells (segpool first in every pair of \
         even runs, the channel first in odd ones), and the claim is met when, at every class, \
         the median of the row's {} paired differences (segpool minus channel) is at most \
         {PC_OVER_CHANNEL_NS:.0} ns. Why: the channel alone swings by ±30% and more from cell to \
         cell (thread scheduling on a shared 2-core VM, and futex parking where the channel is \
         shallow: {} buffers at {}), so the difference of two medians measured apart is mostly \
         noise at 256 KiB and 1 MiB, while whatever slows the machine for a moment slows both \
         cells of a pair. The detail also gives the difference of the two medians, for \
         comparison.\n",
        r.pc_pairs_per_run,
        half_ms_text(r.run_ms),
        r.pc_pairs_per_run * r.runs,
        channel_bound(1 << 20),
        size_text(1 << 20)
    );
    for t in &r.targets {
        let _ = writeln!(out, "- {}", claim_text(t));
    }
    if let Some(f) = &r.files {
        out.push('\n');
        out.push_str(&bench_files::docs_section(f, &r.command));
    }
    let _ = writeln!(
        out,
        "\nRaw numbers (every run of every cell): [benchmarks.json](benchmarks.json)."
    );
    out
}

/// Half of `run_ms` milliseconds, as the paired cells are timed: "20", "0.5".
fn half_ms_text(run_ms: u64) -> String {
    if run_ms % 2 == 0 {
        (run_ms / 2).to_string()
    } else {
        format!("{}.5", run_ms / 2)
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel,
        transparent_hugepage: thp,
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -- {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_table_goes_between_the_markers_only() {
        let readme = format!("# x\nintro\n{README_BEGIN}\nold table\n{README_END}\nrest\n");
        let new = splice_readme(&readme, "| new |\n").unwrap();
        assert_eq!(
            new,
            format!("# x\nintro\n{README_BEGIN}\n| new |\n{README_END}\nrest\n")
        );
        // Idempotent: splicing again gives the same text.
        assert_eq!(splice_readme(&new, "| new |\n").unwrap(), new);
        assert!(splice_readme("no markers", "t").is_err());
        assert!(splice_readme(&format!("{README_END} {README_BEGIN}"), "t").is_err());
    }

    /// A producer/consumer row whose segpool and channel cells have the given medians and
    /// whose paired differences are `paired`.
    fn pc_row(size: usize, segpool: f64, channel: f64, paired: &[f64]) -> Row {
        let cell = |name: &str, ns: f64| Cell {
            allocator: name.into(),
            median_ns: ns,
            runs_ns: vec![ns],
        };
        Row {
            pattern: Pattern::ProducerConsumer,
            size,
            cells: vec![cell("segpool", segpool), cell("channel", channel)],
            paired_over_channel_ns: paired.to_vec(),
            touched: false,
        }
    }

    fn pc_target_of(rows: &[Row]) -> Target {
        targets(rows, None)
            .into_iter()
            .find(|t| t.target.starts_with("producer/consumer"))
            .expect("the producer/consumer target is always checked")
    }

    #[test]
    fn the_large_target_compares_with_the_fastest_peer_and_fails_on_a_gap() {
        let row = |pattern, size, touched, segpool: f64| Row {
            pattern,
            size,
            cells: [
                ("segpool", segpool),
                ("lgalloc", 100.0),
                ("mimalloc", 90.0),
                ("jemalloc", 200.0),
            ]
            .iter()
            .map(|&(n, ns)| Cell {
                allocator: n.into(),
                median_ns: ns,
                runs_ns: vec![ns],
            })
            .collect(),
            paired_over_channel_ns: Vec::new(),
            touched,
        };
        let all = |segpool: f64| {
            let mut rows = Vec::new();
            for touched in [false, true] {
                for p in [Pattern::OneThread, Pattern::TwoThreads] {
                    for s in LARGE_SIZES {
                        rows.push(row(p, s, touched, segpool));
                    }
                }
            }
            rows
        };
        let of = |rows: &[Row]| large_targets(rows).remove(0);
        assert!(of(&all(90.0)).holds);
        assert!(of(&all(94.0)).holds, "within the tolerance");
        let t = of(&all(99.0));
        assert!(!t.holds, "slower than mimalloc, the fastest: {}", t.detail);
        let mut gap = all(50.0);
        gap.pop();
        assert!(!of(&gap).holds);
    }

    #[test]
    fn a_missing_cell_fails_its_target_instead_of_being_skipped() {
        let one = |size: usize, segpool: Option<f64>| {
            let mut cells = vec![Cell {
                allocator: "floor".into(),
                median_ns: 3.0,
                runs_ns: vec![3.0],
            }];
            if let Some(ns) = segpool {
                cells.push(Cell {
                    allocator: "segpool".into(),
                    median_ns: ns,
                    runs_ns: vec![ns],
                });
            }
            Row {
                pattern: Pattern::OneThread,
                size,
                cells,
                paired_over_channel_ns: Vec::new(),
                touched: false,
            }
        };
        let of = |rows: &[Row]| {
            targets(rows, None)
                .into_iter()
                .find(|t| t.target.starts_with("1 thread, every class: <= 12 ns"))
                .expect("the 1-thread target is always checked")
        };
        let full: Vec<Row> = CLASSES.iter().map(|&s| one(s, Some(5.0))).collect();
        assert!(of(&full).holds);
        for gap in 0..CLASSES.len() {
            let rows: Vec<Row> = CLASSES
                .iter()
                .enumerate()
                .map(|(i, &s)| one(s, (i != gap).then_some(5.0)))
                .collect();
            let t = of(&rows);
            assert!(!t.holds, "missing cell {gap} was skipped: {}", t.detail);
        }
    }

    #[test]
    fn producer_consumer_target_is_judged_on_paired_differences() {
        // The medians are 60 ns apart at every class (the old comparison misses), but the
        // paired differences have a median of 25 ns, or exactly the 30 ns bar at 1 MiB.
        let mut rows: Vec<Row> = CLASSES
            .iter()
            .map(|&s| pc_row(s, 200.0, 140.0, &[-40.0, 25.0, 10.0, 90.0, 28.0]))
            .collect();
        rows[4].paired_over_channel_ns = vec![30.0, 500.0, -500.0, 29.0, 31.0];
        let t = pc_target_of(&rows);
        assert!(t.holds, "{}", t.detail);
        assert!(
            t.detail
                .starts_with("median of 5 paired differences: +30.0 ns at 1 MiB"),
            "{}",
            t.detail
        );
        assert!(
            t.detail.contains("(difference of medians: +60.0 ns)"),
            "{}",
            t.detail
        );

        // One class over the bar by the paired median fails the target, even where the medians
        // are close.
        rows[3] = pc_row(256 << 10, 150.0, 140.0, &[31.0, 29.0, 45.0, 33.0]);
        let t = pc_target_of(&rows);
        assert!(!t.holds, "{}", t.detail);
        assert!(
            t.detail
                .starts_with("median of 4 paired differences: +32.0 ns at 256 KiB"),
            "{}",
            t.detail
        );
        assert!(
            t.detail.contains("256 KiB +32.0 ns / +10.0 ns"),
            "{}",
            t.detail
        );
    }

    #[test]
    fn producer_consumer_target_fails_without_paired_differences() {
        let mut rows: Vec<Row> = CLASSES
            .iter()
            .map(|&s| pc_row(s, 100.0, 100.0, &[0.0]))
            .collect();
        assert!(pc_target_of(&rows).holds);
        rows[0].paired_over_channel_ns.clear();
        let t = pc_target_of(&rows);
        assert!(!t.holds, "{}", t.detail);
        assert!(
            t.detail.starts_with("no paired differences at 4 KiB"),
            "{}",
            t.detail
        );
        rows.remove(0);
        assert!(!pc_target_of(&rows).holds);
    }

    #[test]
    fn producer_consumer_rows_pair_segpool_with_the_channel() {
        let rows = measure(2, Duration::from_millis(2)).unwrap();
        for row in &rows {
            let cells = |name: &str| {
                &row.cells
                    .iter()
                    .find(|c| c.allocator == name)
                    .unwrap()
                    .runs_ns
            };
            if row.pattern != Pattern::ProducerConsumer {
                assert!(row.paired_over_channel_ns.is_empty());
                assert_eq!(cells("segpool").len(), 2);
                continue;
            }
            let (sp, ch) = (cells("segpool"), cells("channel"));
            assert_eq!(sp.len(), 2 * PC_PAIRS as usize);
            assert_eq!(ch.len(), 2 * PC_PAIRS as usize);
            assert_eq!(cells("glibc").len(), 2);
            let expected: Vec<f64> = sp.iter().zip(ch).map(|(s, c)| s - c).collect();
            assert_eq!(row.paired_over_channel_ns, expected);
        }
    }
}
