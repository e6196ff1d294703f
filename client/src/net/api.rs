//! The server's protocol as typed, blocking calls (ureq over rustls), with errors a person
//! can act on and a split between failures worth retrying and failures that are final.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdall_proto::api::{
    AccountResponse, AddMemberRequest, AdminUsersResponse, CommitBatchRequest, CommitBatchResponse,
    CommitRequest, CreateNamespaceRequest, CreateNamespaceResponse, CreateTokenRequest,
    CreateTokenResponse, CreateUserRequest, CreateUserResponse, DeletedRequest, DeletedResponse,
    DisableResponse, ErrorBody, HistoryRequest, HistoryResponse, ListRequest, ListResponse,
    LongpollRequest, LongpollResponse, NsId, QuotaRequest, QuotaResponse, RestoreRequest,
    RestoreResponse, RetrieveBatchRequest, RewindRequest, RewindResponse, StoreBatchResponse,
    TokensResponse,
};
use holdall_proto::api::{SignaturesRequest, DEVICE_HEADER, FEATURE_DELTA, FEATURE_ZSTD};
use holdall_proto::frame::{
    decode_retrieve_frames, FrameFormat, RetrieveStatus, FRAME_FORMAT_HEADER, RETRIEVE_HEADER_BYTES,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::net::bulk::{body_pieces, frames_len, Body, Bulk, BulkError, FramePart, Piece};
use crate::net::pack::Packed;
use crate::net::progress::Progress;
use crate::net::throttle::Throttle;
use holdall_proto::delta::SIGNATURE_BYTES_MAX;
use holdall_proto::retrieved::Retrieved;

/// A JSON answer larger than this is refused (a list of 10,000 entries with long blocklists
/// stays well below it).
const JSON_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// How long a plain call may take before it is abandoned and retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// What a path segment (a user name) keeps as is: letters, digits and `-._~`.
const PATH_SEGMENT: AsciiSet = NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answered (refused, unreachable, timed out, TLS failed): retry later.
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What the transport said.
        detail: String,
    },
    /// TLS refused the server's certificate: retrying cannot help.
    #[error("the server at {url} has a certificate this client does not trust ({detail}): for a private CA, pass --ca FILE (or HOLDALL_CA)")]
    Untrusted {
        /// The server's base URL.
        url: String,
        /// What TLS said.
        detail: String,
    },
    /// The token was refused.
    #[error("the server refused the token (401): check HOLDALL_TOKEN or --token")]
    Unauthorized,
    /// The token's account is disabled.
    #[error("the server refused the token (401): the account is disabled; ask the server's admin")]
    AccountDisabled,
    /// The server answered with an error status.
    #[error("the server answered {status} {code}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The machine-readable `error` code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The answer did not parse.
    #[error("the server's answer to {call} did not parse: {detail}")]
    BadAnswer {
        /// The call.
        call: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl ApiError {
    /// Whether trying again later may succeed (the server was away, busy or failing).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Server { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ApiError::Unauthorized
            | ApiError::AccountDisabled
            | ApiError::Untrusted { .. }
            | ApiError::BadAnswer { .. } => false,
        }
    }
}

/// Times a rate-limited call is sent again before its 429 is the answer.
const RATE_LIMITED_RETRIES: u32 = 5;

/// Longest `Retry-After` honoured; a longer one is taken as this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// The wait a response's `Retry-After` (in seconds) asks for: 1 s if it has none.
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Duration {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(RETRY_AFTER_MAX)
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    pub url: String,
    /// Bearer token.
    pub token: String,
    /// PEM file of a private CA to trust instead of the system's roots.
    pub ca: Option<std::path::PathBuf>,
}

