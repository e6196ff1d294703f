//! HTTP/1.1 with hyper over glommio's TCP streams: the I/O adapter and the accept loop.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tracing::debug;

/// Lets hyper read and write a glommio stream.
pub struct Io(pub TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the bytes are zeroed before they are exposed as `&mut [u8]`, and `advance`
        // is told only of the bytes the read filled.
        let filled = unsafe {
            let uninit = buf.as_mut();
            std::ptr::write_bytes(uninit.as_mut_ptr(), 0, uninit.len());
            let slice =
                std::slice::from_raw_parts_mut(uninit.as_mut_ptr().cast::<u8>(), uninit.len());
            match Pin::new(&mut self.0).poll_read(cx, slice) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        // SAFETY: `filled` bytes were written by the read above.
        unsafe { buf.advance(filled) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Connections a shard serves at once; further ones wait to be accepted.
pub const CONNECTIONS_MAX: u64 = 4096;

/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` is set and serves each with `handle`. Returns once
/// accepting has stopped and the requests in progress have finished (or `grace` has passed);
/// idle keep-alive connections are simply closed.
pub async fn serve<H, F>(listener: TcpListener, stop: Arc<AtomicBool>, grace: Duration, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + 'static,
    F: Future<Output = Response<crate::body::Body>> + 'static,
{
    let permits = Rc::new(Semaphore::new(CONNECTIONS_MAX));
    let busy = Rc::new(Cell::new(0usize));
    while !stop.load(Ordering::Relaxed) {
        let accepted = futures::future::select(
            Box::pin(listener.accept()),
            Box::pin(glommio::timer::sleep(STOP_POLL)),
        )
        .await;
        let stream = match accepted {
            futures::future::Either::Left((Ok(stream), _)) => stream,
            futures::future::Either::Left((Err(e), _)) => {
                debug!(error = %e, "accept failed");
                continue;
            }
            futures::future::Either::Right(_) => continue,
        };
        let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
            break;
        };
        let handle = handle.clone();
        let busy = busy.clone();
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                busy.set(busy.get() + 1);
                let fut = handle(req);
                let busy = busy.clone();
                async move {
                    let response = fut.await;
                    busy.set(busy.get() - 1);
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(Io(stream), service);
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        })
        .detach();
    }
    drop(listener);
    let deadline = std::time::Instant::now() + grace;
    while busy.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(STOP_POLL).await;
    }
}
