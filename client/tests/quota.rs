//! A quota with the real holdall against the real holdalld: `holdall admin set-quota`, a
//! sync that goes past it uploads what fits, says why the rest did not go up once (not
//! every round), keeps syncing other changes, and sends the rest once the quota is lifted.

mod support;

use std::time::Duration;

use support::{bytes, tree, wait_until, Client, Server};

const MIB: usize = 1 << 20;
/// What the client says when the server refuses files for the quota.
const TOLD: &str = "your account is at its quota";

/// `holdall admin set-quota NAME QUOTA`; what it printed.
fn set_quota(server: &Server, name: &str, quota: &str) -> String {
    server.admin(&["set-quota", name, quota])
}

#[test]
fn a_sync_past_quota_sends_what_fits_says_why_once_and_sends_the_rest_when_lifted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    assert_eq!(
        set_quota(&server, "ann", "1M"),
        "ann: 0 bytes used, quota 1048576 bytes\n"
    );
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    std::fs::write(a.path("small.txt"), bytes(1, 100_000)).unwrap();
    std::fs::write(a.path("big.bin"), bytes(2, 3 * MIB)).unwrap();
    let once = a.sync();
    assert!(!once.ok, "{}", once.stderr);
    assert_eq!(once.stderr.matches(TOLD).count(), 1, "{}", once.stderr);
    assert!(once.stderr.contains("refused 1 file(s)"), "{}", once.stderr);
    b.synced();
    assert_eq!(tree(&b.dir).keys().collect::<Vec<_>>(), ["small.txt"]);

    // Syncing on: new files that fit still go up, and the refusal is not told again.
    let running = a.spawn_sync(&[]);
    std::fs::write(a.path("more.txt"), bytes(3, 50_000)).unwrap();
    let more_arrived = wait_until(Duration::from_secs(30), || {
        b.synced();
        b.path("more.txt").exists()
    });
    assert!(more_arrived, "{}", running.log());
    std::fs::write(a.path("again.txt"), bytes(4, 10_000)).unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        b.synced();
        b.path("again.txt").exists()
    }));
    assert_eq!(running.log().matches(TOLD).count(), 1, "{}", running.log());
    assert!(set_quota(&server, "ann", "none").contains("no quota"));
    // The next round (a local change starts one) sends the file the quota held back.
    std::fs::write(a.path("nudge.txt"), b"x").unwrap();
    let settled = wait_until(Duration::from_secs(30), || {
        b.synced();
        tree(&a.dir) == tree(&b.dir)
    });
    assert!(settled, "{}", running.log());
    assert!(b.path("big.bin").exists());
}
