//! The C ABI fed arbitrary handles.
//!
//! Pools and segments are created and released for real, and every call also gets handles made
//! of fuzzer bytes: real ones, real ones with bits flipped, released ones, other pools' ones. No
//! call may crash; a call with a handle that is not live must return an error status and change
//! nothing; a live handle must keep its memory and its length (every byte of a segment up to
//! 128 KiB is written and checked, and of a longer one the parts `stamped_parts` names).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use segpool_capi::*;

#[derive(Arbitrary, Debug)]
enum Handle {
    LivePool(u8),
    FreedPool(u8),
    LiveSegment(u8),
    ReleasedSegment(u8),
    Flipped { of: u8, bit: u8 },
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A pool whose flags the byte picks (see `pool_flags`).
    CreatePool(u8),
    FreePool(Handle),
    Allocate {
        pool: Handle,
        size: u32,
    },
    Release {
        pool: Handle,
        segment: Handle,
    },
    Touch {
        pool: Handle,
        segment: Handle,
    },
    Stats(Handle),
    Trim(Handle),
    Usage(Handle),
}

#[derive(Default)]
struct Model {
    pools: Vec<u64>,
    freed_pools: Vec<u64>,
    /// (pool, segment, length, fill byte)
    segments: Vec<(u64, u64, usize, u8)>,
    released: Vec<u64>,
}

fn pick<T: Copy>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[usize::from(i) % v.len()])
}

impl Model {
    fn resolve(&self, h: &Handle) -> u64 {
        match *h {
            Handle::LivePool(i) => pick(&self.pools, i).unwrap_or(0),
            Handle::FreedPool(i) => pick(&self.freed_pools, i).unwrap_or(1),
            Handle::LiveSegment(i) => pick(&self.segments, i).map_or(0, |s| s.1),
            Handle::ReleasedSegment(i) => pick(&self.released, i).unwrap_or(2),
            Handle::Flipped { of, bit } => {
                let all: Vec<u64> = self
                    .pools
                    .iter()
                    .copied()
                    .chain(self.segments.iter().map(|s| s.1))
                    .collect();
                pick(&all, of).unwrap_or(3) ^ (1u64 << (bit % 64))
            }
            Handle::Raw(x) => x,
        }
    }
}

/// Whether every byte of `bytes` is `b`, a page at a time (one `memcmp` each, not the fuzzer's
/// comparison hook once per byte).
fn all_equal(bytes: &[u8], b: u8) -> bool {
    let page = [b; 4096];
    bytes.chunks(page.len()).all(|c| c == &page[..c.len()])
}

/// A segment up to this long is written and checked whole.
const WHOLE: usize = 128 << 10;
/// Of a longer one, the first and last `BLOCK` bytes, and `SAMPLE` bytes at every address
/// between them that is a multiple of `BLOCK`.
const BLOCK: usize = 64 << 10;
const SAMPLE: usize = 64;

/// The parts of a segment at `addr`, `len` bytes long, that the target writes and checks, as
/// (offset, length) pairs.
///
/// Writing a long segment whole faulted in (and the kernel zeroed) every page of it, in pools
/// that are new in every input: that was half of this target's time. The parts kept still catch
/// what the check is for. A segment that another live segment overlaps by `BLOCK + SAMPLE`
/// bytes or more shares a sampled address with it (the samples sit at absolute addresses), and
/// one that loses its memory loses its ends too. Every segment from the small classes is
/// checked whole.
fn stamped_parts(addr: usize, len: usize) -> Vec<(usize, usize)> {
    if len <= WHOLE {
        return vec![(0, len)];
    }
    let mut parts = vec![(0, BLOCK)];
    let last = len - BLOCK;
    let mut off = (addr + BLOCK).next_multiple_of(BLOCK) - addr;
    while off + SAMPLE <= last {
        parts.push((off, SAMPLE));
        off += BLOCK;
    }
    parts.push((last, BLOCK));
    parts
}

/// Writes `fill` into the parts of the segment that `stamped_parts` names.
///
/// # Safety
///
/// `ptr` is valid for writes of `len` bytes.
unsafe fn stamp(ptr: *mut u8, len: usize, fill: u8) {
    for (off, n) in stamped_parts(ptr as usize, len) {
        // SAFETY: `off + n <= len`, and the caller gives `len` writable bytes at `ptr`.
        unsafe { std::ptr::write_bytes(ptr.add(off), fill, n) };
    }
}

