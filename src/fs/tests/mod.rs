//! Tests of the file layer that look at its internals (reader slots, the gates' fence form, a
//! handle's dirty flag and last synced range, its mapped windows, the registry's handle count),
//! so they live in the crate instead of `tests/`. They need a real kernel (file mappings,
//! `membarrier`): not under Miri or the models.

mod gate;
mod gate_scenarios;
mod registry;
mod sync;
mod windows;

use std::process::Command;

use crate::fs::{MapConfig, MapMode};

/// A `MapConfig` for reading and writing through the shared mapping (everything else default).
fn rw() -> MapConfig {
    MapConfig::default().mode(MapMode::ReadWrite)
}

/// `len` bytes of a pattern that differs with `seed` and with the offset.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The variable that tells a child process of this test binary which test it runs alone.
const ALONE: &str = "SEGPOOL_TEST_ALONE";

/// For a test that needs a process of its own (the gates' fence form is chosen once per
/// process; the count of reader slots is the whole process's): returns true in a child of this
/// test binary that runs the test `path` (`module_path!()`-style, crate name first) alone, where
/// the caller then runs the test's body. In the test binary's own run, runs that child, asserts
/// that it ran the test and passed, and returns false.
fn alone_in_a_process(path: &str) -> bool {
    let name = path.split_once("::").map_or(path, |(_, rest)| rest);
    if std::env::var_os(ALONE).is_some_and(|v| v == name) {
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}, alone in a process, failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran {name}:\n{stdout}"
    );
    false
}
