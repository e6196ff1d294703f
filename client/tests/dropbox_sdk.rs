//! The Dropbox API of holdalld, driven by the official Python SDK (`dropbox` from PyPI,
//! unmodified, in a venv this test makes from `dropbox/requirements.txt`) against a real
//! holdalld over HTTPS with a private CA, beside a real `holdall sync` client of the same
//! user. The checks themselves are in `dropbox/sdk_check.py`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use holdall_testkit::tls::{TestCa, Validity};
use support::{holdall_bin, Client, Server};

/// Bytes one upload session may hold in this test, so "too large" is quick to reach.
const SESSION_BYTES_MAX: u64 = 64 << 20;

/// The venv with the SDK, made once per target folder; `None` (skip) if it cannot be made
/// and this is not CI, where a missing SDK fails the test.
fn sdk_python() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("dropbox");
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dropbox-sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join("installed");
    let wanted = std::fs::read_to_string(here.join("requirements.txt")).unwrap();
    if std::fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    let installed = made.is_ok_and(|s| s.success())
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(here.join("requirements.txt"))
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "could not install the Dropbox SDK into {}",
            venv.display()
        );
        eprintln!("skipping: could not install the Dropbox SDK (pip)");
        return None;
    }
    std::fs::write(&ready, wanted).unwrap();
    Some(python)
}

#[test]
fn the_official_python_sdk_works_against_holdalld() {
    let Some(python) = sdk_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let pair = ca.issue(tmp.path(), "server", "127.0.0.1", Validity::Current);
    let limit = SESSION_BYTES_MAX.to_string();
    let server = Server::start_tls_with(
        &tmp.path().join("data"),
        &pair,
        &ca.pem,
        &["--upload-session-bytes-max", &limit],
    );
    let token = server.add_user("ada");
    let other = server.add_user("bob");
    let sync = Client::new(&server, &token, &tmp.path().join("synced"));
    let host = server.url.trim_start_matches("https://").to_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dropbox/sdk_check.py");
    let out = Command::new(python)
        .arg(script)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("DROPBOX_API_HOST", &host)
        .env("DROPBOX_API_CONTENT_HOST", &host)
        .env("DROPBOX_API_NOTIFY_HOST", &host)
        .env("HOLDALL_CA", &ca.pem)
        .env("HOLDALL_SERVER", &server.url)
        .env("HOLDALL_USER", "ada")
        .env("HOLDALL_TOKEN", &token)
        .env("HOLDALL_OTHER_TOKEN", &other)
        .env("HOLDALL_OTHER_USER", "bob")
        .env("HOLDALL_BIN", holdall_bin())
        .env("HOLDALL_SYNC_DIR", &sync.dir)
        .env("HOLDALL_SESSION_BYTES_MAX", &limit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
