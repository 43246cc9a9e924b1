//! What it costs to move a `Segment` out of `allocate` in the shapes user code takes: 4 KiB, one
//! thread, memory untouched, ns per allocate+release pair against the thread-local floor.
//!
//! * `addr`: `allocate` inlined, only the address escapes (the shape of `segpool bench`);
//! * `value`: the whole segment escapes (`black_box(segment)`: stored and loaded back);
//! * `call`: `allocate` behind a function that is not inlined and returns `Result<Segment>`;
//! * `call_io`: the same, returning `std::io::Result<Segment>` (the shape of a wrapper in I/O code);
//! * `try`: a function that is not inlined, uses `?` on `allocate` and returns a `Result<usize>`;
//! * `floor`: pop and push on a thread-local `Vec` of addresses (as in `segpool bench`).
//!
//! `cargo bench --bench segment_moves [-- ROUNDS PAIRS]` (default 15 rounds of 1,000,000 pairs):
//! the shapes take turns within each round, and each prints its fastest round, the figure least
//! disturbed by whatever else runs on the machine. Under callgrind, for instruction counts that
//! do not depend on the machine's load (rustix's default backend reads the vDSO, which valgrind
//! does not provide):
//! `RUSTFLAGS="--cfg rustix_use_libc" cargo bench --bench segment_moves --no-run`, then
//! `valgrind --tool=callgrind <the bench binary> 1 1000000` and `callgrind_annotate --inclusive=yes`.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Instant;

use segpool::{Result, Segment, SegmentPool};

const SIZE: usize = 4096;

#[inline(never)]
fn get(pool: &SegmentPool, size: usize) -> Result<Segment> {
    pool.allocate(size)
}

#[inline(never)]
fn get_io(pool: &SegmentPool, size: usize) -> std::io::Result<Segment> {
    Ok(pool.allocate(size)?)
}

#[inline(never)]
fn address_of_one(pool: &SegmentPool, size: usize) -> Result<usize> {
    let s = pool.allocate(size)?;
    Ok(black_box(s.as_ptr()) as usize)
}

#[inline(never)]
fn addr(pool: &SegmentPool, n: u64) {
    for _ in 0..n {
        let s = pool.allocate(SIZE).expect("allocate");
        black_box(s.as_ptr());
    }
}

#[inline(never)]
fn value(pool: &SegmentPool, n: u64) {
    for _ in 0..n {
        drop(black_box(pool.allocate(SIZE).expect("allocate")));
    }
}

#[inline(never)]
fn call(pool: &SegmentPool, n: u64) {
    for _ in 0..n {
        let s = get(pool, SIZE).expect("allocate");
        black_box(s.as_ptr());
    }
}

#[inline(never)]
fn call_io(pool: &SegmentPool, n: u64) {
    for _ in 0..n {
        let s = get_io(pool, SIZE).expect("allocate");
        black_box(s.as_ptr());
    }
}

#[inline(never)]
fn try_shape(pool: &SegmentPool, n: u64) {
    for _ in 0..n {
        black_box(address_of_one(pool, SIZE).expect("allocate"));
    }
}

thread_local! {
    static FLOOR: RefCell<Vec<usize>> = RefCell::new(vec![SIZE; 32]);
}

/// The floor of `segpool bench` (`cli/src/peers.rs`): a pop from and a push onto a thread-local
/// `Vec` of addresses, at most 64.
#[inline(never)]
fn floor(_: &SegmentPool, n: u64) {
    for _ in 0..n {
        let a = FLOOR.with(|f| f.borrow_mut().pop().unwrap_or(SIZE));
        black_box(a);
        FLOOR.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < 64 {
                f.push(a);
            }
        });
    }
}

type Shape = (&'static str, fn(&SegmentPool, u64));

const SHAPES: [Shape; 6] = [
    ("addr", addr),
    ("value", value),
    ("call", call),
    ("call_io", call_io),
    ("try", try_shape),
    ("floor", floor),
];

fn main() {
    // `cargo bench` passes `--bench`; the numbers are ours.
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("usage: segment_moves [ROUNDS [PAIRS]]"))
        .collect();
    let rounds = nums.first().copied().unwrap_or(15).max(1);
    let pairs = nums.get(1).copied().unwrap_or(1_000_000).max(1);
    let pool = SegmentPool::new().expect("pool");
    let mut best = [f64::INFINITY; SHAPES.len()];
    for _ in 0..rounds {
        for (b, (_, f)) in best.iter_mut().zip(SHAPES) {
            f(&pool, 1000);
            let t = Instant::now();
            f(&pool, pairs);
            *b = b.min(t.elapsed().as_nanos() as f64 / pairs as f64);
        }
    }
    let floor = best[SHAPES.len() - 1];
    println!("ns per 4 KiB allocate+release pair, fastest of {rounds} rounds of {pairs}:");
    for (b, (name, _)) in best.iter().zip(SHAPES) {
        println!("{name:>18} {b:7.2} ns  {:5.2}x the floor", b / floor);
    }
}
