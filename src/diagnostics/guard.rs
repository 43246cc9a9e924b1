//! Guard pages after every class slice under `Diagnostics::Full`, and the SIGSEGV hook that names
//! the segment an overrun ran off.
//!
//! # Layout
//!
//! Under `Full` a class's slices are `stride = size + page` apart: each slice is followed by one
//! page mapped `PROT_NONE`, so the first byte written or read past a segment's end faults at once
//! (SIGSEGV, `SEGV_ACCERR`). Regions hold a whole number of strides; index/address arithmetic uses
//! the stride (`Region::take`, `Region::index_of`). Guard pages count as mapped (and against the
//! budget) but are never resident. Each guard page splits the region's kernel mapping, so a region
//! of `n` slices uses about `2n` entries of `vm.max_map_count` (65530 by default). Dedicated
//! mappings (above the largest class) have no guard page.
//!
//! # The hook
//!
//! A table of live guarded segments, fixed capacity ([`CAPACITY`]) in static memory, is keyed by
//! the address of the segment's guard page and holds a message preformatted when the segment was
//! handed out (its address, length, class, region, pool, and the caller of `allocate`). When the
//! first `Full` pool is built, the hook registers a claim on SIGSEGV with `crate::os::signal`
//! (which installs segpool's handler once and keeps the previous action). The claim looks the
//! faulting page up (lock-free: atomics only), and if it is a live segment's guard page writes the
//! message to fd 2 with `write(2)` and answers `Reported`: the signal module restores the previous
//! action and returns, so the instruction faults again and the process dies exactly as it would
//! have without segpool (or the previous handler does whatever it does). Every other SIGSEGV
//! passes, and the signal module hands it to the previous action directly. The signal is never
//! swallowed.
//!
//! Segments handed out while the table is full are still guarded (they fault), but the crash
//! message is then not printed; the first time that happens in the process, a `guard table full`
//! warning event says so.

use std::fmt::Write as _;
use std::io;
use std::panic::Location;

// The table is read by a signal handler: plain hardware atomics, not the `crate::sync` shim.
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::os::signal::{self, Claim, Claimer, Fault, Signal};
use crate::os::Mapping;
use crate::region::Region;

/// Live guarded segments the crash message can name at once.
pub(crate) const CAPACITY: usize = 4096;

/// Bytes of one preformatted message (longer ones are cut).
const MESSAGE: usize = 320;

/// A slot being written (its key is not an address: addresses are page-aligned).
const CLAIMED: usize = 1;

/// One live guarded segment.
///
/// # Invariants
///
/// `key` is 0 (free), `CLAIMED` (being written by the thread that claimed it) or the address of
/// the guard page of a live segment, in which case `len` and `message` were written before `key`
/// was published (release/acquire).
struct Slot {
    key: AtomicUsize,
    len: AtomicUsize,
    message: [AtomicU8; MESSAGE],
}

impl Slot {
    const fn new() -> Self {
        Self {
            key: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            message: [const { AtomicU8::new(0) }; MESSAGE],
        }
    }
}

static SLOTS: [Slot; CAPACITY] = [const { Slot::new() }; CAPACITY];

/// The page size, cached for the claim (`sysconf` is not async-signal-safe).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The stride of a guarded class of `size` bytes.
pub(crate) fn stride(size: usize, page: usize) -> usize {
    size + page
}

/// The length of a guarded region that holds as many slices as an unguarded region of `region`
/// bytes would, at least one, and no more than fit in the budget.
pub(crate) fn region_size(
    region: usize,
    size: usize,
    stride: usize,
    budget: Option<usize>,
) -> usize {
    let mut slices = (region / size).max(1);
    if let Some(b) = budget {
        slices = slices.min((b / stride).max(1));
    }
    slices * stride
}

/// Makes the page after every slice of a freshly mapped region inaccessible.
pub(crate) fn protect(mapping: &Mapping, size: usize, stride: usize) -> io::Result<()> {
    let mut offset = size;
    while offset + (stride - size) <= mapping.len() {
        mapping.protect_none(offset, stride - size)?;
        offset += stride;
    }
    Ok(())
}

