//! Signals: segpool's one SIGBUS and SIGSEGV handler, the claimers it asks, and the chain to the
//! action that was installed before it.
//!
//! This is the only file that calls `sigaction` or maps over a faulting page. `sigaction` and
//! `siginfo_t` come from the `libc` crate (rustix does not expose signal handlers); the mapping
//! that replaces a lost page uses rustix, whose Linux backend issues the raw syscall and never
//! touches `errno`.
//!
//! # Claimers and the chain
//!
//! Two parts of segpool want a say in a fault: the fault guard (`crate::fault`: a SIGBUS on a lost
//! page of a registered file mapping becomes an error) and the guard pages of diagnostics
//! (`crate::diagnostics::guard`: a SIGSEGV on a live segment's guard page is reported before the
//! process dies). Neither installs anything itself: each [`register`]s a *claimer* for a signal,
//! and this module installs one handler per signal, once per process, saving the action it
//! replaced. For every signal the handler asks the claimers of that signal in the fixed order of
//! [`Claimer`] (the fault ranges first, then the guard pages), and the first that does not
//! [`Pass`](Claim::Pass) decides:
//!
//! * [`Recovered`](Claim::Recovered): the cause is gone (a lost page was replaced); the handler
//!   returns and the faulting instruction runs again.
//! * [`Reported`](Claim::Reported): the claimer said what happened; the process must still end as
//!   it would have without segpool, so the saved action is put back and the handler returns: the
//!   instruction faults again and that action takes it.
//!
//! When every claimer passes, the signal is not segpool's: it goes to the saved action, as if
//! segpool were not there. An `SA_SIGINFO` handler is called with the same three arguments, a
//! plain handler with the signal number (`SA_RESETHAND` honoured); for `SIG_DFL` (or `SIG_IGN`
//! for a fault, which the kernel does not let a process ignore) the action is reset to `SIG_DFL`
//! and the handler returns, so the instruction faults again and the process dies of the signal;
//! a signal sent by a process is raised again, since returning would not repeat it.
//!
//! # Async-signal safety
//!
//! Everything the handler reaches allocates nothing, takes no lock, formats nothing, and only
//! issues syscalls that POSIX lists as async-signal-safe (`sigaction`, `raise`, `write`) or that
//! are plain system calls with no library state (`mmap`). The claimers promise the same when they
//! register (it is [`register`]'s safety contract). `errno` is saved and restored around it all.

use std::io;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

// Read by the signal handler: plain hardware atomics, not the `crate::sync` shim.
use core::sync::atomic::{AtomicPtr, Ordering};

use rustix::mm::{self, MapFlags, ProtFlags};

/// The signature of an `SA_SIGINFO` handler.
type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// The signals segpool handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `SIGBUS`: a lost page of a file mapping.
    Bus,
    /// `SIGSEGV`: an access the mapping does not allow (a guard page).
    Segv,
}

/// How many [`Signal`]s there are.
const SIGNALS: usize = 2;

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Bus => libc::SIGBUS,
            Signal::Segv => libc::SIGSEGV,
        }
    }

    fn from_number(signum: libc::c_int) -> Option<Signal> {
        match signum {
            libc::SIGBUS => Some(Signal::Bus),
            libc::SIGSEGV => Some(Signal::Segv),
            _ => None,
        }
    }
}

/// Who may claim a signal, in the order the handler asks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claimer {
    /// The fault guard's ranges (`crate::fault`).
    FaultRanges,
    /// The guard pages of `Diagnostics::Full` (`crate::diagnostics::guard`).
    GuardPages,
}

/// How many [`Claimer`]s there are.
const CLAIMERS: usize = 2;

/// A signal as a claimer sees it: what the kernel said about it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    /// Which signal.
    pub(crate) signal: Signal,
    /// `si_code`.
    pub(crate) code: libc::c_int,
    /// `si_addr`: the faulting address (meaningless when [`sent_by_process`](Self::sent_by_process)).
    pub(crate) addr: usize,
}

impl Fault {
    /// Whether the signal was sent by a process (`kill`, `tgkill`, `sigqueue`) rather than raised
    /// by the kernel for a fault: such a signal does not re-occur when the handler returns.
    pub(crate) fn sent_by_process(&self) -> bool {
        self.code <= 0
    }

    /// Whether this is a SIGBUS meaning "this page of a mapping has no backing": `BUS_ADRERR`
    /// (beyond the end of the file, an I/O error at page-in, no space at a write fault; all three
    /// arrive as this on Linux) or `BUS_MCEERR_AR` (a hardware memory error consumed by this
    /// access).
    pub(crate) fn is_lost_page(&self) -> bool {
        self.signal == Signal::Bus
            && (self.code == libc::BUS_ADRERR || self.code == libc::BUS_MCEERR_AR)
    }
}

