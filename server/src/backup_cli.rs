//! `holdalld backup --data DIR --to DEST`: while a holdalld serves DIR, asks it for an
//! online backup (`POST /v1/admin/backup` with the admin token from DIR, at the address it
//! wrote to `DIR/holdalld.url`); with none serving it (the data folder's lock is free),
//! copies the stopped store itself with the same rules.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use holdall_engine::backup::FileSet;
use holdall_proto::api::{BackupRequest, BackupResponse};

use crate::config::DataLock;

/// Flags of `holdalld backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The data folder to back up.
    #[arg(long, env = "HOLDALL_DATA")]
    pub data: PathBuf,
    /// The backup folder: new, empty, or an earlier backup (brought up to date).
    #[arg(long)]
    pub to: PathBuf,
    /// The running server's URL [default: the one it wrote to DIR/holdalld.url].
    #[arg(long)]
    pub server: Option<String>,
    /// PEM CA that signed an https server's certificate.
    #[arg(long, env = "HOLDALL_CA")]
    pub ca: Option<PathBuf>,
}

/// Name of the file a serving holdalld writes its URL to.
pub const URL_FILE: &str = "holdalld.url";

/// Runs the backup; what it did.
pub fn run(args: BackupArgs) -> Result<BackupResponse> {
    let to = absolute(&args.to)?;
    match DataLock::try_take(&args.data)? {
        Some(_lock) => offline(&args.data, &to),
        None => online(&args, &to),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("--to needs a folder name")?;
    Ok(parent
        .canonicalize()
        .with_context(|| format!("{}", parent.display()))?
        .join(name))
}

/// The server serving the folder does it.
fn online(args: &BackupArgs, to: &Path) -> Result<BackupResponse> {
    let url = match &args.server {
        Some(u) => u.clone(),
        None => std::fs::read_to_string(args.data.join(URL_FILE))
            .with_context(|| {
                format!(
                    "a holdalld serves {} but its address is unknown: give --server",
                    args.data.display()
                )
            })?
            .trim()
            .to_string(),
    };
    let token = std::fs::read_to_string(args.data.join("admin.token"))
        .context("reading the admin token")?;
    let body = serde_json::to_vec(&BackupRequest {
        to: to.to_string_lossy().into_owned(),
    })?;
    let (status, answer) = post(&url, args.ca.as_deref(), token.trim(), &body)?;
    if status != 200 {
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    serde_json::from_slice(&answer).context("the server's answer")
}

/// The stopped store: every log folder's newest file is copied, the rest linked.
fn offline(data: &Path, to: &Path) -> Result<BackupResponse> {
    let started = std::time::Instant::now();
    let mut dirs = vec![data.join("directory")];
    for entry in std::fs::read_dir(data)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("shard-"))
        {
            dirs.push(path.join("journal"));
            dirs.push(path.join("blocks"));
        }
    }
    let mut sets = Vec::new();
    for dir in dirs {
        sets.push(stopped_set(&dir)?);
    }
    let stats = crate::shard::copy_store(&sets, data, to)?;
    Ok(BackupResponse {
        files_linked: stats.files_linked,
        files_copied: stats.files_copied,
        bytes_copied: stats.bytes_copied,
        files_kept: stats.files_kept,
        files_removed: stats.files_removed,
        ms: started.elapsed().as_millis() as u64,
    })
}

/// A stopped log folder's files: the newest segment or journal file is the one a start
/// appends to (copied); the rest never change (linked).
fn stopped_set(dir: &Path) -> Result<FileSet> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let newest = names
        .iter()
        .rfind(|n| n.ends_with(".hblk") || n.ends_with(".hjnl"))
        .cloned();
    let mut set = FileSet {
        dir: dir.to_path_buf(),
        ..FileSet::default()
    };
    for name in names.into_iter().filter(|n| !n.ends_with(".tmp")) {
        let path = dir.join(&name);
        if Some(&name) == newest.as_ref() {
            let len = std::fs::metadata(&path)?.len();
            set.growing.push((path, len));
        } else {
            set.immutable.push(path);
        }
    }
    Ok(set)
}

/// How long the backup call may take before the client gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// POSTs `body` to `URL/v1/admin/backup`; the status and the answer's body.
fn post(url: &str, ca: Option<&Path>, token: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let (tls, addr) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(a), _) => (false, a),
        (_, Some(a)) => (true, a),
        _ => bail!("{url}: not an http:// or https:// URL"),
    };
    let addr = addr.trim_end_matches('/');
    let tcp = TcpStream::connect(addr).with_context(|| format!("connecting to {url}"))?;
    tcp.set_read_timeout(Some(CALL_TIMEOUT))?;
    let head = format!(
        "POST /v1/admin/backup HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = Vec::new();
    if tls {
        let mut stream = tls_stream(tcp, addr, ca)?;
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        // A server may close without close_notify once it has answered.
        let _ = stream.read_to_end(&mut raw);
    } else {
        let mut stream = tcp;
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.read_to_end(&mut raw)?;
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{url}: no complete answer"))?;
    let status = std::str::from_utf8(&raw[..split])?
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{url}: a bad status line"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

fn tls_stream(
    tcp: TcpStream,
    addr: &str,
    ca: Option<&Path>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let ca = ca.context("an https:// server needs --ca (or HOLDALL_CA) for its private CA")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}
