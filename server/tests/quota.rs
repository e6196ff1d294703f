//! Quotas on the real holdalld: set by the admin, shown in `/v1/account`, charged to the
//! namespace's owner (a member's commits to a shared folder too), refused with 507 before
//! any block is asked for and changing nothing, and kept across a restart.

mod support;

use serde_json::{json, Value};
use support::{block, create_user, hex, listed_paths, metric, post, request, store_block, Server};

fn set_quota(server: &Server, user: &str, bytes: Value) -> (u16, Value) {
    post(
        server,
        &format!("/v1/admin/users/{user}/quota"),
        &server.admin_token(),
        json!({ "bytes": bytes }),
    )
}

fn usage(server: &Server, token: &str) -> (u64, Option<u64>) {
    let r = request(&server.addr, "GET", "/v1/account", Some(token), b"");
    assert_eq!(r.status, 200);
    let v = r.json();
    (
        v["usage"]["bytes"].as_u64().unwrap(),
        v["usage"]["quota_bytes"].as_u64(),
    )
}

fn file(ns: u64, path: &str, b: &[u8], parent: Option<u64>) -> Value {
    json!({"ns": ns, "path": path, "kind": "file", "blocklist": hex(&[b.to_vec()]),
        "size": b.len(), "mtime_ms": 0, "parent_jid": parent})
}

/// Commits one file; the status and answer.
fn commit(server: &Server, token: &str, body: Value) -> (u16, Value) {
    post(server, "/v1/commit", token, body)
}

/// Stores `b`, then commits it; the JID.
fn put(server: &Server, token: &str, ns: u64, path: &str, b: &[u8], parent: Option<u64>) -> u64 {
    assert_eq!(store_block(server, token, b).status, 200);
    let (status, v) = commit(server, token, file(ns, path, b, parent));
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    v["jid"].as_u64().unwrap()
}

fn assert_over_quota(status: u16, v: &Value) {
    assert_eq!(
        (status, v["error"].as_str()),
        (507, Some("quota_exceeded")),
        "{v}"
    );
}

#[test]
fn commits_past_quota_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let (ana, ns) = create_user(&server, "ana");
    assert_eq!(usage(&server, &ana), (0, None));
    refusals_of_bad_quota_calls(&server, &ana);
    let (status, v) = set_quota(&server, "ana", json!(10_000));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"], "ana");
    assert_eq!(v["usage"], json!({"bytes": 0, "quota_bytes": 10_000}));

    let a = block(1, 6000);
    let ja = put(&server, &ana, ns, "a", &a, None);
    assert_eq!(usage(&server, &ana), (6000, Some(10_000)));
    // Refused before need_blocks: the block was never uploaded.
    let b = block(2, 5000);
    let (status, v) = commit(&server, &ana, file(ns, "b", &b, None));
    assert_over_quota(status, &v);
    assert_eq!(listed_paths(&server, &ana, ns), ["a"]);
    assert_eq!(metric(&server, "holdall_quota_refusals_total"), 1);

    // In a batch, each commit is charged after the ones before it.
    let c = block(3, 3000);
    assert_eq!(store_block(&server, &ana, &c).status, 200);
    let batch = json!({"commits": [file(ns, "b", &b, None), file(ns, "c", &c, None)]});
    let (status, v) = post(&server, "/v1/commit_batch", &ana, batch);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["error"], "quota_exceeded", "{v}");
    assert_eq!(v["results"][1]["status"], "ok", "{v}");
    assert_eq!(usage(&server, &ana), (9000, Some(10_000)));

    // Shrinking always passes, over quota or not.
    set_quota(&server, "ana", json!(5000));
    let small = block(4, 1000);
    let ja2 = put(&server, &ana, ns, "a", &small, Some(ja));
    assert_eq!(usage(&server, &ana), (4000, Some(5000)));
    // Restoring the 6000-byte version would grow "a" by 5000.
    let restore = json!({"ns": ns, "path": "a", "jid": ja});
    let (status, v) = post(&server, "/v1/restore", &ana, restore.clone());
    assert_over_quota(status, &v);
    let rewind = json!({"ns": ns, "path": "", "to_jid": ja});
    let (status, v) = post(&server, "/v1/rewind", &ana, rewind);
    assert_over_quota(status, &v);
    assert_eq!(usage(&server, &ana), (4000, Some(5000)));
    assert_eq!(metric(&server, "holdall_quota_refusals_total"), 4);

    shared_folders_charge_their_owner(&server, &ana);
    let server = restart(server, &data);
    assert_eq!(usage(&server, &ana), (4000, Some(5000)));
    let (status, v) = commit(&server, &ana, file(ns, "b", &b, None));
    assert_over_quota(status, &v);
    let (status, v) = set_quota(&server, "ana", Value::Null);
    assert_eq!(
        v["usage"],
        json!({"bytes": 4000, "quota_bytes": null}),
        "{v}"
    );
    assert_eq!(status, 200);
    let (status, v) = post(&server, "/v1/restore", &ana, restore);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    assert!(v["jid"].as_u64().unwrap() > ja2);
    assert_eq!(usage(&server, &ana), (9000, None));
}

