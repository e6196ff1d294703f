//! HTTP/1.1 with hyper over glommio's TCP streams: the I/O adapter and the accept loop.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use glommio::timer::Timer;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tracing::debug;

use crate::rate_limit::ConnectionOwner;
use crate::tls::Tls;
use crate::transport::Transport;

/// How long a client may stall, in a request extension so body readers find it.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeout(pub Duration);

/// What the connection is doing, shared by its I/O adapter and its request handler.
pub struct Phase {
    /// A request is in the handler: reads belong to its body, which the handler times.
    in_request: Cell<bool>,
    /// When the connection last became idle (accepted, or a response produced).
    idle_since: Cell<Instant>,
}

/// Lets hyper read and write a glommio stream, with deadlines: a complete request head must
/// arrive within the client timeout of the connection becoming idle (so an idle keep-alive
/// connection is closed then too), and a write must make progress within it. Slow or stalled
/// clients lose the connection, not a shard's resources.
pub struct Io {
    stream: Transport,
    phase: Rc<Phase>,
    timeout: Duration,
    read_deadline: Option<(Instant, Pin<Box<Timer>>)>,
    write_deadline: Option<Pin<Box<Timer>>>,
    /// Allocated on the first read, so idle connections cost no buffer.
    read_buffer: Option<Box<[u8]>>,
    /// Small chunks gathered into one write.
    gather: Vec<u8>,
}

/// Chunks smaller than this are gathered with their neighbours into one write.
const GATHER_BYTES_MAX: usize = 64 * 1024;

/// Bytes one read takes from the socket at most.
const READ_BUFFER_BYTES: usize = 256 * 1024;

impl Io {
    fn new(stream: Transport, phase: Rc<Phase>, timeout: Duration) -> Io {
        Io {
            stream,
            phase,
            timeout,
            read_deadline: None,
            write_deadline: None,
            read_buffer: None,
            gather: Vec::new(),
        }
    }

    /// Whether the head deadline has passed (arming its timer if needed).
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase.in_request.get() {
            self.read_deadline = None;
            return false;
        }
        let deadline = self.phase.idle_since.get() + self.timeout;
        let stale = self
            .read_deadline
            .as_ref()
            .is_none_or(|(d, _)| *d != deadline);
        if stale {
            let left = deadline.saturating_duration_since(Instant::now());
            self.read_deadline = Some((deadline, Box::pin(Timer::new(left))));
        }
        let (_, timer) = self.read_deadline.as_mut().expect("armed above");
        timer.as_mut().poll(cx).is_ready()
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Receives what is already waiting on plain socket `fd` straight into hyper's buffer;
/// None when nothing is waiting.
fn recv_into_hyper(fd: i32, buf: &mut hyper::rt::ReadBufCursor<'_>) -> Option<io::Result<()>> {
    // SAFETY: recv writes at most `spare.len()` bytes into `spare` (uninitialized memory is
    // fine for it); exactly the `n` it reports written are marked filled.
    unsafe {
        let spare = buf.as_mut();
        let n = match crate::transport::recv_waiting(fd, spare.as_mut_ptr().cast(), spare.len())? {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        buf.advance(n);
    }
    Some(Ok(()))
}

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Data already waiting is received straight into hyper's buffer: recv(2) writes into
        // uninitialized memory, which is what hyper offers. glommio's reads want initialized
        // memory, so only when the socket is empty does the read go through glommio (which
        // waits for readiness) into the connection's scratch buffer, zeroed once, and is
        // copied over: the copy was 6 % of the server's time storing 4 MiB blocks. TLS
        // always reads through the scratch buffer: rustls hands out plaintext by copy only.
        let this = &mut *self;
        if let Transport::Plain(stream) = &this.stream {
            if let Some(result) = recv_into_hyper(stream.as_raw_fd(), &mut buf) {
                return Poll::Ready(result);
            }
        }
        let want = buf.remaining().min(READ_BUFFER_BYTES);
        let scratch = this
            .read_buffer
            .get_or_insert_with(|| vec![0; READ_BUFFER_BYTES].into_boxed_slice());
        match this.stream.poll_read(cx, &mut scratch[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&scratch[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.head_timed_out(cx) {
                    return Poll::Ready(Err(timed_out("request head")));
                }
                Poll::Pending
            }
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream.poll_write(cx, buf) {
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(Timer::new(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("response write")));
                }
                Poll::Pending
            }
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    /// Big chunks (block buffers) are written straight from where they are; runs of small
    /// ones (heads, frame headers, small blocks) are gathered into one write. Saying yes to
    /// vectored writes keeps hyper from copying every body into its own buffer first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if bufs[first].len() >= GATHER_BYTES_MAX {
            return self.poll_write(cx, &bufs[first]);
        }
        let mut gathered = std::mem::take(&mut self.gather);
        gathered.clear();
        for b in &bufs[first..] {
            let room = GATHER_BYTES_MAX - gathered.len();
            if room == 0 {
                break;
            }
            gathered.extend_from_slice(&b[..b.len().min(room)]);
        }
        let result = self.as_mut().poll_write(cx, &gathered);
        self.gather = gathered;
        result
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_close(cx)
    }
}

/// Connections a shard serves at once; further ones wait to be accepted.
pub const CONNECTIONS_MAX: u64 = 4096;

