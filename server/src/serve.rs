//! `holdalld serve`: starts the shards, waits for SIGTERM or SIGINT, stops them cleanly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use glommio::net::TcpListener;
use holdall_engine::journal::record::JournalRecord;
use holdall_engine::runtime;
use holdall_engine::store_key::StoreKey;
use holdall_proto::api::FsckResponse;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{info, warn};

use crate::config::Config;
use crate::process::Process;
use crate::shard::Shard;
use crate::start::{step, StartProgress, StartStep};
use crate::tls::Tls;

/// How long in-progress requests may take to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(10);

/// What the shards are started for.
#[derive(Clone)]
pub enum Mode {
    /// Serve requests on the listen address.
    Serve,
    /// Listen nowhere: shard 0 checks the whole store (as `POST /v1/admin/fsck` does) and
    /// sends the report here.
    Check(mpsc::Sender<Result<FsckResponse, String>>),
}

/// What a starting shard tells the main thread, in order.
enum Started {
    /// Shard 0 has the directory's records and the bound address: the other shards can
    /// start (all at once, while shard 0 opens its own engine).
    Init(Vec<JournalRecord>, SocketAddr),
    /// The shard has opened its engine and accepts requests.
    Ready,
}

type Ready = Result<Started, String>;

/// The directory's records and the address, from shard 0.
type Init = (Vec<JournalRecord>, SocketAddr);

/// The file in the data folder with the key that seals Dropbox API cursors (created on
/// first start, mode 0600).
pub const CURSOR_KEY_IN_DATA: &str = "cursor.key";

/// How often the main thread says which step a shard that is not ready yet is at.
const START_REPORT: Duration = Duration::from_secs(10);

/// Runs the server until SIGTERM or SIGINT; exits cleanly after in-progress requests end.
pub fn run(cfg: Config) -> Result<()> {
    let _lock = crate::config::DataLock::take(&cfg.data)?;
    let tls = match &cfg.tls {
        Some(files) => Some(Tls::load(&files.cert, &files.key)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let cursor_key = StoreKey::load_or_create(&cfg.data.join(CURSOR_KEY_IN_DATA))?;
    let process = Arc::new(Process::new(&cfg, tls.clone(), cursor_key));
    let (handles, addr) = start_shards(&cfg, &stop, &process, &Mode::Serve)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url_file = cfg.data.join(crate::backup_cli::URL_FILE);
    let local = match addr.ip().is_unspecified() {
        true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        false => addr,
    };
    // Where `holdalld backup` finds this server.
    std::fs::write(&url_file, format!("{scheme}://{local}\n"))
        .with_context(|| format!("writing {}", url_file.display()))?;
    let store_key = cfg.store_key_file.as_ref().map_or_else(
        || format!("{} (in the data folder)", crate::config::STORE_KEY_IN_DATA),
        |p| p.display().to_string(),
    );
    info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        shards = cfg.shards,
        tls = tls.is_some(),
        data = %cfg.data.display(),
        store_key,
        "serving"
    );
    // Last: whoever waits for this line finds the log line and the URL file written.
    println!(
        "holdalld listening on {scheme}://{addr} ({} shards, data in {})",
        cfg.shards,
        cfg.data.display()
    );
    'serving: loop {
        for signal in signals.pending() {
            if signal == SIGHUP {
                // The service manager's reload (the signal's default, exit, must not stop
                // the server).
                reload(tls.as_deref());
                continue;
            }
            info!("stopping: finishing requests in progress");
            break 'serving;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_file(&url_file);
    join_shards(handles)
}

/// SIGHUP: the TLS pair read again; a bad one is logged and the old pair kept.
fn reload(tls: Option<&Tls>) {
    let Some(tls) = tls else {
        info!("SIGHUP: plain HTTP, nothing to reload");
        return;
    };
    match tls.reload() {
        Ok(()) => info!(cert = %tls.cert_path().display(), "SIGHUP: TLS certificate reloaded"),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "SIGHUP: TLS reload failed; still serving the previous certificate")
        }
    }
}

