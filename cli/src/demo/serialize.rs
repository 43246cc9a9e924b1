//! The write side of the demo: serializer threads fill pooled segments with records, under the
//! pool's budget, and hand full ones to the writer, which appends them to the file.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use segpool::fs::MappedFile;
use segpool::{Segment, SegmentPool};

use super::record::Record;
use super::{rate_text, Args, CHUNK, HEADER, MAGIC, SEGMENT, WAIT};
use crate::{bytes_text, Error};

/// What the write side did.
pub(super) struct Written {
    pub blocks: usize,
    pub bytes: u64,
    pub elapsed: Duration,
    pub waits: u64,
}

/// Serializes every record into pooled segments and appends them to `file`.
pub(super) fn serialize(
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
            let st = pool.usage();
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
            Err(e) if matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. }) => {
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
