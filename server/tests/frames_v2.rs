//! Frame format 2 on the real holdalld (`Holdall-Frame-Format: 2`, offered as the `zstd`
//! feature): blocks that arrive zstd-compressed are expanded, checked and stored; every
//! frame that lies (does not decompress, decompresses past or short of its declared length,
//! hashes differently, sets unknown flags) refuses the whole batch and keeps nothing.

mod support;

use holdall_proto::frame::{
    decode_retrieve_frames, store_frame_header_v2, StoreHeader, RETRIEVE_V2_HEADER_BYTES,
};
use holdall_proto::BlockHash;
use serde_json::json;
use support::{block, commit_file, create_user, request, request_with, Server};

/// A format-2 store frame of `raw`, compressed when `packed` is given.
fn frame(raw: &[u8], packed: Option<&[u8]>) -> Vec<u8> {
    let header = StoreHeader {
        hash: BlockHash::of(raw),
        raw_len: raw.len() as u32,
        wire_len: packed.map_or(raw.len(), <[u8]>::len) as u32,
        zstd: packed.is_some(),
        delta: false,
    };
    let mut out = store_frame_header_v2(&header).to_vec();
    out.extend_from_slice(packed.unwrap_or(raw));
    out
}

fn store_v2(server: &Server, token: &str, body: &[u8]) -> support::Response {
    let headers = [("Holdall-Frame-Format", "2")];
    request_with(
        &server.addr,
        "POST",
        "/v1/store_batch",
        Some(token),
        &headers,
        body,
    )
}

/// Text that compresses well, of `len` bytes.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "sync ", "block ", "journal ", "commit ", "holdall ", "4 MiB\n",
    ];
    let mut out = Vec::with_capacity(len);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(words[(i % 6) as usize].as_bytes());
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 7;
    }
    out.truncate(len);
    out
}

/// Checks that `block`, stored as `packed`, is served compressed in format 2 and as itself
/// in format 1, then restarts the server.
fn check_served(
    server: Server,
    token: &str,
    ask: &serde_json::Value,
    block: &[u8],
    packed: &[u8],
    data: &std::path::Path,
) -> Server {
    let headers = [("Holdall-Frame-Format", "2")];
    let got = request_with(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(token),
        &headers,
        ask.to_string().as_bytes(),
    );
    assert_eq!(got.status, 200);
    let h = &got.body[..RETRIEVE_V2_HEADER_BYTES];
    assert_eq!((h[32], h[33]), (0, 1), "status ok, compressed");
    let len = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!((len(34), len(38)), (block.len(), packed.len()));
    assert!(
        got.body[RETRIEVE_V2_HEADER_BYTES..] == packed[..],
        "the bytes as they came"
    );
    let old = request(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(token),
        ask.to_string().as_bytes(),
    );
    let frame1 = decode_retrieve_frames(&old.body, 8 << 20)
        .next()
        .unwrap()
        .unwrap();
    assert!(frame1.data == block, "format 1: the block itself");
    server.terminate();
    Server::start(data, 2)
}