/// Whether the parts of `bytes` that `stamped_parts` names all hold `fill`.
fn stamped(bytes: &[u8], fill: u8) -> bool {
    stamped_parts(bytes.as_ptr() as usize, bytes.len())
        .into_iter()
        .all(|(off, n)| all_equal(&bytes[off..off + n], fill))
}

/// The flags of a new pool, from the input's byte: no thread cache half the time; huge pages
/// and prefaulting one pool in eight each. Every pool here is new, so its regions are fresh
/// memory: with huge pages on, the first byte written into a region faults in (and the kernel
/// zeroes) 2 MiB, and a prefaulted region is written whole up front. Both are exercised; were
/// they the default, they would be most of the run's time.
fn pool_flags(b: u8) -> u32 {
    let mut flags = 0;
    if b & 1 != 0 {
        flags |= SEGPOOL_FLAG_NO_THREAD_CACHE;
    }
    if (b >> 1) & 7 != 7 {
        flags |= SEGPOOL_FLAG_NO_HUGE_PAGES;
    }
    if (b >> 4) & 7 == 7 {
        flags |= SEGPOOL_FLAG_PREFAULT;
    }
    flags
}

/// Small classes only (so a request above 1 MiB is a dedicated mapping), for pools whose byte
/// has its top bit set; the default classes (an empty list) for the others, which serve every
/// size this target asks for from a class.
const SMALL_CLASSES: [usize; 3] = [4096, 64 << 10, 1 << 20];

