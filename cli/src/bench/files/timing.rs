//! Timing one cell of the file table: one contender doing one operation, in a loop of its own.

use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::{Contender, Offsets, Op, Subject};
use crate::Error;

/// ns per operation of `who` doing `op`, timed for about `per_cell`.
pub(super) fn time(
    s: &Subject,
    op: Op,
    who: Contender,
    run: u32,
    buf: &mut [u8],
    per_cell: Duration,
) -> Result<f64, Error> {
    let block = op.block();
    let buf = &mut buf[..block];
    // Same seed for every contender in a run; a new one each run.
    let seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((run as u64 + 1) << 32) ^ block as u64;
    let mut offs = Offsets::new(seed, s.len, block as u64);
    let mut seq = 0u64;
    let next_seq = |seq: &mut u64| {
        let o = *seq;
        *seq = (*seq + block as u64) % s.len;
        o
    };
    if who == Contender::Read {
        (&s.reader).seek(SeekFrom::Start(0))?;
    }
    let raw = s.raw.as_ptr() as *mut u8;
    let batch = op.batch();
    // The next offset of a read: walking the file, or random.
    let mut next = || {
        if op == Op::Sequential1mRead {
            next_seq(&mut seq)
        } else {
            offs.next()
        }
    };
    // One closure, and so one loop of its own, per contender, with the closure inlined into its
    // loop: each is compiled (and its registers allocated) as a program doing only that would
    // be, whatever the compiler's inlining heuristics make of closures of different sizes.
    match (op, who) {
        (Op::Sequential1mRead, Contender::Read) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                let mut got = 0;
                while got < block {
                    match (&s.reader).read(&mut buf[got..])? {
                        0 => {
                            (&s.reader).seek(SeekFrom::Start(0))?;
                        }
                        n => got += n,
                    }
                }
                black_box(&mut *buf);
                Ok(())
            },
        ),
        (_, Contender::Read) => Err("read() only runs the sequential row".into()),
        (Op::Random4kWrite, Contender::Segpool) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.mapped.write_at(buf, offs.next())?);
                Ok(())
            },
        ),
        (Op::Random4kWrite, Contender::Pread) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.std.write_at(buf, offs.next())?);
                Ok(())
            },
        ),
        (Op::Random4kWrite, Contender::Memmap2) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                let o = offs.next();
                // SAFETY: `o + block <= len`, the mapping's length; `buf` is not in it.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), raw.add(o as usize), block) };
                black_box(raw);
                Ok(())
            },
        ),
        (_, Contender::Segpool) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.mapped.read_at(buf, next())?);
                black_box(&mut *buf);
                Ok(())
            },
        ),
        (_, Contender::Pread) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                black_box(s.std.read_at(buf, next())?);
                black_box(&mut *buf);
                Ok(())
            },
        ),
        (_, Contender::Memmap2) => timed(
            batch,
            per_cell,
            #[inline(always)]
            || {
                let o = next();
                // SAFETY: `o + block <= len`, the mapping's length; `buf` is not in it.
                unsafe {
                    std::ptr::copy_nonoverlapping(raw.add(o as usize), buf.as_mut_ptr(), block)
                };
                black_box(&mut *buf);
                Ok(())
            },
        ),
    }
}

/// ns per call of `one`: a warm-up batch, then whole batches of `batch` calls until `per_cell`
/// has passed. Not inlined: every contender's closure gets a loop of its own.
#[inline(never)]
fn timed(
    batch: u64,
    per_cell: Duration,
    mut one: impl FnMut() -> Result<(), Error>,
) -> Result<f64, Error> {
    for _ in 0..batch {
        one()?;
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    loop {
        for _ in 0..batch {
            one()?;
        }
        done += batch;
        let el = t0.elapsed();
        if el >= per_cell {
            return Ok(el.as_nanos() as f64 / done as f64);
        }
    }
}
