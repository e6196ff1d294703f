//! Version history on the real holdalld: `history`, `restore` and `deleted` over HTTP, with
//! commit time and device, across a restart, with access checked, conflicts refused, and
//! versions outside `--history-retention` gone.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{block, create_user, fetch_block, hex, post, request_with, store_block, Server};

/// Commits a one-block file (or a deletion when `b` is `None`) from device `device`.
fn commit(
    server: &Server,
    token: &str,
    ns: u64,
    path: &str,
    b: Option<&[u8]>,
    parent: Option<u64>,
) -> u64 {
    let version = match b {
        Some(b) => json!({"kind": "file", "blocklist": hex(&[b.to_vec()]),
            "size": b.len(), "mtime_ms": 1000}),
        None => json!({"kind": "deleted", "blocklist": [], "size": 0, "mtime_ms": 0}),
    };
    let mut body = json!({"ns": ns, "path": path, "parent_jid": parent});
    body.as_object_mut()
        .unwrap()
        .extend(version.as_object().unwrap().clone());
    let r = request_with(
        &server.addr,
        "POST",
        "/v1/commit",
        Some(token),
        &[("Holdall-Device", "laptop")],
        body.to_string().as_bytes(),
    );
    let v = r.json();
    assert_eq!((r.status, v["status"].as_str()), (200, Some("ok")), "{v}");
    v["jid"].as_u64().unwrap()
}

/// Block `b` of version `jid` of `path`, if retrieve_batch serves it.
fn fetch_version(server: &Server, token: &str, ns: u64, path: &str, jid: u64, b: &[u8]) -> bool {
    let ask = json!({"items": [{"ns": ns, "path": path, "jid": jid,
        "hashes": hex(&[b.to_vec()])}]});
    let r = support::request(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(token),
        ask.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    let frame = holdall_proto::frame::decode_retrieve_frames(&r.body, 8 << 20)
        .next()
        .unwrap()
        .unwrap();
    frame.status == holdall_proto::frame::RetrieveStatus::Ok && frame.data == b
}

fn history(server: &Server, token: &str, body: Value) -> (Vec<u64>, Value) {
    let (status, v) = post(server, "/v1/history", token, body);
    assert_eq!(status, 200, "{v}");
    let jids = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["jid"].as_u64().unwrap())
        .collect();
    (jids, v)
}

