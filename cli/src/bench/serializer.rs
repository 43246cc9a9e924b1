//! The serializer rows of `segpool bench`: the workload of `benches/workloads/serializer.rs`
//! (serializer threads fill buffers with records of 96 to 607 bytes, one writer thread checksums
//! and releases each full buffer), in records per second, with the buffers from segpool and from
//! its peers, at 1 and 2 serializer threads: 64 KiB buffers against `Vec<u8>` from glibc, and
//! 4 MiB blocks against lgalloc and `Vec<u8>`.
//!
//! Every run times each row's contenders back to back, the first contender rotating from run to
//! run; a cell is the median of its runs. Before the first run every contender runs the workload
//! once untimed, so each allocator starts with its memory mapped and faulted in, as it would be
//! in a server that has been running.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::claim::Claim;
use super::table::{num, size_text, Align, Cells, Table};
use crate::peers::{self, Allocator};
use crate::Error;

#[path = "../../../benches/workloads/serializer.rs"]
mod workload;

use workload::{pipeline, Buffer};
pub use workload::{IN_FLIGHT, RECORDS};

/// The rows: (buffer bytes, serializer threads, contenders).
const ROWS: [(usize, u64, &[&str]); 4] = [
    (64 << 10, 1, &["segpool", "vec"]),
    (64 << 10, 2, &["segpool", "vec"]),
    (4 << 20, 1, &["segpool", "lgalloc", "vec"]),
    (4 << 20, 2, &["segpool", "lgalloc", "vec"]),
];

/// One row: the buffer size, the threads, and each contender's ns per record (the tables show
/// records per second).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SerializerRow {
    pub buffer_bytes: usize,
    pub threads: u64,
    /// ns per record of each contender, per run.
    pub cells: Cells,
}

/// A buffer from one of the C or Rust peers of the allocator section, released on drop.
struct PeerBuffer<'a, A: Allocator> {
    alloc: &'a A,
    buf: Option<A::Buf>,
    addr: usize,
    len: usize,
}

impl<'a, A: Allocator> PeerBuffer<'a, A> {
    fn new(alloc: &'a A, len: usize) -> Self {
        let buf = alloc
            .alloc(len)
            .unwrap_or_else(|e| panic!("serializer buffer: {e}"));
        let addr = A::addr(&buf);
        PeerBuffer {
            alloc,
            buf: Some(buf),
            addr,
            len,
        }
    }
}

impl<A: Allocator> Drop for PeerBuffer<'_, A> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.alloc.release(buf, self.len);
        }
    }
}

impl<A: Allocator> Buffer for PeerBuffer<'_, A> {
    fn append(&mut self, mut used: usize, parts: &[&[u8]]) {
        for p in parts {
            assert!(used + p.len() <= self.len, "a record past the buffer's end");
            // SAFETY: `addr..addr + len` is the allocation this buffer owns alone (`alloc`
            // handed it out and it is released only on drop); the range written is inside it
            // (asserted), and `p` is a shared slice that cannot overlap an allocation owned here.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), (self.addr + used) as *mut u8, p.len())
            };
            used += p.len();
        }
    }
    fn bytes(&self, used: usize) -> &[u8] {
        assert!(used <= self.len);
        // SAFETY: the first `used` bytes of the owned allocation were written by `append`; the
        // slice borrows `self`, so the allocation outlives it.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, used) }
    }
}

/// Times one pipeline of `threads` serializers with `name`'s buffers; ns per record.
fn time_one(
    name: &str,
    pool: &segpool::SegmentPool,
    lgalloc: &peers::Lgalloc,
    capacity: usize,
    threads: u64,
) -> f64 {
    let t0 = Instant::now();
    let sum = match name {
        "segpool" => pipeline(threads, capacity, &|| {
            pool.allocate(capacity).expect("segpool allocate")
        }),
        "lgalloc" => pipeline(threads, capacity, &|| PeerBuffer::new(lgalloc, capacity)),
        "vec" => pipeline(threads, capacity, &|| Vec::<u8>::with_capacity(capacity)),
        other => unreachable!("no serializer contender {other}"),
    };
    black_box(sum);
    t0.elapsed().as_nanos() as f64 / RECORDS as f64
}

/// How many times `--run-ms` each cell is timed for: one pipeline takes 15 to 30 ms, and a cell
/// of one or two pipelines swings with every thread wake-up on a shared machine.
pub const CELL_RUN_MS_FACTOR: u32 = 5;

/// Measures the rows: `runs` runs, each timing every contender of every row for about
/// `per_cell` (whole pipelines, at least one).
pub fn measure(runs: u32, per_cell: Duration) -> Result<Vec<SerializerRow>, Error> {
    let pool = segpool::SegmentPool::new()?;
    let lgalloc = peers::lgalloc();
    let mut rows: Vec<SerializerRow> = ROWS
        .iter()
        .map(|&(buffer_bytes, threads, _)| SerializerRow {
            buffer_bytes,
            threads,
            cells: Cells::default(),
        })
        .collect();
    for &(capacity, threads, names) in &ROWS {
        for name in names {
            time_one(name, &pool, &lgalloc, capacity, threads);
        }
    }
    for run in 0..runs {
        eprint!("\rserializer: run {}/{runs}", run + 1);
        for (row, &(capacity, threads, names)) in rows.iter_mut().zip(&ROWS) {
            for k in 0..names.len() {
                let name = names[(k + run as usize) % names.len()];
                let start = Instant::now();
                let (mut total, mut n) = (0.0, 0u32);
                while n == 0 || start.elapsed() < per_cell {
                    total += time_one(name, &pool, &lgalloc, capacity, threads);
                    n += 1;
                }
                row.cells.record(name, total / f64::from(n));
            }
        }
    }
    eprintln!();
    for row in &mut rows {
        row.cells.settle();
    }
    Ok(rows)
}

