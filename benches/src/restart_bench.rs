//! The restart benchmark behind `holdall-bench restart`: a real holdalld with one namespace
//! per shard, each filled with folder rows through commit_batch, stopped, and started again;
//! the time from the start to its "listening" line.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use holdall_proto::api::{
    CommitBatchRequest, CommitBatchResponse, CommitRequest, CommitResult, CreateNamespaceRequest,
    CreateNamespaceResponse, NsId,
};
use holdall_proto::limits::COMMIT_BATCH_MAX;
use holdall_proto::FileVersion;

use crate::http_client::{host_port, Conn};
use crate::sync_bench::start_server_with;

/// Fills a fresh data folder under `dir` with `rows_per_shard` rows in each of `shards`
/// namespaces, then restarts holdalld `runs` times; the seconds of each restart.
pub fn run(dir: &Path, shards: usize, rows_per_shard: usize, runs: usize) -> Result<Vec<f64>> {
    let scratch = tempfile::tempdir_in(dir)?;
    let data = scratch.path().join("data");
    let shard_flag = shards.to_string();
    let flags = ["--shards", shard_flag.as_str()];
    {
        let (_daemon, url) = start_server_with(&data, &flags)?;
        let token = std::fs::read_to_string(data.join("admin.token"))?;
        let mut conn = Conn::connect(&host_port(&url)?)?;
        // Namespaces 1 (the admin's root) to `shards` land on every shard once.
        let mut namespaces: Vec<NsId> = vec![1];
        for i in 1..shards {
            let body = serde_json::to_vec(&CreateNamespaceRequest {
                mount_path: format!("restart-bench-{i}"),
                adopt_existing: false,
            })?;
            let answer = post(&mut conn, "/v1/namespaces", token.trim(), &body)?;
            namespaces.push(serde_json::from_slice::<CreateNamespaceResponse>(&answer)?.ns);
        }
        for ns in namespaces {
            fill(&mut conn, token.trim(), ns, rows_per_shard)?;
        }
    }
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            let daemon = start_server_with(&data, &flags)?;
            let seconds = started.elapsed().as_secs_f64();
            drop(daemon);
            Ok(seconds)
        })
        .collect()
}

/// Commits `rows` folder rows into `ns`, a batch at a time.
fn fill(conn: &mut Conn, token: &str, ns: NsId, rows: usize) -> Result<()> {
    for start in (0..rows).step_by(COMMIT_BATCH_MAX) {
        let commits = (start..(start + COMMIT_BATCH_MAX).min(rows))
            .map(|i| CommitRequest {
                ns,
                path: format!("d{i}"),
                version: FileVersion::dir(),
                parent_jid: None,
            })
            .collect();
        let body = serde_json::to_vec(&CommitBatchRequest { commits })?;
        let answer = post(conn, "/v1/commit_batch", token, &body)?;
        let done: CommitBatchResponse = serde_json::from_slice(&answer)?;
        ensure!(
            done.results
                .iter()
                .all(|r| matches!(r, CommitResult::Ok { .. })),
            "a fill commit was refused"
        );
    }
    Ok(())
}

fn post(conn: &mut Conn, path: &str, token: &str, body: &[u8]) -> Result<Vec<u8>> {
    let (status, answer) = conn.request("POST", path, token, &[body])?;
    ensure!(
        status == 200,
        "{path}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(answer)
}
