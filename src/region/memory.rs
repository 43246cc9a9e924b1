//! A region's memory: the mapping behind it, and how it is made for the pool's backing.

use std::io;
use std::path::Path;

use crate::os::{file, Mapping, Protection, Sharing};

/// What backs a region's memory, unmapped when it is destroyed.
///
/// File-backed regions are not registered with the fault guard (`crate::fault`): a segment is a
/// plain `&mut [u8]` with no operation that could report a lost page, so a SIGBUS in one kills
/// the process as it would without segpool (`docs/faults.md`, "File-backed pools").
#[derive(Debug)]
pub(crate) struct RegionMemory {
    pub(crate) mapping: Mapping,
    /// A shared mapping of a nameless file (`Backing::File`): purging frees its blocks
    /// (`MADV_REMOVE`) rather than dropping private pages.
    pub(crate) file_backed: bool,
}

/// Maps the memory of a region or dedicated mapping: anonymous memory, or with `file_dir` a
/// nameless file created in that directory, given its full size before it is mapped (so a full
/// disk is an `Err` here, never a SIGBUS later).
pub(crate) fn map_memory(
    file_dir: Option<&Path>,
    len: usize,
    huge_pages: bool,
    prefault: bool,
) -> io::Result<RegionMemory> {
    const HUGE: usize = 2 << 20;
    match file_dir {
        None => {
            let huge = huge_pages && len >= HUGE;
            let mapping = Mapping::anonymous(len, if huge { HUGE } else { 4096 })?;
            if huge {
                mapping.advise_huge_pages();
            }
            if prefault {
                mapping.populate_write()?;
            }
            Ok(RegionMemory {
                mapping,
                file_backed: false,
            })
        }
        Some(dir) => {
            let f = file::anonymous_file(dir)?;
            file::reserve(&f, 0, len as u64)?;
            let mapping = Mapping::file(&f, 0, len, Protection::ReadWrite, Sharing::Shared, false)?;
            if prefault {
                mapping.populate_write()?;
            }
            // Not registered with the fault guard (see `RegionMemory`). The mapping keeps the
            // nameless file alive; the descriptor can go.
            drop(f);
            Ok(RegionMemory {
                mapping,
                file_backed: true,
            })
        }
    }
}
