//! Runs `tests/python/client.py` (ctypes, several threads) against `libsegpool_capi.so`.

mod common;

use std::process::Command;

#[test]
fn python_ctypes_client_from_several_threads() {
    if !common::available("python3") {
        println!("SKIPPED: no `python3` on this machine");
        return;
    }
    let lib = common::library("libsegpool_capi.so");
    let script = common::crate_dir().join("tests/python/client.py");
    let header = common::generated_include_dir().join("segpool.h");
    let run = Command::new("python3")
        .arg(&script)
        .arg(&lib)
        .arg(&header)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the Python client failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("python: ")?.strip_suffix(" checks passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in the Python client's output:\n{stdout}"));
    assert!(passed > 20_000, "only {passed} checks ran");
}

#[test]
fn python_client_without_arguments_prints_its_usage() {
    if !common::available("python3") {
        println!("SKIPPED: no `python3` on this machine");
        return;
    }
    let script = common::crate_dir().join("tests/python/client.py");
    let run = Command::new("python3")
        .arg(&script)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.starts_with("usage: "), "stderr:\n{stderr}");
    assert!(!stderr.contains("Traceback"), "stderr:\n{stderr}");
}
