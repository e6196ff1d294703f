//! The Dropbox API's own state on the real holdalld, over plain HTTP: an open upload
//! session's blocks survive a collection after every proof of upload has expired; a
//! restart ends sessions (answered `not_found`) but not cursors. The whole API is driven
//! by the official SDK in `client/tests/dropbox_sdk.rs`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{block, create_user, post, request_with, Response, Server};

fn upload_call(server: &Server, token: &str, route: &str, arg: Value, body: &[u8]) -> Response {
    let arg = arg.to_string();
    let headers = [
        ("Dropbox-API-Arg", arg.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    request_with(
        &server.addr,
        "POST",
        &format!("/2/{route}"),
        Some(token),
        &headers,
        body,
    )
}

fn rpc(server: &Server, token: &str, route: &str, arg: Value) -> (u16, Value) {
    post(server, &format!("/2/{route}"), token, arg)
}

#[test]
fn an_open_sessions_blocks_outlive_a_collection_and_a_restart_ends_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Proofs of upload last a second, so only the session itself keeps its blocks.
    let server = Server::start_with(&data, 2, &["--prefetch-ttl-s", "1"]);
    let (token, _) = create_user(&server, "ann");
    let first = [block(1, 4 << 20), block(2, 1000)].concat();
    let started = upload_call(
        &server,
        &token,
        "files/upload_session/start",
        json!({}),
        &first,
    );
    assert_eq!(
        started.status,
        200,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    let session = started.json()["session_id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, gc) = post(&server, "/v1/admin/gc", &server.admin_token(), json!({}));
    assert_eq!(status, 200, "{gc}");
    let rest = block(3, 5000);
    let cursor = json!({"session_id": session, "offset": first.len()});
    let arg = json!({"cursor": cursor, "commit": {"path": "/big.bin"}});
    let done = upload_call(&server, &token, "files/upload_session/finish", arg, &rest);
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.json()["size"], json!(first.len() + rest.len()));
    let got = upload_call(
        &server,
        &token,
        "files/download",
        json!({"path": "/big.bin"}),
        b"",
    );
    assert_eq!(got.status, 200);
    assert!(
        got.body == [first, rest].concat(),
        "the file came back changed"
    );

    let open = upload_call(
        &server,
        &token,
        "files/upload_session/start",
        json!({}),
        b"abc",
    );
    let open_id = open.json()["session_id"].as_str().unwrap().to_owned();
    let (status, listed) = rpc(&server, &token, "files/list_folder", json!({"path": ""}));
    assert_eq!(status, 200, "{listed}");
    let list_cursor = listed["cursor"].as_str().unwrap().to_owned();
    server.terminate();

    let server = Server::start(&data, 2);
    let arg =
        json!({"cursor": {"session_id": open_id, "offset": 3}, "commit": {"path": "/late.bin"}});
    let late = upload_call(&server, &token, "files/upload_session/finish", arg, b"");
    assert_eq!(late.status, 409);
    assert_eq!(
        late.json()["error"],
        json!({".tag": "lookup_failed", "lookup_failed": {".tag": "not_found"}})
    );
    let small = upload_call(
        &server,
        &token,
        "files/upload",
        json!({"path": "/after.txt"}),
        b"after",
    );
    assert_eq!(small.status, 200);
    let (status, changes) = rpc(
        &server,
        &token,
        "files/list_folder/continue",
        json!({"cursor": list_cursor}),
    );
    assert_eq!(status, 200, "{changes}");
    let names: Vec<&str> = changes["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["after.txt"]);
}

#[test]
fn bad_calls_are_refused_in_dropbox_shapes_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), 2);
    let (token, _) = create_user(&server, "bo");
    let r = request_with(
        &server.addr,
        "POST",
        "/2/files/upload",
        Some(&token),
        &[("Dropbox-API-Arg", "{oops")],
        b"x",
    );
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Dropbox-API-Arg"));
    let (status, v) = rpc(
        &server,
        "not-a-token",
        "users/get_current_account",
        json!(null),
    );
    assert_eq!(
        (status, v["error"][".tag"].as_str()),
        (401, Some("invalid_access_token"))
    );
    let (status, v) = rpc(
        &server,
        &token,
        "files/get_metadata",
        json!({"path": "/nothing"}),
    );
    assert_eq!(
        (status, v["error_summary"].as_str()),
        (409, Some("path/not_found/."))
    );
    let up = upload_call(
        &server,
        &token,
        "files/upload",
        json!({"path": "/a/../b"}),
        b"x",
    );
    assert_eq!(up.status, 409);
    let (_, listed) = rpc(
        &server,
        &token,
        "files/list_folder",
        json!({"path": "", "recursive": true}),
    );
    assert_eq!(
        listed["entries"],
        json!([]),
        "a refused call wrote something"
    );
}
