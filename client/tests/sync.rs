//! The real holdall against the real holdalld: two or three clients on temporary folders.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{bytes, tree, Client, Server};

const MIB: usize = 1 << 20;

fn write(c: &Client, rel: &str, data: &[u8]) {
    let p = c.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[test]
fn files_folders_edits_deletions_and_moves_reach_the_other_client() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));

    write(&a, "empty", b"");
    write(&a, "sizes/block-1", &bytes(1, 4 * MIB - 1));
    write(&a, "sizes/block", &bytes(2, 4 * MIB));
    write(&a, "sizes/block+1", &bytes(3, 4 * MIB + 1));
    let deep: String = (0..20).map(|i| format!("d{i}/")).collect();
    write(&a, &format!("{deep}leaf.txt"), b"deep");
    write(&a, "名前/ファイル.txt", "unicode ✓".as_bytes());
    write(&a, "émigré/naïve café.md", b"accents");
    std::fs::create_dir_all(a.path("empty-folder/inner")).unwrap();
    write(&a, ".holdallignore", b"*.tmp\nbuild/\n");
    write(&a, "scratch.tmp", b"ignored");
    write(&a, "build/out.o", b"ignored");
    std::os::unix::fs::symlink("empty", a.path("link")).unwrap();

    let up = a.synced();
    assert!(up.stderr.contains("symbolic link"), "{}", up.stderr);
    assert_eq!(
        up.up_bytes as usize,
        12 * MIB + 4 + "unicode ✓".len() + 7 + 13
    );
    b.synced();
    let mut expected = tree(&a.dir);
    for ignored in ["scratch.tmp", "build", "build/out.o", "link"] {
        expected.remove(ignored);
    }
    assert_eq!(tree(&b.dir), expected);
    // Content hashes agree with `holdall hash`.
    let out = b
        .command(&["hash"])
        .arg(b.path("sizes/block"))
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let a_out = a
        .command(&["hash"])
        .arg(a.path("sizes/block"))
        .output()
        .unwrap();
    assert_eq!(
        line.split_whitespace().next(),
        String::from_utf8(a_out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
    );

    // Edits, deletions (a file and a whole folder) and moves, from b this time.
    write(&b, "sizes/block+1", &bytes(4, 4 * MIB + 1));
    std::fs::remove_file(b.path("empty")).unwrap();
    std::fs::remove_dir_all(b.path("d0")).unwrap();
    std::fs::rename(b.path("名前"), b.path("moved/名前")).unwrap_or_else(|_| {
        std::fs::create_dir_all(b.path("moved")).unwrap();
        std::fs::rename(b.path("名前"), b.path("moved/名前")).unwrap();
    });
    std::fs::rename(b.path("sizes/block"), b.path("émigré/block")).unwrap();
    b.synced();
    let down = a.synced();
    assert_eq!(
        tree(&a.dir).len(),
        tree(&b.dir).len() + 3,
        "a keeps its ignored files"
    );
    let mut a_tree = tree(&a.dir);
    for ignored in ["scratch.tmp", "build", "build/out.o"] {
        a_tree.remove(ignored);
    }
    a_tree.remove("link");
    assert_eq!(a_tree, tree(&b.dir));
    // Only the edited file's blocks travelled: the moved one was rebuilt from local blocks.
    assert!(down.down_bytes as usize <= 4 * MIB + 1, "{}", down.stderr);
    assert!(!a.path("d0").exists() && a.path("moved/名前/ファイル.txt").exists());

    // A second client on the same folder is refused while one runs.
    let mut running = a
        .command(&["sync"])
        .arg(&a.dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let second = a.sync();
    assert!(
        !second.ok && second.stderr.contains("another holdall"),
        "{}",
        second.stderr
    );
    // The running client picks up a change by itself (inotify + longpoll).
    write(&b, "live.txt", b"while a runs");
    b.synced();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.path("live.txt").exists() {
        assert!(
            Instant::now() < deadline,
            "the running client never fetched live.txt"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    write(&a, "from-running.txt", b"typed while a runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        b.synced();
        if b.path("from-running.txt").exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running client never uploaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    running.kill().unwrap();
    let _ = running.wait();
}

#[test]
fn a_renamed_large_file_is_not_downloaded_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "videos/raw.bin", &bytes(9, 100 * MIB));
    a.synced();
    let first = b.synced();
    assert_eq!(first.down_bytes as usize, 100 * MIB);
    std::fs::create_dir_all(a.path("archive")).unwrap();
    std::fs::rename(a.path("videos/raw.bin"), a.path("archive/kept.bin")).unwrap();
    let up = a.synced();
    assert_eq!(up.up_bytes, 0, "a move uploads nothing: {}", up.stderr);
    let second = b.synced();
    assert_eq!(
        second.down_bytes, 0,
        "a move downloads nothing: {}",
        second.stderr
    );
    assert_eq!(tree(&a.dir), tree(&b.dir));
}

/// A large file's blocks go up while it is still being hashed (early stores), and the
/// commit claims them: every block goes up once, all of them early.
#[test]
fn a_large_file_goes_up_while_it_is_hashed_and_only_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let data = bytes(31, 40 * MIB + 5);
    write(&a, "big.bin", &data);
    let out = a
        .command(&["sync", "--once"])
        .env("HOLDALL_LOG", "warn,holdall::transfer::upload=debug")
        .arg(&a.dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let early: u64 = log
        .split_once("early_blocks=")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no early stores logged: {log}"));
    assert_eq!(early, 11, "every block of the file went up early: {log}");
    assert!(
        log.contains(&format!("{} bytes up", data.len())),
        "each block once: {log}"
    );
    b.synced();
    assert!(std::fs::read(b.path("big.bin")).unwrap() == data);
}

/// A file that keeps changing under a running client goes up once, when it holds still: it
/// is not read while it changes (a second's quiet first), and blocks early stores sent in
/// an earlier round are not sent again.
#[test]
fn blocks_of_a_file_still_changing_go_up_once_across_rounds() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    // Nine full blocks that never change and a 7-byte last block rewritten every 5 ms.
    let mut data = bytes(41, 9 * 4 * MIB + 7);
    write(&a, "changing.bin", &data);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(a.path("changing.bin"))
        .unwrap();
    let tail = (data.len() - 7) as u64;
    let rewrite = |n: u8| file.write_all_at(&[n; 7], tail).unwrap();
    let before = server.metric("holdall_http_bytes_in_total");
    let running = a.spawn_sync(&[]);
    let until = Instant::now() + Duration::from_secs(2);
    let mut n = 0u8;
    while Instant::now() < until {
        n = n.wrapping_add(1);
        rewrite(n);
        std::thread::sleep(Duration::from_millis(5));
    }
    data[tail as usize..].copy_from_slice(&[n; 7]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.synced();
        if std::fs::read(b.path("changing.bin")).is_ok_and(|got| got == data) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never got the file: {}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = server.metric("holdall_http_bytes_in_total") - before;
    // Once, plus a block or two whose batch the server refused because the changing last
    // block rode with it; without the memory across rounds it was about 38 times the file.
    assert!(
        sent < 1.5 * data.len() as f64,
        "{sent} bytes reached the server for a {} byte file: {}",
        data.len(),
        running.log()
    );
}

/// A file written in pieces under a running client (a copy, a download, an export) is
/// committed once, when it is whole: other devices never see its partial versions.
#[test]
fn a_file_written_in_pieces_under_a_running_client_is_committed_once() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let running = a.spawn_sync(&[]);
    assert!(
        support::wait_until(Duration::from_secs(30), || running
            .log()
            .contains("syncing;")),
        "{}",
        running.log()
    );
    let data = bytes(43, 10 * MIB);
    let mut file = std::fs::File::create(a.path("export.bin")).unwrap();
    for chunk in data.chunks(MIB) {
        file.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(file);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running.log().contains("committed=1") {
        assert!(
            Instant::now() < deadline,
            "never committed: {}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.synced();
    assert!(std::fs::read(b.path("export.bin")).unwrap() == data);
    let commits = running.log().matches("committed=1").count();
    assert_eq!(
        commits,
        1,
        "one commit, of the whole file: {}",
        running.log()
    );
}

#[test]
fn an_edit_that_keeps_size_and_mtime_is_still_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "notes.txt", b"version one");
    // Older than the racy window, so A trusts its cached hash while the stat holds.
    std::thread::sleep(Duration::from_millis(200));
    a.synced();
    b.synced();
    assert_eq!(std::fs::read(b.path("notes.txt")).unwrap(), b"version one");
    // B cached the downloaded file under the stat its rename left: nothing pending.
    let status = b.command(&["status"]).arg(&b.dir).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("pending:      0 new, 0 changed, 0 deleted"),
        "{status}"
    );
    // The same size, and the old mtime put back, as `rsync -t --inplace` would.
    let mtime = std::fs::metadata(a.path("notes.txt"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::write(a.path("notes.txt"), b"version two").unwrap();
    std::fs::File::options()
        .write(true)
        .open(a.path("notes.txt"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let up = a.synced();
    assert_eq!(up.up_bytes, 11, "the edit is uploaded: {}", up.stderr);
    b.synced();
    assert_eq!(std::fs::read(b.path("notes.txt")).unwrap(), b"version two");
}

#[test]
fn conflicts_keep_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "notes/plan.txt", b"base");
    write(&a, "gone-there.txt", b"base");
    write(&a, "gone-here.txt", b"base");
    a.synced();
    b.synced();

    write(&a, "notes/plan.txt", b"a's version");
    write(&b, "notes/plan.txt", b"b's version");
    // An edit beats a deletion, on either side.
    write(&a, "gone-there.txt", b"a edited it");
    std::fs::remove_file(b.path("gone-there.txt")).unwrap();
    std::fs::remove_file(a.path("gone-here.txt")).unwrap();
    write(&b, "gone-here.txt", b"b edited it");
    a.synced();
    b.synced();
    a.synced();
    let ta = tree(&a.dir);
    assert_eq!(ta, tree(&b.dir));
    let notes: Vec<&String> = ta.keys().filter(|p| p.starts_with("notes/")).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    let copy = notes
        .iter()
        .find(|p| p.contains("(conflicted copy "))
        .unwrap();
    assert!(copy.ends_with(").txt"), "{copy}");
    assert_eq!(std::fs::read(a.path(copy)).unwrap(), b"b's version");
    assert_eq!(
        std::fs::read(a.path("notes/plan.txt")).unwrap(),
        b"a's version"
    );
    assert_eq!(
        std::fs::read(b.path("gone-there.txt")).unwrap(),
        b"a edited it"
    );
    assert_eq!(
        std::fs::read(a.path("gone-here.txt")).unwrap(),
        b"b edited it"
    );
}

#[test]
fn lost_state_is_never_taken_for_deletions() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "one.txt", b"1");
    write(&a, "two/three.bin", &bytes(3, 5 * MIB));
    a.synced();
    b.synced();
    std::fs::remove_dir_all(b.path(".holdall")).unwrap();
    write(&b, "new-after-loss.txt", b"new");
    let again = b.synced();
    assert_eq!(
        again.down_bytes, 0,
        "identical files are adopted: {}",
        again.stderr
    );
    a.synced();
    assert!(a.path("one.txt").exists() && a.path("two/three.bin").exists());
    assert_eq!(std::fs::read(a.path("new-after-loss.txt")).unwrap(), b"new");
    assert_eq!(tree(&a.dir), tree(&b.dir));
}

#[test]
fn a_shared_folder_syncs_between_two_users() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let ann_token = server.add_user("ann");
    let bob_token = server.add_user("bob");
    let ann = Client::new(&server, &ann_token, &tmp.path().join("ann"));
    let ann2 = Client::new(&server, &ann_token, &tmp.path().join("ann-laptop"));
    let bob = Client::new(&server, &bob_token, &tmp.path().join("bob"));
    write(&ann, "team/spec.md", b"spec");
    write(&ann, "team/data/big.bin", &bytes(5, 6 * MIB));
    write(&ann, "private.txt", b"mine");
    ann.synced();
    ann2.synced();

    let out = ann
        .command(&["share"])
        .arg(ann.path("team"))
        .args(["--with", "bob", "--as", "from-ann"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = ann.synced();
    assert_eq!(
        again.up_bytes + again.down_bytes,
        0,
        "sharing moves no bytes: {}",
        again.stderr
    );
    let other_device = ann2.synced();
    assert_eq!(other_device.down_bytes, 0, "{}", other_device.stderr);
    bob.synced();
    assert_eq!(
        std::fs::read(bob.path("from-ann/spec.md")).unwrap(),
        b"spec"
    );
    assert_eq!(
        std::fs::read(bob.path("from-ann/data/big.bin")).unwrap(),
        bytes(5, 6 * MIB)
    );
    assert!(
        !bob.path("private.txt").exists(),
        "only the shared folder is shared"
    );

    // A move from the root namespace into the shared one uploads nothing.
    std::fs::rename(ann.path("private.txt"), ann.path("team/now-shared.txt")).unwrap();
    let moved = ann.synced();
    assert_eq!(moved.up_bytes, 0, "{}", moved.stderr);

    write(&bob, "from-ann/reply.md", b"bob's reply");
    bob.synced();
    ann.synced();
    ann2.synced();
    assert_eq!(
        std::fs::read(ann.path("team/reply.md")).unwrap(),
        b"bob's reply"
    );
    assert_eq!(tree(&ann.dir), tree(&ann2.dir));
    assert_eq!(
        std::fs::read(bob.path("from-ann/now-shared.txt")).unwrap(),
        b"mine"
    );
}

#[test]
fn a_bad_token_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let c = Client::new(&server, "not-a-token", &tmp.path().join("c"));
    let s = c.sync();
    assert!(!s.ok);
    assert!(
        s.stderr.contains("refused the token") && s.stderr.contains("HOLDALL_TOKEN"),
        "{}",
        s.stderr
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client {
        dir: tmp.path().join("c"),
        url: format!("http://127.0.0.1:{port}"),
        token: "t".into(),
        ca: None,
    };
    std::fs::create_dir_all(&c.dir).unwrap();
    let s = c.sync();
    assert!(!s.ok);
    assert!(
        s.stderr.contains(&format!(
            "cannot reach the server at http://127.0.0.1:{port}"
        )),
        "{}",
        s.stderr
    );
}

/// Names the server's path rules refuse (a backslash, bytes that are not UTF-8) are
/// skipped with a warning naming them; everything else syncs and the round succeeds.
#[test]
fn names_the_server_would_refuse_are_skipped_with_a_warning() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "fine.txt", b"fine");
    write(&a, "back\\slash.txt", b"refused");
    let not_utf8 = std::ffi::OsStr::from_bytes(b"bad\xff.txt");
    std::fs::write(a.dir.join(not_utf8), b"refused").unwrap();
    let up = a.synced();
    assert!(
        up.stderr
            .contains("skipping a path the server would refuse")
            && up.stderr.contains("back\\slash.txt")
            && up.stderr.contains("skipping a name that is not UTF-8"),
        "{}",
        up.stderr
    );
    b.synced();
    let names: Vec<String> = tree(&b.dir).into_keys().collect();
    assert_eq!(names, ["fine.txt"]);
}

