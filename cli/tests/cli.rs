//! The `segpool` binary as a user runs it: the demo, the stress run, and the one-line errors.

use std::process::{Command, Output};

fn segpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segpool"))
        .args(args)
        .output()
        .expect("the segpool binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A usage or run error: non-zero exit, exactly one line on stderr, no panic, no backtrace.
fn assert_one_line_error(out: &Output, mentions: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "must fail; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err:?}");
    assert!(err.starts_with("segpool: error: "), "{err:?}");
    assert!(
        err.contains(mentions),
        "{err:?} should mention {mentions:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
}

#[test]
fn demo_with_no_subcommand_serializes_and_verifies_every_record() {
    // Options without the word `demo` run the demo, like `cargo run --release` with none.
    let out = segpool(&["--records", "3000", "--threads", "2", "--budget", "1M"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("verified 3000/3000 records"), "{stdout}");
    assert!(stdout.contains("class"), "the stats table: {stdout}");
    // stdout is a pipe here: no progress bar, no escape sequences.
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
}

#[test]
fn demo_keeps_the_out_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.seg");
    let out = segpool(&[
        "demo",
        "--records",
        "1000",
        "--threads",
        "3",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("verified 1000/1000 records"));
    assert!(std::fs::metadata(&path).unwrap().len() > 1000 * 16);
}

#[test]
fn demo_writes_its_pool_stats_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.json");
    let out = segpool(&[
        "demo",
        "--records",
        "2000",
        "--threads",
        "2",
        "--budget",
        "1M",
        "--stats-json",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing or not a number: {v}"))
    };
    // Every segment went back: as many releases as allocations, none in use.
    assert!(n("allocations") > 0, "{v}");
    assert_eq!(n("allocations"), n("releases"), "{v}");
    assert_eq!(n("in_use_bytes"), 0, "{v}");
    assert!(n("peak_mapped_bytes") <= 1 << 20, "over the budget: {v}");
}

#[test]
fn unwritable_stats_json_is_one_line_before_the_run() {
    let out = segpool(&[
        "demo",
        "--records",
        "1000",
        "--stats-json",
        "/nonexistent-dir/stats.json",
    ]);
    assert_one_line_error(&out, "--stats-json");
    assert!(
        !text(&out.stdout).contains("verified"),
        "the run should not start: {}",
        text(&out.stdout)
    );
}

#[test]
fn bad_budget_is_one_line() {
    assert_one_line_error(&segpool(&["demo", "--budget", "12Q"]), "--budget");
    assert_one_line_error(&segpool(&["--budget", "lots"]), "--budget");
    assert_one_line_error(&segpool(&["demo", "--budget", "64K"]), "too small");
}

#[test]
fn unwritable_out_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder").join("x.seg");
    assert_one_line_error(
        &segpool(&[
            "demo",
            "--records",
            "10",
            "--out",
            missing.to_str().unwrap(),
        ]),
        "cannot write",
    );
    // The file layer's word for the folder ("root") is not the command's.
    let err = text(
        &segpool(&[
            "demo",
            "--records",
            "10",
            "--out",
            missing.to_str().unwrap(),
        ])
        .stderr,
    );
    assert!(!err.contains("root"), "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    // A folder where the file should be.
    assert_one_line_error(
        &segpool(&[
            "demo",
            "--records",
            "10",
            "--out",
            dir.path().to_str().unwrap(),
        ]),
        "cannot write",
    );
}

#[test]
fn seed_accepts_the_hex_the_demo_prints() {
    let out = segpool(&["demo", "--records", "100"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let seed = stdout
        .split("seed ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no seed in {stdout}"));
    assert!(seed.starts_with("0x"), "{stdout}");
    let again = segpool(&["demo", "--records", "100", "--seed", seed]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains(&format!("seed {seed}")));
    let decimal = segpool(&["demo", "--records", "100", "--seed", "12345"]);
    assert!(decimal.status.success(), "{}", text(&decimal.stderr));
    assert!(text(&decimal.stdout).contains("seed 0x3039"));
    assert_one_line_error(&segpool(&["demo", "--seed", "0xzz"]), "--seed");
}

#[test]
fn size_options_name_every_unit_they_accept() {
    for sub in ["demo", "stress"] {
        let help = text(&segpool(&[sub, "--help"]).stdout);
        assert!(help.contains("K, M, G or T"), "{sub}: {help}");
    }
    assert_one_line_error(&segpool(&["demo", "--budget", "1P"]), "K, M, G or T");
}

/// Without the `peers` feature, `bench` says how to get it instead of running.
#[cfg(not(feature = "peers"))]
#[test]
fn bench_without_the_peers_feature_names_it() {
    let out = segpool(&["bench"]);
    assert_one_line_error(&out, "--features peers -- bench");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn zero_threads_is_one_line() {
    assert_one_line_error(&segpool(&["demo", "--threads", "0"]), "zero threads");
    assert_one_line_error(&segpool(&["stress", "--threads", "0"]), "zero threads");
}

#[test]
fn stress_with_faults_reports_zero_corruptions() {
    let out = segpool(&["stress", "--threads", "2", "--seconds", "1", "--faults"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l == "0 corruptions"), "{stdout}");
    assert!(stdout.contains("truncations"), "{stdout}");
    assert!(stdout.contains("segments allocated"), "{stdout}");
}

#[test]
fn stress_reports_the_first_corruption_and_fails() {
    // The checker itself: a byte scribbled over a live segment must be caught and named.
    let out = segpool(&[
        "stress",
        "--threads",
        "2",
        "--seconds",
        "0.3",
        "--inject-corruption",
    ]);
    assert_one_line_error(&out, "corruption: segment at");
    assert!(!text(&out.stdout).contains("0 corruptions"));
}
