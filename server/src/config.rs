//! `holdalld serve` settings: flags, environment variables, a TOML file, defaults, in that
//! order of precedence; and the layout pinned in the data folder.

use holdall_engine::storage::Storage;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use holdall_engine::prefetch::PrefetchConfig;
use holdall_engine::store_key::StoreKey;
use holdall_proto::byte_count::parse_bytes;
use serde::{Deserialize, Serialize};

/// Flags of `holdalld serve`; each also reads an environment variable.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Data folder [default: ./holdall-data].
    #[arg(long, env = "HOLDALL_DATA")]
    pub data: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8340].
    #[arg(long, env = "HOLDALL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Shards (one executor per core) [default: the data folder's, else one per core].
    #[arg(long, env = "HOLDALL_SHARDS")]
    pub shards: Option<usize>,
    /// TOML file with any of the keys `data`, `listen`, `shards`, `prefetch_ttl_s`,
    /// `prefetch_entries_max`, `streaming`, `compression`, `deltas`, `block_cache`, `recent_blocks`,
    /// `client_timeout_s`, `history_retention`, `gc_interval`, `gc_rate`, `store_key_file`,
    /// `token_requests_per_s`, `user_connections_max`, `tls_cert`, `tls_key`,
    /// `upload_session_bytes_max`.
    #[arg(long, env = "HOLDALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seconds a prefetch entry (and a user's proof of upload) lives [default: 600].
    #[arg(long, env = "HOLDALL_PREFETCH_TTL_S")]
    pub prefetch_ttl_s: Option<u64>,
    /// Most live prefetch entries per shard; the longest idle go first [default: 100000].
    #[arg(long, env = "HOLDALL_PREFETCH_ENTRIES_MAX")]
    pub prefetch_entries_max: Option<usize>,
    /// Streaming sync: publish prefetch entries for large uploads [default: true].
    #[arg(long, env = "HOLDALL_STREAMING")]
    pub streaming: Option<bool>,
    /// Blocks may travel zstd-compressed (frame format 2, feature `zstd`) [default: true].
    #[arg(long, env = "HOLDALL_COMPRESSION")]
    pub compression: Option<bool>,
    /// rsync deltas for changed blocks: `POST /v1/signatures`, store_delta frames and delta
    /// answers (frame format 2, feature `delta`) [default: true].
    #[arg(long, env = "HOLDALL_DELTAS")]
    pub deltas: Option<bool>,
    /// Seconds a client has to send a request head, to keep sending a body, and to take a
    /// response before its connection is closed [default: 30].
    #[arg(long, env = "HOLDALL_CLIENT_TIMEOUT_S")]
    pub client_timeout_s: Option<u64>,
    /// Bytes of blocks kept in memory, over all shards, after they are stored or served
    /// (`512M`, `2G`; 0 keeps none) [default: a 32nd of the machine's memory].
    #[arg(long, env = "HOLDALL_BLOCK_CACHE", value_parser = parse_bytes)]
    pub block_cache: Option<u64>,
    /// Most bytes one Dropbox API upload session may hold (`350G`) [default: 350G].
    #[arg(long, env = "HOLDALL_UPLOAD_SESSION_BYTES_MAX", value_parser = parse_bytes)]
    pub upload_session_bytes_max: Option<u64>,
    /// Of the block cache, most large blocks per shard taken as they are stored, for
    /// devices that stream the upload; 0 takes none [default: 32].
    #[arg(long, env = "HOLDALL_RECENT_BLOCKS")]
    pub recent_blocks: Option<usize>,
    /// How long a version stays restorable after a newer version or a deletion replaced
    /// it: a number with `s`, `m`, `h` or `d` [default: 30d].
    #[arg(long, env = "HOLDALL_HISTORY_RETENTION")]
    pub history_retention: Option<String>,
    /// How often the background garbage collection runs, as a duration; `0s` turns it
    /// off (`POST /v1/admin/gc` still runs one) [default: 1h].
    #[arg(long, env = "HOLDALL_GC_INTERVAL")]
    pub gc_interval: Option<String>,
    /// Most bytes per second compaction copies; 0 for no bound [default: 104857600].
    #[arg(long, env = "HOLDALL_GC_RATE")]
    pub gc_rate: Option<u64>,
    /// Most requests per second one token may make (one second's worth may come at once);
    /// beyond it 429 with Retry-After; 0 for no limit [default: 1000].
    #[arg(long, env = "HOLDALL_TOKEN_REQUESTS_PER_S")]
    pub token_requests_per_s: Option<u32>,
    /// Most connections one user may hold at once, over all shards; one more gets 429 and
    /// is closed; 0 for no limit [default: 64].
    #[arg(long, env = "HOLDALL_USER_CONNECTIONS_MAX")]
    pub user_connections_max: Option<u32>,
    /// The store key, kept outside the data folder (`holdalld keygen PATH` makes one); it
    /// must exist [default: DATA/store.key, created on first start].
    #[arg(long, env = "HOLDALL_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,
    /// PEM certificate chain to serve HTTPS with (with --tls-key; SIGHUP reloads both)
    /// [default: plain HTTP].
    #[arg(long, env = "HOLDALL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HOLDALL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    shards: Option<usize>,
    prefetch_ttl_s: Option<u64>,
    prefetch_entries_max: Option<usize>,
    streaming: Option<bool>,
    compression: Option<bool>,
    deltas: Option<bool>,
    block_cache: Option<ByteCount>,
    upload_session_bytes_max: Option<ByteCount>,
    recent_blocks: Option<usize>,
    client_timeout_s: Option<u64>,
    history_retention: Option<String>,
    gc_interval: Option<String>,
    gc_rate: Option<u64>,
    store_key_file: Option<PathBuf>,
    token_requests_per_s: Option<u32>,
    user_connections_max: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// A byte count in the TOML file: a number, or a string with a unit (`"512M"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum ByteCount {
    Number(u64),
    Text(String),
}

