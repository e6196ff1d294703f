//! store_batch over plain HTTP with each block handed to the kernel by `sendfile(2)`,
//! straight from the page cache of the file it is read from.
//!
//! Sending a block through ureq read it from its file into a buffer, had ureq copy that
//! buffer into its own, and the socket copy it once more: a `perf` of an uploading client
//! put those three passes at a third of its time, as much as hashing. Here the request's
//! head and each frame's 36-byte header are written with `MSG_MORE` and a large block's
//! bytes follow by `sendfile`; small blocks are read and gathered with their headers into
//! one write, as a sendfile each costs more than the copy. The answer is a short JSON body
//! read with `httparse`.
//!
//! Only `http://` servers: through TLS the bytes must pass through user space to be
//! encrypted, and those uploads keep the buffered path. A block that changes while it is
//! sent is refused by the server (it hashes every block); a file cut short while it is sent
//! leaves the request unfinishable, so the connection is dropped and the caller told.

use std::fs::File;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::Duration;

use holdall_proto::frame::{store_frame_header, STORE_HEADER_BYTES};
use holdall_proto::BlockHash;

/// Idle connections kept for the next request.
const IDLE_CONNECTIONS_MAX: usize = 16;
/// Most bytes of an answer's status line and headers.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// Most headers an answer may carry.
const HEADERS_MAX: usize = 32;
/// Blocks at least this long are sent by sendfile; smaller ones are read and gathered.
const SENDFILE_BYTES_MIN: usize = 64 << 10;
/// Gathered bytes written at once.
const STAGED_BYTES_MAX: usize = 1 << 20;

/// One block to send: `len` bytes at `offset` of `file`.
#[derive(Debug)]
pub struct Piece {
    /// The block's name.
    pub hash: BlockHash,
    /// The file it is read from.
    pub file: File,
    /// Where the block starts in the file.
    pub offset: u64,
    /// The block's length.
    pub len: usize,
}

/// A server's answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a bulk request failed.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The connection failed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A file ended before its block did (it was cut while being sent).
    #[error("a file ended before the block being sent from it")]
    SourceShort,
    /// The answer was not HTTP this client takes.
    #[error("{0}")]
    BadAnswer(String),
}

/// Connections to one `http://` server.
#[derive(Debug)]
pub struct Bulk {
    /// `host:port` to connect to.
    authority: String,
    /// The `Host` header's value.
    host: String,
    /// The URL's path before `/v1/...`, without a trailing slash.
    prefix: String,
    idle: Mutex<Vec<TcpStream>>,
}

/// What went wrong in one exchange, and whether any of the answer had arrived.
struct Failure {
    error: BulkError,
    answered: bool,
}

impl From<BulkError> for Failure {
    fn from(error: BulkError) -> Failure {
        Failure {
            error,
            answered: false,
        }
    }
}

