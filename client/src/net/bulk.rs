//! Bulk transfers over plain HTTP without user-space copies: store_batch with each block
//! handed to the kernel by `sendfile(2)` from the page cache of its file, and retrieve_batch
//! answers read from the socket straight into the caller's buffers.
//!
//! Through ureq, an uploaded block was read from its file into a buffer, copied by ureq into
//! its own, and by the socket once more: a `perf` of an uploading client put those passes
//! at a third of its time, as much as hashing. A download was received into ureq's buffer
//! and copied out (15 % of a downloading client). Here the request's head and each frame's
//! 36-byte header are written with `MSG_MORE` and a large block's bytes follow by
//! `sendfile`; small blocks are read and gathered with their headers into one write, as a
//! sendfile each costs more than the copy. Answers' heads are parsed with `httparse`; only
//! `Content-Length` bodies are taken (what holdalld sends).
//!
//! To an `https://` server the same requests go through rustls (`net::wire`): a block is
//! read from its file into a buffer and sealed, an answer opened in rustls's buffer and
//! copied into the caller's, no copy beyond the cipher's. A block that changes while it is
//! sent is refused by the server (it hashes every block); a file cut short while it is sent
//! leaves the request unfinishable, so the connection is dropped and the caller told.

use std::fs::File;
use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdall_proto::frame::{
    store_frame_header, store_frame_header_v2, FrameFormat, StoreHeader, STORE_HEADER_BYTES,
};
use holdall_proto::BlockHash;

use super::pack::Packed;
use super::wire::Wire;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept for the next request.
const IDLE_CONNECTIONS_MAX: usize = 16;
/// Most bytes of an answer's status line and headers.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// Most headers an answer may carry.
const HEADERS_MAX: usize = 32;
/// Blocks at least this long are best sent by sendfile; smaller ones read and gathered
/// (a sendfile per 4 KiB block made 10,000 small files upload 25 % slower, and a file held
/// open per small block could run a process out of descriptors).
pub const SENDFILE_BYTES_MIN: usize = 1 << 20;
/// Reads shorter than this are served from the body reader's buffer.
const BUFFERED_READ_BYTES: usize = 64 << 10;
/// Gathered bytes written at once.
const STAGED_BYTES_MAX: usize = 1 << 20;

/// Where a block's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// The block's bytes at `offset` of this open file, sent by sendfile (large blocks: a
    /// request holds few of them, so few files stay open).
    File {
        /// The file.
        file: File,
        /// Where the block starts in it.
        offset: u64,
    },
    /// Already read, at `at` of the request's buffer of small blocks.
    Read {
        /// Offset in that buffer.
        at: usize,
    },
}

/// One block to send.
#[derive(Debug)]
pub struct Piece {
    /// The block's name.
    pub hash: BlockHash,
    /// The block's length.
    pub len: usize,
    /// Its bytes.
    pub source: Source,
}

/// A request's body.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Store frames of these blocks; `read` holds the bytes of those already read.
    Pieces {
        /// The blocks, in order.
        pieces: &'a [Piece],
        /// The small blocks' bytes.
        read: &'a [u8],
        /// The compressed forms of those that go compressed (format 2 only).
        packed: &'a Packed,
        /// The frames' format.
        format: FrameFormat,
    },
    /// A JSON document.
    Json(&'a [u8]),
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

/// Connections to one server.
pub struct Bulk {
    /// `host:port` to connect to.
    authority: String,
    /// The `Host` header's value.
    host: String,
    /// The URL's path before `/v1/...`, without a trailing slash.
    prefix: String,
    /// For an `https://` server: TLS's settings.
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Wire>>,
}

impl std::fmt::Debug for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish()
    }
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

fn answered(error: BulkError) -> Failure {
    Failure {
        error,
        answered: true,
    }
}