impl ByteCount {
    fn bytes(&self) -> Result<u64> {
        match self {
            ByteCount::Number(n) => Ok(*n),
            ByteCount::Text(t) => parse_bytes(t).map_err(anyhow::Error::msg),
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data folder.
    pub data: PathBuf,
    /// Listen address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Number of shards.
    pub shards: usize,
    /// How long a prefetch entry, and a user's proof of having uploaded a block, lives.
    pub prefetch_ttl: Duration,
    /// Most live prefetch entries per shard.
    pub prefetch_entries_max: usize,
    /// Whether large uploads publish prefetch entries (streaming sync).
    pub streaming: bool,
    /// Whether blocks may travel compressed (frame format 2).
    pub compression: bool,
    /// Whether clients may send and take deltas (frame format 2).
    pub deltas: bool,
    /// Bytes of blocks each shard keeps in memory after storing or serving them.
    pub block_cache_bytes_per_shard: usize,
    /// Most bytes one Dropbox API upload session may hold.
    pub upload_session_bytes_max: u64,
    /// Of them, most blocks per shard taken as they were stored.
    pub recent_blocks: usize,
    /// How long a client may stall a request head, a body or a response.
    pub client_timeout: Duration,
    /// How long a superseded version stays restorable.
    pub history_retention: Duration,
    /// Time between background collections; zero for none.
    pub gc_interval: Duration,
    /// Most bytes per second compaction copies; 0 for no bound.
    pub gc_rate_bytes_per_s: u64,
    /// The store key's file when it is kept outside the data folder.
    pub store_key_file: Option<PathBuf>,
    /// Most requests per second per token; 0 for no limit.
    pub token_requests_per_s: u32,
    /// Most connections per user; 0 for no limit.
    pub user_connections_max: u32,
    /// The certificate and key files HTTPS is served with; None for plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Open the engines over an overlay that keeps every change in memory (an fsck that
    /// must not change the data folder).
    pub read_only: bool,
}

/// `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Default client timeout.
pub const CLIENT_TIMEOUT_S_DEFAULT: u64 = 30;

/// Default prefetch TTL: the seed's 10 minutes.
pub const PREFETCH_TTL_S_DEFAULT: u64 = 600;

/// The block cache's default share of the machine's memory (a 32nd: 768 MiB of 24 GiB),
/// enough for a device streaming an upload to trail it by seconds and for the blocks of the
/// files many devices fetch at once.
pub const BLOCK_CACHE_MEMORY_DIVISOR: u64 = 32;

/// Default of the stored blocks a shard's cache takes: 128 MiB of 4 MiB blocks, enough for
/// a device streaming an upload to trail it by a few seconds.
pub const RECENT_BLOCKS_DEFAULT: usize = 32;

/// Largest `--recent-blocks`.
const RECENT_BLOCKS_MAX: usize = 4096;

/// Default history retention: Dropbox's 30 days.
pub const HISTORY_RETENTION_DEFAULT: &str = "30d";

/// Default time between background collections.
pub const GC_INTERVAL_DEFAULT: &str = "1h";

/// Default bound on compaction's copying: 100 MiB/s.
pub const GC_RATE_DEFAULT: u64 = 100 << 20;

/// A duration written as a whole number and a unit: `90s`, `15m`, `12h`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    Ok(Duration::from_secs(
        holdall_proto::duration::parse_duration_s(text)?,
    ))
}

