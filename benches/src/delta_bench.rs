//! Deltas end to end: a real holdalld and two real clients on loopback, a large file synced
//! A → B, then edited in place (1 KiB at scattered offsets) and synced again on a capped
//! link, once with deltas and once (other edits, same file) with whole blocks. Bytes on the
//! wire, both directions of each sync, come from the server's own counters. Beside them,
//! the delta code's own rates on one core against SHA-256: what a changed block costs to
//! sign, diff and apply.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use holdall_proto::delta::{apply, delta_of, parse_signature, signature_of};
use holdall_proto::limits::BLOCK_BYTES_MAX;

use crate::sync_bench::{holdall, setup_with};
use crate::wire_bench::wire_bytes;

/// One edited sync: seconds and bytes each way of A's upload and B's download.
#[derive(Debug, Clone, Copy, Default)]
pub struct Round {
    /// A's `sync --once`.
    pub up_s: f64,
    /// B's `sync --once` after it.
    pub down_s: f64,
    /// Bytes through the server during A's sync (both directions).
    pub up_bytes: f64,
    /// Bytes through the server during B's sync (both directions).
    pub down_bytes: f64,
}

/// Writes `mb` MiB of noise to `path`, 64 MiB at a time.
fn write_noise(path: &Path, mb: u64) -> Result<()> {
    let file = std::fs::File::create(path)?;
    for i in 0..mb.div_ceil(64) {
        let len = ((mb - i * 64).min(64) << 20) as usize;
        file.write_all_at(&crate::payload(i + 1, len), i * (64 << 20))?;
    }
    Ok(())
}

/// Overwrites 1 KiB at `edits` offsets spread over the file (seeded by `seed`).
fn edit(path: &Path, edits: u64, seed: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let stride = len / edits;
    for i in 0..edits {
        let at = i * stride + (seed * 7919 + i * 104_729) % (stride - 1024);
        file.write_all_at(&crate::payload(seed * 1000 + i, 1024), at)?;
    }
    Ok(())
}

/// One run on a fresh server: the file synced up and down uncapped, then `edits` edits
/// synced with deltas and `edits` others without, each at `link` bytes/s each way.
pub fn run(scratch: &Path, mb: u64, edits: u64, link: u64) -> Result<(Round, Round)> {
    let setup = setup_with(scratch, &[])?;
    let file = setup.a.join("disk.img");
    write_noise(&file, mb)?;
    holdall(
        &setup.url,
        &setup.token,
        &["sync", "--once"],
        Some(&setup.a),
    )?;
    holdall(
        &setup.url,
        &setup.token,
        &["sync", "--once"],
        Some(&setup.b),
    )?;
    let addr = setup.url.trim_start_matches("http://").to_string();
    let link = link.to_string();
    let round = |delta: &str, seed: u64| -> Result<Round> {
        edit(&file, edits, seed)?;
        let sync = |limit: &str, dir: &Path| -> Result<(f64, f64)> {
            let (in0, out0) = wire_bytes(&addr)?;
            let args = ["sync", "--once", "--delta", delta, limit, &link];
            let t = Instant::now();
            holdall(&setup.url, &setup.token, &args, Some(dir))?;
            let took = t.elapsed().as_secs_f64();
            let (in1, out1) = wire_bytes(&addr)?;
            Ok((took, in1 - in0 + out1 - out0))
        };
        let (up_s, up_bytes) = sync("--up-limit", &setup.a)?;
        let (down_s, down_bytes) = sync("--down-limit", &setup.b)?;
        let same = std::fs::read(&file)? == std::fs::read(setup.b.join("disk.img"))?;
        anyhow::ensure!(same, "B's copy differs from A's after the sync");
        Ok(Round {
            up_s,
            down_s,
            up_bytes,
            down_bytes,
        })
    };
    Ok((round("on", 1)?, round("off", 2)?))
}

/// Signing, diffing and applying a 4 MiB block with one 1 KiB edit, MB/s of block on one
/// core, and the delta's bytes.
pub fn code_rates(blocks: usize) -> (f64, f64, f64, usize) {
    let bases: Vec<Vec<u8>> = (0..blocks)
        .map(|i| crate::payload(i as u64 + 7, BLOCK_BYTES_MAX))
        .collect();
    let edited: Vec<Vec<u8>> = bases
        .iter()
        .map(|b| {
            let mut e = b.clone();
            e[1_000_000..1_001_024].copy_from_slice(&crate::payload(3, 1024));
            e
        })
        .collect();
    let t = Instant::now();
    let sigs: Vec<_> = bases.iter().map(|b| signature_of(b)).collect();
    let sign_s = t.elapsed().as_secs_f64();
    let parsed: Vec<_> = sigs
        .into_iter()
        .map(|s| parse_signature(s).expect("our own signature"))
        .collect();
    let t = Instant::now();
    let deltas: Vec<Vec<u8>> = parsed
        .iter()
        .zip(&edited)
        .map(|(s, e)| delta_of(s, e, e.len()).unwrap_or_default())
        .collect();
    let diff_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for ((b, d), e) in bases.iter().zip(&deltas).zip(&edited) {
        let rebuilt = apply(b, d, e.len()).unwrap_or_default();
        assert!(rebuilt.len() == e.len());
    }
    let apply_s = t.elapsed().as_secs_f64();
    let mb = (blocks * BLOCK_BYTES_MAX) as f64 / 1e6;
    (mb / sign_s, mb / diff_s, mb / apply_s, deltas[0].len())
}

/// The report: the code's rates, then the sync table (medians of `runs`, by time).
pub fn report(scratch: &Path, mb: u64, edits: u64, link_mb_s: u64, runs: usize) -> Result<String> {
    let mut out = String::new();
    let sha = crate::limits::sha256_gbps(256 << 20) * 1000.0;
    let (sign, diff, applied, delta) = code_rates(16);
    out.push_str(&format!(
        "one core, 4 MiB blocks, one 1 KiB edit each (SHA-256 here: {sha:.0} MB/s)\n\
         | sign MB/s | diff MB/s | apply MB/s | delta bytes |\n|---:|---:|---:|---:|\n\
         | {sign:.0} | {diff:.0} | {applied:.0} | {delta} |\n"
    ));
    let mut rounds: Vec<(Round, Round)> = (0..runs.max(1))
        .map(|_| run(scratch, mb, edits, link_mb_s * 1_000_000))
        .collect::<Result<_>>()?;
    rounds.sort_by(|a, b| (a.0.up_s + a.0.down_s).total_cmp(&(b.0.up_s + b.0.down_s)));
    let (with, without) = rounds[rounds.len() / 2];
    let file = (mb << 20) as f64;
    out.push_str(&format!(
        "\n{mb} MiB file, {edits} scattered 1 KiB edits, A up then B down at {link_mb_s} MB/s, \
         median of {runs}\n\
         | blocks | up s | down s | MB up | MB down | of the file, up / down |\n\
         |---|---:|---:|---:|---:|---:|\n"
    ));
    for (name, r) in [("deltas", with), ("whole", without)] {
        out.push_str(&format!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} % / {:.2} % |\n",
            r.up_s,
            r.down_s,
            r.up_bytes / 1e6,
            r.down_bytes / 1e6,
            r.up_bytes / file * 100.0,
            r.down_bytes / file * 100.0
        ));
    }
    Ok(out)
}
