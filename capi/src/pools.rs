//! The pool table: the pools created through the C ABI, and each pool's table of segment slots.
//!
//! Nothing here trusts a handle: every lookup checks the handle's kind, index, serial or
//! generation against state owned by this module before anything is touched, and a handle that
//! fails a check leaves every table exactly as it was.
//!
//! Locks: one global `RwLock` for the pool table (read for lookups, write to create and free
//! pools), one `Mutex` per pool for its slot table. A registered pool's `Arc` is never dropped
//! while the pool table's lock is held, because the last drop takes that lock (`Drop for
//! RegisteredPool` hands its index back); segments are dropped after the slot lock is released.
//! Neither lock is on segpool's own fast path: the Rust API does not use them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{const_rwlock, Mutex, RwLock};
use segpool::{PoolStats, PoolUsage, Segment, SegmentPool};

use crate::handle::{
    self, PoolBits, SegmentBits, GEN_BITS, GEN_MASK, MAX_POOL_INDEX, MAX_SLOTS, SERIAL_LIMIT,
};
use crate::status::{Failure, SegpoolStatus};

/// The longest wait `allocate` accepts; longer timeouts are cut to it (about 34 years), so the
/// deadline arithmetic can never overflow.
const MAX_TIMEOUT_MS: u64 = 1 << 40;

struct PoolEntry {
    /// The serial of the pool registered here, or of the last one that was (0: never used).
    serial: u64,
    /// The pool, while it is registered.
    pool: Option<Arc<RegisteredPool>>,
    /// The generation the next pool at this index starts its slots at.
    gen_floor: u32,
}

struct PoolTable {
    /// Index 0 is a placeholder: no pool has index 0, so no handle is 0.
    entries: Vec<PoolEntry>,
    /// Indices whose pool is gone, oldest first (first-in first-out makes reuse rare).
    free: VecDeque<u16>,
    /// The next serial to hand out; serials below it were issued.
    next_serial: u64,
}

static POOLS: RwLock<PoolTable> = const_rwlock(PoolTable {
    entries: Vec::new(),
    free: VecDeque::new(),
    next_serial: 1,
});

/// One slot of a pool's table. `segment` is `Some` exactly while a handle at `generation` is live.
struct Slot {
    generation: u32,
    segment: Option<Segment>,
}

struct Slots {
    slots: Vec<Slot>,
    /// Empty slots, reused oldest first so each slot's generation advances as slowly as possible.
    free: VecDeque<u32>,
    live: usize,
    /// Set by `segpool_pool_free`: the table is emptied and accepts no new segment.
    closed: bool,
    /// The generation new slots start at.
    gen_floor: u32,
}

/// A pool created through the C ABI: the Rust pool and the table its segment handles index.
pub(crate) struct RegisteredPool {
    index: u16,
    serial: u64,
    pool: SegmentPool,
    slots: Mutex<Slots>,
}

/// Registers `pool` and returns its handle.
pub(crate) fn register(pool: SegmentPool) -> Result<u64, Failure> {
    let mut table = POOLS.write();
    if table.entries.is_empty() {
        table.entries.push(PoolEntry {
            serial: 0,
            pool: None,
            gen_floor: 0,
        });
    }
    let index = match table.free.pop_front() {
        Some(i) => i,
        None if table.entries.len() <= usize::from(MAX_POOL_INDEX) => {
            table.entries.push(PoolEntry {
                serial: 0,
                pool: None,
                gen_floor: 0,
            });
            (table.entries.len() - 1) as u16
        }
        None => {
            drop(table);
            return Err(Failure::new(
                SegpoolStatus::LimitReached,
                format!("{MAX_POOL_INDEX} pools are live already; free one first"),
            ));
        }
    };
    let serial = table.next_serial;
    if serial >= SERIAL_LIMIT {
        table.free.push_front(index);
        return Err(Failure::new(
            SegpoolStatus::LimitReached,
            "every pool serial has been used in this process",
        ));
    }
    table.next_serial += 1;
    let entry = &mut table.entries[usize::from(index)];
    let registered = Arc::new(RegisteredPool {
        index,
        serial,
        pool,
        slots: Mutex::new(Slots {
            slots: Vec::new(),
            free: VecDeque::new(),
            live: 0,
            closed: false,
            gen_floor: entry.gen_floor,
        }),
    });
    entry.serial = serial;
    entry.pool = Some(registered);
    Ok(handle::pool_handle(index, serial))
}

