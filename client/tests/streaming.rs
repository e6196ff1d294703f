//! Streaming sync end to end: real holdalld, one uploading client and one continuous
//! downloading client of the same user (two devices), with bandwidth caps so that an upload
//! takes seconds.

mod support;

use std::time::{Duration, Instant};

use support::{bytes, tree, wait_until, Client, Server};

const MIB: usize = 1 << 20;

/// These tests time transfers against bandwidth caps: one at a time, so that they do not
/// compete for this machine's cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a continuous client and waits until its first round has run.
fn start_downloader(c: &Client, args: &[&str]) -> support::Running {
    let running = c.spawn_sync(args);
    assert!(
        wait_until(Duration::from_secs(30), || running
            .log()
            .contains("syncing;")),
        "the client did not start:\n{}",
        running.log()
    );
    running
}

/// Starts `holdall sync DIR --once --up-limit CAP` on `c` in the background.
fn spawn_upload(c: &Client, cap: &str) -> std::process::Child {
    c.command(&["sync", "--once", "--up-limit", cap])
        .arg(&c.dir)
        .spawn()
        .unwrap()
}

/// Writes `name` (`len` bytes from `seed`) on `a`, runs `a`'s upload with `args`, and returns
/// how long after the upload ended `b` held the file.
fn upload_and_time(
    a: &Client,
    b: &Client,
    name: &str,
    seed: u64,
    len: usize,
    args: &[&str],
) -> Duration {
    let content = bytes(seed, len);
    std::fs::write(a.path(name), &content).unwrap();
    let s = a.sync_with(args);
    assert!(s.ok, "{}", s.stderr);
    let uploaded = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read(b.path(name))
            .is_ok_and(|got| got == content)),
        "{name} never arrived"
    );
    uploaded.elapsed()
}

#[test]
fn a_downloader_holds_a_streamed_file_one_block_after_the_upload() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("laptop"));
    let b = Client::new(&server, &token, &tmp.path().join("desktop"));
    let caps = ["--up-limit", "8M"];

    // Streaming: the desktop fetches the blocks while the laptop uploads them.
    let desktop = start_downloader(&b, &["--down-limit", "8M"]);
    let streamed = upload_and_time(&a, &b, "big.bin", 1, 48 * MIB, &caps);
    // The uploader sends two blocks per store_batch (its batch_bytes_max), so the last two
    // become fetchable together just before the commit: at most those two are fetched after.
    let blocks = 12;
    assert!(
        wait_until(Duration::from_secs(10), || b.streaming(" used to build files") >= blocks - 2),
        "the file was built from prefetched blocks (at most one batch fetched after the commit):\n{}",
        desktop.log()
    );
    assert_eq!(
        b.streaming(" bytes"),
        0,
        "the cache is emptied once the file is built"
    );

    // Small files and edits of existing files take the normal path.
    let before = b.streaming(" blocks prefetched");
    std::fs::write(a.path("small.txt"), b"hello").unwrap();
    let mut edited = std::fs::read(a.path("big.bin")).unwrap();
    edited.extend_from_slice(&bytes(2, 9 * MIB));
    std::fs::write(a.path("big.bin"), &edited).unwrap();
    a.synced();
    assert!(wait_until(Duration::from_secs(60), || tree(&a.dir) == tree(&b.dir)));
    assert_eq!(
        b.streaming(" blocks prefetched"),
        before,
        "nothing was prefetched"
    );
    drop(desktop);

    // Without streaming the download starts only once the upload has ended.
    let c = Client::new(&server, &token, &tmp.path().join("tablet"));
    let tablet = start_downloader(&c, &["--down-limit", "8M", "--no-streaming"]);
    assert!(wait_until(Duration::from_secs(60), || tree(&a.dir) == tree(&c.dir)));
    let plain = upload_and_time(&a, &c, "big2.bin", 3, 48 * MIB, &caps);
    eprintln!("after the upload: streaming {streamed:?}, plain {plain:?}");
    assert!(
        plain > Duration::from_secs(4),
        "48 MiB at 8 MiB/s after the upload: {plain:?}"
    );
    assert!(
        streamed * 2 < plain,
        "streaming {streamed:?} should beat {plain:?} by far"
    );
    drop(tablet);
}

