//! The allocator section of `segpool bench`: ns per allocate+release pair for segpool and its
//! peers, side by side, in a main table of the small classes and a table of large sizes.
//!
//! Every cell of the table is measured in the same process, in the same run: for each run, every
//! (pattern, size, allocator) cell is timed once, the contenders of a row taking turns going
//! first, so machine noise spreads over all allocators alike; a cell's value is the median of its
//! runs. In the main table memory is never touched: the numbers are the cost of the bookkeeping,
//! not of page faults. The large section (2 MiB to 256 MiB, against lgalloc, mimalloc and
//! jemalloc) also has touched rows, one byte written per 4 KiB page, where an allocator that
//! hands out fresh pages pays their faults.
//!
//! The producer/consumer rows are the exception: there the claim is segpool's cost over the
//! bare channel, and the channel alone swings by about a third from one cell to the next (thread
//! scheduling on two cores, futex parking where the channel is shallow), so the difference of two
//! medians measured apart is mostly noise. Instead segpool and the channel are timed back to back
//! in `PC_PAIRS` pairs of half-length cells per run, and the claim is judged on the median of
//! the per-pair differences: whatever slows the machine for a moment slows both halves of a pair.
//!
//! `measure` times the cells, `claims` judges them; the tables are drawn here.

use serde::{Deserialize, Serialize};

use super::table::{num, size_text, Align, Cells, Table};

mod claims;
mod measure;

pub use claims::{claims, large_claims};
pub use measure::{count_above_largest, measure, measure_large, CallsPerPair};

/// Capacity of the channel in the producer/consumer pattern: deep enough that the two threads
/// rarely park (a shallow channel measures futex wake-ups, not allocators), but at most
/// `IN_FLIGHT_BYTES` of buffers in flight.
/// Above 1 MiB (the large section) the channel holds at most 256 MiB of buffers, and at least 4.
pub fn channel_bound(size: usize) -> usize {
    if size > 1 << 20 {
        (LARGE_IN_FLIGHT_BYTES / size).clamp(4, 64)
    } else {
        (IN_FLIGHT_BYTES / size).clamp(64, 1024)
    }
}
const IN_FLIGHT_BYTES: usize = 64 << 20;
pub const LARGE_IN_FLIGHT_BYTES: usize = 256 << 20;
pub const CHANNEL_BOUND_TEXT: &str =
    "min(1024, max(64, 64 MiB / size)); above 1 MiB min(64, max(4, 256 MiB / size))";
/// The small classes the main table measures; the benchmark also asks for one size above the
/// largest class of the default pool (1 GiB).
pub const CLASSES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
pub const ABOVE_LARGEST: usize = 2 << 30;
/// The large section: sizes of large classes, in 1 and 2 threads, untouched and touched.
const LARGE_SIZES: [usize; 4] = [2 << 20, 8 << 20, 64 << 20, 256 << 20];
/// The large sizes of the producer/consumer rows (untouched).
const LARGE_PC_SIZES: [usize; 3] = [2 << 20, 8 << 20, 64 << 20];

/// How much slower than the fastest peer a large row may be and still meet its claim: the
/// touched rows are the cost of the page writes for every allocator that reuses its memory, and
/// two such cells differ by a few percent from run to run.
const LARGE_TOLERANCE: f64 = 0.05;
/// Back-to-back (segpool, channel) pairs per run in each producer/consumer row; each of the two
/// cells of a pair is timed for half of `--run-ms`, so a row's run takes `PC_PAIRS` run lengths
/// for the two of them.
pub const PC_PAIRS: u32 = 4;
/// What the producer/consumer claim allows segpool over the channel, in ns per pair.
pub const PC_OVER_CHANNEL_NS: f64 = 30.0;

/// Column order of the main table.
pub const COLUMNS: [&str; 7] = [
    "segpool", "floor", "glibc", "mimalloc", "jemalloc", "mmap", "channel",
];
/// Column order of the large section.
const LARGE_COLUMNS: [&str; 5] = ["segpool", "lgalloc", "mimalloc", "jemalloc", "channel"];

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

/// One (pattern, size) row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub pattern: Pattern,
    pub size: usize,
    /// One cell per allocator. Segpool and the channel in a producer/consumer row have
    /// `PC_PAIRS` half-length cells per run, every other cell one.
    pub cells: Cells,
    /// Producer/consumer rows only: segpool minus channel, in ns per pair, for every pair of
    /// cells timed back to back, in order (`PC_PAIRS` per run). The claim is judged on their
    /// median.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paired_over_channel_ns: Vec<f64>,
    /// One byte written per 4 KiB page of every buffer between allocate and release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub touched: bool,
}

impl Row {
    fn new(pattern: Pattern, size: usize, touched: bool) -> Row {
        Row {
            pattern,
            size,
            cells: Cells::default(),
            paired_over_channel_ns: Vec::new(),
            touched,
        }
    }

    pub fn ns(&self, allocator: &str) -> Option<f64> {
        self.cells.ns(allocator)
    }

    /// "value (ratio to segpool)" for a peer, plain value for segpool; empty when not measured.
    fn cell_text(&self, name: &str) -> String {
        let Some(ns) = self.ns(name) else {
            return String::new();
        };
        if name == "segpool" {
            return num(ns);
        }
        match self.ns("segpool") {
            Some(sp) if sp > 0.0 => format!("{} ({:.2}x)", num(ns), ns / sp),
            _ => num(ns),
        }
    }

    /// The row label of the large section: the pattern, and whether pages were touched.
    fn large_label(&self) -> String {
        if self.touched {
            format!("{}, touched", self.pattern.label())
        } else {
            self.pattern.label().to_string()
        }
    }
}

/// The main table: a row per (pattern, size), a column per allocator.
pub fn table(rows: &[Row]) -> Table {
    // segpool's values have no ratio beside them: a narrower column.
    let widths = [9, 15, 15, 15, 15, 15, 15];
    let mut t = Table::new(
        [("pattern", 20, Align::Left), ("size", 8, Align::Left)]
            .into_iter()
            .chain(
                COLUMNS
                    .iter()
                    .zip(widths)
                    .map(|(&c, w)| (c, w, Align::Right)),
            ),
    );
    for row in rows {
        let mut cols = vec![row.pattern.label().to_string(), size_text(row.size)];
        cols.extend(COLUMNS.iter().map(|c| row.cell_text(c)));
        t.push(cols);
    }
    t
}

/// The large section's table: touched rows labelled as such.
pub fn large_table(rows: &[Row]) -> Table {
    let mut t = Table::new(
        [("pattern", 32, Align::Left), ("size", 9, Align::Left)]
            .into_iter()
            .chain(LARGE_COLUMNS.iter().map(|&c| (c, 20, Align::Right))),
    );
    for row in rows {
        let mut cols = vec![row.large_label(), size_text(row.size)];
        cols.extend(LARGE_COLUMNS.iter().map(|c| row.cell_text(c)));
        t.push(cols);
    }
    t
}

/// Both tables as the terminal shows them, each under a line saying what it holds (cells are
/// medians of `runs` runs).
pub fn text(runs: u32, rows: &[Row], large_rows: &[Row]) -> String {
    format!(
        "ns per allocate+release pair, median of {} runs (peer (peer/segpool)); memory untouched\n\
         {}\n\
         large sizes: ns per allocate+release pair, median of {} runs (peer (peer/segpool)); \
         touched: one byte written per 4 KiB page\n{}",
        runs,
        table(rows).text(),
        runs,
        large_table(large_rows).text()
    )
}