fn records_per_s(ns_per_record: f64) -> f64 {
    1e9 / ns_per_record
}

/// "M records/s" with two decimals.
fn mrec(ns_per_record: f64) -> String {
    format!("{:.2} M/s", records_per_s(ns_per_record) / 1e6)
}

/// The claims: with 64 KiB buffers segpool serializes at least as many records per second as
/// `Vec<u8>`, and with 4 MiB blocks at least as many as lgalloc, at 1 and 2 threads.
pub fn claims(rows: &[SerializerRow]) -> Vec<Claim> {
    let judge = |buffer: usize, peer: &str, claim: String| {
        let mut holds = true;
        let mut detail = Vec::new();
        let mut measured = false;
        for r in rows.iter().filter(|r| r.buffer_bytes == buffer) {
            if let (Some(s), Some(p)) = (r.cells.ns("segpool"), r.cells.ns(peer)) {
                measured = true;
                holds &= s <= p;
                detail.push(format!(
                    "{} thread{}: {} against {} ({:.2}x)",
                    r.threads,
                    if r.threads == 1 { "" } else { "s" },
                    mrec(s),
                    mrec(p),
                    p / s
                ));
            }
        }
        Claim {
            claim,
            holds: holds && measured,
            detail: if measured {
                detail.join(", ")
            } else {
                "not measured".into()
            },
        }
    };
    vec![
        judge(
            64 << 10,
            "vec",
            "serializer, 64 KiB buffers: segpool's records/s at least Vec<u8>'s (glibc), 1 and 2 threads"
                .into(),
        ),
        judge(
            4 << 20,
            "lgalloc",
            "serializer, 4 MiB blocks: segpool's records/s at least lgalloc's, 1 and 2 threads"
                .into(),
        ),
    ]
}

/// The rows as a table of millions of records per second, one column per contender.
pub fn table(rows: &[SerializerRow]) -> Table {
    let names = ["segpool", "lgalloc", "vec"];
    let mut t = Table::new(
        [
            ("buffer".to_string(), 7, Align::Left),
            ("threads".to_string(), 7, Align::Right),
        ]
        .into_iter()
        .chain(names.iter().map(|n| {
            let head = if *n == "vec" { "Vec<u8> (glibc)" } else { n };
            (head.to_string(), 16, Align::Right)
        })),
    );
    for r in rows {
        let mut line = vec![size_text(r.buffer_bytes), r.threads.to_string()];
        for n in names {
            line.push(
                r.cells
                    .ns(n)
                    .map_or("-".into(), |ns| num(records_per_s(ns) / 1e6)),
            );
        }
        t.push(line);
    }
    t
}

/// The rows as the terminal shows them.
pub fn text(rows: &[SerializerRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "serializer: {RECORDS} records of 96..607 bytes per pipeline, serializer threads fill \
         buffers, one writer checksums and releases them\n  millions of records per second, \
         median (higher is better)"
    );
    out.push_str(&table(rows).text());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(buffer_bytes: usize, threads: u64, cells: &[(&str, f64)]) -> SerializerRow {
        let mut c = Cells::default();
        for (name, ns) in cells {
            c.record(name, *ns);
        }
        c.settle();
        SerializerRow {
            buffer_bytes,
            threads,
            cells: c,
        }
    }

    /// A claim holds only when segpool is at least as fast as the peer in every row of its
    /// buffer size, and a claim with nothing measured does not hold.
    #[test]
    fn claims_compare_every_row_of_their_buffer_size() {
        let rows = [
            row(64 << 10, 1, &[("segpool", 100.0), ("vec", 100.0)]),
            row(64 << 10, 2, &[("segpool", 90.0), ("vec", 110.0)]),
            row(4 << 20, 1, &[("segpool", 80.0), ("lgalloc", 79.0)]),
        ];
        let c = claims(&rows);
        assert!(c[0].holds, "{}", c[0].text());
        assert!(
            c[0].detail.contains("10.00 M/s against 10.00 M/s (1.00x)"),
            "{}",
            c[0].detail
        );
        assert!(!c[1].holds, "{}", c[1].text());
        let c = claims(&rows[..2]);
        assert!(!c[1].holds);
        assert_eq!(c[1].detail, "not measured");
    }

    /// The shared workload writes the same bytes whatever the buffers: the checksum agrees.
    #[test]
    fn every_buffer_kind_serializes_the_same_bytes() {
        let pool = segpool::SegmentPool::new().unwrap();
        let lg = peers::lgalloc();
        // lgalloc's smallest class is 2 MiB.
        let cap = 4 << 20;
        let a = pipeline(1, cap, &|| pool.allocate(cap).unwrap());
        let b = pipeline(1, cap, &|| Vec::<u8>::with_capacity(cap));
        let c = pipeline(1, cap, &|| PeerBuffer::new(&lg, cap));
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, 0);
    }
}
