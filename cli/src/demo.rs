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

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs};
use segpool::{Segment, SegmentPool};

use crate::{bytes_text, parse_seed, parse_size, parse_threads, Error};

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
    let fs = MmapFs::new(
        &dir,
        MapConfig {
            mode: MapMode::ReadWrite,
            ..MapConfig::default()
        },
    )
    .map_err(cannot_write)?;
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
    let target = if std::io::stdout().is_terminal() {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(records), target);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what:<10} {{bar:30.cyan/blue}} {{pos}}/{{len}} records  {{msg}}  [{{elapsed}}]"
        ))
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    pb
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

struct Written {
    blocks: usize,
    bytes: u64,
    elapsed: Duration,
    waits: u64,
}

/// Serializes every record into pooled segments and appends them to `file`.
fn serialize(
    pool: &SegmentPool,
    file: &MappedFile,
    args: &Args,
    progress: &ProgressBar,
) -> Result<Written, Error> {
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let done_records = AtomicU64::new(0);
    let waits = AtomicU64::new(0);
    let blocks = AtomicUsize::new(0);
    // Deep enough that the budget, not the channel, is what holds workers back.
    let (tx, rx) = sync_channel::<(Segment, usize)>(args.budget / SEGMENT + 1);
    let started = Instant::now();
    let main = std::thread::current();
    let (worker_results, writer_result) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.threads)
            .map(|w| {
                let tx = tx.clone();
                let (next, stop, waits) = (&next, &stop, &waits);
                s.spawn(move || {
                    let r = worker(pool, w as u32, args, next, stop, waits, |seg, used| {
                        tx.send((seg, used))
                            .map_err(|_| Error::from("the writer stopped"))
                    });
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        drop(tx);
        let writer = {
            let (stop, done_records, blocks, main) = (&stop, &done_records, &blocks, main.clone());
            s.spawn(move || {
                let mut offset = 0u64;
                let r = (|| -> Result<u64, Error> {
                    for (seg, used) in rx {
                        file.write_all_at(&seg[..used], offset)?;
                        offset += used as u64;
                        let count = u32::from_le_bytes(seg[8..12].try_into().expect("4 bytes"));
                        drop(seg);
                        done_records.fetch_add(u64::from(count), Ordering::Relaxed);
                        blocks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(offset)
                })();
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                main.unpark();
                r
            })
        };
        // The progress display, on this thread, until the writer is done.
        while !writer.is_finished() {
            let st = pool.stats();
            let done = done_records.load(Ordering::Relaxed);
            progress.set_position(done);
            progress.set_message(format!(
                "{}  in use {} / budget {}",
                rate_text(done, started.elapsed()),
                bytes_text(st.in_use_bytes),
                bytes_text(args.budget)
            ));
            std::thread::park_timeout(Duration::from_millis(100));
        }
        let worker_results: Vec<_> = workers.into_iter().map(|h| h.join()).collect();
        (worker_results, writer.join())
    });
    let elapsed = started.elapsed();
    // The first real error: a worker's own failure beats "the writer stopped", which it causes.
    let bytes = match writer_result {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(format!("writing the file: {e}").into()),
        Err(_) => return Err("the writer thread panicked".into()),
    };
    for r in worker_results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a serializer thread panicked".into()),
        }
    }
    Ok(Written {
        blocks: blocks.into_inner(),
        bytes,
        elapsed,
        waits: waits.into_inner(),
    })
}