/// An answer's body as it arrives, up to the announced length: small reads (frame headers,
/// small blocks) are served from a buffer filled a socket read at a time, large ones go
/// straight from the socket into the caller's memory.
pub struct BodyReader<'a> {
    stream: &'a mut Wire,
    /// Bytes received but not yet read: `buf[at..end]` (at first, those that came with the
    /// head).
    buf: Vec<u8>,
    at: usize,
    end: usize,
    /// Bytes of the body not yet read.
    left: usize,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = out.len().min(self.left);
        if want == 0 {
            return Ok(0);
        }
        if self.at == self.end && want < BUFFERED_READ_BYTES {
            // Refill, never past the body's end (the connection's next answer follows it).
            let room = BUFFERED_READ_BYTES.min(self.left);
            self.buf.resize(self.buf.len().max(room), 0);
            self.end = match self.stream.read(&mut self.buf[..room])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => n,
            };
            self.at = 0;
        }
        let n = if self.at < self.end {
            let n = want.min(self.end - self.at);
            out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
            n
        } else {
            match self.stream.read(&mut out[..want])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => n,
            }
        };
        self.left -= n;
        Ok(n)
    }
}

impl BodyReader<'_> {
    /// The rest of the body, if it is at most `limit` bytes.
    pub fn read_all(&mut self, limit: usize) -> Result<Vec<u8>, BulkError> {
        if self.left > limit {
            return Err(BulkError::BadAnswer(format!(
                "answer of {} bytes, more than {limit}",
                self.left
            )));
        }
        let mut all = vec![0u8; self.left];
        self.read_exact(&mut all)?;
        Ok(all)
    }
}

