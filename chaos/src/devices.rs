//! The client scenario with real processes: one holdalld on loopback, two to four folders
//! synced by real `holdall sync --once` processes. A seeded schedule writes, overwrites,
//! deletes, renames and moves files and folders, runs syncs, kills syncs at random moments
//! (SIGKILL), and wipes a device's state folder. Then every device syncs until a whole pass
//! moves nothing, and the run checks that all folders hold the same files and that every
//! version written and not knowingly replaced or deleted on a device that held it is there.
//!
//! Every file a user writes starts with `holdall-chaos v<id>`, so a version can be traced
//! wherever it moves (renames, conflicted copies). Users edit a folder only while its sync
//! is not running, except for creating new files under fresh names: a user saving a file in
//! the very instant the client replaces it is a race no sync client can close, and would
//! make the run fail for the OS's timing rather than the client's logic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::daemon::{create_user, Daemon};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The holdalld binary.
    pub holdalld: PathBuf,
    /// The holdall binary.
    pub holdall: PathBuf,
    /// Scratch folder.
    pub dir: PathBuf,
    /// Fixes the schedule.
    pub seed: u64,
    /// Devices (synced folders), 2 to 4.
    pub devices: usize,
    /// Scheduled steps.
    pub steps: usize,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Syncs started.
    pub syncs: u64,
    /// Syncs killed with SIGKILL.
    pub kills: u64,
    /// State folders wiped.
    pub wipes: u64,
    /// Versions users wrote.
    pub written: u64,
    /// Of them, not knowingly replaced or deleted: all found at the end.
    pub kept: u64,
    /// Files in each folder at the end.
    pub files: u64,
    /// Passes of every device it took to settle.
    pub passes: u64,
}

/// Paths users write to (besides existing files).
const FILE_PATHS: [&str; 6] = [
    "a.txt",
    "b.bin",
    "docs/a.txt",
    "docs/b.txt",
    "docs/old/a.txt",
    "x/a.txt",
];
/// Folders users move things to.
const DIR_PATHS: [&str; 4] = ["docs", "docs/old", "x", "archive"];
/// Passes of every device before the run must have settled.
const SETTLE_PASSES_MAX: u64 = 8;
/// Longest a sync may run before the run fails.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

struct Device {
    dir: PathBuf,
    log: PathBuf,
    running: Option<Child>,
}

struct Run<'a> {
    opts: &'a Options,
    url: String,
    token: String,
    rng: fastrand::Rng,
    devices: Vec<Device>,
    next_id: u64,
    written: BTreeSet<u64>,
    superseded: BTreeSet<u64>,
    summary: Summary,
}

