//! A parallel serializer in a page: the core of `segpool demo`.
//!
//! Worker threads serialize records into 64 KiB segments from a pool with a budget; full segments
//! go through a channel to a writer that appends them to a file through `segpool::fs` and drops
//! them (back to the pool). When every segment the budget allows is in flight, workers wait in
//! `allocate_timeout` for the writer to release one: memory stays bounded whatever the speed of
//! the disk. Then the file is read back and every record checked.
//!
//! ```sh
//! cargo run --release --example parallel_serializer
//! ```

use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use segpool::fs::{MapConfig, MapMode, MmapFs};
use segpool::{Segment, SegmentPool};

const SEGMENT: usize = 64 << 10;
/// Each record is framed as: length (u32), number (u64), bytes.
const FRAME: usize = 12;
const WAIT: Duration = Duration::from_secs(30);

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

pub struct Config {
    pub threads: usize,
    pub records: u64,
    pub budget: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: 4,
            records: 100_000,
            budget: 4 << 20,
        }
    }
}

pub struct Report {
    pub records: u64,
    pub bytes: u64,
    pub peak_mapped: usize,
}

/// Record `i`: 20 to 2019 bytes, every byte derived from `i`.
fn record(i: u64, out: &mut Vec<u8>) {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let len = 20 + (h >> 40) as usize % 2000;
    out.clear();
    out.extend((0..len).map(|k| (h >> (8 * (k % 8))) as u8 ^ k as u8));
}

/// Serializes `cfg.records` records into `dir/records.bin`, reads them back and checks them.
pub fn run(dir: &Path, cfg: &Config) -> Result<Report> {
    let pool = SegmentPool::builder()
        .size_classes(&[SEGMENT])
        .budget(cfg.budget)
        .build()?;
    let fs = MmapFs::new(dir, MapConfig::default().mode(MapMode::ReadWrite))?;
    let file = fs.create("records.bin")?;
    let next = AtomicU64::new(0);
    let (tx, rx) = sync_channel::<(Segment, usize)>(cfg.budget / SEGMENT);

    let mut bytes = 0u64;
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..cfg.threads)
            .map(|_| {
                let (tx, pool, next) = (tx.clone(), &pool, &next);
                s.spawn(move || -> Result<()> {
                    let (mut seg, mut used, mut rec) = (None::<Segment>, 0, Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= cfg.records {
                            break;
                        }
                        record(i, &mut rec);
                        if seg.is_none() || used + FRAME + rec.len() > SEGMENT {
                            // Hand the full segment over first, then wait for a fresh one:
                            // a worker never holds two while it waits.
                            if let Some(full) = seg.take() {
                                tx.send((full, used))?;
                            }
                            seg = Some(pool.allocate_timeout(SEGMENT, WAIT)?);
                            used = 0;
                        }
                        let out = &mut seg.as_mut().expect("allocated above")[used..];
                        out[..4].copy_from_slice(&(rec.len() as u32).to_le_bytes());
                        out[4..12].copy_from_slice(&i.to_le_bytes());
                        out[12..12 + rec.len()].copy_from_slice(&rec);
                        used += FRAME + rec.len();
                    }
                    if let Some(last) = seg {
                        tx.send((last, used))?;
                    }
                    Ok(())
                })
            })
            .collect();
        drop(tx);
        // The writer is this thread: append, then drop the segment (back to the pool).
        for (seg, used) in rx {
            file.write_all_at(&seg[..used], bytes)?;
            bytes += used as u64;
        }
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    file.close()?;

    // Read back: every record once, with the right bytes.
    let file = MmapFs::new(dir, MapConfig::default())?.open("records.bin")?;
    let mut seen = vec![false; cfg.records as usize];
    let (mut at, mut head, mut got, mut want) = (0u64, [0u8; FRAME], Vec::new(), Vec::new());
    while at < file.len() {
        file.read_exact_at(&mut head, at)?;
        let len = u32::from_le_bytes(head[..4].try_into()?) as usize;
        let i = u64::from_le_bytes(head[4..].try_into()?);
        if i >= cfg.records || len > SEGMENT {
            return Err(format!("corrupt frame at offset {at}").into());
        }
        got.resize(len, 0);
        file.read_exact_at(&mut got, at + FRAME as u64)?;
        record(i, &mut want);
        if got != want || std::mem::replace(&mut seen[i as usize], true) {
            return Err(format!("record {i} at offset {at} is wrong or repeated").into());
        }
        at += (FRAME + len) as u64;
    }
    if let Some(missing) = seen.iter().position(|&s| !s) {
        return Err(format!("record {missing} is missing").into());
    }
    Ok(Report {
        records: cfg.records,
        bytes,
        peak_mapped: pool.stats().peak_mapped_bytes,
    })
}

fn main() -> Result<()> {
    let cfg = Config::default();
    let dir = tempfile::tempdir()?;
    let t = std::time::Instant::now();
    let r = run(dir.path(), &cfg)?;
    println!(
        "{} records ({} bytes) serialized by {} threads, written, read back and verified in {:.2} s; \
         peak memory {} KiB mapped of a {} KiB budget",
        r.records,
        r.bytes,
        cfg.threads,
        t.elapsed().as_secs_f64(),
        r.peak_mapped >> 10,
        cfg.budget >> 10
    );
    assert!(r.peak_mapped <= cfg.budget);
    Ok(())
}
