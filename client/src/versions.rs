//! `holdall history`, `restore`, `deleted`, `undelete` and `rewind`: the versions the server
//! keeps of a synced folder's files, shown and brought back. They talk to the server only: a running
//! `holdall sync` sees a restore as any other remote change and downloads it.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use holdall_proto::api::{
    DeletedEntry, DeletedRequest, EntryKind, HistoryRequest, HistoryVersion, Jid, NsId,
    RestoreRequest, RetrieveBatchRequest, RetrieveItem, RewindChange, RewindRequest,
};
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::retrieved::Retrieved;
use holdall_proto::BlockHash;

use crate::local::root::find_root;
use crate::local::tree::{Layout, Place};
use crate::net::api::Api;

/// Versions asked for per history call.
const HISTORY_PAGE: u32 = 1000;
/// Most versions one command reads: a path edited every minute for two years.
const VERSIONS_MAX: usize = 1_000_000;

/// A file of a synced folder as the server knows it.
struct Target {
    ns: NsId,
    path: String,
    /// As the user named it, for messages.
    shown: String,
}

fn layout(api: &Api) -> Result<Layout> {
    let account = api.account()?;
    Ok(Layout {
        root_ns: account.root_ns,
        mounts: account.mounts,
    })
}

/// Where the local `file` lives on the server.
fn target(api: &Api, file: &Path) -> Result<Target> {
    let (_, local) = find_root(file)?;
    if local.is_empty() {
        bail!("{} is the synced folder itself, not a file", file.display());
    }
    match layout(api)?.place(&local) {
        Place::In(ns, path) => Ok(Target {
            ns,
            path,
            shown: file.display().to_string(),
        }),
        Place::MountPoint(_) => bail!(
            "{} is where a shared folder is mounted; it has no versions of its own",
            file.display()
        ),
    }
}

/// Every retained version of `t`, newest first.
fn versions(api: &Api, t: &Target) -> Result<Vec<HistoryVersion>> {
    let mut all = Vec::new();
    let mut before_jid = None;
    loop {
        let page = api.history(&HistoryRequest {
            ns: t.ns,
            path: t.path.clone(),
            limit: Some(HISTORY_PAGE),
            before_jid,
        })?;
        before_jid = page.versions.last().map(|v| v.jid);
        all.extend(page.versions);
        if !page.has_more || before_jid.is_none() || all.len() >= VERSIONS_MAX {
            return Ok(all);
        }
    }
}

