//! Streams a file through io_uring fixed-buffer reads into pool segments, under a memory budget.
//!
//! * The pool's regions are the ring's fixed buffers (`segpool::uring::FixedBuffers`): each read
//!   is a `ReadFixed` into a segment, so the kernel does not pin and unpin the pages of every
//!   read; the pool registers a region when it maps it and clears its slot before it unmaps it.
//! * Up to `depth` reads are in flight, each into a segment of `chunk` bytes. The pool's budget
//!   bounds the memory: when the next segment would take the pool past it, the reader waits for
//!   a completion and hands that chunk on first (backpressure), so a budget smaller than
//!   `depth * chunk` limits the reads in flight instead of failing.
//! * Completions arrive in any order; chunks are handed on in file order (a consumer sees a
//!   stream). Here the consumer folds the bytes into a checksum; a real one would parse, hash
//!   or forward them. A read that comes back short is resubmitted for the rest.
//!
//! ```sh
//! cargo run --release --features io-uring --example uring_reader            # a generated file
//! cargo run --release --features io-uring --example uring_reader -- FILE    # any file
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{opcode, types, IoUring};
use segpool::uring::FixedBuffers;
use segpool::{Segment, SegmentPool};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

pub struct Config {
    /// Bytes per read (one segment each; a size class of the pool).
    pub chunk: usize,
    /// Reads in flight at most.
    pub depth: usize,
    /// The pool's budget in bytes.
    pub budget: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            chunk: 256 << 10,
            depth: 32,
            budget: 4 << 20,
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub bytes: u64,
    /// FNV-1a over the file's bytes, in order.
    pub checksum: u64,
    /// Reads submitted as `ReadFixed` (resubmissions of short reads included).
    pub fixed_reads: u64,
    /// Reads of segments without a fixed index (a region the table refused), as plain `Read`.
    pub plain_reads: u64,
    /// Times the budget made the reader wait for a completion before it could allocate.
    pub budget_waits: u64,
    /// The most reads in flight at once.
    pub peak_in_flight: usize,
    pub peak_mapped: usize,
}

/// FNV-1a, one byte at a time: the stand-in for whatever a consumer does with the bytes.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// One read in flight: the segment, where it reads from, and how much of it is filled.
struct Pending {
    seg: Segment,
    offset: u64,
    want: usize,
    filled: usize,
}

pub fn run(path: &Path, cfg: &Config) -> Result<Report> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let pool = SegmentPool::builder()
        .size_classes(&[cfg.chunk])
        .budget(cfg.budget)
        .build()?;
    let mut ring = IoUring::new(cfg.depth.next_power_of_two() as u32)?;
    // One slot per region the budget allows, and a few more.
    let slots = (cfg.budget / cfg.chunk + 8).min(1 << 14) as u32;
    let fixed = FixedBuffers::register(&pool, &ring, slots)?;

    let mut report = Report {
        checksum: FNV_START,
        ..Report::default()
    };
    let mut pending: Vec<Option<Pending>> = Vec::new();
    let mut in_flight = 0usize;
    let mut next_offset = 0u64;
    // Completed chunks waiting for the ones before them, by offset.
    let mut ready: BTreeMap<u64, (Segment, usize)> = BTreeMap::new();
    let mut delivered = 0u64;

    while delivered < len {
        // Submit while there is room in the ring, file left, and budget.
        while in_flight < cfg.depth && next_offset < len {
            let seg = match pool.allocate(cfg.chunk) {
                Ok(seg) => seg,
                Err(e)
                    if matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. })
                        && in_flight + ready.len() > 0 =>
                {
                    report.budget_waits += 1;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let want = (len - next_offset).min(cfg.chunk as u64) as usize;
            let slot = pending.iter().position(Option::is_none).unwrap_or_else(|| {
                pending.push(None);
                pending.len() - 1
            });
            pending[slot] = Some(Pending {
                seg,
                offset: next_offset,
                want,
                filled: 0,
            });
            submit(&mut ring, &fixed, &file, &mut pending, slot, &mut report)?;
            next_offset += want as u64;
            in_flight += 1;
            report.peak_in_flight = report.peak_in_flight.max(in_flight);
        }
        if in_flight > 0 {
            ring.submit_and_wait(1)?;
            let done: Vec<(usize, i32)> = ring
                .completion()
                .map(|c| (c.user_data() as usize, c.result()))
                .collect();
            for (slot, res) in done {
                if res < 0 {
                    return Err(std::io::Error::from_raw_os_error(-res).into());
                }
                let p = pending[slot]
                    .as_mut()
                    .expect("a completion for a read in flight");
                if res == 0 {
                    return Err(format!("the file ended at {} while reading", p.offset).into());
                }
                p.filled += res as usize;
                if p.filled < p.want {
                    // Short: read the rest into the same segment.
                    submit(&mut ring, &fixed, &file, &mut pending, slot, &mut report)?;
                    continue;
                }
                let p = pending[slot].take().expect("checked above");
                in_flight -= 1;
                ready.insert(p.offset, (p.seg, p.want));
            }
        }
        // Hand on every chunk whose predecessors are done; its segment goes back to the pool.
        while let Some(entry) = ready.first_entry() {
            if *entry.key() != delivered {
                break;
            }
            let (seg, n) = entry.remove();
            report.checksum = fnv1a(report.checksum, &seg[..n]);
            delivered += n as u64;
        }
    }
    report.bytes = delivered;
    report.peak_mapped = pool.stats().peak_mapped_bytes;
    Ok(report)
}

