//! `holdall-bench dropbox`: one file through the official Python SDK (read from disk into an
//! upload session up; downloaded to disk and synced down) against the same size through
//! `holdall sync` (A up, B down), on one HTTPS holdalld per round, in one invocation. The SDK is slower by design (Python, one
//! request at a time); holdalld's CPU per GB in each phase shows whether the server is
//! ever what holds it back.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use holdall_testkit::tls::{TestCa, Validity};

use crate::median;
use crate::server_cpu::ServerCpu;
use crate::sync_bench::{holdall, one_file, setup_with};

/// Bytes each SDK request carries: a multiple of 4 MiB, under the 150 MiB Dropbox allows.
const SDK_CHUNK_BYTES: usize = 64 << 20;

/// One phase: its seconds, holdalld's CPU seconds meanwhile, and the client's (the SDK's
/// Python process; not measured for `holdall`).
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    s: f64,
    cpu_s: f64,
    client_cpu_s: f64,
}

/// Every round's phases: holdall up, holdall down, SDK up, SDK down.
#[derive(Default)]
pub struct Report {
    phases: [Vec<Phase>; 4],
    bytes: u64,
}

fn timed(cpu: &ServerCpu, run: impl FnOnce() -> Result<(f64, f64)>) -> Result<Phase> {
    let before = cpu.seconds()?;
    let (s, client_cpu_s) = run()?;
    Ok(Phase {
        s,
        cpu_s: cpu.seconds()? - before,
        client_cpu_s,
    })
}

/// Runs `runs` rounds of a `file_mib` file each way, the SDK run by `python`.
pub fn run(scratch: &Path, file_mib: usize, runs: usize, python: &Path) -> Result<Report> {
    let keys = tempfile::tempdir_in(scratch)?;
    let ca = TestCa::new(keys.path());
    let pair = ca.issue(keys.path(), "server", "127.0.0.1", Validity::Current);
    let (cert, key) = (
        pair.cert.to_str().context("a UTF-8 path")?,
        pair.key.to_str().context("a UTF-8 path")?,
    );
    // The holdall clients trust the run's CA.
    std::env::set_var("HOLDALL_CA", &ca.pem);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("dropbox/sdk_bench.py");
    let bytes = file_mib << 20;
    let mut report = Report {
        bytes: bytes as u64,
        ..Report::default()
    };
    for _ in 0..runs {
        let setup = setup_with(scratch, &["--tls-cert", cert, "--tls-key", key])?;
        let host = setup.url.trim_start_matches("https://").to_owned();
        let port = host.rsplit(':').next().context("a port")?.parse()?;
        let cpu = ServerCpu::listening_on(port)?;
        one_file(&setup.a, bytes)?;
        let (url, token) = (setup.url.as_str(), setup.token.as_str());
        let sync = |dir: &Path| -> Result<(f64, f64)> {
            let t = std::time::Instant::now();
            holdall(url, token, &["sync", "--once"], Some(dir))?;
            Ok((t.elapsed().as_secs_f64(), f64::NAN))
        };
        report.phases[0].push(timed(&cpu, || sync(&setup.a))?);
        report.phases[1].push(timed(&cpu, || sync(&setup.b))?);
        let sdk_file = setup.dir.path().join("sdk.bin");
        let sdk = |phase: &str| -> Result<(f64, f64)> {
            let out = Command::new(python)
                .arg(&script)
                .arg(phase)
                .env_remove("REQUESTS_CA_BUNDLE")
                .env_remove("CURL_CA_BUNDLE")
                .env("DROPBOX_API_HOST", &host)
                .env("DROPBOX_API_CONTENT_HOST", &host)
                .env("DROPBOX_API_NOTIFY_HOST", &host)
                .env("HOLDALL_TOKEN", token)
                .env("HOLDALL_CA", &ca.pem)
                .env("BENCH_BYTES", bytes.to_string())
                .env("BENCH_CHUNK_BYTES", SDK_CHUNK_BYTES.to_string())
                .env("BENCH_FILE", &sdk_file)
                .output()
                .context("running the SDK (see --python)")?;
            if !out.status.success() {
                bail!(
                    "the SDK's {phase} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut numbers = text.split_whitespace().map(str::parse::<f64>);
            match (numbers.next(), numbers.next()) {
                (Some(s), Some(cpu)) => Ok((s?, cpu?)),
                _ => bail!("the SDK's {phase} printed {text:?}"),
            }
        };
        report.phases[2].push(timed(&cpu, || sdk("up"))?);
        report.phases[3].push(timed(&cpu, || sdk("down"))?);
    }
    Ok(report)
}

impl Report {
    /// The Markdown table of medians.
    pub fn table(&self) -> String {
        let gb = self.bytes as f64 / 1e9;
        let rate = |runs: &[Phase]| gb / median(&mut runs.iter().map(|p| p.s).collect::<Vec<_>>());
        let cost =
            |runs: &[Phase]| median(&mut runs.iter().map(|p| p.cpu_s / gb).collect::<Vec<_>>());
        let client = |runs: &[Phase]| {
            median(&mut runs.iter().map(|p| p.client_cpu_s / gb).collect::<Vec<_>>())
        };
        let mut out = String::from(
            "| direction | holdall GB/s | holdalld core-s/GB | SDK GB/s | holdalld core-s/GB | SDK process core-s/GB | SDK / holdall |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for (name, own, sdk) in [("up", 0, 2), ("down", 1, 3)] {
            let (h, s) = (rate(&self.phases[own]), rate(&self.phases[sdk]));
            out += &format!(
                "| {name} | {h:.2} | {:.2} | {s:.2} | {:.2} | {:.2} | {:.2} |\n",
                cost(&self.phases[own]),
                cost(&self.phases[sdk]),
                client(&self.phases[sdk]),
                s / h
            );
        }
        out
    }
}