/// A time in ms since the epoch as local time.
pub fn local_time(ms: Option<u64>) -> String {
    ms.and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// `holdall history FILE`: a table, or the versions as JSON.
pub fn history(api: &Api, file: &Path, as_json: bool) -> Result<()> {
    let t = target(api, file)?;
    let all = versions(api, &t)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = serde_json::json!({"ns": t.ns, "path": t.path, "versions": all});
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    if all.is_empty() {
        eprintln!("holdall: the server has no versions of {}", t.shown);
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:19}  {:>14}  {:12}  DEVICE",
        "JID", "COMMITTED", "SIZE", "HASH"
    )?;
    for v in &all {
        let (size, hash) = match v.version.kind {
            EntryKind::File => (
                v.version.size.to_string(),
                v.content_hash
                    .map_or(String::new(), |h| h.to_hex()[..12].to_string()),
            ),
            EntryKind::Dir => ("folder".into(), String::new()),
            EntryKind::Deleted => ("deleted".into(), String::new()),
        };
        writeln!(
            out,
            "{:>8}  {:19}  {:>14}  {:12}  {}",
            v.jid,
            local_time(v.committed_ms),
            size,
            hash,
            v.device.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// Which version `restore` brings back.
pub enum Which {
    /// By JID.
    Jid(Jid),
    /// The version that was the latest at this time (ms since the epoch).
    At(u64),
}

/// `holdall restore FILE`: version `which` as a new version on the server, or, with `to`,
/// written to the local file `to` with nothing changed on the server.
pub fn restore(api: &Api, file: &Path, which: Which, to: Option<&Path>) -> Result<()> {
    let t = target(api, file)?;
    let all = versions(api, &t)?;
    let chosen = match which {
        Which::Jid(jid) => all.iter().find(|v| v.jid == jid).ok_or_else(|| {
            anyhow!(
                "the server keeps no version {jid} of {} (see `holdall history`)",
                t.shown
            )
        })?,
        Which::At(ms) => all
            .iter()
            .find(|v| v.committed_ms.is_some_and(|c| c <= ms))
            .ok_or_else(|| anyhow!("the server keeps no version of {} from that time", t.shown))?,
    };
    if chosen.version.kind != EntryKind::File {
        bail!(
            "version {} of {} is a {}, not a file",
            chosen.jid,
            t.shown,
            match chosen.version.kind {
                EntryKind::Dir => "folder",
                _ => "deletion",
            }
        );
    }
    if let Some(out) = to {
        download(api, &t, chosen, out)?;
        eprintln!(
            "holdall: wrote version {} of {} to {}",
            chosen.jid,
            t.shown,
            out.display()
        );
        return Ok(());
    }
    let latest = all.first().map(|v| v.jid);
    let jid = restore_version(api, &t, chosen.jid, latest)?;
    eprintln!(
        "holdall: restored {} to version {} (now version {jid})",
        t.shown, chosen.jid
    );
    Ok(())
}

fn restore_version(api: &Api, t: &Target, jid: Jid, latest: Option<Jid>) -> Result<Jid> {
    let answer = api
        .restore(&RestoreRequest {
            ns: t.ns,
            path: t.path.clone(),
            jid,
            parent_jid: latest,
        })
        .with_context(|| format!("restoring {}", t.shown))?;
    Ok(answer.jid)
}

/// Writes version `v` of `t` to `out` through a temporary file beside it, every block
/// checked against its hash.
fn download(api: &Api, t: &Target, v: &HistoryVersion, out: &Path) -> Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    let mut answer = Retrieved::default();
    for hash in &v.version.blocklist {
        let request = RetrieveBatchRequest {
            items: vec![RetrieveItem {
                ns: t.ns,
                path: t.path.clone(),
                jid: Some(v.jid),
                prefetch: false,
                hashes: vec![*hash],
                signatures: Default::default(),
                bases: Default::default(),
            }],
            wait_ms: None,
        };
        api.retrieve_batch(&request, BLOCK_BYTES_MAX as u64, &mut answer)?;
        let frame = answer
            .frames()
            .next()
            .ok_or_else(|| anyhow!("the server answered no block for {}", t.shown))?;
        let data = frame.payload.data();
        if frame.status != RetrieveStatus::Ok || BlockHash::of(data) != *hash {
            bail!(
                "the server could not serve block {} of version {} of {}",
                hash.to_hex(),
                v.jid,
                t.shown
            );
        }
        tmp.1.write_all(data)?;
    }
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// A new file in `dir` with a name no one else uses, and its path.
fn tempfile_in(dir: &Path) -> Result<(std::path::PathBuf, std::fs::File)> {
    for n in 0..1000u32 {
        let path = dir.join(format!(".holdall-restore-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating a file in {}", dir.display()))
            }
        }
    }
    bail!("no free temporary name in {}", dir.display())
}

/// `holdall undelete PATH`: the last version before the path's deletion, back.
pub fn undelete(api: &Api, file: &Path) -> Result<()> {
    let t = target(api, file)?;
    let all = versions(api, &t)?;
    let Some(latest) = all.first() else {
        bail!("the server has no versions of {}", t.shown);
    };
    if latest.version.kind != EntryKind::Deleted {
        bail!("{} is not deleted on the server", t.shown);
    }
    let last = all
        .iter()
        .find(|v| v.version.kind != EntryKind::Deleted)
        .filter(|v| v.version.kind == EntryKind::File)
        .ok_or_else(|| {
            anyhow!(
                "no version of {} before its deletion is kept any more",
                t.shown
            )
        })?;
    let jid = restore_version(api, &t, last.jid, Some(latest.jid))?;
    eprintln!(
        "holdall: undeleted {} (version {}, now version {jid})",
        t.shown, last.jid
    );
    Ok(())
}

/// `holdall deleted [DIR]`: deleted files under `dir` the server can still bring back, by
/// local path.
pub fn deleted(api: &Api, dir: &Path, as_json: bool) -> Result<()> {
    let (_, local) = find_root(dir)?;
    let layout = layout(api)?;
    let mut found: Vec<(String, DeletedEntry)> = Vec::new();
    for (ns, path) in folders_under(&layout, &local) {
        let path = Some(path).filter(|p| !p.is_empty());
        for entry in deleted_in(api, ns, path)? {
            if let Some(shown) = layout.local(ns, &entry.path) {
                found.push((shown, entry));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    print_deleted(&found, as_json)
}

/// The server folders the local folder `local` shows: its own place, and the whole of
/// every namespace mounted under it (`""` is a namespace's root).
fn folders_under(layout: &Layout, local: &str) -> Vec<(NsId, String)> {
    let mut folders = vec![match layout.place(local) {
        Place::In(ns, path) => (ns, path),
        Place::MountPoint(ns) => (ns, String::new()),
    }];
    let prefix = format!("{local}/");
    for m in &layout.mounts {
        if local.is_empty() || m.path.starts_with(&prefix) {
            folders.push((m.ns, String::new()));
        }
    }
    folders
}

/// Every restorable deleted file of `ns` under `path`.
fn deleted_in(api: &Api, ns: NsId, path: Option<String>) -> Result<Vec<DeletedEntry>> {
    let mut all: Vec<DeletedEntry> = Vec::new();
    loop {
        let page = api.deleted(&DeletedRequest {
            ns,
            path: path.clone(),
            limit: Some(1000),
            after_path: all.last().map(|e| e.path.clone()),
        })?;
        let more = page.has_more && !page.entries.is_empty();
        all.extend(page.entries);
        if !more || all.len() >= VERSIONS_MAX {
            return Ok(all);
        }
    }
}

fn print_deleted(found: &[(String, DeletedEntry)], as_json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let entries: Vec<_> = found
            .iter()
            .map(|(local, e)| {
                serde_json::json!({"path": local, "deleted_jid": e.deleted_jid,
                    "deleted_ms": e.deleted_ms, "last_jid": e.last_jid, "size": e.size})
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(entries))?;
        return Ok(());
    }
    if found.is_empty() {
        eprintln!("holdall: no deleted files to bring back here");
        return Ok(());
    }
    writeln!(out, "{:19}  {:>14}  PATH", "DELETED", "SIZE")?;
    for (local, e) in found {
        writeln!(
            out,
            "{:19}  {:>14}  {local}",
            local_time(e.deleted_ms),
            e.size
        )?;
    }
    Ok(())
}

/// Where `holdall rewind` goes back to.
pub enum Point {
    /// Right after this JID (of the one namespace the folder is in).
    Jid(Jid),
    /// This time, ms since the epoch.
    Ms(u64),
}

/// Changes shown before a rewind asks to go ahead.
const CHANGES_SHOWN_MAX: usize = 50;

/// `holdall rewind DIR`: says what going back to `point` changes, asks unless `yes`, then
/// rewinds each namespace the folder shows.
pub fn rewind(api: &Api, dir: &Path, point: Point, yes: bool) -> Result<bool> {
    let (_, local) = find_root(dir)?;
    let layout = layout(api)?;
    let folders = folders_under(&layout, &local);
    if matches!(point, Point::Jid(_)) && folders.len() > 1 {
        bail!(
            "{} spans {} namespaces (shared folders) and a JID names a point in one: use --to TIME",
            dir.display(),
            folders.len()
        );
    }
    let ask = |ns: NsId, path: &str, dry_run: bool| RewindRequest {
        ns,
        path: path.to_owned(),
        to_jid: match point {
            Point::Jid(j) => Some(j),
            Point::Ms(_) => None,
        },
        to_ms: match point {
            Point::Ms(ms) => Some(ms),
            Point::Jid(_) => None,
        },
        dry_run,
    };
    let mut planned: Vec<(String, RewindChange)> = Vec::new();
    for (ns, path) in &folders {
        let answer = api.rewind(&ask(*ns, path, true))?;
        for c in answer.changes.unwrap_or_default() {
            if let Some(shown) = layout.local(*ns, &c.path) {
                planned.push((shown, c));
            }
        }
    }
    if planned.is_empty() {
        eprintln!("holdall: {} is already as it was then", dir.display());
        return Ok(true);
    }
    show_plan(&planned);
    if !yes && !confirmed()? {
        eprintln!("holdall: nothing changed");
        return Ok(false);
    }
    let (mut restored, mut deleted) = (0, 0);
    for (ns, path) in &folders {
        let answer = api.rewind(&ask(*ns, path, false))?;
        restored += answer.restored;
        deleted += answer.deleted;
    }
    eprintln!(
        "holdall: rewound {}: {restored} restored, {deleted} deleted",
        dir.display()
    );
    Ok(true)
}

fn show_plan(planned: &[(String, RewindChange)]) {
    let deletions = planned
        .iter()
        .filter(|(_, c)| c.kind == EntryKind::Deleted)
        .count();
    eprintln!(
        "holdall: the rewind restores {} and deletes {deletions} path(s):",
        planned.len() - deletions
    );
    for (local, c) in planned.iter().take(CHANGES_SHOWN_MAX) {
        let what = match c.kind {
            EntryKind::File => format!("restore  {} bytes", c.size),
            EntryKind::Dir => "restore  folder".into(),
            EntryKind::Deleted => "delete".into(),
        };
        eprintln!("  {what:24}  {local}");
    }
    if planned.len() > CHANGES_SHOWN_MAX {
        eprintln!("  … and {} more", planned.len() - CHANGES_SHOWN_MAX);
    }
}

/// Asks on stderr and reads a yes from stdin.
fn confirmed() -> Result<bool> {
    eprint!("Go ahead? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// A time given on the command line, as ms since the epoch: RFC 3339
/// (`2026-12-03T10:00:00Z`), local `YYYY-MM-DD[ HH:MM[:SS]]`, or an age (`90m`, `2h`, `3d`
/// ago).
pub fn parse_time(text: &str) -> Result<u64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return u64::try_from(t.timestamp_millis()).context("a time before 1970");
    }
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    if let Some(naive) = naive {
        let t = naive
            .and_local_timezone(chrono::Local)
            .earliest()
            .ok_or_else(|| anyhow!("{text:?} does not exist in the local time zone"))?;
        return u64::try_from(t.timestamp_millis()).context("a time before 1970");
    }
    let age = holdall_proto::duration::parse_duration_s(text).map_err(|_| {
        anyhow!("{text:?}: give a time as 2026-12-03T10:00:00Z, 2026-12-03 10:00, or an age as 90m, 2h, 3d")
    })?;
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    Ok(now.saturating_sub(age.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        assert_eq!(
            parse_time("2026-12-03T10:00:00Z").unwrap(),
            1_796_292_000_000
        );
        assert_eq!(
            parse_time("2026-12-03T11:00:00+01:00").unwrap(),
            1_796_292_000_000
        );
        let local = parse_time("2026-12-03 10:00").unwrap();
        assert_eq!(parse_time("2026-12-03 10:00:00").unwrap(), local);
        assert!(parse_time("2026-12-03").unwrap() <= local);
        let now = chrono::Utc::now().timestamp_millis() as u64;
        let two_hours = parse_time("2h").unwrap();
        assert!(now - two_hours >= 7_200_000 && now - two_hours < 7_260_000);
        for bad in ["", "yesterday", "2h30", "1.5h", "2026-13-01"] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