/// One serializer thread: takes record numbers in chunks, fills segments, hands full ones to
/// `emit` (the segment and the bytes used).
fn worker(
    pool: &SegmentPool,
    id: u32,
    args: &Args,
    next: &AtomicU64,
    stop: &AtomicBool,
    waits: &AtomicU64,
    mut emit: impl FnMut(Segment, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let take = || -> Result<Segment, Error> {
        match pool.allocate(SEGMENT) {
            Ok(s) => Ok(s),
            Err(segpool::Error::BudgetExceeded { .. }) => {
                // Backpressure: every segment the budget allows is in flight; wait for the writer.
                waits.fetch_add(1, Ordering::Relaxed);
                pool.allocate_timeout(SEGMENT, WAIT).map_err(|e| {
                    format!("no segment was released within {} s: {e}", WAIT.as_secs()).into()
                })
            }
            Err(e) => Err(e.into()),
        }
    };
    let mut seg = take()?;
    let mut used = HEADER;
    let mut count = 0u32;
    let mut finish = |mut seg: Segment, used: usize, count: u32| {
        seg[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        seg[4..8].copy_from_slice(&(used as u32).to_le_bytes());
        seg[8..12].copy_from_slice(&count.to_le_bytes());
        seg[12..16].copy_from_slice(&id.to_le_bytes());
        emit(seg, used)
    };
    loop {
        let first = next.fetch_add(CHUNK, Ordering::Relaxed);
        if first >= args.records || stop.load(Ordering::Relaxed) {
            break;
        }
        for index in first..(first + CHUNK).min(args.records) {
            let rec = Record::generate(args.seed, index);
            let len = rec.encoded_len();
            if used + len > seg.len() {
                let full = std::mem::replace(&mut seg, take()?);
                finish(full, used, count)?;
                used = HEADER;
                count = 0;
            }
            rec.encode(&mut seg[used..used + len]);
            used += len;
            count += 1;
        }
    }
    if count > 0 {
        finish(seg, used, count)?;
    }
    Ok(())
}

/// Reads every block back (several threads, each into a pool segment), decodes every record and
/// compares it with a freshly generated one. Returns the number of records verified.
fn verify(
    pool: &SegmentPool,
    file: &MappedFile,
    args: &Args,
    progress: &ProgressBar,
) -> Result<u64, Error> {
    let (records, seed, threads) = (args.records, args.seed, args.threads);
    let started = Instant::now();
    let main = std::thread::current();
    // The block offsets: a walk over the headers.
    let len = file.len();
    let mut blocks = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, offset)?;
        let (magic, used) = (le32(&h[0..4]), le32(&h[4..8]) as usize);
        if magic != MAGIC || !(HEADER..=SEGMENT).contains(&used) {
            return Err(format!("corrupt block header at offset {offset}").into());
        }
        blocks.push((offset, used));
        offset += used as u64;
    }
    let seen: Vec<AtomicU64> = (0..records.div_ceil(64))
        .map(|_| AtomicU64::new(0))
        .collect();
    let next = AtomicUsize::new(0);
    let verified = AtomicU64::new(0);
    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (blocks, seen, next, verified) = (&blocks, &seen, &next, &verified);
                let main = main.clone();
                s.spawn(move || -> Result<(), Error> {
                    let r = (|| {
                        let mut buf = pool.allocate_timeout(SEGMENT, WAIT)?;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(offset, used)) = blocks.get(i) else {
                                return Ok(());
                            };
                            file.read_exact_at(&mut buf[..used], offset)?;
                            let n = verify_block(&buf[..used], records, seed, seen)
                                .map_err(|e| format!("block at offset {offset}: {e}"))?;
                            verified.fetch_add(n, Ordering::Relaxed);
                        }
                    })();
                    main.unpark();
                    r
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            let done = verified.load(Ordering::Relaxed);
            progress.set_position(done);
            progress.set_message(rate_text(done, started.elapsed()));
            std::thread::park_timeout(Duration::from_millis(100));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a verifier panicked".into()))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let verified = verified.into_inner();
    if verified != records {
        let missing = (0..records)
            .find(|&i| seen[(i / 64) as usize].load(Ordering::Relaxed) & (1 << (i % 64)) == 0)
            .unwrap_or(0);
        return Err(format!(
            "verified {verified} of {records} records: record {missing} is missing from the file"
        )
        .into());
    }
    Ok(verified)
}

