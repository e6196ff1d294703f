//! Wire compression end to end: a real holdalld and two real clients on loopback, A syncing
//! a tree up and B syncing it down, with and without compression, uncapped and on a capped
//! link (both clients' `--up-limit`/`--down-limit`, which count bytes on the wire). Bytes on
//! the wire come from the server's own counters. Beside them, zstd's levels on the same text
//! against SHA-256 on the same core: the limits the level is chosen against.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use holdall_proto::limits::BLOCK_BYTES_MAX;

use crate::http_client::metric_series;
use crate::sync_bench::{holdall, setup_with};

/// What a tree is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Logs and small text files: compresses several times over.
    Text,
    /// Pseudo-random bytes: media, archives, encrypted files.
    Random,
}

impl Data {
    fn name(self) -> &'static str {
        match self {
            Data::Text => "text",
            Data::Random => "random",
        }
    }

    fn bytes(self, seed: u64, len: usize) -> Vec<u8> {
        match self {
            Data::Text => crate::text_payload(seed, len),
            Data::Random => crate::payload(seed, len),
        }
    }
}

/// One sync of a tree: seconds up and down, bytes on the wire each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cell {
    /// A's `sync --once`.
    pub up_s: f64,
    /// B's `sync --once` after it.
    pub down_s: f64,
    /// Request bytes the server received.
    pub bytes_in: f64,
    /// Response bytes the server sent.
    pub bytes_out: f64,
}

/// Writes a tree of about `mb` MB of `data` into `dir`: a tenth in 2,000 small files (1 to
/// 64 KiB, in 40 folders), the rest in files of 4 to 24 MiB. Its bytes.
pub fn fill(dir: &Path, data: Data, mb: u64) -> Result<u64> {
    let total = mb << 20;
    let mut written = 0u64;
    for i in 0..2000u64 {
        let len = 1024 + (i * 7919 % 64) as usize * 1024;
        let path = dir.join(format!("src/m{}/f{i}.txt", i % 40));
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(&path, data.bytes(i + 1, len))?;
        written += len as u64;
    }
    let mut i = 0u64;
    while written < total {
        let len = ((4 + i % 21) << 20).min(total - written) as usize;
        let path = dir.join(format!("logs/part-{i}.log"));
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(&path, data.bytes(10_000 + i, len))?;
        written += len as u64;
        i += 1;
    }
    Ok(written)
}

/// One run on a fresh server: `data` (`mb` MB) up from A and down to B, compressed or not,
/// at `link_bytes_per_s` each way (0: uncapped).
pub fn run_cell(
    scratch: &Path,
    data: Data,
    mb: u64,
    compress: bool,
    link_bytes_per_s: u64,
) -> Result<Cell> {
    let setup = setup_with(scratch, &[])?;
    fill(&setup.a, data, mb)?;
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed");
    let addr = setup.url.trim_start_matches("http://").to_string();
    let link = link_bytes_per_s.to_string();
    let switch = if compress { "on" } else { "off" };
    let sync = |limit: &str, dir: &Path| -> Result<f64> {
        let args = ["sync", "--once", "--compress", switch, limit, &link];
        let t = Instant::now();
        holdall(&setup.url, &setup.token, &args, Some(dir))?;
        Ok(t.elapsed().as_secs_f64())
    };
    let (in0, out0) = wire_bytes(&addr)?;
    let up_s = sync("--up-limit", &setup.a)?;
    let (in1, _) = wire_bytes(&addr)?;
    let down_s = sync("--down-limit", &setup.b)?;
    let (_, out2) = wire_bytes(&addr)?;
    Ok(Cell {
        up_s,
        down_s,
        bytes_in: in1 - in0,
        bytes_out: out2 - out0,
    })
}

/// The server's request and response byte counters.
pub(crate) fn wire_bytes(addr: &str) -> Result<(f64, f64)> {
    let sum = |name| -> Result<f64> { Ok(metric_series(addr, name)?.iter().sum()) };
    Ok((
        sum("holdall_http_bytes_in_total")?,
        sum("holdall_http_bytes_out_total")?,
    ))
}

/// The median cell of `runs` runs, by time.
pub fn median_cell(
    scratch: &Path,
    data: Data,
    mb: u64,
    compress: bool,
    link: u64,
    runs: usize,
) -> Result<Cell> {
    let mut cells = (0..runs.max(1))
        .map(|_| run_cell(scratch, data, mb, compress, link))
        .collect::<Result<Vec<_>>>()?;
    cells.sort_by(|a, b| (a.up_s + a.down_s).total_cmp(&(b.up_s + b.down_s)));
    Ok(cells[cells.len() / 2])
}

/// zstd at `level` on text blocks: compression MB/s, expansion MB/s and the share of the
/// bytes left, on one core.
pub fn level_row(level: i32, blocks: usize) -> Result<(f64, f64, f64)> {
    let text: Vec<Vec<u8>> = (0..blocks)
        .map(|i| crate::text_payload(i as u64 + 1, BLOCK_BYTES_MAX))
        .collect();
    let mut c = zstd::bulk::Compressor::new(level)?;
    let t = Instant::now();
    let packed: Vec<Vec<u8>> = text
        .iter()
        .map(|b| c.compress(b))
        .collect::<std::io::Result<_>>()?;
    let compress_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for p in &packed {
        zstd::bulk::decompress(p, BLOCK_BYTES_MAX)?;
    }
    let expand_s = t.elapsed().as_secs_f64();
    let raw = (blocks * BLOCK_BYTES_MAX) as f64;
    let left = packed.iter().map(Vec::len).sum::<usize>() as f64 / raw;
    Ok((raw / compress_s / 1e6, raw / expand_s / 1e6, left))
}

/// The report: the level table, then the sync table.
pub fn report(scratch: &Path, mb: u64, link_mb_s: u64, runs: usize) -> Result<String> {
    let mut out = String::new();
    let sha = crate::limits::sha256_gbps(256 << 20) * 1000.0;
    out.push_str(&format!(
        "zstd on 4 MiB text blocks, one core (SHA-256 here: {sha:.0} MB/s)\n\
         | level | compress MB/s | expand MB/s | bytes left |\n|---:|---:|---:|---:|\n"
    ));
    for level in [1, 3, 6, 9] {
        let (c, e, left) = level_row(level, 16)?;
        out.push_str(&format!(
            "| {level} | {c:.0} | {e:.0} | {:.1} % |\n",
            left * 100.0
        ));
    }
    out.push_str(&format!(
        "\n{mb} MB trees, A up then B down, medians of {runs}\n\
         | data | link | compression | up s | down s | MB in | MB out |\n\
         |---|---|---|---:|---:|---:|---:|\n"
    ));
    for data in [Data::Text, Data::Random] {
        for link in [0, link_mb_s * 1_000_000] {
            for compress in [false, true] {
                let c = median_cell(scratch, data, mb, compress, link, runs)?;
                let link_name = match link {
                    0 => "loopback".to_string(),
                    _ => format!("{link_mb_s} MB/s"),
                };
                out.push_str(&format!(
                    "| {} | {link_name} | {} | {:.2} | {:.2} | {:.0} | {:.0} |\n",
                    data.name(),
                    if compress { "on" } else { "off" },
                    c.up_s,
                    c.down_s,
                    c.bytes_in / 1e6,
                    c.bytes_out / 1e6
                ));
            }
        }
    }
    Ok(out)
}