/// The pool behind handle `h`, checked: kind bit, index issued, serial issued, pool still live.
pub(crate) fn lookup(h: u64) -> Result<Arc<RegisteredPool>, Failure> {
    let (index, serial) = match handle::decode_pool(h) {
        PoolBits::Null => {
            return Err(Failure::new(
                SegpoolStatus::NullHandle,
                "pool handle is 0 (the null handle)",
            ))
        }
        PoolBits::NotAPool => {
            return Err(Failure::new(
                SegpoolStatus::InvalidHandle,
                format!("{h:#018x} is not a pool handle (bit 63 is clear: a segment handle?)"),
            ))
        }
        PoolBits::Pool { index, serial } => (index, serial),
    };
    let table = POOLS.read();
    let issued = index != 0
        && usize::from(index) < table.entries.len()
        && serial != 0
        && serial < table.next_serial;
    if !issued {
        return Err(Failure::new(
            SegpoolStatus::InvalidHandle,
            format!(
                "pool handle {h:#018x} (index {index}, serial {serial}) was never issued by this library"
            ),
        ));
    }
    let entry = &table.entries[usize::from(index)];
    match &entry.pool {
        Some(p) if entry.serial == serial => Ok(Arc::clone(p)),
        _ => Err(Failure::new(
            SegpoolStatus::StaleHandle,
            format!(
                "pool handle {h:#018x} (index {index}, serial {serial}) refers to a pool that was freed"
            ),
        )),
    }
}

/// Unregisters the pool behind `h` and releases every segment it still holds.
pub(crate) fn free(h: u64) -> Result<(), Failure> {
    let pool = lookup(h)?;
    let removed = {
        let mut table = POOLS.write();
        let entry = &mut table.entries[usize::from(pool.index)];
        // Another thread may have freed it between the lookup and this lock.
        if entry.serial == pool.serial {
            entry.pool.take()
        } else {
            None
        }
    };
    let Some(removed) = removed else {
        return Err(Failure::new(
            SegpoolStatus::StaleHandle,
            format!("pool handle {h:#018x} refers to a pool that was freed (by another thread, during this call)"),
        ));
    };
    // Empty the table now, so memory goes back even while other threads still hold an `Arc` to
    // this pool in the middle of a call; those calls then find the table closed.
    let segments: Vec<Segment> = {
        let mut slots = removed.slots.lock();
        slots.closed = true;
        slots.live = 0;
        slots
            .slots
            .iter_mut()
            .filter_map(|s| s.segment.take())
            .collect()
    };
    drop(segments);
    drop(removed);
    drop(pool);
    Ok(())
}

impl RegisteredPool {
    /// A new segment of at least `size` bytes, waiting up to `timeout_ms` for room under the budget.
    pub(crate) fn allocate(&self, size: usize, timeout_ms: u64) -> Result<u64, Failure> {
        let segment = if timeout_ms == 0 {
            self.pool.allocate(size)?
        } else {
            let timeout = Duration::from_millis(timeout_ms.min(MAX_TIMEOUT_MS));
            self.pool.allocate_timeout(size, timeout)?
        };
        let mut slots = self.slots.lock();
        if slots.closed {
            drop(slots);
            drop(segment);
            return Err(Failure::new(
                SegpoolStatus::StaleHandle,
                "the pool was freed by another thread during this allocation; the segment was released",
            ));
        }
        let slot = match slots.free.pop_front() {
            Some(slot) => slot,
            None if slots.slots.len() < MAX_SLOTS => {
                let generation = slots.gen_floor;
                slots.slots.push(Slot {
                    generation,
                    segment: None,
                });
                (slots.slots.len() - 1) as u32
            }
            None => {
                drop(slots);
                drop(segment);
                return Err(Failure::new(
                    SegpoolStatus::LimitReached,
                    format!(
                        "this pool holds {MAX_SLOTS} live segments already; release some first"
                    ),
                ));
            }
        };
        let entry = &mut slots.slots[slot as usize];
        debug_assert!(entry.segment.is_none());
        entry.segment = Some(segment);
        let generation = entry.generation;
        slots.live += 1;
        Ok(handle::segment_handle(self.index, slot, generation))
    }

    /// Runs `f` on the live segment behind `h`, checked first (see [`check`]).
    pub(crate) fn with_segment<R>(
        &self,
        h: u64,
        f: impl FnOnce(&mut Segment) -> R,
    ) -> Result<R, Failure> {
        let mut slots = self.slots.lock();
        let slot = self.check(&slots, h)?;
        let segment = slots.slots[slot]
            .segment
            .as_mut()
            .expect("check() found the slot live");
        Ok(f(segment))
    }

