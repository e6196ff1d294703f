//! A holdalld process the harness starts, kills with SIGKILL, and starts again.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use holdall_benches::http_client::Conn;
use holdall_proto::api::{CreateUserRequest, CreateUserResponse, NsId};

/// A running holdalld.
pub struct Daemon {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl Daemon {
    /// Starts `bin serve` on `data` with `shards` shards and `flags` on a free loopback
    /// port; its log is appended to `log`.
    pub fn start(
        bin: &Path,
        data: &Path,
        shards: usize,
        flags: &[String],
        log: &Path,
    ) -> Result<Daemon> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--shards"])
            .arg(shards.to_string())
            .arg("--data")
            .arg(data)
            .args(flags)
            .env("HOLDALL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("holdalld's stdout")?)
            .read_line(&mut line)?;
        let Some(addr) = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("holdalld did not start (its log has why); it printed {line:?}");
        };
        Ok(Daemon {
            addr: addr.to_string(),
            child,
        })
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("killing holdalld")?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, and the exit status must be success.
    pub fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("holdalld exited with {status} on SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("holdalld did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary beside this executable (cargo builds them into the same folder).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name(name);
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release --workspace) or pass --{name}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Creates user `name` with the admin token of the server on `data`; the user's token and
/// root namespace.
pub fn create_user(addr: &str, data: &Path, name: &str) -> Result<(String, NsId)> {
    let admin = std::fs::read_to_string(data.join("admin.token"))?;
    let body = serde_json::to_vec(&CreateUserRequest { name: name.into() })?;
    let (status, answer) =
        Conn::connect(addr)?.request("POST", "/v1/admin/users", admin.trim(), &[&body])?;
    if status != 200 {
        bail!(
            "creating user {name}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let user: CreateUserResponse = serde_json::from_slice(&answer)?;
    Ok((user.token, user.root_ns))
}
