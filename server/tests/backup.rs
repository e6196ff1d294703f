//! Backups on a real holdalld: online while uploads and commits go on (every commit
//! acknowledged before the backup began is in it), through the HTTP call and the CLI;
//! incremental; offline; the copy passes fsck and serves. Bad targets change nothing.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::{
    block, commit_file, create_user, fetch_block, listed_paths, post, store_block, Server,
};

fn holdalld(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdalld"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Stores and commits file `name` with one block of `seed`.
fn put(server: &Server, token: &str, ns: u64, name: &str, seed: u64) {
    let b = block(seed, 300 << 10);
    assert_eq!(store_block(server, token, &b).status, 200);
    let (status, v) = commit_file(server, token, ns, name, &b);
    assert_eq!(status, 200, "{v}");
}

/// A backup folder serves every file of `names` (seeded by their index) byte-exact.
fn serves(dir: &Path, token: &str, ns: u64, names: &[(String, u64)]) {
    let (code, out, err) = holdalld(&["fsck", "--data", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let server = Server::start(dir, 2);
    let listed = listed_paths(&server, token, ns);
    for (name, seed) in names {
        assert!(listed.contains(name), "{name} missing from the backup");
        let b = block(*seed, 300 << 10);
        assert_eq!(
            fetch_block(&server, token, ns, name, &b).as_deref(),
            Some(&b[..]),
            "{name}"
        );
    }
    assert!(server.terminate().success());
}

#[test]
fn online_backups_under_load_are_consistent_incremental_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Arc::new(Server::start(&data, 2));
    let admin = server.admin_token();
    let (ana, ns) = create_user(&server, "ana");
    let mut acked: Vec<(String, u64)> = Vec::new();
    for i in 0..20 {
        put(&server, &ana, ns, &format!("before-{i}"), i);
        acked.push((format!("before-{i}"), i));
    }
    // Uploads and commits go on while the backups run.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (server, ana, stop) = (server.clone(), ana.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                put(&server, &ana, ns, &format!("during-{i}"), i);
                i += 1;
            }
        })
    };
    let first = dir.path().join("first");
    let (status, v) = post(&server, "/v1/admin/backup", &admin, json!({"to": first}));
    assert_eq!(status, 200, "{v}");
    assert!(
        v["files_linked"].as_u64().unwrap() + v["files_copied"].as_u64().unwrap() > 0,
        "{v}"
    );
    // The CLI finds the running server by the URL it wrote into the data folder.
    let second = dir.path().join("second");
    let (code, out, err) = holdalld(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--to",
        second.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("bytes_copied"), "{out}");
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    // Bad targets: refused, nothing written.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    for (to, code) in [
        (json!("relative/dir"), "bad_target"),
        (json!(data.join("inside")), "bad_target"),
        (json!(dir.path()), "bad_target"),
        (json!(other), "not_a_backup"),
    ] {
        let (status, v) = post(&server, "/v1/admin/backup", &admin, json!({ "to": to }));
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some(code)),
            "{to}: {v}"
        );
    }
    assert!(!data.join("inside").exists());
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    assert_eq!(
        post(&server, "/v1/admin/backup", &ana, json!({"to": first})).0,
        403
    );

    // Later commits, then the first backup brought up to date: only what is new is copied.
    for i in 20..25 {
        put(&server, &ana, ns, &format!("before-{i}"), i);
        acked.push((format!("before-{i}"), i));
    }
    let (status, again) = post(&server, "/v1/admin/backup", &admin, json!({"to": first}));
    assert_eq!(status, 200, "{again}");
    // The 20 first files' 6 MB were in the first copy and are not copied again.
    let held: u64 = walk(&first)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        again["bytes_copied"].as_u64().unwrap() + (5 << 20) < held,
        "{again}, {held}"
    );
    // The data folder is locked while served: no second server, no offline check.
    let d = data.to_str().unwrap();
    let (code, _, err) = holdalld(&["serve", "--data", d, "--listen", "127.0.0.1:0"]);
    assert!(code != 0 && err.contains("another holdalld"), "{err}");
    let (code, _, err) = holdalld(&["fsck", "--data", d]);
    assert!(code == 2 && err.contains("POST /v1/admin/fsck"), "{err}");
    let server = Arc::try_unwrap(server).ok().unwrap();
    assert!(server.terminate().success());

    serves(&second, &ana, ns, &acked[..20]);
    serves(&first, &ana, ns, &acked);
}

#[test]
fn an_offline_backup_of_a_stopped_store_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let (ana, ns) = create_user(&server, "ana");
    let names: Vec<(String, u64)> = (0..8).map(|i| (format!("f{i}"), 50 + i)).collect();
    for (name, seed) in &names {
        put(&server, &ana, ns, name, *seed);
    }
    assert!(server.terminate().success());
    let to = dir.path().join("offline");
    let (code, out, err) = holdalld(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    serves(&to, &ana, ns, &names);
    // The store itself is untouched and still serves.
    serves(&data, &ana, ns, &names);
}
