//! The fault guard's claim on SIGBUS: recovering a lost page of a registered range.
//!
//! # Protocol
//!
//! For a SIGBUS raised by the kernel with `si_code` `BUS_ADRERR` or `BUS_MCEERR_AR` whose
//! `si_addr` lies in one of the fault ranges:
//!
//! 1. **Poison first**: every state registered for that address is marked faulted (first
//!    address, then `faults += 1`; a non-zero count is the poison). Another thread may be copying from the same page; if the
//!    page were replaced first, that thread could read the zero page, re-read an unchanged fault
//!    counter and return `Ok` with zeros. Poisoning first means any access that can see the
//!    replacement page also sees the moved counter.
//! 2. **Then replace the page**: an anonymous zero page is mapped with `MAP_FIXED` over the
//!    faulting page, with the access the range was registered with. If that fails (`ENOMEM`: the
//!    process reached `vm.max_map_count`, because each replaced page splits the mapping), the whole
//!    registered range is replaced instead, which needs no new kernel mapping entry when the range
//!    is a whole mapping. The file is poisoned, so nothing reads those pages through the guard any
//!    more.
//! 3. **Return**: the faulting instruction runs again, now on the zero page, and completes. The
//!    operation around it sees the moved counter and returns `Err(Faulted)`.
//!
//! Anything else is not ours: the claim passes, and `crate::os::signal` hands the signal to
//! where it would have gone without segpool (the action installed before segpool's handler, or
//! death by SIGBUS; see that module). If the replacement page cannot be mapped at all, the claim
//! passes too: the state is already poisoned, but the process dies rather than loop on a fault it
//! cannot fix.
//!
//! We never longjmp or unwind out of the handler (undefined behaviour across Rust frames).
//!
//! # Async-signal safety
//!
//! The claim uses only lock-free atomics in static memory or in pinned states, the bounded scan
//! of the ranges, and a raw `mmap`. It allocates nothing, takes no lock, formats nothing and
//! touches no file-mapped memory.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::os::signal::{self, Claim, Claimer, Fault, Signal};
use crate::ErrorKind;

use super::ranges;

/// The page size, cached for the handler (`sysconf` is not async-signal-safe).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Faults recovered by the handler since the process started (all files).
static RECOVERED: AtomicU64 = AtomicU64::new(0);

/// Registers the claim with the signal module, which installs the SIGBUS handler once per
/// process, keeping the previous action for chaining.
pub(super) fn ensure_installed() -> crate::Result<()> {
    PAGE_SIZE.store(crate::os::page_size(), Ordering::Relaxed);
    // SAFETY: `claim` is async-signal-safe (see the module docs) and the only claim registered
    // for the fault ranges.
    unsafe { signal::register(Signal::Bus, Claimer::FaultRanges, claim) }.map_err(|e| {
        ErrorKind::Map(std::io::Error::new(
            e.kind(),
            "installing segpool's SIGBUS handler failed",
        ))
        .into()
    })
}

/// Whether segpool's handler is the installed SIGBUS action.
pub(super) fn installed() -> bool {
    signal::is_installed(Signal::Bus)
}

/// Faults recovered since the process started.
pub(super) fn recovered() -> u64 {
    RECOVERED.load(Ordering::Relaxed)
}

/// The claim: a kernel SIGBUS on a lost page inside one of the ranges is recovered.
fn claim(fault: &Fault) -> Claim {
    if fault.is_lost_page() && recover(fault.addr) {
        RECOVERED.fetch_add(1, Ordering::Relaxed);
        return Claim::Recovered;
    }
    Claim::Pass
}

/// Poisons the states registered for `addr` and replaces the lost page. `false` when `addr` is
/// in none of the ranges, or when no page could be mapped over it.
fn recover(addr: usize) -> bool {
    let Some(hit) = ranges::poison_ranges_containing(addr, |state| state.mark_faulted(addr)) else {
        return false;
    };
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    let page_start = addr & !(page - 1);
    // SAFETY: the page lies in a registered range, i.e. a live file mapping (its owner deregisters
    // before unmapping, and the faulting thread is inside an access that holds the mapping alive)
    // whose every access goes through the fault protocol; its state was just poisoned.
    if unsafe { signal::replace_with_zero_pages(page_start, page, hit.writable) }.is_ok() {
        return true;
    }
    // SAFETY: as above, for the whole registered range (page-aligned at registration).
    unsafe { signal::replace_with_zero_pages(hit.start, hit.end - hit.start, hit.writable) }.is_ok()
}