#[test]
fn a_client_killed_mid_download_resumes_without_fetching_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "large.bin", &bytes(7, 48 * MIB));
    a.synced();

    // A slow download (8 MiB/s), killed half way.
    let mut slow = b
        .command(&["sync", "--once", "--down-limit", "8M", "--workers", "1"])
        .arg(&b.dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    slow.kill().unwrap();
    let _ = slow.wait();
    assert!(
        !b.path("large.bin").exists(),
        "never a partial file in place"
    );

    let resumed = b.synced();
    assert!(
        (resumed.down_bytes as usize) < 40 * MIB,
        "blocks fetched before the kill are reused: {}",
        resumed.stderr
    );
    assert_eq!(tree(&a.dir), tree(&b.dir));
    let leftovers: Vec<_> = std::fs::read_dir(&b.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".holdall-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files are cleaned up");
}

#[test]
fn https_served_by_holdalld_with_a_private_ca() {
    use holdall_testkit::tls::{TestCa, Validity};
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let pair = ca.issue(tmp.path(), "server", "127.0.0.1", Validity::Current);
    let server = Server::start_tls(&tmp.path().join("data"), &pair, &ca.pem);
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    write(&a, "through-tls.bin", &bytes(11, 5 * MIB));
    write(&a, "small.txt", b"small");

    // Without the private CA, the server's certificate is refused, clearly.
    let untrusting = Client {
        ca: None,
        ..Client::new(&server, &token, &a.dir)
    };
    let refused = untrusting.sync();
    assert!(!refused.ok, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&server.url) && refused.stderr.contains("--ca"),
        "{}",
        refused.stderr
    );

    for c in [&a, &b] {
        let s = c.synced();
        // Blocks went by the direct path over TLS: it never had to give up.
        assert!(!s.stderr.contains("direct transfer path"), "{}", s.stderr);
    }
    assert_eq!(tree(&a.dir), tree(&b.dir));
    assert_eq!(
        std::fs::read(b.path("through-tls.bin")).unwrap(),
        bytes(11, 5 * MIB)
    );
}

