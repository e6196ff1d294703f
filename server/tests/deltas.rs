//! rsync deltas on the real holdalld (feature `delta`): signatures by retrieve_batch's
//! access rule, store_delta frames rebuilt only from a base the caller may read and kept
//! only when they hash to their names, retrieve answers made deltas against a base of the
//! same path whose signature the reader sent, and a server started with `--deltas false`
//! offering none of it.

mod support;

use std::collections::BTreeMap;

use holdall_proto::api::{RetrieveBatchRequest, RetrieveItem};
use holdall_proto::delta::{apply, delta_of, parse_signature, signature_of, BaseRef};
use holdall_proto::frame::{
    decode_retrieve_frames, decode_retrieve_header_of, store_frame_header_v2, FrameFormat,
    RetrieveStatus, StoreHeader, RETRIEVE_V2_HEADER_BYTES,
};
use holdall_proto::BlockHash;
use serde_json::json;
use support::{block, commit_file, create_user, metric, post, request, request_with, Server};

const V2: [(&str, &str); 1] = [("Holdall-Frame-Format", "2")];

/// A store_delta frame claiming `hash` and `raw_len`, rebuilding from `base` with `delta`.
fn delta_frame(hash: BlockHash, raw_len: usize, base: BaseRef, delta: &[u8]) -> Vec<u8> {
    let mut payload = base.encode().to_vec();
    payload.extend_from_slice(delta);
    let header = StoreHeader {
        hash,
        raw_len: raw_len as u32,
        wire_len: payload.len() as u32,
        zstd: false,
        delta: true,
    };
    [store_frame_header_v2(&header).to_vec(), payload].concat()
}

fn store_v2(server: &Server, token: &str, body: &[u8]) -> support::Response {
    request_with(
        &server.addr,
        "POST",
        "/v1/store_batch",
        Some(token),
        &V2,
        body,
    )
}

