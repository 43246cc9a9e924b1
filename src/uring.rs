//! io_uring fixed buffers over a pool's regions (feature `io-uring`).
//!
//! [`FixedBuffers::register`] gives a ring a sparse table of fixed buffers and puts every region
//! of the pool in a slot of it, one slot per region; from then on the pool keeps the table up to
//! date: a region mapped later gets a free slot, and a region's slot is cleared *before* its
//! memory is unmapped. [`FixedBuffers::index_of`] gives the slot of a segment's region, the
//! `buf_index` of `opcode::ReadFixed` and `opcode::WriteFixed` with the segment's own address.
//!
//! # The protocol
//!
//! The table is a `crate::observer::RegionObserver` of the pool (the module docs there say when
//! it is called). It keeps its own descriptor of the ring (a `dup`), because the pool maps and
//! unmaps regions on whichever thread allocates, releases or trims, long after the call that
//! borrowed the ring returned.
//!
//! * **Mapped**: a free slot is updated to the region's whole range
//!   (`IORING_REGISTER_BUFFERS_UPDATE`): the kernel pins the pages (faulting them in) and the
//!   slot's buffer covers every slice of the region. A region the table cannot take (no free
//!   slot, or the kernel refused, e.g. at `RLIMIT_MEMLOCK`) is counted in
//!   [`refused`](FixedBuffers::refused); its segments have no index and are read or written with
//!   the ordinary opcodes.
//! * **Unmapping**: the slot is updated to an empty buffer, the kernel drops the table's pin,
//!   then (back in `region::destroy`) the memory is unmapped and the slot is free for the next
//!   region. A slot whose clearing failed is never reused (counted in `stuck`): the kernel still
//!   holds its pages, which stay pinned, not mapped, until the table is unregistered.
//! * **In-flight I/O**: a fixed operation names a segment's address; the caller keeps the
//!   segment alive until the completion arrives (the contract of `SubmissionQueue::push`). A live
//!   segment keeps its region's count above zero, so the region is not destroyed and its slot not
//!   cleared while the operation runs. Even where that contract is broken (the segment dropped
//!   while the kernel writes), the kernel's request holds its own reference on the pinned pages,
//!   so it writes into those pages and never into whatever is mapped at the address later.
//!
//! `docs/design.md` ("io_uring fixed buffers") gives the argument in full; `loom/observer.rs`
//! checks the new steps.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use io_uring::{cqueue, squeue, IoUring};
use rustix::io_uring::{
    io_uring_ptr, io_uring_register, io_uring_rsrc_update2, iovec, IoringRegisterOp,
};

use crate::observer::{RegionInfo, RegionObserver};
use crate::pool::PoolShared;
use crate::sync::{Arc, Mutex};
use crate::{Backing, Error, ErrorKind, Result, Segment, SegmentPool};

/// The largest buffer the kernel registers (`SZ_1G` in `io_uring/rsrc.c`).
pub const MAX_BUFFER: usize = 1 << 30;

/// The most slots a table may have: the buffer index of an SQE is a `u16`.
pub const MAX_SLOTS: u32 = 1 << 16;

/// A ring's fixed-buffer table holding a pool's regions, kept up to date as regions are mapped
/// and unmapped (see the [module docs](self)).
///
/// Dropping it stops the updates and unregisters the ring's table
/// (`IORING_UNREGISTER_BUFFERS`); the pool goes on as before.
pub struct FixedBuffers {
    pool: Arc<PoolShared>,
    table: std::sync::Arc<RingTable>,
}

/// The observer: the ring's descriptor and which region sits in which slot.
///
/// # Invariants
///
/// * A region id in `by_region` has its slot registered with the kernel over its whole range,
///   and the region is mapped (its `unmapping` removes it first).
/// * `free`, the slots in `by_region` and `stuck` slots partition `0..slots`.
struct RingTable {
    ring: OwnedFd,
    slots: u32,
    state: Mutex<TableState>,
}