impl Bulk {
    /// Connections to the server at `url`; None unless it is `http://`.
    pub fn new(url: &str) -> Option<Bulk> {
        let rest = url.strip_prefix("http://")?;
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            return None;
        }
        // A port follows the last colon, unless that colon is inside an IPv6 literal.
        let has_port = host.rfind(':').is_some_and(|i| !host[i..].contains(']'));
        let authority = match has_port {
            true => host.to_string(),
            false => format!("{host}:80"),
        };
        Some(Bulk {
            authority,
            host: host.to_string(),
            prefix: prefix.to_string(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs store frames of `pieces` to `path` with `headers` (complete `Name: value\r\n`
    /// lines), and returns the answer (at most `limit` body bytes). A pooled connection
    /// the server closed meanwhile is replaced once, which is safe because storing blocks
    /// is idempotent.
    pub fn post_pieces(
        &self,
        path: &str,
        headers: &str,
        pieces: &[Piece],
        timeout: Duration,
        limit: usize,
    ) -> Result<Answer, BulkError> {
        let length: usize = pieces.iter().map(|p| STORE_HEADER_BYTES + p.len).sum();
        let head = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {length}\r\n{headers}\r\n",
            self.prefix, self.host
        );
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let reused = pooled.is_some();
        let stream = match pooled {
            Some(s) => s,
            None => self.connect(timeout)?,
        };
        let failure = match exchange(&stream, &head, pieces, timeout, limit) {
            Ok((answer, keep)) => {
                self.keep(stream, keep);
                return Ok(answer);
            }
            Err(f) => f,
        };
        let stale = reused && !failure.answered && matches!(failure.error, BulkError::Io(_));
        if !stale {
            return Err(failure.error);
        }
        let stream = self.connect(timeout)?;
        match exchange(&stream, &head, pieces, timeout, limit) {
            Ok((answer, keep)) => {
                self.keep(stream, keep);
                Ok(answer)
            }
            Err(f) => Err(f.error),
        }
    }

    fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(&self.authority)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    }

    fn keep(&self, stream: TcpStream, keep: bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if keep && idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(stream);
        }
    }
}

/// Sends the request and reads the answer; true with it if the connection may be reused.
fn exchange(
    stream: &TcpStream,
    head: &str,
    pieces: &[Piece],
    timeout: Duration,
    limit: usize,
) -> Result<(Answer, bool), Failure> {
    stream
        .set_read_timeout(Some(timeout))
        .map_err(BulkError::Io)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(BulkError::Io)?;
    match send_request(stream, head, pieces) {
        Ok(()) => read_answer(stream, limit),
        // A server that refuses a request early (a bad token, say) answers and closes
        // without reading the rest: its answer says more than the broken pipe.
        Err(BulkError::Io(e)) => match read_answer(stream, limit) {
            Ok((answer, _)) => Ok((answer, false)),
            Err(_) => Err(BulkError::Io(e).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Sends the head and the frames: large blocks by sendfile, small ones gathered with the
/// headers into `staged` and written together (a sendfile per 4 KiB block made 10,000 small
/// files upload 25 % slower, and the server receive them in as many small pieces).
fn send_request(stream: &TcpStream, head: &str, pieces: &[Piece]) -> Result<(), BulkError> {
    let mut staged = Vec::with_capacity(STAGED_BYTES_MAX + STORE_HEADER_BYTES + SENDFILE_BYTES_MIN);
    staged.extend_from_slice(head.as_bytes());
    for piece in pieces {
        staged.extend_from_slice(&store_frame_header(&piece.hash, piece.len as u32));
        if piece.len >= SENDFILE_BYTES_MIN {
            send(stream, &staged, true)?;
            staged.clear();
            send_file(stream, &piece.file, piece.offset, piece.len)?;
            continue;
        }
        let at = staged.len();
        staged.resize(at + piece.len, 0);
        piece
            .file
            .read_exact_at(&mut staged[at..], piece.offset)
            .map_err(|_| BulkError::SourceShort)?;
        if staged.len() >= STAGED_BYTES_MAX {
            send(stream, &staged, true)?;
            staged.clear();
        }
    }
    send(stream, &staged, false)
}

/// Writes `bytes`; with `more`, telling the kernel more follows (so a frame header and its
/// block leave in the same segments).
fn send(stream: &TcpStream, mut bytes: &[u8], more: bool) -> Result<(), BulkError> {
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

/// Sends `len` bytes at `offset` of `file` with `sendfile(2)`.
fn send_file(stream: &TcpStream, file: &File, offset: u64, len: usize) -> Result<(), BulkError> {
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
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// Reads an answer with a `Content-Length` body of at most `limit` bytes.
fn read_answer(mut stream: &TcpStream, limit: usize) -> Result<(Answer, bool), Failure> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    let (status, head_len, length, keep) = loop {
        if filled == buf.len() {
            if buf.len() >= HEAD_BYTES_MAX {
                return Err(answered(BulkError::BadAnswer(
                    "answer head too long".into(),
                )));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => {
                let closed = io::Error::new(io::ErrorKind::ConnectionAborted, "closed");
                return Err(BulkError::Io(closed).into());
            }
            Ok(0) => return Err(answered(BulkError::BadAnswer("answer cut short".into()))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure {
                    error: e.into(),
                    answered: filled > 0,
                })
            }
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..filled]) {
            Ok(httparse::Status::Partial) => {}
            Ok(httparse::Status::Complete(head_len)) => {
                let (length, keep) = framing(&response).map_err(answered)?;
                let status = response.code.unwrap_or(0);
                break (status, head_len, length, keep);
            }
            Err(e) => return Err(answered(BulkError::BadAnswer(e.to_string()))),
        }
    };
    if length > limit {
        return Err(answered(BulkError::BadAnswer(format!(
            "answer of {length} bytes, more than {limit}"
        ))));
    }
    let mut body = buf[head_len..filled].to_vec();
    if body.len() > length {
        return Err(answered(BulkError::BadAnswer(
            "bytes after the answer".into(),
        )));
    }
    let start = body.len();
    body.resize(length, 0);
    stream
        .read_exact(&mut body[start..])
        .map_err(|e| answered(e.into()))?;
    Ok((Answer { status, body }, keep))
}

fn answered(error: BulkError) -> Failure {
    Failure {
        error,
        answered: true,
    }
}

/// The body's length and whether the connection stays open, from the answer's headers.
fn framing(response: &httparse::Response) -> Result<(usize, bool), BulkError> {
    let mut length = None;
    let mut keep = response.version == Some(1);
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| BulkError::BadAnswer(format!("bad Content-Length {value:?}")))?;
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(BulkError::BadAnswer(format!(
                "unexpected Transfer-Encoding {value:?}"
            )));
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep = keep && !value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.ok_or_else(|| BulkError::BadAnswer("no Content-Length".into()))?;
    Ok((length, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn only_http_urls_get_a_bulk_path() {
        let b = Bulk::new("http://127.0.0.1:8340").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("127.0.0.1:8340", "")
        );
        let b = Bulk::new("http://sync.example/holdall/").unwrap();
        assert_eq!(b.authority, "sync.example:80");
        assert_eq!(
            (b.host.as_str(), b.prefix.as_str()),
            ("sync.example", "/holdall")
        );
        assert_eq!(Bulk::new("http://[::1]").unwrap().authority, "[::1]:80");
        assert_eq!(Bulk::new("http://[::1]:9").unwrap().authority, "[::1]:9");
        assert!(Bulk::new("https://sync.example").is_none());
        assert!(Bulk::new("http://").is_none());
    }

    /// Reads one request; its head and body.
    fn request(stream: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).unwrap();
        (head, body)
    }

    fn answer(stream: &mut TcpStream, status: &str, body: &str) {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
    }

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn pieces_arrive_as_store_frames_and_a_closed_idle_connection_is_replaced() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (_dir, path) = file_of(&data);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pre", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            // The first connection answers once and is then closed, as an idle server does.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                seen.push(request(&mut s));
                answer(&mut s, "200 OK", "{}");
            }
            seen
        });
        let bulk = Bulk::new(&url).unwrap();
        let pieces = |file: &std::path::Path| {
            vec![
                Piece {
                    hash: BlockHash::of(&data[..1000]),
                    file: File::open(file).unwrap(),
                    offset: 0,
                    len: 1000,
                },
                Piece {
                    hash: BlockHash::of(&data[1000..]),
                    file: File::open(file).unwrap(),
                    offset: 1000,
                    len: data.len() - 1000,
                },
            ]
        };
        let timeout = Duration::from_secs(10);
        let headers = "Authorization: Bearer t\r\n";
        for _ in 0..2 {
            let a = bulk
                .post_pieces("/v1/store_batch", headers, &pieces(&path), timeout, 100)
                .unwrap();
            assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
        }
        let seen = server.join().unwrap();
        let mut want = Vec::new();
        holdall_proto::frame::encode_store_frame(
            &mut want,
            &BlockHash::of(&data[..1000]),
            &data[..1000],
        );
        holdall_proto::frame::encode_store_frame(
            &mut want,
            &BlockHash::of(&data[1000..]),
            &data[1000..],
        );
        for (head, body) in seen {
            assert!(
                head.starts_with("POST /pre/v1/store_batch HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains("Authorization: Bearer t\r\n"), "{head}");
            assert!(body == want, "the body is the store frames");
        }
    }

    #[test]
    fn a_file_cut_short_is_reported_and_bad_answers_are_refused() {
        let (_dir, path) = file_of(&[7u8; 100]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            // The cut requests' connections are dropped by the client mid-body.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let _ = s.read_to_end(&mut Vec::new());
            }
            let (mut s, _) = listener.accept().unwrap();
            request(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
                .unwrap();
            // Hold the connection until the client is done with it.
            let _ = s.read(&mut [0u8; 1]);
        });
        let bulk = Bulk::new(&url).unwrap();
        let piece = |len| Piece {
            hash: BlockHash::of(b"x"),
            file: File::open(&path).unwrap(),
            offset: 0,
            len,
        };
        let timeout = Duration::from_secs(10);
        // Read and gathered, then sent by sendfile.
        for len in [200, 100_000] {
            let r = bulk.post_pieces("/v1/store_batch", "", &[piece(len)], timeout, 100);
            assert!(matches!(r, Err(BulkError::SourceShort)), "{len}: {r:?}");
        }
        let r = bulk.post_pieces("/v1/store_batch", "", &[piece(100)], timeout, 100);
        assert!(matches!(r, Err(BulkError::BadAnswer(_))), "{r:?}");
        drop(bulk);
        server.join().unwrap();
    }
}