fn pool_classes(b: u8) -> &'static [usize] {
    if b & 0x80 != 0 {
        &SMALL_CLASSES
    } else {
        &[]
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut m = Model::default();
    for op in ops.iter().take(128) {
        match op {
            Op::CreatePool(b) => {
                if m.pools.len() < 3 {
                    let classes = pool_classes(*b);
                    let cfg = SegpoolConfig {
                        size_classes: classes.as_ptr(),
                        size_class_count: classes.len(),
                        region_size: 0,
                        budget: 8 << 20,
                        flags: pool_flags(*b),
                    };
                    let mut p = 0;
                    // SAFETY: both pointers are to live locals.
                    assert_eq!(
                        unsafe { segpool_pool_create(&cfg, &mut p) },
                        SegpoolStatus::Ok
                    );
                    m.pools.push(p);
                }
            }
            Op::FreePool(h) => {
                let p = m.resolve(h);
                let st = segpool_pool_free(p);
                if m.pools.contains(&p) {
                    assert_eq!(st, SegpoolStatus::Ok);
                    m.pools.retain(|&x| x != p);
                    m.freed_pools.push(p);
                    for s in m.segments.iter().filter(|s| s.0 == p) {
                        m.released.push(s.1);
                    }
                    m.segments.retain(|s| s.0 != p);
                } else {
                    assert_ne!(
                        st,
                        SegpoolStatus::Ok,
                        "freeing a handle that is not a live pool"
                    );
                }
            }
            Op::Allocate { pool, size } => {
                let p = m.resolve(pool);
                // One request in eight is up to 3 MiB (a large class or a dedicated mapping); the
                // rest stay under 64 KiB, where the small classes and their edges are. Sizes spread
                // evenly up to 3 MiB would spend the run faulting in and filling megabytes.
                let size = match size % 8 {
                    0 => (*size as usize >> 3) % (3 << 20),
                    _ => (*size as usize >> 3) % (64 << 10),
                };
                let mut s = 0;
                // SAFETY: the out pointer is a live local.
                let st = unsafe { segpool_allocate(p, size, 0, &mut s) };
                if st == SegpoolStatus::Ok {
                    assert!(
                        m.pools.contains(&p),
                        "allocated from a handle that is not a live pool"
                    );
                    let mut len = 0;
                    let mut ptr = std::ptr::null_mut();
                    // SAFETY: out pointers are live locals.
                    unsafe {
                        assert_eq!(segpool_segment_len(p, s, &mut len), SegpoolStatus::Ok);
                        assert_eq!(segpool_segment_ptr(p, s, &mut ptr), SegpoolStatus::Ok);
                    }
                    let fill = (s as u8) | 1;
                    // SAFETY: the library says the segment is `len` writable bytes until released.
                    unsafe { stamp(ptr, len, fill) };
                    m.segments.push((p, s, len, fill));
                } else {
                    assert_eq!(s, 0, "a failed allocation wrote a handle");
                }
            }
            Op::Release { pool, segment } => {
                let (p, s) = (m.resolve(pool), m.resolve(segment));
                let st = segpool_release(p, s);
                if let Some(i) = m.segments.iter().position(|x| x.0 == p && x.1 == s) {
                    assert_eq!(st, SegpoolStatus::Ok);
                    m.segments.swap_remove(i);
                    m.released.push(s);
                } else {
                    assert_ne!(st, SegpoolStatus::Ok, "released a handle that is not live");
                }
            }
            Op::Touch { pool, segment } => {
                let (p, s) = (m.resolve(pool), m.resolve(segment));
                let mut ptr = std::ptr::null_mut();
                let mut len = 0;
                // SAFETY: out pointers are live locals.
                let (a, b) = unsafe {
                    (
                        segpool_segment_ptr(p, s, &mut ptr),
                        segpool_segment_len(p, s, &mut len),
                    )
                };
                if let Some(&(_, _, l, fill)) = m.segments.iter().find(|x| x.0 == p && x.1 == s) {
                    assert_eq!((a, b), (SegpoolStatus::Ok, SegpoolStatus::Ok));
                    assert_eq!(len, l);
                    // SAFETY: a live segment of `len` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
                    assert!(stamped(bytes, fill), "a live segment lost its bytes");
                } else {
                    assert_ne!(a, SegpoolStatus::Ok);
                    assert_ne!(b, SegpoolStatus::Ok);
                    assert!(ptr.is_null());
                }
            }
            Op::Stats(h) => {
                let p = m.resolve(h);
                let mut stats = SegpoolStats::default();
                let mut classes = [SegpoolClassStats::default(); 32];
                // SAFETY: out pointers are live locals; `classes` holds 32 entries.
                let st =
                    unsafe { segpool_stats(p, &mut stats, classes.as_mut_ptr(), classes.len()) };
                if m.pools.contains(&p) {
                    assert_eq!(st, SegpoolStatus::Ok);
                    let live = m.segments.iter().filter(|s| s.0 == p).count();
                    assert_eq!(stats.live_segments, live);
                } else {
                    assert_ne!(st, SegpoolStatus::Ok);
                }
            }
            Op::Usage(h) => {
                let p = m.resolve(h);
                let mut usage = SegpoolUsage::default();
                // SAFETY: the out pointer is a live local.
                let st = unsafe { segpool_usage(p, &mut usage) };
                if m.pools.contains(&p) {
                    assert_eq!(st, SegpoolStatus::Ok);
                    let mine = m.segments.iter().filter(|s| s.0 == p);
                    assert_eq!(usage.live_segments, mine.clone().count());
                    assert_eq!(
                        usage.in_use_bytes,
                        mine.map(|s| s.2).sum::<usize>(),
                        "in-use bytes are not the live segments' lengths"
                    );
                    let mut stats = SegpoolStats::default();
                    // SAFETY: the out pointer is a live local; no class array.
                    let st = unsafe { segpool_stats(p, &mut stats, std::ptr::null_mut(), 0) };
                    assert_eq!(st, SegpoolStatus::Ok);
                    assert_eq!(
                        (usage.in_use_bytes, usage.mapped_bytes, usage.cached_bytes),
                        (stats.in_use_bytes, stats.mapped_bytes, stats.cached_bytes),
                        "usage and stats disagree"
                    );
                } else {
                    assert_ne!(st, SegpoolStatus::Ok);
                    assert_eq!(usage, SegpoolUsage::default(), "a refused call wrote");
                }
            }
            Op::Trim(h) => {
                let p = m.resolve(h);
                let mut n = 0;
                // SAFETY: the out pointer is a live local.
                let st = unsafe { segpool_trim(p, &mut n) };
                assert_eq!(st == SegpoolStatus::Ok, m.pools.contains(&p));
            }
        }
    }
    for p in m.pools {
        assert_eq!(segpool_pool_free(p), SegpoolStatus::Ok);
    }
});
