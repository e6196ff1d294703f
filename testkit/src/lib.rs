//! Test support shared by the engine's, the server's and the client's integration tests:
//! starts the real holdalld on a free loopback port and waits, boundedly, until it listens;
//! makes test data.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod tls;

/// Longest wait for holdalld to say where it listens.
pub const START_MAX: Duration = Duration::from_secs(60);

/// A holdalld process started by [`spawn_holdalld`].
pub struct Spawned {
    /// The process (the caller stops it).
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`, or `https://` when the flags turn TLS on.
    pub url: String,
    /// Where its stderr goes: `DATA.stderr`, beside the data folder.
    pub stderr_path: PathBuf,
}

/// Starts `BIN serve` on `data` with `shards` shards, on a free loopback port, with `flags`,
/// and waits until it says where it listens. After [`START_MAX`] without that line, the
/// process is killed and the test fails showing what each of its threads was doing and its
/// stderr, so a start-up stall is diagnosable instead of a test that never ends.
pub fn spawn_holdalld(bin: &Path, data: &Path, shards: usize, flags: &[&str]) -> Spawned {
    let stderr_path = data.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("creating holdalld's stderr file");
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--shards"])
        .arg(shards.to_string())
        .arg("--data")
        .arg(data)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("starting holdalld");
    let stdout = child.stdout.take().expect("holdalld's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let stderr_text = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let Ok(line) = rx.recv_timeout(START_MAX) else {
        let threads = thread_states(child.id());
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "holdalld did not listen within {START_MAX:?}; its threads:\n{threads}stderr:\n{}",
            stderr_text()
        );
    };
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://") || word.starts_with("https://"))
        .unwrap_or_else(|| panic!("no address in {line:?}: {}", stderr_text()))
        .to_string();
    let addr = url.split_once("://").expect("a URL").1.to_string();
    Spawned {
        child,
        addr,
        url,
        stderr_path,
    }
}

/// One line per thread of process `pid`: id, name, and the system call it is blocked in
/// (its number, or "running").
pub fn thread_states(pid: u32) -> String {
    let mut out = String::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        let syscall = read("syscall");
        out.push_str(&format!(
            "  {} {} syscall {}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            syscall.split_whitespace().next().unwrap_or("?")
        ));
    }
    out
}

/// `len` pseudo-random bytes from `seed` (xorshift): distinct seeds give distinct data, the
/// same seed the same data, so tests can make blocks and files and check them afterwards.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
