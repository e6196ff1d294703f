//! The bulk path's connection: the socket itself for `http://` (blocks leave by
//! `sendfile`, answers land straight in the caller's buffers), or TLS over it for
//! `https://` through rustls, with no copy beyond the cipher's: a block is read from its
//! file into one buffer, sealed by rustls into its records and sent; an answer is opened
//! by rustls in its buffer and copied once into the caller's.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::bulk::BulkError;

/// Bytes of a file read at once to be sent from a buffer (sealed under TLS).
const TLS_FILE_CHUNK_BYTES: usize = 1 << 20;

/// A bulk connection.
pub enum Wire {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// TLS settings for https bulk connections: the private CA in `ca`, else the system's
/// roots (as the general path trusts).
pub fn tls_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let mut config = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading --ca {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("parsing --ca {}", path.display()))?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .context("the system's certificate roots")?
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Wire {
    /// TLS over `tcp` to `host`, handshake done.
    pub fn tls(tcp: TcpStream, config: &Arc<ClientConfig>, host: &str) -> io::Result<Wire> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Wire::Tls(Box::new(tls)))
    }

    /// The socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &t.sock,
        }
    }

    /// Sends `bytes`; with `more`, more follows at once (plain: `MSG_MORE`, so a frame
    /// header and its block leave in the same segments).
    pub fn send(&mut self, bytes: &[u8], more: bool) -> Result<(), BulkError> {
        match self {
            Wire::Plain(s) => send_plain(s, bytes, more),
            Wire::Tls(t) => {
                t.write_all(bytes)?;
                if !more {
                    t.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Sends `len` bytes at `offset` of `file`: by `sendfile(2)` in plain, read into a
    /// buffer and sealed under TLS.
    pub fn send_file(&mut self, file: &File, offset: u64, len: usize) -> Result<(), BulkError> {
        match self {
            Wire::Plain(s) => send_file_plain(s, file, offset, len),
            Wire::Tls(_) => self.send_read(file, offset, len),
        }
    }

    /// Sends `len` bytes at `offset` of `file` by reading them into a buffer first.
    pub fn send_read(&mut self, file: &File, offset: u64, len: usize) -> Result<(), BulkError> {
        read_and_send(file, offset, len, |bytes| self.send(bytes, true))
    }
}

/// Reads `len` bytes at `offset` of `file` a chunk at a time and hands each to `send`.
fn read_and_send(
    file: &File,
    offset: u64,
    len: usize,
    mut send: impl FnMut(&[u8]) -> Result<(), BulkError>,
) -> Result<(), BulkError> {
    let mut buf = vec![0u8; len.min(TLS_FILE_CHUNK_BYTES)];
    let mut done = 0;
    while done < len {
        let n = buf.len().min(len - done);
        file.read_exact_at(&mut buf[..n], offset + done as u64)
            .map_err(|_| BulkError::SourceShort)?;
        send(&buf[..n])?;
        done += n;
    }
    Ok(())
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(t) => match t.read(buf) {
                // A server may close without close_notify after its last answer.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

/// Writes `bytes` to a plain socket; with `more`, telling the kernel more follows.
fn send_plain(stream: &TcpStream, mut bytes: &[u8], more: bool) -> Result<(), BulkError> {
    let flags = match more {
        true => libc::MSG_MORE | libc::MSG_NOSIGNAL,
        false => libc::MSG_NOSIGNAL,
    };
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe `bytes`, which outlives the call; the
        // descriptor is the stream's own.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                flags,
            )
        };
        match n {
            n if n > 0 => bytes = &bytes[n as usize..],
            0 => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// Sends `len` bytes at `offset` of `file` with `sendfile(2)`; a file system that cannot
/// splice its pages (some FUSE ones) gets a copy instead.
fn send_file_plain(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: usize,
) -> Result<(), BulkError> {
    let mut at = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond off_t"))?;
    let mut left = len;
    while left > 0 {
        // SAFETY: both descriptors stay open for the call (borrowed from live owners), and
        // `at` is a valid off_t the kernel advances.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut at, left) };
        match n {
            n if n > 0 => left -= n as usize,
            0 => return Err(BulkError::SourceShort),
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                        return read_and_send(file, at as u64, left, |bytes| {
                            send_plain(stream, bytes, true)
                        });
                    }
                    Some(libc::EIO) => return Err(BulkError::SourceShort),
                    _ => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}
