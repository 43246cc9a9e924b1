//! The pool under concurrency and the basic contract of `Segment`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use segpool::{Segment, SegmentPool};

/// Live address ranges handed out by the pool; inserting one that overlaps another panics.
#[derive(Default)]
struct LiveRanges(Mutex<BTreeMap<usize, (usize, usize)>>);

impl LiveRanges {
    fn insert(&self, seg: &Segment, owner: usize) {
        let start = seg.as_ptr() as usize;
        let end = start + seg.len();
        let mut map = self.0.lock().unwrap();
        if let Some((&s, &(e, o))) = map.range(..end).next_back() {
            assert!(
                e <= start,
                "segment {start:#x}..{end:#x} of thread {owner} overlaps live {s:#x}..{e:#x} of thread {o}"
            );
        }
        map.insert(start, (end, owner));
    }

    fn remove(&self, seg: &Segment) {
        let removed = self.0.lock().unwrap().remove(&(seg.as_ptr() as usize));
        assert!(removed.is_some(), "released a segment that was not live");
    }
}

fn pattern(thread: usize, iter: usize) -> u8 {
    (thread.wrapping_mul(131) ^ iter.wrapping_mul(31)) as u8 | 1
}

#[test]
fn eight_threads_with_a_trimmer_never_share_or_corrupt_a_byte() {
    let pool = SegmentPool::builder().budget(512 << 20).build().unwrap();
    let live = Arc::new(LiveRanges::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(9));
    let sizes = [
        1usize,
        4096,
        5000,
        16384,
        40_000,
        65536,
        100_000,
        262_144,
        1 << 20,
        (1 << 20) + 1,
        3 << 20,
    ];

    let trimmer = {
        let (pool, stop, start) = (pool.clone(), Arc::clone(&stop), Arc::clone(&start));
        thread::spawn(move || {
            start.wait();
            let mut trims = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pool.trim();
                trims += 1;
                thread::yield_now();
            }
            trims
        })
    };
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (pool, live, start) = (pool.clone(), Arc::clone(&live), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut held: Vec<(Segment, u8)> = Vec::new();
                for i in 0..3000 {
                    let size = sizes[(t * 7 + i * 13) % sizes.len()];
                    let mut seg = pool.allocate(size).expect("allocate under a large budget");
                    assert!(seg.len() >= size);
                    assert_eq!(seg.as_ptr() as usize % 4096, 0, "segment not page-aligned");
                    live.insert(&seg, t);
                    let p = pattern(t, i);
                    // Write the first, last and every 4 KiB byte: cheap, and catches any overlap.
                    let len = seg.len();
                    for off in (0..len).step_by(4096).chain([len - 1]) {
                        seg[off] = p;
                    }
                    held.push((seg, p));
                    // Keep a varying number alive so regions fill, empty and get trimmed.
                    while held.len() > (i % 17) {
                        let (seg, p) = held.swap_remove((i * 7) % held.len());
                        let len = seg.len();
                        for off in (0..len).step_by(4096).chain([len - 1]) {
                            assert_eq!(seg[off], p, "byte {off} of a live segment changed");
                        }
                        live.remove(&seg);
                        drop(seg);
                    }
                }
                for (seg, _) in held {
                    live.remove(&seg);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    stop.store(true, Ordering::Relaxed);
    let trims = trimmer.join().unwrap();
    assert!(trims > 0);

    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0, "{stats}");
    for c in &stats.classes {
        assert_eq!(c.in_use, 0, "{stats}");
        assert_eq!(c.allocations, c.releases, "{stats}");
    }
    assert_eq!(stats.dedicated_segments, 0);
    pool.trim();
    let stats = pool.stats();
    assert_eq!(
        stats.mapped_bytes, 0,
        "after trim nothing stays mapped:\n{stats}"
    );
    assert_eq!(stats.regions, 0);
    assert_eq!(stats.cached_bytes, 0);
    assert!(stats.regions_unmapped > 0 && stats.regions_unmapped == stats.regions_mapped);
}