fn refusals_of_bad_quota_calls(server: &Server, ana: &str) {
    let (status, v) = post(
        server,
        "/v1/admin/users/ana/quota",
        ana,
        json!({"bytes": 1}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, v) = set_quota(server, "nobody", json!(1));
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("unknown_user")),
        "{v}"
    );
    let admin = server.admin_token();
    let (status, _) = post(
        server,
        "/v1/admin/users/ana/quota",
        &admin,
        json!({"byte": 1}),
    );
    assert_eq!(status, 400);
    let (status, _) = post(
        server,
        "/v1/admin/users/ana/quota",
        &admin,
        json!({"bytes": -1}),
    );
    assert_eq!(status, 400);
    assert_eq!(usage(server, ana), (0, None));
}

/// Ana (at 4000 of 5000) shares a folder with Bo: Bo's commits there spend Ana's quota,
/// those in his own root spend none.
fn shared_folders_charge_their_owner(server: &Server, ana: &str) {
    let (bo, bo_root) = create_user(server, "bo");
    let (status, v) = post(server, "/v1/namespaces", ana, json!({"mount_path": "Team"}));
    assert_eq!(status, 200, "{v}");
    let team = v["ns"].as_u64().unwrap();
    let member = json!({"user": "bo", "mount_path": "Team"});
    let (status, v) = post(
        server,
        &format!("/v1/namespaces/{team}/members"),
        ana,
        member,
    );
    assert_eq!(status, 200, "{v}");
    let big = block(5, 2000);
    let (status, v) = commit(server, &bo, file(team, "big", &big, None));
    assert_over_quota(status, &v);
    put(server, &bo, bo_root, "big", &big, None);
    let fits = block(6, 500);
    put(server, &bo, team, "fits", &fits, None);
    assert_eq!(usage(server, ana), (4500, Some(5000)));
    assert_eq!(usage(server, &bo), (2000, None));
    // Leave Ana where the caller had her.
    let (status, v) = commit(
        server,
        ana,
        json!({"ns": team, "path": "fits", "kind": "deleted",
        "blocklist": [], "size": 0, "mtime_ms": 0, "parent_jid": team_jid(server, ana, team)}),
    );
    assert_eq!(status, 200, "{v}");
}

fn team_jid(server: &Server, token: &str, ns: u64) -> u64 {
    let (_, v) = post(
        server,
        "/v1/list",
        token,
        json!({"cursors": {ns.to_string(): 0}}),
    );
    v["entries"][0]["jid"].as_u64().unwrap()
}

fn restart(server: Server, data: &std::path::Path) -> Server {
    assert!(server.terminate().success());
    Server::start(data, 2)
}
