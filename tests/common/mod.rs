//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::{Command, ExitStatus};

/// Runs the `#[ignore]`d test `name` of this test binary in a child process (optionally wrapped in
/// `unshare --mount --propagation private`, for tests that mount a filesystem) and returns its exit
/// status and combined output.
pub fn run_child(name: &str, private_mounts: bool, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = if private_mounts {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Exit code a child uses to say "this environment cannot run me" (after printing why).
pub const SKIP: i32 = 77;

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .expect("statm has a resident field")
        .parse()
        .expect("resident is a number");
    pages * 4096
}

/// Whether `addr` lies inside any mapping of this process, from `/proc/self/maps`.
pub fn is_mapped(addr: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap_or("");
        let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
        let a = usize::from_str_radix(a, 16).unwrap_or(0);
        let b = usize::from_str_radix(b, 16).unwrap_or(0);
        (a..b).contains(&addr)
    })
}

/// A `MapConfig` for reading and writing through the shared mapping (everything else default).
pub fn rw() -> segpool::fs::MapConfig {
    segpool::fs::MapConfig::default().mode(segpool::fs::MapMode::ReadWrite)
}

/// `len` bytes of a pattern that differs with `seed` and with the offset.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