/// A segment is two words, so it (and `Option<Segment>`) comes back from a call in two
/// registers; `len()` is read from its region, for class and dedicated segments alike, and
/// stays right after the segment moved to another thread.
#[test]
fn a_segment_is_two_words_and_knows_its_length() {
    assert_eq!(
        std::mem::size_of::<Segment>(),
        2 * std::mem::size_of::<usize>()
    );
    assert_eq!(
        std::mem::size_of::<Option<Segment>>(),
        std::mem::size_of::<Segment>()
    );
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Segment>();
    let pool = SegmentPool::new().unwrap();
    let segs: Vec<Segment> = [
        1,
        5000,
        70_000,
        300_000,
        1 << 20,
        (3 << 20) + 1,
        (1 << 30) + 1,
    ]
    .iter()
    .map(|&n| pool.allocate(n).unwrap())
    .collect();
    let lens = thread::spawn(move || {
        segs.iter()
            .map(|s| (s.len(), s.capacity(), s.as_ptr() as usize % 4096))
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(
        lens,
        [
            (4096, 4096, 0),
            (16384, 16384, 0),
            (262_144, 262_144, 0),
            (1 << 20, 1 << 20, 0),
            (1 << 20, 1 << 20, 0),
            (4 << 20, 4 << 20, 0),
            // Above the largest class: a dedicated mapping, its length the request in pages.
            ((1 << 30) + 4096, (1 << 30) + 4096, 0),
        ]
    );
}

#[test]
fn sizes_map_to_classes_and_segments_behave_like_buffers() {
    let pool = SegmentPool::new().unwrap();
    let mut seg = pool.allocate(10_000).unwrap();
    assert_eq!(seg.len(), 16384);
    assert_eq!(seg.capacity(), 16384);
    seg[..5].copy_from_slice(b"hello");
    assert_eq!(&seg.as_ref()[..5], b"hello");
    seg.as_mut()[5] = b'!';
    assert_eq!(&seg[..6], b"hello!");
    assert_eq!(seg.as_mut_ptr() as usize % 4096, 0);
    for (req, class) in [
        (1, 4096),
        (4096, 4096),
        (4097, 16384),
        (65536, 65536),
        (65537, 262_144),
        (1 << 20, 1 << 20),
        ((1 << 20) + 1, 2 << 20),
        (3 << 20, 4 << 20),
    ] {
        assert_eq!(pool.allocate(req).unwrap().len(), class, "request {req}");
    }
    let big = pool.allocate((1 << 30) + 1).unwrap();
    assert_eq!(
        big.len(),
        (1 << 30) + 4096,
        "dedicated mappings are rounded to pages"
    );
    assert_eq!(pool.stats().dedicated_segments, 1);
    drop(big);
    assert_eq!(pool.stats().dedicated_segments, 0);
    assert_eq!(pool.stats().dedicated_bytes, 0);

    let debug = format!("{seg:?}");
    assert!(
        debug.contains("Segment") && debug.contains("len: 16384"),
        "{debug}"
    );
    assert!(
        !debug.contains("104, 101"),
        "Debug must not print the bytes: {debug}"
    );

    fn send_sync<T: Send + Sync>() {}
    send_sync::<Segment>();
    send_sync::<SegmentPool>();
}

#[test]
fn fresh_memory_is_zero_and_allocate_zeroed_clears_reused_slices() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 65536])
        .build()
        .unwrap();
    let a = pool.allocate(65536).unwrap();
    assert!(a.iter().all(|&b| b == 0), "a fresh region is zero");
    let addr = a.as_ptr();
    let mut a = a;
    a.fill(0xAB);
    drop(a);
    // The same thread gets the same slice back from its cache: dirty unless zeroed.
    let b = pool.allocate(65536).unwrap();
    assert_eq!(b.as_ptr(), addr);
    assert!(
        b.iter().all(|&x| x == 0xAB),
        "allocate does not clear reused slices"
    );
    drop(b);
    let z = pool.allocate_zeroed(65536).unwrap();
    assert_eq!(z.as_ptr(), addr);
    assert!(
        z.iter().all(|&x| x == 0),
        "allocate_zeroed clears a reused slice"
    );
    let big = pool.allocate_zeroed(3 << 20).unwrap();
    assert!(big.iter().all(|&x| x == 0));
}