/// What a claimer did with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Not this claimer's: ask the next one, then the saved action.
    Pass,
    /// Handled: the faulting instruction can run again.
    Recovered,
    /// Reported; the process must end as it would have without segpool: the saved action is put
    /// back and takes the repeated fault.
    Reported,
}

/// A claimer: async-signal-safe, called from inside the handler (see [`register`]).
pub(crate) type ClaimFn = fn(&Fault) -> Claim;

/// A signal action as `sigaction(2)` stores it.
///
/// `libc::sigaction` is plain data (a handler address, flags and a mask); the wrapper only exists
/// so it can be kept in a `static`.
#[derive(Clone, Copy)]
struct SignalAction(libc::sigaction);

// SAFETY: the struct is plain data (integers and a signal mask); sharing or sending a copy of it
// between threads has no effect on any thread or on the process.
unsafe impl Send for SignalAction {}
// SAFETY: see `Send`; `&SignalAction` gives read-only access to plain data.
unsafe impl Sync for SignalAction {}

impl std::fmt::Debug for SignalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalAction")
            .field("handler", &self.0.sa_sigaction)
            .field("flags", &self.0.sa_flags)
            .finish_non_exhaustive()
    }
}

/// What a saved action asks for, decoded so the handler only branches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    /// `SIG_DFL`: for SIGBUS and SIGSEGV, terminate with a core dump.
    Default,
    /// `SIG_IGN`.
    Ignore,
    /// A three-argument `SA_SIGINFO` handler at this address.
    SigInfo(usize),
    /// A one-argument handler at this address.
    Plain(usize),
}

impl SignalAction {
    /// `SIG_DFL`, no flags, an empty mask.
    fn default_action() -> Self {
        // SAFETY: an all-zero sigaction is SIG_DFL with no flags and an empty mask.
        Self(unsafe { MaybeUninit::zeroed().assume_init() })
    }

    /// Whether this action runs `handler` as an `SA_SIGINFO` handler.
    fn is(&self, handler: SigInfoHandler) -> bool {
        self.0.sa_sigaction == handler as usize && self.0.sa_flags & libc::SA_SIGINFO != 0
    }

    /// Whether the two actions run the same handler the same way (the mask aside).
    fn same_handler(&self, other: &SignalAction) -> bool {
        self.0.sa_sigaction == other.0.sa_sigaction && self.0.sa_flags == other.0.sa_flags
    }

    /// What this action does with a signal. Async-signal-safe (reads plain fields).
    fn disposition(&self) -> Disposition {
        match self.0.sa_sigaction {
            libc::SIG_DFL => Disposition::Default,
            libc::SIG_IGN => Disposition::Ignore,
            f if self.0.sa_flags & libc::SA_SIGINFO != 0 => Disposition::SigInfo(f),
            f => Disposition::Plain(f),
        }
    }

    /// Whether the action asked to be reset to `SIG_DFL` once it ran (`SA_RESETHAND`).
    fn resets_on_delivery(&self) -> bool {
        self.0.sa_flags & libc::SA_RESETHAND != 0
    }
}

/// The claimers of each signal, by [`Claimer`] order. Set once each, before the handler for that
/// signal is installed; the handler only reads them (`OnceLock::get` is one atomic load once
/// initialised).
static CLAIMS: [[OnceLock<ClaimFn>; CLAIMERS]; SIGNALS] =
    [const { [const { OnceLock::new() }; CLAIMERS] }; SIGNALS];

/// The result of the one installation per signal, so every later registration sees it.
static INSTALLED: [OnceLock<Result<(), io::ErrorKind>>; SIGNALS] =
    [const { OnceLock::new() }; SIGNALS];

/// The action each signal had before ours; null until saved (the handler then acts as for
/// `SIG_DFL`).
///
/// # Invariants
///
/// A non-null pointer comes from `Box::into_raw` and is never freed: the handler may read it at
/// any time. It is saved before our handler is installed, so the handler never runs without it,
/// and saved again (a new box; the first one is never freed, a handler may still be reading it)
/// only if the action our install replaced is another one, which takes another library installing
/// its own between the two calls.
static PREVIOUS: [AtomicPtr<SignalAction>; SIGNALS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SIGNALS];

