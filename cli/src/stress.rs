//! `segpool stress`: many threads allocate, write, verify and release under a tight budget, with
//! trims and releases on other threads; with `--faults`, reader threads read mapped files that
//! another thread truncates behind their back.
//!
//! What counts as a corruption (the run stops at the first and exits non-zero):
//! * a segment whose bytes are not what its owner wrote (someone else wrote into it),
//! * a segment handed out while an overlapping one is still live,
//! * the pool mapping more than its budget, or reporting bytes in use after everything was
//!   released,
//! * a read of a mapped file that returns `Ok` with bytes that differ from the file's content
//!   (a read that meets a truncated page must fail with `Faulted` instead).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use segpool::fs::{MapConfig, MappedFile, MmapFs};
use segpool::{Segment, SegmentPool};

use crate::{bytes_text, parse_size, parse_threads, Error};

/// Options of `segpool stress`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Allocating threads (and, with --faults, as many reader threads).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = parse_threads)]
    pub threads: usize,
    /// How long to run, in seconds (fractions allowed).
    #[arg(long, value_name = "S", default_value_t = 5.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// The pool's budget (bytes, or a number with K, M, G or T: 16M, 1G...): tight on purpose.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub budget: usize,
    /// Also read mapped files while another thread truncates them (through another descriptor).
    #[arg(long)]
    pub faults: bool,
    /// For testing the checker itself: scribble over one live segment, which must be reported.
    #[arg(long, hide = true)]
    pub inject_corruption: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a duration: give seconds, more than 0 (e.g. 5 or 0.5)"
        )),
    }
}

/// Sizes the workers ask for: the small default classes, sizes between classes, and one in a
/// large class (2 MiB + 4 KiB: a slice of the 4 MiB class).
const SIZES: [usize; 8] = [
    1000,
    4096,
    10_000,
    65_536,
    100_000,
    256 << 10,
    1 << 20,
    (2 << 20) + 4096,
];
/// Segments a worker holds at most before it releases some.
const HOLD: usize = 6;
/// How long a worker waits for room under the budget (holding nothing) before it tries again.
/// Short on purpose: `allocate_timeout`'s retries do not unmap the empty regions the pool retains
/// for other classes (only `allocate`'s own slow path trims), so with several classes under a
/// tight budget a fresh `allocate` often finds room sooner than a long wait.
const WAIT: Duration = Duration::from_millis(50);
const PAGE: usize = 4096;
const FILES: usize = 4;
const FILE_PAGES: usize = 16;
const FILE_LEN: usize = FILE_PAGES * PAGE;

#[derive(Default)]
struct Counts {
    allocations: AtomicU64,
    bytes_verified: AtomicU64,
    handed_over: AtomicU64,
    trims: AtomicU64,
    waits: AtomicU64,
    timeouts: AtomicU64,
    reads_ok: AtomicU64,
    reads_faulted: AtomicU64,
    short_reads: AtomicU64,
    truncations: AtomicU64,
    reopens: AtomicU64,
}

/// The run's shared state: counts, the stop flag and the first corruption.
struct Run {
    counts: Counts,
    stop: AtomicBool,
    deadline: Instant,
    inject_corruption: bool,
    corruption: Mutex<Option<String>>,
    /// Live segments: start address -> (end, owner tag), to catch overlapping hand-outs.
    live: Mutex<BTreeMap<usize, (usize, u64)>>,
}