/// Starts every shard: shard 0 first, until it has opened the directory and bound the
/// port; then the others, whose engines open alongside shard 0's (a restart takes the
/// longest shard's open, not the sum). Returns once all of them accept requests.
pub fn start_shards(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
    process: &Arc<Process>,
    mode: &Mode,
) -> Result<(Vec<ShardHandle>, SocketAddr)> {
    let (meshes, inboxes) = crate::mesh::build(cfg.shards);
    let mut wiring = meshes.into_iter().zip(inboxes);
    let mut handles = Vec::new();
    let mut starting = Vec::new();
    let mut init: Option<Init> = None;
    for id in 0..cfg.shards {
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let at: StartStep = Arc::new(StartProgress {
            step: std::sync::Mutex::new("starting its executor"),
            tid: std::sync::atomic::AtomicI32::new(0),
        });
        let start = ShardStart {
            id,
            cfg: cfg.clone(),
            init: init.clone(),
            mesh: wiring.next().expect("one mesh end per shard"),
            process: process.clone(),
            stop: stop.clone(),
            at: at.clone(),
            mode: mode.clone(),
        };
        handles.push(spawn_shard(start, ready_tx)?);
        if id == 0 {
            match wait_ready(id, &ready_rx, &at)? {
                Ok(Started::Init(records, addr)) => init = Some((records, addr)),
                Ok(Started::Ready) => bail!("shard 0 was ready before it had the directory"),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    bail!("shard 0: {e}");
                }
            }
        }
        starting.push((ready_rx, at));
    }
    for (id, (ready_rx, at)) in starting.iter().enumerate() {
        match wait_ready(id, ready_rx, at)? {
            Ok(Started::Ready) => {}
            Ok(Started::Init(..)) => bail!("shard {id} sent the directory twice"),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                bail!("shard {id}: {e}");
            }
        }
    }
    let addr = init.map(|(_, a)| a).context("no shards")?;
    Ok((handles, addr))
}

/// What a shard's thread needs to start.
struct ShardStart {
    id: usize,
    cfg: Config,
    /// The directory's records and the address, from shard 0 (None for shard 0 itself).
    init: Option<Init>,
    mesh: (
        crate::mesh::Mesh<Shard>,
        futures::channel::mpsc::Receiver<crate::mesh::Task<Shard>>,
    ),
    process: Arc<Process>,
    stop: Arc<AtomicBool>,
    at: StartStep,
    mode: Mode,
}

pub type ShardHandle = glommio::ExecutorJoinHandle<Result<()>>;

/// Starts shard `start.id` on its own pinned executor thread; it says on `ready` when it
/// listens, or why it could not start.
fn spawn_shard(start: ShardStart, ready: mpsc::Sender<Ready>) -> Result<ShardHandle> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let id = start.id;
    runtime::builder(&format!("shard-{id}"), Some(id % cores))
        .spawn(move || async move {
            let stop = start.stop.clone();
            let result = shard_main(start, &ready).await;
            if let Err(e) = &result {
                // Before ready this fails the start; after it, it stops the server.
                let _ = ready.send(Err(format!("{e:#}")));
                stop.store(true, Ordering::Relaxed);
            }
            result
        })
        .map_err(std::io::Error::from)
        .with_context(|| format!("starting shard {id}"))
}

/// Waits for shard `id` to be ready, saying every few seconds which step it is at.
fn wait_ready(id: usize, ready: &mpsc::Receiver<Ready>, at: &StartStep) -> Result<Ready> {
    let started = std::time::Instant::now();
    loop {
        match ready.recv_timeout(START_REPORT) {
            Ok(ready) => return Ok(ready),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Start-up once stalled with the shard parked in io_uring_enter while its
                // heartbeat looked alive; a debugger's interruption freed it. So a slow
                // shard is interrupted too (harmless if it is just busy).
                // Stuck before its main future ran, it has not said its thread id yet: its
                // executor's threads are found by name.
                let tid = at.tid.load(Ordering::Relaxed);
                let nudged = match tid {
                    0 => holdall_engine::watchdog::nudge_waiting_named(&format!("shard-{id}-")) > 0,
                    tid => holdall_engine::watchdog::nudge(tid),
                };
                warn!(
                    shard = id,
                    waited_s = started.elapsed().as_secs(),
                    step = *at.step.lock().unwrap_or_else(|e| e.into_inner()),
                    nudged,
                    "shard not ready yet"
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("shard {id} ended before it was ready")
            }
        }
    }
}

