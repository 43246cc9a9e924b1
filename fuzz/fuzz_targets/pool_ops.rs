//! Pool operation sequences checked against a model.
//!
//! The input is a list of operations on one pool (allocate, allocate zeroed, write, check, release
//! in any order, hand a segment to a second thread that releases it, trim, stats). After every
//! step the model's claims are checked: no two live segments overlap, each segment is
//! page-aligned and at least as long as asked, the bytes written into a segment are read back,
//! a zeroed segment reads zero, a refusal is a budget error that changes nothing, and the pool's
//! byte counts (`usage()`) add up to the live segments. At a stats step and at the end of every
//! input, the full snapshot (`stats()`) is checked too: its per-class counts add up to the live
//! segments, and it agrees with `usage()`.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segpool::{Error, ErrorKind, PoolStats, PoolUsage, Segment, SegmentPool};

/// The fixture pools' classes: the small ones and the first large class, so that a request
/// above 2 MiB (the last size below) is a dedicated mapping, which the default classes (up to
/// 1 GiB) would never reach under this budget.
const CLASSES: [usize; 6] = [4096, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20];

/// Sizes chosen from: each class edge, one byte past it, and above the largest class.
const SIZES: [usize; 13] = [
    1,
    4096,
    4097,
    16 << 10,
    (16 << 10) + 1,
    64 << 10,
    (64 << 10) + 1,
    256 << 10,
    (256 << 10) + 1,
    1 << 20,
    (1 << 20) + 1,
    2 << 20,
    3 << 20,
];

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate(u8),
    AllocateZeroed(u8),
    Write {
        slot: u8,
        byte: u8,
    },
    Release(u8),
    /// The segment goes to the second thread, which checks and releases it; this thread waits
    /// for the acknowledgement, so the counts are exact again when the next step runs.
    ReleaseElsewhere(u8),
    /// The second thread allocates a segment and hands it back here.
    AllocateElsewhere(u8),
    Trim,
    /// The full snapshot (`stats()`), checked against the model and `usage()`.
    Stats,
}

#[derive(Arbitrary, Debug)]
struct Input {
    thread_cache: bool,
    ops: Vec<Op>,
}

struct Live {
    seg: Segment,
    asked: usize,
    /// The byte every position holds (0 for a zeroed segment, `None` when unknown).
    fill: Option<u8>,
}

fn check(live: &Live) {
    if let Some(b) = live.fill {
        assert!(all_equal(&live.seg, b), "a segment lost its bytes");
    }
}

/// Whether every byte of `bytes` is `b`. Compared a page at a time with `==` on slices (one
/// `memcmp` each): a loop over single bytes would run the fuzzer's comparison hook once per byte
/// and spend nine tenths of the run there.
fn all_equal(bytes: &[u8], b: u8) -> bool {
    let page = [b; 4096];
    bytes.chunks(page.len()).all(|c| c == &page[..c.len()])
}

/// The live segments and where each lies. A segment's address and length never change, so each
/// is checked once, when it joins: page-aligned, at least as long as asked, overlapping no other
/// live segment (so no two live segments ever overlap). The byte totals follow the list.
#[derive(Default)]
struct Model {
    live: Vec<Live>,
    /// Start -> end of every live segment.
    ranges: BTreeMap<usize, usize>,
    bytes: usize,
    dedicated_segments: usize,
    dedicated_bytes: usize,
}

impl Model {
    fn add(&mut self, l: Live) {
        let (start, len) = (l.seg.as_ptr() as usize, l.seg.len());
        let end = start + len;
        assert_eq!(start % 4096, 0, "a segment is not page-aligned");
        assert!(len >= l.asked, "a segment is shorter than asked");
        // The live ranges are disjoint, so the one starting last before `end` is the only one
        // that can reach into `start..end` if any does.
        if let Some((&s, &e)) = self.ranges.range(..end).next_back() {
            assert!(
                e <= start,
                "two live segments overlap: {s:#x}..{e:#x} and {start:#x}..{end:#x}"
            );
        }
        self.ranges.insert(start, end);
        self.bytes += len;
        if l.asked > CLASSES[CLASSES.len() - 1] {
            self.dedicated_segments += 1;
            self.dedicated_bytes += len;
        }
        self.live.push(l);
    }

    /// The segment in `slot` (modulo the count), out of the model; `None` when none is live.
    fn take(&mut self, slot: u8) -> Option<Live> {
        if self.live.is_empty() {
            return None;
        }
        let l = self.live.swap_remove(usize::from(slot) % self.live.len());
        let (start, len) = (l.seg.as_ptr() as usize, l.seg.len());
        assert_eq!(
            self.ranges.remove(&start),
            Some(start + len),
            "model out of step"
        );
        self.bytes -= len;
        if l.asked > CLASSES[CLASSES.len() - 1] {
            self.dedicated_segments -= 1;
            self.dedicated_bytes -= len;
        }
        Some(l)
    }
}

enum Work {
    Release(Live),
    Allocate(usize),
}

/// One pool per cache setting, with a worker thread each, kept across inputs (creating them per
/// input would spend most of the run in `mmap` and thread creation). Every input releases all it
/// allocated, so each input starts from an empty pool.
struct Fixture {
    pool: SegmentPool,
    to_worker: mpsc::Sender<Work>,
    back: mpsc::Receiver<Option<Live>>,
}

const BUDGET: usize = 16 << 20;

