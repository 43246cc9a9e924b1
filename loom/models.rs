//! Loom models of the region protocol: allocate, release and retire racing each other.
//!
//! Run with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" cargo test --lib --release loom_models`
//! (`.ci/loom` does exactly that). The models drive the real `ClassPool`/`Region` code through the
//! crate's sync shim, so every atomic and lock in them is loom's, including crossbeam-epoch's.
//! Each checks the invariants of `docs/design.md`:
//!
//! * a slice is never handed to two owners at once (a loom `UnsafeCell` per slice catches an
//!   access that is not ordered after the previous owner's);
//! * a region is destroyed exactly once, after its last slice came back (the mapped byte count
//!   and the unmapped-region count say so, and `destroy` asserts it runs once);
//! * memory of a slice that is out is never unmapped (the owner writes to it after the race;
//!   an unmapped page would crash the model);
//! * a region with room is listed as such once the races settle (`ClassPool::check_with_room`),
//!   so a refill finds it without scanning and without mapping.

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use crate::class_pool::ClassPool;
use crate::pool::PoolShared;
use crate::region::RegionRef;
use crate::sync::atomic::Ordering;
use crate::sync::epoch;
use crate::thread_cache::release_direct;
use crate::SegmentPool;

const PAGE: usize = 4096;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// One class of 4 KiB slices, `slices` per region, no thread caches.
fn pool(slices: usize, retain_empty: usize) -> (SegmentPool, Arc<PoolShared>) {
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .region_size(slices * PAGE)
        .retain_empty_regions(retain_empty)
        .empty_region_grace(std::time::Duration::ZERO)
        .thread_cache(false)
        .huge_pages(false)
        .build()
        .expect("model pool");
    let shared = pool.shared().clone();
    (pool, shared)
}

fn class(shared: &PoolShared) -> &ClassPool {
    &shared.classes[0]
}

fn take_one(shared: &Arc<PoolShared>) -> (RegionRef, usize) {
    let guard = epoch::pin();
    let mut out = [0usize; 1];
    let (region, n) = class(shared)
        .take(shared, &mut out, &guard)
        .expect("no budget set");
    assert_eq!(n, 1);
    (region, out[0] & !crate::region::ZERO_TAG)
}

fn write(addr: usize, byte: u8) {
    // SAFETY: the model owns the slice at `addr` (it took it and has not released it).
    unsafe { (addr as *mut u8).write_volatile(byte) };
}

fn unmapped_regions(shared: &PoolShared) -> u64 {
    class(shared).regions_unmapped.load(Ordering::Relaxed)
}

#[test]
fn release_racing_the_retire_of_its_region() {
    // The release empties the region (and, with nothing retained, retires it) while `trim`
    // retires empty regions: one of them wins, the region is destroyed exactly once.
    model(|| {
        let (pool, shared) = pool(1, 0);
        let (region, addr) = take_one(&shared);
        let t = thread::spawn(move || {
            write(addr, 1);
            // SAFETY: the slice was taken above and is released once.
            unsafe { release_direct(region, addr) };
        });
        let trimmed = class(&shared).retire_empty(None, usize::MAX, &epoch::pin());
        t.join().unwrap();
        assert!(trimmed == 0 || trimmed == PAGE);
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
        drop(pool);
    });
}

#[test]
fn release_racing_the_close_of_the_pool() {
    // The pool is dropped (every region retired, in use or not) while a segment is released.
    model(|| {
        let (pool, shared) = pool(1, 1);
        let (region, addr) = take_one(&shared);
        let t = thread::spawn(move || {
            write(addr, 1);
            // SAFETY: the slice was taken above and is released once.
            unsafe { release_direct(region, addr) };
        });
        drop(pool);
        t.join().unwrap();
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
    });
}

