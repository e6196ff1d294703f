//! The crash harness in CI: holdalld killed with SIGKILL 20 times under load, each restart
//! checked against everything the load was told (the long runs are in docs/RELIABILITY.md).

use std::path::PathBuf;
use std::process::Command;

/// `holdalld`, built by this test run if it was not.
fn holdalld() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_holdall-chaos")).with_file_name("holdalld");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "holdall-server", "--bin", "holdalld"])
            .status()
            .expect("cargo build holdalld");
        assert!(status.success(), "building holdalld failed");
    }
    bin
}

fn crash(seed: u64, cycles: u64, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_holdall-chaos"))
        .args([
            "crash",
            "--seed",
            &seed.to_string(),
            "--cycles",
            &cycles.to_string(),
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--holdalld")
        .arg(holdalld())
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("ok: {cycles} cycles")), "{stdout}");
}

#[test]
fn twenty_kills_under_load_lose_nothing_acknowledged() {
    // Two stores of ten cycles: the check at a store's end (clean stop) runs too.
    crash(20_261_121, 20, &["--cycles-per-store", "10"]);
}
