//! Request routing, authentication, and the handlers.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdall_engine::prefetch::Uploader;
use holdall_engine::sfj::User;
use holdall_proto::api::{AccountResponse, ErrorBody, Limits, Mount, DEVICE_HEADER};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::directory::token_sha256;
use crate::metrics::Route;
use crate::shard::Shard;

/// Serves one request and counts it.
pub async fn handle(shard: Rc<Shard>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let bytes_in = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (route, response) = dispatch(&shard, req).await;
    let bytes_out = hyper::body::Body::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    shard.metrics.record(
        route,
        response.status().as_u16(),
        started.elapsed(),
        bytes_in,
        bytes_out,
    );
    response
}

async fn dispatch(shard: &Rc<Shard>, req: Request<Incoming>) -> (Route, Response<Body>) {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, allowed) = match segments.as_slice() {
        ["healthz"] => (Route::Healthz, Method::GET),
        ["metrics"] => (Route::Metrics, Method::GET),
        ["v1", "account"] => (Route::Account, Method::GET),
        ["v1", "admin", "users"] => (Route::AdminUsers, Method::POST),
        ["v1", "store_batch"] => (Route::StoreBatch, Method::POST),
        ["v1", "namespaces"] => (Route::Namespaces, Method::POST),
        ["v1", "namespaces", _, "members"] => (Route::Members, Method::POST),
        ["v1", "commit"] => (Route::Commit, Method::POST),
        ["v1", "commit_batch"] => (Route::CommitBatch, Method::POST),
        ["v1", "list"] => (Route::List, Method::POST),
        ["v1", "longpoll"] => (Route::Longpoll, Method::POST),
        ["v1", "retrieve_batch"] => (Route::RetrieveBatch, Method::POST),
        ["v1", "blocks", _] => (Route::Blocks, Method::GET),
        _ => {
            let e = ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such route: {path}"),
            );
            return (Route::Other, e.into_response());
        }
    };
    if method != allowed {
        return (route, method_not_allowed(allowed.as_str()));
    }
    let result = match route {
        Route::Healthz => Ok(text(StatusCode::OK, "ok\n")),
        Route::Metrics => {
            shard.publish_gauges();
            let mut r = text(StatusCode::OK, &crate::metrics::render(&shard.all_metrics));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        _ => match authenticate(shard, &req) {
            Err(e) => Err(e),
            Ok(user) => match route {
                Route::Account => Ok(account(shard, &user)),
                Route::AdminUsers => crate::admin::create_user(shard, &user, req).await,
                Route::StoreBatch => crate::blocks::store_batch(shard, &user, req).await,
                Route::Namespaces => crate::admin::create_namespace(shard, &user, req).await,
                Route::Members => crate::admin::add_member(shard, &user, segments[2], req).await,
                Route::Commit => crate::commit::commit(shard, &user, req).await,
                Route::CommitBatch => crate::commit::commit_batch(shard, &user, req).await,
                Route::List => crate::list::list(shard, &user, req).await,
                Route::Longpoll => crate::list::longpoll(shard, &user, req).await,
                Route::RetrieveBatch => crate::retrieve::retrieve_batch(shard, &user, req).await,
                Route::Blocks => {
                    crate::retrieve::get_block(shard, &user, segments[2], req.uri().query()).await
                }
                Route::Healthz | Route::Metrics | Route::Other => {
                    Err(ApiError::internal("route dispatched twice"))
                }
            },
        },
    };
    (route, result.unwrap_or_else(ApiError::into_response))
}

/// A refused request: its status, a machine-readable code, and what was wrong.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 503: a part of the server cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: a bug or an impossible state.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON error response.
    pub fn into_response(self) -> Response<Body> {
        error(self.status, self.code, &self.message)
    }
}

fn authenticate(shard: &Shard, req: &Request<Incoming>) -> Result<User, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
    shard
        .directory
        .borrow()
        .user_by_token(&token_sha256(token.trim()))
        .cloned()
        .ok_or_else(|| unauthorized("unknown token"))
}

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

fn account(shard: &Shard, user: &User) -> Response<Body> {
    let directory = shard.directory.borrow();
    let body = AccountResponse {
        user: user.name.clone(),
        root_ns: user.root_ns,
        mounts: directory
            .mounts(user.id)
            .iter()
            .map(|(ns, path)| Mount {
                ns: *ns,
                path: path.clone(),
            })
            .collect(),
        limits: Limits {
            block_bytes_max: BLOCK_BYTES_MAX as u64,
            batch_bytes_max: BATCH_BYTES_DEFAULT as u64,
            prefetch_ttl_s: shard
                .streaming
                .then(|| shard.prefetch.borrow().ttl().as_secs()),
        },
    };
    json(StatusCode::OK, &body)
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(
        status,
        "text/plain",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => respond(status, "application/json", Bytes::from(bytes)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("encoding the response: {e}"),
        ),
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

/// A JSON error: `{"error": code, "message": message}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = ErrorBody {
        error: code.into(),
        message: message.into(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    respond(status, "application/json", Bytes::from(bytes))
}

fn method_not_allowed(allow: &str) -> Response<Body> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this route takes {allow}"),
    );
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(hyper::header::ALLOW, v);
    }
    r
}