#[test]
fn allocate_racing_the_retire() {
    // A free slice in an empty region: one thread takes it while another retires empty regions.
    // Either the take wins (the region survives and its memory stays mapped while the slice is
    // out) or the retire wins (the taker maps a fresh region).
    model(|| {
        let (pool, shared) = pool(1, 1);
        let (region, addr) = take_one(&shared);
        // SAFETY: the slice taken above keeps the region alive.
        let original = unsafe { region.get() }.id;
        // SAFETY: taken above, released once; the region stays (one empty region is retained).
        unsafe { release_direct(region, addr) };
        let s2 = shared.clone();
        let t = thread::spawn(move || {
            let (r, a) = take_one(&s2);
            write(a, 2);
            (r, a)
        });
        let trimmed = class(&shared).retire_empty(None, usize::MAX, &epoch::pin());
        let (r, a) = t.join().unwrap();
        // SAFETY: the slice the thread took keeps its region alive.
        let same = unsafe { r.get() }.id == original;
        if trimmed == 0 {
            assert!(
                same && a == addr,
                "the retire lost, so the take got the original slice"
            );
        } else {
            // A region mapped after the unmap may reuse the address: its id tells.
            assert!(
                !same,
                "the retire won, so no slice of its region is handed out"
            );
        }
        write(a, 3);
        // SAFETY: taken by the thread above, released once.
        unsafe { release_direct(r, a) };
        drop(pool);
        assert_eq!(shared.budget.used(), 0, "every region unmapped in the end");
    });
}

#[test]
fn two_releases_racing_to_be_last_out_of_a_retired_region() {
    model(|| {
        let (pool, shared) = pool(2, 1);
        let guard = epoch::pin();
        let mut out = [0usize; 2];
        let (region, n) = class(&shared).take(&shared, &mut out, &guard).unwrap();
        drop(guard);
        assert_eq!(n, 2);
        let [a, b] = out.map(|x| x & !crate::region::ZERO_TAG);
        let releasers: Vec<_> = [a, b]
            .into_iter()
            .map(|addr| {
                thread::spawn(move || {
                    write(addr, 4);
                    // SAFETY: each slice was taken above and is released once, here.
                    unsafe { release_direct(region, addr) };
                })
            })
            .collect();
        // The pool closes (retiring the region with both slices out) while they release.
        drop(pool);
        for r in releasers {
            r.join().unwrap();
        }
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
    });
}

#[test]
fn allocate_racing_a_release_on_a_one_slice_region() {
    // The new owner's access must be ordered after the old owner's last access: loom reports
    // an unsynchronised pair of accesses to the shadow cell as a data race.
    model(|| {
        let (pool, shared) = pool(1, 1);
        let (region, addr) = take_one(&shared);
        let shadow = Arc::new(UnsafeCell::new(0u8));
        let sh = shadow.clone();
        let releaser = thread::spawn(move || {
            // SAFETY: loom checks this access; the old owner writes its last byte.
            sh.with_mut(|p| unsafe { *p = 1 });
            write(addr, 1);
            // SAFETY: taken above, released once.
            unsafe { release_direct(region, addr) };
        });
        let s2 = shared.clone();
        let sh = shadow.clone();
        let taker = thread::spawn(move || {
            let (r, a) = take_one(&s2);
            if a == addr {
                // SAFETY: loom checks this access against the previous owner's.
                sh.with_mut(|p| unsafe { *p = 2 });
            }
            write(a, 2);
            // SAFETY: taken above, released once.
            unsafe { release_direct(r, a) };
        });
        releaser.join().unwrap();
        taker.join().unwrap();
        drop(pool);
        assert_eq!(shared.budget.used(), 0);
    });
}

