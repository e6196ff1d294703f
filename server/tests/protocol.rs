//! The sync protocol through the real holdalld with several shards: commit → need_blocks →
//! store_batch → commit, conflicts, commit_batch, list with cursors, longpoll, retrieve_batch
//! and GET /v1/blocks with their access rules (Dropship refused, no read by hash), and
//! everything acknowledged surviving SIGKILL.

mod support;

use std::time::{Duration, Instant};

use holdall_proto::frame::{decode_retrieve_frames, RetrieveStatus};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use holdall_proto::BlockHash;
use serde_json::{json, Value};
use support::{block, create_user, frames, hex, post, request, request_with, Server};

fn file(ns: u64, path: &str, blocks: &[Vec<u8>], parent: Option<u64>) -> Value {
    let size: usize = blocks.iter().map(Vec::len).sum();
    json!({"ns": ns, "path": path, "kind": "file", "blocklist": hex(blocks), "size": size,
           "mtime_ms": 1_700_000_000_000i64, "parent_jid": parent})
}

fn commit(server: &Server, token: &str, body: Value) -> (u16, Value) {
    post(server, "/v1/commit", token, body)
}

fn store(server: &Server, token: &str, blocks: &[Vec<u8>]) -> Value {
    let r = request(
        &server.addr,
        "POST",
        "/v1/store_batch",
        Some(token),
        &frames(blocks),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The frames of a retrieve_batch answer as (hash, status, bytes).
fn retrieve(
    server: &Server,
    token: &str,
    body: Value,
) -> (u16, Vec<(String, RetrieveStatus, Vec<u8>)>) {
    let r = request(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(token),
        body.to_string().as_bytes(),
    );
    if r.status != 200 {
        return (r.status, Vec::new());
    }
    let frames = decode_retrieve_frames(&r.body, BATCH_BYTES_DEFAULT as u64)
        .map(|f| {
            let f = f.unwrap();
            (f.hash.to_hex(), f.status, f.data.to_vec())
        })
        .collect();
    (r.status, frames)
}

fn list(server: &Server, token: &str, cursors: Value) -> Value {
    let (status, v) = post(server, "/v1/list", token, json!({ "cursors": cursors }));
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn commit_store_list_retrieve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 3);
    let (alice, a_ns) = create_user(&server, "alice");
    let blocks: Vec<Vec<u8>> = vec![block(1, BLOCK_BYTES_MAX), block(2, 1000)];

    // A new file: the server asks for both blocks, then takes the commit.
    let (status, v) = commit(&server, &alice, file(a_ns, "docs/a.bin", &blocks, None));
    assert_eq!(
        (status, v.clone()),
        (200, json!({"status": "need_blocks", "need": hex(&blocks)}))
    );
    store(&server, &alice, &blocks);
    let (status, v) = commit(&server, &alice, file(a_ns, "docs/a.bin", &blocks, None));
    assert_eq!((status, v), (200, json!({"status": "ok", "jid": 1})));
    // A second file with a block the namespace holds already needs nothing.
    let (_, v) = commit(&server, &alice, file(a_ns, "copy.bin", &blocks[1..], None));
    assert_eq!(v, json!({"status": "ok", "jid": 2}));
    // A stale parent is a conflict naming the current JID.
    let (status, v) = commit(&server, &alice, file(a_ns, "docs/a.bin", &blocks, None));
    assert_eq!(
        (status, v),
        (409, json!({"status": "conflict", "current_jid": 1}))
    );
    // Empty files, folders and deletions carry no blocks.
    let empty = json!({"ns": a_ns, "path": "empty", "kind": "file", "blocklist": [], "size": 0, "mtime_ms": 0, "parent_jid": null});
    assert_eq!(commit(&server, &alice, empty).1["status"], "ok");
    let folder = json!({"ns": a_ns, "path": "docs", "kind": "dir", "parent_jid": null});
    assert_eq!(commit(&server, &alice, folder).1["status"], "ok");

    // list pages by JID with cursors.
    let v = list(&server, &alice, json!({ a_ns.to_string(): 0 }));
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["docs/a.bin", "copy.bin", "empty", "docs"]);
    assert_eq!(v["entries"][0]["blocklist"], json!(hex(&blocks)));
    assert_eq!(v["entries"][0]["size"], BLOCK_BYTES_MAX + 1000);
    assert_eq!(v["cursors"][a_ns.to_string()], 4);
    assert_eq!(v["has_more"], false);
    let (_, v) = post(
        &server,
        "/v1/list",
        &alice,
        json!({"cursors": {a_ns.to_string(): 1}, "limit": 2}),
    );
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            v["cursors"][a_ns.to_string()].clone(),
            v["has_more"].clone()
        ),
        (json!(3), json!(true))
    );
    let v = list(&server, &alice, json!({ a_ns.to_string(): 4 }));
    assert_eq!(
        (
            v["entries"].as_array().unwrap().len(),
            v["has_more"].clone()
        ),
        (0, json!(false))
    );

    // retrieve_batch serves the row's blocks in order; a hash not in the row is not_found.
    let stranger = BlockHash::of(b"not in the file").to_hex();
    let (status, got) = retrieve(
        &server,
        &alice,
        json!({"items": [
            {"ns": a_ns, "path": "docs/a.bin", "hashes": [hex(&blocks)[1], stranger, hex(&blocks)[0]]},
            {"ns": a_ns, "path": "copy.bin", "jid": 2, "hashes": [hex(&blocks)[1]]},
            {"ns": a_ns, "path": "nowhere", "hashes": [hex(&blocks)[1]]},
        ]}),
    );
    assert_eq!(status, 200);
    let statuses: Vec<RetrieveStatus> = got.iter().map(|g| g.1).collect();
    use RetrieveStatus::*;
    assert_eq!(statuses, [Ok, NotFound, Ok, Ok, NotFound]);
    assert_eq!(got[0].2, blocks[1]);
    assert_eq!(got[2].2, blocks[0]);
    assert!(got[1].2.is_empty() && got[1].0 == stranger);
    // GET one block, same rule; the path is percent-encoded.
    let r = request(
        &server.addr,
        "GET",
        &format!("/v1/blocks/{}?ns={a_ns}&path=docs%2Fa.bin", hex(&blocks)[1]),
        Some(&alice),
        b"",
    );
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/octet-stream"))
    );
    assert_eq!(r.body, blocks[1]);
    let r = request(
        &server.addr,
        "GET",
        &format!("/v1/blocks/{}?ns={a_ns}&path=empty", hex(&blocks)[1]),
        Some(&alice),
        b"",
    );
    assert_eq!(r.status, 404);
    // Asking for more than the batch limit in one request is 413.
    let (status, _) = retrieve(
        &server,
        &alice,
        json!({"items": [
        {"ns": a_ns, "path": "docs/a.bin", "hashes": [hex(&blocks)[0], hex(&blocks)[0], hex(&blocks)[0]]}]}),
    );
    assert_eq!(status, 413);

    // Everything acknowledged survives SIGKILL.
    drop(server);
    let server = Server::start(&data, 3);
    let v = list(&server, &alice, json!({ a_ns.to_string(): 0 }));
    assert_eq!(v["entries"].as_array().unwrap().len(), 4);
    let (_, got) = retrieve(
        &server,
        &alice,
        json!({"items": [{"ns": a_ns, "path": "docs/a.bin", "hashes": hex(&blocks)}]}),
    );
    assert_eq!(got.iter().map(|g| g.2.clone()).collect::<Vec<_>>(), blocks);
    let (_, v) = commit(&server, &alice, file(a_ns, "docs/a.bin", &blocks, Some(1)));
    assert_eq!(v, json!({"status": "ok", "jid": 5}));
    assert!(server.terminate().success());
}

