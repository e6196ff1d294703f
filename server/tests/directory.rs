//! Users, shared namespaces and members through the real holdalld with several shards:
//! changes go through shard 0 and reach every shard's replica before the answer, and survive
//! a restart.

mod support;

use serde_json::{json, Value};
use support::{post, request, Server};

fn account(server: &Server, token: &str) -> Value {
    let r = request(&server.addr, "GET", "/v1/account", Some(token), b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[test]
fn users_namespaces_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 3);
    let admin = server.admin_token();

    let (status, bob) = post(&server, "/v1/admin/users", &admin, json!({"name": "bob"}));
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["user"], "bob");
    let bob_token = bob["token"].as_str().unwrap().to_string();
    let bob_root = bob["root_ns"].as_u64().unwrap();
    assert_ne!(bob_root, 1);
    // The new token works at once, whichever shard a connection lands on.
    for _ in 0..20 {
        let a = account(&server, &bob_token);
        assert_eq!(
            (a["user"].as_str(), a["root_ns"].as_u64()),
            (Some("bob"), Some(bob_root))
        );
    }

    let (status, e) = post(&server, "/v1/admin/users", &admin, json!({"name": "bob"}));
    assert_eq!((status, e["error"].as_str()), (409, Some("name_taken")));
    let (status, e) = post(
        &server,
        "/v1/admin/users",
        &bob_token,
        json!({"name": "eve"}),
    );
    assert_eq!((status, e["error"].as_str()), (403, Some("forbidden")));
    let (status, e) = post(&server, "/v1/admin/users", &admin, json!({"name": "a/b"}));
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_name")));
    let (status, e) = post(&server, "/v1/admin/users", &admin, json!({"nom": "x"}));
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_json")));
    let (_, carol) = post(&server, "/v1/admin/users", &admin, json!({"name": "carol"}));
    let carol_token = carol["token"].as_str().unwrap().to_string();

    let (status, created) = post(
        &server,
        "/v1/namespaces",
        &admin,
        json!({"mount_path": "Team"}),
    );
    assert_eq!(status, 200, "{created}");
    let team = created["ns"].as_u64().unwrap();
    assert_eq!(
        account(&server, &admin)["mounts"],
        json!([{"ns": team, "path": "Team"}])
    );
    for (path, code) in [("Team/inner", "mount_conflict"), ("Team", "mount_conflict")] {
        let (status, e) = post(
            &server,
            "/v1/namespaces",
            &admin,
            json!({"mount_path": path}),
        );
        assert_eq!((status, e["error"].as_str()), (409, Some(code)), "{path}");
    }
    let (status, e) = post(
        &server,
        "/v1/namespaces",
        &admin,
        json!({"mount_path": "a/../b"}),
    );
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_path")));

    let members = format!("/v1/namespaces/{team}/members");
    let (status, added) = post(
        &server,
        &members,
        &admin,
        json!({"user": "bob", "mount_path": "Shared/Team"}),
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        added,
        json!({"ns": team, "user": "bob", "mount_path": "Shared/Team"})
    );
    for _ in 0..10 {
        assert_eq!(
            account(&server, &bob_token)["mounts"],
            json!([{"ns": team, "path": "Shared/Team"}])
        );
    }
    let (status, e) = post(
        &server,
        &members,
        &admin,
        json!({"user": "bob", "mount_path": "Again"}),
    );
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("mount_conflict")),
        "mounted once"
    );
    let (status, e) = post(
        &server,
        &members,
        &carol_token,
        json!({"user": "carol", "mount_path": "T"}),
    );
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("forbidden")),
        "carol is no member"
    );
    // A member may share further.
    let (status, _) = post(
        &server,
        &members,
        &bob_token,
        json!({"user": "carol", "mount_path": "FromBob"}),
    );
    assert_eq!(status, 200);
    let (status, e) = post(
        &server,
        &members,
        &admin,
        json!({"user": "nobody", "mount_path": "X"}),
    );
    assert_eq!((status, e["error"].as_str()), (404, Some("unknown_user")));
    let (status, e) = post(
        &server,
        &format!("/v1/namespaces/{bob_root}/members"),
        &bob_token,
        json!({"user": "carol", "mount_path": "X"}),
    );
    assert_eq!(
        (status, e["error"].as_str()),
        (404, Some("unknown_namespace")),
        "a root is not shared"
    );
    let (status, e) = post(
        &server,
        "/v1/namespaces/x1/members",
        &admin,
        json!({"user": "bob", "mount_path": "X"}),
    );
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_namespace")));
    assert!(server.terminate().success());

    // Everything survives a restart.
    let server = Server::start(&data, 3);
    assert_eq!(
        account(&server, &bob_token)["mounts"],
        json!([{"ns": team, "path": "Shared/Team"}])
    );
    assert_eq!(
        account(&server, &carol_token)["mounts"],
        json!([{"ns": team, "path": "FromBob"}])
    );
    let (status, dave) = post(&server, "/v1/admin/users", &admin, json!({"name": "dave"}));
    assert_eq!(status, 200);
    let dave_root = dave["root_ns"].as_u64().unwrap();
    assert!(
        dave_root > team,
        "ids are never reused: {dave_root} after {team}"
    );
    assert!(server.terminate().success());
}
