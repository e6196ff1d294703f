//! The store key outside the data folder: `holdalld keygen`, `--store-key-file`, and a
//! missing or wrong key refused before anything is opened or written.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use holdall_proto::limits::BLOCK_BYTES_MAX;
use support::{block, commit_file, create_user, fetch_block, store_block, Server};

const HOLDALLD: &str = env!("CARGO_BIN_EXE_holdalld");

fn keygen(path: &Path) -> std::process::Output {
    Command::new(HOLDALLD)
        .arg("keygen")
        .arg(path)
        .output()
        .unwrap()
}

/// Runs `holdalld serve` that must refuse to start; what it said.
fn refused(data: &Path, flags: &[&str]) -> String {
    let mut child = Command::new(HOLDALLD)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--data",
        ])
        .arg(data)
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "holdalld kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it said it listens");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its size and modification time.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn keygen_writes_an_owner_only_key_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.key");
    let out = keygen(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fingerprint"));
    let key = std::fs::read(&path).unwrap();
    assert_eq!(key.len(), 32);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = keygen(&path);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains(&*path.to_string_lossy()));
    assert_eq!(std::fs::read(&path).unwrap(), key, "the first key is kept");
}

#[test]
fn a_key_outside_the_data_serves_and_a_missing_or_wrong_key_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data, key, other) = (
        dir.path().join("data"),
        dir.path().join("key"),
        dir.path().join("other.key"),
    );
    // Missing: refused before the data folder is even created.
    let said = refused(&data, &["--store-key-file", key.to_str().unwrap()]);
    assert!(said.contains(&*key.to_string_lossy()), "{said}");
    assert!(!data.exists());

    assert!(keygen(&key).status.success());
    let flag = ["--store-key-file", key.to_str().unwrap()];
    let server = Server::start_with(&data, 2, &flag);
    let (token, ns) = create_user(&server, "ana");
    let b = block(3, BLOCK_BYTES_MAX);
    assert_eq!(store_block(&server, &token, &b).status, 200);
    assert_eq!(commit_file(&server, &token, ns, "f", &b).0, 200);
    assert!(server.terminate().success());
    assert!(
        !data.join("store.key").exists(),
        "no key is written into the data"
    );

    let before = listing(&data);
    // Without the key: the data folder holds blocks and no key.
    let said = refused(&data, &[]);
    assert!(said.contains("--store-key-file"), "{said}");
    // Another key: named, and refused.
    assert!(keygen(&other).status.success());
    let said = refused(&data, &["--store-key-file", other.to_str().unwrap()]);
    assert!(
        said.contains(&*other.to_string_lossy()) && said.contains("not the key"),
        "{said}"
    );
    assert_eq!(listing(&data), before, "nothing was written");

    let server = Server::start_with(&data, 2, &flag);
    assert_eq!(fetch_block(&server, &token, ns, "f", &b), Some(b));
    assert!(server.terminate().success());
}

#[test]
fn the_data_folders_own_key_can_be_moved_out() {
    let dir = tempfile::tempdir().unwrap();
    let (data, key) = (dir.path().join("data"), dir.path().join("moved.key"));
    let server = Server::start(&data, 2);
    let (token, ns) = create_user(&server, "ana");
    let b = block(4, 100_000);
    assert_eq!(store_block(&server, &token, &b).status, 200);
    assert_eq!(commit_file(&server, &token, ns, "f", &b).0, 200);
    assert!(server.terminate().success());
    std::fs::rename(data.join("store.key"), &key).unwrap();
    let server = Server::start_with(&data, 2, &["--store-key-file", key.to_str().unwrap()]);
    assert_eq!(fetch_block(&server, &token, ns, "f", &b), Some(b));
    assert!(server.terminate().success());
}

#[test]
fn sighup_reloads_without_stopping_and_start_says_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2);
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) },
        0
    );
    let started = Instant::now();
    while !server.stderr().contains("SIGHUP") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = support::request(&server.addr, "GET", "/healthz", None, b"");
    assert_eq!(health.status, 200);
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("serving"))
        .unwrap_or_default();
    for field in ["version=", "shards=2", "tls=false", "data=", "store_key="] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(server.terminate().success());
}
