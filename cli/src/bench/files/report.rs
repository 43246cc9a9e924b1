//! The file section's claims, its table (text and Markdown), and its section of
//! docs/benchmarks.md.

use std::fmt::Write as _;

use super::{FileReport, Op, Row, COLUMNS, MIB};
use crate::bench::claim::{claim_lines_md, Claim};
use crate::bench::table::{ns_text, Align, Table};

/// The file layer's claims: faster than pread for small random reads, as fast as read() for
/// sequential ones, and every row within 10% of the raw copy.
pub(super) fn claims(rows: &[Row]) -> Vec<Claim> {
    let nan = f64::NAN;
    let row = |op: Op| rows.iter().find(|r| r.op == op);
    let ns = |op: Op, c: &str| row(op).and_then(|r| r.ns(c)).unwrap_or(nan);
    let mut out = Vec::new();
    for (op, want) in [(Op::Random64Read, 10.0), (Op::Random4kRead, 1.5)] {
        let (sp, pr) = (ns(op, "segpool"), ns(op, "pread/pwrite"));
        out.push(Claim {
            claim: format!("{}: at least {want}x faster than pread", op.label()),
            holds: pr / sp >= want,
            detail: format!(
                "pread {} / segpool {} = {:.2}x",
                ns_text(pr),
                ns_text(sp),
                pr / sp
            ),
        });
    }
    let (sp, rd) = (
        ns(Op::Sequential1mRead, "segpool"),
        ns(Op::Sequential1mRead, "read()"),
    );
    out.push(Claim {
        claim: "sequential 1 MiB read: at least as fast as read()".into(),
        holds: sp <= rd,
        detail: format!(
            "segpool {} ({}) vs read() {} ({})",
            ns_text(sp),
            gbps(MIB, sp),
            ns_text(rd),
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
    out.push(Claim {
        claim: "every row: within 10% of the raw memmap2 copy".into(),
        holds: x <= 1.10,
        detail: format!("worst segpool/memmap2 {x:.2}x ({})", op.label()),
    });
    out
}

fn gbps(block: usize, ns: f64) -> String {
    format!("{:.1} GB/s", block as f64 / ns)
}

impl Row {
    /// The row's cells: segpool's time, pread's and read()'s with their ratio to segpool's, and
    /// memmap2's with segpool's ratio to it.
    fn cell_texts(&self) -> Vec<String> {
        let sp = self.ns("segpool");
        COLUMNS
            .iter()
            .map(|&c| match (self.ns(c), sp) {
                (None, _) => String::new(),
                (Some(ns), _) if c == "segpool" => ns_text(ns),
                (Some(ns), Some(sp)) if c == "memmap2" => {
                    format!("{} (segpool/memmap2 {:.2}x)", ns_text(ns), sp / ns)
                }
                (Some(ns), Some(sp)) => format!("{} ({:.2}x)", ns_text(ns), ns / sp),
                (Some(ns), None) => ns_text(ns),
            })
            .collect()
    }

    /// "segpool 20.2 GB/s, pread/pwrite 19.1 GB/s, ...": the sequential row only (empty for
    /// the others).
    fn throughput(&self) -> String {
        if self.op != Op::Sequential1mRead {
            return String::new();
        }
        COLUMNS
            .iter()
            .filter_map(|&c| self.ns(c).map(|ns| format!("{c} {}", gbps(self.block, ns))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl FileReport {
    fn table(&self) -> Table {
        let widths = [10, 16, 16, 30];
        let mut t = Table::new(
            [("operation", 22, Align::Left)].into_iter().chain(
                COLUMNS
                    .iter()
                    .zip(widths)
                    .map(|(&c, w)| (c, w, Align::Right)),
            ),
        );
        for row in &self.rows {
            let mut cols = vec![row.op.label().to_string()];
            cols.extend(row.cell_texts());
            t.push(cols);
        }
        t
    }

    /// The lines under the table: the throughput of the sequential row.
    fn throughputs(&self) -> impl Iterator<Item = String> + '_ {
        self.rows.iter().filter_map(|row| {
            let t = row.throughput();
            (!t.is_empty()).then(|| format!("{}: {t}", row.op.label()))
        })
    }

    /// The section as the terminal shows it: the table, the throughput, the page-cache row.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ns per operation on a {} file in the page cache ({}), median of {} runs; \
             pread/read() (x/segpool), memmap2 (segpool/memmap2)",
            crate::bytes_text(self.file_len as usize),
            self.filesystem,
            self.runs
        );
        out.push_str(&self.table().text());
        for line in self.throughputs() {
            let _ = writeln!(out, "{line}");
        }
        if let Some(p) = &self.page_cache {
            out.push_str(&p.table());
        }
        out
    }

    /// The table, the throughput and the page-cache row as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = self.table().markdown();
        for line in self.throughputs() {
            let _ = writeln!(out, "\n{line}.");
        }
        if let Some(p) = &self.page_cache {
            let _ = write!(out, "\n{}", p.table());
        }
        out
    }

    /// The file section of docs/benchmarks.md.
    pub fn docs_section(&self, command: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## File I/O\n");
        let _ = writeln!(
            out,
            "ns per operation (lower is better) on a {} file in the page cache ({}), median of {} \
             runs of {} ms per cell, measured by the same command in the same run ({:.1} s for this \
             section). In parentheses: pread/pwrite's and read()'s time divided by segpool's (above \
             1: segpool is faster), and segpool's time divided by memmap2's (above 1: segpool is \
             slower than the raw copy). A shared 2-core VM: compare ratios within one run.\n",
            crate::bytes_text(self.file_len as usize),
            self.filesystem,
            self.runs,
            self.run_ms,
            self.seconds
        );
        let _ = writeln!(out, "```sh\n{command}\n```\n");
        let _ = writeln!(out, "### Columns\n");
        let _ = writeln!(out, "- **segpool**: `MappedFile::read_at`/`write_at` of a file opened by `MmapFs` with `MapMode::ReadWrite`, `SyncMode::Never`, no window (the whole file mapped), every access under the SIGBUS fault guard.");
        let _ = writeln!(out, "- **pread/pwrite**: `std::fs::File` with `std::os::unix::fs::FileExt::read_at`/`write_at`.");
        let _ = writeln!(out, "- **read()**: `std::io::Read::read` on a second `std::fs::File`, 1 MiB at a time, sequentially (sequential row only).");
        let _ = writeln!(out, "- **memmap2**: `ptr::copy_nonoverlapping` from/to a `memmap2::MmapMut` of the same file: the copy alone, no checks, no guard.\n");
        let _ = writeln!(out, "- **page cache** (below the table): a cache of 4 KiB segments from a pool with a budget smaller than the file, filled on misses (allocate, read the page; the oldest page is dropped at the budget) through `MappedFile::read_exact_at` (mmap mode, `Advice::Random`) or `DirectFile::read_at` (`O_DIRECT`, direct mode), from a cold start (the file written back and dropped from the page cache before each mode). Memory: the pool's peak mapped bytes plus the file's pages left in the kernel's page cache (`mincore`).\n");
        let _ = writeln!(out, "The file is written, then read once through each of the three (page cache and both mappings' page tables warm). Random offsets come from a fixed-seed xorshift64*, aligned to the block size; every contender gets the same offsets in the same order within a run; the sequential row reads 1 MiB after 1 MiB and wraps at the end. Every buffer is page-aligned. The contenders of a row take turns going first from one run to the next.\n");
        let _ = writeln!(out, "What the fault guard alone costs (a warm 64-byte `read_at`, with the guard and without it) is not measured here: the criterion bench `benches/fault_guard.rs` measures it.\n");
        let _ = writeln!(out, "### Table\n");
        out.push_str(&self.markdown());
        let _ = writeln!(out, "\n### Claims, and what this run measured\n");
        out.push_str(&claim_lines_md(&self.claims));
        out
    }
}