impl Bulk {
    /// Connections to the server at `url`: `http://`, or `https://` with `tls`'s
    /// settings; None for anything else.
    pub fn new(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Option<Bulk> {
        let (rest, tls, port) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, None, 80),
            (_, Some(rest)) => (rest, Some(tls?), 443),
            _ => return None,
        };
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
            false => format!("{host}:{port}"),
        };
        Some(Bulk {
            authority,
            host: host.to_string(),
            prefix: prefix.to_string(),
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` to `path` with `headers` (complete `Name: value\r\n` lines) and hands
    /// the answer's status and body to `take`. A pooled connection the server closed
    /// meanwhile is replaced once (before any of the answer arrived; both calls that use
    /// this, storing blocks and reading them, may be repeated).
    pub fn post<T>(
        &self,
        path: &str,
        headers: &str,
        body: Body,
        timeout: Duration,
        mut take: impl FnMut(u16, &mut BodyReader) -> Result<T, BulkError>,
    ) -> Result<T, BulkError> {
        let (content_type, length) = match body {
            Body::Pieces {
                pieces,
                packed,
                format,
                ..
            } => (
                "application/octet-stream",
                frames_len(pieces, packed, format),
            ),
            Body::Json(json) => ("application/json", json.len()),
        };
        let head = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {length}\r\n{headers}\r\n",
            self.prefix, self.host
        );
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut reused = pooled.is_some();
        let mut stream = match pooled {
            Some(s) => s,
            None => self.connect()?,
        };
        // At most two attempts: `reused` is false after the first.
        loop {
            match exchange(&mut stream, &head, body, timeout, &mut take) {
                Ok((answer, keep)) => {
                    self.keep(stream, keep);
                    return Ok(answer);
                }
                Err(f) if reused && !f.answered && matches!(f.error, BulkError::Io(_)) => {
                    stream = self.connect()?;
                    reused = false;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    fn connect(&self) -> io::Result<Wire> {
        let tcp = self.connect_tcp()?;
        match &self.tls {
            None => Ok(Wire::Plain(tcp)),
            Some(config) => {
                tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
                tcp.set_write_timeout(Some(CONNECT_TIMEOUT))?;
                let name = self
                    .authority
                    .rsplit_once(':')
                    .map_or(&*self.authority, |(h, _)| h);
                let name = name.trim_start_matches('[').trim_end_matches(']');
                Wire::tls(tcp, config, name)
            }
        }
    }

    fn connect_tcp(&self) -> io::Result<TcpStream> {
        use std::net::ToSocketAddrs;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in self.authority.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn keep(&self, stream: Wire, keep: bool) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if keep && idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push(stream);
        }
    }
}

/// Sends the request and hands the answer to `take`; true with its result if the
/// connection may be reused.
fn exchange<T>(
    stream: &mut Wire,
    head: &str,
    body: Body,
    timeout: Duration,
    take: &mut impl FnMut(u16, &mut BodyReader) -> Result<T, BulkError>,
) -> Result<(T, bool), Failure> {
    let tcp = stream.tcp();
    tcp.set_read_timeout(Some(timeout)).map_err(BulkError::Io)?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(BulkError::Io)?;
    let sent = match body {
        Body::Pieces {
            pieces,
            read,
            packed,
            format,
        } => send_pieces(stream, head, body_pieces(pieces, read, packed, format)),
        Body::Json(json) => stream
            .send(head.as_bytes(), true)
            .and_then(|()| stream.send(json, false)),
    };
    let broken = match sent {
        Ok(()) => None,
        // A server that refuses a request early (a bad token, say) answers and closes
        // without reading the rest: its answer says more than the broken pipe.
        Err(BulkError::Io(e)) => Some(e),
        Err(e) => return Err(e.into()),
    };
    let (status, mut reader, keep) = match (read_head(stream), broken) {
        (Ok(h), broken) => (h.0, h.1, h.2 && broken.is_none()),
        (Err(_), Some(e)) => return Err(BulkError::Io(e).into()),
        (Err(f), None) => return Err(f),
    };
    let result = take(status, &mut reader).map_err(answered)?;
    Ok((result, keep && reader.left == 0))
}

/// Bytes of the store frames of `pieces`.
pub fn frames_len(pieces: &[Piece], packed: &Packed, format: FrameFormat) -> usize {
    let wire: usize = (pieces.iter().enumerate())
        .map(|(i, p)| packed.wire_len(i, p.len))
        .sum();
    wire + pieces.len() * format.store_header_bytes()
}

/// A store frame's header and where its bytes come from.
pub enum FramePart<'a> {
    /// `len` bytes at `offset` of the piece's file, by sendfile.
    File(&'a File, u64, usize),
    /// These bytes: a small block already read, or a compressed one.
    Bytes(&'a [u8]),
}

/// The frames of `pieces` in order: each header and its bytes' source.
pub fn body_pieces<'a>(
    pieces: &'a [Piece],
    read: &'a [u8],
    packed: &'a Packed,
    format: FrameFormat,
) -> impl Iterator<Item = io::Result<(Vec<u8>, FramePart<'a>)>> + 'a {
    pieces.iter().enumerate().map(move |(i, piece)| {
        let wire = packed.wire(i);
        let header = match format {
            FrameFormat::V1 => store_frame_header(&piece.hash, piece.len as u32).to_vec(),
            FrameFormat::V2 => store_frame_header_v2(&StoreHeader {
                hash: piece.hash,
                raw_len: piece.len as u32,
                wire_len: wire.map_or(piece.len, <[u8]>::len) as u32,
                zstd: wire.is_some(),
                delta: false,
            })
            .to_vec(),
        };
        let part = match (wire, &piece.source) {
            (Some(bytes), _) => FramePart::Bytes(bytes),
            (None, Source::File { file, offset }) => FramePart::File(file, *offset, piece.len),
            (None, Source::Read { at }) => {
                FramePart::Bytes(read.get(*at..*at + piece.len).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "a piece beyond its buffer")
                })?)
            }
        };
        Ok((header, part))
    })
}

/// Sends the head and the frames: blocks from files by sendfile, bytes already in memory
/// gathered with the headers into writes of up to [`STAGED_BYTES_MAX`].
fn send_pieces<'a>(
    stream: &mut Wire,
    head: &str,
    frames: impl Iterator<Item = io::Result<(Vec<u8>, FramePart<'a>)>>,
) -> Result<(), BulkError> {
    let mut staged = Vec::with_capacity(STAGED_BYTES_MAX + STORE_HEADER_BYTES + SENDFILE_BYTES_MIN);
    staged.extend_from_slice(head.as_bytes());
    for frame in frames {
        let (header, part) = frame?;
        staged.extend_from_slice(&header);
        match part {
            FramePart::File(file, offset, len) => {
                stream.send(&staged, true)?;
                staged.clear();
                stream.send_file(file, offset, len)?;
            }
            FramePart::Bytes(bytes) => {
                staged.extend_from_slice(bytes);
                if staged.len() >= STAGED_BYTES_MAX {
                    stream.send(&staged, true)?;
                    staged.clear();
                }
            }
        }
    }
    stream.send(&staged, false)
}

/// Reads an answer's head: its status, a reader of its body, and whether the connection
/// stays open after it.
fn read_head(stream: &mut Wire) -> Result<(u16, BodyReader<'_>, bool), Failure> {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    loop {
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
                if filled - head_len > length {
                    return Err(answered(BulkError::BadAnswer(
                        "bytes after the answer".into(),
                    )));
                }
                let reader = BodyReader {
                    stream,
                    buf,
                    at: head_len,
                    end: filled,
                    left: length,
                };
                return Ok((status, reader, keep));
            }
            Err(e) => return Err(answered(BulkError::BadAnswer(e.to_string()))),
        }
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
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn http_and_https_urls_get_a_bulk_path() {
        let b = Bulk::new("http://127.0.0.1:8340", None).unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("127.0.0.1:8340", "")
        );
        let b = Bulk::new("http://sync.example/holdall/", None).unwrap();
        assert_eq!(b.authority, "sync.example:80");
        assert_eq!(
            (b.host.as_str(), b.prefix.as_str()),
            ("sync.example", "/holdall")
        );
        assert_eq!(
            Bulk::new("http://[::1]", None).unwrap().authority,
            "[::1]:80"
        );
        assert_eq!(
            Bulk::new("http://[::1]:9", None).unwrap().authority,
            "[::1]:9"
        );
        assert!(
            Bulk::new("https://sync.example", None).is_none(),
            "https needs TLS settings"
        );
        let tls = crate::net::wire::tls_config(None).unwrap();
        let b = Bulk::new("https://sync.example", Some(tls)).unwrap();
        assert_eq!(b.authority, "sync.example:443");
        assert!(Bulk::new("ftp://sync.example", None).is_none());
        assert!(Bulk::new("http://", None).is_none());
    }

    /// Reads one request: its head and body; None if the connection closed first. Shared
    /// by the fake servers of the client's tests.
    pub(crate) fn request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim())
            })
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).unwrap();
        Some((head, body))
    }

    /// Writes an answer with `status` (`200 OK`) and a JSON `body`.
    pub(crate) fn answer(stream: &mut TcpStream, status: &str, body: &str) {
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
    }

    fn take(status: u16, r: &mut BodyReader) -> Result<(u16, Vec<u8>), BulkError> {
        Ok((status, r.read_all(100)?))
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
                seen.push(request(&mut s).unwrap());
                answer(&mut s, "200 OK", "{}");
            }
            seen
        });
        let bulk = Bulk::new(&url, None).unwrap();
        // A small block already read, a large one from the file, another small one.
        let tail = data.len() - 500;
        let read = [&data[..1000], &data[tail..]].concat();
        let pieces = |file: &std::path::Path| {
            vec![
                Piece {
                    hash: BlockHash::of(&data[..1000]),
                    len: 1000,
                    source: Source::Read { at: 0 },
                },
                Piece {
                    hash: BlockHash::of(&data[1000..tail]),
                    len: tail - 1000,
                    source: Source::File {
                        file: File::open(file).unwrap(),
                        offset: 1000,
                    },
                },
                Piece {
                    hash: BlockHash::of(&data[tail..]),
                    len: 500,
                    source: Source::Read { at: 1000 },
                },
            ]
        };
        let timeout = Duration::from_secs(10);
        let headers = "Authorization: Bearer t\r\n";
        for _ in 0..2 {
            let a = bulk
                .post(
                    "/v1/store_batch",
                    headers,
                    Body::Pieces {
                        pieces: &pieces(&path),
                        read: &read,
                        packed: &Packed::default(),
                        format: FrameFormat::V1,
                    },
                    timeout,
                    take,
                )
                .unwrap();
            assert_eq!((a.0, a.1.as_slice()), (200, &b"{}"[..]));
        }
        let seen = server.join().unwrap();
        let mut want = Vec::new();
        for part in [&data[..1000], &data[1000..tail], &data[tail..]] {
            holdall_proto::frame::encode_store_frame(&mut want, &BlockHash::of(part), part);
        }
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
            // The cut request's connection is dropped by the client mid-body.
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read_to_end(&mut Vec::new());
            let (mut s, _) = listener.accept().unwrap();
            request(&mut s).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
                .unwrap();
            // Hold the connection until the client is done with it.
            let _ = s.read(&mut [0u8; 1]);
        });
        let bulk = Bulk::new(&url, None).unwrap();
        let piece = |len| Piece {
            hash: BlockHash::of(b"x"),
            len,
            source: Source::File {
                file: File::open(&path).unwrap(),
                offset: 0,
            },
        };
        let timeout = Duration::from_secs(10);
        let r = bulk.post(
            "/v1/store_batch",
            "",
            Body::Pieces {
                pieces: &[piece(100_000)],
                read: &[],
                packed: &Packed::default(),
                format: FrameFormat::V1,
            },
            timeout,
            take,
        );
        assert!(matches!(r, Err(BulkError::SourceShort)), "{r:?}");
        let r = bulk.post(
            "/v1/store_batch",
            "",
            Body::Pieces {
                pieces: &[piece(100)],
                read: &[],
                packed: &Packed::default(),
                format: FrameFormat::V1,
            },
            timeout,
            take,
        );
        assert!(matches!(r, Err(BulkError::BadAnswer(_))), "{r:?}");
        drop(bulk);
        server.join().unwrap();
    }

    #[test]
    fn a_json_answer_is_read_across_packets_and_the_connection_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer_body: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8 + b'0').collect();
        let sent = answer_body.clone();
        let server = std::thread::spawn(move || {
            // One connection serves both requests.
            let (mut s, _) = listener.accept().unwrap();
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let (head, body) = request(&mut s).unwrap();
                assert!(
                    head.contains("Content-Type: application/json\r\n"),
                    "{head}"
                );
                bodies.push(body);
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", sent.len());
                s.write_all(&[head.as_bytes(), &sent[..100]].concat())
                    .unwrap();
                std::thread::sleep(Duration::from_millis(50));
                s.write_all(&sent[100..]).unwrap();
            }
            bodies
        });
        let bulk = Bulk::new(&url, None).unwrap();
        let timeout = Duration::from_secs(10);
        for json in [&b"{\"a\":1}"[..], b"{}"] {
            let got = bulk
                .post(
                    "/v1/retrieve_batch",
                    "",
                    Body::Json(json),
                    timeout,
                    |status, r| Ok((status, r.read_all(1 << 20)?)),
                )
                .unwrap();
            assert_eq!(got.0, 200);
            assert!(got.1 == answer_body, "the whole body, in order");
        }
        assert_eq!(
            server.join().unwrap(),
            vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()]
        );
    }

    #[test]
    fn a_block_copied_instead_of_spliced_arrives_whole() {
        let data: Vec<u8> = (0..(STAGED_BYTES_MAX * 2 + 77) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let (_dir, path) = file_of(&data);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let mut stream = Wire::Plain(TcpStream::connect(addr).unwrap());
        let file = File::open(&path).unwrap();
        stream.send_read(&file, 10, data.len() - 10).unwrap();
        stream.send(b"", false).unwrap();
        drop(stream);
        assert!(
            reader.join().unwrap() == data[10..],
            "the bytes from the offset on"
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = Wire::Plain(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let cut = stream.send_read(&file, data.len() as u64 - 10, 11);
        assert!(matches!(cut, Err(BulkError::SourceShort)), "{cut:?}");
    }
}