#[test]
fn a_release_out_of_full_racing_a_refill() {
    // A two-slice region with both slices out: one comes back (the region goes from full to not
    // full, and the give-back lists it as having room again) while another thread refills, which
    // either finds that slice or maps a second region. Afterwards every region with room is
    // listed, and the next refill takes from the oldest of them without mapping.
    model(|| {
        let (pool, shared) = pool(2, 1);
        let (r0, a) = take_one(&shared);
        let (r1, b) = take_one(&shared);
        assert_eq!(r0, r1, "one region");
        let releaser = thread::spawn(move || {
            // SAFETY: taken above, released once.
            unsafe { release_direct(r0, a) };
        });
        let (r2, c) = take_one(&shared);
        releaser.join().unwrap();
        let class = class(&shared);
        class.check_with_room();
        let mapped = class.regions_mapped.load(Ordering::Relaxed);
        let snapshot = class.snapshot();
        let (r3, d) = take_one(&shared);
        if snapshot.out < snapshot.slices {
            assert_eq!(
                class.regions_mapped.load(Ordering::Relaxed),
                mapped,
                "a region had room, yet the refill mapped one"
            );
            if mapped == 2 {
                assert_eq!(r3, r0, "the older region fills first");
            }
        }
        class.check_with_room();
        for (r, x) in [(r1, b), (r2, c), (r3, d)] {
            // SAFETY: each taken above, released once.
            unsafe { release_direct(r, x) };
        }
        drop(pool);
        assert_eq!(shared.budget.used(), 0);
    });
}

/// Takes one slice; returns its region, address, and whether it came marked known-zero.
fn take_tagged(shared: &Arc<PoolShared>) -> (RegionRef, usize, bool) {
    let guard = epoch::pin();
    let mut out = [0usize; 1];
    let (region, n) = class(shared)
        .take(shared, &mut out, &guard)
        .expect("no budget set");
    assert_eq!(n, 1);
    let zero = out[0] & crate::region::ZERO_TAG != 0;
    (region, out[0] & !crate::region::ZERO_TAG, zero)
}

fn read(addr: usize) -> u8 {
    // SAFETY: the model owns the slice at `addr` (it took it and has not released it).
    unsafe { (addr as *const u8).read_volatile() }
}

fn purge_all(shared: &PoolShared) -> usize {
    shared.purge(crate::region::PurgeMode::All)
}

#[test]
fn purge_racing_allocate_and_release() {
    // A two-slice region: one slice live, one free and dirty. The purger purges while another
    // thread takes a slice, writes it, and releases it and the live one. Whatever the
    // interleaving: a slice handed out marked known-zero reads zero (it was not handed out
    // half-purged), a slice that is out never has its bytes changed (the purge never touched
    // a live slice), and every region is destroyed exactly once in the end.
    model(|| {
        let (pool, shared) = pool(2, 1);
        let (ra, a, _) = take_tagged(&shared);
        let (rb, b, _) = take_tagged(&shared);
        write(a, 7);
        write(b, 9);
        // SAFETY: taken above, released once.
        unsafe { release_direct(rb, b) };
        let s1 = shared.clone();
        let taker = thread::spawn(move || {
            let (r, x, zero) = take_tagged(&s1);
            if zero {
                assert_eq!(read(x), 0, "a slice marked zero was not purged yet");
            }
            write(x, 5);
            assert_eq!(read(a), 7, "a live slice was purged");
            // SAFETY: taken above, released once; `a` was taken by the model and is released
            // once, here.
            unsafe {
                release_direct(r, x);
                release_direct(ra, a);
            }
        });
        purge_all(&shared);
        taker.join().unwrap();
        drop(pool);
        assert_eq!(shared.budget.used(), 0, "every region unmapped in the end");
        let mapped = class(&shared).regions_mapped.load(Ordering::Relaxed);
        assert_eq!(unmapped_regions(&shared), mapped, "each destroyed once");
    });
}

#[test]
fn purge_racing_the_retire_of_its_region() {
    // The last live slice is released and the pool closes (retiring the region) while the
    // purger holds the free slice: the region is unmapped exactly once, never under the purge.
    model(|| {
        let (pool, shared) = pool(2, 0);
        let (ra, a, _) = take_tagged(&shared);
        let (rb, b, _) = take_tagged(&shared);
        write(b, 9);
        // SAFETY: taken above, released once.
        unsafe { release_direct(rb, b) };
        let s1 = shared.clone();
        let purger = thread::spawn(move || purge_all(&s1));
        write(a, 3);
        // SAFETY: taken above, released once.
        unsafe { release_direct(ra, a) };
        drop(pool);
        purger.join().unwrap();
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(shared.budget.used(), 0);
    });
}