#[test]
fn an_upload_killed_halfway_leaves_no_file_and_an_empty_cache() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--prefetch-ttl-s", "3"]);
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("laptop"));
    let b = Client::new(&server, &token, &tmp.path().join("desktop"));
    let desktop = start_downloader(&b, &[]);
    std::fs::write(a.path("big.bin"), bytes(1, 40 * MIB)).unwrap();
    let mut uploader = spawn_upload(&a, "4M");
    let cache = b.dir.join(".holdall/prefetch");
    let count = || std::fs::read_dir(&cache).map_or(0, |d| d.count());
    assert!(
        wait_until(Duration::from_secs(30), || count() > 0),
        "the desktop prefetched nothing:\n{}",
        desktop.log()
    );
    uploader.kill().unwrap();
    uploader.wait().unwrap();
    // The entry expires after 3 s; the prefetcher hears it and the next round purges.
    assert!(
        wait_until(Duration::from_secs(30), || count() == 0),
        "the cache was not purged:\n{}",
        desktop.log()
    );
    assert!(!b.path("big.bin").exists());
    let fresh = Client::new(&server, &token, &tmp.path().join("fresh"));
    fresh.synced();
    assert!(tree(&fresh.dir).is_empty(), "no file on the server");
    assert!(wait_until(Duration::from_secs(10), || b
        .streaming(" uploads followed")
        == 0));
}

#[test]
fn a_changed_or_evicted_upload_falls_back_to_the_committed_file() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    // One live entry per shard: a second upload evicts the first.
    let server = Server::start_with(&tmp.path().join("data"), &["--prefetch-entries-max", "1"]);
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("laptop"));
    let b = Client::new(&server, &token, &tmp.path().join("desktop"));
    let c = Client::new(&server, &token, &tmp.path().join("tablet"));
    let desktop = start_downloader(&b, &[]);
    let cache = b.dir.join(".holdall/prefetch");
    let prefetching = || std::fs::read_dir(&cache).map_or(0, |d| d.count()) > 0;

    // Changed: the laptop's file is rewritten while it uploads; it commits the new content.
    std::fs::write(a.path("edited.bin"), bytes(1, 32 * MIB)).unwrap();
    let mut uploader = spawn_upload(&a, "4M");
    assert!(
        wait_until(Duration::from_secs(30), prefetching),
        "{}",
        desktop.log()
    );
    std::fs::write(a.path("edited.bin"), bytes(2, 32 * MIB)).unwrap();
    assert!(uploader.wait().unwrap().success());

    // Evicted: the tablet's upload pushes the laptop's entry out mid-prefetch.
    std::fs::write(a.path("evicted.bin"), bytes(3, 32 * MIB)).unwrap();
    std::fs::write(c.path("other.bin"), bytes(4, 32 * MIB)).unwrap();
    let mut laptop = spawn_upload(&a, "4M");
    assert!(
        wait_until(Duration::from_secs(30), prefetching),
        "{}",
        desktop.log()
    );
    let tablet = c
        .command(&["sync", "--once", "--up-limit", "8M"])
        .arg(&c.dir)
        .output()
        .unwrap();
    assert!(tablet.status.success());
    assert!(laptop.wait().unwrap().success());
    a.synced();
    assert!(
        wait_until(Duration::from_secs(60), || tree(&a.dir) == tree(&b.dir)),
        "the desktop ends with every committed file, right:\n{}",
        desktop.log()
    );
    assert_eq!(
        std::fs::read(b.path("edited.bin")).unwrap(),
        bytes(2, 32 * MIB)
    );
    assert!(wait_until(Duration::from_secs(20), || !prefetching()));
}
