//! holdalld serving HTTPS itself: a private CA's certificate, HTTP/1.1 by ALPN, a reload
//! on SIGHUP under load, bad files at start, and clients that speak the wrong thing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdall_testkit::tls::{Issued, TestCa, Validity};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::Server;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn client_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: CertificateDer = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection makes a full handshake, so it sees the certificate served now (a
    // resumed session shows the one it began with).
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A TLS connection to `addr`, handshake done.
fn connect(addr: &str, config: &Arc<ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = StreamOwned::new(ClientConnection::new(config.clone(), name).unwrap(), tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// The DER of the certificate the server showed on `tls`.
fn served_cert(tls: &TlsStream) -> Vec<u8> {
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}

/// One keep-alive request; its status and body.
fn exchange(
    tls: &mut TlsStream,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut byte).unwrap(), 1, "the answer ended early");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap().to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    tls.read_exact(&mut body).unwrap();
    (status, body)
}

fn get(tls: &mut TlsStream, path: &str, token: &str) -> (u16, String) {
    let (status, body) = exchange(tls, "GET", path, token, b"");
    (status, String::from_utf8(body).unwrap())
}

fn post_json(
    tls: &mut TlsStream,
    path: &str,
    token: &str,
    v: serde_json::Value,
) -> serde_json::Value {
    let (status, body) = exchange(tls, "POST", path, token, v.to_string().as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn start(data: &Path, pair: &Issued) -> Server {
    Server::start_with(
        data,
        2,
        &[
            "--tls-cert",
            pair.cert.to_str().unwrap(),
            "--tls-key",
            pair.key.to_str().unwrap(),
            "--client-timeout-s",
            "3",
        ],
    )
}

#[test]
fn https_with_a_private_ca_and_http11_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let pair = ca.issue(dir.path(), "server", "127.0.0.1", Validity::Current);
    let server = start(&dir.path().join("data"), &pair);
    assert!(server.stderr().contains("tls=true"), "{}", server.stderr());
    let config = client_config(&ca.pem);
    let mut tls = connect(&server.addr, &config);
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let token = server.admin_token();
    for _ in 0..3 {
        let (status, body) = get(&mut tls, "/v1/account", &token);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"user\""), "{body}");
    }
    // A user, and a block of several MiB up and down, on the same connection.
    let v = post_json(
        &mut tls,
        "/v1/admin/users",
        &token,
        serde_json::json!({"name": "ann"}),
    );
    let (ann, ns) = (
        v["token"].as_str().unwrap().to_string(),
        v["root_ns"].as_u64().unwrap(),
    );
    let block = support::block(7, 4 << 20);
    let stored = exchange(
        &mut tls,
        "POST",
        "/v1/store_batch",
        &ann,
        &support::frames(std::slice::from_ref(&block)),
    );
    assert_eq!(stored.0, 200, "{}", String::from_utf8_lossy(&stored.1));
    let hashes = support::hex(std::slice::from_ref(&block));
    post_json(
        &mut tls,
        "/v1/commit",
        &ann,
        serde_json::json!({"ns": ns, "path": "big", "kind": "file", "blocklist": hashes,
            "size": block.len(), "mtime_ms": 0, "parent_jid": null}),
    );
    let ask = serde_json::json!({"items": [{"ns": ns, "path": "big", "hashes": hashes}]});
    let (status, body) = exchange(
        &mut tls,
        "POST",
        "/v1/retrieve_batch",
        &ann,
        ask.to_string().as_bytes(),
    );
    assert_eq!(status, 200);
    let frame = holdall_proto::frame::decode_retrieve_frames(&body, 8 << 20)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(frame.data, &block[..]);
}

#[test]
fn plain_http_garbage_and_stalls_on_the_tls_port_do_no_harm() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let pair = ca.issue(dir.path(), "server", "127.0.0.1", Validity::Current);
    let server = start(&dir.path().join("data"), &pair);

    // Plain HTTP gets a plain answer saying why, and the connection closes.
    let plain = support::request(&server.addr, "GET", "/healthz", None, b"");
    assert_eq!(plain.status, 400);
    assert!(String::from_utf8_lossy(&plain.body).contains("HTTPS"));

    // A handshake record of garbage: the connection is closed.
    let mut junk = TcpStream::connect(&server.addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    garbage.extend(holdall_testkit::pseudo_random_bytes(5, 64));
    junk.write_all(&garbage).unwrap();
    let mut answer = Vec::new();
    let _ = junk.read_to_end(&mut answer);
    assert!(answer.len() < 64, "a TLS alert at most: {answer:?}");

    // A client that connects and says nothing is dropped after the client timeout.
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let began = Instant::now();
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap_or(0), 0);
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );

    // The server still serves.
    let mut tls = connect(&server.addr, &client_config(&ca.pem));
    assert_eq!(get(&mut tls, "/v1/account", &server.admin_token()).0, 200);
}

#[test]
fn certificates_are_refused_clearly_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let a = ca.issue(dir.path(), "a", "127.0.0.1", Validity::Current);
    let b = ca.issue(dir.path(), "b", "127.0.0.1", Validity::Current);
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_holdalld"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    let missing = dir.path().join("missing.pem");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec![
                "--tls-cert",
                missing.to_str().unwrap(),
                "--tls-key",
                a.key.to_str().unwrap(),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--tls-cert",
                a.cert.to_str().unwrap(),
                "--tls-key",
                b.key.to_str().unwrap(),
            ],
            "does not fit",
        ),
        (vec!["--tls-cert", a.cert.to_str().unwrap()], "go together"),
    ];
    for (args, says) in cases {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} listened");
    }
}

#[test]
fn sighup_reloads_the_pair_under_load_and_keeps_it_when_the_new_one_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let pair = ca.issue(dir.path(), "server", "127.0.0.1", Validity::Current);
    let server = start(&dir.path().join("data"), &pair);
    let config = client_config(&ca.pem);
    let token = server.admin_token();
    let mut kept = connect(&server.addr, &config);
    let first = served_cert(&kept);
    assert_eq!(get(&mut kept, "/v1/account", &token).0, 200);

    // Load: new connections, one request each, all through the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (addr, config, token) = (server.addr.clone(), config.clone(), token.clone());
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut tls = connect(&addr, &config);
                let (status, body) = get(&mut tls, "/v1/account", &token);
                assert_eq!(status, 200, "{body}");
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let hup = || {
        let pid = server.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    std::thread::sleep(Duration::from_millis(300));

    // A new pair in the same files, then SIGHUP: new handshakes get it, the open
    // connection goes on.
    ca.issue(dir.path(), "server", "127.0.0.1", Validity::Current);
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let cert = served_cert(&connect(&server.addr, &config));
        if cert != first {
            break cert;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(get(&mut kept, "/v1/account", &token).0, 200);

    // A bad key: logged, and the last good pair stays.
    std::fs::write(&pair.key, "not a key\n").unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("TLS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(served_cert(&connect(&server.addr, &config)), second);
    assert_eq!(get(&mut kept, "/v1/account", &token).0, 200);

    stop.store(true, Ordering::Relaxed);
    load.join().expect("every request under load was served");
    assert!(served.load(Ordering::Relaxed) > 10, "{served:?}");
}