fn deleted_paths(server: &Server, token: &str, ns: u64) -> Vec<(String, u64)> {
    let (status, v) = post(server, "/v1/deleted", token, json!({"ns": ns}));
    assert_eq!(status, 200, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["last_jid"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn versions_are_listed_restored_and_undeleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let (ana, ns) = create_user(&server, "ana");
    let (bob, _) = create_user(&server, "bob");
    let (one, two) = (block(1, 70_000), block(2, 50_000));
    for b in [&one, &two] {
        assert_eq!(store_block(&server, &ana, b).status, 200);
    }
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let j1 = commit(&server, &ana, ns, "doc.txt", Some(&one), None);
    let j2 = commit(&server, &ana, ns, "doc.txt", Some(&two), Some(j1));
    let gone = commit(&server, &ana, ns, "doc.txt", None, Some(j2));
    commit(&server, &ana, ns, "other.txt", Some(&one), None);

    let (jids, v) = history(&server, &ana, json!({"ns": ns, "path": "doc.txt"}));
    assert_eq!((jids, &v["has_more"]), (vec![gone, j2, j1], &json!(false)));
    let newest = &v["versions"][0];
    assert_eq!(newest["kind"], "deleted");
    assert_eq!(newest["content_hash"], Value::Null);
    let oldest = &v["versions"][2];
    assert_eq!(
        (&oldest["user"], &oldest["device"], &oldest["size"]),
        (&json!("ana"), &json!("laptop"), &json!(70_000))
    );
    assert_eq!(oldest["blocklist"], json!(hex(std::slice::from_ref(&one))));
    assert_eq!(
        oldest["content_hash"],
        json!(holdall_proto::content_hash::content_hash(&one).to_hex())
    );
    let times: Vec<u64> = (0..3)
        .map(|i| v["versions"][i]["committed_ms"].as_u64().unwrap())
        .collect();
    assert!(times[2] >= before && times[1] >= times[2] && times[0] >= times[1]);

    // An older version's blocks are served by its JID; not another version's.
    assert!(fetch_version(&server, &ana, ns, "doc.txt", j1, &one));
    assert!(fetch_version(&server, &ana, ns, "doc.txt", j2, &two));
    assert!(!fetch_version(&server, &ana, ns, "doc.txt", j2, &one));

    // Pages, and a path that never was.
    let (page, v) = history(
        &server,
        &ana,
        json!({"ns": ns, "path": "doc.txt", "limit": 2}),
    );
    assert_eq!(
        (page, v["has_more"].as_bool()),
        (vec![gone, j2], Some(true))
    );
    let (page, v) = history(
        &server,
        &ana,
        json!({"ns": ns, "path": "doc.txt", "limit": 2, "before_jid": j2}),
    );
    assert_eq!((page, v["has_more"].as_bool()), (vec![j1], Some(false)));
    let (none, v) = history(&server, &ana, json!({"ns": ns, "path": "never"}));
    assert!(none.is_empty() && v["has_more"] == json!(false));

    // Only readers of the namespace see or touch its history.
    for (route, body) in [
        ("/v1/history", json!({"ns": ns, "path": "doc.txt"})),
        (
            "/v1/restore",
            json!({"ns": ns, "path": "doc.txt", "jid": j1}),
        ),
        ("/v1/deleted", json!({"ns": ns})),
    ] {
        let (status, v) = post(&server, route, &bob, body);
        assert_eq!(
            (status, v["error"].as_str()),
            (403, Some("forbidden")),
            "{route}"
        );
    }

    assert_eq!(
        deleted_paths(&server, &ana, ns),
        vec![("doc.txt".into(), j2)]
    );
    undelete_and_restore(&server, &ana, ns, (j1, j2, gone), &one);

    // History is read back from the journal files after a restart.
    assert!(server.terminate().success());
    let server = Server::start(&data, 2);
    let (jids, _) = history(&server, &ana, json!({"ns": ns, "path": "doc.txt"}));
    assert_eq!(jids.len(), 4, "{jids:?}");
    assert_eq!(jids[1..], [gone, j2, j1]);
    assert_eq!(
        fetch_block(&server, &ana, ns, "doc.txt", &one).as_deref(),
        Some(&one[..])
    );
}

/// Refusals change nothing; then restoring the version before a deletion brings the file
/// back with that version's content, and a parked longpoll sees it.
fn undelete_and_restore(server: &Server, ana: &str, ns: u64, jids: (u64, u64, u64), one: &[u8]) {
    let (j1, j2, gone) = jids;
    let restore = |body: Value| post(server, "/v1/restore", ana, body);
    let refused = [
        (
            json!({"ns": ns, "path": "doc.txt", "jid": j1, "parent_jid": j2}),
            409,
            "conflict",
        ),
        (
            json!({"ns": ns, "path": "doc.txt", "jid": gone}),
            400,
            "not_a_file",
        ),
        (
            json!({"ns": ns, "path": "doc.txt", "jid": 999}),
            404,
            "version_gone",
        ),
        (
            json!({"ns": ns, "path": "never", "jid": j1}),
            404,
            "version_gone",
        ),
        (
            json!({"ns": ns, "path": "/abs", "jid": j1}),
            400,
            "bad_path",
        ),
    ];
    for (body, status, code) in refused {
        let (s, v) = restore(body.clone());
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    let (jids, _) = history(server, ana, json!({"ns": ns, "path": "doc.txt"}));
    assert_eq!(jids[0], gone, "a refusal wrote nothing");

    let (status, v) = post(
        server,
        "/v1/list",
        ana,
        json!({"cursors": {ns.to_string(): 0}}),
    );
    assert_eq!(status, 200);
    let cursor = v["cursors"][ns.to_string()].as_u64().unwrap();
    let addr = server.addr.clone();
    let token = ana.to_owned();
    let parked = std::thread::spawn(move || {
        let body = json!({"cursors": {ns.to_string(): cursor}, "timeout_s": 20});
        let r = support::request(
            &addr,
            "POST",
            "/v1/longpoll",
            Some(&token),
            body.to_string().as_bytes(),
        );
        r.json()["changes"].clone()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, v) = restore(json!({"ns": ns, "path": "doc.txt", "jid": j1, "parent_jid": gone}));
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    let restored = v["jid"].as_u64().unwrap();
    assert!(restored > gone);
    assert_eq!(parked.join().unwrap(), json!(true));
    assert_eq!(
        fetch_block(server, ana, ns, "doc.txt", one).as_deref(),
        Some(one)
    );
    assert!(deleted_paths(server, ana, ns).is_empty());
    // Restoring the latest version again writes nothing.
    let (status, v) = restore(json!({"ns": ns, "path": "doc.txt", "jid": restored}));
    assert_eq!((status, v["jid"].as_u64()), (200, Some(restored)));
}

/// Commit time of the oldest version `history` shows of "a".
fn j1_ms(server: &Server, token: &str, ns: u64) -> u64 {
    let (_, v) = post(server, "/v1/history", token, json!({"ns": ns, "path": "a"}));
    let versions = v["versions"].as_array().unwrap();
    versions.last().unwrap()["committed_ms"].as_u64().unwrap()
}

#[test]
fn versions_outside_retention_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), 1, &["--history-retention", "2s"]);
    let (ana, ns) = create_user(&server, "ana");
    let (one, two) = (block(3, 1000), block(4, 2000));
    for b in [&one, &two] {
        assert_eq!(store_block(&server, &ana, b).status, 200);
    }
    let j1 = commit(&server, &ana, ns, "a", Some(&one), None);
    let j2 = commit(&server, &ana, ns, "a", Some(&two), Some(j1));
    let k1 = commit(&server, &ana, ns, "dir/b", Some(&one), None);
    let k2 = commit(&server, &ana, ns, "dir/b", None, Some(k1));
    let (jids, _) = history(&server, &ana, json!({"ns": ns, "path": "a"}));
    assert_eq!(jids, vec![j2, j1]);
    let (status, v) = post(
        &server,
        "/v1/deleted",
        &ana,
        json!({"ns": ns, "path": "dir"}),
    );
    assert_eq!(status, 200);
    assert_eq!(v["entries"][0]["deleted_jid"].as_u64(), Some(k2));
    let (_, v) = post(
        &server,
        "/v1/deleted",
        &ana,
        json!({"ns": ns, "path": "elsewhere"}),
    );
    assert_eq!(v["entries"], json!([]));

    std::thread::sleep(Duration::from_millis(2500));
    let (jids, _) = history(&server, &ana, json!({"ns": ns, "path": "a"}));
    assert_eq!(jids, vec![j2], "the latest version is always kept");
    assert!(!fetch_version(&server, &ana, ns, "a", j1, &one));
    assert!(fetch_version(&server, &ana, ns, "a", j2, &two));
    let (status, v) = post(
        &server,
        "/v1/restore",
        &ana,
        json!({"ns": ns, "path": "a", "jid": j1}),
    );
    assert_eq!((status, v["error"].as_str()), (404, Some("version_gone")));
    assert!(deleted_paths(&server, &ana, ns).is_empty());
    let long_ago = j1_ms(&server, &ana, ns) - 1;
    for point in [json!({"to_ms": long_ago}), json!({"to_jid": j1})] {
        let mut body = json!({"ns": ns, "path": ""});
        body.as_object_mut()
            .unwrap()
            .extend(point.as_object().unwrap().clone());
        let (status, v) = post(&server, "/v1/rewind", &ana, body);
        let refused = (status, v["error"].as_str());
        assert_eq!(refused, (404, Some("version_gone")), "{v}");
    }
    let (jids, _) = history(&server, &ana, json!({"ns": ns, "path": "dir/b"}));
    assert_eq!(jids, vec![k2], "a deletion is the latest row and stays");
    assert!(server.terminate().success());
}

/// Every path's latest row: path → (kind, blocklist).
fn latest(server: &Server, token: &str, ns: u64) -> std::collections::BTreeMap<String, Value> {
    let (status, v) = post(
        server,
        "/v1/list",
        token,
        json!({"cursors": {ns.to_string(): 0}}),
    );
    assert_eq!(status, 200);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let p = e["path"].as_str().unwrap().to_owned();
            (p, json!([e["kind"], e["blocklist"]]))
        })
        .collect()
}

