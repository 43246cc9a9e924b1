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
//! handed out (its address, length, class, region, pool, and the caller of `allocate`). The
//! SIGSEGV handler, installed once when the first `Full` pool is built (keeping the previous
//! action), looks the faulting page up (lock-free: atomics only), and if it is a live segment's
//! guard page writes the message to fd 2 with `write(2)`, restores the previous action and
//! returns: the instruction faults again and the process dies exactly as it would have without
//! segpool (or the previous handler does whatever it does). Every other SIGSEGV is handed to the
//! previous action directly, like `crate::fault` does for SIGBUS. The signal is never swallowed.
//!
//! Segments handed out while the table is full are still guarded (they fault), but the crash
//! message is then not printed; the first time that happens in the process, a `guard table full`
//! warning event says so.

use std::fmt::Write as _;
use std::io;
use std::panic::Location;
use std::sync::OnceLock;

// The table is read by a signal handler: plain hardware atomics, not the `crate::sync` shim.
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use crate::os::signal::{self, Disposition, ErrnoGuard, SignalAction};
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

/// The SIGSEGV action that was installed before ours.
static PREVIOUS: OnceLock<SignalAction> = OnceLock::new();
static INSTALLED: OnceLock<Result<(), io::ErrorKind>> = OnceLock::new();
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

/// Installs the SIGSEGV hook once per process.
pub(crate) fn install_hook() -> crate::Result<()> {
    let outcome = INSTALLED.get_or_init(|| {
        PAGE_SIZE.store(crate::os::page_size(), Ordering::Relaxed);
        let mut previous = None;
        let r = signal::install_sigsegv(on_sigsegv).map(|p| previous = Some(p));
        if let Some(p) = previous {
            let _ = PREVIOUS.set(p);
        }
        r.map_err(|e| e.kind())
    });
    outcome.map_err(|kind| {
        crate::Error::Map(io::Error::new(
            kind,
            "installing segpool's SIGSEGV hook for guard pages failed",
        ))
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

extern "C" fn on_sigsegv(
    signum: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let _errno = ErrnoGuard::save();
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { signal::fault_code_and_address(info) };
    if !signal::is_sent_by_process(code) {
        let mut buf = [0u8; MESSAGE];
        if let Some(len) = lookup(addr, &mut buf) {
            signal::write_stderr(&buf[..len]);
            // Let the process die as before: the previous action takes the repeated fault.
            match PREVIOUS.get() {
                Some(p) => signal::restore_sigsegv(p),
                None => signal::reset_sigsegv_to_default(),
            }
            return;
        }
    }
    // SAFETY: `info` and `context` are the kernel's arguments for this signal.
    unsafe { not_ours(signum, code, info, context) };
}

/// Hands a SIGSEGV that did not hit a guard page to whatever would have handled it.
///
/// # Safety
///
/// * `info` and `context` are the kernel's arguments for this signal.
unsafe fn not_ours(
    signum: libc::c_int,
    code: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let previous = PREVIOUS.get();
    let resets = previous.is_some_and(SignalAction::resets_on_delivery);
    match previous.map_or(Disposition::Default, SignalAction::disposition) {
        Disposition::SigInfo(f) => {
            if resets {
                signal::reset_sigsegv_to_default();
            }
            // SAFETY: the previous action had SA_SIGINFO, so `f` has the three-argument
            // signature; we pass on the kernel's own arguments.
            unsafe { signal::call_siginfo_handler(f, signum, info, context) }
        }
        Disposition::Plain(f) => {
            if resets {
                signal::reset_sigsegv_to_default();
            }
            // SAFETY: the previous action had no SA_SIGINFO, so `f` takes the signal number.
            unsafe { signal::call_plain_handler(f, signum) }
        }
        Disposition::Ignore if signal::is_sent_by_process(code) => {}
        Disposition::Default | Disposition::Ignore => {
            signal::reset_sigsegv_to_default();
            if signal::is_sent_by_process(code) {
                signal::raise_sigsegv();
            }
        }
    }
}