#[test]
fn segments_released_on_other_threads_go_back_to_the_pool() {
    let pool = SegmentPool::builder().thread_cache(false).build().unwrap();
    let segs: Vec<Segment> = (0..64)
        .map(|i| pool.allocate(4096 << (i % 4)).unwrap())
        .collect();
    assert_eq!(
        pool.stats().classes.iter().map(|c| c.in_use).sum::<usize>(),
        64
    );
    let (tx, rx) = std::sync::mpsc::channel::<Segment>();
    let consumer = thread::spawn(move || {
        let mut n = 0;
        for mut seg in rx {
            seg[0] = 7;
            n += 1;
        }
        n
    });
    for s in segs {
        tx.send(s).unwrap();
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), 64);
    let stats = pool.stats();
    assert_eq!(stats.in_use_bytes, 0, "{stats}");
    assert_eq!(pool.trim(), stats.mapped_bytes);
    assert_eq!(pool.stats().mapped_bytes, 0);
}

#[test]
fn empty_regions_beyond_the_retained_bound_are_unmapped_without_trim() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096])
        .region_size(64 << 10)
        .retain_empty_regions(1)
        .empty_region_grace(std::time::Duration::ZERO)
        .thread_cache(false)
        .build()
        .unwrap();
    // 16 slices per region: 48 segments fill three regions.
    let segs: Vec<Segment> = (0..48).map(|_| pool.allocate(4096).unwrap()).collect();
    assert_eq!(pool.stats().regions, 3);
    drop(segs);
    let stats = pool.stats();
    assert_eq!(
        stats.regions, 1,
        "one empty region is retained, the others unmapped:\n{stats}"
    );
    assert_eq!(stats.regions_unmapped, 2);
    assert_eq!(stats.mapped_bytes, 64 << 10);
    assert_eq!(pool.trim(), 64 << 10);
    assert_eq!(pool.stats().mapped_bytes, 0);
}

#[test]
fn thread_caches_are_bounded_counted_and_returned_at_thread_exit() {
    // The bound per class: 128 slices or 4 MiB, whichever is less (docs/design.md): 128 slices of
    // 4 KiB (the slice count binds), 64 slices of 64 KiB (the byte count binds). Each thread
    // releases three times its bound and the cache is read after every release: it fills up to
    // the bound, exactly, and never holds more.
    for (size, bound) in [(4096, 128), (64 << 10, 64)] {
        let pool = SegmentPool::builder()
            .size_classes(&[size])
            .build()
            .unwrap();
        let p = pool.clone();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = thread::spawn(move || {
            let segs: Vec<Segment> = (0..3 * bound).map(|_| p.allocate(size).unwrap()).collect();
            let mut most = 0;
            for s in segs {
                drop(s);
                let stats = p.stats();
                let cached = stats.classes[0].cached;
                assert!(
                    cached <= bound && stats.cached_bytes <= 4 << 20,
                    "cache bound is {bound} slices of {size} bytes: {stats}"
                );
                most = most.max(cached);
            }
            assert_eq!(most, bound, "releases fill the cache up to its bound");
            seen_tx.send(p.stats()).unwrap();
            go_rx.recv().unwrap();
        });
        let Ok(stats) = seen_rx.recv() else {
            // The thread failed an assertion: report it.
            std::panic::resume_unwind(t.join().unwrap_err());
        };
        assert!(
            stats.cached_bytes > 0,
            "released slices stay in the thread's cache: {stats}"
        );
        assert_eq!(stats.classes[0].in_use, 0);
        go_tx.send(()).unwrap();
        t.join().unwrap();
        let stats = pool.stats();
        assert_eq!(
            stats.cached_bytes, 0,
            "an exiting thread gives its cache back: {stats}"
        );
        assert_eq!(stats.classes[0].allocations, 3 * bound as u64);
        assert_eq!(stats.classes[0].releases, 3 * bound as u64);
        assert_eq!(pool.trim(), stats.mapped_bytes);
    }
}