impl Run {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    fn corrupt(&self, what: String) {
        let mut c = self.corruption.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some(what);
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn run(args: Args) -> Result<(), Error> {
    let pool = SegmentPool::builder().budget(args.budget).build()?;
    let run = Run {
        counts: Counts::default(),
        stop: AtomicBool::new(false),
        deadline: Instant::now() + Duration::from_secs_f64(args.seconds),
        inject_corruption: args.inject_corruption,
        corruption: Mutex::new(None),
        live: Mutex::new(BTreeMap::new()),
    };
    println!(
        "segpool stress: {} threads, {:.1} s, budget {}{}",
        args.threads,
        args.seconds,
        bytes_text(args.budget),
        if args.faults {
            format!(", {} readers of truncated files", args.threads)
        } else {
            String::new()
        }
    );
    let tmp = if args.faults {
        Some(
            tempfile::Builder::new()
                .prefix("segpool-stress-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary folder: {e}"))?,
        )
    } else {
        None
    };
    let files = match &tmp {
        Some(t) => Some(Files::create(t.path())?),
        None => None,
    };
    let recovered_before = segpool::fault::recovered_faults();
    let mailboxes: Vec<Mutex<Vec<Held>>> =
        (0..args.threads).map(|_| Mutex::new(Vec::new())).collect();
    let started = Instant::now();

    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..args.threads {
            let (pool, run, mailboxes) = (&pool, &run, &mailboxes);
            handles.push(s.spawn(move || pool_worker(pool, run, t, mailboxes)));
        }
        if let Some(files) = &files {
            for t in 0..args.threads {
                let run = &run;
                handles.push(s.spawn(move || files.reader(run, t as u64)));
            }
            let run = &run;
            handles.push(s.spawn(move || files.truncator(run)));
        }
        // The progress line, on this thread, until every worker is done.
        let progress = progress_line(args.seconds);
        while handles.iter().any(|h| !h.is_finished()) {
            let st = pool.usage();
            let c = &run.counts;
            let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let elapsed = started.elapsed();
            progress.set_position(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
            progress.set_message(format!(
                "{} allocations ({}/s)  in use {} / budget {}{}",
                n(&c.allocations),
                rate_text(n(&c.allocations), elapsed),
                bytes_text(st.in_use_bytes),
                bytes_text(args.budget),
                if args.faults {
                    format!(
                        "  {} reads, {} faulted",
                        n(&c.reads_ok) + n(&c.short_reads),
                        n(&c.reads_faulted)
                    )
                } else {
                    String::new()
                }
            ));
            std::thread::park_timeout(Duration::from_millis(100));
        }
        progress.finish_and_clear();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a stress thread panicked".into()))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    // Segments still in mailboxes: verify and release them here.
    for m in &mailboxes {
        for held in m.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            release(&run, held);
        }
    }
    for r in results {
        r?;
    }

    let stats = pool.stats();
    if let Some(budget) = stats.budget_bytes {
        if stats.peak_mapped_bytes > budget {
            run.corrupt(format!(
                "the pool mapped {} bytes at its peak, over its budget of {budget}",
                stats.peak_mapped_bytes
            ));
        }
    }
    if stats.in_use_bytes != 0 || run.live.lock().map(|l| !l.is_empty()).unwrap_or(true) {
        run.corrupt(format!(
            "after every segment was released the pool still counts {} bytes in use",
            stats.in_use_bytes
        ));
    }

    let c = &run.counts;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!("{stats}");
    println!(
        "pool: {} segments allocated, {} written and verified, {} released by another thread, {} trims, {} waits for room under the budget ({} still waiting after {} ms); peak mapped {} of {}",
        n(&c.allocations),
        bytes_text(n(&c.bytes_verified) as usize),
        n(&c.handed_over),
        n(&c.trims),
        n(&c.waits),
        n(&c.timeouts),
        WAIT.as_millis(),
        bytes_text(stats.peak_mapped_bytes),
        bytes_text(args.budget),
    );
    if args.faults {
        println!(
            "faults: {} reads correct, {} failed with Faulted, {} short reads (correct bytes), {} truncations, {} reopens, {} SIGBUS recovered",
            n(&c.reads_ok),
            n(&c.reads_faulted),
            n(&c.short_reads),
            n(&c.truncations),
            n(&c.reopens),
            segpool::fault::recovered_faults() - recovered_before,
        );
    }
    println!("ran {:.1} s", elapsed.as_secs_f64());
    drop(files);
    let corruption = run
        .corruption
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    match corruption {
        None => {
            println!("0 corruptions");
            Ok(())
        }
        Some(first) => Err(format!("corruption: {first}").into()),
    }
}

/// A bar over the run's duration, like the demo's: drawn only on a terminal.
fn progress_line(seconds: f64) -> ProgressBar {
    let length = Duration::from_secs_f64(seconds).as_millis();
    crate::progress_bar(
        length.try_into().unwrap_or(u64::MAX),
        "stress     {bar:30.cyan/blue} {msg}  [{elapsed}]",
    )
}

/// "1.23 M", "456 k", "78": a rate per second.
fn rate_text(done: u64, elapsed: Duration) -> String {
    let r = done as f64 / elapsed.as_secs_f64().max(1e-3);
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.0} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// A segment and the tag its bytes were written with.
struct Held {
    seg: Segment,
    tag: u64,
}

fn word(tag: u64, i: usize) -> u64 {
    (tag ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

fn fill(seg: &mut Segment, tag: u64) {
    for (i, c) in seg.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&word(tag, i).to_le_bytes());
    }
}

/// Checks a segment's bytes, then releases it (and forgets its address range).
fn release(run: &Run, held: Held) {
    let Held { seg, tag } = held;
    let wrong = seg
        .chunks_exact(8)
        .enumerate()
        .find(|(i, c)| u64::from_le_bytes((*c).try_into().expect("8 bytes")) != word(tag, *i));
    if let Some((i, c)) = wrong {
        run.corrupt(format!(
            "segment at {:#x} ({} bytes, owner tag {tag:#x}): word {i} is {:#018x}, expected {:#018x}",
            seg.as_ptr() as usize,
            seg.len(),
            u64::from_le_bytes(c.try_into().expect("8 bytes")),
            word(tag, i)
        ));
    } else {
        run.counts
            .bytes_verified
            .fetch_add(seg.len() as u64, Ordering::Relaxed);
    }
    run.live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(seg.as_ptr() as usize));
    drop(seg);
}

