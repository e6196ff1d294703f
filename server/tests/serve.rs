//! The real holdalld on a free loopback port: health, auth, account, errors, metrics, clean
//! stop on SIGTERM, restart with the same admin token, and the pinned shard count.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::{request, Server};

#[test]
fn serves_health_account_errors_and_metrics_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let token = server.admin_token();
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(data.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let r = request(&server.addr, "GET", "/healthz", None, b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));

    let r = request(&server.addr, "GET", "/v1/account", None, b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = request(&server.addr, "GET", "/v1/account", Some("not-a-token"), b"");
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (401, Some("unknown or revoked token"))
    );

    // Twenty connections, spread by the kernel over the shards listening on the port.
    for _ in 0..20 {
        let r = request(&server.addr, "GET", "/v1/account", Some(&token), b"");
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["user"], "admin");
        assert_eq!(v["root_ns"], 1);
        assert_eq!(v["mounts"], serde_json::json!([]));
        assert_eq!(v["limits"]["block_bytes_max"], 4194304);
        assert_eq!(v["limits"]["batch_bytes_max"], 8388608);
    }

    let r = request(&server.addr, "GET", "/v1/nope", Some(&token), b"");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    let r = request(&server.addr, "POST", "/healthz", None, b"x");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(r.json()["error"], "method_not_allowed");

    let r = request(&server.addr, "GET", "/metrics", None, b"");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("holdall_requests_total{route=\"account\",status=\"200\"} 20"),
        "counts from every shard are summed: {text}"
    );
    assert!(text.contains("holdall_requests_total{route=\"account\",status=\"401\"} 2"));
    assert!(text.contains("holdall_blocks{shard=\"1\"} 0"));
    assert!(
        text.contains("# TYPE holdall_reactor_nudges_total counter\nholdall_reactor_nudges_total ")
    );

    let stderr = server.stderr();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(!stderr.contains(&token), "the token is never logged");
}

#[test]
fn restarts_with_the_same_admin_and_keeps_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 3);
    let token = server.admin_token();
    assert!(server.terminate().success());

    let server = Server::start(&data, 3);
    assert_eq!(server.admin_token(), token, "the admin is created once");
    let r = request(&server.addr, "GET", "/v1/account", Some(&token), b"");
    assert_eq!(r.status, 200);
    assert!(server.terminate().success());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdalld"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("created with 3 shards"), "{stderr}");
}