fn home(key: usize) -> usize {
    (key / PAGE_SIZE.load(Ordering::Relaxed).max(1)) % CAPACITY
}

/// Notes a guarded segment handed out: `addr..addr + len` is followed by its guard page.
pub(crate) fn note_allocated(
    addr: usize,
    len: usize,
    region: &Region,
    at: &'static Location<'static>,
) {
    let key = addr + len;
    let mut text = String::with_capacity(MESSAGE);
    let _ = writeln!(
        text,
        "segpool: SIGSEGV in the guard page after segment {addr:#x} ({len} bytes, class {}, \
         region {}, pool {}): an overrun past its end; allocated at {at}",
        region.slice_size(),
        region.id,
        region.pool_id,
    );
    let bytes = &text.as_bytes()[..text.len().min(MESSAGE)];
    let start = home(key);
    for i in 0..CAPACITY {
        let slot = &SLOTS[(start + i) % CAPACITY];
        if slot
            .key
            .compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            for (m, &b) in slot.message.iter().zip(bytes) {
                m.store(b, Ordering::Relaxed);
            }
            slot.len.store(bytes.len(), Ordering::Relaxed);
            slot.key.store(key, Ordering::Release);
            return;
        }
    }
    // Full: the segment is guarded all the same, but an overrun of it would crash unexplained.
    if !TABLE_FULL_REPORTED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "segpool",
            capacity = CAPACITY,
            segment = addr,
            "guard table full"
        );
    }
}

/// Set the first time a guarded segment found the table full (the event is sent once per
/// process).
static TABLE_FULL_REPORTED: AtomicBool = AtomicBool::new(false);

/// Notes a guarded segment released (before its slice goes back).
pub(crate) fn note_released(addr: usize, len: usize) {
    let key = addr + len;
    let start = home(key);
    for i in 0..CAPACITY {
        let slot = &SLOTS[(start + i) % CAPACITY];
        if slot.key.load(Ordering::Relaxed) == key {
            slot.key.store(0, Ordering::Release);
            return;
        }
    }
}

/// Registers the SIGSEGV claim (the handler is installed once per process).
pub(crate) fn install_hook() -> crate::Result<()> {
    PAGE_SIZE.store(crate::os::page_size(), Ordering::Relaxed);
    // SAFETY: `claim` is async-signal-safe (atomic loads and `write(2)`, see the module docs) and
    // the only claim registered for the guard pages.
    unsafe { signal::register(Signal::Segv, Claimer::GuardPages, claim) }.map_err(|e| {
        crate::ErrorKind::Map(io::Error::new(
            e.kind(),
            "installing segpool's SIGSEGV hook for guard pages failed",
        ))
        .into()
    })
}

/// Copies the message of the live segment whose guard page holds `addr` into `buf`; its length.
/// Async-signal-safe (atomic loads only).
fn lookup(addr: usize, buf: &mut [u8; MESSAGE]) -> Option<usize> {
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    if page == 0 {
        return None;
    }
    let key = addr & !(page - 1);
    let start = home(key);
    for i in 0..CAPACITY {
        let slot = &SLOTS[(start + i) % CAPACITY];
        if slot.key.load(Ordering::Acquire) != key {
            continue;
        }
        let len = slot.len.load(Ordering::Relaxed).min(MESSAGE);
        for (b, m) in buf.iter_mut().zip(&slot.message[..len]) {
            *b = m.load(Ordering::Relaxed);
        }
        // Still the same segment (not released and reused meanwhile): the copy is whole.
        if slot.key.load(Ordering::Acquire) == key {
            return Some(len);
        }
    }
    None
}

/// The claim: a kernel SIGSEGV on a live segment's guard page is reported.
fn claim(fault: &Fault) -> Claim {
    if fault.signal != Signal::Segv || fault.sent_by_process() {
        return Claim::Pass;
    }
    let mut buf = [0u8; MESSAGE];
    match lookup(fault.addr, &mut buf) {
        Some(len) => {
            signal::write_stderr(&buf[..len]);
            Claim::Reported
        }
        None => Claim::Pass,
    }
}
