//! `holdalld demo` stores, commits, reopens and rebuilds a file, twice on the same folder.

use std::process::Command;

#[test]
fn demo_round_trips_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_holdalld"))
            .args(["demo", "--mib", "9", "--data"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("in 3 blocks"), "{stdout}");
        assert!(
            stdout.contains(&format!("as JID {}", round + 1)),
            "{stdout}"
        );
        assert!(stdout.contains("rebuilt byte for byte"), "{stdout}");
        let new = if round == 0 { "(3 new)" } else { "(0 new)" };
        assert!(stdout.contains(new), "dedup on the second run: {stdout}");
    }
    let key = dir.path().join("store.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
