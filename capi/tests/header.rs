//! The committed `capi/include/segpool.h` is the header build.rs generates from the sources.

mod common;

use std::process::Command;

#[test]
fn committed_header_matches_the_generated_one() {
    let generated = std::fs::read_to_string(common::generated_include_dir().join("segpool.h"))
        .expect("build.rs wrote OUT_DIR/include/segpool.h");
    for function in [
        "segpool_pool_create",
        "segpool_pool_free",
        "segpool_allocate",
        "segpool_segment_ptr",
        "segpool_segment_len",
        "segpool_release",
        "segpool_stats",
        "segpool_usage",
        "segpool_trim",
        "segpool_last_error_message",
        "segpool_last_error_copy",
        "segpool_status_name",
    ] {
        assert!(
            generated.contains(&format!("{function}(")),
            "{function} missing from the header"
        );
    }

    // build.rs refreshes the working copy; what matters to C users is the committed one.
    let dir = common::crate_dir();
    let in_git = Command::new("git")
        .current_dir(&dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !in_git {
        println!("SKIPPED the committed-copy comparison: not in a git work tree (or no git)");
        let copy = std::fs::read_to_string(dir.join("include/segpool.h")).expect("read copy");
        assert_eq!(
            copy, generated,
            "capi/include/segpool.h differs from the generated header"
        );
        return;
    }
    let committed = Command::new("git")
        .current_dir(&dir)
        .args(["show", "HEAD:./include/segpool.h"])
        .output()
        .expect("run git show");
    assert!(
        committed.status.success(),
        "capi/include/segpool.h is not committed: {}",
        String::from_utf8_lossy(&committed.stderr)
    );
    assert!(
        committed.stdout == generated.as_bytes(),
        "the committed capi/include/segpool.h is out of date: build, review and commit the \
         regenerated copy (see `git diff capi/include/segpool.h`)"
    );
}
