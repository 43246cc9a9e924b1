//! The per-file registry: every handle on a file, whatever its path, shares one entry.

use crate::sync::Arc;

use super::rw;
use crate::fs::MmapFs;

#[test]
fn handles_on_one_file_share_generation_and_fault_state_whatever_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let fs = MmapFs::new(dir.path(), rw()).unwrap();
    let a = fs.create("f").unwrap();
    std::fs::hard_link(dir.path().join("f"), dir.path().join("alias")).unwrap();
    let b = fs.open("alias").unwrap();
    assert!(Arc::ptr_eq(a.fault_state(), b.fault_state()));
    assert_eq!(a.handles_on_file(), 2);
    let g0 = a.generation();
    b.write_all_at(b"x", 0).unwrap();
    let g1 = a.generation();
    assert!(g1 > g0, "a write through b bumps what a sees");
    a.set_len(100).unwrap();
    let g2 = b.generation();
    assert!(g2 > g1, "set_len bumps");
    b.write_all_at(b"y", 1000).unwrap();
    assert!(a.generation() > g2, "growth bumps");
    let other = fs.create("other").unwrap();
    assert!(!Arc::ptr_eq(a.fault_state(), other.fault_state()));
    drop(b);
    assert_eq!(a.handles_on_file(), 1);
}
