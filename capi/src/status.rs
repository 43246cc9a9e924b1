//! Status codes, the thread-local last error, and the wrapper every exported function runs in.
//!
//! Every exported function returns a [`SegpoolStatus`] and runs its body through [`run`]: the
//! body's error becomes the status code and this thread's last-error message, and a panic becomes
//! [`SegpoolStatus::Panic`] instead of unwinding into the caller's frames.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a `segpool_*` call did. `SEGPOOL_STATUS_OK` (0) is success; every other value is an
/// error, and `segpool_last_error_message()` then says what exactly failed on this thread.
///
/// Values are stable: new codes are only ever added at the end.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegpoolStatus {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL.
    NullPointer = 1,
    /// A handle argument was 0, the null handle.
    NullHandle = 2,
    /// A handle that this library never issued (a made-up value, a segment handle where a pool
    /// handle belongs or the other way round, a slot or generation that was never handed out).
    InvalidHandle = 3,
    /// A handle that was valid once: its segment was released (a double release lands here) or
    /// its pool was freed.
    StaleHandle = 4,
    /// A segment handle issued by another pool than the one passed with it.
    WrongPool = 5,
    /// A request for zero bytes.
    ZeroSize = 6,
    /// A request too large to map (it overflows when rounded to pages).
    TooLarge = 7,
    /// The pool's budget cannot fit the request (after waiting `timeout_ms`, if given).
    BudgetExceeded = 8,
    /// A configuration value that cannot work; the message names it.
    InvalidConfig = 9,
    /// The operating system refused to map memory.
    MapFailed = 10,
    /// A fixed limit of this ABI was reached: 32767 live pools, or 16777216 slots in one pool.
    LimitReached = 11,
    /// A file-backed mapping faulted (not produced by the anonymous pools this ABI creates today).
    Faulted = 12,
    /// The library panicked; the call did nothing it could not undo, and the message says where.
    Panic = 13,
    /// An error of the Rust library that this version of the ABI does not know by name.
    Unknown = 14,
}

impl SegpoolStatus {
    /// Every status, in value order (not exported: C has the enum).
    pub(crate) const ALL: [SegpoolStatus; 15] = [
        Self::Ok,
        Self::NullPointer,
        Self::NullHandle,
        Self::InvalidHandle,
        Self::StaleHandle,
        Self::WrongPool,
        Self::ZeroSize,
        Self::TooLarge,
        Self::BudgetExceeded,
        Self::InvalidConfig,
        Self::MapFailed,
        Self::LimitReached,
        Self::Faulted,
        Self::Panic,
        Self::Unknown,
    ];

    /// The name of the status as the C header spells it, NUL-terminated.
    pub(crate) fn name(self) -> &'static CStr {
        match self {
            Self::Ok => c"SEGPOOL_STATUS_OK",
            Self::NullPointer => c"SEGPOOL_STATUS_NULL_POINTER",
            Self::NullHandle => c"SEGPOOL_STATUS_NULL_HANDLE",
            Self::InvalidHandle => c"SEGPOOL_STATUS_INVALID_HANDLE",
            Self::StaleHandle => c"SEGPOOL_STATUS_STALE_HANDLE",
            Self::WrongPool => c"SEGPOOL_STATUS_WRONG_POOL",
            Self::ZeroSize => c"SEGPOOL_STATUS_ZERO_SIZE",
            Self::TooLarge => c"SEGPOOL_STATUS_TOO_LARGE",
            Self::BudgetExceeded => c"SEGPOOL_STATUS_BUDGET_EXCEEDED",
            Self::InvalidConfig => c"SEGPOOL_STATUS_INVALID_CONFIG",
            Self::MapFailed => c"SEGPOOL_STATUS_MAP_FAILED",
            Self::LimitReached => c"SEGPOOL_STATUS_LIMIT_REACHED",
            Self::Faulted => c"SEGPOOL_STATUS_FAULTED",
            Self::Panic => c"SEGPOOL_STATUS_PANIC",
            Self::Unknown => c"SEGPOOL_STATUS_UNKNOWN",
        }
    }
}

