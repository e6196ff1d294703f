//! The sync benchmark: a real holdalld and two real `holdall` clients on loopback. Client A
//! syncs a folder up, client B syncs it down; the figure is the time until B holds what A
//! wrote, for one large file and for many small files in many folders.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A holdalld for the benchmark's lifetime.
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binaries beside this one (`cargo build --release --workspace` builds them all).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name(name);
    if !bin.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release --workspace`",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts holdalld on `data` on a free loopback port; the process and its URL.
pub fn start_server(data: &Path) -> Result<(Daemon, String)> {
    start_server_with(data, &[])
}

/// As [`start_server`], with more flags.
pub fn start_server_with(data: &Path, flags: &[&str]) -> Result<(Daemon, String)> {
    use std::io::BufRead;
    let mut child = Command::new(sibling("holdalld")?)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting holdalld")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("holdalld stdout")?)
        .read_line(&mut line)?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .context("holdalld did not say where it listens")?
        .to_string();
    Ok((Daemon(child), url))
}

/// Runs `holdall ARGS [DIR]` as the user with `token`; what it printed.
pub fn holdall(url: &str, token: &str, args: &[&str], dir: Option<&Path>) -> Result<String> {
    let mut c = Command::new(sibling("holdall")?);
    c.args(args)
        .env("HOLDALL_SERVER", url)
        .env("HOLDALL_TOKEN", token)
        .env("HOLDALL_LOG", "warn");
    if let Some(d) = dir {
        c.arg(d);
    }
    let out = c.output().context("running holdall")?;
    if !out.status.success() {
        bail!(
            "holdall {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Seconds A took to upload and B to download one scenario.
pub struct SyncTimes {
    /// `holdall sync A --once`.
    pub up_s: f64,
    /// From the end of A's sync until B holds everything (B's `--once` after A's, or the
    /// rest of a running B's work).
    pub down_s: f64,
}

impl SyncTimes {
    /// Until B holds what A wrote.
    pub fn total_s(&self) -> f64 {
        self.up_s + self.down_s
    }
}

/// A fresh holdalld and user under a scratch folder, with two empty client folders.
pub struct Setup {
    /// The server (stopped on drop).
    pub server: Daemon,
    /// Its URL.
    pub url: String,
    /// The user's token.
    pub token: String,
    /// Client A's folder.
    pub a: PathBuf,
    /// Client B's folder.
    pub b: PathBuf,
    /// Removed on drop, after the server.
    pub dir: tempfile::TempDir,
}

/// Starts a fresh server in a new folder under `scratch` and creates a user.
pub fn setup(scratch: &Path) -> Result<Setup> {
    setup_with(scratch, &[])
}

/// As [`setup`], the server started with `flags`.
pub fn setup_with(scratch: &Path, flags: &[&str]) -> Result<Setup> {
    let dir = tempfile::tempdir_in(scratch)?;
    let (server, url) = start_server_with(&dir.path().join("data"), flags)?;
    let admin = std::fs::read_to_string(dir.path().join("data/admin.token"))?;
    let token = holdall(&url, admin.trim(), &["admin", "add-user", "bench"], None)?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a)?;
    std::fs::create_dir_all(&b)?;
    Ok(Setup {
        server,
        url,
        token,
        a,
        b,
        dir,
    })
}

/// How client B runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `holdall sync B --once` after A's `--once` has finished: no overlap, no streaming.
    AfterA,
    /// `holdall sync B` already running, as a device that keeps a folder in sync does: it
    /// hears of A's commits by longpoll and prefetches blocks of files still uploading.
    Running,
}

/// What a fill wrote: each file's path under the folder and its length.
pub type Written = Vec<(PathBuf, u64)>;

/// Longest wait for a running B to hold what A wrote.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// One run: a fresh server (started with `flags`) and user under `scratch`, `fill` writes
/// A's folder (and returns the relative paths and sizes it wrote), then A syncs up and B
/// syncs down as `mode` says. The run's folder is handed to `keep` rather than deleted: see
/// [`Kept`].
pub fn run(
    scratch: &Path,
    flags: &[&str],
    fill: &dyn Fn(&Path) -> Result<Written>,
    mode: Mode,
    keep: &mut Kept,
) -> Result<SyncTimes> {
    let Setup {
        server,
        url,
        token,
        a,
        b,
        dir,
    } = setup_with(scratch, flags)?;
    keep.0.push(dir);
    let (url, token, a, b) = (url.as_str(), token.as_str(), a.as_path(), b.as_path());
    let follower = match mode {
        Mode::AfterA => None,
        Mode::Running => Some(follow(url, token, &[], b)?),
    };
    let written = fill(a)?;
    // A and B are different machines in real life: what the fill wrote is flushed now, not
    // charged to B's durability flushes below.
    let status = Command::new("sync").status().context("running sync")?;
    anyhow::ensure!(status.success(), "sync failed");
    let t = Instant::now();
    holdall(url, token, &["sync", "--once"], Some(a))?;
    let up_s = t.elapsed().as_secs_f64();
    match mode {
        Mode::AfterA => {
            holdall(url, token, &["sync", "--once"], Some(b))?;
        }
        Mode::Running => wait_for_all(b, &written, ARRIVAL_TIMEOUT)?,
    }
    let down_s = t.elapsed().as_secs_f64() - up_s;
    drop(follower);
    drop(server);
    Ok(SyncTimes { up_s, down_s })
}

/// `holdall sync B`, running until dropped.
pub struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `holdall sync [FLAGS] b` and waits until its first round has written its state.
pub fn follow(url: &str, token: &str, flags: &[&str], b: &Path) -> Result<Follower> {
    let child = Command::new(sibling("holdall")?)
        .arg("sync")
        .args(flags)
        .arg(b)
        .env("HOLDALL_SERVER", url)
        .env("HOLDALL_TOKEN", token)
        .env("HOLDALL_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .context("starting client B")?;
    let follower = Follower(child);
    let state = b.join(".holdall/state.db");
    let start = Instant::now();
    while !state.exists() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "client B did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its first round ends with a longpoll: give it the moment to get there.
    std::thread::sleep(Duration::from_millis(500));
    Ok(follower)
}

/// Waits until every `(path, len)` of `files` is under `root` at its full length. B renames
/// a file into place only once it is complete and durable, so a file seen is a file held.
fn wait_for_all(root: &Path, files: &[(PathBuf, u64)], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut held = 0;
    while held < files.len() {
        let (rel, len) = &files[held];
        if std::fs::metadata(root.join(rel)).is_ok_and(|m| m.len() == *len) {
            held += 1;
            continue;
        }
        if start.elapsed() > timeout {
            bail!("{} did not arrive within {timeout:?}", rel.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The runs' folders, deleted together when the benchmark ends. Deleting one run's 20,000
/// files before the next made that run's B pay for them: on ext4 without a journal (this
/// machine's disk) every file creation walks past the free inodes of its group deleted in the
/// last minute (six minutes while their inode table block is not written back), reading
/// each one's deletion time (`recently_deleted()` under `find_inode_bit()`), so creating the
/// next 10,000 files cost seconds of kernel time. A device that receives files is not the one
/// that just deleted the sender's copies, so the benchmark does not charge for that.
#[derive(Default)]
pub struct Kept(Vec<tempfile::TempDir>);

/// Writes one file of `bytes` pseudo-random bytes.
pub fn one_file(dir: &Path, bytes: usize) -> Result<Written> {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("one.bin"))?;
    let chunk = 4 << 20;
    for i in 0..bytes.div_ceil(chunk) {
        let n = chunk.min(bytes - i * chunk);
        f.write_all(&crate::payload(i as u64, n))?;
    }
    f.sync_all()?;
    Ok(vec![(PathBuf::from("one.bin"), bytes as u64)])
}

/// Writes `folders` × `per_folder` files of `bytes` pseudo-random bytes each.
pub fn small_files(dir: &Path, folders: usize, per_folder: usize, bytes: usize) -> Result<Written> {
    let mut written = Vec::with_capacity(folders * per_folder);
    for d in 0..folders {
        let sub = format!("d{d:03}");
        std::fs::create_dir_all(dir.join(&sub))?;
        for f in 0..per_folder {
            let rel = PathBuf::from(&sub).join(format!("f{f:03}.txt"));
            std::fs::write(
                dir.join(&rel),
                crate::payload((d * per_folder + f) as u64, bytes),
            )?;
            written.push((rel, bytes as u64));
        }
    }
    Ok(written)
}
