//! The admin's users: `GET /v1/admin/users`, and disabling and enabling a user, on a real
//! holdalld with several shards and across a restart.

mod support;

use serde_json::json;
use support::{block, commit_file, create_user, fetch_block, post, request, store_block, Server};

#[test]
fn a_disabled_users_tokens_are_refused_everywhere_and_nothing_of_theirs_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 3);
    let admin = server.admin_token();
    let (ana, ana_ns) = create_user(&server, "ana");
    let (bo, _) = create_user(&server, "bo b");
    let b = block(1, 50_000);
    assert_eq!(store_block(&server, &ana, &b).status, 200);
    assert_eq!(commit_file(&server, &ana, ana_ns, "f", &b).0, 200);

    let listed = request(&server.addr, "GET", "/v1/admin/users", Some(&admin), b"");
    assert_eq!(listed.status, 200);
    let users = listed.json()["users"].clone();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "ana", "bo b"]);
    assert_eq!(
        users[1]["usage"],
        json!({"bytes": 50_000, "quota_bytes": null})
    );
    assert_eq!(
        (users[1]["disabled"].clone(), users[0]["admin"].clone()),
        (json!(false), json!(true))
    );

    // Only the admin; not themselves; unknown names are 404.
    assert_eq!(
        request(&server.addr, "GET", "/v1/admin/users", Some(&ana), b"").status,
        403
    );
    assert_eq!(
        post(&server, "/v1/admin/users/ana/disable", &bo, json!({})).0,
        403
    );
    assert_eq!(
        post(&server, "/v1/admin/users/admin/disable", &admin, json!({})).0,
        400
    );
    assert_eq!(
        post(&server, "/v1/admin/users/nobody/disable", &admin, json!({})).0,
        404
    );

    let (status, v) = post(&server, "/v1/admin/users/ana/disable", &admin, json!({}));
    assert_eq!((status, v), (200, json!({"user": "ana", "disabled": true})));
    // Every shard refuses her token at once, whichever one takes the request.
    for _ in 0..6 {
        let r = request(&server.addr, "GET", "/v1/account", Some(&ana), b"");
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "account_disabled");
    }
    let (status, _) = post(&server, "/v1/admin/users/bo%20b/disable", &admin, json!({}));
    assert_eq!(status, 200, "names are percent-decoded");
    assert_eq!(
        request(&server.addr, "GET", "/v1/account", Some(&bo), b"").status,
        401
    );
    assert!(server.terminate().success());

    // Disabled survives a restart, and enabling gives everything back.
    let server = Server::start(&data, 3);
    assert_eq!(
        request(&server.addr, "GET", "/v1/account", Some(&ana), b"").status,
        401
    );
    let listed = request(&server.addr, "GET", "/v1/admin/users", Some(&admin), b"").json();
    assert_eq!(listed["users"][1]["disabled"], json!(true));
    let (status, v) = post(&server, "/v1/admin/users/ana/enable", &admin, json!({}));
    assert_eq!(
        (status, v),
        (200, json!({"user": "ana", "disabled": false}))
    );
    assert_eq!(fetch_block(&server, &ana, ana_ns, "f", &b), Some(b));
    assert_eq!(
        request(&server.addr, "GET", "/v1/account", Some(&bo), b"").status,
        401
    );
    assert!(server.terminate().success());
}
