//! `MappedFile` against `std::fs::File`: the differences once found, each as a test, then random
//! operation sequences run on both and compared result by result and byte by byte.
//!
//! The random part runs `SEGPOOL_DIFF_CASES` sequences per setup (32 by default: 256 in all); a
//! failure prints the setup, the seed and the last operations, and `SEGPOOL_DIFF_SEED=<seed>`
//! reruns exactly that sequence (the seed's low four bits name its setup). See docs/files.md ("Agreement with std::fs::File").
//!
//! `found.rs` holds the differences once found, `model.rs` the setups and the reference each
//! sequence is compared with, `random.rs` the sequences.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use segpool::fs::{MapConfig, MapMode, MappedFile, MmapFs};
use segpool::{Error, ErrorKind};

#[path = "../common/mod.rs"]
mod common;
mod found;
mod model;
mod random;

use common::{pattern, rw};

fn page() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u64
}

/// A plain descriptor on the same file, outside segpool (as another process would have).
fn outside(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(name))
        .unwrap()
}

fn is_faulted(e: &io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
            .map(Error::kind),
        Some(ErrorKind::Faulted { .. })
    )
}

fn disk_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}