/// A connection pool to one server, shared by the worker threads.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    url: String,
    auth: String,
    up: Throttle,
    down: Throttle,
    /// This device's name, sent so the user's other devices see its uploads stream.
    device: Option<String>,
    /// Where moved bytes are shown.
    progress: Progress,
    /// Uploads by sendfile, for an `http://` server.
    bulk: Option<Arc<Bulk>>,
    /// Set once the bulk path got an answer it does not take (an HTTP hop in between that
    /// re-encodes answers, say): ureq carries every call from then on.
    bulk_off: Arc<AtomicBool>,
    /// Whether blocks may travel compressed (`--compress`).
    compress: bool,
    /// Whether the server takes and sends compressed frames, as its account last said.
    server_zstd: Arc<AtomicBool>,
    /// Whether changed blocks may travel as deltas (`--delta`).
    delta: bool,
    /// Whether the server offers deltas, as its account last said.
    server_delta: Arc<AtomicBool>,
}

/// A worker's buffers for store_batch requests, reused: the request gathered for ureq, and
/// the compressed blocks.
#[derive(Debug, Default)]
pub struct StoreBuffers {
    body: Vec<u8>,
    packed: Packed,
}

/// What became of a store_batch of blocks read from their files.
#[derive(Debug)]
pub enum Sent {
    /// Stored (or already present), durably.
    Stored,
    /// A file ended before its block: nothing of the batch was sent.
    SourceShort,
}

fn load_ca(path: &Path) -> anyhow::Result<RootCerts> {
    use anyhow::Context;
    let pem = std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing --ca {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(RootCerts::new_with_certs(&certs))
}

/// One HTTP exchange with the server: what is sent, and the bounds on the answer.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    content_type: &'a str,
    body: &'a [u8],
    /// Most answer bytes accepted.
    limit: u64,
    /// For the whole exchange.
    timeout: Duration,
    /// The frame format of a store_batch body or retrieve_batch answer.
    format: FrameFormat,
}