#[derive(Debug, Default)]
struct TableState {
    by_region: HashMap<u64, u16>,
    /// Free slots, the lowest last (popped first).
    free: Vec<u16>,
    refused: u64,
    stuck: u64,
    /// The region the last refusal concerned (for `register`'s error).
    last_refused: Option<RegionInfo>,
}

impl fmt::Debug for FixedBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.table.state.lock();
        f.debug_struct("FixedBuffers")
            .field("pool", &self.pool.id)
            .field("slots", &self.table.slots)
            .field("registered", &st.by_region.len())
            .field("refused", &st.refused)
            .field("stuck", &st.stuck)
            .finish()
    }
}

impl FixedBuffers {
    /// Gives `ring` a sparse table of `slots` fixed buffers and registers every region of `pool`
    /// in it; regions mapped later are registered as they are mapped, and each region's slot is
    /// cleared before the region is unmapped.
    ///
    /// Takes the ring itself, not its `Submitter`: the table keeps a duplicate of the ring's
    /// descriptor to update the table from whichever thread maps or unmaps a region, and a
    /// `Submitter` does not give its descriptor. One slot holds one region, so `slots` bounds the
    /// regions that can have an index at once (a region beyond that has none, see
    /// [`refused`](Self::refused)); with a budget, `budget / region size` regions per class at
    /// most.
    ///
    /// Registered regions are pinned: resident in memory, charged to the ring's locked memory
    /// (`RLIMIT_MEMLOCK`, unless the process has `CAP_IPC_LOCK`) until unmapped.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for `slots` of 0 or above [`MAX_SLOTS`]; `FixedBuffers` naming the cause
    /// for a file-backed pool (the kernel pins anonymous memory), a pool with
    /// `Diagnostics::Full` (its guard pages cannot be pinned), a ring set up with
    /// `IORING_SETUP_SINGLE_ISSUER` (the pool updates the table from other threads), a ring that
    /// already has a buffer table, a kernel without io_uring or without sparse tables (Linux
    /// 5.13), more regions mapped than `slots`, and a region the kernel would not pin (above all
    /// `RLIMIT_MEMLOCK`, whose value the message gives).
    pub fn register<S: squeue::EntryMarker, C: cqueue::EntryMarker>(
        pool: &SegmentPool,
        ring: &IoUring<S, C>,
        slots: u32,
    ) -> Result<FixedBuffers> {
        let shared = pool.shared();
        if slots == 0 || slots > MAX_SLOTS {
            return Err(ErrorKind::InvalidConfig(format!(
                "fixed buffer slots: {slots} is not in 1..={MAX_SLOTS} (an SQE's buffer index is 16 bits)"
            )).into());
        }
        if let Backing::File(dir) = shared.backing() {
            return Err(refusal(
                format!(
                    "a file-backed pool (regions in {}) cannot be registered: the kernel pins only \
                     anonymous memory as fixed buffers; use Backing::Anonymous",
                    dir.display()
                ),
                None,
            ));
        }
        if shared.classes.iter().any(|c| c.stride != c.size) {
            return Err(refusal(
                "a pool with Diagnostics::Full cannot be registered: its regions hold guard pages, \
                 which the kernel cannot pin"
                    .into(),
                None,
            ));
        }
        if ring.params().is_setup_single_issuer() {
            return Err(refusal(
                "the ring was set up with IORING_SETUP_SINGLE_ISSUER: the pool updates the table \
                 from whichever thread maps or unmaps a region, which such a ring refuses"
                    .into(),
                None,
            ));
        }
        let fd = ring
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| refusal("duplicating the ring's descriptor".into(), Some(e)))?;
        ring.submitter()
            .register_buffers_sparse(slots)
            .map_err(|e| sparse_refused(e, slots))?;
        let table = std::sync::Arc::new(RingTable {
            ring: fd,
            slots,
            state: Mutex::new(TableState {
                free: (0..slots).rev().map(|s| s as u16).collect(),
                ..TableState::default()
            }),
        });
        let observer: std::sync::Arc<dyn RegionObserver> = table.clone();
        let fixed = FixedBuffers {
            pool: Arc::clone(shared),
            table,
        };
        if let Err(e) = shared.add_observer(observer) {
            let region = fixed.table.state.lock().last_refused;
            // `fixed` is dropped here: the table is unregistered with whatever it held.
            return Err(region_refused(e, region, slots));
        }
        tracing::debug!(
            target: "segpool",
            pool = shared.id,
            slots,
            registered = fixed.registered(),
            "io_uring fixed buffers registered"
        );
        Ok(fixed)
    }

    /// The fixed-buffer index of `segment`'s region, for `ReadFixed`/`WriteFixed` with the
    /// segment's address and at most its length. `None` when the segment has none: a segment of
    /// another pool, a dedicated mapping (above the largest class: registering one costs a
    /// system call per allocation, so they never are), or a region the table refused (see
    /// [`refused`](Self::refused)).
    ///
    /// The index stays valid while the segment lives.
    pub fn index_of(&self, segment: &Segment) -> Option<u16> {
        // SAFETY: the segment holds a count on its region, which keeps it alive.
        let region = unsafe { segment.region_ref().get() };
        if region.pool_id != self.pool.id {
            return None;
        }
        self.table.state.lock().by_region.get(&region.id).copied()
    }

    /// The table's size.
    pub fn slots(&self) -> u32 {
        self.table.slots
    }

    /// Slots holding a region now.
    pub fn registered(&self) -> usize {
        self.table.state.lock().by_region.len()
    }

    /// Regions mapped since `register` that got no slot: the table was full, or the kernel
    /// refused to pin them (each refusal is also logged at `warn` under the target `segpool`).
    pub fn refused(&self) -> u64 {
        self.table.state.lock().refused
    }
}

