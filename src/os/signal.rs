//! Signals: installing the SIGBUS action, and the calls the SIGBUS handler makes.
//!
//! This is the only file that calls `sigaction` or maps over a faulting page. `sigaction` and
//! `siginfo_t` come from the `libc` crate (rustix does not expose signal handlers); the mapping
//! that replaces a lost page uses rustix, whose Linux backend issues the raw syscall and never
//! touches `errno`.
//!
//! Everything marked *async-signal-safe* below is called from inside the SIGBUS handler: it
//! allocates nothing, takes no lock, formats nothing, and only issues syscalls that POSIX lists as
//! async-signal-safe (`sigaction`, `raise`) or that are plain system calls with no library state
//! (`mmap`).

use std::io;
use std::mem::MaybeUninit;

use rustix::mm::{self, MapFlags, ProtFlags};

/// The signature of an `SA_SIGINFO` handler.
pub(crate) type SigInfoHandler =
    extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// A signal action as `sigaction(2)` stores it.
///
/// `libc::sigaction` is plain data (a handler address, flags and a mask); the wrapper only exists
/// so it can be kept in a `static`.
#[derive(Clone, Copy)]
pub(crate) struct SignalAction(libc::sigaction);

// SAFETY: the struct is plain data (integers and a signal mask); sharing or sending a copy of it
// between threads has no effect on any thread or on the process.
unsafe impl Send for SignalAction {}
// SAFETY: see `Send`; `&SignalAction` gives read-only access to plain data.
unsafe impl Sync for SignalAction {}

impl std::fmt::Debug for SignalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalAction")
            .field("handler", &self.handler())
            .field("flags", &self.0.sa_flags)
            .finish_non_exhaustive()
    }
}

/// What a previous action asks for, decoded once so the handler only branches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// `SIG_DFL`: for SIGBUS, terminate with a core dump.
    Default,
    /// `SIG_IGN`.
    Ignore,
    /// A three-argument `SA_SIGINFO` handler at this address.
    SigInfo(usize),
    /// A one-argument handler at this address.
    Plain(usize),
}

impl SignalAction {
    /// The handler address (`SIG_DFL`, `SIG_IGN` or a function).
    pub(crate) fn handler(&self) -> usize {
        self.0.sa_sigaction
    }

    /// Whether this action runs `handler` as an `SA_SIGINFO` handler.
    pub(crate) fn is(&self, handler: SigInfoHandler) -> bool {
        self.0.sa_sigaction == handler as usize && self.0.sa_flags & libc::SA_SIGINFO != 0
    }

    /// What this action does with a signal. Async-signal-safe (reads plain fields).
    pub(crate) fn disposition(&self) -> Disposition {
        match self.0.sa_sigaction {
            libc::SIG_DFL => Disposition::Default,
            libc::SIG_IGN => Disposition::Ignore,
            f if self.0.sa_flags & libc::SA_SIGINFO != 0 => Disposition::SigInfo(f),
            f => Disposition::Plain(f),
        }
    }

    /// Whether the action asked to be reset to `SIG_DFL` once it ran (`SA_RESETHAND`).
    pub(crate) fn resets_on_delivery(&self) -> bool {
        self.0.sa_flags & libc::SA_RESETHAND != 0
    }
}

