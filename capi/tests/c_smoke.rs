//! Compiles `tests/c/smoke.c` with `cc` against the generated header and `libsegpool_capi.a`, runs
//! it, and checks its exit code and output.

mod common;

use std::process::Command;

#[test]
fn c_program_uses_the_abi_and_every_bad_handle_is_refused() {
    if !common::available("cc") {
        println!("SKIPPED: no `cc` on this machine");
        return;
    }
    let lib = common::library("libsegpool_capi.a");
    let src = common::crate_dir().join("tests/c/smoke.c");
    let exe = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("segpool_c_smoke");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(common::generated_include_dir())
        .arg(&src)
        .arg(&lib)
        // What `--print native-static-libs` lists for this staticlib.
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "cc failed ({}):\n{}{}",
        cc.status,
        String::from_utf8_lossy(&cc.stdout),
        String::from_utf8_lossy(&cc.stderr)
    );

    let run = Command::new(&exe).output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the C program failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("smoke: ")?.strip_suffix(" checks passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in the C program's output:\n{stdout}"));
    assert!(passed > 10_100, "only {passed} checks ran");
}
