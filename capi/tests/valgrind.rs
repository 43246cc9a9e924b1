//! Installs the C library with `capi/install.sh` into a scratch prefix, links
//! `tests/c/smoke.c` against the shared library through the generated `segpool.pc`, runs it by
//! its soname alone (the development link `libsegpool.so` removed), then under valgrind, which
//! must report no error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(out: &Output) -> String {
    format!(
        "({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn checks_passed(out: &Output) -> usize {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("smoke: ")?.strip_suffix(" checks passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in the C program's output {}", text(out)))
}

/// Installs into `dir/prefix` and builds the smoke program with pkg-config's flags.
fn install_and_link(dir: &Path) -> (PathBuf, PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the scratch directory");
    let prefix = dir.join("prefix");
    let built = common::library("libsegpool_capi.so");
    let install = Command::new("bash")
        .arg(common::crate_dir().join("install.sh"))
        .arg(&prefix)
        .arg(built.parent().expect("the library is in a directory"))
        .output()
        .expect("run install.sh");
    assert!(
        install.status.success(),
        "install.sh failed {}",
        text(&install)
    );

    let lib = prefix.join("lib");
    let pkg = Command::new("pkg-config")
        .args(["--cflags", "--libs", "segpool"])
        .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
        .output()
        .expect("run pkg-config");
    assert!(pkg.status.success(), "pkg-config failed {}", text(&pkg));
    let flags = String::from_utf8(pkg.stdout).expect("pkg-config prints text");

    let exe = dir.join("smoke");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg(common::crate_dir().join("tests/c/smoke.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(cc.status.success(), "cc failed {}", text(&cc));
    // Only the soname is needed at run time: the unversioned link is for linking.
    std::fs::remove_file(lib.join("libsegpool.so")).expect("remove the development link");
    (exe, lib)
}

#[test]
fn installed_shared_library_runs_by_its_soname_and_clean_under_valgrind() {
    for tool in ["cc", "pkg-config"] {
        if !common::available(tool) {
            println!("SKIPPED: no `{tool}` on this machine");
            return;
        }
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("segpool_installed");
    let (exe, lib) = install_and_link(&dir);
    assert!(lib.join("libsegpool.so.0").exists());

    let run = Command::new(&exe).output().expect("run the C program");
    assert!(run.status.success(), "the C program failed {}", text(&run));
    assert!(checks_passed(&run) > 10_100);

    if !common::available("valgrind") {
        println!("SKIPPED (valgrind part): no `valgrind` on this machine");
        return;
    }
    let run = Command::new("valgrind")
        .args(["--error-exitcode=99", "--quiet"])
        .arg(&exe)
        .output()
        .expect("run valgrind");
    assert!(
        run.status.success(),
        "the C program under valgrind failed {}",
        text(&run)
    );
    assert!(checks_passed(&run) > 10_100);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !stderr.contains("=="),
        "valgrind reported something {}",
        text(&run)
    );
}
