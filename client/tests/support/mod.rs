//! Test support: the real holdalld on a free loopback port and real `holdall` processes on
//! temporary folders.

// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The `holdall` binary under test.
pub fn holdall_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdall"))
}

/// The `holdalld` binary beside it, built first if this test run did not build it.
fn holdalld_bin() -> PathBuf {
    let bin = holdall_bin().with_file_name("holdalld");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "holdall-server", "--bin", "holdalld"])
            .status()
            .expect("cargo build holdalld");
        assert!(status.success(), "building holdalld failed");
    }
    bin
}

/// A running holdalld.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, or `https://` when it serves TLS.
    pub url: String,
    /// Its data folder.
    pub data: PathBuf,
    /// The private CA that signed its certificate, given to its clients as `HOLDALL_CA`.
    pub ca: Option<PathBuf>,
}

impl Server {
    /// Starts holdalld on `data` with two shards.
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    /// Starts holdalld on `data` with two shards and extra flags.
    pub fn start_with(data: &Path, flags: &[&str]) -> Server {
        let holdall_testkit::Spawned { child, url, .. } =
            holdall_testkit::spawn_holdalld(&holdalld_bin(), data, 2, flags);
        Server {
            child,
            url,
            data: data.to_path_buf(),
            ca: None,
        }
    }

    /// Starts holdalld on `data` serving HTTPS with `pair`, which the CA in `ca` signed.
    pub fn start_tls(data: &Path, pair: &holdall_testkit::tls::Issued, ca: &Path) -> Server {
        Server::start_tls_with(data, pair, ca, &[])
    }

    /// Starts holdalld on `data` serving HTTPS with `pair`, with extra flags.
    pub fn start_tls_with(
        data: &Path,
        pair: &holdall_testkit::tls::Issued,
        ca: &Path,
        flags: &[&str],
    ) -> Server {
        let (cert, key) = (pair.cert.to_str().unwrap(), pair.key.to_str().unwrap());
        let mut all = vec!["--tls-cert", cert, "--tls-key", key];
        all.extend_from_slice(flags);
        let mut server = Server::start_with(data, &all);
        assert!(server.url.starts_with("https://"), "{}", server.url);
        server.ca = Some(ca.to_path_buf());
        server
    }

    /// Creates a user with `holdall admin add-user`; their token.
    pub fn add_user(&self, name: &str) -> String {
        self.admin(&["add-user", name]).trim().to_string()
    }

    /// Runs `holdall admin ARGS` with the admin token, insisting it succeeds; its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let admin = std::fs::read_to_string(self.data.join("admin.token")).unwrap();
        let out = Command::new(holdall_bin())
            .arg("admin")
            .args(args)
            .env("HOLDALL_SERVER", &self.url)
            .env("HOLDALL_TOKEN", admin.trim())
            .envs(self.ca.iter().map(|ca| ("HOLDALL_CA", ca)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Server {
    /// The server's `/metrics` answer, head included.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// The sum of every series of the counter or gauge `name` on `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `holdall sync --once` reported.
#[derive(Debug)]
pub struct Summary {
    /// Its exit status was 0.
    pub ok: bool,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Block bytes it downloaded.
    pub down_bytes: u64,
    /// Block bytes it uploaded.
    pub up_bytes: u64,
    /// Blocks it sent or fetched as deltas.
    pub delta_blocks: u64,
}

fn number_before(text: &str, label: &str) -> u64 {
    text.rsplit_once(label)
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A client on a folder.
pub struct Client {
    /// The synced folder.
    pub dir: PathBuf,
    /// Server URL.
    pub url: String,
    /// The user's token.
    pub token: String,
    /// The private CA it trusts, if any.
    pub ca: Option<PathBuf>,
}

impl Client {
    /// A client of `server` as the user with `token`, on `dir`.
    pub fn new(server: &Server, token: &str, dir: &Path) -> Client {
        std::fs::create_dir_all(dir).unwrap();
        Client {
            dir: dir.to_path_buf(),
            url: server.url.clone(),
            token: token.to_string(),
            ca: server.ca.clone(),
        }
    }

    /// `holdall ARGS` with this client's server and token.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(holdall_bin());
        c.args(args)
            .env("HOLDALL_SERVER", &self.url)
            .env("HOLDALL_TOKEN", &self.token)
            .env("HOLDALL_LOG", "warn")
            .envs(self.ca.iter().map(|ca| ("HOLDALL_CA", ca)));
        c
    }

    /// Runs `holdall sync DIR --once` and returns what it said.
    pub fn sync(&self) -> Summary {
        self.sync_with(&[])
    }

    /// Runs `holdall sync --once ARGS DIR` and returns what it said.
    pub fn sync_with(&self, args: &[&str]) -> Summary {
        let out: Output = self
            .command(&["sync", "--once"])
            .args(args)
            .arg(&self.dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        Summary {
            ok: out.status.success(),
            down_bytes: number_before(&stderr, " bytes down"),
            up_bytes: number_before(&stderr, " bytes up"),
            delta_blocks: number_before(&stderr, " blocks as deltas"),
            stderr,
        }
    }

    /// Runs one round and insists that it succeeded.
    pub fn synced(&self) -> Summary {
        let s = self.sync();
        assert!(s.ok, "sync of {} failed:\n{}", self.dir.display(), s.stderr);
        s
    }

    /// A path in the folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Starts `holdall sync DIR ARGS` (continuous), logging to `DIR.log`; killed on drop.
    pub fn spawn_sync(&self, args: &[&str]) -> Running {
        let log = self.dir.with_extension("log");
        let child = self
            .command(&["sync"])
            .arg(&self.dir)
            .args(args)
            .env("HOLDALL_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running { child, log }
    }

    /// `holdall status DIR`'s counter just before `label` on its streaming line.
    pub fn streaming(&self, label: &str) -> u64 {
        let out = self.command(&["status"]).arg(&self.dir).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("streaming:"))
            .unwrap_or_default()
            .to_string();
        number_before(&line, label)
    }
}

/// A client process that keeps running until dropped.
pub struct Running {
    /// The process.
    pub child: Child,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Running {
    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `timeout` for `ready`; whether it came.
pub fn wait_until(timeout: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ready()
}

/// Everything a folder holds (its .holdall/ aside): path → file bytes' SHA-256 or "dir".
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".holdall" {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(rel, "dir".to_string());
                stack.push(e.path());
            } else if ft.is_file() {
                if rel
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .starts_with(".holdall-tmp-")
                {
                    // A download in progress; it vanishes when renamed into place.
                    continue;
                }
                let Ok(bytes) = std::fs::read(e.path()) else {
                    continue;
                };
                out.insert(
                    rel,
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
                );
            }
        }
    }
    out
}

/// `len` bytes that differ with `seed`.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    holdall_testkit::pseudo_random_bytes(seed, len)
}
