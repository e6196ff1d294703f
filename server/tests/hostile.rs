//! Hostile clients against the real holdalld: slow or stalled request heads and bodies,
//! responses nobody reads, huge declared lengths and many idle connections are cut off by
//! the client timeout and the size limits, while other clients keep being served.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{request, Server};

/// Reads until the server closes the connection; what it sent and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (got, started.elapsed())
}

#[test]
fn stalled_and_oversized_requests_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), 2, &["--client-timeout-s", "1"]);
    let token = server.admin_token();

    // A head that never ends (slowloris) and a connection that never sends anything.
    let mut slow_head = TcpStream::connect(&server.addr).unwrap();
    slow_head
        .write_all(b"POST /v1/list HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    // Thousands of idle connections do not stop others from being served.
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    assert_eq!(
        request(&server.addr, "GET", "/healthz", None, b"").status,
        200
    );
    let (got, took) = read_until_closed(&mut slow_head);
    assert!(got.is_empty() && took < Duration::from_secs(10), "{took:?}");
    let (got, _) = read_until_closed(&mut silent);
    assert!(got.is_empty());
    drop(idle);

    // A body that stalls: 408 after the timeout.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/store_batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    let (got, took) = read_until_closed(&mut stalled);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout") && took < Duration::from_secs(10));

    // A huge declared length is refused before any of it is read.
    let mut huge = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/store_batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000000000000\r\n\r\n"
    );
    huge.write_all(head.as_bytes()).unwrap();
    let (got, _) = read_until_closed(&mut huge);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // A client that asks for a large answer and never reads it loses the connection; the
    // server goes on serving.
    let mut sink = TcpStream::connect(&server.addr).unwrap();
    for _ in 0..200 {
        let _ = sink.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        request(&server.addr, "GET", "/healthz", None, b"").status,
        200
    );
    let metrics =
        String::from_utf8(request(&server.addr, "GET", "/metrics", None, b"").body).unwrap();
    assert!(metrics.contains("status=\"408\""), "{metrics}");
    assert!(server.terminate().success());
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection; how
/// long it kept it, and what it answered.
fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> (Duration, String) {
    let started = Instant::now();
    for b in bytes {
        if stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(gap);
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let (got, _) = read_until_closed(stream);
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

#[test]
fn trickling_heads_and_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), 1, &["--client-timeout-s", "1"]);
    let token = server.admin_token();

    // A head sent a byte at a time: every byte is in time, the whole head is not.
    let mut head = TcpStream::connect(&server.addr).unwrap();
    let text =
        "POST /v1/list HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (took, answer) = trickle(&mut head, text.as_bytes(), Duration::from_millis(200));
    assert!(took < Duration::from_secs(5), "head kept for {took:?}");
    assert!(answer.is_empty(), "{answer}");

    // A body sent a byte at a time: cut once it falls behind the slowest rate allowed.
    let mut body = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 200\r\n\r\n"
    );
    body.write_all(head.as_bytes()).unwrap();
    let (took, answer) = trickle(&mut body, &[b' '; 200], Duration::from_millis(200));
    assert!(took < Duration::from_secs(5), "body kept for {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    assert_eq!(
        request(&server.addr, "GET", "/healthz", None, b"").status,
        200
    );
    assert!(server.terminate().success());
}
