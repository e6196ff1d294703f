//! Garbage collection on the real holdalld: `POST /v1/admin/gc` gives the space of dead
//! blocks back to the file system, and keeps every block a retained version, an upload not
//! yet committed, or a file still live needs; across a restart too.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::{
    block, commit_file, create_user, fetch_block, hex, metric, post, store_block, wait_for_metric,
    Server,
};

/// Bytes of every block-log segment file under `data`.
fn segment_bytes(data: &Path) -> u64 {
    let mut total = 0;
    for shard in std::fs::read_dir(data).unwrap() {
        let blocks = shard.unwrap().path().join("blocks");
        let Ok(entries) = std::fs::read_dir(&blocks) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().ends_with(".hblk") {
                total += e.metadata().unwrap().len();
            }
        }
    }
    total
}

/// Stores `b` and commits it as a new one-block file; its JID.
fn put_file(server: &Server, token: &str, ns: u64, path: &str, b: &[u8]) -> u64 {
    assert_eq!(store_block(server, token, b).status, 200);
    let (status, v) = commit_file(server, token, ns, path, b);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    v["jid"].as_u64().unwrap()
}

/// Commits `version` (`kind` and blocklist fields) at `path` over `parent`; its JID.
fn commit(server: &Server, token: &str, ns: u64, path: &str, parent: u64, version: Value) -> u64 {
    let mut body = json!({"ns": ns, "path": path, "parent_jid": parent, "mtime_ms": 0});
    body.as_object_mut()
        .unwrap()
        .extend(version.as_object().unwrap().clone());
    let (status, v) = post(server, "/v1/commit", token, body);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    v["jid"].as_u64().unwrap()
}

fn delete(server: &Server, token: &str, ns: u64, path: &str, parent: u64) -> u64 {
    let gone = json!({"kind": "deleted", "blocklist": [], "size": 0});
    commit(server, token, ns, path, parent, gone)
}

fn collect(server: &Server) -> Value {
    let (status, v) = post(server, "/v1/admin/gc", &server.admin_token(), json!({}));
    assert_eq!(status, 200, "{v}");
    for field in [
        "blocks_dropped",
        "bytes_reclaimed",
        "segments_compacted",
        "journal_files_removed",
        "ms",
    ] {
        assert!(v[field].is_u64(), "{field} in {v}");
    }
    v
}

#[test]
fn deleting_everything_then_collecting_gives_the_space_back_and_keeps_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Proofs of upload keep a block for the prefetch TTL: short here, like the retention.
    let flags = [
        "--history-retention",
        "2s",
        "--prefetch-ttl-s",
        "2",
        "--gc-interval",
        "0s",
    ];
    let server = Server::start_with(&data, 2, &flags);
    let (ana, ns) = create_user(&server, "ana");
    let (status, v) = post(&server, "/v1/admin/gc", &ana, json!({}));
    assert_eq!(status, 403, "only the admin collects: {v}");

    let blocks: Vec<Vec<u8>> = (0..40).map(|i| block(i, 1 << 20)).collect();
    let jids: Vec<u64> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| put_file(&server, &ana, ns, &format!("f{i}"), b))
        .collect();
    let keep = block(1000, 1 << 20);
    put_file(&server, &ana, ns, "keep", &keep);
    let peak = segment_bytes(&data);
    assert!(peak > 40 << 20, "{peak}");
    for (i, jid) in jids.iter().enumerate() {
        delete(&server, &ana, ns, &format!("f{i}"), *jid);
    }
    let early = collect(&server);
    assert_eq!(early["blocks_dropped"], 0, "all still retained: {early}");
    std::thread::sleep(Duration::from_millis(2500));
    // Uploaded, not committed yet: its proof of upload keeps it.
    let pending = block(2000, 1 << 20);
    assert_eq!(store_block(&server, &ana, &pending).status, 200);
    let done = collect(&server);
    assert_eq!(done["blocks_dropped"], 40, "{done}");
    let after = segment_bytes(&data);
    assert!(after * 10 <= peak, "{after} of a peak of {peak} bytes left");
    assert!(done["bytes_reclaimed"].as_u64().unwrap() >= peak - after - (1 << 20));

    assert_eq!(
        fetch_block(&server, &ana, ns, "keep", &keep),
        Some(keep.clone())
    );
    let (status, v) = commit_file(&server, &ana, ns, "pending", &pending);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    assert_eq!(
        fetch_block(&server, &ana, ns, "pending", &pending),
        Some(pending.clone())
    );
    let (status, v) = post(
        &server,
        "/v1/restore",
        &ana,
        json!({"ns": ns, "path": "f0", "jid": jids[0]}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("version_gone")),
        "{v}"
    );
    let reclaimed = peak - after - (1 << 20);
    assert!(wait_for_metric(&server, "holdall_gc_bytes_reclaimed_total", reclaimed) >= reclaimed);
    assert!(metric(&server, "holdall_gc_runs_total") >= 2);
    assert!(metric(&server, "holdall_block_dead_bytes") < 1 << 20);

    // What was collected is gone for good, and what was kept survives a restart.
    server.terminate();
    let server = Server::start_with(&data, 2, &flags);
    assert_eq!(fetch_block(&server, &ana, ns, "keep", &keep), Some(keep));
    assert_eq!(
        fetch_block(&server, &ana, ns, "pending", &pending),
        Some(pending)
    );
    let (status, v) = commit_file(&server, &ana, ns, "again", &blocks[3]);
    assert_eq!(status, 200);
    assert_eq!(
        v["status"], "need_blocks",
        "a collected block is uploaded again: {v}"
    );
    server.terminate();
}

#[test]
fn a_block_only_a_retained_old_version_references_survives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, 2, &["--gc-interval", "0s"]);
    let (ana, ns) = create_user(&server, "ana");
    let (old, new) = (block(1, 300_000), block(2, 300_000));
    let v1 = put_file(&server, &ana, ns, "doc", &old);
    assert_eq!(store_block(&server, &ana, &new).status, 200);
    let version = json!({"kind": "file", "blocklist": hex(std::slice::from_ref(&new)),
        "size": new.len()});
    let v2 = commit(&server, &ana, ns, "doc", v1, version);
    delete(&server, &ana, ns, "doc", v2);
    let done = collect(&server);
    assert_eq!(done["blocks_dropped"], 0, "{done}");
    let (status, v) = post(
        &server,
        "/v1/restore",
        &ana,
        json!({"ns": ns, "path": "doc", "jid": v1}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(fetch_block(&server, &ana, ns, "doc", &old), Some(old));
    server.terminate();
}