#[test]
fn expired_and_wrong_host_certificates_are_refused_clearly() {
    use holdall_testkit::tls::{TestCa, Validity};
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let cases = [
        ("expired", "127.0.0.1", Validity::Expired, "expired"),
        (
            "elsewhere",
            "sync.example",
            Validity::Current,
            "not valid for",
        ),
    ];
    for (name, host, validity, says) in cases {
        let pair = ca.issue(tmp.path(), name, host, validity);
        let server = Server::start_tls(&tmp.path().join(name), &pair, &ca.pem);
        // The admin's token, read from the data folder: no request has to succeed first.
        let admin = std::fs::read_to_string(server.data.join("admin.token")).unwrap();
        let c = Client::new(
            &server,
            admin.trim(),
            &tmp.path().join(format!("{name}-dir")),
        );
        let refused = c.sync();
        assert!(!refused.ok, "{name}: {}", refused.stderr);
        let lower = refused.stderr.to_lowercase();
        assert!(
            refused.stderr.contains(&server.url)
                && lower.contains("certificate")
                && lower.contains(says),
            "{name}: {}",
            refused.stderr
        );
    }
}

#[test]
fn a_file_rewritten_while_it_uploads_is_never_committed_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let (old, new) = (bytes(21, 24 * MIB), bytes(22, 24 * MIB));
    write(&a, "big.bin", &old);
    // A slow upload (8 MiB/s, 3 s); the file is rewritten a second into it.
    let uploading = a
        .command(&["sync", "--once", "--up-limit", "8M"])
        .arg(&a.dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(a.path("big.bin"), &new).unwrap();
    let out = uploading.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    b.synced();
    assert!(
        std::fs::read(b.path("big.bin")).unwrap() == new,
        "B holds the rewritten file, not a mix: {log}"
    );
    let again = a.synced();
    assert!(again.stderr.contains("0 committed"), "{}", again.stderr);
}

