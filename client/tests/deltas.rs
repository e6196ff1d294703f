//! Changed blocks of synced files as rsync deltas between the real holdall and holdalld,
//! both ways, byte-exact: edits at the start, across a block boundary, at the end of a
//! file that also grew; and the fallbacks: small blocks, a server or client with deltas
//! off, and an edit racing another device's commit.

mod support;

use support::{bytes, tree, Client, Server};

const MIB: usize = 1 << 20;

fn write(c: &Client, rel: &str, data: &[u8]) {
    let p = c.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// `data` with 1 KiB of new bytes at `at`.
fn edit(data: &mut [u8], at: usize, seed: u64) {
    data[at..at + 1024].copy_from_slice(&bytes(seed, 1024));
}

#[test]
fn edited_blocks_go_up_and_come_down_as_deltas_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    // Three full blocks and a last one of 1.5 MiB; and a file too small for deltas.
    let mut big = bytes(1, 12 * MIB + 3 * MIB / 2);
    let mut small = bytes(2, 40_000);
    write(&a, "big.bin", &big);
    write(&a, "small.txt", &small);
    a.synced();
    b.synced();
    assert_eq!(tree(&b.dir), tree(&a.dir));

    // Block 0 at its start; blocks 1 and 2 across their boundary; block 3 at the end, grown.
    edit(&mut big, 0, 10);
    edit(&mut big, 8 * MIB - 512, 11);
    let end = big.len() - 1024;
    edit(&mut big, end, 12);
    big.extend_from_slice(&bytes(13, 100_000));
    edit(&mut small, 100, 14);
    write(&a, "big.bin", &big);
    write(&a, "small.txt", &small);
    let before = server.metric("holdall_http_bytes_in_total");
    let up = a.synced();
    let sent = server.metric("holdall_http_bytes_in_total") - before;
    assert_eq!(up.delta_blocks, 4, "{}", up.stderr);
    assert_eq!(server.metric("holdall_blocks_stored_delta_total"), 4.0);
    // The deltas (about two signature pieces per edit, the growth whole) and the small file
    // whole, against 16 MiB of changed blocks.
    assert!(sent < 300_000.0, "{sent} bytes went up");

    let before = server.metric("holdall_http_bytes_out_total");
    let down = b.synced();
    let served = server.metric("holdall_http_bytes_out_total") - before;
    assert_eq!(tree(&b.dir), tree(&a.dir), "byte-exact");
    assert_eq!(down.delta_blocks, 4, "{}", down.stderr);
    assert_eq!(server.metric("holdall_blocks_served_delta_total"), 4.0);
    assert!(served < 300_000.0, "{served} bytes came down");
}

#[test]
fn deltas_off_on_either_side_sync_whole_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--deltas", "false"]);
    let token = server.add_user("bo");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let mut big = bytes(3, 5 * MIB);
    write(&a, "big.bin", &big);
    a.synced();
    b.synced();
    edit(&mut big, MIB, 4);
    write(&a, "big.bin", &big);
    let up = a.synced();
    assert_eq!((up.delta_blocks, up.up_bytes), (0, 4 * MIB as u64));
    let down = b.synced();
    assert_eq!(down.delta_blocks, 0);
    assert_eq!(tree(&b.dir), tree(&a.dir));

    // A server with deltas, a client with them off.
    let tmp2 = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp2.path().join("data"));
    let token = server.add_user("cy");
    let c = Client::new(&server, &token, &tmp2.path().join("c"));
    write(&c, "big.bin", &big);
    c.synced();
    edit(&mut big, 2 * MIB, 5);
    write(&c, "big.bin", &big);
    let up = c.sync_with(&["--delta", "off"]);
    assert!(up.ok, "{}", up.stderr);
    assert_eq!((up.delta_blocks, up.up_bytes), (0, 4 * MIB as u64));
    assert_eq!(server.metric("holdall_blocks_stored_delta_total"), 0.0);
}

#[test]
fn an_edit_racing_another_devices_commit_keeps_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("di");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let base = bytes(6, 6 * MIB);
    write(&a, "doc.bin", &base);
    a.synced();
    b.synced();
    // b commits first: a's edit of the row b replaced ends as a conflicted copy, sent whole.
    let mut theirs = base.clone();
    edit(&mut theirs, 10, 7);
    write(&b, "doc.bin", &theirs);
    b.synced();
    let mut mine = base.clone();
    edit(&mut mine, 5 * MIB, 8);
    write(&a, "doc.bin", &mine);
    let up = a.sync();
    assert!(up.ok, "{}", up.stderr);
    a.synced();
    b.synced();
    assert_eq!(tree(&a.dir), tree(&b.dir));
    let kept: Vec<Vec<u8>> = std::fs::read_dir(&b.dir)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .collect();
    assert!(
        kept.contains(&mine) && kept.contains(&theirs),
        "both versions kept"
    );
}

#[test]
fn a_rewritten_file_goes_whole_after_a_probe_of_its_first_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ed");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "video.bin", &bytes(20, 40 * MIB));
    a.synced();
    b.synced();
    let rewritten = bytes(21, 40 * MIB);
    write(&a, "video.bin", &rewritten);
    let up = a.synced();
    assert_eq!((up.delta_blocks, up.up_bytes), (0, 40 * MIB as u64));
    // Signatures for the probe's 4 blocks only, not the file's 10.
    assert_eq!(server.metric("holdall_signatures_served_total"), 4.0);
    let down = b.synced();
    assert_eq!(down.delta_blocks, 0);
    assert_eq!(tree(&b.dir), tree(&a.dir));
    assert_eq!(server.metric("holdall_blocks_served_delta_total"), 0.0);
}
