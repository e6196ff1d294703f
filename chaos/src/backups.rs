//! Backups during the crash harness's load: with `--backup`, each cycle asks the server for
//! an online backup once the load is under way, while its uploads and commits run, and the
//! kill comes its random time after the backup has answered. A
//! backup the kill did not interrupt is checked after the cycle: it passes
//! `holdalld fsck`, and served by its own holdalld it holds, byte-exact, every version
//! acknowledged before the cycle's load (and so before the backup) began.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use holdall_benches::http_client::Conn;
use holdall_proto::api::{BackupRequest, Jid, ListEntry, NsId};
use holdall_proto::{BlockHash, FileVersion};

use crate::ledger::{BlockSpec, Book};

/// The versions acknowledged before a backup began: path → (JID, version).
pub type Acked = BTreeMap<String, (Jid, FileVersion)>;

/// What every book has acknowledged so far.
pub fn acked(books: &[Book]) -> Acked {
    books
        .iter()
        .flat_map(|b| b.paths.iter())
        .filter_map(|(path, state)| {
            let (jid, v) = state.acked.as_ref()?;
            let version = FileVersion {
                kind: v.kind,
                blocklist: v.blocklist.clone(),
                size: v.size,
                mtime_ms: 0,
            };
            Some((path.clone(), (*jid, version)))
        })
        .collect()
}

/// Asks the server at `addr` (whose data folder is `data`) to back up into `to`; false if
/// the call did not complete (the kill came first).
pub fn take(addr: &str, data: &Path, to: &Path) -> bool {
    let Ok(admin) = std::fs::read_to_string(data.join("admin.token")) else {
        return false;
    };
    let Ok(body) = serde_json::to_vec(&BackupRequest {
        to: to.to_string_lossy().into_owned(),
    }) else {
        return false;
    };
    let answer = Conn::connect(addr)
        .and_then(|mut c| c.request("POST", "/v1/admin/backup", admin.trim(), &[&body]));
    matches!(answer, Ok((200, _)))
}

/// How the crash harness lists a namespace's rows and reads a row's blocks back.
pub struct Reader<L, R> {
    /// Every row of the namespace, by path.
    pub list: L,
    /// Reads a row's blocks and checks them; the bytes read.
    pub read_back: R,
}

/// Checks the backup in `dir`: fsck clean, then served, every version of `acked` there
/// (at its JID or a later one) and readable at its JID; the versions read.
pub fn check<L, R>(
    holdalld: &Path,
    dir: &Path,
    shards: usize,
    ns: NsId,
    acked: &Acked,
    reader: Reader<L, R>,
) -> Result<u64>
where
    L: Fn(&mut Conn) -> Result<BTreeMap<String, ListEntry>>,
    R: Fn(&mut Conn, &ListEntry) -> Result<u64>,
{
    let out = Command::new(holdalld)
        .args(["fsck", "--data"])
        .arg(dir)
        .output()
        .context("running holdalld fsck")?;
    ensure!(
        out.status.success(),
        "the backup in {} does not pass fsck: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    let log = dir.with_extension("log");
    let daemon = crate::daemon::Daemon::start(holdalld, dir, shards, &[], &log)?;
    let mut conn = Conn::connect(&daemon.addr)?;
    let rows = (reader.list)(&mut conn)?;
    for (path, (jid, version)) in acked {
        let row = rows
            .get(path)
            .with_context(|| format!("{path} (acknowledged at jid {jid}) is not in the backup"))?;
        ensure!(
            row.jid >= *jid,
            "{path}: the backup has jid {} but {jid} was acknowledged before it began",
            row.jid
        );
        let at = ListEntry {
            ns,
            jid: *jid,
            path: path.clone(),
            version: version.clone(),
        };
        (reader.read_back)(&mut conn, &at)
            .with_context(|| format!("reading {path} at jid {jid} from the backup"))?;
    }
    daemon.stop()?;
    Ok(acked.len() as u64)
}

/// Where cycle `cycle`'s backup goes.
pub fn folder(dir: &Path, seed: u64, cycle: u64) -> PathBuf {
    dir.join(format!("backup-{seed}-{cycle}"))
}

/// The blocks the load made, by hash (to check what a backup serves).
pub fn specs(books: &[Book]) -> HashMap<BlockHash, BlockSpec> {
    books
        .iter()
        .flat_map(|b| b.specs.iter().map(|(h, spec)| (*h, *spec)))
        .collect()
}
