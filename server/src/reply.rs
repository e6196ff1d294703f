//! What a handler answers: the typed refusal every handler returns ([`ApiError`]), the
//! HTTP view of each lower layer's errors, and the JSON and text response builders.

use std::io::ErrorKind;

use bytes::Bytes;
use holdall_engine::block_log::BlockLogError;
use holdall_engine::journal::state::RecordInvalid;
use holdall_engine::journal::JournalError;
use holdall_proto::api::ErrorBody;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::body::Body;
use crate::mesh::MeshError;
use crate::shard::ShardError;

/// A refused request: its status, a machine-readable code, and what was wrong.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after_s: Option<u64>,
    /// Whether the connection is closed after the answer.
    close: bool,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
            close: false,
        }
    }

    /// 429: the user holds the most connections they may; this one is closed.
    pub fn too_many_connections() -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            close: true,
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "this account holds the most connections it may; this one is closed",
            )
        }
    }

    /// 429: the token is over its request rate; it may try again after `wait`.
    pub fn too_many_requests(wait: std::time::Duration) -> ApiError {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        ApiError {
            retry_after_s: Some(seconds),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("this token is over its request rate; retry in {seconds} s"),
            )
        }
    }

    /// 503: a part of the server cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503: the namespace's owner shard does not hold it (a shard still opening).
    pub fn not_on_shard(ns: holdall_proto::api::NsId) -> ApiError {
        ApiError::unavailable(format!("namespace {ns} is not on its shard"))
    }

    /// 500: a bug or an impossible state.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Seconds the client should wait before trying again, when it says.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_s
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON error response.
    pub fn into_response(self) -> Response<Body> {
        let mut r = error(self.status, self.code, &self.message);
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.close {
            r.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.code(), self.message())
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(
        status,
        "text/plain",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

/// A binary response (block frames).
pub fn binary(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
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

/// A JSON error: `{"error": code, "message": message}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = ErrorBody {
        error: code.into(),
        message: message.into(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    respond(status, "application/json", Bytes::from(bytes))
}

pub fn method_not_allowed(allow: &str) -> Response<Body> {
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

impl From<BlockLogError> for ApiError {
    /// A full disk is 507, a block over 4 MiB 413, anything else 503 (nothing was kept).
    fn from(e: BlockLogError) -> ApiError {
        match e {
            BlockLogError::Io {
                kind: ErrorKind::StorageFull,
                message,
                ..
            } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message),
            BlockLogError::TooLarge(n) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a block of {n} bytes is over 4 MiB"),
            ),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

impl From<JournalError> for ApiError {
    /// A refused record is 409 or 400, a full disk 507, anything else 503.
    fn from(e: JournalError) -> ApiError {
        match e {
            JournalError::Invalid(RecordInvalid::NameTaken(name)) => ApiError::new(
                StatusCode::CONFLICT,
                "name_taken",
                format!("a user named {name:?} exists"),
            ),
            JournalError::Invalid(RecordInvalid::MountTaken { path, .. }) => ApiError::new(
                StatusCode::CONFLICT,
                "mount_conflict",
                format!("the user already has {path:?} or that namespace mounted"),
            ),
            JournalError::Invalid(other) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", other.to_string())
            }
            JournalError::Io {
                kind: ErrorKind::StorageFull,
                message,
                ..
            } => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> ApiError {
        match e {
            MeshError::NoShard(_) => ApiError::internal(e.to_string()),
            MeshError::NotAnswering(_) | MeshError::Dropped(_) => {
                ApiError::unavailable(e.to_string())
            }
        }
    }
}

impl From<ShardError> for ApiError {
    fn from(e: ShardError) -> ApiError {
        match e {
            ShardError::Blocks(e) => e.into(),
            ShardError::Journal(e) => e.into(),
            ShardError::Mesh(e) => e.into(),
            ShardError::Starting => ApiError::unavailable(e.to_string()),
            ShardError::MountConflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "mount_conflict", m)
            }
            ShardError::Backup(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backup_failed",
                format!("backup failed: {m}"),
            ),
            ShardError::Internal(m) => ApiError::internal(m),
        }
    }
}
