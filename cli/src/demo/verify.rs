//! The read side of the demo: the file read back block by block into pool segments by several
//! threads, every record decoded and compared with a freshly generated one, each record number
//! seen exactly once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use segpool::fs::MappedFile;
use segpool::SegmentPool;

use super::record::{le32, Record};
use super::{rate_text, Args, HEADER, MAGIC, SEGMENT, WAIT};
use crate::Error;

/// Reads every block back (several threads, each into a pool segment), decodes every record and
/// compares it with a freshly generated one. Returns the number of records verified.
pub(super) fn verify(
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
