//! The streaming-sync experiment: the seed's table of sync times with and without streaming
//! sync, on loopback with the clients' bandwidth caps standing in for the links.
//!
//! Per link and file size: a fresh user; client B (a second device of that user) runs
//! continuously with the link's download cap, with streaming on or off; client A writes the
//! file and runs `holdall sync --once` with the link's upload cap. The time is from the start
//! of A's sync until the file appears, whole, in B's folder (B renames a file into place only
//! once it is complete and durable).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::sync_bench::{follow, holdall, setup, Setup};

/// A link: bytes per second each way.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Name in the table.
    pub name: &'static str,
    /// A's upload cap.
    pub up_bps: u64,
    /// B's download cap.
    pub down_bps: u64,
}

/// The seed's asymmetric link (1.2 MB/s up, 5 MB/s down) scaled ×10.
pub const ASYMMETRIC: Link = Link {
    name: "asymmetric 12 MB/s up, 50 MB/s down",
    up_bps: 12_000_000,
    down_bps: 50_000_000,
};

/// An equal link.
pub const EQUAL: Link = Link {
    name: "equal 25 MB/s up and down",
    up_bps: 25_000_000,
    down_bps: 25_000_000,
};

/// The seed's own figures: (MB, seconds without streaming, seconds with).
pub const SEED_TABLE: [(u64, f64, f64); 4] = [
    (20, 25.0, 21.0),
    (40, 37.0, 30.0),
    (100, 89.0, 64.0),
    (500, 383.0, 293.0),
];

/// Longest wait for B to hold a file.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// Seconds from the start of A's upload until B holds each file of `sizes_mb` (MB = 10^6
/// bytes) over `link`, with streaming sync on or off at B.
pub fn run(scratch: &Path, link: Link, sizes_mb: &[u64], streaming: bool) -> Result<Vec<f64>> {
    let Setup {
        url, token, a, b, ..
    } = &setup(scratch)?;
    let (url, token, a, b) = (url.as_str(), token.as_str(), a.as_path(), b.as_path());
    let down = link.down_bps.to_string();
    let mut flags = vec!["--down-limit", down.as_str()];
    if !streaming {
        flags.push("--no-streaming");
    }
    let follower = follow(url, token, &flags, b)?;
    let up = link.up_bps.to_string();
    let mut times = Vec::new();
    for (i, &mb) in sizes_mb.iter().enumerate() {
        let name = format!("file-{mb}MB-{i}.bin");
        let bytes = mb * 1_000_000;
        write_file(&a.join(&name), bytes, (i as u64 + 1) << 32)?;
        let started = Instant::now();
        holdall(
            url,
            token,
            &["sync", "--once", "--up-limit", up.as_str()],
            Some(a),
        )?;
        wait_for(&b.join(&name), bytes, ARRIVAL_TIMEOUT)?;
        times.push(started.elapsed().as_secs_f64());
        std::fs::remove_file(a.join(&name))?;
    }
    drop(follower);
    Ok(times)
}

/// Writes `bytes` pseudo-random bytes (unique per `seed`) to `path`.
fn write_file(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = 4u64 << 20;
    for i in 0..bytes.div_ceil(chunk) {
        let n = chunk.min(bytes - i * chunk) as usize;
        f.write_all(&crate::payload(seed + i, n))?;
    }
    f.sync_all()?;
    Ok(())
}

/// Waits until `path` exists with at least `len` bytes.
fn wait_for(path: &Path, len: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.len() >= len) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The speedup the seed's model predicts for a link, for a file much larger than a block:
/// without streaming the file crosses both links one after the other; with it, the slower
/// link alone (plus one block).
pub fn model_speedup(link: Link) -> f64 {
    let (up, down) = (link.up_bps as f64, link.down_bps as f64);
    (1.0 / up + 1.0 / down) / (1.0 / up).max(1.0 / down)
}
