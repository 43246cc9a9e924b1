//! `membarrier(2)`: a memory barrier on every running thread of the process, issued by one of
//! them. It lets a hot path use a compiler-only fence while a rare path pays for the real barrier
//! (the asymmetric fence of userspace RCU); see `fs/gate/`.
//!
//! Unused under the loom and shuttle models, which have no `membarrier` (the gate uses fences).
#![cfg_attr(any(loom, shuttle), allow(dead_code))]

use rustix::thread::{membarrier, membarrier_query, MembarrierCommand};

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (needed once per process before
/// [`private_expedited`] may be used). `false` when the kernel lacks the command or refuses it
/// (kernels before 4.14, seccomp filters, some sandboxes): callers then use real fences.
pub(crate) fn register_private_expedited() -> bool {
    // Miri has no `membarrier`: callers take the fenced path, which Miri checks.
    if cfg!(miri) {
        return false;
    }
    membarrier_query().contains_command(MembarrierCommand::PrivateExpedited)
        && membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
}

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`: when this returns, every thread of the process that was
/// running has executed a full memory barrier, and every thread that was not running will pass a
/// full barrier (the context switch) before it runs again. Only valid after
/// [`register_private_expedited`] returned `true`; it reports an error otherwise.
pub(crate) fn private_expedited() -> std::io::Result<()> {
    membarrier(MembarrierCommand::PrivateExpedited).map_err(std::io::Error::from)
}