/// Records a new segment's range; an overlap with a live one is a corruption.
fn track(run: &Run, seg: &Segment, tag: u64) {
    let (start, end) = (seg.as_ptr() as usize, seg.as_ptr() as usize + seg.len());
    let mut live = run.live.lock().unwrap_or_else(|p| p.into_inner());
    let before = live.range(..end).next_back().map(|(&s, &(e, t))| (s, e, t));
    if let Some((s, e, t)) = before.filter(|&(_, e, _)| e > start) {
        drop(live);
        run.corrupt(format!(
            "segment {start:#x}..{end:#x} (tag {tag:#x}) was handed out while {s:#x}..{e:#x} (tag {t:#x}) is live"
        ));
        return;
    }
    live.insert(start, (end, tag));
}

fn pool_worker(
    pool: &SegmentPool,
    run: &Run,
    me: usize,
    mailboxes: &[Mutex<Vec<Held>>],
) -> Result<(), Error> {
    let mut rng = Rng(0x5EED ^ (me as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut held: Vec<Held> = Vec::new();
    let mut seq = 0u64;
    let neighbour = (me + 1) % mailboxes.len();
    loop {
        // Segments other threads handed to us.
        let mail: Vec<Held> =
            std::mem::take(&mut *mailboxes[me].lock().unwrap_or_else(|p| p.into_inner()));
        for h in mail {
            release(run, h);
        }
        // (With --inject-corruption, thread 0 goes on until it has scribbled, however short
        // the run.)
        let injecting = run.inject_corruption && me == 0 && seq < 3;
        if !run.running() && !injecting {
            break;
        }
        let size = SIZES[rng.below(SIZES.len() as u64) as usize];
        let seg = match pool.allocate(size) {
            Ok(s) => Some(s),
            Err(e) if matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. }) => {
                // Backpressure: wait for room, but never while holding segments others may be
                // waiting for (hold-and-wait deadlocks a tight budget).
                run.counts.waits.fetch_add(1, Ordering::Relaxed);
                for h in held.drain(..) {
                    release(run, h);
                }
                let mail: Vec<Held> =
                    std::mem::take(&mut *mailboxes[me].lock().unwrap_or_else(|p| p.into_inner()));
                for h in mail {
                    release(run, h);
                }
                match pool.allocate_timeout(size, WAIT) {
                    Ok(s) => Some(s),
                    Err(e) if matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. }) => {
                        run.counts.timeouts.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(mut seg) = seg {
            seq += 1;
            let tag = ((me as u64) << 48) ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D);
            track(run, &seg, tag);
            fill(&mut seg, tag);
            if run.inject_corruption && me == 0 && seq == 3 {
                seg[100] ^= 0x5A;
            }
            run.counts.allocations.fetch_add(1, Ordering::Relaxed);
            held.push(Held { seg, tag });
        }
        // Release some: here, or on another thread.
        while held.len() > rng.below(HOLD as u64 + 1) as usize {
            let h = held.swap_remove(rng.below(held.len() as u64) as usize);
            if rng.below(4) == 0 && neighbour != me {
                run.counts.handed_over.fetch_add(1, Ordering::Relaxed);
                mailboxes[neighbour]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(h);
            } else {
                release(run, h);
            }
        }
        if seq % 64 == 0 {
            pool.trim();
            run.counts.trims.fetch_add(1, Ordering::Relaxed);
        }
    }
    for h in held {
        release(run, h);
    }
    Ok(())
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Byte `offset` of file `id`: never zero, so a zero page read as data is caught.
fn pattern(id: usize, offset: usize) -> u8 {
    let x = (offset as u64 ^ ((id as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) as u8) | 1
}

fn pattern_bytes(id: usize, offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|o| pattern(id, o)).collect()
}

/// The mapped files of `--faults`: each slot holds the current handle; after a fault the
/// truncator replaces it (a poisoned file stays poisoned until its last handle is closed).
struct Files {
    fs: MmapFs,
    dir: std::path::PathBuf,
    /// `None` only while the truncator replaces a poisoned handle.
    slots: Vec<RwLock<Option<MappedFile>>>,
}

impl Files {
    fn name(id: usize) -> String {
        format!("file-{id}")
    }

    fn create(dir: &Path) -> Result<Files, Error> {
        for id in 0..FILES {
            std::fs::write(dir.join(Self::name(id)), pattern_bytes(id, 0, FILE_LEN))
                .map_err(|e| format!("cannot write test files in {}: {e}", dir.display()))?;
        }
        let fs = MmapFs::new(dir, MapConfig::default())?;
        let slots = (0..FILES)
            .map(|id| fs.open(Self::name(id)).map(|f| RwLock::new(Some(f))))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Files {
            fs,
            dir: dir.to_path_buf(),
            slots,
        })
    }

    fn reader(&self, run: &Run, me: u64) -> Result<(), Error> {
        let mut rng = Rng(0xFA17 ^ (me + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut buf = vec![0u8; 2 * PAGE];
        while run.running() {
            let id = rng.below(FILES as u64) as usize;
            let len = 1 + rng.below(2 * PAGE as u64) as usize;
            let offset = rng.below((FILE_LEN - len + 1) as u64) as usize;
            let slot = self.slots[id].read().unwrap_or_else(|p| p.into_inner());
            let Some(file) = slot.as_ref() else {
                continue;
            };
            match file.read_at(&mut buf[..len], offset as u64) {
                Ok(n) => {
                    drop(slot);
                    if let Some(i) = (0..n).find(|&i| buf[i] != pattern(id, offset + i)) {
                        run.corrupt(format!(
                            "file {id}: read of {len} bytes at offset {offset} returned Ok with byte {} = {:#04x}, expected {:#04x}",
                            offset + i,
                            buf[i],
                            pattern(id, offset + i)
                        ));
                    }
                    if n < len {
                        run.counts.short_reads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        run.counts.reads_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if is_faulted(&e) => {
                    run.counts.reads_faulted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    return Err(
                        format!("file {id}: read at {offset}: unexpected error: {e}").into(),
                    )
                }
            }
        }
        Ok(())
    }

    /// Truncates a file through its own descriptor, lets the readers run into the lost pages,
    /// puts the bytes back, and reopens the handle if it faulted. At least one cycle.
    fn truncator(&self, run: &Run) -> Result<(), Error> {
        let mut rng = Rng(0x7A0C);
        let reads = || {
            run.counts.reads_ok.load(Ordering::Relaxed)
                + run.counts.reads_faulted.load(Ordering::Relaxed)
        };
        let mut cycle = 0usize;
        loop {
            let id = cycle % FILES;
            let path = self.dir.join(Self::name(id));
            let other = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let keep = rng.below(FILE_PAGES as u64) as usize * PAGE;
            let faulted_before = run.counts.reads_faulted.load(Ordering::Relaxed);
            other.set_len(keep as u64)?;
            run.counts.truncations.fetch_add(1, Ordering::Relaxed);
            // Let the readers meet the lost pages: until one faults or enough reads went by
            // (a counter, not a sleep).
            let start = reads();
            while run.running()
                && run.counts.reads_faulted.load(Ordering::Relaxed) == faulted_before
                && reads() - start < 2_000
            {
                std::thread::yield_now();
            }
            other.write_all_at(&pattern_bytes(id, keep, FILE_LEN - keep), keep as u64)?;
            drop(other);
            let mut slot = self.slots[id].write().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|f| f.fault_state().is_faulted()) {
                // A poisoned file stays poisoned until its last handle is closed: close, reopen.
                drop(slot.take());
                *slot = Some(self.fs.open(Self::name(id))?);
                run.counts.reopens.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
            cycle += 1;
            if !run.running() {
                return Ok(());
            }
        }
    }
}

fn is_faulted(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<segpool::Error>())
        .is_some_and(|se| matches!(se.kind(), segpool::ErrorKind::Faulted { .. }))
}
