//! The reliability harnesses in CI, short runs with fixed seeds (the long runs are in
//! docs/RELIABILITY.md): holdalld killed with SIGKILL 20 times under load and 10 times
//! under load and forced collections, and real clients on three folders under a schedule
//! of edits, kills and wiped state.

use std::path::PathBuf;
use std::process::Command;

/// A workspace binary beside holdall-chaos, built by this test run if it was not.
fn sibling(package: &str, bin: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_holdall-chaos")).with_file_name(bin);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building {bin} failed");
    }
    path
}

/// Runs `holdall-chaos ARGS --dir TMP --holdalld ...`; what it printed.
fn chaos(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_holdall-chaos"))
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .arg("--holdalld")
        .arg(sibling("holdall-server", "holdalld"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn twenty_kills_under_load_lose_nothing_acknowledged() {
    // Two stores of ten cycles: the check at a store's end (clean stop) runs too.
    let out = chaos(&[
        "crash",
        "--seed",
        "20261121",
        "--cycles",
        "20",
        "--cycles-per-store",
        "10",
    ]);
    assert!(out.contains("ok: 20 cycles"), "{out}");
}

#[test]
fn backups_taken_under_load_pass_fsck_and_hold_every_acknowledged_version() {
    let out = chaos(&[
        "crash",
        "--seed",
        "20261207",
        "--cycles",
        "4",
        "--cycles-per-store",
        "2",
        "--backup",
    ]);
    assert!(out.contains("ok: 4 cycles"), "{out}");
    assert!(
        out.contains("; 4 backups taken under load checked ("),
        "{out}"
    );
    let versions: u64 = out
        .rsplit("checked (")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of versions in {out}"));
    assert!(
        versions > 0,
        "no acknowledged version was looked for: {out}"
    );
}

#[test]
fn kills_during_collections_lose_no_retained_version() {
    let out = chaos(&[
        "crash",
        "--seed",
        "20261204",
        "--cycles",
        "10",
        "--collect-every-ms",
        "50",
        "--history-retention",
        "1s",
    ]);
    assert!(out.contains("ok: 10 cycles"), "{out}");
    let collections: u64 = out
        .split(" forced collections")
        .next()
        .and_then(|before| before.split_whitespace().next_back())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of collections in {out}"));
    assert!(collections > 0, "no collection ran: {out}");
}

#[test]
fn three_devices_with_kills_and_wiped_state_settle_without_losing_a_version() {
    let holdall = sibling("holdall-client", "holdall");
    let holdall = holdall.to_str().unwrap();
    for seed in ["1", "2"] {
        let out = chaos(&[
            "devices",
            "--seed",
            seed,
            "--steps",
            "150",
            "--holdall",
            holdall,
        ]);
        assert!(out.contains("ok: settled"), "{out}");
    }
}