/// The signatures `POST /v1/signatures` answers, per asked hash.
fn signatures(
    server: &Server,
    token: &str,
    ask: serde_json::Value,
) -> (u16, Vec<(RetrieveStatus, Vec<u8>)>) {
    let r = request(
        &server.addr,
        "POST",
        "/v1/signatures",
        Some(token),
        ask.to_string().as_bytes(),
    );
    if r.status != 200 {
        return (r.status, Vec::new());
    }
    let frames = decode_retrieve_frames(&r.body, 8 << 20)
        .map(|f| f.map(|f| (f.status, f.data.to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (200, frames)
}

/// `base` with 1 KiB overwritten at `at`.
fn edited(base: &[u8], at: usize, seed: u64) -> Vec<u8> {
    let mut out = base.to_vec();
    out[at..at + 1024].copy_from_slice(&block(seed, 1024));
    out
}

fn jid_of(v: &serde_json::Value) -> u64 {
    v["jid"].as_u64().unwrap_or_else(|| panic!("no jid in {v}"))
}

#[test]
fn signatures_follow_retrieve_access_and_store_deltas_rebuild_only_from_readable_bases() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), 2);
    let (token, ns) = create_user(&server, "ada");
    let (other, other_ns) = create_user(&server, "bob");
    let account = request(&server.addr, "GET", "/v1/account", Some(&token), b"").json();
    assert_eq!(account["features"], json!(["zstd", "delta"]));

    let base = block(1, 1 << 20);
    assert_eq!(support::store_block(&server, &token, &base).status, 200);
    let (_, v) = commit_file(&server, &token, ns, "f.bin", &base);
    let jid = jid_of(&v);
    let h = |b: &[u8]| BlockHash::of(b).to_hex();

    // Signatures: the row must list the hash; other users' namespaces are refused.
    let ask = json!({"ns": ns, "path": "f.bin", "hashes": [h(&base), h(b"nope")]});
    let (status, sigs) = signatures(&server, &token, ask.clone());
    assert_eq!(status, 200);
    assert_eq!(sigs[0], (RetrieveStatus::Ok, signature_of(&base)));
    assert_eq!(sigs[1], (RetrieveStatus::NotFound, Vec::new()));
    assert_eq!(signatures(&server, &other, ask).0, 403);
    let (_, sigs_jid) = signatures(
        &server,
        &token,
        json!({"ns": ns, "path": "f.bin", "jid": jid, "hashes": [h(&base)]}),
    );
    assert_eq!(sigs_jid[0].0, RetrieveStatus::Ok);
    let (_, elsewhere) = signatures(
        &server,
        &token,
        json!({"ns": ns, "path": "g.bin", "hashes": [h(&base)]}),
    );
    assert_eq!(elsewhere[0].0, RetrieveStatus::NotFound);
    let too_many: Vec<String> = (0..33).map(|i| h(&[i as u8])).collect();
    let (status, _) = signatures(
        &server,
        &token,
        json!({"ns": ns, "path": "f.bin", "hashes": too_many}),
    );
    assert_eq!(status, 413);

    // A good delta: stored, counted, committed without sending the block.
    let signature = parse_signature(signature_of(&base)).unwrap();
    let new = edited(&base, 300_000, 2);
    let delta = delta_of(&signature, &new, new.len()).unwrap();
    assert!(delta.len() < 8 << 10, "{} bytes", delta.len());
    let at_base = BaseRef {
        ns,
        jid,
        hash: BlockHash::of(&base),
    };
    let r = store_v2(
        &server,
        &token,
        &delta_frame(BlockHash::of(&new), new.len(), at_base, &delta),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["stored"], json!([h(&new)]));
    assert_eq!(metric(&server, "holdall_blocks_stored_delta_total"), 1);

    // Every refusal names the block and keeps nothing of the batch.
    let fresh = edited(&base, 0, 3);
    let fresh_delta = delta_of(&signature, &fresh, fresh.len()).unwrap();
    let fresh_hash = BlockHash::of(&fresh);
    let plain = block(40, 5000);
    let plain_v2 = {
        let header = StoreHeader {
            hash: BlockHash::of(&plain),
            raw_len: plain.len() as u32,
            wire_len: plain.len() as u32,
            zstd: false,
            delta: false,
        };
        [store_frame_header_v2(&header).to_vec(), plain.clone()].concat()
    };
    let not_listed = BaseRef {
        hash: BlockHash::of(&plain),
        ..at_base
    };
    let cases: Vec<(&str, &str, &str, Vec<u8>)> = vec![
        (
            "another hash",
            &token,
            "hash_mismatch",
            delta_frame(BlockHash::of(b"other"), fresh.len(), at_base, &fresh_delta),
        ),
        (
            "garbage",
            &token,
            "bad_delta",
            delta_frame(
                fresh_hash,
                fresh.len(),
                at_base,
                &[0x72, 0x73, 2, 0x36, 0x45, 9, 9],
            ),
        ),
        (
            "a longer block than it rebuilds",
            &token,
            "bad_delta",
            delta_frame(fresh_hash, fresh.len() + 1, at_base, &fresh_delta),
        ),
        (
            "a base the row does not list",
            &token,
            "bad_delta_base",
            delta_frame(fresh_hash, fresh.len(), not_listed, &fresh_delta),
        ),
        (
            "a row that is not there",
            &token,
            "bad_delta_base",
            delta_frame(
                fresh_hash,
                fresh.len(),
                BaseRef {
                    jid: jid + 100,
                    ..at_base
                },
                &fresh_delta,
            ),
        ),
        (
            "another user's base",
            &other,
            "bad_delta_base",
            delta_frame(fresh_hash, fresh.len(), at_base, &fresh_delta),
        ),
        (
            "another user's base, named in their own namespace",
            &other,
            "bad_delta_base",
            delta_frame(
                fresh_hash,
                fresh.len(),
                BaseRef {
                    ns: other_ns,
                    ..at_base
                },
                &fresh_delta,
            ),
        ),
    ];
    for (what, who, code, bad) in cases {
        let body = [plain_v2.clone(), bad].concat();
        let r = store_v2(&server, who, &body);
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some(code)),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&BlockHash::of(b"other").to_hex())
                || message.contains(&fresh_hash.to_hex()),
            "{what}: {message}"
        );
        let (_, v) = commit_file(
            &server,
            who,
            if who == token { ns } else { other_ns },
            "p.bin",
            &plain,
        );
        assert_eq!(v["status"], "need_blocks", "{what} kept a block");
    }
    let short = {
        let header = StoreHeader {
            hash: fresh_hash,
            raw_len: 100_000,
            wire_len: 10,
            zstd: false,
            delta: true,
        };
        [store_frame_header_v2(&header).to_vec(), vec![0; 10]].concat()
    };
    let r = store_v2(&server, &token, &short);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_delta"))
    );

    // Once the file moves on, its old row is no base.
    let (_, v) = post(
        &server,
        "/v1/commit",
        &token,
        json!({"ns": ns, "path": "f.bin", "kind": "file", "blocklist": [h(&new)],
               "size": new.len(), "mtime_ms": 0, "parent_jid": jid}),
    );
    assert_eq!(v["status"], "ok", "{v}");
    let r = store_v2(
        &server,
        &token,
        &delta_frame(fresh_hash, fresh.len(), at_base, &fresh_delta),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_delta_base"))
    );
}