fn fixture(thread_cache: bool) -> Fixture {
    let pool = SegmentPool::builder()
        .size_classes(&CLASSES)
        .budget(BUDGET)
        .thread_cache(thread_cache)
        .build()
        .expect("a valid configuration");
    let (to_worker, work) = mpsc::channel::<Work>();
    let (to_main, back) = mpsc::channel::<Option<Live>>();
    let worker_pool = pool.clone();
    std::thread::spawn(move || {
        while let Ok(w) = work.recv() {
            match w {
                Work::Release(live) => {
                    check(&live);
                    drop(live);
                    to_main.send(None).unwrap();
                }
                Work::Allocate(size) => {
                    let got = worker_pool.allocate(size).ok().map(|seg| Live {
                        seg,
                        asked: size,
                        fill: None,
                    });
                    to_main.send(got).unwrap();
                }
            }
        }
    });
    Fixture {
        pool,
        to_worker,
        back,
    }
}

static FIXTURES: OnceLock<[Mutex<Fixture>; 2]> = OnceLock::new();

fuzz_target!(|input: Input| {
    let fixtures = FIXTURES.get_or_init(|| [Mutex::new(fixture(false)), Mutex::new(fixture(true))]);
    let fx = fixtures[usize::from(input.thread_cache)].lock().unwrap();
    let (pool, to_worker, back) = (&fx.pool, &fx.to_worker, &fx.back);
    let budget = BUDGET;
    assert_eq!(
        pool.usage().in_use_bytes,
        0,
        "the previous input left segments behind"
    );

    let mut model = Model::default();
    for op in input.ops.iter().take(256) {
        match *op {
            Op::Allocate(i) | Op::AllocateZeroed(i) => {
                let size = SIZES[usize::from(i) % SIZES.len()];
                let zeroed = matches!(op, Op::AllocateZeroed(_));
                let before = pool.usage();
                let got = if zeroed {
                    pool.allocate_zeroed(size)
                } else {
                    pool.allocate(size)
                };
                match got.map_err(Error::into_kind) {
                    Ok(seg) => {
                        let l = Live {
                            seg,
                            asked: size,
                            fill: zeroed.then_some(0),
                        };
                        check(&l);
                        model.add(l);
                    }
                    Err(ErrorKind::BudgetExceeded { budget: b, .. }) => {
                        assert_eq!(b, budget);
                        assert_eq!(
                            pool.usage().in_use_bytes,
                            before.in_use_bytes,
                            "a refusal changed the pool"
                        );
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
            Op::Write { slot, byte } => {
                let n = model.live.len().max(1);
                if let Some(l) = model.live.get_mut(usize::from(slot) % n) {
                    l.seg.fill(byte);
                    l.fill = Some(byte);
                }
            }
            Op::Release(slot) => {
                if let Some(l) = model.take(slot) {
                    check(&l);
                }
            }
            Op::ReleaseElsewhere(slot) => {
                if let Some(l) = model.take(slot) {
                    to_worker.send(Work::Release(l)).unwrap();
                    assert!(back.recv().unwrap().is_none());
                }
            }
            Op::AllocateElsewhere(i) => {
                let size = SIZES[usize::from(i) % SIZES.len()];
                to_worker.send(Work::Allocate(size)).unwrap();
                if let Some(l) = back.recv().unwrap() {
                    model.add(l);
                }
            }
            Op::Trim => {
                pool.trim();
            }
            Op::Stats => check_stats(pool, &model),
        }
        // The pool's counts against the model, after every step.
        let usage = pool.usage();
        assert_eq!(
            usage.in_use_bytes, model.bytes,
            "in-use bytes do not add up"
        );
        assert!(usage.mapped_bytes <= budget, "mapped above the budget");
        assert!(
            usage.in_use_bytes + usage.cached_bytes <= usage.mapped_bytes,
            "more in use and cached than mapped: {usage}"
        );
        if !input.thread_cache {
            assert_eq!(usage.cached_bytes, 0, "cached without thread caches");
        }
        assert_eq!(
            (usage.dedicated_segments, usage.dedicated_bytes),
            (model.dedicated_segments, model.dedicated_bytes),
            "dedicated segments and bytes"
        );
    }
    for l in &model.live {
        check(l);
    }
    check_stats(pool, &model);
    drop(model);
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0);
    assert_eq!(stats.dedicated_segments, 0);
    agree(&pool.usage(), &stats);
});

/// The full snapshot against the model (its per-class counts add up to the live segments) and
/// against `usage()`, read right after it on this thread (the worker thread is idle between
/// steps, so nothing moves in between).
fn check_stats(pool: &SegmentPool, model: &Model) {
    let stats = pool.stats();
    let live_bytes = model.bytes;
    assert_eq!(stats.in_use_bytes, live_bytes, "in-use bytes do not add up");
    let class_in_use: usize = stats.classes.iter().map(|c| c.in_use * c.size).sum();
    assert_eq!(
        class_in_use + stats.dedicated_bytes,
        live_bytes,
        "per-class counts do not add up"
    );
    // At most: a region that was unlinked stays mapped (and counted) until no thread can still
    // be reading it.
    let class_mapped: usize = stats.classes.iter().map(|c| c.mapped_bytes).sum();
    assert!(
        class_mapped + stats.dedicated_bytes <= stats.mapped_bytes,
        "the classes' regions and the dedicated mappings exceed what is mapped: {stats}"
    );
    agree(&pool.usage(), &stats);
}

/// `usage()` and `stats()` report the same byte counts on a quiet pool.
fn agree(u: &PoolUsage, s: &PoolStats) {
    let of_usage = (
        u.in_use_bytes,
        u.cached_bytes,
        u.mapped_bytes,
        u.dedicated_bytes,
    );
    let of_stats = (
        s.in_use_bytes,
        s.cached_bytes,
        s.mapped_bytes,
        s.dedicated_bytes,
    );
    assert_eq!(
        of_usage, of_stats,
        "usage/stats: in use, cached, mapped, dedicated"
    );
    assert_eq!(
        u.dedicated_segments, s.dedicated_segments,
        "usage/stats: dedicated segments"
    );
}