/// The default listen address.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8340";

/// What the data folder records about itself so that a restart maps namespaces and blocks to
/// the same shards.
#[derive(Serialize, Deserialize)]
struct Layout {
    shards: usize,
}

impl Config {
    /// Resolves flags, environment, file and defaults, and checks the data folder's layout.
    pub fn resolve(args: ServeArgs) -> Result<Config> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let block_cache = match (args.block_cache, &file.block_cache) {
            (Some(b), _) => Some(b),
            (None, Some(b)) => Some(b.bytes().context("block_cache")?),
            (None, None) => None,
        };
        let upload_session_bytes_max = match (
            args.upload_session_bytes_max,
            &file.upload_session_bytes_max,
        ) {
            (Some(b), _) => b,
            (None, Some(b)) => b.bytes().context("upload_session_bytes_max")?,
            (None, None) => UPLOAD_SESSION_BYTES_MAX_DEFAULT,
        };
        if upload_session_bytes_max == 0 {
            bail!("upload_session_bytes_max must be more than 0");
        }
        let recent_blocks = args
            .recent_blocks
            .or(file.recent_blocks)
            .unwrap_or(RECENT_BLOCKS_DEFAULT);
        if recent_blocks > RECENT_BLOCKS_MAX {
            bail!("recent_blocks must be 0 to {RECENT_BLOCKS_MAX}, not {recent_blocks}");
        }
        let data = args
            .data
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("./holdall-data"));
        let listen = match args.listen.or(file.listen) {
            Some(a) => a,
            None => LISTEN_DEFAULT.parse().expect("valid default address"),
        };
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        let store_key_file = args.store_key_file.or(file.store_key_file);
        check_store_key(&data, store_key_file.as_deref())?;
        let requested = args.shards.or(file.shards);
        let shards = resolve_layout(&data, requested)?;
        let prefetch_ttl_s = args
            .prefetch_ttl_s
            .or(file.prefetch_ttl_s)
            .unwrap_or(PREFETCH_TTL_S_DEFAULT);
        if !(1..=86_400).contains(&prefetch_ttl_s) {
            bail!("the prefetch TTL must be 1 to 86400 seconds, not {prefetch_ttl_s}");
        }
        let prefetch_entries_max = args
            .prefetch_entries_max
            .or(file.prefetch_entries_max)
            .unwrap_or(PrefetchConfig::default().entries_max);
        if !(1..=10_000_000).contains(&prefetch_entries_max) {
            bail!("prefetch_entries_max must be 1 to 10000000, not {prefetch_entries_max}");
        }
        let client_timeout_s = args
            .client_timeout_s
            .or(file.client_timeout_s)
            .unwrap_or(CLIENT_TIMEOUT_S_DEFAULT);
        if !(1..=3600).contains(&client_timeout_s) {
            bail!("the client timeout must be 1 to 3600 seconds, not {client_timeout_s}");
        }
        let block_cache_bytes_per_shard = block_cache_per_shard(block_cache, shards)?;
        let history_retention = parse_duration(
            args.history_retention
                .as_deref()
                .or(file.history_retention.as_deref())
                .unwrap_or(HISTORY_RETENTION_DEFAULT),
        )
        .context("history_retention")?;
        let gc_interval = parse_duration(
            args.gc_interval
                .as_deref()
                .or(file.gc_interval.as_deref())
                .unwrap_or(GC_INTERVAL_DEFAULT),
        )
        .context("gc_interval")?;
        Ok(Config {
            data,
            listen,
            shards,
            prefetch_ttl: Duration::from_secs(prefetch_ttl_s),
            prefetch_entries_max,
            streaming: args.streaming.or(file.streaming).unwrap_or(true),
            compression: args.compression.or(file.compression).unwrap_or(true),
            deltas: args.deltas.or(file.deltas).unwrap_or(true),
            block_cache_bytes_per_shard,
            upload_session_bytes_max,
            recent_blocks,
            client_timeout: Duration::from_secs(client_timeout_s),
            history_retention,
            gc_interval,
            gc_rate_bytes_per_s: args.gc_rate.or(file.gc_rate).unwrap_or(GC_RATE_DEFAULT),
            store_key_file,
            token_requests_per_s: args
                .token_requests_per_s
                .or(file.token_requests_per_s)
                .unwrap_or(TOKEN_REQUESTS_PER_S_DEFAULT),
            user_connections_max: args
                .user_connections_max
                .or(file.user_connections_max)
                .unwrap_or(USER_CONNECTIONS_MAX_DEFAULT),
            tls,
            read_only: false,
        })
    }

    /// The medium the engines open on: the disk, or the disk under an in-memory overlay.
    pub fn storage(&self) -> std::rc::Rc<dyn Storage> {
        use holdall_engine::storage::{dma::DmaStorage, overlay::OverlayStorage};
        match self.read_only {
            true => std::rc::Rc::new(OverlayStorage::new(std::rc::Rc::new(DmaStorage))),
            false => std::rc::Rc::new(DmaStorage),
        }
    }

    /// Loads the store key: the outside file, which must exist, or the data folder's,
    /// created on first start.
    pub fn load_store_key(&self) -> Result<StoreKey> {
        Ok(match &self.store_key_file {
            Some(path) => StoreKey::load(path)?,
            None => StoreKey::load_or_create(&self.data.join(STORE_KEY_IN_DATA))?,
        })
    }
}