#[test]
fn retrieve_answers_deltas_against_a_base_of_the_path_whose_signature_the_reader_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), 2);
    let (token, ns) = create_user(&server, "cy");
    let (other, other_ns) = create_user(&server, "di");
    let old = block(5, 3 << 20);
    let new = edited(&old, (1 << 20) - 512, 6);
    support::store_block(&server, &token, &old);
    let (_, v) = commit_file(&server, &token, ns, "big.bin", &old);
    support::store_block(&server, &token, &new);
    let (_, v) = post(
        &server,
        "/v1/commit",
        &token,
        json!({"ns": ns, "path": "big.bin", "kind": "file", "blocklist": [BlockHash::of(&new).to_hex()],
               "size": new.len(), "mtime_ms": 0, "parent_jid": jid_of(&v)}),
    );
    assert_eq!(v["status"], "ok", "{v}");
    // Another user's file: no base for this one's reads of big.bin.
    let unrelated = block(7, 3 << 20);
    support::store_block(&server, &other, &unrelated);
    let (_, v) = commit_file(&server, &other, other_ns, "theirs.bin", &unrelated);
    assert_eq!(v["status"], "ok", "{v}");
    let ask = |signature: Vec<u8>, base: Option<&[u8]>| {
        let hash = BlockHash::of(&new);
        let request = RetrieveBatchRequest {
            items: vec![RetrieveItem {
                ns,
                path: "big.bin".into(),
                jid: None,
                prefetch: false,
                hashes: vec![hash],
                signatures: BTreeMap::from([(hash, signature)]),
                bases: base.map(|b| (hash, BlockHash::of(b))).into_iter().collect(),
            }],
            wait_ms: None,
        };
        serde_json::to_vec(&request).unwrap()
    };
    let v2 = |body: &[u8]| {
        let r = request_with(
            &server.addr,
            "POST",
            "/v1/retrieve_batch",
            Some(&token),
            &V2,
            body,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let h = decode_retrieve_header_of(FrameFormat::V2, &r.body, 0, &mut 0, 8 << 20).unwrap();
        (h, r.body[RETRIEVE_V2_HEADER_BYTES..].to_vec())
    };
    let (header, delta) = v2(&ask(signature_of(&old), Some(&old)));
    assert!(header.delta && !header.zstd);
    assert_eq!(header.len as usize, new.len());
    assert!(header.wire_len < 8 << 10, "{} bytes", header.wire_len);
    assert!(apply(&old, &delta, new.len()).unwrap() == new);
    assert_eq!(metric(&server, "holdall_blocks_served_delta_total"), 1);

    // The whole block, never a delta: without a base, with a signature that is not the
    // base's, with a base (and its own signature) from another user's file.
    for (what, body) in [
        ("no base", ask(signature_of(&old), None)),
        (
            "another signature",
            ask(signature_of(&unrelated), Some(&old)),
        ),
        (
            "a base of no version",
            ask(signature_of(&unrelated), Some(&unrelated)),
        ),
    ] {
        let (header, bytes) = v2(&body);
        assert!(!header.delta && bytes == new, "{what}");
    }
    assert_eq!(metric(&server, "holdall_blocks_served_delta_total"), 1);
    // Format 1 ignores signatures.
    let r = request(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(&token),
        &ask(signature_of(&old), Some(&old)),
    );
    let frame = decode_retrieve_frames(&r.body, 8 << 20)
        .next()
        .unwrap()
        .unwrap();
    assert!(frame.data == new);
    // A signature this server will not index is bad input.
    let mut hostile = signature_of(&old);
    hostile[4..8].copy_from_slice(&0u32.to_be_bytes());
    let r = request_with(
        &server.addr,
        "POST",
        "/v1/retrieve_batch",
        Some(&token),
        &V2,
        &ask(hostile, Some(&old)),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_signature"))
    );
}

#[test]
fn a_server_without_deltas_offers_none_and_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), 1, &["--deltas", "false"]);
    let (token, ns) = create_user(&server, "dee");
    let account = request(&server.addr, "GET", "/v1/account", Some(&token), b"").json();
    assert_eq!(account["features"], json!(["zstd"]));
    let base = block(1, 200_000);
    support::store_block(&server, &token, &base);
    let (_, v) = commit_file(&server, &token, ns, "f.bin", &base);
    let ask = json!({"ns": ns, "path": "f.bin", "hashes": [BlockHash::of(&base).to_hex()]});
    assert_eq!(signatures(&server, &token, ask).0, 404);
    let new = edited(&base, 10, 2);
    let delta = delta_of(
        &parse_signature(signature_of(&base)).unwrap(),
        &new,
        new.len(),
    )
    .unwrap();
    let at_base = BaseRef {
        ns,
        jid: jid_of(&v),
        hash: BlockHash::of(&base),
    };
    let r = store_v2(
        &server,
        &token,
        &delta_frame(BlockHash::of(&new), new.len(), at_base, &delta),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_frame"))
    );
}
