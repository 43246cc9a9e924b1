// The README's links to the guides in docs/ are relative: they work in a checkout and where the
// repository is browsed, not on this page (rustdoc, docs.rs). Here they point at the same files in
// the published crate, at this version, on docs.rs: the first definition of a link name wins, so
// these come before the README, which defines the relative ones. A guide added to the README's
// links needs its line here too (tests/front_page.rs checks that the two lists agree).
#![doc = concat!("[docs/bridges.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/bridges.md")]
#![doc = concat!("[docs/uring.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/uring.md")]
#![doc = concat!("[docs/benchmarks.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/benchmarks.md")]
#![doc = concat!("[docs/files.md#views-and-the-memory-model]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/files.md#views-and-the-memory-model")]
#![doc = concat!("[docs/faults.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/faults.md")]
#![doc = concat!("[docs/files.md#paths]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/files.md#paths")]
#![doc = concat!("[docs/design.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/design.md")]
#![doc = concat!("[docs/files.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/files.md")]
#![doc = concat!("[docs/diagnostics.md]: https://docs.rs/crate/segpool/", env!("CARGO_PKG_VERSION"), "/source/docs/diagnostics.md")]
#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod budget;
#[cfg(feature = "bytes")]
mod bytes_bridge;
mod class_pool;
mod clock;
pub mod diagnostics;
mod error;
pub mod fault;
mod free_stack;
pub mod fs;
mod observer;
mod os;
mod pool;
mod region;
mod segment;
mod size_class;
mod stats;
mod sync;
#[cfg(feature = "io-uring")]
pub mod uring;
mod writer;

pub use budget::{Budget, Reservation};
pub use diagnostics::{Diagnostics, Leak, LeakReport};
pub use error::{Error, ErrorKind, Result};
pub use pool::{Backing, SegmentPool, SegmentPoolBuilder, DEFAULT_PURGE_DECAY};
pub use segment::Segment;
pub use size_class::DEFAULT_SIZE_CLASSES;
pub use stats::{ClassStats, PoolStats, PoolUsage};
pub use writer::{SegmentChain, SegmentWriter};

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests;

#[cfg(all(test, loom))]
#[path = "../loom/models.rs"]
mod loom_models;
