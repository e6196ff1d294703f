//! Forced garbage collections during the crash harness's load, and the check that every
//! version the server still lists within its retention reads back byte-exact.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use holdall_benches::http_client::Conn;
use holdall_proto::api::{EntryKind, GcResponse, HistoryRequest, HistoryResponse, ListEntry, NsId};
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::BlockHash;

use crate::workload::Violation;

/// Runs `POST /v1/admin/gc` every `every` until `stop` is set or the server is gone. How
/// many collections completed, or the answer the protocol forbids.
pub fn collect_until(
    addr: &str,
    data: &Path,
    every: Duration,
    stop: &AtomicBool,
) -> Result<u64, Violation> {
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .map_err(|e| Violation(format!("reading the admin token: {e}")))?;
    let Ok(mut conn) = Conn::connect(addr) else {
        return Ok(0);
    };
    let mut done = 0;
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Ok((status, answer)) = conn.request("POST", "/v1/admin/gc", admin.trim(), &[]) else {
            return Ok(done);
        };
        if status != 200 || serde_json::from_slice::<GcResponse>(&answer).is_err() {
            return Err(Violation(format!(
                "admin/gc answered {status}: {}",
                String::from_utf8_lossy(&answer)
            )));
        }
        done += 1;
        next = Instant::now() + every;
    }
    Ok(done)
}

/// A block the server answered `not_found` (or another refusal) for a version it listed.
#[derive(Debug, thiserror::Error)]
#[error("block {0} came back {1:?}")]
pub struct NotServed(pub BlockHash, pub RetrieveStatus);

/// What [`check_versions`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct VersionsChecked {
    /// Versions read back byte-exact.
    pub read: u64,
    /// Versions refused that `history` no longer listed when asked again: they left the
    /// retention between the listing and the read, which is allowed.
    pub aged_out: u64,
}

/// Reads back, with `read`, every file version `history` lists for each of `paths`. A
/// version refused is a violation unless `history`, asked again, no longer lists it.
pub fn check_versions(
    conn: &mut Conn,
    token: &str,
    ns: NsId,
    paths: &[&String],
    mut read: impl FnMut(&mut Conn, &ListEntry) -> Result<u64>,
) -> Result<VersionsChecked> {
    let mut seen = VersionsChecked::default();
    for path in paths {
        for row in file_versions(conn, token, ns, path)? {
            let Err(e) = read(conn, &row) else {
                seen.read += 1;
                continue;
            };
            let refused = e.downcast_ref::<NotServed>().is_some();
            let listed = file_versions(conn, token, ns, path)?
                .iter()
                .any(|v| v.jid == row.jid);
            if !refused || listed {
                return Err(e.context(format!(
                    "reading back retained version {} of {}",
                    row.jid, row.path
                )));
            }
            seen.aged_out += 1;
        }
    }
    Ok(seen)
}

/// Every file version `history` lists for `path`, as rows to read back by JID.
fn file_versions(conn: &mut Conn, token: &str, ns: NsId, path: &str) -> Result<Vec<ListEntry>> {
    let mut rows = Vec::new();
    let mut before_jid = None;
    loop {
        let request = HistoryRequest {
            ns,
            path: path.to_owned(),
            limit: None,
            before_jid,
        };
        let body = serde_json::to_vec(&request)?;
        let (status, answer) = conn.request("POST", "/v1/history", token, &[&body])?;
        ensure!(
            status == 200,
            "history of {path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let page: HistoryResponse = serde_json::from_slice(&answer)?;
        before_jid = page.versions.last().map(|v| v.jid);
        rows.extend(
            page.versions
                .into_iter()
                .filter(|v| v.version.kind == EntryKind::File)
                .map(|v| ListEntry {
                    ns,
                    jid: v.jid,
                    path: path.to_owned(),
                    version: v.version,
                }),
        );
        if !page.has_more {
            return Ok(rows);
        }
    }
}