/// A small tmpfs for a client's folder, unmounted on drop; None where mounting is refused.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, bytes: usize) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_other_files_still_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let Some(disk) = SmallDisk::mount(&tmp.path().join("b"), 12 * MIB) else {
        eprintln!("full disk: cannot mount a tmpfs here (not root?); nothing checked");
        return;
    };
    let b = Client::new(&server, &token, &disk.0);
    write(&a, "small.txt", b"fits");
    write(&a, "too-big.bin", &bytes(31, 16 * MIB));
    a.synced();

    let full = b.sync();
    assert!(!full.ok, "{}", full.stderr);
    assert!(
        full.stderr.contains("not in sync: 1 path(s) failed"),
        "{}",
        full.stderr
    );
    assert!(
        full.stderr.contains("too-big.bin") && full.stderr.contains("No space left"),
        "the error names the file and the cause: {}",
        full.stderr
    );
    assert_eq!(std::fs::read(b.path("small.txt")).unwrap(), b"fits");
    assert!(
        !b.path("too-big.bin").exists(),
        "never a partial file in place"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&b.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".holdall-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files are removed");

    // Room again: the file arrives.
    std::fs::remove_file(b.path("small.txt")).unwrap();
    std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk.0)
        .status()
        .unwrap();
    b.synced();
    assert_eq!(
        std::fs::read(b.path("too-big.bin")).unwrap(),
        bytes(31, 16 * MIB)
    );
}