#[test]
fn access_rules_dropship_and_read_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2);
    let (alice, a_ns) = create_user(&server, "alice");
    let (bob, b_ns) = create_user(&server, "bob");
    let secret = vec![block(7, 5000)];
    store(&server, &alice, &secret);
    let (_, v) = commit(&server, &alice, file(a_ns, "secret", &secret, None));
    assert_eq!(v["status"], "ok");

    // Bob knows the hash: his commit must still upload the block (Dropship).
    let (_, v) = commit(&server, &bob, file(b_ns, "mine", &secret, None));
    assert_eq!(v, json!({"status": "need_blocks", "need": hex(&secret)}));
    // He cannot read it by naming the hash in his namespace, nor look into Alice's.
    let (status, got) = retrieve(
        &server,
        &bob,
        json!({"items": [{"ns": b_ns, "path": "mine", "hashes": hex(&secret)}]}),
    );
    assert_eq!((status, got[0].1), (200, RetrieveStatus::NotFound));
    let (status, _) = retrieve(
        &server,
        &bob,
        json!({"items": [{"ns": a_ns, "path": "secret", "hashes": hex(&secret)}]}),
    );
    assert_eq!(status, 403);
    let r = request(
        &server.addr,
        "GET",
        &format!("/v1/blocks/{}?ns={a_ns}&path=secret", hex(&secret)[0]),
        Some(&bob),
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        post(
            &server,
            "/v1/list",
            &bob,
            json!({"cursors": {a_ns.to_string(): 0}})
        )
        .0,
        403
    );
    assert_eq!(
        post(&server, "/v1/list", &bob, json!({"cursors": {"999": 0}})).0,
        403
    );
    assert_eq!(commit(&server, &bob, file(a_ns, "x", &[], None)).0, 403);
    // Once he has sent the bytes, the commit goes through and he can read his file.
    assert_eq!(
        store(&server, &bob, &secret),
        json!({"stored": [], "present": hex(&secret)})
    );
    let (_, v) = commit(&server, &bob, file(b_ns, "mine", &secret, None));
    assert_eq!(v["status"], "ok");
    let (_, got) = retrieve(
        &server,
        &bob,
        json!({"items": [{"ns": b_ns, "path": "mine", "hashes": hex(&secret)}]}),
    );
    assert_eq!(got[0].2, secret[0]);

    // A shared namespace: its members read and claim what it holds.
    let (status, v) = post(
        &server,
        "/v1/namespaces",
        &alice,
        json!({"mount_path": "team"}),
    );
    assert_eq!(status, 200, "{v}");
    let team = v["ns"].as_u64().unwrap();
    let shared = vec![block(8, 3000)];
    store(&server, &alice, &shared);
    assert_eq!(
        commit(&server, &alice, file(team, "plan", &shared, None)).1["status"],
        "ok"
    );
    let (_, v) = commit(&server, &bob, file(b_ns, "plan-copy", &shared, None));
    assert_eq!(v["status"], "need_blocks", "not a member yet");
    let (status, _) = post(
        &server,
        &format!("/v1/namespaces/{team}/members"),
        &alice,
        json!({"user": "bob", "mount_path": "team"}),
    );
    assert_eq!(status, 200);
    let (_, v) = commit(&server, &bob, file(b_ns, "plan-copy", &shared, None));
    assert_eq!(
        v["status"], "ok",
        "a member may claim the shared namespace's blocks"
    );
    let v = list(&server, &bob, json!({ team.to_string(): 0 }));
    assert_eq!(v["entries"][0]["path"], "plan");

    // Bad input: a 4xx naming the problem.
    let bad = |body: &[u8]| {
        let r = request(&server.addr, "POST", "/v1/commit", Some(&alice), body);
        (r.status, r.json()["error"].as_str().unwrap().to_string())
    };
    assert_eq!(bad(b"{not json"), (400, "bad_json".into()));
    let mut bad_hex = file(a_ns, "f", &secret, None);
    bad_hex["blocklist"] = json!(["zz"]);
    assert_eq!(
        bad(bad_hex.to_string().as_bytes()),
        (400, "bad_json".into())
    );
    assert_eq!(
        bad(file(a_ns, "../up", &secret, None).to_string().as_bytes()),
        (400, "bad_path".into())
    );
    let mut wrong_size = file(a_ns, "f", &secret, None);
    wrong_size["size"] = json!(BLOCK_BYTES_MAX + 1);
    assert_eq!(
        bad(wrong_size.to_string().as_bytes()),
        (400, "blocklist_size_mismatch".into())
    );
    let r = request(&server.addr, "POST", "/v1/commit", Some("nope"), b"{}");
    assert_eq!(r.status, 401);
    let r = request(&server.addr, "GET", "/v1/commit", Some(&alice), b"");
    assert_eq!(r.status, 405);
    let r = request(
        &server.addr,
        "GET",
        "/v1/blocks/abc?ns=1&path=x",
        Some(&alice),
        b"",
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("bad_hash"))
    );
    let (status, v) = post(&server, "/v1/list", &alice, json!({"cursors": {}}));
    assert_eq!((status, v["error"].clone()), (400, json!("bad_cursors")));
}

