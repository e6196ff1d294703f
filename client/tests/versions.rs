//! `holdall history`, `restore`, `deleted` and `undelete` with the real holdall against the
//! real holdalld: versions listed with time and device, brought back byte-exact on a second
//! client (one of them syncing all the while), and written to a local file instead.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{bytes, wait_until, Client, Server};

const MIB: usize = 1 << 20;

fn write(c: &Client, rel: &str, data: &[u8]) {
    let p = c.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Runs `holdall ARGS PATH` as `c`; its stdout, insisting it succeeded.
fn run(c: &Client, args: &[&str], path: &Path) -> String {
    let out = c.command(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "holdall {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn versions(c: &Client, rel: &str) -> Vec<Value> {
    let out = run(c, &["history", "--json"], &c.path(rel));
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["versions"].as_array().unwrap().clone()
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn versions_are_listed_restored_and_undeleted_on_another_client() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let (v1, v2, v3) = (bytes(1, 5 * MIB + 17), bytes(2, 3 * MIB), bytes(3, 1000));
    write(&a, "doc.bin", &v1);
    a.synced();
    write(&a, "doc.bin", &v2);
    a.synced();
    write(&a, "doc.bin", &v3);
    write(&a, "notes/gone.txt", b"keep me");
    a.synced();
    std::fs::remove_file(a.path("notes/gone.txt")).unwrap();
    a.synced();
    b.synced();

    let all = versions(&a, "doc.bin");
    assert_eq!(all.len(), 3, "{all:?}");
    let sizes: Vec<u64> = all.iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [1000, 3 * MIB as u64, 5 * MIB as u64 + 17]);
    assert!(all.iter().all(|v| v["device"].is_string()), "{all:?}");
    let table = run(&a, &["history"], &a.path("doc.bin"));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table
        .lines()
        .nth(3)
        .unwrap()
        .contains(&(5 * MIB + 17).to_string()));

    // --to writes a version out and changes nothing on the server.
    let out = tmp.path().join("v1-copy.bin");
    let j1 = all[2]["jid"].as_u64().unwrap();
    run(
        &a,
        &[
            "restore",
            "--jid",
            &j1.to_string(),
            "--to",
            out.to_str().unwrap(),
        ],
        &a.path("doc.bin"),
    );
    assert_eq!(std::fs::read(&out).unwrap(), v1);
    assert_eq!(versions(&a, "doc.bin").len(), 3);

    // A restore reaches a client that is syncing, as a remote change.
    let running = b.spawn_sync(&[]);
    let at = rfc3339(all[1]["committed_ms"].as_u64().unwrap());
    run(&a, &["restore", "--at", &at], &a.path("doc.bin"));
    let shows = |want: &[u8]| std::fs::read(b.path("doc.bin")).is_ok_and(|got| got == want);
    assert!(
        wait_until(Duration::from_secs(30), || shows(&v2)),
        "{}",
        running.log()
    );
    drop(running);
    let now = versions(&a, "doc.bin");
    assert_eq!(now.len(), 4);
    assert_eq!(now[0]["blocklist"], all[1]["blocklist"]);

    // Deleted files are listed by local path and come back.
    let listed = run(&a, &["deleted", "--json"], &a.dir);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["path"], "notes/gone.txt", "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    run(&a, &["undelete"], &a.path("notes/gone.txt"));
    b.synced();
    assert_eq!(std::fs::read(b.path("notes/gone.txt")).unwrap(), b"keep me");
    assert_eq!(std::fs::read(b.path("doc.bin")).unwrap(), v2);
    let listed = run(&a, &["deleted", "--json"], &a.path("notes"));
    assert_eq!(listed.trim(), "[]");

    // Clear refusals, and nothing changes.
    let refused = a
        .command(&["restore", "--jid", "99999"])
        .arg(a.path("doc.bin"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no version 99999"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let refused = a
        .command(&["undelete"])
        .arg(a.path("doc.bin"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not deleted"));
    assert_eq!(versions(&a, "doc.bin").len(), 4);
}

#[test]
fn a_folder_rewound_after_a_burst_of_changes_is_exactly_the_earlier_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "proj/keep.txt", b"unchanged");
    write(&a, "proj/edit.bin", &bytes(5, 2 * MIB));
    write(&a, "proj/move-me.txt", b"moving");
    write(&a, "proj/doomed/inner.txt", b"inner");
    write(&a, "elsewhere.txt", b"not in the folder");
    a.synced();
    b.synced();
    let before = support::tree(&a.dir);
    std::thread::sleep(Duration::from_millis(50));
    let point = chrono::Utc::now().timestamp_millis() as u64;
    std::thread::sleep(Duration::from_millis(50));

    write(&a, "proj/edit.bin", &bytes(6, MIB));
    std::fs::rename(a.path("proj/move-me.txt"), a.path("proj/moved.txt")).unwrap();
    std::fs::remove_dir_all(a.path("proj/doomed")).unwrap();
    write(&a, "proj/new/file.txt", b"new");
    write(&a, "elsewhere.txt", b"changed outside");
    a.synced();
    let after = support::tree(&a.dir);

    // Asked and answered no: nothing changes.
    let mut child = a
        .command(&["rewind", "--to", &rfc3339(point)])
        .arg(a.path("proj"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("proj/moved.txt"),
        "{said}"
    );
    a.synced();
    assert_eq!(support::tree(&a.dir), after);

    run(
        &a,
        &["rewind", "--yes", "--to", &rfc3339(point)],
        &a.path("proj"),
    );
    a.synced();
    b.synced();
    let mut expected = before.clone();
    expected.insert("elsewhere.txt".into(), after["elsewhere.txt"].clone());
    assert_eq!(support::tree(&a.dir), expected);
    assert_eq!(support::tree(&b.dir), expected);
}