/// How often a shard looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// The pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Accepts connections until `stop` is set and serves each with `handle`. Returns once
/// accepting has stopped and the requests in progress have finished (or `grace` has passed);
/// idle keep-alive connections are simply closed.
pub async fn serve<H, F>(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    grace: Duration,
    client_timeout: Duration,
    tls: Option<Arc<Tls>>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + 'static,
    F: Future<Output = Response<crate::body::Body>> + 'static,
{
    let connection = (client_timeout, tls);
    serve_polling(listener, (stop, STOP_POLL), grace, connection, handle).await;
}

/// [`serve`], looking at the stop flag every `stop_poll`.
async fn serve_polling<H, F>(
    listener: TcpListener,
    (stop, stop_poll): (Arc<AtomicBool>, Duration),
    grace: Duration,
    (client_timeout, tls): (Duration, Option<Arc<Tls>>),
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + 'static,
    F: Future<Output = Response<crate::body::Body>> + 'static,
{
    let busy = Rc::new(Cell::new(0usize));
    let connection = Connection {
        tls,
        client_timeout,
        busy: busy.clone(),
    };
    // The accept loop is its own task, woken only by its accepts: a pending glommio accept
    // keeps a clone of the waker of every poll, so racing it against a stop timer leaked
    // a waker reference per tick until the task's count overflowed (a panic after some
    // quarter of an hour without a new connection).
    let accepting = glommio::spawn_local(accept_all(listener, connection, handle));
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(stop_poll).await;
    }
    // Cancelled at its accept: a connection the kernel took in this instant is reset, which
    // a client retries (only ever at shutdown).
    accepting.cancel().await;
    let deadline = Instant::now() + grace;
    while busy.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

/// Accepts connections for ever, at most [`CONNECTIONS_MAX`] served at once, each on its
/// own task as `connection` says.
async fn accept_all<H, F>(listener: TcpListener, connection: Connection, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + 'static,
    F: Future<Output = Response<crate::body::Body>> + 'static,
{
    let permits = Rc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors, say: give the connections in progress a moment.
                debug!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // A response goes out in several writes (head, frame headers, blocks); with Nagle's
        // algorithm a short last segment waited for the client's delayed ACK, up to 40 ms a
        // request.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "could not turn off Nagle's algorithm");
        }
        let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
            return;
        };
        let (connection, handle) = (connection.clone(), handle.clone());
        glommio::spawn_local(async move {
            connection.serve(stream, handle).await;
            drop(permit);
        })
        .detach();
    }
}

/// What serving one accepted connection needs from its shard.
#[derive(Clone)]
struct Connection {
    tls: Option<Arc<Tls>>,
    client_timeout: Duration,
    /// Requests in the shard's handlers, for the stop's grace period.
    busy: Rc<Cell<usize>>,
}

impl Connection {
    /// Opens the transport (the TLS handshake, if any) and serves requests on it with
    /// `handle` until the client or a timeout ends it.
    async fn serve<H, F>(self, stream: TcpStream, handle: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + 'static,
        F: Future<Output = Response<crate::body::Body>> + 'static,
    {
        let Connection {
            tls,
            client_timeout,
            busy,
        } = self;
        let Some(transport) = Transport::open(stream, tls.as_deref(), client_timeout).await else {
            return;
        };
        let phase = Rc::new(Phase {
            in_request: Cell::new(false),
            idle_since: Cell::new(Instant::now()),
        });
        let io = Io::new(transport, phase.clone(), client_timeout);
        let owner = Arc::new(ConnectionOwner::default());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientTimeout(client_timeout));
            req.extensions_mut().insert(owner.clone());
            busy.set(busy.get() + 1);
            phase.in_request.set(true);
            let fut = handle(req);
            let (busy, phase) = (busy.clone(), phase.clone());
            async move {
                let response = fut.await;
                busy.set(busy.get() - 1);
                phase.in_request.set(false);
                phase.idle_since.set(Instant::now());
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service);
        if let Err(e) = conn.await {
            debug!(error = %e, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The accept loop once leaked a waker reference per stop poll while no connection came
    /// (glommio keeps one per poll of a pending accept), and the shard panicked when the
    /// count overflowed, after 32,767 polls. Polled every 20 µs here, 3 s of idleness is
    /// well past that.
    const POLL: Duration = Duration::from_micros(20);

    #[test]
    fn a_listener_idle_through_many_stop_polls_still_accepts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop_in, polls_in) = (stop.clone(), polls.clone());
        let server = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = TcpListener::bind(addr).unwrap();
                // Counts the polls a loop like serve's makes in the time.
                let stop_ticks = stop_in.clone();
                let ticks = glommio::spawn_local(async move {
                    while !stop_ticks.load(Ordering::Relaxed) {
                        glommio::timer::sleep(POLL).await;
                        polls_in.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let handle =
                    |_req| async { Response::new(crate::body::Body::from_chunks(Vec::new())) };
                let timeouts = (Duration::from_secs(5), None);
                serve_polling(
                    listener,
                    (stop_in, POLL),
                    Duration::from_secs(1),
                    timeouts,
                    handle,
                )
                .await;
                ticks.await;
            })
            .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        client.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        assert!(
            polls.load(Ordering::Relaxed) > 40_000,
            "{} polls",
            polls.load(Ordering::Relaxed)
        );
    }
}
