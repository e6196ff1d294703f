//! The streaming experiment's `--quick` mode, as CI runs it: 100 MB over an emulated equal
//! link must sync at least 1.5 × faster with streaming sync than without.

use std::path::PathBuf;
use std::process::Command;

/// Builds `bin` of `package` beside holdall-bench if this test run did not build it.
fn ensure_built(package: &str, bin: &str) {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_holdall-bench"));
    if bench.with_file_name(bin).exists() {
        return;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", package, "--bin", bin])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building {bin} failed");
}

#[test]
fn streaming_sync_beats_upload_then_download() {
    ensure_built("holdall-client", "holdall");
    ensure_built("holdall-server", "holdalld");
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_holdall-bench"))
        .args(["streaming", "--quick", "--dir"])
        .arg(scratch.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("with streaming") || text.contains("with:"),
        "{text}"
    );
}