/// Installs `handler` as the process's SIGBUS action with `SA_SIGINFO | SA_ONSTACK` and returns
/// the action it replaced.
///
/// * `SA_SIGINFO`: the handler needs `si_code` and `si_addr`.
/// * `SA_ONSTACK`: run on the thread's alternate stack when it has one (std gives every Rust
///   thread one for its stack-overflow handler), so a fault near the end of a thread's stack can
///   still be handled.
/// * No `SA_NODEFER`: SIGBUS stays blocked while the handler runs. The handler touches no mapped
///   file memory, so a nested SIGBUS would be a bug in it; blocked, the kernel then kills the
///   process with SIGBUS (a synchronous signal that is blocked is forced to its default action)
///   instead of recursing on a possibly exhausted alternate stack.
/// * No `SA_RESETHAND`, no `SA_RESTART`: the handler stays for the life of the process, and a
///   synchronous fault interrupts no system call.
pub(crate) fn install_sigbus(handler: SigInfoHandler) -> io::Result<SignalAction> {
    if cfg!(miri) {
        return Err(no_signals_under_miri());
    }
    // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, no flags, empty mask); every
    // field we rely on is then set explicitly.
    let mut action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `sa_mask` is a valid, owned sigset; sigemptyset only writes it.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    let mut previous = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: both pointers are valid for the call; `handler` is an `extern "C"` function with
    // the SA_SIGINFO signature and lives for the whole program.
    if unsafe { libc::sigaction(libc::SIGBUS, &action, previous.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it filled `previous`.
    Ok(SignalAction(unsafe { previous.assume_init() }))
}

/// The current SIGBUS action (`sigaction(SIGBUS, NULL, &old)`).
pub(crate) fn current_sigbus_action() -> io::Result<SignalAction> {
    if cfg!(miri) {
        return Err(no_signals_under_miri());
    }
    let mut current = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `current` is valid for writes.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), current.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it filled `current`.
    Ok(SignalAction(unsafe { current.assume_init() }))
}

/// Resets SIGBUS to `SIG_DFL`. Async-signal-safe.
pub(crate) fn reset_sigbus_to_default() {
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags and an empty mask.
    let action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: valid pointer to a valid action; a null old-action pointer is allowed.
    // sigaction(2) is async-signal-safe. It cannot fail for SIGBUS with a valid action.
    unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
}

/// Sends SIGBUS to the calling thread (it is delivered once the handler returns and SIGBUS is
/// unblocked). Async-signal-safe.
pub(crate) fn raise_sigbus() {
    // SAFETY: raise(3) is async-signal-safe and has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGBUS) };
}

/// Calls a previous `SA_SIGINFO` handler with the arguments our handler received.
///
/// # Safety
///
/// * `address` is the `sa_sigaction` of an action that had `SA_SIGINFO`: a function with the
///   three-argument handler signature (whoever installed it vouched for that to the kernel).
/// * `info` and `context` are the pointers the kernel passed to our handler for this signal.
pub(crate) unsafe fn call_siginfo_handler(
    address: usize,
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the caller guarantees `address` is a function of this signature.
    let f: SigInfoHandler = unsafe { std::mem::transmute::<usize, SigInfoHandler>(address) };
    f(signal, info, context);
}

/// Calls a previous one-argument handler.
///
/// # Safety
///
/// * `address` is the `sa_handler` of an action without `SA_SIGINFO`: a function taking the
///   signal number.
pub(crate) unsafe fn call_plain_handler(address: usize, signal: libc::c_int) {
    // SAFETY: the caller guarantees `address` is a function of this signature.
    let f: extern "C" fn(libc::c_int) =
        unsafe { std::mem::transmute::<usize, extern "C" fn(libc::c_int)>(address) };
    f(signal);
}

/// `si_code` and `si_addr` of a SIGBUS. Async-signal-safe.
///
/// # Safety
///
/// * `info` is the `siginfo_t` pointer the kernel passed to an `SA_SIGINFO` handler.
pub(crate) unsafe fn fault_code_and_address(info: *const libc::siginfo_t) -> (libc::c_int, usize) {
    // SAFETY: the caller passes the kernel's siginfo, valid for reads while the handler runs;
    // `si_addr` is the union member the kernel fills for SIGBUS (and for a user-sent SIGBUS it
    // reads bytes of the union that are initialised, just meaningless, which is why the caller
    // checks `si_code` first).
    unsafe { ((*info).si_code, (*info).si_addr() as usize) }
}

/// The `si_code`s that mean "this page of a mapping has no backing": `BUS_ADRERR` (beyond the end
/// of the file, an I/O error at page-in, no space at a write fault; all three arrive as this on
/// Linux) and `BUS_MCEERR_AR` (a hardware memory error consumed by this access).
pub(crate) fn is_lost_page_code(code: libc::c_int) -> bool {
    code == libc::BUS_ADRERR || code == libc::BUS_MCEERR_AR
}

/// Whether the signal was sent by a process (`kill`, `tgkill`, `sigqueue`) rather than raised by
/// the kernel for a fault: such a SIGBUS does not re-occur when the handler returns.
pub(crate) fn is_sent_by_process(code: libc::c_int) -> bool {
    code <= 0
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
///   caller (the fault registry) knows to be a registered file mapping whose every access goes
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

/// Saves and restores `errno` around the handler, so the interrupted code never sees it change.
#[derive(Debug)]
pub(crate) struct ErrnoGuard(libc::c_int);

impl ErrnoGuard {
    /// Saves the current thread's `errno`. Async-signal-safe.
    pub(crate) fn save() -> Self {
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

/// Installs `handler` as the process's SIGSEGV action with `SA_SIGINFO | SA_ONSTACK` (for the
/// reasons given at [`install_sigbus`]) and returns the action it replaced.
pub(crate) fn install_sigsegv(handler: SigInfoHandler) -> io::Result<SignalAction> {
    if cfg!(miri) {
        return Err(no_signals_under_miri());
    }
    // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, no flags, empty mask); every
    // field we rely on is then set explicitly.
    let mut action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `sa_mask` is a valid, owned sigset; sigemptyset only writes it.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    let mut previous = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: both pointers are valid for the call; `handler` is an `extern "C"` function with
    // the SA_SIGINFO signature and lives for the whole program.
    if unsafe { libc::sigaction(libc::SIGSEGV, &action, previous.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction succeeded, so it filled `previous`.
    Ok(SignalAction(unsafe { previous.assume_init() }))
}

/// Makes `action` the SIGSEGV action again (a saved previous action). Async-signal-safe.
pub(crate) fn restore_sigsegv(action: &SignalAction) {
    // SAFETY: `action.0` is an action the kernel returned from sigaction(2); a null old-action
    // pointer is allowed. sigaction(2) is async-signal-safe.
    unsafe { libc::sigaction(libc::SIGSEGV, &action.0, std::ptr::null_mut()) };
}

/// Resets SIGSEGV to `SIG_DFL`. Async-signal-safe.
pub(crate) fn reset_sigsegv_to_default() {
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags and an empty mask.
    let action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: valid pointer to a valid action; a null old-action pointer is allowed.
    unsafe { libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()) };
}

/// Sends SIGSEGV to the calling thread. Async-signal-safe.
pub(crate) fn raise_sigsegv() {
    // SAFETY: raise(3) is async-signal-safe and has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGSEGV) };
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

/// Miri cannot run `sigaction(2)`: the fault handler and the guard-page hook report this error
/// instead, so pools and files that need them fail to build with a clear message.
fn no_signals_under_miri() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "signal handlers are not available under Miri",
    )
}