#[test]
fn compressed_blocks_are_expanded_checked_and_served_and_liars_keep_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), 2);
    let (token, ns) = create_user(&server, "zed");
    let account = request(&server.addr, "GET", "/v1/account", Some(&token), b"").json();
    assert_eq!(account["features"], json!(["zstd", "delta"]));

    let (a, b) = (text(1, 3 << 20), block(2, 70_000));
    let packed = zstd::bulk::compress(&a, 3).unwrap();
    assert!(packed.len() < a.len() / 2);
    let body = [frame(&a, Some(&packed)), frame(&b, None)].concat();
    let stored = store_v2(&server, &token, &body);
    assert_eq!(
        stored.status,
        200,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    assert_eq!(stored.json()["stored"].as_array().unwrap().len(), 2);
    let (status, v) = commit_file(&server, &token, ns, "notes.txt", &a);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");

    // The compressed block is kept as it came: format 2 answers carry its compressed bytes
    // (flag set, both lengths), format 1 and GET /v1/blocks the block itself; from the
    // cache (just stored) and, after a restart, from the log.
    let ask =
        json!({"items": [{"ns": ns, "path": "notes.txt", "hashes": [BlockHash::of(&a).to_hex()]}]});
    let server = check_served(server, &token, &ask, &a, &packed, &tmp.path().join("data"));
    let server = check_served(server, &token, &ask, &a, &packed, &tmp.path().join("data"));
    let c = text(3, 100_000);
    let c_packed = zstd::bulk::compress(&c, 3).unwrap();
    let bomb_raw = vec![0u8; 4 << 20];
    let bomb = zstd::bulk::compress(&bomb_raw, 3).unwrap();
    let mut bad_flags = frame(&c, None);
    bad_flags[32] = 0x82;
    let mut wrong_hash = frame(&c, Some(&c_packed));
    wrong_hash[0] ^= 1;
    let liars: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", frame(&c, Some(&[7u8; 100]))),
        (
            "short of its length",
            frame(&[c.clone(), vec![1]].concat(), Some(&c_packed)),
        ),
        ("past its length", frame(&c[..50_000], Some(&c_packed))),
        ("a bomb", frame(&bomb_raw[..1000], Some(&bomb))),
        ("another hash", wrong_hash),
        ("unknown flags", bad_flags),
    ];
    let fresh = block(9, 5000);
    for (what, liar) in liars {
        let body = [frame(&fresh, None), liar].concat();
        let refused = store_v2(&server, &token, &body);
        assert_eq!(
            refused.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&refused.body)
        );
        let (status, v) = commit_file(&server, &token, ns, "fresh.bin", &fresh);
        assert_eq!(
            (status, v["status"].as_str()),
            (200, Some("need_blocks")),
            "{what} kept a block"
        );
    }
    let headers = [("Holdall-Frame-Format", "3")];
    let r = request_with(
        &server.addr,
        "POST",
        "/v1/store_batch",
        Some(&token),
        &headers,
        &frame(&fresh, None),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_frame_format"))
    );
}

#[test]
fn a_server_without_compression_refuses_compressed_frames_and_sends_none() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), 1, &["--compression", "false"]);
    let (token, ns) = create_user(&server, "ann");
    let account = request(&server.addr, "GET", "/v1/account", Some(&token), b"").json();
    assert_eq!(account["features"], json!(["delta"]));
    let raw = text(3, 100_000);
    let packed = zstd::bulk::compress(&raw, 3).unwrap();
    let r = store_v2(&server, &token, &frame(&raw, Some(&packed)));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_frame"))
    );
    // Raw format-2 frames are taken (deltas need the format), and answered raw.
    assert_eq!(store_v2(&server, &token, &frame(&raw, None)).status, 200);
    commit_file(&server, &token, ns, "t.txt", &raw);
    let ask =
        json!({"items": [{"ns": ns, "path": "t.txt", "hashes": [BlockHash::of(&raw).to_hex()]}]});
    let got = request_with(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(&token),
        &[("Holdall-Frame-Format", "2")],
        ask.to_string().as_bytes(),
    );
    assert_eq!(got.body[33], 0, "not compressed");
    assert!(got.body[RETRIEVE_V2_HEADER_BYTES..] == raw[..]);
}

#[test]
fn a_server_without_compression_or_deltas_offers_none_and_refuses_format_two() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--compression", "false", "--deltas", "false"];
    let server = Server::start_with(&tmp.path().join("data"), 1, &flags);
    let (token, _) = create_user(&server, "ann");
    let account = request(&server.addr, "GET", "/v1/account", Some(&token), b"").json();
    assert_eq!(account["features"], json!([]));
    let raw = text(3, 5000);
    let r = store_v2(&server, &token, &frame(&raw, None));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_frame_format"))
    );
    let r = request_with(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(&token),
        &[("Holdall-Frame-Format", "2")],
        br#"{"items":[]}"#,
    );
    assert_eq!(r.status, 400);
    // Format 1 as ever.
    let mut body = Vec::new();
    holdall_proto::frame::encode_store_frame(&mut body, &BlockHash::of(&raw), &raw);
    let r = request(&server.addr, "POST", "/v1/store_batch", Some(&token), &body);
    assert_eq!(r.status, 200);
}