// Region observers (the io_uring fixed-buffer table, `src/uring.rs`), without a ring: a recorder
// stands for the table. It asserts what the kernel relies on: a region it is told about is
// mapped, a region it clears is still mapped, and nothing is cleared while a fixed operation on
// a live segment of the region runs (a shadow cell stands for the kernel's use of the slot; loom
// reports the operation's access and the clear as a data race unless one is ordered before the
// other).

mod observer_models {
    use std::collections::HashMap;

    use loom::cell::UnsafeCell;
    use loom::sync::Mutex;
    use loom::thread;

    use super::{class, model, pool, take_one, unmapped_regions, write};
    use crate::observer::{RegionInfo, RegionObserver};
    use crate::region::RegionRef;
    use crate::sync::epoch;
    use crate::thread_cache::release_direct;

    #[derive(Default)]
    struct Recorder {
        /// Region id to slot, as the fixed-buffer table keeps it.
        slots: Mutex<HashMap<u64, u16>>,
        /// Every region cleared, in order.
        cleared: Mutex<Vec<u64>>,
        /// The kernel's use of the slots' memory.
        kernel: UnsafeCell<u32>,
    }

    // SAFETY: `kernel` is only touched through loom's checked accessors (a data race is a model
    // failure, not undefined behaviour in the model); every other field is a loom mutex.
    unsafe impl Sync for Recorder {}

    impl Recorder {
        fn slot_of(&self, region: RegionRef) -> Option<u16> {
            // SAFETY: callers hold a slice of the region.
            let id = unsafe { region.get() }.id;
            self.slots.lock().unwrap().get(&id).copied()
        }

        /// A fixed operation on a segment of a registered region: the kernel touches the slot.
        fn fixed_io(&self) {
            // SAFETY: loom checks this access against the clear in `unmapping`.
            self.kernel.with_mut(|k| unsafe { *k += 1 });
        }
    }

    impl RegionObserver for Recorder {
        fn mapped(&self, r: &RegionInfo) -> std::io::Result<()> {
            let mut slots = self.slots.lock().unwrap();
            if !slots.contains_key(&r.id) {
                // The kernel pins the pages: the memory must be mapped.
                touch(r.base);
                let n = slots.len() as u16;
                slots.insert(r.id, n);
            }
            Ok(())
        }

        fn unmapping(&self, r: &RegionInfo) {
            if self.slots.lock().unwrap().remove(&r.id).is_none() {
                return;
            }
            // The clear: the kernel lets go of the slot, whose memory is still mapped.
            // SAFETY: loom checks this access against every fixed operation's.
            self.kernel.with_mut(|k| unsafe { *k += 1 });
            touch(r.base);
            self.cleared.lock().unwrap().push(r.id);
        }
    }

    /// Reads a byte of a region as the kernel's pin would (an unmapped page crashes the model).
    fn touch(addr: usize) {
        // SAFETY: the observer protocol says the region is mapped during the call; a volatile
        // read of a byte of it races with nothing the model checks.
        unsafe { (addr as *const u8).read_volatile() };
    }

    fn observer(rec: &std::sync::Arc<Recorder>) -> std::sync::Arc<dyn RegionObserver> {
        rec.clone()
    }

    #[test]
    fn observer_added_while_a_region_is_mapped_learns_of_it() {
        // `register` walks the class lists while another thread maps a region: the region is
        // reported by the growth or found by the walk, and its slot is cleared when it goes.
        model(|| {
            let (pool, shared) = pool(1, 0);
            let rec = std::sync::Arc::new(Recorder::default());
            let s2 = shared.clone();
            let grower = thread::spawn(move || take_one(&s2));
            shared.add_observer(observer(&rec)).unwrap();
            let (region, addr) = grower.join().unwrap();
            assert!(
                rec.slot_of(region).is_some(),
                "a region mapped while the observer joined was missed"
            );
            rec.fixed_io();
            // SAFETY: this slice was taken above and is released once.
            unsafe { release_direct(region, addr) };
            class(&shared).retire_empty(None, usize::MAX, &epoch::pin());
            assert_eq!(unmapped_regions(&shared), 1);
            assert_eq!(rec.cleared.lock().unwrap().len(), 1, "cleared exactly once");
            assert!(rec.slots.lock().unwrap().is_empty());
            drop(pool);
        });
    }