impl Drop for FixedBuffers {
    fn drop(&mut self) {
        let observer: std::sync::Arc<dyn RegionObserver> = self.table.clone();
        self.pool.remove_observer(&observer);
        // SAFETY: unregistering takes no argument; it drops the kernel's pins on every slot.
        let r = unsafe {
            io_uring_register(
                &self.table.ring,
                IoringRegisterOp::UnregisterBuffers,
                std::ptr::null(),
                0,
            )
        };
        if let Err(e) = r {
            tracing::warn!(target: "segpool", error = %e, "unregistering fixed buffers failed");
        }
    }
}

impl RingTable {
    /// Points `slot` at `len` bytes from `base` (a null `base` with `len` 0 clears it).
    ///
    /// # Safety
    ///
    /// * `base..base + len` is mapped memory of the pool that stays mapped until the slot is
    ///   cleared (the observer protocol: `unmapping` clears it before the unmap).
    unsafe fn update(&self, slot: u16, base: usize, len: usize) -> io::Result<()> {
        let iov = iovec {
            iov_base: base as *mut std::ffi::c_void,
            iov_len: len,
        };
        let mut up = io_uring_rsrc_update2::default();
        up.offset = u32::from(slot);
        up.data = io_uring_ptr::new(std::ptr::from_ref(&iov).cast_mut().cast());
        up.nr = 1;
        // SAFETY: `up` and `iov` live across the call, which only reads them; the memory they
        // name stays mapped while the slot holds it (the caller's contract).
        unsafe {
            io_uring_register(
                &self.ring,
                IoringRegisterOp::RegisterBuffersUpdate,
                std::ptr::from_ref(&up).cast(),
                std::mem::size_of::<io_uring_rsrc_update2>() as u32,
            )
        }?;
        Ok(())
    }
}