/// A failed call: the code the caller gets and the message it can read.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: SegpoolStatus,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: SegpoolStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<segpool::Error> for Failure {
    fn from(e: segpool::Error) -> Self {
        use segpool::ErrorKind;
        let status = match e.kind() {
            ErrorKind::BudgetExceeded { .. } => SegpoolStatus::BudgetExceeded,
            ErrorKind::ZeroSize => SegpoolStatus::ZeroSize,
            ErrorKind::TooLarge { .. } => SegpoolStatus::TooLarge,
            ErrorKind::InvalidConfig(_) => SegpoolStatus::InvalidConfig,
            ErrorKind::Map(_) => SegpoolStatus::MapFailed,
            ErrorKind::Faulted { .. } => SegpoolStatus::Faulted,
            _ => SegpoolStatus::Unknown,
        };
        Self::new(status, e.to_string())
    }
}

/// A failure for a NULL pointer argument, naming the parameter.
pub(crate) fn null(param: &str) -> Failure {
    Failure::new(
        SegpoolStatus::NullPointer,
        format!("`{param}` is NULL; it must point to writable memory of its type"),
    )
}

thread_local! {
    /// The message of this thread's last call; empty after a success.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs would cut the C string short; no message of ours has one, but be total.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; the status code still reports.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = c);
}

/// Runs the body of an exported function: clears the last error, catches panics, and turns the
/// outcome into a status code (recording the message of a failure).
pub(crate) fn run(body: impl FnOnce() -> Result<(), Failure>) -> SegpoolStatus {
    set_last_error("");
    // AssertUnwindSafe: after a panic the only state we touch again is behind parking_lot locks
    // whose critical sections leave the slot tables consistent at every step (see `pools`).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SegpoolStatus::Ok,
        Ok(Err(f)) => {
            set_last_error(&f.message);
            f.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".to_string());
            set_last_error(&format!("segpool panicked: {what}"));
            SegpoolStatus::Panic
        }
    }
}

/// Like [`run`] for functions that return a value instead of a status: a panic gives `fallback`.
pub(crate) fn run_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// A pointer to this thread's last message, valid until this thread's next `segpool_*` call
/// (other than the last-error and status-name functions) or its exit.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Copies this thread's last message into `buf` (truncated, always NUL-terminated when
/// `buf_len > 0`) and returns its full length in bytes, without the NUL.
pub(crate) fn copy_last_error(buf: &mut [u8]) -> usize {
    LAST_ERROR
        .try_with(|slot| {
            let slot = slot.borrow();
            let msg = slot.as_bytes();
            if let Some(room) = buf.len().checked_sub(1) {
                let n = msg.len().min(room);
                buf[..n].copy_from_slice(&msg[..n]);
                buf[n] = 0;
            }
            msg.len()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = run(|| panic!("boom at step 3"));
        assert_eq!(st, SegpoolStatus::Panic);
        // SAFETY: the pointer is this thread's message, NUL-terminated, read before the next call.
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("boom at step 3"), "{msg}");
        assert_eq!(run(|| Ok(())), SegpoolStatus::Ok);
        // SAFETY: the pointer is this thread's message, read before the next call.
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) };
        assert!(msg.is_empty());
    }

    #[test]
    fn copies_truncate_and_terminate() {
        let st = run(|| Err(Failure::new(SegpoolStatus::ZeroSize, "0123456789")));
        assert_eq!(st, SegpoolStatus::ZeroSize);
        let mut buf = [0xffu8; 4];
        assert_eq!(copy_last_error(&mut buf), 10);
        assert_eq!(&buf, b"012\0");
        assert_eq!(copy_last_error(&mut []), 10);
    }

    #[test]
    fn names_match_values() {
        for (i, s) in SegpoolStatus::ALL.iter().enumerate() {
            assert_eq!(*s as i32, i as i32);
            assert!(s.name().to_str().unwrap().starts_with("SEGPOOL_STATUS_"));
        }
    }
}
