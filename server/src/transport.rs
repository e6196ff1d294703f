//! A connection's byte stream: the socket itself, or TLS over it once the handshake is
//! done. A client that speaks plain HTTP to the TLS port is told so; one that sends
//! anything else, or stalls, is dropped. Neither costs more than a timeout's worth of a
//! connection slot.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::debug;

use crate::tls::{Tls, HANDSHAKE_RECORD};

/// The body of what a plain-HTTP request to the TLS port gets back.
const PLAIN_TO_TLS_BODY: &str = "this port speaks HTTPS: use an https:// URL.\r\n";

/// The whole answer to a plain-HTTP request to the TLS port, before the connection closes.
fn plain_to_tls_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_TO_TLS_BODY}",
        PLAIN_TO_TLS_BODY.len()
    )
}

/// Receives into `len` bytes at `buf` what is already waiting on socket `fd`, without
/// waiting; None when nothing is.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes.
pub unsafe fn recv_waiting(fd: i32, buf: *mut u8, len: usize) -> Option<io::Result<usize>> {
    // SAFETY: the caller vouches for `buf` and `len`; recv writes at most `len` bytes.
    let received = unsafe { libc::recv(fd, buf.cast(), len, libc::MSG_DONTWAIT) };
    if let Ok(n) = usize::try_from(received) {
        return Some(Ok(n));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
        _ => Some(Err(e)),
    }
}

/// The connection's byte stream: the socket itself, or TLS over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TlsSocket>>),
}

impl Transport {
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }

    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    pub fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }

    /// The transport of a newly accepted `stream`: plain without `tls`, else TLS once the
    /// handshake has finished within `timeout`. None when the connection is not worth
    /// serving (it is closed, after a plain-HTTP client has been told why).
    pub async fn open(
        stream: TcpStream,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Option<Transport> {
        let Some(tls) = tls else {
            return Some(Transport::Plain(stream));
        };
        let opened = within(timeout, async {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            if first[0] != HANDSHAKE_RECORD {
                return Ok(Err(stream));
            }
            Ok(Ok(tls.acceptor().accept(TlsSocket::new(stream)).await?))
        })
        .await;
        match opened {
            Some(Ok(Ok(tls_stream))) => Some(Transport::Tls(Box::new(tls_stream))),
            Some(Ok(Err(mut plain))) => {
                debug!("plain request to the TLS port");
                let _ = within(timeout, async {
                    plain.write_all(plain_to_tls_answer().as_bytes()).await?;
                    plain.close().await
                })
                .await;
                None
            }
            Some(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                None
            }
            None => {
                debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// `work`'s output, or None if it has not finished within `timeout`.
async fn within<T>(timeout: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
    let work = std::pin::pin!(work);
    let timer = std::pin::pin!(glommio::timer::sleep(timeout));
    match futures::future::select(work, timer).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    }
}

/// Bytes one receive under TLS takes from the socket at most.
const TLS_RECEIVE_BYTES: usize = 128 * 1024;

/// Most records one send under TLS carries.
const TLS_SEND_SLICES_MAX: usize = 64;

/// The socket under TLS. rustls reads at most 4 KiB at a time and writes a record (16 KiB)
/// per call: straight to the socket, that was a system call, and a copy through glommio's
/// buffer, per 4 KiB received. Here rustls's reads are served from one large receive and
/// every record it has queued goes out in one `sendmsg`; glommio only waits for readiness.
pub struct TlsSocket {
    stream: TcpStream,
    /// Received and not yet taken: `received[start..end]`; allocated on the first read.
    received: Box<[u8]>,
    start: usize,
    end: usize,
}

impl TlsSocket {
    fn new(stream: TcpStream) -> TlsSocket {
        TlsSocket {
            stream,
            received: Box::default(),
            start: 0,
            end: 0,
        }
    }

    /// Refills the buffer from the socket; Ready(Ok(0)) at the end of the stream.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.received.is_empty() {
            self.received = vec![0; TLS_RECEIVE_BYTES].into_boxed_slice();
        }
        let (fd, len) = (self.stream.as_raw_fd(), self.received.len());
        // SAFETY: `received` is valid for writes of its length.
        let got = match unsafe { recv_waiting(fd, self.received.as_mut_ptr(), len) } {
            Some(Ok(got)) => got,
            Some(Err(e)) => return Poll::Ready(Err(e)),
            None => match Pin::new(&mut self.stream).poll_read(cx, &mut self.received) {
                Poll::Ready(Ok(got)) => got,
                other => return other,
            },
        };
        (self.start, self.end) = (0, got);
        Poll::Ready(Ok(got))
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.start == this.end {
            match this.poll_receive(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => {}
                other => return other,
            }
        }
        let n = buf.len().min(this.end - this.start);
        buf[..n].copy_from_slice(&this.received[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let slices = &bufs[..bufs.len().min(TLS_SEND_SLICES_MAX)];
        // SAFETY: IoSlice is ABI-compatible with iovec; sendmsg only reads the slices.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = slices.len();
            libc::sendmsg(
                self.stream.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if let Ok(n) = usize::try_from(sent) {
            return Poll::Ready(Ok(n));
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ) {
            return Poll::Ready(Err(e));
        }
        // Not writable now: glommio's write waits for it.
        let first = slices
            .iter()
            .find(|s| !s.is_empty())
            .map_or(&[][..], |s| &s[..]);
        Pin::new(&mut self.stream).poll_write(cx, first)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