/// Runs the scenario; an error describes the broken rule and where the folders are.
pub fn run(opts: &Options) -> Result<Summary> {
    ensure!((2..=4).contains(&opts.devices), "2 to 4 devices");
    let root = opts.dir.join(format!("devices-{}", opts.seed));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let data = root.join("data");
    let server = Daemon::start(&opts.holdalld, &data, 2, &[], &root.join("holdalld.log"))?;
    let (token, _) = create_user(&server.addr, &data, "chaos")?;
    let devices = (0..opts.devices)
        .map(|i| {
            let dir = root.join(format!("device-{i}"));
            std::fs::create_dir_all(&dir)?;
            Ok(Device {
                log: root.join(format!("device-{i}.log")),
                dir,
                running: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut run = Run {
        opts,
        url: format!("http://{}", server.addr),
        token,
        rng: fastrand::Rng::with_seed(opts.seed),
        devices,
        next_id: 1,
        written: BTreeSet::new(),
        superseded: BTreeSet::new(),
        summary: Summary::default(),
    };
    let outcome = run
        .schedule()
        .and_then(|()| run.settle())
        .and_then(|()| run.check());
    for d in &mut run.devices {
        if let Some(mut c) = d.running.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    outcome.with_context(|| {
        format!(
            "seed {} broke a rule (replay: holdall-chaos devices --seed {} --devices {} --steps {}; folders and logs kept in {})",
            opts.seed,
            opts.seed,
            opts.devices,
            opts.steps,
            root.display()
        )
    })?;
    server.stop()?;
    std::fs::remove_dir_all(&root)?;
    Ok(run.summary)
}

impl Run<'_> {
    fn schedule(&mut self) -> Result<()> {
        for _ in 0..self.opts.steps {
            let who = self.rng.usize(..self.devices.len());
            let running = self.devices[who].running.is_some();
            match self.rng.u8(..100) {
                0..=44 if running => self.new_file(who)?,
                0..=44 => self.edit(who)?,
                45..=74 if running => self.finish(who)?,
                45..=74 => self.start_sync(who)?,
                75..=89 if running => self.kill(who)?,
                75..=89 => self.start_sync(who)?,
                _ if running => self.finish(who)?,
                _ => self.wipe(who)?,
            }
        }
        for who in 0..self.devices.len() {
            self.finish(who)?;
        }
        Ok(())
    }

    /// A new version's bytes: its header, then pseudo-random bytes (a few spanning two
    /// 4 MiB blocks, a few three, which go up by early stores while they are hashed).
    fn version(&mut self) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        self.written.insert(id);
        let len = match self.rng.u8(..100) {
            0..=2 => 5 << 20,
            3..=4 => (9 << 20) + 7,
            _ => self.rng.usize(..16 << 10),
        };
        let mut bytes = format!("holdall-chaos v{id}\n").into_bytes();
        bytes.extend(holdall_benches::payload(self.opts.seed ^ id, len));
        (id, bytes)
    }

    /// A file under a fresh name, safe while the device's sync runs.
    fn new_file(&mut self, who: usize) -> Result<()> {
        let (id, bytes) = self.version();
        std::fs::write(self.devices[who].dir.join(format!("new-{id}.txt")), bytes)?;
        Ok(())
    }

    fn edit(&mut self, who: usize) -> Result<()> {
        let dir = self.devices[who].dir.clone();
        let (files, folders) = walk(&dir)?;
        let existing: Vec<&String> = files.keys().chain(&folders).collect();
        match self.rng.u8(..10) {
            0..=4 => {
                let path = match self.rng.bool() || files.is_empty() {
                    true => FILE_PATHS[self.rng.usize(..FILE_PATHS.len())].to_string(),
                    false => files
                        .keys()
                        .nth(self.rng.usize(..files.len()))
                        .cloned()
                        .unwrap_or_default(),
                };
                let full = dir.join(&path);
                if folders.contains(&path) || full.parent().is_some_and(|p| p.is_file()) {
                    return Ok(());
                }
                if let Some(parent) = full.parent() {
                    if std::fs::create_dir_all(parent).is_err() {
                        return Ok(());
                    }
                }
                self.supersede(&full);
                let (_, bytes) = self.version();
                std::fs::write(&full, bytes)?;
            }
            5..=6 if !existing.is_empty() => {
                let path = existing[self.rng.usize(..existing.len())].clone();
                let full = dir.join(&path);
                self.supersede(&full);
                match full.is_dir() {
                    true => std::fs::remove_dir_all(&full)?,
                    false => std::fs::remove_file(&full)?,
                }
            }
            7..=9 if !existing.is_empty() => {
                let from = existing[self.rng.usize(..existing.len())].clone();
                let to = match folders.contains(&from) {
                    true => DIR_PATHS[self.rng.usize(..DIR_PATHS.len())],
                    false => FILE_PATHS[self.rng.usize(..FILE_PATHS.len())],
                };
                let target = dir.join(to);
                let nested = to.starts_with(&format!("{from}/"));
                if to == from
                    || nested
                    || target.exists()
                    || target.parent().is_some_and(|p| p.is_file())
                {
                    return Ok(());
                }
                if let Some(parent) = target.parent() {
                    if std::fs::create_dir_all(parent).is_err() {
                        return Ok(());
                    }
                }
                std::fs::rename(dir.join(&from), target)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The versions at or under `full` are replaced or deleted knowingly.
    fn supersede(&mut self, full: &Path) {
        if full.is_file() {
            self.superseded.extend(version_of(full));
        } else if full.is_dir() {
            if let Ok((files, _)) = walk(full) {
                self.superseded
                    .extend(files.values().filter_map(|(v, _)| *v));
            }
        }
    }

    fn start_sync(&mut self, who: usize) -> Result<()> {
        let child = self
            .sync_command(who)?
            .spawn()
            .context("starting holdall")?;
        self.devices[who].running = Some(child);
        self.summary.syncs += 1;
        Ok(())
    }

    fn sync_command(&self, who: usize) -> Result<Command> {
        let d = &self.devices[who];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.log)?;
        let mut c = Command::new(&self.opts.holdall);
        c.args(["sync", "--once"])
            .arg(&d.dir)
            .env("HOLDALL_SERVER", &self.url)
            .env("HOLDALL_TOKEN", &self.token)
            .env("HOLDALL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        Ok(c)
    }

    /// Waits for the device's sync to end.
    fn finish(&mut self, who: usize) -> Result<()> {
        let Some(mut child) = self.devices[who].running.take() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        while child.try_wait()?.is_none() {
            if started.elapsed() > SYNC_TIMEOUT {
                let _ = child.kill();
                bail!("device {who}'s sync ran for more than {SYNC_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// SIGKILL after a random moment of the sync's run.
    fn kill(&mut self, who: usize) -> Result<()> {
        std::thread::sleep(Duration::from_millis(self.rng.u64(..300)));
        if let Some(mut child) = self.devices[who].running.take() {
            child.kill()?;
            child.wait()?;
            self.summary.kills += 1;
        }
        Ok(())
    }

    fn wipe(&mut self, who: usize) -> Result<()> {
        let state = self.devices[who].dir.join(".holdall");
        if state.exists() {
            std::fs::remove_dir_all(state)?;
            self.summary.wipes += 1;
        }
        Ok(())
    }

    /// Passes of `holdall sync --once` over every device until one moves nothing.
    fn settle(&mut self) -> Result<()> {
        for pass in 1..=SETTLE_PASSES_MAX {
            let mut quiet = true;
            for who in 0..self.devices.len() {
                let out = self.sync_command(who)?.stderr(Stdio::piped()).output()?;
                let text = String::from_utf8_lossy(&out.stderr);
                ensure!(out.status.success(), "device {who}'s sync failed: {text}");
                quiet &=
                    text.contains("in sync (0 committed, 0 downloaded, 0 deleted, 0 conflicts");
            }
            if quiet {
                self.summary.passes = pass;
                return Ok(());
            }
        }
        bail!("still moving after {SETTLE_PASSES_MAX} passes of every device")
    }

    fn check(&mut self) -> Result<()> {
        let first = walk(&self.devices[0].dir)?;
        for (who, d) in self.devices.iter().enumerate().skip(1) {
            let other = walk(&d.dir)?;
            if other != first {
                bail!(
                    "device {who} differs from device 0:\n  device 0: {:?}\n  device {who}: {:?}",
                    first,
                    other
                );
            }
        }
        let kept: BTreeSet<u64> = first.0.values().filter_map(|(v, _)| *v).collect();
        let wanted: Vec<u64> = self.written.difference(&self.superseded).copied().collect();
        let lost: Vec<&u64> = wanted.iter().filter(|id| !kept.contains(id)).collect();
        ensure!(lost.is_empty(), "versions lost: {lost:?}");
        self.summary.written = self.written.len() as u64;
        self.summary.kept = wanted.len() as u64;
        self.summary.files = first.0.len() as u64;
        Ok(())
    }
}

/// The version a file holds, from its header.
fn version_of(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; 40];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix("holdall-chaos v")?
        .parse()
        .ok()
}

/// What a folder holds: files by relative path with their version and length, and folders.
type Listing = (BTreeMap<String, (Option<u64>, u64)>, BTreeSet<String>);

/// Files (with their versions) and folders under `root`, by relative path; the state
/// folder and the client's temporary files left out.
fn walk(root: &Path) -> Result<Listing> {
    let mut files = BTreeMap::new();
    let mut folders = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".holdall" || name.starts_with(".holdall-tmp-") {
                continue;
            }
            let path = entry.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                folders.insert(rel);
                stack.push(path);
            } else {
                files.insert(rel, (version_of(&path), entry.metadata()?.len()));
            }
        }
    }
    Ok((files, folders))
}
