//! A connection's byte stream: the socket itself, or TLS over it once the handshake is
//! done. A client that speaks plain HTTP to the TLS port is told so; one that sends
//! anything else, or stalls, is dropped. Neither costs more than a timeout's worth of a
//! connection slot.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::debug;

use crate::tls::{Tls, HANDSHAKE_RECORD};

/// What a plain-HTTP request to the TLS port gets back before the connection closes.
const PLAIN_TO_TLS_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nConnection: close\r\n\r\nthis port speaks HTTPS: use an https:// URL.\r\n";

/// The connection's byte stream: the socket itself, or TLS over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<futures_rustls::server::TlsStream<TcpStream>>),
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
}

impl Transport {
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
            Ok(Ok(tls.acceptor().accept(stream).await?))
        })
        .await;
        match opened {
            Some(Ok(Ok(tls_stream))) => Some(Transport::Tls(Box::new(tls_stream))),
            Some(Ok(Err(mut plain))) => {
                debug!("plain request to the TLS port");
                let _ = within(timeout, async {
                    plain.write_all(PLAIN_TO_TLS_ANSWER).await?;
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