#[test]
fn an_idle_threads_cache_is_given_back_on_its_next_call_after_trim() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096, 16384])
        .build()
        .unwrap();
    let p = pool.clone();
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    let t = thread::spawn(move || {
        drop(
            (0..20)
                .map(|_| p.allocate(4096).unwrap())
                .collect::<Vec<_>>(),
        );
        back_tx.send(()).unwrap();
        // Idle until told to make one call into the pool, in the other class.
        assert_eq!(rx.recv().unwrap(), "call");
        drop(p.allocate(16384).unwrap());
        back_tx.send(()).unwrap();
        rx.recv().unwrap();
    });
    back_rx.recv().unwrap();
    assert!(pool.stats().classes[0].cached > 0);
    pool.trim();
    assert_eq!(
        pool.stats().classes[0].regions,
        1,
        "the idle thread's cache pins the 4 KiB region"
    );
    tx.send("call").unwrap();
    back_rx.recv().unwrap();
    // The thread saw the trim generation move and gave its whole cache back before allocating.
    let stats = pool.stats();
    assert_eq!(stats.classes[0].cached, 0, "{stats}");
    pool.trim();
    assert_eq!(
        pool.stats().classes[0].regions,
        0,
        "now the 4 KiB region can be unmapped"
    );
    tx.send("exit").unwrap();
    t.join().unwrap();
    pool.trim();
    assert_eq!(pool.stats().mapped_bytes, 0);
}

#[test]
fn within_the_grace_period_surplus_empty_regions_stay_mapped_until_trim() {
    let pool = SegmentPool::builder()
        .size_classes(&[4096])
        .region_size(64 << 10)
        .retain_empty_regions(1)
        .empty_region_grace(std::time::Duration::from_secs(3600))
        .thread_cache(false)
        .build()
        .unwrap();
    let segs: Vec<Segment> = (0..48).map(|_| pool.allocate(4096).unwrap()).collect();
    drop(segs);
    let stats = pool.stats();
    assert_eq!(
        stats.regions, 3,
        "the class grew moments ago: its empty regions stay:\n{stats}"
    );
    assert_eq!(pool.trim(), 3 * (64 << 10), "trim unmaps them regardless");
}

#[test]
fn prefaulted_and_small_page_pools_hand_out_zeroed_working_memory() {
    for (huge, prefault) in [(false, false), (false, true), (true, true)] {
        let pool = SegmentPool::builder()
            .size_classes(&[65536, 1 << 20])
            .huge_pages(huge)
            .prefault(prefault)
            .build()
            .unwrap();
        let mut segs: Vec<Segment> = (0..40)
            .map(|i| {
                pool.allocate(if i % 2 == 0 { 65536 } else { 1 << 20 })
                    .unwrap()
            })
            .collect();
        for (i, s) in segs.iter_mut().enumerate() {
            assert!(
                s.iter().all(|&b| b == 0),
                "fresh memory is zero (huge {huge}, prefault {prefault})"
            );
            s.fill(i as u8);
        }
        for (i, s) in segs.iter().enumerate() {
            assert!(s.iter().all(|&b| b == i as u8));
        }
        drop(segs);
        assert!(pool.trim() > 0);
        assert_eq!(pool.stats().mapped_bytes, 0);
    }
}
