//! `holdall-bench versus-nginx`: a real holdalld and nginx (WebDAV) on this machine, fed the
//! same unique 4 MiB blocks by the same client threads in one invocation, each run
//! alternating between them. Per path: GB/s and the server's core-seconds per GB.
//!
//! holdalld stores with store_batch (verified, sealed, acknowledged after fdatasync) and
//! serves with retrieve_batch. Its block cache takes blocks as they are stored and served;
//! it is sized to hold one run's blocks, as nginx's page cache holds its files, and is kept
//! full: before the runs a set is stored and retrieved once (the cache's first fill takes
//! fresh memory from the kernel, which later reads reuse), and each run stores a new set,
//! then retrieves the set stored before it, which has left the cache: cold (from the log,
//! taken into the cache), then again (from the cache). nginx stores with PUT into the page cache (and, as a second
//! figure, with a syncfs after the last PUT) and serves with GET: cold after its files were
//! evicted from the page cache, then again.

use crate::http_client::Target;
use std::path::Path;

use anyhow::Result;

use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;

use crate::load;
use crate::nginx::Nginx;
use crate::server_cpu::{measured, Measured, ServerCpu};
use crate::sync_bench::{start_server_with, Daemon};
use crate::{http_client, median};

/// The paths measured, each server's figure per run.
#[derive(Debug, Default)]
pub struct Report {
    /// holdalld store_batch.
    pub holdall_store: Vec<Measured>,
    /// holdalld retrieve_batch, first read of the blocks since they were stored.
    pub holdall_cold: Vec<Measured>,
    /// holdalld retrieve_batch of the same blocks again.
    pub holdall_warm: Vec<Measured>,
    /// nginx PUT, into the page cache.
    pub nginx_put: Vec<Measured>,
    /// nginx PUT followed by a syncfs, timed together.
    pub nginx_put_synced: Vec<Measured>,
    /// nginx GET after its files were evicted from the page cache.
    pub nginx_cold: Vec<Measured>,
    /// nginx GET of the same files again.
    pub nginx_warm: Vec<Measured>,
}

impl Report {
    /// The latest run's figures, GB/s and core-s/GB, on one line.
    fn last_run(&self) -> String {
        let f = |v: &[Measured]| {
            v.last().map_or(String::new(), |m| {
                format!("{:.2} ({:.2})", m.gbps, m.core_s_per_gb)
            })
        };
        format!(
            "holdalld store {}, cold {}, again {}; nginx PUT {}, cold {}, again {}",
            f(&self.holdall_store),
            f(&self.holdall_cold),
            f(&self.holdall_warm),
            f(&self.nginx_put),
            f(&self.nginx_cold),
            f(&self.nginx_warm)
        )
    }
}

/// The median GB/s and core-seconds per GB of `runs`.
pub fn medians(runs: &[Measured]) -> (f64, f64) {
    let mut rates: Vec<f64> = runs.iter().map(|m| m.gbps).collect();
    let mut costs: Vec<f64> = runs.iter().map(|m| m.core_s_per_gb).collect();
    (median(&mut rates), median(&mut costs))
}

/// A running holdalld for the comparison, with the admin's token and root namespace.
struct Holdalld {
    _daemon: Daemon,
    _data: tempfile::TempDir,
    addr: String,
    token: String,
    ns: holdall_proto::api::NsId,
    cpu: ServerCpu,
}

impl Holdalld {
    fn start(scratch: &Path, cache_bytes: u64) -> Result<Holdalld> {
        let data = tempfile::tempdir_in(scratch)?;
        let cache = cache_bytes.to_string();
        let (daemon, url) = start_server_with(data.path(), &["--block-cache", &cache])?;
        let addr = http_client::host_port(&url)?;
        let token = std::fs::read_to_string(data.path().join("admin.token"))?
            .trim()
            .to_owned();
        let ns = load::root_ns(&Target::plain(&addr), &token)?;
        let cpu = ServerCpu::listening_on(port_of(&addr)?)?;
        Ok(Holdalld {
            _daemon: daemon,
            _data: data,
            addr,
            token,
            ns,
            cpu,
        })
    }

