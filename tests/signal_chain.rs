//! The order in which a signal is handled when both of segpool's claims are active (the fault
//! guard on SIGBUS, the guard pages of `Diagnostics::Full` on SIGSEGV) and the program had its
//! own handlers first: segpool's claim decides for what is segpool's, and everything else (and a
//! reported overrun, after its report) reaches the program's handler. Each case runs in a child
//! process (this test binary, re-executed) and the parent checks how the child ended.

mod fault_support;

use std::path::Path;
use std::process::Output;

use fault_support::*;
use segpool::{Diagnostics, Segment, SegmentPool};

const PAGE: usize = 4096;

/// What the program's SIGBUS handler exits with for a lost page.
const USER_SIGBUS_EXIT: i32 = 50;
/// What the program's SIGSEGV handler exits with for an access the mapping does not allow.
const USER_SIGSEGV_EXIT: i32 = 60;

/// `si_code` of a SIGSEGV for an access the mapping does not allow (`<asm-generic/siginfo.h>`;
/// the libc crate does not define it).
const SEGV_ACCERR: libc::c_int = 2;

/// The line segpool's guard-page report starts with.
const REPORT: &str = "segpool: SIGSEGV in the guard page";

extern "C" fn user_handler(signum: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this signal.
    let code = unsafe { (*info).si_code };
    let exit = match (signum, code) {
        (libc::SIGBUS, libc::BUS_ADRERR) => USER_SIGBUS_EXIT,
        (libc::SIGSEGV, SEGV_ACCERR) => USER_SIGSEGV_EXIT,
        _ => 1,
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(exit) };
}

/// What SIGBUS and SIGSEGV do before segpool installs its handler.
#[derive(Clone, Copy)]
enum Before {
    /// The program's own `SA_SIGINFO` handler ([`user_handler`]).
    ProgramHandler,
    /// `SIG_DFL` (std's stack-overflow handler removed).
    Default,
}

impl Before {
    fn install(self) {
        for signal in [libc::SIGBUS, libc::SIGSEGV] {
            // SAFETY: a zeroed sigaction is valid (SIG_DFL); the handler has the SA_SIGINFO
            // signature.
            unsafe {
                let mut a: libc::sigaction = std::mem::zeroed();
                if let Before::ProgramHandler = self {
                    a.sa_sigaction = user_handler as *const () as usize;
                    a.sa_flags = libc::SA_SIGINFO;
                }
                assert_eq!(libc::sigaction(signal, &a, std::ptr::null_mut()), 0);
            }
        }
    }
}

/// The faults a child ends with.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// A lost page of a file mapping segpool does not know.
    SigbusElsewhere,
    /// One byte past a live segment of the `Full` pool: its guard page.
    Overrun,
    /// A write to a read-only page that is no segment's guard page.
    SigsegvElsewhere,
}

const ENDING_ENV: &str = "SIGNAL_CHAIN_ENDING";

impl Ending {
    fn name(self) -> &'static str {
        match self {
            Ending::SigbusElsewhere => "sigbus",
            Ending::Overrun => "overrun",
            Ending::SigsegvElsewhere => "sigsegv",
        }
    }

    fn from_env() -> Ending {
        let name = std::env::var(ENDING_ENV).unwrap();
        [
            Ending::SigbusElsewhere,
            Ending::Overrun,
            Ending::SigsegvElsewhere,
        ]
        .into_iter()
        .find(|e| e.name() == name)
        .unwrap()
    }

    fn provoke(self, dir: &Path, segment: &mut Segment) {
        match self {
            Ending::SigbusElsewhere => drop(fault_outside_our_ranges(dir)),
            // SAFETY: deliberately not safe: one byte past the segment's end lands on its guard
            // page and faults; nothing is written.
            Ending::Overrun => unsafe { segment.as_mut_ptr().add(PAGE).write_volatile(2) },
            Ending::SigsegvElsewhere => {
                // SAFETY: a fresh private anonymous mapping, not fixed: nothing else is affected.
                let page = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        PAGE,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert_ne!(page, libc::MAP_FAILED);
                // SAFETY: none; a write to a read-only page raises SIGSEGV, which is the point.
                unsafe { page.cast::<u8>().write_volatile(1) };
            }
        }
    }
}

/// Runs test `name` in a child process that installs `before`, activates both claims (a
/// registered file mapping, a `Full` pool with a live segment), recovers one SIGBUS of its own
/// (the program's handler not called), then ends with `ending`. Returns how the child ended, or
/// `None` in the child (if it survived, which the parent then reports).
fn case(name: &str, before: Before, ending: Ending) -> Option<Output> {
    if !is_child(name) {
        let out = run_child_with(name, &[], &[(ENDING_ENV, ending.name())]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("recovered a fault in our range"));
        return Some(out);
    }
    no_core_dumps();
    before.install();
    let dir = child_dir();
    let _ours = register_one(&dir);
    let pool = SegmentPool::builder()
        .size_classes(&[PAGE])
        .region_size(16 * PAGE)
        .diagnostics(Diagnostics::Full)
        .build()
        .unwrap();
    let mut segment = pool.allocate(PAGE).unwrap();
    segment.fill(1);
    recover_one_of_ours(&dir);
    let ending = Ending::from_env();
    ending.provoke(&dir, &mut segment);
    println!("survived {ending:?}");
    None
}

/// How many guard-page reports the child wrote.
fn reports(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stderr).matches(REPORT).count()
}

#[test]
fn with_the_programs_handlers_what_is_not_segpools_reaches_them() {
    const NAME: &str = "with_the_programs_handlers_what_is_not_segpools_reaches_them";
    for (ending, exit, reported) in [
        (Ending::SigbusElsewhere, USER_SIGBUS_EXIT, 0),
        // Reported first, then the program's handler takes the repeated fault.
        (Ending::Overrun, USER_SIGSEGV_EXIT, 1),
        (Ending::SigsegvElsewhere, USER_SIGSEGV_EXIT, 0),
    ] {
        // In the child: it ran the one ending its environment names.
        let Some(out) = case(NAME, Before::ProgramHandler, ending) else {
            return;
        };
        assert_eq!(
            out.status.code(),
            Some(exit),
            "{ending:?}: {:?}",
            out.status
        );
        assert_eq!(reports(&out), reported, "{ending:?}");
    }
}

#[test]
fn with_default_actions_both_signals_still_kill() {
    const NAME: &str = "with_default_actions_both_signals_still_kill";
    for (ending, signal, reported) in [
        (Ending::SigbusElsewhere, libc::SIGBUS, 0),
        (Ending::Overrun, libc::SIGSEGV, 1),
        (Ending::SigsegvElsewhere, libc::SIGSEGV, 0),
    ] {
        let Some(out) = case(NAME, Before::Default, ending) else {
            return;
        };
        assert_killed_by(&out, signal);
        assert_eq!(reports(&out), reported, "{ending:?}");
    }
}