#[test]
fn commit_batch_and_concurrent_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2);
    let (alice, ns) = create_user(&server, "alice");
    let blocks: Vec<Vec<u8>> = (0..300).map(|i| block(100 + i, 4096)).collect();
    store(&server, &alice, &blocks[..150]);
    let commits: Vec<Value> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            file(
                ns,
                &format!("d{}/f{i}", i % 10),
                std::slice::from_ref(b),
                None,
            )
        })
        .chain([file(ns, "/abs", &[], None)])
        .collect();
    let (status, v) = post(
        &server,
        "/v1/commit_batch",
        &alice,
        json!({ "commits": commits }),
    );
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 301);
    assert!(results[..150].iter().all(|r| r["status"] == "ok"));
    assert!(results[150..300]
        .iter()
        .all(|r| r["status"] == "need_blocks"));
    assert_eq!(results[300]["error"], "bad_path");
    let jids: Vec<u64> = results[..150]
        .iter()
        .map(|r| r["jid"].as_u64().unwrap())
        .collect();
    assert_eq!(jids, (1..=150).collect::<Vec<_>>(), "gapless, in order");
    let too_many: Vec<Value> = (0..1001)
        .map(|i| file(ns, &format!("x{i}"), &[], None))
        .collect();
    assert_eq!(
        post(
            &server,
            "/v1/commit_batch",
            &alice,
            json!({ "commits": too_many })
        )
        .0,
        413
    );

    // Eight writers race on one path with the same parent: exactly one wins.
    let addr = server.addr.clone();
    let winners: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (addr, alice) = (addr.clone(), alice.clone());
                s.spawn(move || {
                    let body = json!({"ns": ns, "path": "race", "kind": "dir", "parent_jid": null});
                    let r = request(
                        &addr,
                        "POST",
                        "/v1/commit",
                        Some(&alice),
                        body.to_string().as_bytes(),
                    );
                    match r.status {
                        200 => 1,
                        409 => 0,
                        other => panic!("status {other}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
}

#[test]
fn longpoll_wakes_on_commit_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2);
    let (alice, ns) = create_user(&server, "alice");
    let cursors = json!({ ns.to_string(): 0 });
    let started = Instant::now();
    let (status, v) = post(
        &server,
        "/v1/longpoll",
        &alice,
        json!({"cursors": cursors, "timeout_s": 1}),
    );
    assert_eq!((status, v), (200, json!({"changes": false})));
    assert!(started.elapsed() >= Duration::from_millis(900));

    let addr = server.addr.clone();
    let token = alice.clone();
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let body = json!({"ns": ns, "path": "new", "kind": "dir", "parent_jid": null});
        request(
            &addr,
            "POST",
            "/v1/commit",
            Some(&token),
            body.to_string().as_bytes(),
        )
        .status
    });
    let started = Instant::now();
    let (_, v) = post(
        &server,
        "/v1/longpoll",
        &alice,
        json!({"cursors": cursors, "timeout_s": 60}),
    );
    assert_eq!(v, json!({"changes": true}));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the commit"
    );
    assert_eq!(committer.join().unwrap(), 200);
    // Behind the cursor already: answers at once.
    let (_, v) = post(&server, "/v1/longpoll", &alice, json!({"cursors": cursors}));
    assert_eq!(v, json!({"changes": true}));
}

