//! Device tokens on a real holdalld with several shards: made, listed (never the secret),
//! revoked on every shard at once, a parked longpoll ended by the revocation, and all of it
//! across a restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{create_user, post, request, Server};

fn get(server: &Server, path: &str, token: &str) -> (u16, serde_json::Value) {
    let r = request(&server.addr, "GET", path, Some(token), b"");
    (r.status, r.json())
}

#[test]
fn device_tokens_are_made_listed_and_revoked_everywhere_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 3);
    let (first, ns) = create_user(&server, "ana");
    let (other, _) = create_user(&server, "bo");
    let (status, made) = post(
        &server,
        "/v1/tokens",
        &first,
        json!({"device": "ana's phone"}),
    );
    assert_eq!(status, 200, "{made}");
    let (phone, phone_id) = (
        made["token"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(phone_id.len(), 16);
    assert_eq!(get(&server, "/v1/account", &phone).0, 200);

    let (status, listed) = get(&server, "/v1/tokens", &phone);
    assert_eq!(status, 200);
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{listed}");
    assert_eq!(tokens[0]["device"], "", "the account's first token");
    assert_eq!(
        (tokens[1]["id"].as_str(), tokens[1]["device"].as_str()),
        (Some(&*phone_id), Some("ana's phone"))
    );
    assert!(tokens
        .iter()
        .all(|t| t["created_ms"].as_u64() > Some(0) && t["last_used_ms"].as_u64().is_some()));
    let text = listed.to_string();
    assert!(
        !text.contains(&phone) && !text.contains(&first),
        "never the secret"
    );

    for bad in [
        json!({"device": ""}),
        json!({"device": "a\u{7}b"}),
        json!({"device": "x".repeat(129)}),
        json!({}),
    ] {
        assert_eq!(post(&server, "/v1/tokens", &first, bad).0, 400);
    }
    // Someone else's token, or none of that id: 404.
    let del = |token: &str, id: &str| {
        request(
            &server.addr,
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(token),
            b"",
        )
        .status
    };
    assert_eq!(del(&other, &phone_id), 404);
    assert_eq!(del(&first, "0000000000000000"), 404);

    // A longpoll parked with the phone's token ends with 401 once it is revoked.
    let addr = server.addr.clone();
    let phone_for_poll = phone.clone();
    let parked = std::thread::spawn(move || {
        let body = json!({"cursors": {ns.to_string(): 0}, "timeout_s": 60}).to_string();
        let started = Instant::now();
        let r = request(
            &addr,
            "POST",
            "/v1/longpoll",
            Some(&phone_for_poll),
            body.as_bytes(),
        );
        (r.status, r.json(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(del(&first, &phone_id), 200);
    let (status, v, waited) = parked.join().unwrap();
    assert_eq!(status, 401, "{v}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    for _ in 0..6 {
        assert_eq!(
            get(&server, "/v1/account", &phone).0,
            401,
            "every shard refuses it"
        );
    }
    assert_eq!(
        get(&server, "/v1/account", &first).0,
        200,
        "the others still work"
    );
    assert!(server.terminate().success());

    let server = Server::start(&data, 3);
    assert_eq!(
        get(&server, "/v1/account", &phone).0,
        401,
        "revoked for good"
    );
    let (_, listed) = get(&server, "/v1/tokens", &first);
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
    // A token may revoke itself.
    let (_, made) = post(
        &server,
        "/v1/tokens",
        &first,
        json!({"device": "old laptop"}),
    );
    let laptop = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap();
    let r = request(
        &server.addr,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(&laptop),
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(&server, "/v1/account", &laptop).0, 401);
    assert!(server.terminate().success());
}

#[test]
fn a_token_over_its_request_rate_gets_429_with_retry_after_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        2,
        &["--token-requests-per-s", "5"],
    );
    let (ana, _) = create_user(&server, "ana");
    let (bo, _) = create_user(&server, "bo");
    let statuses: Vec<(u16, Option<String>)> = (0..12)
        .map(|_| {
            let r = request(&server.addr, "GET", "/v1/account", Some(&ana), b"");
            (r.status, r.header("retry-after").map(str::to_owned))
        })
        .collect();
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(limited.len() >= 6, "{statuses:?}");
    assert!(
        limited
            .iter()
            .all(|(_, after)| after.as_deref() == Some("1")),
        "{statuses:?}"
    );
    assert_eq!(statuses[0].0, 200);
    assert_eq!(
        get(&server, "/v1/account", &bo).0,
        200,
        "another token has its own rate"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&server, "/v1/account", &ana).0, 200, "the rate refills");
    let r = request(&server.addr, "GET", "/metrics", None, b"");
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("route=\"account\",status=\"429\""), "counted");
}

/// One keep-alive connection: sends `GET /v1/account` and reads the answer's status and
/// whether the server said it closes the connection.
fn account_on(conn: &mut std::net::TcpStream, token: &str) -> (u16, bool) {
    use std::io::{BufRead, BufReader, Read, Write};
    let head =
        format!("GET /v1/account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut length, mut close) = (0, false);
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        close |= l == "connection: close";
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, close)
}

#[test]
fn a_user_holds_at_most_its_connections_and_a_closed_one_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        2,
        &["--user-connections-max", "2"],
    );
    let (ana, _) = create_user(&server, "ana");
    let connect = || std::net::TcpStream::connect(&server.addr).unwrap();
    let (mut one, mut two, mut three) = (connect(), connect(), connect());
    assert_eq!(account_on(&mut one, &ana), (200, false));
    assert_eq!(account_on(&mut two, &ana), (200, false));
    assert_eq!(
        account_on(&mut one, &ana),
        (200, false),
        "the same connection again"
    );
    assert_eq!(
        account_on(&mut three, &ana),
        (429, true),
        "a third is refused and closed"
    );
    assert_eq!(
        get(&server, "/v1/account", &server.admin_token()).0,
        200,
        "others are not"
    );
    drop(one);
    let freed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        account_on(&mut connect(), &ana).0 == 200
    });
    assert!(freed, "a closed connection frees its place");
    drop(two);
}
