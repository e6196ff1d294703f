//! `holdall-bench tls`: what TLS costs. Two holdalld side by side, one plain and one serving
//! HTTPS with a certificate of a private CA made for the run; store_batch, retrieve_batch
//! (block cache off: every block read from the log) and a one-file A→B sync against each,
//! alternating which goes first, in one invocation.

use std::path::Path;

use anyhow::{Context, Result};
use holdall_proto::BlockHash;
use holdall_testkit::tls::{TestCa, Validity};

use crate::http_client::Target;
use crate::load;
use crate::median;
use crate::server_cpu::{measured, Measured, ServerCpu};
use crate::sync_bench::{self, start_server_with, Daemon, Mode};

/// One of the two servers under load.
struct Server {
    _daemon: Daemon,
    _data: tempfile::TempDir,
    target: Target,
    token: String,
    ns: holdall_proto::api::NsId,
    cpu: ServerCpu,
}

impl Server {
    fn start(scratch: &Path, flags: &[&str], ca: &Path) -> Result<Server> {
        let data = tempfile::tempdir_in(scratch)?;
        let mut all = vec!["--block-cache", "0"];
        all.extend_from_slice(flags);
        let (daemon, url) = start_server_with(data.path(), &all)?;
        let target = Target::parse(&url, Some(ca))?;
        let token = std::fs::read_to_string(data.path().join("admin.token"))?
            .trim()
            .to_owned();
        let ns = load::root_ns(&target, &token)?;
        let cpu = ServerCpu::listening_on(target.port()?)?;
        Ok(Server {
            _daemon: daemon,
            _data: data,
            target,
            token,
            ns,
            cpu,
        })
    }

    fn store(&self, set: &[load::Block], path: &str, concurrency: usize) -> Result<Measured> {
        let store = measured(&self.cpu, || {
            load::ingest(&self.target, &self.token, set, concurrency)
        })?;
        load::commit_file(&self.target, &self.token, self.ns, path, set)?;
        Ok(store)
    }

    fn fetch(&self, path: &str, hashes: &[BlockHash], concurrency: usize) -> Result<Measured> {
        measured(&self.cpu, || {
            load::fetch(
                &self.target,
                &self.token,
                self.ns,
                path,
                hashes,
                concurrency,
            )
        })
    }
}

/// Every run's figures, plain and TLS.
#[derive(Default)]
pub struct Report {
    /// store_batch runs: plain, TLS.
    pub store: [Vec<Measured>; 2],
    /// retrieve_batch runs: plain, TLS.
    pub fetch: [Vec<Measured>; 2],
    /// A's upload and B's download of the one file, seconds: plain, TLS.
    pub sync: [Vec<(f64, f64)>; 2],
}

/// Runs `runs` rounds of `blocks` new blocks and one `file_mib` file against both servers.
pub fn run(
    scratch: &Path,
    blocks: usize,
    concurrency: usize,
    runs: usize,
    file_mib: usize,
) -> Result<Report> {
    let keys = tempfile::tempdir_in(scratch)?;
    let ca = TestCa::new(keys.path());
    let pair = ca.issue(keys.path(), "server", "127.0.0.1", Validity::Current);
    let (cert, key) = (
        pair.cert.to_str().context("a UTF-8 path")?,
        pair.key.to_str().context("a UTF-8 path")?,
    );
    let tls_flags = ["--tls-cert", cert, "--tls-key", key];
    let servers = [
        Server::start(scratch, &[], &ca.pem)?,
        Server::start(scratch, &tls_flags, &ca.pem)?,
    ];
    let mut report = Report::default();
    for round in 0..runs {
        let set = load::unique_blocks(blocks);
        let path = format!("tls-bench/{round}");
        let hashes: Vec<_> = set.iter().map(|b| b.hash).collect();
        for i in order(round) {
            report.store[i].push(servers[i].store(&set, &path, concurrency)?);
        }
        drop(set);
        for i in order(round) {
            report.fetch[i].push(servers[i].fetch(&path, &hashes, concurrency)?);
        }
    }
    drop(servers);
    // The clients trust the run's CA (an http:// URL ignores it).
    std::env::set_var("HOLDALL_CA", &ca.pem);
    let flags: [&[&str]; 2] = [&[], &tls_flags];
    for round in 0..runs {
        for i in order(round) {
            let mut keep = sync_bench::Kept::default();
            let fill = |a: &Path| sync_bench::one_file(a, file_mib << 20);
            let t = sync_bench::run(scratch, flags[i], &fill, Mode::AfterA, &mut keep)?;
            report.sync[i].push((t.up_s, t.down_s));
        }
    }
    Ok(report)
}

/// Plain first on even rounds, TLS first on odd ones.
fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

impl Report {
    /// The Markdown table of medians.
    pub fn table(&self, file_mib: usize) -> String {
        let mut out = String::from(
            "| path | plain GB/s | plain server core-s/GB | TLS GB/s | TLS server core-s/GB | TLS / plain |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for (name, runs) in [
            ("store_batch", &self.store),
            ("retrieve_batch", &self.fetch),
        ] {
            let [(pg, pc), (tg, tc)] = [medians(&runs[0]), medians(&runs[1])];
            out += &format!(
                "| {name} | {pg:.2} | {pc:.2} | {tg:.2} | {tc:.2} | {:.2} |\n",
                tg / pg
            );
        }
        let gb = (file_mib << 20) as f64 / 1e9;
        for (name, pick) in [("A up", 0), ("B down", 1)] {
            let rate = |runs: &[(f64, f64)]| {
                let mut s: Vec<f64> = runs
                    .iter()
                    .map(|t| if pick == 0 { t.0 } else { t.1 })
                    .collect();
                gb / median(&mut s)
            };
            let (p, t) = (rate(&self.sync[0]), rate(&self.sync[1]));
            out += &format!(
                "| sync {file_mib} MiB file, {name} | {p:.2} | — | {t:.2} | — | {:.2} |\n",
                t / p
            );
        }
        out
    }
}

fn medians(runs: &[Measured]) -> (f64, f64) {
    let mut rates: Vec<f64> = runs.iter().map(|m| m.gbps).collect();
    let mut costs: Vec<f64> = runs.iter().map(|m| m.core_s_per_gb).collect();
    (median(&mut rates), median(&mut costs))
}
