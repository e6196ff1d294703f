//! nginx as the peer of `holdall-bench versus-nginx`: Debian's nginx started in a temporary
//! prefix on loopback with WebDAV PUT enabled, and the same block workload as store_batch and
//! retrieve_batch sent to it as one PUT or GET per 4 MiB block.

use crate::http_client::Target;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::http_client::Conn;
use crate::load::{parallel, Block, Run};

/// A running nginx (master and workers) serving `root` over WebDAV.
pub struct Nginx {
    master: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    root: PathBuf,
    prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so the master takes its workers down with it (SIGKILL would orphan them).
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.master.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.master.wait();
    }
}

/// The nginx binary: `NGINX` if set, else Debian's.
fn binary() -> Result<PathBuf> {
    let bin =
        std::env::var_os("NGINX").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from);
    ensure!(
        bin.exists(),
        "{} not found: benches/versus-nginx.sh installs Debian's nginx",
        bin.display()
    );
    Ok(bin)
}

/// The configuration: WebDAV PUT into `root`, bodies buffered in files beside it (nginx's
/// own way: a PUT lands in a temporary file that is renamed into place), sendfile for GET.
fn config(prefix: &Path, port: u16) -> String {
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let p = prefix.display();
    format!(
        "{user}worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n\
           client_max_body_size 16m;\n  client_body_buffer_size 4m;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    root {p}/dav;\n\
             location / {{ dav_methods PUT DELETE; create_full_put_path on; }}\n  }}\n}}\n"
    )
}

impl Nginx {
    /// Starts nginx with its prefix in a temporary folder under `scratch` (the disk measured).
    pub fn start(scratch: &Path) -> Result<Nginx> {
        let prefix = tempfile::tempdir_in(scratch)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir(prefix.path().join("dav"))?;
        let conf = prefix.path().join("nginx.conf");
        std::fs::write(&conf, config(prefix.path(), port))?;
        let master = Command::new(binary()?)
            .arg("-p")
            .arg(prefix.path())
            .arg("-e")
            .arg(prefix.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let addr = format!("127.0.0.1:{port}");
        let nginx = Nginx {
            master,
            addr,
            root: prefix.path().join("dav"),
            prefix,
        };
        nginx.wait_listening()?;
        Ok(nginx)
    }

    fn wait_listening(&self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default();
        bail!("nginx did not listen on {} within 10 s: {log}", self.addr)
    }

    /// PUTs every block to `/{hash}`, one per request.
    pub fn put(&self, blocks: &[Block], concurrency: usize) -> Result<Run> {
        parallel(
            &Target::plain(&self.addr),
            blocks.len(),
            concurrency,
            |conn, i| {
                let b = &blocks[i];
                let (status, body) =
                    conn.request("PUT", &format!("/{}", b.hash), "", &[&b.data])?;
                ensure!(
                    status == 201 || status == 204,
                    "PUT: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(b.data.len() as u64)
            },
        )
    }

    /// Makes everything PUT so far durable (syncfs of its file system), so that a store can
    /// be compared with one whose answers come after fdatasync.
    pub fn sync(&self) -> Result<()> {
        let dir = std::fs::File::open(&self.root)?;
        // SAFETY: the descriptor is open for the call's duration.
        ensure!(
            unsafe { libc::syncfs(dir.as_raw_fd()) } == 0,
            "syncfs failed"
        );
        Ok(())
    }

    /// Drops the stored files' pages from the page cache (they are clean after
    /// [`Nginx::sync`]), so the next GETs read the disk.
    pub fn evict(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.root)? {
            let file = std::fs::File::open(entry?.path())?;
            // SAFETY: the descriptor is open for the call's duration.
            let r =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            ensure!(r == 0, "posix_fadvise: {r}");
        }
        Ok(())
    }

    /// GETs every block back, checking each answer's length and first bytes.
    pub fn get(&self, blocks: &[Block], concurrency: usize) -> Result<Run> {
        parallel(
            &Target::plain(&self.addr),
            blocks.len(),
            concurrency,
            |conn: &mut Conn, i| {
                let b = &blocks[i];
                let (status, body) = conn.request("GET", &format!("/{}", b.hash), "", &[])?;
                ensure!(
                    status == 200 && body.len() == b.data.len() && body[..64] == b.data[..64],
                    "GET /{}: {status}, {} bytes",
                    b.hash,
                    body.len()
                );
                Ok(body.len() as u64)
            },
        )
    }
}