fn commit_dir(server: &Server, token: &str, ns: u64, path: &str) -> u64 {
    let body = json!({"ns": ns, "path": path, "kind": "dir", "blocklist": [], "size": 0,
        "mtime_ms": 0, "parent_jid": null});
    let (status, v) = post(server, "/v1/commit", token, body);
    assert_eq!(status, 200, "{v}");
    v["jid"].as_u64().unwrap()
}

#[test]
fn a_folder_rewinds_to_a_jid_or_a_time_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2);
    let (ana, ns) = create_user(&server, "ana");
    let (bob, _) = create_user(&server, "bob");
    let blocks: Vec<Vec<u8>> = (10..16).map(|i| block(i, 3000)).collect();
    for b in &blocks {
        assert_eq!(store_block(&server, &ana, b).status, 200);
    }
    let a1 = commit(&server, &ana, ns, "proj/a", Some(&blocks[0]), None);
    let b1 = commit(&server, &ana, ns, "proj/b", Some(&blocks[1]), None);
    let sub = commit_dir(&server, &ana, ns, "proj/sub");
    let out = commit(&server, &ana, ns, "outside", Some(&blocks[2]), None);
    let then = latest(&server, &ana, ns);
    std::thread::sleep(Duration::from_millis(20));
    let then_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(20));

    // A burst of edits, a rename (a deletion and a new path), new files, a deleted folder.
    let a2 = commit(&server, &ana, ns, "proj/a", Some(&blocks[3]), Some(a1));
    commit(&server, &ana, ns, "proj/a", None, Some(a2));
    commit(&server, &ana, ns, "proj/renamed", Some(&blocks[3]), None);
    commit(&server, &ana, ns, "proj/b", None, Some(b1));
    commit(&server, &ana, ns, "proj/sub/new", Some(&blocks[4]), None);
    commit(&server, &ana, ns, "proj/sub", None, Some(sub));
    commit(&server, &ana, ns, "outside", Some(&blocks[5]), Some(out));
    let edited = latest(&server, &ana, ns);
    // Rewinds below go back to the burst's last commit time: keep their own rows later.
    std::thread::sleep(Duration::from_millis(20));

    for body in [
        json!({"ns": ns, "path": "proj"}),
        json!({"ns": ns, "path": "proj", "to_jid": out, "to_ms": then_ms}),
    ] {
        let (status, v) = post(&server, "/v1/rewind", &ana, body);
        assert_eq!((status, v["error"].as_str()), (400, Some("bad_point")));
    }
    let (status, _) = post(
        &server,
        "/v1/rewind",
        &bob,
        json!({"ns": ns, "path": "proj", "to_jid": out}),
    );
    assert_eq!(status, 403);
    assert_eq!(latest(&server, &ana, ns), edited, "refusals change nothing");
    let dry = json!({"ns": ns, "path": "proj", "to_jid": out, "dry_run": true});
    let (status, v) = post(&server, "/v1/rewind", &ana, dry);
    assert_eq!(status, 200, "{v}");
    let planned: Vec<(&str, &str)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), c["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        planned,
        [
            ("proj/a", "file"),
            ("proj/b", "file"),
            ("proj/renamed", "deleted"),
            ("proj/sub", "dir"),
            ("proj/sub/new", "deleted")
        ]
    );
    assert_eq!(
        latest(&server, &ana, ns),
        edited,
        "a dry run writes nothing"
    );

    let (status, v) = post(
        &server,
        "/v1/rewind",
        &ana,
        json!({"ns": ns, "path": "proj", "to_jid": out}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["restored"].as_u64(), v["deleted"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
    let rewound = latest(&server, &ana, ns);
    for (path, row) in &rewound {
        let want = match path.as_str() {
            "outside" => &edited[path],
            "proj/renamed" | "proj/sub/new" => &json!(["deleted", []]),
            _ => &then[path],
        };
        assert_eq!(row, want, "{path}");
    }
    assert_eq!(rewound.len(), 6);
    // Today's versions stay in history: a rewind to a time after the burst undoes it.
    let (h, _) = history(&server, &ana, json!({"ns": ns, "path": "proj/renamed"}));
    assert_eq!(h.len(), 2);
    let (_, v) = post(
        &server,
        "/v1/history",
        &ana,
        json!({"ns": ns, "path": "outside"}),
    );
    let burst_end_ms = v["versions"][0]["committed_ms"].as_u64().unwrap();
    let (status, v) = post(
        &server,
        "/v1/rewind",
        &ana,
        json!({"ns": ns, "path": "", "to_ms": burst_end_ms}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(latest(&server, &ana, ns), edited);
    // Back to before the burst by time, and nothing left to do the second time.
    let (status, _) = post(
        &server,
        "/v1/rewind",
        &ana,
        json!({"ns": ns, "path": "proj", "to_ms": then_ms}),
    );
    assert_eq!(status, 200);
    assert_eq!(latest(&server, &ana, ns), rewound);
    let (_, v) = post(
        &server,
        "/v1/rewind",
        &ana,
        json!({"ns": ns, "path": "proj", "to_ms": then_ms}),
    );
    assert_eq!(
        (v["restored"].as_u64(), v["deleted"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(server.terminate().success());
}
