//! `segpool demo`: the main job, a parallel serializer.
//!
//! Worker threads take record numbers from a shared counter, generate each record (deterministic
//! from the seed and its number), and serialize it into a 64 KiB segment from the pool. A full
//! segment goes through a bounded channel to the writer thread, which appends it to a file through
//! `segpool::fs` (a `MappedFile` write) and drops it, giving the slice back to the pool. The pool
//! has a budget: when every segment it may map is in flight, workers wait in `allocate_timeout`
//! until the writer releases one (backpressure, not failure). At the end the file is opened again,
//! read back block by block (into pool segments, by several threads), and every record is decoded
//! and compared with a freshly generated one; each record number must appear exactly once.
//!
//! File format: blocks back to back; each block is a 16-byte header (`SPB1`, bytes used including
//! the header, record count, worker number; little-endian u32s) then the records (see
//! [`Record::encode`]).
//!
//! `record` generates, encodes and decodes the records; `serialize` is the write side (the
//! workers and the writer), `verify` the read side.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use segpool::fs::{MapConfig, MapMode, MmapFs};
use segpool::SegmentPool;

use crate::{bytes_text, parse_seed, parse_size, parse_threads, Error};
use serialize::serialize;
use verify::verify;

mod record;
mod serialize;
mod verify;

/// The segment size: the one size class of the demo's pool.
pub const SEGMENT: usize = 64 << 10;
const HEADER: usize = 16;
const MAGIC: u32 = u32::from_le_bytes(*b"SPB1");
/// Record numbers a worker takes from the shared counter at a time.
const CHUNK: u64 = 64;
/// How long a worker waits for the writer to release a segment before it gives up.
const WAIT: Duration = Duration::from_secs(30);

/// Options of `segpool demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Serializer threads (the writer and the progress display are extra).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = parse_threads)]
    pub threads: usize,
    /// Records to serialize.
    #[arg(long, value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub records: u64,
    /// Memory budget of the pool (bytes, or a number with K, M, G or T: 64M, 1G...).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub budget: usize,
    /// Write the file here and keep it (default: a temporary file, removed at the end).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Seed of the record generator: decimal, or hex with 0x as the run prints it.
    #[arg(long, value_name = "SEED", default_value = "0x5e69001", value_parser = parse_seed)]
    pub seed: u64,
    /// Also write the pool's statistics at the end of the run to this file, as JSON (the
    /// `PoolStats` fields: counts, bytes, peaks, per-class numbers).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
}

/// What one run did.
#[derive(Debug)]
pub struct Outcome {
    pub records: u64,
    pub blocks: usize,
    pub bytes: u64,
    pub serialize: Duration,
    pub verify: Duration,
    pub peak_mapped: usize,
    pub waits: u64,
}