    #[test]
    fn fixed_io_on_a_live_segment_racing_the_release_and_retire_of_its_region() {
        // One thread runs a fixed operation on its segment and then releases it; the other
        // releases the region's other segment and trims. Whoever is last destroys the region;
        // the clear must come after the operation, and exactly once.
        model(|| {
            let (pool, shared) = pool(2, 0);
            let rec = std::sync::Arc::new(Recorder::default());
            shared.add_observer(observer(&rec)).unwrap();
            let guard = epoch::pin();
            let mut out = [0usize; 2];
            let (region, n) = class(&shared).take(&shared, &mut out, &guard).unwrap();
            drop(guard);
            assert_eq!(n, 2);
            let [a, b] = out.map(|x| x & !crate::region::ZERO_TAG);
            let r2 = rec.clone();
            let io = thread::spawn(move || {
                r2.slot_of(region)
                    .expect("a live segment's region has a slot");
                r2.fixed_io();
                write(a, 9);
                // SAFETY: taken above, released once, after its operation completed.
                unsafe { release_direct(region, a) };
            });
            // SAFETY: taken above, released once.
            unsafe { release_direct(region, b) };
            class(&shared).retire_empty(None, usize::MAX, &epoch::pin());
            io.join().unwrap();
            class(&shared).retire_empty(None, usize::MAX, &epoch::pin());
            assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
            assert_eq!(rec.cleared.lock().unwrap().len(), 1, "cleared exactly once");
            // SAFETY: every thread that touched the cell has been joined.
            assert_eq!(rec.kernel.with(|k| unsafe { *k }), 2);
            drop(pool);
        });
    }
}

// The access gate of mapped files (`src/fs/gate/`), in its fallback form: under loom both the
// reader fence and the resizer barrier are `fence(SeqCst)` (there is no `membarrier`). A shadow
// cell stands for the mapping: readers read it inside an access, the resizer writes it while it
// holds the resize (as a cut or an unmap would); loom reports a read that is not ordered before
// or after that write as a data race, that is a resize that acted while an access ran.

mod gate_models {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    use super::model;
    use crate::fs::gate::{Gate, ReaderSlot, ScopedAccess};

    struct Shared {
        gate: Gate,
        slots: [ReaderSlot; 2],
        mapping: UnsafeCell<u32>,
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            gate: Gate::default(),
            slots: [ReaderSlot::fenced(), ReaderSlot::fenced()],
            mapping: UnsafeCell::new(0),
        })
    }

    fn read(s: &Shared) -> u32 {
        // SAFETY: loom checks that no resize writes the cell concurrently.
        s.mapping.with(|p| unsafe { *p })
    }

    /// A resize scanning the model's slots; writes the shadow mapping while it holds the gate.
    fn resize(s: &Shared, value: u32) {
        let g = s
            .gate
            .resize_with(|addr| s.slots.iter().any(|slot| slot.names(addr)))
            .unwrap();
        // SAFETY: loom checks that no access reads the cell concurrently.
        s.mapping.with_mut(|p| unsafe { *p = value });
        drop(g);
    }

    #[test]
    fn gate_fast_path_access_racing_a_resize() {
        model(|| {
            let s = shared();
            let s2 = s.clone();
            let reader = thread::spawn(move || {
                // Enter, read, leave; then once more (the slot is reused).
                let mut seen = 0;
                for _ in 0..2 {
                    if let Some(g) = s2.gate.try_enter_in(&s2.slots[0]) {
                        seen = seen.max(read(&s2));
                        drop(g);
                    }
                }
                seen
            });
            resize(&s, 1);
            let seen = reader.join().unwrap();
            assert!(seen <= 1);
            // Both slots free, the gate open again.
            let g = s.gate.try_enter_in(&s.slots[1]).expect("gate reopened");
            assert_eq!(read(&s), 1);
            drop(g);
        });
    }

    #[test]
    fn gate_fast_and_counted_accesses_racing_a_resize() {
        // A counted access (under loom `try_enter` always counts) beside a fast-path one.
        model(|| {
            let s = shared();
            let (s2, s3) = (s.clone(), s.clone());
            let fast = thread::spawn(move || {
                if let Some(g) = s2.gate.try_enter_in(&s2.slots[0]) {
                    read(&s2);
                    drop(g);
                }
            });
            let counted = thread::spawn(move || {
                if let Some(g) = s3.gate.try_enter() {
                    read(&s3);
                    drop(g);
                }
            });
            resize(&s, 1);
            fast.join().unwrap();
            counted.join().unwrap();
        });
    }

    #[test]
    fn gate_nested_entry_never_joins_an_active_resize() {
        // A thread inside a `with_bytes` closure (of another file) enters while a resize of this
        // gate is pending, but never once the resize acts.
        model(|| {
            let s = shared();
            let s2 = s.clone();
            let nested = thread::spawn(move || {
                let _scope = ScopedAccess::begin();
                let g = s2.gate.enter();
                read(&s2);
                drop(g);
            });
            resize(&s, 1);
            nested.join().unwrap();
        });
    }
}

