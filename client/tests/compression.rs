//! Blocks on the wire compressed (frame format 2) between the real holdall and holdalld, and
//! every mix of old and new: a client speaking format 1 to the new server, a new client to a
//! server that offers no compression.

mod support;

use support::{bytes, tree, Client, Server};

const MIB: usize = 1 << 20;

fn write(c: &Client, rel: &str, data: &[u8]) {
    let p = c.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Log lines and source files: what compresses, a few times over.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(len + 100);
    let mut i = seed;
    while t.len() < len {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let line = format!(
            "2026-03-{:02} 10:{:02}:{:02} INFO request {} for /api/items/{} took {} ms\n",
            i % 28 + 1,
            i >> 8 & 0x3f,
            i >> 16 & 0x3f,
            i >> 24 & 0xffff,
            i >> 40 & 0xfff,
            i >> 52
        );
        t.extend_from_slice(line.as_bytes());
    }
    t.truncate(len);
    t
}

/// Writes a tree of text (a large log, small sources) and one file of noise; its bytes.
fn write_tree(c: &Client, seed: u64) -> (usize, usize) {
    let log = text(seed, 9 * MIB + 12345);
    write(c, "logs/app.log", &log);
    let mut text_bytes = log.len();
    for i in 0..40 {
        let src = text(seed + i, 3000 + i as usize * 97);
        write(c, &format!("src/mod{i}.rs"), &src);
        text_bytes += src.len();
    }
    let noise = bytes(seed, 3 * MIB + 7);
    write(c, "media/clip.bin", &noise);
    (text_bytes, noise.len())
}

#[test]
fn compressible_blocks_go_up_compressed_and_a_format_one_client_still_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let old = Client::new(&server, &token, &tmp.path().join("old"));
    let (text_bytes, noise_bytes) = write_tree(&a, 1);

    let before = server.metric("holdall_http_bytes_in_total");
    let up = a.synced();
    let sent = server.metric("holdall_http_bytes_in_total") - before;
    assert_eq!(
        up.up_bytes as usize,
        text_bytes + noise_bytes,
        "block bytes"
    );
    // The noise goes raw, the text at a fraction of its size.
    assert!(
        sent < (noise_bytes + text_bytes / 2) as f64,
        "{sent} bytes on the wire for {text_bytes} of text and {noise_bytes} of noise"
    );
    assert!(sent > noise_bytes as f64, "{sent}: the noise went raw");
    // The log's 3 blocks and the 40 sources went compressed; the noise's one did not.
    assert_eq!(
        server.metric("holdall_blocks_stored_compressed_total"),
        43.0
    );

    // A client speaking only format 1 (as clients before compression do) downloads it all,
    // then uploads an edit the new client takes.
    let before = server.metric("holdall_http_bytes_out_total");
    let down = old.sync_with(&["--compress", "off", "--delta", "off"]);
    assert!(down.ok, "{}", down.stderr);
    assert_eq!(tree(&old.dir), tree(&a.dir));
    let served = server.metric("holdall_http_bytes_out_total") - before;
    assert!(
        served >= (text_bytes + noise_bytes) as f64,
        "format 1 gets blocks expanded: {served}"
    );
    // A new client gets the blocks as they are kept, compressed.
    let new = Client::new(&server, &token, &tmp.path().join("new"));
    let before = server.metric("holdall_http_bytes_out_total");
    new.synced();
    let served = server.metric("holdall_http_bytes_out_total") - before;
    assert_eq!(tree(&new.dir), tree(&a.dir));
    assert!(server.metric("holdall_blocks_served_compressed_total") >= 43.0);
    assert!(
        served < (noise_bytes + text_bytes / 2) as f64,
        "{served} bytes served for {text_bytes} of text and {noise_bytes} of noise"
    );
    write(&old, "logs/app.log", &text(9, 2 * MIB));
    let before = server.metric("holdall_http_bytes_in_total");
    let edit = old.sync_with(&["--compress", "off", "--delta", "off"]);
    assert!(edit.ok, "{}", edit.stderr);
    let sent = server.metric("holdall_http_bytes_in_total") - before;
    assert!(
        sent >= (2 * MIB) as f64,
        "format 1 sends blocks raw: {sent}"
    );
    a.synced();
    assert_eq!(tree(&a.dir), tree(&old.dir));
}

#[test]
fn a_new_client_speaks_format_one_to_a_server_without_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--compression", "false"]);
    let token = server.add_user("bob");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let (text_bytes, noise_bytes) = write_tree(&a, 2);
    let before = server.metric("holdall_http_bytes_in_total");
    a.synced();
    let sent = server.metric("holdall_http_bytes_in_total") - before;
    assert!(
        sent >= (text_bytes + noise_bytes) as f64,
        "nothing compressed for a server that does not offer it: {sent}"
    );
    b.synced();
    assert_eq!(tree(&b.dir), tree(&a.dir));
}