pub fn run(args: Args) -> Result<(), Error> {
    let min_budget = (args.threads + 1) * 2 * SEGMENT;
    if args.budget < min_budget {
        return Err(format!(
            "--budget {} is too small for {} threads: each holds a 64 KiB segment while it fills it; use at least {}",
            bytes_text(args.budget),
            args.threads,
            bytes_text(min_budget)
        )
        .into());
    }
    // Where the file goes: --out, or a temporary folder removed when `_tmp` drops.
    let (_tmp, dir, name) = match &args.out {
        Some(out) => {
            let name = out
                .file_name()
                .ok_or_else(|| format!("--out {}: not a file name", out.display()))?;
            let dir = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (None, dir, PathBuf::from(name))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("segpool-demo-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary folder: {e}"))?;
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir, PathBuf::from("demo.seg"))
        }
    };
    // Created now, so a path that cannot be written fails before the run, not after it.
    let stats_file = match &args.stats_json {
        Some(p) => Some(
            std::fs::File::create(p)
                .map_err(|e| format!("--stats-json {}: cannot create: {e}", p.display()))?,
        ),
        None => None,
    };
    let shown = args.out.clone().unwrap_or_else(|| dir.join(&name));
    // The reason alone, in the words of the OS: the file layer's own message names its root
    // folder, a word this command never uses.
    let why = |e: &std::io::Error| match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    };
    let cannot_write = |e: std::io::Error| {
        format!(
            "cannot write the output file {}: {}",
            shown.display(),
            why(&e)
        )
    };
    // The folder first, so that its absence is named as such.
    let folder_error = match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some("not a folder".to_string()),
        Err(e) => Some(why(&e)),
    };
    if let Some(reason) = folder_error {
        return Err(format!(
            "cannot write the output file {}: its folder {}: {reason}",
            shown.display(),
            dir.display()
        )
        .into());
    }
    let fs =
        MmapFs::new(&dir, MapConfig::default().mode(MapMode::ReadWrite)).map_err(cannot_write)?;
    let file = fs.create(&name).map_err(cannot_write)?;

    let pool = SegmentPool::builder()
        .size_classes(&[SEGMENT])
        .budget(args.budget)
        .build()?;

    println!(
        "segpool demo: {} records, {} serializer threads, budget {}, seed {:#x}",
        args.records,
        args.threads,
        bytes_text(args.budget),
        args.seed
    );
    let progress = progress_bar(args.records, "serialize");
    let written = serialize(&pool, &file, &args, &progress)?;
    progress.finish_and_clear();
    file.close().map_err(cannot_write)?;

    let file = MmapFs::new(&dir, MapConfig::default())
        .and_then(|fs| fs.open(&name))
        .map_err(|e| format!("cannot read back {}: {e}", shown.display()))?;
    let started = Instant::now();
    let progress = progress_bar(args.records, "verify");
    let verified = verify(&pool, &file, &args, &progress)?;
    progress.finish_and_clear();
    let verify_time = started.elapsed();
    drop(file);

    let stats = pool.stats();
    println!("pool after the run:\n{stats}");
    if let (Some(f), Some(p)) = (stats_file, &args.stats_json) {
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &stats)
            .map_err(|e| format!("--stats-json {}: cannot write: {e}", p.display()))?;
    }
    let o = Outcome {
        records: verified,
        blocks: written.blocks,
        bytes: written.bytes,
        serialize: written.elapsed,
        verify: verify_time,
        peak_mapped: stats.peak_mapped_bytes,
        waits: written.waits,
    };
    println!(
        "result: {} records in {} blocks, {} at {:.0} MB/s ({} threads); peak memory {} mapped of a {} budget ({} waits for a free segment); verified {}/{} records in {:.2} s{}",
        o.records,
        o.blocks,
        bytes_text(o.bytes as usize),
        o.bytes as f64 / 1e6 / o.serialize.as_secs_f64().max(1e-9),
        args.threads,
        bytes_text(o.peak_mapped),
        bytes_text(args.budget),
        o.waits,
        o.records,
        args.records,
        o.verify.as_secs_f64(),
        match &args.out {
            Some(p) => format!("; file kept at {}", p.display()),
            None => String::new(),
        }
    );
    if o.peak_mapped > args.budget {
        return Err(format!(
            "the pool mapped {} at its peak, over its budget of {}",
            o.peak_mapped, args.budget
        )
        .into());
    }
    Ok(())
}

fn progress_bar(records: u64, what: &str) -> ProgressBar {
    crate::progress_bar(
        records,
        &format!("{what:<10} {{bar:30.cyan/blue}} {{pos}}/{{len}} records  {{msg}}  [{{elapsed}}]"),
    )
}

/// "1.23 M records/s".
fn rate_text(done: u64, elapsed: Duration) -> String {
    let r = done as f64 / elapsed.as_secs_f64().max(1e-3);
    if r >= 1e6 {
        format!("{:.2} M records/s", r / 1e6)
    } else {
        format!("{:.0} k records/s", r / 1e3)
    }
}