/// Submits the read of `pending[slot]` for the part of its segment not filled yet.
fn submit(
    ring: &mut IoUring,
    fixed: &FixedBuffers,
    file: &std::fs::File,
    pending: &mut [Option<Pending>],
    slot: usize,
    report: &mut Report,
) -> Result<()> {
    let p = pending[slot].as_mut().expect("a read to submit");
    let fd = types::Fd(file.as_raw_fd());
    let filled = p.filled;
    // SAFETY: `filled < want <= seg.len()`: the pointer stays inside the segment.
    let buf = unsafe { p.seg.as_mut_ptr().add(filled) };
    let n = (p.want - filled) as u32;
    let offset = p.offset + filled as u64;
    let sqe = match fixed.index_of(&p.seg) {
        Some(index) => {
            report.fixed_reads += 1;
            opcode::ReadFixed::new(fd, buf, n, index)
                .offset(offset)
                .build()
        }
        None => {
            report.plain_reads += 1;
            opcode::Read::new(fd, buf, n).offset(offset).build()
        }
    };
    let sqe = sqe.user_data(slot as u64);
    // SAFETY: the segment stays in `pending` (it is neither dropped nor touched) until this
    // read's completion is reaped, and the file outlives the ring's use of it.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| "submission queue full")?;
    Ok(())
}

fn main() -> Result<()> {
    let cfg = Config::default();
    let (path, _dir) = match std::env::args().nth(1) {
        Some(p) => (std::path::PathBuf::from(p), None),
        None => {
            let dir = tempfile::tempdir()?;
            let p = dir.path().join("stream.bin");
            let bytes: Vec<u8> = (0..64u64 << 20)
                .map(|i| (i * 31 + (i >> 12)) as u8)
                .collect();
            std::fs::write(&p, bytes)?;
            (p, Some(dir))
        }
    };
    let start = std::time::Instant::now();
    let r = run(&path, &cfg)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} MiB streamed in {} KiB reads, at most {} in flight, through a {} KiB budget: \
         {} fixed reads, {} plain, {} waits on the budget, peak {} KiB mapped; \
         checksum {:016x}; {:.0} MiB/s",
        r.bytes >> 20,
        cfg.chunk >> 10,
        r.peak_in_flight,
        cfg.budget >> 10,
        r.fixed_reads,
        r.plain_reads,
        r.budget_waits,
        r.peak_mapped >> 10,
        r.checksum,
        (r.bytes as f64 / (1 << 20) as f64) / secs
    );
    Ok(())
}
