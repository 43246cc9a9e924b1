//! Loom models of segpool's concurrent protocols, one file per protocol:
//!
//! * `region.rs`: the region protocol, allocate, release, retire and close racing each other;
//! * `purge.rs`: the purger racing allocations, releases and the retire of a region;
//! * `observer.rs`: region observers (the io_uring fixed-buffer table) told of maps and unmaps;
//! * `gate.rs`: the access gate of mapped files racing a resize;
//! * `cache.rs`: the thread caches over the region protocol.
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
//!
//! Each model prints how many executions it explored (`--nocapture`); docs/design.md
//! ("Loom") lists them with the time each takes.

use loom::sync::Arc;

use crate::class_pool::ClassPool;
use crate::pool::PoolShared;
use crate::region::RegionRef;
use crate::sync::atomic::Ordering;
use crate::sync::epoch;
use crate::SegmentPool;

const PAGE: usize = 4096;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    // The number of executions explored, printed (with `--nocapture`) to size the models.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom: {} executions (preemption bound {:?})",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        builder.preemption_bound
    );
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
    let (region, addr, _) = take_tagged(shared);
    (region, addr)
}

fn write(addr: usize, byte: u8) {
    // SAFETY: the model owns the slice at `addr` (it took it and has not released it).
    unsafe { (addr as *mut u8).write_volatile(byte) };
}

fn unmapped_regions(shared: &PoolShared) -> u64 {
    class(shared).regions_unmapped.load(Ordering::Relaxed)
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

#[path = "region.rs"]
mod region_models;

#[path = "purge.rs"]
mod purge_models;

#[path = "observer.rs"]
mod observer_models;

#[path = "gate.rs"]
mod gate_models;

#[path = "cache.rs"]
mod cache_models;
