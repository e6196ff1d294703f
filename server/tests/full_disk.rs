//! A full disk, for real: holdalld on a small tmpfs fills it with uploads. Writes then fail
//! with 507 `disk_full`; everything acknowledged stays readable and listed; once space
//! returns, writes work again; after a restart nothing acknowledged is missing.
//!
//! Mounting needs CAP_SYS_ADMIN (the test machines run tests as root); where the mount is
//! refused the test says so on stderr and checks nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{
    block, commit_file, create_user, fetch_block, listed_paths, request, store_block, Server,
};

/// Size of the file system: room for a dozen 4 MiB blocks beside the journals.
const FS_BYTES: u64 = 56 << 20;
/// Bytes the test holds back in a file of its own, freed to let space return.
const RESERVE_BYTES: usize = 12 << 20;

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every file in `files` is listed and its block reads back byte-exact.
fn all_there(server: &Server, token: &str, ns: u64, files: &[(String, Vec<u8>)]) {
    let listed = listed_paths(server, token, ns);
    for (path, b) in files {
        assert!(listed.contains(path), "{path} not listed");
        let got = fetch_block(server, token, ns, path, b);
        assert!(got.as_deref() == Some(&b[..]), "{path} came back different");
    }
}

#[test]
fn a_full_disk_refuses_writes_keeps_what_it_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::new(&dir.path().join("fs")) else {
        eprintln!("full_disk: cannot mount a tmpfs here (not root?); nothing checked");
        return;
    };
    let data = mount.0.join("data");
    let reserve = mount.0.join("reserve");
    std::fs::write(&reserve, vec![1u8; RESERVE_BYTES]).unwrap();
    let server = Server::start(&data, 1);
    let (token, ns) = create_user(&server, "ana");

    // Fill it: 4 MiB files until a write is refused.
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let refusal = loop {
        assert!(acked.len() < 64, "the file system never filled");
        let b = block(acked.len() as u64 + 1, 4 << 20);
        let path = format!("f{}", acked.len());
        let r = store_block(&server, &token, &b);
        if r.status != 200 {
            break r;
        }
        let (status, answer) = commit_file(&server, &token, ns, &path, &b);
        if status != 200 {
            assert_eq!(status, 507, "{answer}");
            break request(&server.addr, "GET", "/healthz", None, b"");
        }
        acked.push((path, b));
    };
    if refusal.status != 200 {
        assert_eq!(
            refusal.status,
            507,
            "{}",
            String::from_utf8_lossy(&refusal.body)
        );
        assert_eq!(refusal.json()["error"], "disk_full");
    }
    assert!(acked.len() >= 3, "only {} files fit", acked.len());

    // Reads, lists and health keep working on a full disk.
    all_there(&server, &token, ns, &acked);
    assert_eq!(
        request(&server.addr, "GET", "/healthz", None, b"").status,
        200
    );
    assert_eq!(
        request(&server.addr, "GET", "/metrics", None, b"").status,
        200
    );

    // Space returns: writes work again, without a restart.
    std::fs::remove_file(&reserve).unwrap();
    let b = block(1000, 4 << 20);
    let r = store_block(&server, &token, &b);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (status, answer) = commit_file(&server, &token, ns, "after", &b);
    assert_eq!(status, 200, "{answer}");
    acked.push(("after".into(), b));
    all_there(&server, &token, ns, &acked);

    // And nothing acknowledged is lost across a restart.
    assert!(server.terminate().success());
    let server = Server::start(&data, 1);
    all_there(&server, &token, ns, &acked);
}
