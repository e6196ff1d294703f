//! `holdall hash` against a reference computation, on files at the block boundaries.

use std::process::Command;

use sha2::{Digest, Sha256};

const BLOCK: usize = 4 * 1024 * 1024;

fn reference(data: &[u8]) -> String {
    let mut digests = Vec::new();
    for chunk in data.chunks(BLOCK) {
        digests.extend_from_slice(&Sha256::digest(chunk));
    }
    hex::encode(Sha256::digest(&digests))
}

#[test]
fn prints_content_hashes_like_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    let mut expected = String::new();
    for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let p = dir.path().join(format!("f{len}"));
        std::fs::write(&p, &data).unwrap();
        expected.push_str(&format!("{}  {}\n", reference(&data), p.display()));
        paths.push(p);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_holdall"))
        .arg("hash")
        .args(&paths)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn missing_file_is_a_clear_error_and_others_still_print() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok");
    std::fs::write(&ok, b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_holdall"))
        .args(["hash", "/nonexistent/file"])
        .arg(&ok)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("opening /nonexistent/file"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  ")
    );
}