    /// Releases the segment behind `h`, checked first; its slot's generation moves on.
    pub(crate) fn release(&self, h: u64) -> Result<(), Failure> {
        let segment = {
            let mut slots = self.slots.lock();
            let slot = self.check(&slots, h)?;
            let entry = &mut slots.slots[slot];
            let segment = entry.segment.take();
            entry.generation = entry.generation.wrapping_add(1) & GEN_MASK;
            slots.free.push_back(slot as u32);
            slots.live -= 1;
            segment
        };
        // Outside the lock: giving the slice back is segpool's business, not the table's.
        drop(segment);
        Ok(())
    }

    /// The Rust pool's stats and the number of live segment handles.
    pub(crate) fn stats(&self) -> (PoolStats, usize) {
        let stats = self.pool.stats();
        (stats, self.slots.lock().live)
    }

    /// The Rust pool's usage and the number of live segment handles.
    pub(crate) fn usage(&self) -> (PoolUsage, usize) {
        let usage = self.pool.usage();
        (usage, self.slots.lock().live)
    }

    /// Unmaps the regions that hold no segment; returns the bytes unmapped.
    pub(crate) fn trim(&self) -> usize {
        self.pool.trim()
    }

    /// Checks segment handle `h` against this pool's table: kind bit, owning pool, slot issued,
    /// generation current and slot live. Returns the slot index.
    fn check(&self, slots: &Slots, h: u64) -> Result<usize, Failure> {
        let (index, slot, generation) = match handle::decode_segment(h) {
            SegmentBits::Null => {
                return Err(Failure::new(
                    SegpoolStatus::NullHandle,
                    "segment handle is 0 (the null handle)",
                ))
            }
            SegmentBits::NotASegment => {
                return Err(Failure::new(
                    SegpoolStatus::InvalidHandle,
                    format!("{h:#018x} is not a segment handle (bit 63 is set: a pool handle?)"),
                ))
            }
            SegmentBits::Segment {
                index,
                slot,
                generation,
            } => (index, slot, generation),
        };
        let this = handle::pool_handle(self.index, self.serial);
        if index != self.index {
            return Err(Failure::new(
                SegpoolStatus::WrongPool,
                format!(
                    "segment handle {h:#018x} belongs to the pool at index {index}, not to pool {this:#018x} (index {})",
                    self.index
                ),
            ));
        }
        if slots.closed {
            return Err(Failure::new(
                SegpoolStatus::StaleHandle,
                format!("segment handle {h:#018x}: pool {this:#018x} was freed"),
            ));
        }
        let Some(entry) = slots.slots.get(slot as usize) else {
            return Err(Failure::new(
                SegpoolStatus::InvalidHandle,
                format!(
                    "segment handle {h:#018x}: slot {slot} was never issued by pool {this:#018x} ({} slots so far)",
                    slots.slots.len()
                ),
            ));
        };
        let current = entry.generation;
        if generation == current {
            return if entry.segment.is_some() {
                Ok(slot as usize)
            } else {
                Err(Failure::new(
                    SegpoolStatus::InvalidHandle,
                    format!(
                        "segment handle {h:#018x}: slot {slot} is empty and generation {generation} was never handed out"
                    ),
                ))
            };
        }
        // How far the slot has moved on since `generation`; more than half the cycle back means
        // "ahead", a generation this slot has not reached (a forged handle).
        let behind = current.wrapping_sub(generation) & GEN_MASK;
        if behind > 1 << (GEN_BITS - 1) {
            return Err(Failure::new(
                SegpoolStatus::InvalidHandle,
                format!(
                    "segment handle {h:#018x}: slot {slot} is at generation {current}; generation {generation} was never handed out"
                ),
            ));
        }
        let what = match (behind, entry.segment.is_some()) {
            (1, false) => "was released already (a double release?)".to_string(),
            (_, true) => {
                format!("was released; the slot now holds another segment (generation {current})")
            }
            (_, false) => format!("was released (the slot is at generation {current}, empty)"),
        };
        Err(Failure::new(
            SegpoolStatus::StaleHandle,
            format!("segment handle {h:#018x} (slot {slot}, generation {generation}) {what}"),
        ))
    }
}

impl Drop for RegisteredPool {
    /// The last reference is gone: no call can touch this index's table any more, so the index
    /// can be reused, and the next pool there starts its generations past every one issued here.
    fn drop(&mut self) {
        let slots = self.slots.get_mut();
        let floor = slots
            .slots
            .iter()
            .map(|s| s.generation)
            .max()
            .map_or(slots.gen_floor, |g| g.wrapping_add(1) & GEN_MASK);
        let mut table = POOLS.write();
        if let Some(entry) = table.entries.get_mut(usize::from(self.index)) {
            entry.gen_floor = floor;
        }
        table.free.push_back(self.index);
    }
}
