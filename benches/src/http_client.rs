//! A small blocking HTTP/1.1 client with keep-alive, for the load generator: one connection
//! per worker thread, plain or TLS (rustls), bodies written as slices (no copy into one
//! buffer), answers read by their Content-Length.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Where the load goes: `host:port`, and TLS's settings for an `https://` server.
#[derive(Clone)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    tls: Option<Arc<ClientConfig>>,
}

impl Target {
    /// A plain-HTTP server at `addr`.
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_string(),
            tls: None,
        }
    }

    /// `http://host:port` or `https://host:port`; for https, `ca` is the PEM CA to trust.
    pub fn parse(url: &str, ca: Option<&Path>) -> Result<Target> {
        let url = url.trim_end_matches('/');
        if let Some(addr) = url.strip_prefix("http://") {
            return Ok(Target::plain(addr));
        }
        let addr = url
            .strip_prefix("https://")
            .context("the server URL starts with http:// or https://")?;
        let ca = ca.context("an https:// server needs --ca (the PEM CA that signed it)")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(cert.with_context(|| format!("parsing {}", ca.display()))?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            addr: addr.to_string(),
            tls: Some(Arc::new(config)),
        })
    }

    /// The port.
    pub fn port(&self) -> Result<u16> {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .context("the server address has no port")
    }
}

/// A connection's bytes: the socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive connection.
pub struct Conn {
    addr: String,
    stream: BufReader<Stream>,
}

/// `host:port` of an `http://host:port[/]` URL.
pub fn host_port(server: &str) -> Result<String> {
    let rest = server
        .strip_prefix("http://")
        .context("the load generator speaks plain http:// to the server")?;
    Ok(rest.trim_end_matches('/').to_string())
}

/// Every series of the counter or gauge `name` on holdalld's `/metrics` at `addr`.
pub fn metric_series(addr: &str, name: &str) -> Result<Vec<f64>> {
    let (_, text) = Conn::connect(addr)?.request("GET", "/metrics", "", &[])?;
    let text = String::from_utf8(text)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect())
}

impl Conn {
    /// Connects to plain-HTTP `addr` (`host:port`).
    pub fn connect(addr: &str) -> Result<Conn> {
        Conn::open(&Target::plain(addr))
    }

    /// Connects to `target`, with TLS's handshake done if it is https.
    pub fn open(target: &Target) -> Result<Conn> {
        let addr = &target.addr;
        let tcp = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let stream = match &target.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let name = ServerName::try_from(host.to_string())?;
                let mut tls = StreamOwned::new(ClientConnection::new(config.clone(), name)?, tcp);
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .with_context(|| format!("TLS handshake with {addr}"))?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Conn {
            addr: addr.clone(),
            stream: BufReader::with_capacity(1 << 20, stream),
        })
    }

    /// Sends a request whose body is `parts` in order; the status and body of the answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        parts: &[&[u8]],
    ) -> Result<(u16, Vec<u8>)> {
        self.request_with(method, path, token, "", parts)
    }

    /// As [`Conn::request`], with `extra` header lines (each ending in `\r\n`).
    pub fn request_with(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        extra: &str,
        parts: &[&[u8]],
    ) -> Result<(u16, Vec<u8>)> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n{extra}Content-Length: {len}\r\n\r\n",
            self.addr
        );
        let writer = self.stream.get_mut();
        writer.write_all(head.as_bytes())?;
        for p in parts {
            writer.write_all(p)?;
        }
        writer.flush()?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.stream.read_line(&mut line)? == 0 {
                bail!("connection closed inside a response head");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>()?);
                }
            }
        }
        // 204 and 304 carry no body, and nginx sends them without a length.
        let length = match status {
            204 | 304 => Some(0),
            _ => length,
        };
        let mut body = vec![0; length.context("response without Content-Length")?];
        self.stream.read_exact(&mut body)?;
        Ok((status, body))
    }
}