// The thread caches (`src/thread_cache/`) over the region protocol: pools built with
// `thread_cache(true)`, driven through the public API, so every allocation and release takes the
// path it takes by default (the `const` thread-local mirror, then the per-thread slots). The
// slots are the sync shim's `UnsafeCell`, loom's under `cfg(loom)`: a slot access that another
// thread's could race is reported. Thread-locals are loom's too, dropped when a model thread
// ends, so a thread's exit gives its cache back inside the model.

mod cache_models {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    use super::{model, PAGE};
    use crate::thread_cache::exit_current_thread;
    use crate::{Segment, SegmentPool};

    /// A model thread that ends as a std thread does: its caches are given back before it can be
    /// joined (see `exit_current_thread`).
    fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> thread::JoinHandle<T> {
        thread::spawn(move || {
            let r = f();
            exit_current_thread();
            r
        })
    }

    /// Classes of `sizes`, `slices` slices per region, thread caches on, nothing retained.
    fn cached_pool(sizes: &[usize], slices: usize) -> SegmentPool {
        cached_pool_retaining(sizes, slices, 0)
    }

    fn cached_pool_retaining(sizes: &[usize], slices: usize, retain: usize) -> SegmentPool {
        SegmentPool::builder()
            .size_classes(sizes)
            .region_size(slices * sizes[sizes.len() - 1])
            .retain_empty_regions(retain)
            .empty_region_grace(std::time::Duration::ZERO)
            .thread_cache(true)
            .huge_pages(false)
            .build()
            .expect("model pool")
    }

    /// A loom cell per slice of the first region, standing for the slice's bytes: each owner
    /// writes it, so loom reports two owners whose accesses are not ordered by the protocol.
    struct Shadows(Vec<(usize, UnsafeCell<u8>)>);

    impl Shadows {
        fn of(segs: &[&Segment]) -> Arc<Self> {
            Arc::new(Self(
                segs.iter()
                    .map(|s| (s.as_ptr() as usize, UnsafeCell::new(0)))
                    .collect(),
            ))
        }

        /// The owner of `seg` writes its bytes (and its shadow, when it has one: a slice of a
        /// region mapped later has none).
        fn own(&self, seg: &mut Segment, byte: u8) {
            let addr = seg.as_ptr() as usize;
            if let Some((_, cell)) = self.0.iter().find(|(a, _)| *a == addr) {
                // SAFETY: loom checks this access against every other owner's.
                cell.with_mut(|p| unsafe { *p = byte });
            }
            // SAFETY: the segment is ours; an unmapped page would crash the model.
            unsafe { seg.as_mut_ptr().write_volatile(byte) };
        }
    }

