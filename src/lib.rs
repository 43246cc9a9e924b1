#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod budget;
#[cfg(feature = "bytes")]
mod bytes_bridge;
mod class_pool;
pub mod diagnostics;
mod error;
pub mod fault;
mod free_stack;
pub mod fs;
mod os;
mod pool;
mod region;
mod segment;
mod size_class;
mod stats;
mod sync;
mod thread_cache;
mod writer;

pub use diagnostics::{Diagnostics, Leak, LeakReport};
pub use error::{Error, Result};
pub use pool::{Backing, SegmentPool, SegmentPoolBuilder};
pub use segment::Segment;
pub use size_class::DEFAULT_SIZE_CLASSES;
pub use stats::{ClassStats, PoolStats};
pub use writer::{SegmentChain, SegmentWriter};

#[cfg(all(test, not(loom), not(shuttle)))]
mod tests;

#[cfg(all(test, loom))]
#[path = "../loom/models.rs"]
mod loom_models;
