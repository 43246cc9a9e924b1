//! Region observers (the io_uring fixed-buffer table, `src/uring.rs`), without a ring: a recorder
//! stands for the table. It asserts what the kernel relies on: a region it is told about is
//! mapped, a region it clears is still mapped, and nothing is cleared while a fixed operation on
//! a live segment of the region runs (a shadow cell stands for the kernel's use of the slot; loom
//! reports the operation's access and the clear as a data race unless one is ordered before the
//! other).

use std::collections::HashMap;

use loom::cell::UnsafeCell;
use loom::sync::Mutex;
use loom::thread;

use super::{class, model, pool, take_one, unmapped_regions, write};
use crate::observer::{RegionInfo, RegionObserver};
use crate::pool::thread_cache::release_direct;
use crate::region::RegionRef;
use crate::sync::epoch;

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
        class(&shared).retire_empty(usize::MAX, &epoch::pin());
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
        class(&shared).retire_empty(usize::MAX, &epoch::pin());
        io.join().unwrap();
        class(&shared).retire_empty(usize::MAX, &epoch::pin());
        assert_eq!(unmapped_regions(&shared), 1, "destroyed exactly once");
        assert_eq!(rec.cleared.lock().unwrap().len(), 1, "cleared exactly once");
        // SAFETY: every thread that touched the cell has been joined.
        assert_eq!(rec.kernel.with(|k| unsafe { *k }), 2);
        drop(pool);
    });
}