    #[test]
    fn cache_give_back_at_thread_exit_racing_trim_and_a_refill() {
        // A slice allocated here is released on another thread (into that thread's cache) and
        // given back when the thread exits, while this thread trims (its own cache goes back, the
        // generation moves, empty regions are unmapped) and refills its cache from the region.
        model(|| {
            let pool = cached_pool(&[PAGE], 2);
            // One refill brings both slices of the region: one handed out, one cached.
            let mut a = pool.allocate(PAGE).unwrap();
            let mut b = pool.allocate(PAGE).unwrap();
            assert_eq!(pool.stats().mapped_bytes, 2 * PAGE, "one region");
            let shadows = Shadows::of(&[&a, &b]);
            shadows.own(&mut a, 1);
            shadows.own(&mut b, 1);
            let sh = shadows.clone();
            let t = spawn(move || {
                sh.own(&mut a, 2);
                // Into this thread's cache; back to the region when the thread exits.
                drop(a);
            });
            drop(b);
            pool.trim();
            let mut c = pool.allocate(PAGE).unwrap();
            shadows.own(&mut c, 3);
            t.join().unwrap();
            shadows.own(&mut c, 4);
            drop(c);
            pool.trim();
            let stats = pool.stats();
            assert_eq!(stats.cached_bytes, 0, "{stats}");
            assert_eq!(stats.classes[0].in_use, 0, "{stats}");
            assert_eq!(stats.mapped_bytes, 0, "every region unmapped: {stats}");
            drop(pool);
            exit_current_thread();
        });
    }

    #[test]
    fn two_caches_refill_from_one_region_and_give_back_at_exit() {
        // Two threads allocate through their caches at once: both refills race for the slices of
        // one empty region (a batch each, or one thread gets both), each owner writes its slice,
        // and each thread's exit gives its cache back to the region the other may be taking from.
        model(|| {
            let pool = cached_pool_retaining(&[PAGE], 2, 1);
            let mut a = pool.allocate(PAGE).unwrap();
            let mut b = pool.allocate(PAGE).unwrap();
            let shadows = Shadows::of(&[&a, &b]);
            shadows.own(&mut a, 1);
            shadows.own(&mut b, 1);
            drop((a, b));
            // Both slices back in the region, which stays mapped (one empty region is kept).
            exit_current_thread();
            let threads: Vec<_> = (0..2u8)
                .map(|i| {
                    let (p, sh) = (pool.clone(), shadows.clone());
                    spawn(move || {
                        let mut s = p.allocate(PAGE).unwrap();
                        sh.own(&mut s, 2 + i);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let stats = pool.stats();
            assert_eq!(stats.classes[0].in_use, 0, "{stats}");
            assert_eq!(
                stats.cached_bytes, 0,
                "every cache went back at exit: {stats}"
            );
            pool.trim();
            assert_eq!(pool.stats().mapped_bytes, 0, "every region unmapped");
            drop(pool);
            exit_current_thread();
        });
    }

    #[test]
    fn trim_generation_bump_reaches_a_caching_thread() {
        // A thread with a cached slice of class 0 makes calls into the pool (in class 1) while
        // another thread trims. Its first call after the trim returned gives its whole cache
        // back before caching anything: whatever the interleaving, the cache of class 0 holds
        // just the slice released after the trim.
        model(|| {
            let pool = cached_pool(&[PAGE, 2 * PAGE], 2);
            let ready = Arc::new(AtomicBool::new(false));
            let trimmed = Arc::new(AtomicBool::new(false));
            let (p, r, tr) = (pool.clone(), ready.clone(), trimmed.clone());
            let t = spawn(move || {
                let a1 = p.allocate(PAGE).unwrap();
                drop(p.allocate(PAGE).unwrap());
                // One slice of class 0 cached, one out.
                r.store(true, Ordering::Release);
                // Racing the trim.
                drop(p.allocate(2 * PAGE).unwrap());
                while !tr.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                drop(a1);
                let cached = p.stats().classes[0].cached;
                assert_eq!(cached, 1, "the cache was given back after the trim");
            });
            while !ready.load(Ordering::Acquire) {
                thread::yield_now();
            }
            pool.trim();
            trimmed.store(true, Ordering::Release);
            t.join().unwrap();
            pool.trim();
            assert_eq!(pool.stats().mapped_bytes, 0, "every region unmapped");
            drop(pool);
            exit_current_thread();
        });
    }
}
