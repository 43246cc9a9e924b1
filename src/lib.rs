#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

mod error;
pub mod fault;
mod os;
mod sync;

pub use error::{Error, Result};