impl RegionObserver for RingTable {
    fn mapped(&self, region: &RegionInfo) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.by_region.contains_key(&region.id) {
            // Reported by growth and found by `register`'s walk.
            return Ok(());
        }
        let e = if region.file_backed || region.len > MAX_BUFFER {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a file-backed region or one above 1 GiB cannot be a fixed buffer",
            )
        } else if let Some(slot) = st.free.pop() {
            // SAFETY: the region is mapped, and its `unmapping` clears the slot before the unmap.
            match unsafe { self.update(slot, region.base, region.len) } {
                Ok(()) => {
                    st.by_region.insert(region.id, slot);
                    return Ok(());
                }
                Err(e) => {
                    st.free.push(slot);
                    e
                }
            }
        } else {
            io::Error::new(
                io::ErrorKind::StorageFull,
                format!("all {} slots hold a region", self.slots),
            )
        };
        st.refused += 1;
        st.last_refused = Some(*region);
        tracing::warn!(
            target: "segpool",
            region = region.id,
            bytes = region.len,
            error = %e,
            "region not registered as an io_uring fixed buffer"
        );
        Err(e)
    }

    fn unmapping(&self, region: &RegionInfo) {
        let mut st = self.state.lock();
        let Some(slot) = st.by_region.remove(&region.id) else {
            return;
        };
        // SAFETY: clearing a slot names no memory.
        match unsafe { self.update(slot, 0, 0) } {
            Ok(()) => st.free.push(slot),
            Err(e) => {
                st.stuck += 1;
                tracing::error!(
                    target: "segpool",
                    region = region.id,
                    slot,
                    error = %e,
                    "clearing a fixed buffer slot failed: the slot stays out of use"
                );
            }
        }
    }
}

fn refusal(message: String, source: Option<io::Error>) -> Error {
    ErrorKind::FixedBuffers { message, source }.into()
}

/// The error for a refused `register_buffers_sparse`.
fn sparse_refused(e: io::Error, slots: u32) -> Error {
    let message = match e.raw_os_error() {
        Some(libc::EBUSY) => "the ring already has a fixed-buffer table (one per ring)".to_string(),
        Some(libc::EINVAL) => format!(
            "the kernel refused a sparse table of {slots} slots: more than its limit \
             (IORING_MAX_REG_BUFFERS, 16384 on Linux 5.13 to 6.x), or a kernel older than 5.13 \
             (no sparse tables)"
        ),
        Some(libc::ENOSYS) => "this kernel has no io_uring".to_string(),
        Some(libc::EPERM) => {
            "io_uring is not permitted here (kernel.io_uring_disabled, or a seccomp filter)"
                .to_string()
        }
        Some(libc::ENOMEM) => format!(
            "the kernel could not allocate a table of {slots} slots (or locked memory is at \
             RLIMIT_MEMLOCK: {})",
            memlock_limit()
        ),
        _ => format!("registering a sparse table of {slots} slots"),
    };
    refusal(message, Some(e))
}

/// The error for a region the table refused during `register`.
fn region_refused(e: io::Error, region: Option<RegionInfo>, slots: u32) -> Error {
    let what = region.map_or_else(
        || "a region".to_string(),
        |r| format!("the region of {} bytes at {:#x}", r.len, r.base),
    );
    let message = match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::StorageFull, _) => format!(
            "the pool has more regions mapped than the table's {slots} slots: register with more \
             slots, or trim the pool first"
        ),
        (_, Some(libc::ENOMEM)) => format!(
            "pinning {what} would take the ring's locked memory past RLIMIT_MEMLOCK ({}): raise \
             the limit (ulimit -l, LimitMEMLOCK=), give the process CAP_IPC_LOCK, or register a \
             pool with a smaller budget",
            memlock_limit()
        ),
        (_, Some(libc::EFAULT)) => format!("the kernel could not pin {what}"),
        _ => format!("registering {what}"),
    };
    refusal(message, Some(e))
}

fn memlock_limit() -> String {
    let l = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    match l.current {
        Some(b) => format!("{b} bytes"),
        None => "unlimited".to_string(),
    }
}