fn verify_block(block: &[u8], records: u64, seed: u64, seen: &[AtomicU64]) -> Result<u64, String> {
    let count = le32(&block[8..12]) as u64;
    let mut at = HEADER;
    let mut n = 0u64;
    while at < block.len() {
        let (rec, len) = Record::decode(&block[at..])?;
        let index = rec.index();
        if index >= records {
            return Err(format!("record number {index} is out of range"));
        }
        if rec != Record::generate(seed, index) {
            return Err(format!("record {index} differs from what was serialized"));
        }
        let bit = 1u64 << (index % 64);
        if seen[(index / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return Err(format!("record {index} appears twice"));
        }
        at += len;
        n += 1;
    }
    if n != count {
        return Err(format!("header says {count} records, found {n}"));
    }
    Ok(n)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A generated record: small events, medium rows, large blobs.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// 60%: a fixed-size event.
    Event { index: u64, at_ns: u64, code: u32 },
    /// 30%: a row with a name and up to 64 values.
    Row {
        index: u64,
        name: String,
        values: Vec<i64>,
    },
    /// 10%: an opaque blob of 256 B to 8 KiB.
    Blob { index: u64, bytes: Vec<u8> },
}

/// splitmix64: a tiny, good-enough generator, so the same seed always gives the same records.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Self {
        Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TAG_EVENT: u8 = 1;
const TAG_ROW: u8 = 2;
const TAG_BLOB: u8 = 3;
/// Every record starts with: total length (u32, header included), tag (u8), 3 zero bytes, and
/// its number (u64).
const RECORD_HEADER: usize = 16;

impl Record {
    /// Record number `index` of the stream of `seed`.
    pub fn generate(seed: u64, index: u64) -> Record {
        let mut r = Rng::new(seed, index);
        match r.below(10) {
            0..=5 => Record::Event {
                index,
                at_ns: r.next(),
                code: r.next() as u32,
            },
            6..=8 => {
                let name_len = 4 + r.below(37) as usize;
                let name = (0..name_len)
                    .map(|_| (b'a' + r.below(26) as u8) as char)
                    .collect();
                let values = (0..1 + r.below(64)).map(|_| r.next() as i64).collect();
                Record::Row {
                    index,
                    name,
                    values,
                }
            }
            _ => {
                let n = 256 + r.below(8 * 1024 - 256 + 1) as usize;
                let mut bytes = Vec::with_capacity(n + 8);
                while bytes.len() < n {
                    bytes.extend_from_slice(&r.next().to_le_bytes());
                }
                bytes.truncate(n);
                Record::Blob { index, bytes }
            }
        }
    }

    pub fn index(&self) -> u64 {
        match self {
            Record::Event { index, .. }
            | Record::Row { index, .. }
            | Record::Blob { index, .. } => *index,
        }
    }

    /// Bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER
            + match self {
                Record::Event { .. } => 12,
                Record::Row { name, values, .. } => 2 + name.len() + 2 + 8 * values.len(),
                Record::Blob { bytes, .. } => 4 + bytes.len(),
            }
    }

    /// Writes the record into `out`, which is exactly [`encoded_len`](Self::encoded_len) bytes.
    pub fn encode(&self, out: &mut [u8]) {
        let len = self.encoded_len();
        debug_assert_eq!(out.len(), len);
        let tag = match self {
            Record::Event { .. } => TAG_EVENT,
            Record::Row { .. } => TAG_ROW,
            Record::Blob { .. } => TAG_BLOB,
        };
        out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        out[4..8].copy_from_slice(&[tag, 0, 0, 0]);
        out[8..16].copy_from_slice(&self.index().to_le_bytes());
        let body = &mut out[RECORD_HEADER..];
        match self {
            Record::Event { at_ns, code, .. } => {
                body[0..8].copy_from_slice(&at_ns.to_le_bytes());
                body[8..12].copy_from_slice(&code.to_le_bytes());
            }
            Record::Row { name, values, .. } => {
                body[0..2].copy_from_slice(&(name.len() as u16).to_le_bytes());
                body[2..2 + name.len()].copy_from_slice(name.as_bytes());
                let at = 2 + name.len();
                body[at..at + 2].copy_from_slice(&(values.len() as u16).to_le_bytes());
                for (i, v) in values.iter().enumerate() {
                    let p = at + 2 + 8 * i;
                    body[p..p + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Record::Blob { bytes, .. } => {
                body[0..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                body[4..].copy_from_slice(bytes);
            }
        }
    }

    /// Reads one record from the start of `buf`; returns it and its encoded length. Every length
    /// is checked: corrupt bytes give an `Err`, never a panic.
    pub fn decode(buf: &[u8]) -> Result<(Record, usize), String> {
        if buf.len() < RECORD_HEADER {
            return Err("truncated record header".into());
        }
        let len = le32(&buf[0..4]) as usize;
        if !(RECORD_HEADER..=buf.len()).contains(&len) || buf[5..8] != [0, 0, 0] {
            return Err(format!("corrupt record header (length {len})"));
        }
        let index = le64(&buf[8..16]);
        let body = &buf[RECORD_HEADER..len];
        let bad = || format!("record {index}: corrupt body");
        let rec = match buf[4] {
            TAG_EVENT if body.len() == 12 => Record::Event {
                index,
                at_ns: le64(&body[0..8]),
                code: le32(&body[8..12]),
            },
            TAG_ROW if body.len() >= 4 => {
                let n = u16::from_le_bytes([body[0], body[1]]) as usize;
                let name = body.get(2..2 + n).ok_or_else(bad)?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
                let at = 2 + n;
                let k = body
                    .get(at..at + 2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(bad)?;
                if body.len() != at + 2 + 8 * k {
                    return Err(bad());
                }
                let values = body[at + 2..]
                    .chunks_exact(8)
                    .map(|c| le64(c) as i64)
                    .collect();
                Record::Row {
                    index,
                    name,
                    values,
                }
            }
            TAG_BLOB if body.len() >= 4 && le32(&body[0..4]) as usize == body.len() - 4 => {
                Record::Blob {
                    index,
                    bytes: body[4..].to_vec(),
                }
            }
            _ => return Err(bad()),
        };
        Ok((rec, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_deterministic() {
        for i in 0..2_000 {
            let r = Record::generate(7, i);
            assert_eq!(r, Record::generate(7, i));
            let mut buf = vec![0u8; r.encoded_len()];
            r.encode(&mut buf);
            let (back, len) = Record::decode(&buf).unwrap();
            assert_eq!(len, buf.len());
            assert_eq!(back, r);
            assert!(len + HEADER <= SEGMENT, "a record must fit a fresh segment");
        }
    }

    #[test]
    fn corrupt_records_are_errors() {
        let r = Record::generate(7, 3);
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(Record::decode(&buf[..cut]).is_err());
        }
        let mut bad = buf.clone();
        bad[4] = 9;
        assert!(Record::decode(&bad).is_err());
        let mut flipped = buf;
        *flipped.last_mut().unwrap() ^= 1;
        let (back, _) = Record::decode(&flipped).unwrap_or((Record::generate(7, 4), 0));
        assert_ne!(back, r, "a flipped byte must not compare equal");
    }
}
