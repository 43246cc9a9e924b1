//! The process-wide SIGBUS handler.
//!
//! # Protocol
//!
//! For a SIGBUS raised by the kernel with `si_code` `BUS_ADRERR` or `BUS_MCEERR_AR` whose
//! `si_addr` lies in a registered range:
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
//! Anything else is not ours and goes where it would have gone without segpool: to the action
//! that was installed before ours (called with the same arguments), or, if that was `SIG_DFL`, we
//! restore `SIG_DFL` and return, so the instruction faults again and the process dies of SIGBUS
//! exactly as before (a SIGBUS sent with `kill` is re-raised, since returning would not repeat it).
//! If the replacement page cannot be mapped at all, the fault is treated the same way: the state is
//! already poisoned, but the process dies rather than loop on a fault it cannot fix.
//!
//! We never longjmp or unwind out of the handler (undefined behaviour across Rust frames).
//!
//! # Async-signal safety
//!
//! The handler uses only lock-free atomics in static memory or in pinned states, the bounded
//! registry scan, and raw syscalls (`mmap`, `sigaction`, `raise`). It allocates nothing, takes no
//! lock, formats nothing and touches no file-mapped memory; `errno` is saved and restored.

use std::sync::OnceLock;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::os::signal::{self, Disposition, ErrnoGuard, SignalAction};
use crate::Error;

use super::ranges;

/// The action that was installed before ours. Written once, before ours is installed; the handler
/// only reads it (`OnceLock::get` is a single atomic load once initialised).
static PREVIOUS: OnceLock<SignalAction> = OnceLock::new();

/// The result of the one installation attempt, so every later `register` sees the same outcome.
static INSTALLED: OnceLock<Result<(), std::io::ErrorKind>> = OnceLock::new();

/// The page size, cached for the handler (`sysconf` is not async-signal-safe).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Faults recovered by the handler since the process started (all files).
static RECOVERED: AtomicU64 = AtomicU64::new(0);

/// Installs the handler once per process, keeping the previous action for chaining.
pub(super) fn ensure_installed() -> crate::Result<()> {
    let outcome = INSTALLED.get_or_init(|| {
        PAGE_SIZE.store(crate::os::page_size(), Ordering::Relaxed);
        // Store the action we are about to replace *before* installing ours, so the handler never
        // runs without it. (Another library installing an action between the query and our
        // install would be missed; this runs once, at the first registration.)
        let before = signal::current_sigbus_action().map_err(|e| e.kind())?;
        let _ = PREVIOUS.set(before);
        signal::install_sigbus(on_sigbus)
            .map(drop)
            .map_err(|e| e.kind())
    });
    outcome.map_err(|kind| {
        Error::Map(std::io::Error::new(
            kind,
            "installing segpool's SIGBUS handler failed",
        ))
    })
}

/// Whether our handler is the installed SIGBUS action.
pub(super) fn installed() -> bool {
    signal::current_sigbus_action().is_ok_and(|a| a.is(on_sigbus))
}

/// Faults recovered since the process started.
pub(super) fn recovered() -> u64 {
    RECOVERED.load(Ordering::Relaxed)
}

extern "C" fn on_sigbus(
    signum: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let _errno = ErrnoGuard::save();
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { signal::fault_code_and_address(info) };
    if signum == libc::SIGBUS && signal::is_lost_page_code(code) && recover(addr) {
        RECOVERED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: `info` and `context` are the kernel's arguments for this signal.
    unsafe { not_ours(signum, code, info, context) };
}

/// Poisons the states registered for `addr` and replaces the lost page. `false` when `addr` is
/// in no registered range, or when no page could be mapped over it.
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

/// Hands a SIGBUS that is not ours to whatever would have handled it without segpool.
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
    let disposition = PREVIOUS
        .get()
        .map_or(Disposition::Default, SignalAction::disposition);
    let resets = PREVIOUS.get().is_some_and(SignalAction::resets_on_delivery);
    match disposition {
        Disposition::SigInfo(f) => {
            if resets {
                signal::reset_sigbus_to_default();
            }
            // SAFETY: the previous action had SA_SIGINFO, so `f` has the three-argument
            // signature; we pass on the kernel's own arguments.
            unsafe { signal::call_siginfo_handler(f, signum, info, context) }
        }
        Disposition::Plain(f) => {
            if resets {
                signal::reset_sigbus_to_default();
            }
            // SAFETY: the previous action had no SA_SIGINFO, so `f` takes the signal number.
            unsafe { signal::call_plain_handler(f, signum) }
        }
        Disposition::Ignore if signal::is_sent_by_process(code) => {}
        // SIG_DFL, or SIG_IGN for a fault (the kernel does not let a fault be ignored: it kills).
        Disposition::Default | Disposition::Ignore => {
            signal::reset_sigbus_to_default();
            if signal::is_sent_by_process(code) {
                // Returning would not repeat a signal sent with kill(2): send it again. It is
                // blocked until we return, then kills the process with the default action.
                signal::raise_sigbus();
            }
            // A fault: returning re-executes the instruction, which faults again and now dies of
            // SIGBUS with the default action, exactly as without segpool.
        }
    }
}