/// Waits for every shard to end; the last failure, if any.
pub fn join_shards(handles: Vec<ShardHandle>) -> Result<()> {
    let mut failed = None;
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(anyhow!("shard {id}: {e:#}")),
            Err(e) => failed = Some(anyhow!("shard {id} failed: {e}")),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            info!("stopped");
            Ok(())
        }
    }
}

/// Shard 0's start: the data folder, the store key, the directory journal and (when
/// serving) the admin user made on first start.
async fn open_directory(
    cfg: &Config,
    mode: &Mode,
    at: &StartStep,
) -> Result<holdall_engine::journal::Journal> {
    let serving = matches!(mode, Mode::Serve);
    step(at, "creating the data folder and the store key");
    if serving {
        std::fs::create_dir_all(&cfg.data)?;
    }
    cfg.load_store_key()?;
    step(at, "opening the directory journal");
    let directory = crate::directory::open(&cfg.data, cfg.storage()).await?;
    if serving {
        step(at, "creating the admin user");
        crate::directory::ensure_admin(&directory, &cfg.data).await?;
    }
    Ok(directory)
}

/// The shard's listener, bound to `addr`; none when checking.
fn listen(mode: &Mode, addr: SocketAddr) -> Result<Option<TcpListener>> {
    match mode {
        Mode::Check(_) => Ok(None),
        Mode::Serve => TcpListener::bind(addr)
            .map(Some)
            .map_err(std::io::Error::from)
            .with_context(|| format!("listening on {addr}")),
    }
}

async fn shard_main(start: ShardStart, ready: &mpsc::Sender<Ready>) -> Result<()> {
    let ShardStart {
        id,
        cfg,
        init,
        mesh: (mesh, mut inbox),
        process,
        stop,
        at,
        mode,
    } = start;
    let at = &at;
    let _watched = runtime::start_reactor_tick();
    at.tid.store(
        holdall_engine::watchdog::current_tid(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let (records, listener, directory) = match init {
        // Shard 0 owns the directory and binds first, so a port of 0 resolves once and the
        // other shards join the same port.
        None => {
            let directory = open_directory(&cfg, &mode, at).await?;
            step(at, "listening");
            let records: Vec<JournalRecord> = directory.state().snapshot_records().collect();
            (records, listen(&mode, cfg.listen)?, Some(directory))
        }
        Some((records, addr)) => {
            step(at, "listening");
            (records, listen(&mode, addr)?, None)
        }
    };
    let addr = match &listener {
        Some(l) => l.local_addr().map_err(std::io::Error::from)?,
        None => cfg.listen,
    };
    if id == 0 {
        let _ = ready.send(Ok(Started::Init(records.clone(), addr)));
    }
    let tls = process.tls.clone();
    let checking = matches!(mode, Mode::Check(_));
    let shard = Shard::open(
        id,
        &cfg,
        records.clone(),
        directory,
        process,
        stop.clone(),
        at,
    )
    .await?;
    let _ = ready.send(Ok(Started::Ready));
    let _ = shard.join_mesh(mesh);
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            use futures::StreamExt;
            while let Some(task) = inbox.next().await {
                task(&shard);
            }
        })
        .detach();
    }

    if id == 0 && !cfg.gc_interval.is_zero() && !checking {
        glommio::spawn_local(shard.clone().collect_in_background(cfg.gc_interval)).detach();
    }
    let publisher = {
        let (shard, stop) = (shard.clone(), stop.clone());
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                shard.publish_gauges();
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let handler = {
        let shard = shard.clone();
        move |req| crate::routes::handle(shard.clone(), req)
    };
    if let Some(listener) = listener {
        crate::http::serve(listener, stop, GRACE, cfg.client_timeout, tls, handler).await;
    } else if let Mode::Check(report) = &mode {
        if id == 0 {
            let checked = shard
                .fsck_all(!cfg.read_only)
                .await
                .map_err(|e| e.to_string());
            let _ = report.send(checked);
        }
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }
    publisher.await;
    shard.publish_gauges();
    Ok(())
}
