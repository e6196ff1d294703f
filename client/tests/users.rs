//! `holdall admin list-users`, `disable-user` and `enable-user` against the real holdalld,
//! and a client whose account is disabled mid-sync: it stops and says why.

mod support;

use std::time::Duration;

use support::{bytes, tree, wait_until, Client, Server};

#[test]
fn the_admin_lists_disables_and_enables_users_and_a_disabled_sync_stops_saying_why() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    std::fs::write(a.path("one.txt"), bytes(1, 1000)).unwrap();
    assert!(a.sync().ok);

    let table = server.admin(&["list-users"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[2].starts_with("ann") && lines[2].contains("1000"),
        "{table}"
    );
    assert!(lines[2].ends_with("active"), "{table}");
    let listed: serde_json::Value =
        serde_json::from_str(&server.admin(&["list-users", "--json"])).unwrap();
    assert_eq!(listed["users"][1]["usage"]["bytes"], 1000);

    let running = a.spawn_sync(&[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.admin(&["disable-user", "ann"]),
        "ann: disabled (their tokens are refused)\n"
    );
    assert!(server
        .admin(&["list-users"])
        .lines()
        .nth(2)
        .unwrap()
        .ends_with("disabled"));
    std::fs::write(a.path("two.txt"), bytes(2, 1000)).unwrap();
    let mut running = running;
    let stopped = wait_until(Duration::from_secs(30), || {
        running.child.try_wait().unwrap().is_some()
    });
    assert!(stopped, "{}", running.log());
    assert!(
        running.log().contains("the account is disabled"),
        "{}",
        running.log()
    );
    assert!(a.path("two.txt").exists(), "nothing local is touched");

    assert_eq!(server.admin(&["enable-user", "ann"]), "ann: enabled\n");
    assert!(a.sync().ok);
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    b.synced();
    assert_eq!(tree(&a.dir), tree(&b.dir));
}

#[test]
fn a_device_token_is_made_listed_and_revoked_and_its_sync_stops_saying_why() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    let out = a
        .command(&["token", "create", "--device", "laptop"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let laptop_token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(laptop_token.len(), 64);
    let out = a.command(&["token", "list"]).output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let line = table.lines().find(|l| l.ends_with("laptop")).expect(&table);
    let id = line.split_whitespace().next().unwrap().to_owned();
    assert!(!table.contains(&laptop_token) && !table.contains(&token));

    let laptop = Client::new(&server, &laptop_token, &tmp.path().join("laptop"));
    std::fs::write(laptop.path("from-laptop.txt"), bytes(5, 500)).unwrap();
    assert!(laptop.sync().ok);
    let mut running = laptop.spawn_sync(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let out = a.command(&["token", "revoke", &id]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("revoked {id}\n")
    );
    std::fs::write(laptop.path("late.txt"), bytes(6, 500)).unwrap();
    let stopped = wait_until(Duration::from_secs(30), || {
        running.child.try_wait().unwrap().is_some()
    });
    assert!(stopped, "{}", running.log());
    assert!(
        running.log().contains("refused the token (401)"),
        "{}",
        running.log()
    );
    assert!(laptop.path("late.txt").exists() && laptop.path("from-laptop.txt").exists());
    // The account's own token is untouched.
    assert!(a.sync().ok);
    assert!(a.path("from-laptop.txt").exists());
}

#[test]
fn a_rate_limited_client_waits_as_told_and_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &["--token-requests-per-s", "4"]);
    let token = server.add_user("ann");
    let a = Client::new(&server, &token, &tmp.path().join("a"));
    for i in 0..30 {
        let dir = a.path(&format!("d{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f.txt"), bytes(i, 100)).unwrap();
    }
    let once = a.sync();
    assert!(once.ok, "{}", once.stderr);
    let b = Client::new(&server, &token, &tmp.path().join("b"));
    let got = b.sync();
    assert!(got.ok, "{}", got.stderr);
    assert_eq!(tree(&a.dir), tree(&b.dir));
    let metrics = server.metrics_text();
    assert!(
        metrics.contains("status=\"429\""),
        "the limit was reached: {metrics}"
    );
}
