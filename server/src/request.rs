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
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = hyper::body::Body::size_hint(req.body()).lower();
    if declared > limit as u64 {
        return Err(too_large());
    }
    let idle_max = req.extensions().get::<crate::http::ClientTimeout>().map_or(
        Duration::from_secs(crate::config::CLIENT_TIMEOUT_S_DEFAULT),
        |t| t.0,
    );
    let expected = match hyper::body::Body::size_hint(req.body()).exact() {
        Some(n) => n,
        None => limit as u64,
    };
    let deadline = Instant::now() + idle_max + Duration::from_secs(expected / BODY_BYTES_PER_S_MIN);
    let mut body = req.into_body();
    let mut total = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = idle_max.min(left);
        let next =
            futures::future::select(body.frame(), Box::pin(glommio::timer::sleep(wait))).await;
        let frame = match next {
            futures::future::Either::Left((frame, _)) => frame,
            futures::future::Either::Right(_) if wait < idle_max => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                    "the body came slower than {BODY_BYTES_PER_S_MIN} bytes/s after the first {} s",
                    idle_max.as_secs()
                ),
                ))
            }
            futures::future::Either::Right(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("no body bytes for {} s", idle_max.as_secs()),
                ))
            }
        };
        let Some(frame) = frame else { return Ok(()) };
        let frame =
            frame.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > limit {
                return Err(too_large());
            }
            take(data)?;
        }
    }
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
