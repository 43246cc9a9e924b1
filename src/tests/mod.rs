//! Tests of the internals that need the crate's private items, sized so that Miri runs them all
//! in a few minutes (`.ci/miri`). They run under the ordinary test command too.
//!
//! Miri executes the pool over the emulated mapping calls of `os/miri.rs` and checks every access
//! against Tree Borrows, data races between the threads here, leaks at exit, and the ordering of
//! the atomics (its weak-memory emulation).

mod class_pool;
mod free_stack;
mod pool;
mod thread_cache;
