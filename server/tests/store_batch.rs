//! `POST /v1/store_batch` through the real holdalld with several shards: blocks are verified
//! on their own shards before any is kept, stored durably, deduplicated, and bad batches are
//! refused whole.

mod support;

use holdall_proto::frame::store_frame_header;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;
use serde_json::json;
use support::{
    block, commit_file, create_user, fetch_block, frames, hex, metric, request, store_block,
    wait_for_metric, Server,
};

#[test]
fn stores_verifies_and_refuses_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 3);
    let token = server.admin_token();
    let store = |body: &[u8]| request(&server.addr, "POST", "/v1/store_batch", Some(&token), body);

    // Two full blocks fit one batch (frame headers are not counted); small ones spread over
    // the shards.
    let full = vec![block(1, BLOCK_BYTES_MAX), block(2, BLOCK_BYTES_MAX)];
    let r = store(&frames(&full));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"stored": hex(&full), "present": []}));
    let small: Vec<Vec<u8>> = (10..40).map(|i| block(i, 1000 + i as usize)).collect();
    let r = store(&frames(&small));
    assert_eq!(r.json(), json!({"stored": hex(&small), "present": []}));
    let mixed = vec![small[0].clone(), block(99, 5), small[1].clone()];
    let r = store(&frames(&mixed));
    assert_eq!(
        r.json(),
        json!({"stored": [BlockHash::of(&mixed[1]).to_hex()], "present": [hex(&small)[0], hex(&small)[1]]})
    );

    // One wrong hash: 400 naming it, and none of the batch is kept.
    let fresh: Vec<Vec<u8>> = (100..110).map(|i| block(i, 3000)).collect();
    let mut body = frames(&fresh);
    let bad = BlockHash::of(b"something else");
    body.extend_from_slice(&store_frame_header(&bad, 3));
    body.extend_from_slice(b"abc");
    let r = store(&body);
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"], "hash_mismatch");
    assert!(
        e["message"].as_str().unwrap().contains(&bad.to_hex()),
        "{e}"
    );
    let r = store(&frames(&fresh));
    assert_eq!(
        r.json(),
        json!({"stored": hex(&fresh), "present": []}),
        "nothing was kept before"
    );

    // Truncated frames, too much payload, and no token.
    let body = frames(&[block(200, 100)]);
    let r = store(&body[..body.len() - 1]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("bad_frame"))
    );
    let three = frames(&[
        block(300, BLOCK_BYTES_MAX),
        block(301, BLOCK_BYTES_MAX),
        block(302, 1),
    ]);
    let r = store(&three);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (413, Some("too_large"))
    );
    let r = request(&server.addr, "POST", "/v1/store_batch", None, &body);
    assert_eq!(r.status, 401);
    let r = request(&server.addr, "GET", "/v1/store_batch", Some(&token), b"");
    assert_eq!(r.status, 405);
    let r = store(&[]);
    assert_eq!(r.json(), json!({"stored": [], "present": []}));

    // What was acknowledged survives SIGKILL.
    drop(server);
    let server = Server::start(&data, 3);
    let token = server.admin_token();
    for batch in [&full[..], &small[..]] {
        let r = request(
            &server.addr,
            "POST",
            "/v1/store_batch",
            Some(&token),
            &frames(batch),
        );
        assert_eq!(r.json(), json!({"stored": [], "present": hex(batch)}));
    }
    assert!(server.terminate().success());
}

#[test]
fn blocks_just_stored_or_served_are_served_from_memory_and_after_a_restart_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2);
    let (token, ns) = create_user(&server, "ana");
    let large = block(7, BLOCK_BYTES_MAX);
    let small = block(8, 64 << 10);
    for (path, b) in [("large", &large), ("small", &small)] {
        assert_eq!(store_block(&server, &token, b).status, 200);
        let (status, v) = commit_file(&server, &token, ns, path, b);
        assert_eq!((status, v["status"].as_str()), (200, Some("ok")), "{v}");
    }
    assert_eq!(
        wait_for_metric(&server, "holdall_block_cache_blocks", 1),
        1,
        "only the large block is taken as it is stored"
    );
    assert_eq!(
        fetch_block(&server, &token, ns, "large", &large),
        Some(large.clone())
    );
    assert_eq!(
        fetch_block(&server, &token, ns, "small", &small),
        Some(small.clone())
    );
    assert_eq!(wait_for_metric(&server, "holdall_block_cache_blocks", 2), 2);
    assert_eq!(metric(&server, "holdall_block_cache_hits_total"), 1);
    assert_eq!(metric(&server, "holdall_block_cache_misses_total"), 1);
    let held = metric(&server, "holdall_block_cache_bytes");
    assert!(held >= (BLOCK_BYTES_MAX + (64 << 10)) as u64, "{held}");
    assert!(server.terminate().success());

    // The memory is gone with the process; the log serves the same bytes, once.
    let server = Server::start(&data, 2);
    for _ in 0..2 {
        assert_eq!(
            fetch_block(&server, &token, ns, "large", &large),
            Some(large.clone())
        );
    }
    assert_eq!(
        wait_for_metric(&server, "holdall_block_cache_hits_total", 1),
        1
    );
    assert_eq!(metric(&server, "holdall_block_cache_misses_total"), 1);
}

#[test]
fn the_cache_takes_nothing_when_off_and_only_served_blocks_without_recent_blocks() {
    // (flag, misses and hits of two reads of a just-stored block)
    for (off, misses, hits) in [
        (["--block-cache", "0"], 2, 0),
        (["--recent-blocks", "0"], 1, 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(&dir.path().join("data"), 1, &off);
        let (token, ns) = create_user(&server, "ana");
        let large = block(9, BLOCK_BYTES_MAX);
        assert_eq!(store_block(&server, &token, &large).status, 200);
        let (status, _) = commit_file(&server, &token, ns, "large", &large);
        assert_eq!(status, 200);
        for _ in 0..2 {
            assert_eq!(
                fetch_block(&server, &token, ns, "large", &large),
                Some(large.clone())
            );
        }
        let name = "holdall_block_cache_misses_total";
        assert_eq!(wait_for_metric(&server, name, misses), misses, "{off:?}");
        assert_eq!(
            metric(&server, "holdall_block_cache_hits_total"),
            hits,
            "{off:?}"
        );
        assert_eq!(
            metric(&server, "holdall_block_cache_blocks"),
            hits,
            "{off:?}"
        );
    }
}
