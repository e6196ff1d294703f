//! Reading requests: bodies under a size limit and a minimum rate, JSON bodies, and the
//! device header.

use std::time::{Duration, Instant};

use bytes::Bytes;
use holdall_engine::journal::record::Author;
use holdall_engine::journal::state::User;
use holdall_engine::prefetch::Uploader;
use holdall_proto::api::DEVICE_HEADER;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::reply::ApiError;

/// The uploader behind a request: its user and, if named, its device.
pub fn uploader_of(user: &User, req: &Request<Incoming>) -> Result<Uploader, ApiError> {
    let Some(value) = req.headers().get(DEVICE_HEADER) else {
        return Ok(Uploader {
            user: user.id,
            device: 0,
        });
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 128 || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device",
            "Holdall-Device must be 1 to 128 visible ASCII characters",
        ));
    }
    let digest = holdall_proto::BlockHash::of(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    Ok(Uploader {
        user: user.id,
        // 0 means "not named", so a named device never maps to it.
        device: u64::from_le_bytes(first).max(1),
    })
}

/// Who a commit is by: the user and the device name the request gave (checked by
/// [`uploader_of`] first).
pub fn author_of(user: &User, req: &Request<Incoming>) -> Author {
    Author {
        user: user.id,
        device: req
            .headers()
            .get(DEVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Slowest average rate a body may arrive at (after the first client timeout), so a client
/// trickling a byte at a time cannot hold a connection and its buffer for ever: 8 KiB/s
/// lets an 8 MiB batch take 17 minutes.
const BODY_BYTES_PER_S_MIN: u64 = 8 * 1024;

/// Reads a body of at most `limit` bytes into one buffer: 413 beyond (at once when the
/// declared length says so), 408 when the client stops sending for the client timeout or
/// sends slower than [`BODY_BYTES_PER_S_MIN`] on average.
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let expected = hyper::body::Body::size_hint(req.body())
        .exact()
        .map_or(limit, |n| (n as usize).min(limit));
    // A one-chunk body is kept as it is; a longer one is copied as its chunks arrive into
    // one buffer of the announced length, so each chunk is dropped at once and hyper reuses
    // its read buffer.
    let mut first: Option<Bytes> = None;
    let mut all: Vec<u8> = Vec::new();
    read_chunks(req, limit, |data| {
        if first.is_none() && all.is_empty() {
            first = Some(data);
            return Ok(());
        }
        if let Some(f) = first.take() {
            all.reserve_exact(expected.max(f.len() + data.len()));
            all.extend_from_slice(&f);
        }
        all.extend_from_slice(&data);
        Ok(())
    })
    .await?;
    Ok(match first {
        Some(only) => only,
        None => Bytes::from(all),
    })
}

/// Reads a body of at most `limit` bytes, handing each chunk to `take` as it arrives; the
/// limits and timeouts of [`read_body`]. An error from `take` ends the read.
pub async fn read_chunks(
    req: Request<Incoming>,
    limit: usize,
    mut take: impl FnMut(Bytes) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut body = BodyReader::new(req, limit)?;
    while let Some(chunk) = body.next().await? {
        take(chunk)?;
    }
    Ok(())
}

/// A request body read chunk by chunk, with the limits and timeouts of [`read_body`]: the
/// caller awaits its own work between chunks, and the client waits meanwhile.
pub struct BodyReader {
    body: Incoming,
    limit: usize,
    idle_max: Duration,
    deadline: Instant,
    total: usize,
}

impl BodyReader {
    /// The body of `req`, of at most `limit` bytes (413 at once when its declared length is
    /// more).
    pub fn new(req: Request<Incoming>, limit: usize) -> Result<BodyReader, ApiError> {
        let declared = hyper::body::Body::size_hint(req.body()).lower();
        if declared > limit as u64 {
            return Err(too_large(limit));
        }
        let idle_max = req.extensions().get::<crate::http::ClientTimeout>().map_or(
            Duration::from_secs(crate::config::CLIENT_TIMEOUT_S_DEFAULT),
            |t| t.0,
        );
        let expected = hyper::body::Body::size_hint(req.body())
            .exact()
            .unwrap_or(limit as u64);
        let deadline =
            Instant::now() + idle_max + Duration::from_secs(expected / BODY_BYTES_PER_S_MIN);
        Ok(BodyReader {
            body: req.into_body(),
            limit,
            idle_max,
            deadline,
            total: 0,
        })
    }

    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        use http_body_util::BodyExt;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let wait = self.idle_max.min(left);
            let next =
                futures::future::select(self.body.frame(), Box::pin(glommio::timer::sleep(wait)))
                    .await;
            let frame = match next {
                futures::future::Either::Left((frame, _)) => frame,
                futures::future::Either::Right(_) => return Err(self.timed_out(wait)),
            };
            let Some(frame) = frame else { return Ok(None) };
            let frame = frame
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                self.total += data.len();
                if self.total > self.limit {
                    return Err(too_large(self.limit));
                }
                return Ok(Some(data));
            }
        }
    }

    fn timed_out(&self, waited: Duration) -> ApiError {
        let message = if waited < self.idle_max {
            format!(
                "the body came slower than {BODY_BYTES_PER_S_MIN} bytes/s after the first {} s",
                self.idle_max.as_secs()
            )
        } else {
            format!("no body bytes for {} s", self.idle_max.as_secs())
        };
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {limit} bytes"),
    )
}

/// Reads a JSON body of at most `limit` bytes: 413 beyond, 400 `bad_json` if it does not parse
/// into `T` (serde's message names the field).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = read_body(req, limit).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))
}
