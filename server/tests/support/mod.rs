//! Test support: starts the real holdalld on a free loopback port, and a minimal HTTP/1.1
//! client over std's TcpStream.

// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running holdalld.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data folder.
    pub data: PathBuf,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `holdalld serve` on `data` with `shards` shards and waits until it listens.
    pub fn start(data: &Path, shards: usize) -> Server {
        Server::start_with(data, shards, &[])
    }

    /// As [`Server::start`], with more flags.
    pub fn start_with(data: &Path, shards: usize, flags: &[&str]) -> Server {
        let holdall_testkit::Spawned {
            child,
            addr,
            stderr_path,
            ..
        } = holdall_testkit::spawn_holdalld(
            Path::new(env!("CARGO_BIN_EXE_holdalld")),
            data,
            shards,
            flags,
        );
        Server {
            child,
            addr,
            data: data.to_path_buf(),
            stderr_path,
        }
    }

    /// The admin token holdalld wrote on first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token")).unwrap()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status (at most 20 s).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "holdalld did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers (lower-case names), body.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection.
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Response {
    request_with(addr, method, path, token, &[], body)
}

/// One request with extra headers on a fresh connection.
pub fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        panic!("{method} {path}: no complete response ({e})");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// POSTs a JSON body; the status and the JSON answer.
pub fn post(
    server: &Server,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = request(
        &server.addr,
        "POST",
        path,
        Some(token),
        body.to_string().as_bytes(),
    );
    (r.status, r.json())
}

/// Creates a user with the admin token; their token and root namespace.
pub fn create_user(server: &Server, name: &str) -> (String, u64) {
    let (status, v) = post(
        server,
        "/v1/admin/users",
        &server.admin_token(),
        serde_json::json!({ "name": name }),
    );
    assert_eq!(status, 200, "{v}");
    (
        v["token"].as_str().unwrap().to_string(),
        v["root_ns"].as_u64().unwrap(),
    )
}

/// `len` pseudo-random bytes from `seed`: distinct seeds give distinct blocks.
pub fn block(seed: u64, len: usize) -> Vec<u8> {
    holdall_testkit::pseudo_random_bytes(seed, len)
}

/// A store_batch body carrying `blocks`.
pub fn frames(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for b in blocks {
        holdall_proto::frame::encode_store_frame(&mut body, &holdall_proto::BlockHash::of(b), b);
    }
    body
}

/// The hex hashes of `blocks`.
pub fn hex(blocks: &[Vec<u8>]) -> Vec<String> {
    blocks
        .iter()
        .map(|b| holdall_proto::BlockHash::of(b).to_hex())
        .collect()
}

/// Commits a one-block file `b` at `path` of `ns`; the status and the answer.
pub fn commit_file(
    server: &Server,
    token: &str,
    ns: u64,
    path: &str,
    b: &[u8],
) -> (u16, serde_json::Value) {
    post(
        server,
        "/v1/commit",
        token,
        serde_json::json!({"ns": ns, "path": path, "kind": "file",
            "blocklist": hex(std::slice::from_ref(&b.to_vec())),
            "size": b.len(), "mtime_ms": 0, "parent_jid": null}),
    )
}

/// store_batch of one block.
pub fn store_block(server: &Server, token: &str, b: &[u8]) -> Response {
    request(
        &server.addr,
        "POST",
        "/v1/store_batch",
        Some(token),
        &frames(&[b.to_vec()]),
    )
}

/// The paths `list` shows in `ns` from the start.
pub fn listed_paths(server: &Server, token: &str, ns: u64) -> Vec<String> {
    let (status, v) = post(
        server,
        "/v1/list",
        token,
        serde_json::json!({"cursors": {ns.to_string(): 0}}),
    );
    assert_eq!(status, 200, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// The one block `b` of the file at `path`, if retrieve_batch serves it.
pub fn fetch_block(server: &Server, token: &str, ns: u64, path: &str, b: &[u8]) -> Option<Vec<u8>> {
    let ask = serde_json::json!({"items": [{"ns": ns, "path": path,
        "hashes": hex(std::slice::from_ref(&b.to_vec()))}]});
    let r = request(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(token),
        ask.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let frame = holdall_proto::frame::decode_retrieve_frames(&r.body, 8 << 20)
        .next()
        .unwrap()
        .unwrap();
    (frame.status == holdall_proto::frame::RetrieveStatus::Ok).then(|| frame.data.to_vec())
}

/// The sum over shards of a metric.
pub fn metric(server: &Server, name: &str) -> u64 {
    let text = String::from_utf8(request(&server.addr, "GET", "/metrics", None, b"").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits (up to 10 s) until `metric` reaches `at_least`: shards publish their engine
/// figures periodically.
pub fn wait_for_metric(server: &Server, name: &str, at_least: u64) -> u64 {
    let start = Instant::now();
    loop {
        let v = metric(server, name);
        if v >= at_least || start.elapsed() > Duration::from_secs(10) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