/// Default bound on one Dropbox API upload session: Dropbox's own.
pub const UPLOAD_SESSION_BYTES_MAX_DEFAULT: u64 = 350 << 30;

/// Default per-token request rate: far above what one syncing device asks for (a 1 GB/s
/// upload is 125 store_batch requests a second), low enough that one runaway script cannot
/// take a shard's every cycle.
pub const TOKEN_REQUESTS_PER_S_DEFAULT: u32 = 1000;

/// Default connections per user: a syncing device keeps about ten (its transfer workers and
/// a longpoll), so this is several devices' worth.
pub const USER_CONNECTIONS_MAX_DEFAULT: u32 = 64;

/// An exclusive lock on a data folder (`flock` of its layout.toml), held by whatever
/// serves, checks or backs it up offline: two of them would each see the other's writes as
/// damage.
pub struct DataLock {
    _file: std::fs::File,
}

impl DataLock {
    /// Takes the lock; None if another process holds it.
    pub fn try_take(data: &Path) -> Result<Option<DataLock>> {
        use std::os::fd::AsRawFd;
        let path = data.join("layout.toml");
        let file = std::fs::File::open(&path)
            .with_context(|| format!("{} is not a holdalld data folder", data.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if taken == 0 {
            return Ok(Some(DataLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// Takes the lock or says who holds it.
    pub fn take(data: &Path) -> Result<DataLock> {
        DataLock::try_take(data)?
            .with_context(|| format!("another holdalld is serving or checking {}", data.display()))
    }
}

/// The store key's name in the data folder when no outside file is given.
pub const STORE_KEY_IN_DATA: &str = "store.key";

/// Before anything is created or opened: the store key loads, and it is the key the data
/// folder's block logs were written under.
fn check_store_key(data: &Path, outside: Option<&Path>) -> Result<()> {
    let inside = data.join(STORE_KEY_IN_DATA);
    let path = outside.unwrap_or(&inside);
    let written = written_fingerprints(data)?;
    if outside.is_none() && !path.exists() {
        if let Some((dir, _)) = written.first() {
            bail!(
                "{} holds blocks ({}) but there is no store key at {}: give the key they were written under with --store-key-file",
                data.display(),
                dir.display(),
                path.display()
            );
        }
        return Ok(());
    }
    let key = StoreKey::load(path)?;
    for (dir, fingerprint) in written {
        if fingerprint != key.fingerprint() {
            bail!(
                "the store key {} is not the key {} was written under (key fingerprint {:016x}, the blocks' {fingerprint:016x}); nothing was opened",
                path.display(),
                dir.display(),
                key.fingerprint()
            );
        }
    }
    Ok(())
}

/// Each shard's block log folder in `data` that holds a segment, with the key fingerprint
/// its oldest segment was written under.
fn written_fingerprints(data: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(data) else {
        return Ok(found);
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let blocks = entry.path().join("blocks");
        if let Some(fp) = holdall_engine::block_log::key_fingerprint_on_disk(&blocks)
            .with_context(|| format!("reading {}", blocks.display()))?
        {
            found.push((blocks, fp));
        }
    }
    found.sort();
    Ok(found)
}

/// The block cache of each shard: `--block-cache`, else the default share of memory, split
/// evenly.
fn block_cache_per_shard(block_cache: Option<u64>, shards: usize) -> Result<usize> {
    let total = block_cache.unwrap_or_else(|| memory_bytes() / BLOCK_CACHE_MEMORY_DIVISOR);
    if total > memory_bytes() / 2 {
        bail!("the block cache may take at most half the machine's memory, not {total} bytes");
    }
    Ok((total / shards.max(1) as u64) as usize)
}

/// The machine's memory (MemTotal), or 8 GiB if /proc does not say.
fn memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(8 << 30, |kib| kib << 10)
}

fn resolve_layout(data: &Path, requested: Option<usize>) -> Result<usize> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let path = data.join("layout.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let layout: Layout =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            if let Some(n) = requested {
                if n != layout.shards {
                    bail!(
                        "{} was created with {} shards; start with --shards {} (changing the shard count of a data folder is not supported)",
                        data.display(),
                        layout.shards,
                        layout.shards
                    );
                }
            }
            Ok(layout.shards)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let shards = requested
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if !(1..=256).contains(&shards) {
                bail!("--shards must be between 1 and 256, not {shards}");
            }
            let text = toml::to_string(&Layout { shards }).context("encoding layout")?;
            let tmp = path.with_extension("toml.tmp");
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            holdall_engine::storage::dma::DmaStorage
                .sync_dir(data)
                .context("syncing the data folder")?;
            Ok(shards)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                "data = {:?}\nlisten = \"127.0.0.1:9000\"\nshards = 3\n",
                data
            ),
        )
        .unwrap();
        let c = Config::resolve(ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9001, "flags win over the file");
        assert_eq!(c.shards, 3);
        assert_eq!(c.data, data);
        assert_eq!(c.prefetch_ttl, Duration::from_secs(PREFETCH_TTL_S_DEFAULT));
        assert!(c.streaming);
        assert_eq!(c.history_retention, Duration::from_secs(30 * 86_400));
        assert_eq!(c.gc_interval, Duration::from_secs(3600));
        assert_eq!(c.gc_rate_bytes_per_s, 100 << 20);
        // The data folder remembers its shard count.
        let c = Config::resolve(ServeArgs {
            data: Some(data.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!((c.shards, c.listen.port()), (3, 8340));
        let err = Config::resolve(ServeArgs {
            data: Some(data),
            shards: Some(2),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("created with 3 shards"), "{err}");
        std::fs::write(&file, "nonsense = 1\n").unwrap();
        assert!(Config::resolve(ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        })
        .is_err());
    }

    #[test]
    fn the_block_cache_is_split_over_the_shards() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let resolve = |args: ServeArgs, toml: &str| {
            std::fs::write(&file, toml).unwrap();
            let data = dir.path().join(format!("d{}", args.shards.unwrap_or(2)));
            Config::resolve(ServeArgs {
                config: Some(file.clone()),
                data: Some(data),
                shards: args.shards.or(Some(2)),
                ..args
            })
            .map(|c| c.block_cache_bytes_per_shard)
        };
        let flag = ServeArgs {
            block_cache: Some(512 << 20),
            ..ServeArgs::default()
        };
        assert_eq!(
            resolve(flag, "block_cache = \"2G\"\n").unwrap(),
            256 << 20,
            "the flag wins"
        );
        assert_eq!(
            resolve(ServeArgs::default(), "block_cache = \"2G\"\n").unwrap(),
            1 << 30
        );
        assert_eq!(
            resolve(ServeArgs::default(), "block_cache = 1000\n").unwrap(),
            500
        );
        let c = Config::resolve(ServeArgs {
            recent_blocks: Some(3),
            data: Some(dir.path().join("d2")),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.recent_blocks, 3);
        let default = resolve(ServeArgs::default(), "").unwrap() as u64;
        assert_eq!(default, memory_bytes() / BLOCK_CACHE_MEMORY_DIVISOR / 2);
        for bad in [
            "block_cache = \"lots\"\n",
            "recent_blocks = 5000\n",
            "block_cache = \"100T\"\n",
        ] {
            assert!(resolve(ServeArgs::default(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(2_592_000)
        );
        for bad in ["", "30", "d", "1.5h", "-1d", "3w", "99999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