/// Makes `claim` a claimer of `signal` in the place of `claimer`, and installs segpool's handler
/// for `signal` if it is not installed yet (once per process: a failure is final too).
///
/// # Safety
///
/// * `claim` is async-signal-safe: it allocates nothing, takes no lock, does no `std::io` and
///   only makes async-signal-safe calls, since it runs inside the signal handler, interrupting
///   any code of any thread. It must not touch memory that can fault with `signal` again.
/// * Only one function is ever registered for a `(signal, claimer)` pair (a second is ignored).
pub(crate) unsafe fn register(signal: Signal, claimer: Claimer, claim: ClaimFn) -> io::Result<()> {
    let _ = CLAIMS[signal as usize][claimer as usize].set(claim);
    let outcome = INSTALLED[signal as usize].get_or_init(|| install(signal).map_err(|e| e.kind()));
    outcome.map_err(io::Error::from)
}

/// Whether segpool's handler is the action installed for `signal` right now.
pub(crate) fn is_installed(signal: Signal) -> bool {
    current_action(signal).is_ok_and(|a| a.is(on_signal))
}

/// Saves the action `signal` has, installs ours, and saves the action it replaced if that is not
/// the one saved (see [`PREVIOUS`]).
///
/// Ours is installed with `SA_SIGINFO | SA_ONSTACK`:
///
/// * `SA_SIGINFO`: the handler needs `si_code` and `si_addr`.
/// * `SA_ONSTACK`: run on the thread's alternate stack when it has one (std gives every Rust
///   thread one for its stack-overflow handler), so a fault near the end of a thread's stack can
///   still be handled.
/// * No `SA_NODEFER`: the signal stays blocked while the handler runs. Nothing the handler
///   touches can fault that way, so a nested signal would be a bug in it; blocked, the kernel then
///   kills the process with the signal (a synchronous signal that is blocked is forced to its
///   default action) instead of recursing on a possibly exhausted alternate stack.
/// * No `SA_RESETHAND`, no `SA_RESTART`: the handler stays for the life of the process, and a
///   synchronous fault interrupts no system call.
fn install(signal: Signal) -> io::Result<()> {
    if cfg!(miri) {
        return Err(no_signals_under_miri());
    }
    let before = current_action(signal)?;
    save_previous(signal, before);
    let mut action = SignalAction::default_action();
    action.0.sa_sigaction = on_signal as SigInfoHandler as usize;
    action.0.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    let mut replaced = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: both pointers are valid for the call; `on_signal` is an `extern "C"` function with
    // the SA_SIGINFO signature and lives for the whole program.
    if unsafe { libc::sigaction(signal.number(), &action.0, replaced.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it filled `replaced`.
    let replaced = SignalAction(unsafe { replaced.assume_init() });
    if !replaced.same_handler(&before) {
        save_previous(signal, replaced);
    }
    Ok(())
}

/// Publishes `action` as the one `signal` had before ours (see [`PREVIOUS`]).
fn save_previous(signal: Signal, action: SignalAction) {
    PREVIOUS[signal as usize].store(Box::into_raw(Box::new(action)), Ordering::Release);
}

/// The action saved for `signal`, if any. Async-signal-safe (one atomic load).
fn previous(signal: Signal) -> Option<&'static SignalAction> {
    let p = PREVIOUS[signal as usize].load(Ordering::Acquire);
    // SAFETY: a non-null pointer came from `Box::into_raw`, was published with release after the
    // box was written, and is never freed (see `PREVIOUS`).
    unsafe { p.as_ref() }
}

/// The current action of `signal` (`sigaction(signal, NULL, &old)`).
fn current_action(signal: Signal) -> io::Result<SignalAction> {
    if cfg!(miri) {
        return Err(no_signals_under_miri());
    }
    let mut current = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `current` is valid for writes.
    if unsafe { libc::sigaction(signal.number(), std::ptr::null(), current.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it filled `current`.
    Ok(SignalAction(unsafe { current.assume_init() }))
}

/// Makes `action` the action of `signal`. Async-signal-safe.
fn set_action(signal: Signal, action: &SignalAction) {
    // SAFETY: `action.0` is a valid action (one the kernel returned, or `SIG_DFL`); a null
    // old-action pointer is allowed. sigaction(2) is async-signal-safe, and cannot fail for these
    // signals with a valid action.
    unsafe { libc::sigaction(signal.number(), &action.0, std::ptr::null_mut()) };
}

/// The handler of every signal segpool handles.
extern "C" fn on_signal(
    signum: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let _errno = ErrnoGuard::save();
    let Some(signal) = Signal::from_number(signum) else {
        // Never installed for another signal.
        return;
    };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler. `si_addr` is the union
    // member it fills for SIGBUS and SIGSEGV (for a signal sent by a process it reads bytes of the
    // union that are initialised, just meaningless: claimers check `si_code` first).
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let fault = Fault { signal, code, addr };
    for claim in CLAIMS[signal as usize].iter().filter_map(OnceLock::get) {
        match claim(&fault) {
            Claim::Pass => {}
            Claim::Recovered => return,
            Claim::Reported => {
                set_action(
                    signal,
                    previous(signal).unwrap_or(&SignalAction::default_action()),
                );
                return;
            }
        }
    }
    // SAFETY: `info` and `context` are the kernel's arguments for this signal.
    unsafe { chain(&fault, info, context) };
}

/// Hands a signal no claimer took to the action saved before ours, as if segpool were not there.
///
/// # Safety
///
/// * `info` and `context` are the kernel's arguments for this signal.
unsafe fn chain(fault: &Fault, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let signal = fault.signal;
    let previous = previous(signal);
    let reset = || set_action(signal, &SignalAction::default_action());
    let resets = previous.is_some_and(SignalAction::resets_on_delivery);
    match previous.map_or(Disposition::Default, SignalAction::disposition) {
        Disposition::SigInfo(f) => {
            if resets {
                reset();
            }
            // SAFETY: the saved action had SA_SIGINFO, so `f` is a function with the
            // three-argument signature (whoever installed it vouched for that to the kernel); we
            // pass on the kernel's own arguments.
            let f = unsafe { std::mem::transmute::<usize, SigInfoHandler>(f) };
            f(signal.number(), info, context);
        }
        Disposition::Plain(f) => {
            if resets {
                reset();
            }
            // SAFETY: the saved action had no SA_SIGINFO, so `f` is a function taking the signal
            // number.
            let f = unsafe { std::mem::transmute::<usize, extern "C" fn(libc::c_int)>(f) };
            f(signal.number());
        }
        Disposition::Ignore if fault.sent_by_process() => {}
        // SIG_DFL, or SIG_IGN for a fault (the kernel does not let a fault be ignored: it kills).
        Disposition::Default | Disposition::Ignore => {
            reset();
            if fault.sent_by_process() {
                // Returning would not repeat a signal sent with kill(2): send it again. It is
                // blocked until we return, then kills the process with the default action.
                // SAFETY: raise(3) is async-signal-safe and has no memory-safety preconditions.
                unsafe { libc::raise(signal.number()) };
            }
            // A fault: returning re-executes the instruction, which faults again and now dies
            // of the signal with the default action, exactly as without segpool.
        }
    }
}

/// Saves and restores `errno` around the handler, so the interrupted code never sees it change.
#[derive(Debug)]
struct ErrnoGuard(libc::c_int);

impl ErrnoGuard {
    /// Saves the current thread's `errno`. Async-signal-safe.
    fn save() -> Self {
        // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
        Self(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        // SAFETY: as in `save`.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// Maps fresh anonymous zero pages over `start..start + len` with `MAP_FIXED`, replacing whatever
/// was mapped there (a file range whose pages are gone). Async-signal-safe: a raw `mmap` syscall,
/// no `errno`.
///
/// Each call over part of a mapping splits it into more kernel VMAs; this fails with `ENOMEM`
/// once the process reaches `vm.max_map_count`.
///
/// # Safety
///
/// * `start` and `len` are page-aligned, and `start..start + len` lies in a live mapping that the
///   caller (the fault ranges) knows to be a registered file mapping whose every access goes
///   through the fault protocol: its contents are replaced by zeros, and no Rust reference may
///   rely on them.
pub(crate) unsafe fn replace_with_zero_pages(
    start: usize,
    len: usize,
    writable: bool,
) -> rustix::io::Result<()> {
    let prot = if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    };
    // An atomic add: async-signal-safe.
    super::count(super::Call::Mmap);
    // SAFETY: the caller guarantees the range is ours to replace (a registered file mapping that
    // is still mapped, accessed only through the fault protocol). MAP_FIXED replaces it
    // atomically: there is no window in which the range is unmapped and could be reused by
    // another mapping.
    unsafe {
        mm::mmap_anonymous(
            start as *mut libc::c_void,
            len,
            prot,
            MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
        )
    }?;
    Ok(())
}

/// Writes `bytes` to standard error with `write(2)`, retrying short writes, ignoring errors.
/// Async-signal-safe: no allocation, no lock, no buffering.
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable buffer of its length; write(2) only reads it.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Miri cannot run `sigaction(2)`: registering a claimer reports this error instead, so pools and
/// files that need the handler fail to build with a clear message.
fn no_signals_under_miri() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "signal handlers are not available under Miri",
    )
}