    /// Stores and commits `set` as file `path`; what it cost.
    fn store(&self, set: &[load::Block], path: &str, concurrency: usize) -> Result<Measured> {
        let (addr, token) = (self.addr.as_str(), self.token.as_str());
        let store = measured(&self.cpu, || {
            load::ingest(&Target::plain(addr), token, set, concurrency)
        })?;
        load::commit_file(&Target::plain(addr), token, self.ns, path, set)?;
        Ok(store)
    }

    /// Retrieves the blocks of file `path`.
    fn fetch(&self, path: &str, hashes: &[BlockHash], concurrency: usize) -> Result<Measured> {
        let (addr, token) = (self.addr.as_str(), self.token.as_str());
        measured(&self.cpu, || {
            load::fetch(
                &Target::plain(addr),
                token,
                self.ns,
                path,
                hashes,
                concurrency,
            )
        })
    }
}

fn port_of(addr: &str) -> Result<u16> {
    use anyhow::Context;
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .context("an address without a port")
}

/// Runs the comparison `runs` times with `blocks` new blocks each, `concurrency` requests
/// in flight against either server.
pub fn run(scratch: &Path, blocks: usize, concurrency: usize, runs: usize) -> Result<Report> {
    // A set's blocks and a tenth more (the shards' shares of a set differ by a few
    // percent, and a least-recently-used cache too small for a scan misses on all of it),
    // not two sets.
    let cache = (blocks * BLOCK_BYTES_MAX) as u64 * 11 / 10;
    let holdalld = Holdalld::start(scratch, cache)?;
    let nginx = Nginx::start(scratch)?;
    let nginx_cpu = ServerCpu::listening_on(port_of(&nginx.addr)?)?;
    let mut report = Report::default();
    let mut before: Option<(String, Vec<BlockHash>)> = None;
    for i in 0..runs + 2 {
        let set = load::unique_blocks(blocks);
        let path = format!("versus-nginx/{i}");
        let store = holdalld.store(&set, &path, concurrency)?;
        // The set before this one: its stored blocks left the cache (they have a bound of
        // their own) as this one was stored.
        let Some((cold_path, cold)) = before.replace((path, hashes(&set))) else {
            continue;
        };
        if i == 1 {
            // The cache's first fill takes fresh memory from the kernel; later reads reuse
            // what they evict. Fill it once, unmeasured.
            holdalld.fetch(&cold_path, &cold, concurrency)?;
            continue;
        }
        report.holdall_store.push(store);
        report
            .holdall_cold
            .push(holdalld.fetch(&cold_path, &cold, concurrency)?);
        report
            .holdall_warm
            .push(holdalld.fetch(&cold_path, &cold, concurrency)?);
        nginx_run(&nginx, &nginx_cpu, &set, concurrency, &mut report)?;
        println!("  run {}: {}", i - 1, report.last_run());
    }
    Ok(report)
}

fn hashes(set: &[load::Block]) -> Vec<BlockHash> {
    set.iter().map(|b| b.hash).collect()
}

fn nginx_run(
    nginx: &Nginx,
    cpu: &ServerCpu,
    set: &[load::Block],
    concurrency: usize,
    report: &mut Report,
) -> Result<()> {
    let put = measured(cpu, || nginx.put(set, concurrency))?;
    let started = std::time::Instant::now();
    nginx.sync()?;
    let seconds = put.seconds + started.elapsed().as_secs_f64();
    // The writeback is the kernel's (its flusher threads), not nginx's: no CPU is added.
    report.nginx_put_synced.push(Measured {
        gbps: put.gbps * put.seconds / seconds,
        seconds,
        ..put
    });
    report.nginx_put.push(put);
    nginx.evict()?;
    report
        .nginx_cold
        .push(measured(cpu, || nginx.get(set, concurrency))?);
    report
        .nginx_warm
        .push(measured(cpu, || nginx.get(set, concurrency))?);
    Ok(())
}