#[test]
fn prefetch_entries_for_large_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 3);
    let (alice, _) = create_user(&server, "alice");
    let (bob, _) = create_user(&server, "bob");
    let (_, v) = post(
        &server,
        "/v1/namespaces",
        &alice,
        json!({"mount_path": "team"}),
    );
    let team = v["ns"].as_u64().unwrap();
    post(
        &server,
        &format!("/v1/namespaces/{team}/members"),
        &alice,
        json!({"user": "bob", "mount_path": "team"}),
    );
    // Three blocks: over the batch limit, so the upload publishes a prefetch entry.
    let blocks: Vec<Vec<u8>> = vec![
        block(1, BLOCK_BYTES_MAX),
        block(2, BLOCK_BYTES_MAX),
        block(3, 10),
    ];
    assert!(blocks.iter().map(Vec::len).sum::<usize>() > BATCH_BYTES_DEFAULT);
    let big = file(team, "big.iso", &blocks, None);
    let cursors = json!({ team.to_string(): 0 });
    let (_, v) = commit(&server, &alice, big.clone());
    assert_eq!(v["status"], "need_blocks");

    // Bob sees it under prefetch (Alice does not see her own), and a longpoll wakes on it.
    let v = list(&server, &bob, cursors.clone());
    assert_eq!(
        v["prefetch"],
        json!([{"ns": team, "path": "big.iso", "blocklist": hex(&blocks), "size": 2 * BLOCK_BYTES_MAX + 10}])
    );
    assert_eq!(v["entries"], json!([]));
    let seen = v["prefetch_cursors"].clone();
    assert_eq!(
        list(&server, &alice, cursors.clone())["prefetch"],
        json!([])
    );
    let (_, v) = post(
        &server,
        "/v1/longpoll",
        &bob,
        json!({"cursors": cursors, "timeout_s": 5}),
    );
    assert_eq!(v, json!({"changes": true}));
    // Alice retries her commit while Bob is parked: a refreshed entry is no news.
    let (addr, token, retry) = (server.addr.clone(), alice.clone(), big.clone());
    let retrier = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let r = request(
            &addr,
            "POST",
            "/v1/commit",
            Some(&token),
            retry.to_string().as_bytes(),
        );
        r.json()["status"].clone()
    });
    let (_, v) = post(
        &server,
        "/v1/longpoll",
        &bob,
        json!({"cursors": cursors, "prefetch_cursors": seen, "timeout_s": 2}),
    );
    assert_eq!(retrier.join().unwrap(), "need_blocks");
    assert_eq!(
        v,
        json!({"changes": false}),
        "an entry already seen, or refreshed, is no change"
    );
    let (_, v) = post(
        &server,
        "/v1/list",
        &bob,
        json!({"cursors": cursors, "prefetch_cursors": seen}),
    );
    assert_eq!(v["prefetch"], json!([]));

    // Stored blocks are served, missing ones are pending; with wait_ms the answer waits for
    // the upload.
    store(&server, &alice, &blocks[..1]);
    let ask = json!({"items": [{"ns": team, "path": "big.iso", "prefetch": true, "hashes": hex(&blocks[..2])}]});
    let (_, got) = retrieve(&server, &bob, ask.clone());
    assert_eq!(
        (got[0].1, got[1].1),
        (RetrieveStatus::Ok, RetrieveStatus::Pending)
    );
    assert_eq!(got[0].2, blocks[0]);
    let (addr, token, second) = (server.addr.clone(), alice.clone(), blocks[1].clone());
    let uploader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        request(
            &addr,
            "POST",
            "/v1/store_batch",
            Some(&token),
            &frames(&[second]),
        )
        .status
    });
    let mut waiting = ask.clone();
    waiting["wait_ms"] = json!(20_000);
    waiting["items"][0]["hashes"] = json!(hex(&blocks[1..2]));
    let (_, got) = retrieve(&server, &bob, waiting);
    assert_eq!(got[0].1, RetrieveStatus::Ok, "served once uploaded");
    assert_eq!(got[0].2, blocks[1]);
    assert_eq!(uploader.join().unwrap(), 200);
    // A hash outside the entry is not_eligible, as is everything once the commit lands.
    let (_, got) = retrieve(
        &server,
        &bob,
        json!({"items": [{"ns": team, "path": "big.iso", "prefetch": true, "hashes": [BlockHash::of(b"x").to_hex()]}]}),
    );
    assert_eq!(got[0].1, RetrieveStatus::NotEligible);
    store(&server, &alice, &blocks[2..]);
    let (_, v) = commit(&server, &alice, big);
    assert_eq!(v["status"], "ok");
    let v = list(&server, &bob, cursors.clone());
    assert_eq!(v["prefetch"], json!([]));
    assert_eq!(v["entries"][0]["path"], "big.iso");
    let (_, got) = retrieve(&server, &bob, ask);
    assert_eq!(got[0].1, RetrieveStatus::NotEligible);
    // Small files never publish an entry.
    let small = vec![block(9, 100)];
    commit(&server, &alice, file(team, "small", &small, None));
    assert_eq!(list(&server, &bob, cursors)["prefetch"], json!([]));
    let metrics =
        String::from_utf8(request(&server.addr, "GET", "/metrics", None, b"").body).unwrap();
    assert!(
        metrics.contains("holdall_prefetch_inserts_total{shard="),
        "{metrics}"
    );
    assert!(
        metrics.contains("holdall_pending_waits_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_users_other_devices_see_its_prefetch_entries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), 2);
    let (alice, root) = create_user(&server, "alice");
    let v = request(&server.addr, "GET", "/v1/account", Some(&alice), b"").json();
    assert_eq!(v["limits"]["prefetch_ttl_s"], 600, "{v}");
    let blocks = vec![
        block(1, BLOCK_BYTES_MAX),
        block(2, BLOCK_BYTES_MAX),
        block(3, 10),
    ];
    let as_device = |device: Option<&str>, path: &str, body: serde_json::Value| {
        let headers: Vec<(&str, &str)> =
            device.map(|d| ("Holdall-Device", d)).into_iter().collect();
        let r = request_with(
            &server.addr,
            "POST",
            path,
            Some(&alice),
            &headers,
            body.to_string().as_bytes(),
        );
        (r.status, r.json())
    };
    let (status, v) = as_device(
        Some("laptop-1"),
        "/v1/commit",
        file(root, "big", &blocks, None),
    );
    assert_eq!((status, v["status"].as_str()), (200, Some("need_blocks")));
    let cursors = json!({"cursors": { root.to_string(): 0 }});
    let listed = |device| as_device(device, "/v1/list", cursors.clone()).1["prefetch"].clone();
    assert_eq!(
        listed(Some("desktop-2"))[0]["path"],
        "big",
        "another device sees it"
    );
    assert_eq!(
        listed(Some("laptop-1")),
        json!([]),
        "the uploading device does not"
    );
    assert_eq!(
        listed(None),
        json!([]),
        "a client that names no device sees none of its user's"
    );
    for bad in ["", "has space", &"x".repeat(129)] {
        let (status, v) = as_device(Some(bad), "/v1/list", cursors.clone());
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("bad_device")),
            "{bad:?}"
        );
    }
}