impl Api {
    /// A client for `endpoint`, sending at most `up` and receiving at most `down` bytes per
    /// second (0: unlimited).
    pub fn new(endpoint: &Endpoint, up: u64, down: u64) -> anyhow::Result<Api> {
        let url = endpoint.url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "the server URL {url:?} must start with http:// or https://"
        );
        let roots = match &endpoint.ca {
            Some(path) => load_ca(path)?,
            None => RootCerts::PlatformVerifier,
        };
        // The bulk path's own TLS settings, trusting what the general path trusts.
        let bulk_tls = match url.starts_with("https://") {
            true => Some(crate::net::wire::tls_config(endpoint.ca.as_deref())?),
            false => None,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(CALL_TIMEOUT))
            .max_idle_connections_per_host(16)
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Ok(Api {
            agent,
            bulk: Bulk::new(&url, bulk_tls).map(Arc::new),
            bulk_off: Arc::new(AtomicBool::new(false)),
            compress: true,
            server_zstd: Arc::new(AtomicBool::new(false)),
            delta: true,
            server_delta: Arc::new(AtomicBool::new(false)),
            url,
            auth: format!("Bearer {}", endpoint.token),
            up: Throttle::new(up),
            down: Throttle::new(down),
            device: None,
            progress: Progress::default(),
        })
    }

    /// The same client, naming its device in every request (`Holdall-Device`).
    pub fn with_device(mut self, device: &str) -> Api {
        self.device = Some(device.to_string());
        self
    }

    /// The same, with wire compression on or off (on unless told; used only if the server
    /// offers it).
    pub fn with_compression(mut self, on: bool) -> Api {
        self.compress = on;
        self
    }

    /// The same, with deltas on or off (on unless told; used only if the server offers
    /// them).
    pub fn with_deltas(mut self, on: bool) -> Api {
        self.delta = on;
        self
    }

    /// Whether changed blocks may travel as deltas: on here, and offered by the server.
    pub fn deltas(&self) -> bool {
        self.delta && self.server_delta.load(Ordering::Relaxed)
    }

    /// The same, showing the bytes it moves on `progress`.
    pub fn with_progress(mut self, progress: Progress) -> Api {
        self.progress = progress;
        self
    }

    /// Whether uploads run under an `--up-limit`.
    pub fn up_limited(&self) -> bool {
        self.up.limited()
    }

    /// Whether downloads run under a `--down-limit`.
    pub fn down_limited(&self) -> bool {
        self.down.limited()
    }

    /// Where the bytes it moves are shown.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, e: ureq::Error) -> ApiError {
        let (url, detail) = (self.url.clone(), e.to_string());
        match detail.to_ascii_lowercase().contains("certificate") {
            true => ApiError::Untrusted { url, detail },
            false => ApiError::Unreachable { url, detail },
        }
    }

    /// Sends `call` and returns the answer's bytes.
    fn call(&self, call: &Call) -> Result<Vec<u8>, ApiError> {
        let mut answer = Vec::new();
        self.call_into(call, &mut answer)?;
        Ok(answer)
    }

    /// [`Api::call`], with the answer's bytes in `answer` (its old contents replaced). A
    /// buffer reused across calls keeps its memory: a fresh one per 8 MiB answer cost a page
    /// fault per 4 KiB, and growing it by doubling a copy of everything read so far.
    /// A 429 (the token over its request rate) is sent again after the `Retry-After` the
    /// server gives, up to [`RATE_LIMITED_RETRIES`] times.
    fn call_into(&self, call: &Call, answer: &mut Vec<u8>) -> Result<(), ApiError> {
        let mut retries = 0;
        loop {
            let mut response = self.send(call)?;
            let status = response.status().as_u16();
            let wait = retry_after(&response);
            self.read_rest(&mut response, call.limit, answer)?;
            match status {
                200 => return Ok(()),
                429 if retries < RATE_LIMITED_RETRIES => {
                    tracing::debug!(wait_s = wait.as_secs_f64(), "rate limited; waiting as told");
                    std::thread::sleep(wait);
                    retries += 1;
                }
                _ => return Err(Self::refusal(status, answer)),
            }
        }
    }

    /// Sends `call`; the answer, its body unread.
    fn send(&self, call: &Call) -> Result<ureq::http::Response<ureq::Body>, ApiError> {
        let Call {
            method,
            path,
            content_type,
            body,
            limit: _,
            timeout,
            format,
        } = *call;
        self.up.spend(body.len() as u64);
        self.progress.moved(body.len() as u64);
        let url = format!("{}{path}", self.url);
        let response = match method {
            "GET" => {
                let mut get = self.agent.get(&url).header("Authorization", &self.auth);
                if let Some(d) = &self.device {
                    get = get.header(DEVICE_HEADER, d);
                }
                get.config().timeout_global(Some(timeout)).build().call()
            }
            "DELETE" => {
                let mut delete = self.agent.delete(&url).header("Authorization", &self.auth);
                if let Some(d) = &self.device {
                    delete = delete.header(DEVICE_HEADER, d);
                }
                delete.config().timeout_global(Some(timeout)).build().call()
            }
            _ => {
                let mut post = self.agent.post(&url).header("Authorization", &self.auth);
                if let Some(d) = &self.device {
                    post = post.header(DEVICE_HEADER, d);
                }
                if format == FrameFormat::V2 {
                    post = post.header(FRAME_FORMAT_HEADER, "2");
                }
                post.content_type(content_type)
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .send(body)
            }
        };
        response.map_err(|e| self.unreachable(e))
    }

    /// Reads the body of `response`, at most `limit` bytes, into `answer`.
    fn read_rest(
        &self,
        response: &mut ureq::http::Response<ureq::Body>,
        limit: u64,
        answer: &mut Vec<u8>,
    ) -> Result<(), ApiError> {
        use std::io::Read;
        // The previous answer's bytes are read over rather than cleared and zeroed again
        // (`read_to_end` zeroes the spare room on every call: a pass over every byte
        // downloaded); only growth beyond the largest answer so far is zeroed.
        let announced = response.body().content_length().unwrap_or(0).min(limit);
        let mut reader = response.body_mut().with_config().limit(limit).reader();
        let mut filled = 0;
        loop {
            if filled == answer.len() {
                let more = (announced as usize).saturating_sub(filled).max(64 << 10);
                answer.resize(filled + more, 0);
            }
            match reader.read(&mut answer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.unreachable(ureq::Error::from(e))),
            }
        }
        answer.truncate(filled);
        self.down.spend(filled as u64);
        self.progress.moved(filled as u64);
        Ok(())
    }

    /// The error for an answer with `status` (not 200) and body `bytes`.
    fn refusal(status: u16, bytes: &[u8]) -> ApiError {
        let parsed = serde_json::from_slice::<ErrorBody>(bytes);
        if status == 401 {
            return match parsed {
                Ok(e) if e.error == "account_disabled" => ApiError::AccountDisabled,
                _ => ApiError::Unauthorized,
            };
        }
        let (code, message) = match parsed {
            Ok(e) => (e.error, e.message),
            Err(_) => (
                "http".to_string(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            ),
        };
        ApiError::Server {
            status,
            code,
            message,
        }
    }

    fn parse<A: DeserializeOwned>(call: &'static str, bytes: &[u8]) -> Result<A, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| ApiError::BadAnswer {
            call,
            detail: e.to_string(),
        })
    }

    fn json<Q: Serialize, A: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<A, ApiError> {
        let body = serde_json::to_vec(request).map_err(|e| ApiError::BadAnswer {
            call,
            detail: e.to_string(),
        })?;
        let bytes = self.call(&Call {
            method: "POST",
            path,
            content_type: "application/json",
            body: &body,
            limit: JSON_BYTES_MAX,
            timeout,
            format: FrameFormat::V1,
        })?;
        Self::parse(call, &bytes)
    }

    /// `GET /v1/account`.
    pub fn account(&self) -> Result<AccountResponse, ApiError> {
        let bytes = self.call(&Call {
            method: "GET",
            path: "/v1/account",
            content_type: "",
            body: b"",
            limit: JSON_BYTES_MAX,
            format: FrameFormat::V1,
            timeout: CALL_TIMEOUT,
        })?;
        let account: AccountResponse = Self::parse("account", &bytes)?;
        let offers = |feature: &str| account.features.iter().any(|f| f == feature);
        self.server_zstd
            .store(offers(FEATURE_ZSTD), Ordering::Relaxed);
        self.server_delta
            .store(offers(FEATURE_DELTA), Ordering::Relaxed);
        Ok(account)
    }

    /// `POST /v1/commit_batch`.
    pub fn commit_batch(
        &self,
        commits: Vec<CommitRequest>,
    ) -> Result<CommitBatchResponse, ApiError> {
        let n = commits.len();
        let answer: CommitBatchResponse = self.json(
            "commit_batch",
            "/v1/commit_batch",
            &CommitBatchRequest { commits },
            CALL_TIMEOUT,
        )?;
        if answer.results.len() != n {
            return Err(ApiError::BadAnswer {
                call: "commit_batch",
                detail: format!("{} results for {n} commits", answer.results.len()),
            });
        }
        Ok(answer)
    }

    /// `POST /v1/store_batch` of `body`, store frames (see docs/PROTOCOL.md) whose blocks
    /// total at most the server's `batch_bytes_max`.
    fn store_batch(
        &self,
        body: &[u8],
        format: FrameFormat,
    ) -> Result<StoreBatchResponse, ApiError> {
        let bytes = self.call(&Call {
            method: "POST",
            path: "/v1/store_batch",
            content_type: "application/octet-stream",
            body,
            limit: JSON_BYTES_MAX,
            timeout: CALL_TIMEOUT,
            format,
        })?;
        Self::parse("store_batch", &bytes)
    }

    /// `POST /v1/store_batch` of `body`, format-2 frames (store_delta ones among them).
    pub fn store_deltas(&self, body: &[u8]) -> Result<StoreBatchResponse, ApiError> {
        self.store_batch(body, FrameFormat::V2)
    }

    /// `POST /v1/signatures`: per asked hash, in order, its signature, or None where the
    /// row does not list it (or the block is gone).
    pub fn signatures(
        &self,
        request: &SignaturesRequest,
    ) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
        let body = serde_json::to_vec(request).map_err(|e| ApiError::BadAnswer {
            call: "signatures",
            detail: e.to_string(),
        })?;
        let n = request.hashes.len();
        let limit = (n * (RETRIEVE_HEADER_BYTES + SIGNATURE_BYTES_MAX)) as u64 + 1;
        let bytes = self.call(&Call {
            method: "POST",
            path: "/v1/signatures",
            content_type: "application/json",
            body: &body,
            limit,
            timeout: CALL_TIMEOUT,
            format: FrameFormat::V1,
        })?;
        let bad = |detail: String| ApiError::BadAnswer {
            call: "signatures",
            detail,
        };
        let mut out = Vec::with_capacity(n);
        for (frame, asked) in decode_retrieve_frames(&bytes, limit).zip(&request.hashes) {
            let frame = frame.map_err(|e| bad(e.to_string()))?;
            if frame.hash != *asked {
                return Err(bad(format!("{} answered for {asked}", frame.hash)));
            }
            out.push((frame.status == RetrieveStatus::Ok).then(|| frame.data.to_vec()));
        }
        if out.len() != n {
            return Err(bad(format!("{} signatures for {n} hashes", out.len())));
        }
        Ok(out)
    }

    /// `POST /v1/store_batch` of the blocks `pieces` name (those already read in `read`),
    /// compressed where it pays if the server takes compressed frames: for an `http://`
    /// or `https://` server through the bulk path, blocks from files handed to the kernel
    /// by sendfile (or sealed from a buffer); if the bulk path is off, gathered into
    /// `buffers` (reused) and sent through ureq.
    pub fn store_pieces(
        &self,
        pieces: &[Piece],
        read: &[u8],
        buffers: &mut StoreBuffers,
    ) -> Result<Sent, ApiError> {
        let format = self.frame_format();
        match format {
            FrameFormat::V2 => buffers.packed.pack(pieces, read),
            FrameFormat::V1 => buffers.packed.raw(pieces.len()),
        }
        let packed = &buffers.packed;
        let Some(bulk) = self.bulk() else {
            // The buffer only grows: zeroing it before reading over it was a pass over
            // every byte uploaded.
            let body = &mut buffers.body;
            let mut used = 0;
            for frame in body_pieces(pieces, read, packed, format) {
                let Ok((header, part)) = frame else {
                    return Ok(Sent::SourceShort);
                };
                let len = match part {
                    FramePart::File(_, _, len) => len,
                    FramePart::Bytes(bytes) => bytes.len(),
                };
                let (at, end) = (used + header.len(), used + header.len() + len);
                if body.len() < end {
                    body.resize(end, 0);
                }
                body[used..at].copy_from_slice(&header);
                let filled = match part {
                    FramePart::File(file, offset, _) => {
                        file.read_exact_at(&mut body[at..end], offset).is_ok()
                    }
                    FramePart::Bytes(bytes) => {
                        body[at..end].copy_from_slice(bytes);
                        true
                    }
                };
                if !filled {
                    return Ok(Sent::SourceShort);
                }
                used = end;
            }
            let body = &body[..used];
            return self.store_batch(body, format).map(|_| Sent::Stored);
        };
        let bytes = frames_len(pieces, packed, format);
        self.up.spend(bytes as u64);
        self.progress.moved(bytes as u64);
        let answer = bulk.post(
            "/v1/store_batch",
            &self.bulk_headers(format),
            Body::Pieces {
                pieces,
                read,
                packed,
                format,
            },
            CALL_TIMEOUT,
            |status, reader| Ok((status, reader.read_all(JSON_BYTES_MAX as usize)?)),
        );
        let (status, body) = match answer {
            Ok(a) => a,
            Err(BulkError::SourceShort) => return Ok(Sent::SourceShort),
            Err(BulkError::BadAnswer(detail)) => {
                self.bulk_failed("store_batch", &detail);
                return self.store_pieces(pieces, read, buffers);
            }
            Err(e) => return Err(self.bulk_error("store_batch", e)),
        };
        self.down.spend(body.len() as u64);
        match status {
            200 => Self::parse::<StoreBatchResponse>("store_batch", &body).map(|_| Sent::Stored),
            status => Err(Self::refusal(status, &body)),
        }
    }

    /// The frame format to use: 2 if the server offered compression (its account said so)
    /// and this client has it on.
    fn frame_format(&self) -> FrameFormat {
        match self.compress && self.server_zstd.load(Ordering::Relaxed) {
            true => FrameFormat::V2,
            false => FrameFormat::V1,
        }
    }

    /// The bulk path, unless it is off.
    fn bulk(&self) -> Option<&Bulk> {
        self.bulk
            .as_deref()
            .filter(|_| !self.bulk_off.load(Ordering::Relaxed))
    }

    /// Turns the bulk path off after an answer it could not take.
    fn bulk_failed(&self, call: &str, detail: &str) {
        if !self.bulk_off.swap(true, Ordering::Relaxed) {
            tracing::warn!(call, detail, "an answer the direct transfer path does not take; using the general HTTP client from now on");
        }
    }

    /// The headers a bulk request in frame `format` carries.
    fn bulk_headers(&self, format: FrameFormat) -> String {
        let mut headers = format!("Authorization: {}\r\n", self.auth);
        if let Some(d) = &self.device {
            headers.push_str(&format!("{DEVICE_HEADER}: {d}\r\n"));
        }
        if format == FrameFormat::V2 {
            headers.push_str(&format!("{FRAME_FORMAT_HEADER}: 2\r\n"));
        }
        headers
    }

    fn bulk_error(&self, call: &'static str, e: BulkError) -> ApiError {
        match e {
            BulkError::Io(e) => ApiError::Unreachable {
                url: self.url.clone(),
                detail: e.to_string(),
            },
            BulkError::BadAnswer(detail) => ApiError::BadAnswer { call, detail },
            BulkError::SourceShort => ApiError::BadAnswer {
                call,
                detail: "a source file ended early".into(),
            },
        }
    }

    /// `POST /v1/list`.
    pub fn list(&self, request: &ListRequest) -> Result<ListResponse, ApiError> {
        self.json("list", "/v1/list", request, CALL_TIMEOUT)
    }

    /// `POST /v1/longpoll`.
    pub fn longpoll(&self, request: &LongpollRequest) -> Result<LongpollResponse, ApiError> {
        let wait = Duration::from_secs(u64::from(request.timeout_s.unwrap_or(30)) + 30);
        self.json("longpoll", "/v1/longpoll", request, wait)
    }

    /// `POST /v1/retrieve_batch`: the answer's frames into `answer`, at most `payload_max`
    /// bytes of payload, each block placed for a direct write as it arrives.
    pub fn retrieve_batch(
        &self,
        request: &RetrieveBatchRequest,
        payload_max: u64,
        answer: &mut Retrieved,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_vec(request).map_err(|e| ApiError::BadAnswer {
            call: "retrieve_batch",
            detail: e.to_string(),
        })?;
        let frames = request.items.iter().map(|i| i.hashes.len()).sum::<usize>();
        // Signatures are read only in format 2 (whose answers may then carry compressed
        // blocks as well: the reader expands those whatever --compress says).
        let signed = request.items.iter().any(|i| !i.signatures.is_empty());
        let format = match signed && self.deltas() {
            true => FrameFormat::V2,
            false => self.frame_format(),
        };
        // ureq counts a body that reaches its limit as over it: leave room past the exact size.
        let limit = payload_max + (frames * format.retrieve_header_bytes()) as u64 + 1;
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
        let call = Call {
            method: "POST",
            path: "/v1/retrieve_batch",
            content_type: "application/json",
            body: &body,
            limit,
            format,
            timeout: CALL_TIMEOUT + wait,
        };
        if let Some(bulk) = self.bulk() {
            self.up.spend(body.len() as u64);
            self.progress.moved(body.len() as u64);
            let answer = bulk.post(
                "/v1/retrieve_batch",
                &self.bulk_headers(format),
                Body::Json(&body),
                call.timeout,
                |status, reader| match status {
                    200 => {
                        let moved = |n| {
                            self.down.spend(n);
                            self.progress.moved(n);
                        };
                        answer.read_from(reader, format, payload_max, frames, moved)?;
                        Ok(Ok(()))
                    }
                    _ => Ok(Err(Self::refusal(status, &reader.read_all(1 << 20)?))),
                },
            );
            match answer {
                Err(BulkError::BadAnswer(detail)) => self.bulk_failed("retrieve_batch", &detail),
                answer => return answer.map_err(|e| self.bulk_error("retrieve_batch", e))?,
            }
        }
        let mut response = self.send(&call)?;
        let status = response.status().as_u16();
        if status != 200 {
            let mut bytes = Vec::new();
            self.read_rest(&mut response, JSON_BYTES_MAX, &mut bytes)?;
            return Err(Self::refusal(status, &bytes));
        }
        let mut reader = response.body_mut().with_config().limit(limit).reader();
        answer
            .read_from(&mut reader, format, payload_max, frames, |n| {
                self.down.spend(n);
                self.progress.moved(n);
            })
            .map_err(|e| self.unreachable(ureq::Error::from(e)))
    }

    /// `POST /v1/namespaces`.
    pub fn create_namespace(
        &self,
        request: &CreateNamespaceRequest,
    ) -> Result<CreateNamespaceResponse, ApiError> {
        self.json("namespaces", "/v1/namespaces", request, CALL_TIMEOUT)
    }

    /// `POST /v1/namespaces/{ns}/members`.
    pub fn add_member(&self, ns: NsId, request: &AddMemberRequest) -> Result<(), ApiError> {
        let _: serde_json::Value = self.json(
            "members",
            &format!("/v1/namespaces/{ns}/members"),
            request,
            CALL_TIMEOUT,
        )?;
        Ok(())
    }

    /// `POST /v1/history`.
    pub fn history(&self, request: &HistoryRequest) -> Result<HistoryResponse, ApiError> {
        self.json("history", "/v1/history", request, CALL_TIMEOUT)
    }

    /// `POST /v1/restore`.
    pub fn restore(&self, request: &RestoreRequest) -> Result<RestoreResponse, ApiError> {
        self.json("restore", "/v1/restore", request, CALL_TIMEOUT)
    }

    /// `POST /v1/deleted`.
    pub fn deleted(&self, request: &DeletedRequest) -> Result<DeletedResponse, ApiError> {
        self.json("deleted", "/v1/deleted", request, CALL_TIMEOUT)
    }

    /// `POST /v1/rewind`.
    pub fn rewind(&self, request: &RewindRequest) -> Result<RewindResponse, ApiError> {
        self.json("rewind", "/v1/rewind", request, CALL_TIMEOUT)
    }

    /// `POST /v1/admin/users`.
    pub fn create_user(&self, name: &str) -> Result<CreateUserResponse, ApiError> {
        self.json(
            "admin/users",
            "/v1/admin/users",
            &CreateUserRequest { name: name.into() },
            CALL_TIMEOUT,
        )
    }

    /// `POST /v1/tokens`.
    pub fn create_token(&self, device: &str) -> Result<CreateTokenResponse, ApiError> {
        let request = CreateTokenRequest {
            device: device.into(),
        };
        self.json("tokens", "/v1/tokens", &request, CALL_TIMEOUT)
    }

    /// `GET /v1/tokens`.
    pub fn list_tokens(&self) -> Result<TokensResponse, ApiError> {
        let bytes = self.call(&Call {
            method: "GET",
            path: "/v1/tokens",
            content_type: "",
            body: b"",
            limit: JSON_BYTES_MAX,
            format: FrameFormat::V1,
            timeout: CALL_TIMEOUT,
        })?;
        Self::parse("tokens", &bytes)
    }

    /// `DELETE /v1/tokens/{id}`.
    pub fn revoke_token(&self, id: &str) -> Result<(), ApiError> {
        let path = format!("/v1/tokens/{}", utf8_percent_encode(id, &PATH_SEGMENT));
        self.call(&Call {
            method: "DELETE",
            path: &path,
            content_type: "",
            body: b"",
            limit: JSON_BYTES_MAX,
            format: FrameFormat::V1,
            timeout: CALL_TIMEOUT,
        })?;
        Ok(())
    }

    /// `GET /v1/admin/users`.
    pub fn list_users(&self) -> Result<AdminUsersResponse, ApiError> {
        let bytes = self.call(&Call {
            method: "GET",
            path: "/v1/admin/users",
            content_type: "",
            body: b"",
            limit: JSON_BYTES_MAX,
            format: FrameFormat::V1,
            timeout: CALL_TIMEOUT,
        })?;
        Self::parse("admin/users", &bytes)
    }

    /// `POST /v1/admin/users/{user}/disable` or `/enable`; the name goes percent-encoded.
    pub fn set_disabled(&self, user: &str, disabled: bool) -> Result<DisableResponse, ApiError> {
        let verb = if disabled { "disable" } else { "enable" };
        let path = format!(
            "/v1/admin/users/{}/{verb}",
            utf8_percent_encode(user, &PATH_SEGMENT)
        );
        self.json("admin/disable", &path, &serde_json::json!({}), CALL_TIMEOUT)
    }

    /// `POST /v1/admin/users/{user}/quota`; the name goes percent-encoded.
    pub fn set_quota(&self, user: &str, bytes: Option<u64>) -> Result<QuotaResponse, ApiError> {
        let path = format!(
            "/v1/admin/users/{}/quota",
            utf8_percent_encode(user, &PATH_SEGMENT)
        );
        self.json("admin/quota", &path, &QuotaRequest { bytes }, CALL_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::bulk::tests::request;
    use crate::net::bulk::Source;
    use holdall_proto::BlockHash;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn an_answer_the_bulk_path_does_not_take_turns_it_off_and_the_call_still_lands() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut agents = Vec::new();
            for conn in listener.incoming().take(2) {
                let mut s = conn.unwrap();
                // ureq names a user agent; the bulk path does not.
                while let Some((head, _)) = request(&mut s) {
                    agents.push(head.to_ascii_lowercase().contains("user-agent:"));
                    // A chunked answer, as an HTTP proxy in between may send.
                    let body = r#"{"stored":[],"present":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                        body.len()
                    );
                    s.write_all(answer.as_bytes()).unwrap();
                    if agents.len() == 3 {
                        return agents;
                    }
                }
            }
            agents
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let endpoint = Endpoint {
            url,
            token: "t".into(),
            ca: None,
        };
        let api = Api::new(&endpoint, 0, 0).unwrap();
        let mut body = StoreBuffers::default();
        for _ in 0..2 {
            let pieces = [
                Piece {
                    hash: BlockHash::of(b"hello"),
                    len: 5,
                    source: Source::File {
                        file: std::fs::File::open(&path).unwrap(),
                        offset: 0,
                    },
                },
                Piece {
                    hash: BlockHash::of(b"lo"),
                    len: 2,
                    source: Source::Read { at: 3 },
                },
            ];
            let sent = api.store_pieces(&pieces, b"hello", &mut body).unwrap();
            assert!(matches!(sent, Sent::Stored), "{sent:?}");
        }
        assert_eq!(
            server.join().unwrap(),
            vec![false, true, true],
            "bulk first, then ureq for the retry and every call after"
        );
    }
}
