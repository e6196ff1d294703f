//! Errors as the Dropbox API shapes them: 400 with a plain-text reason for a malformed
//! call, 401 with a tagged `AuthError`, 409 with `error_summary` and the route's tagged
//! error, 429 with a `RateLimitError`, and 5xx for a failing server (nothing was changed).

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::Body;
use crate::reply::ApiError;

/// A refused Dropbox API call.
#[derive(Debug)]
pub enum DbxError {
    /// 400: the call itself is malformed (bad argument, unknown route).
    BadInput(String),
    /// 401: the token is missing, unknown or revoked (`AuthError` tag).
    Auth(&'static str),
    /// 409: the route's own error: its summary and its tagged value.
    Route {
        /// Tags joined by `/`, as Dropbox writes them (`path/not_found/`).
        summary: String,
        /// The route's error union.
        error: Value,
    },
    /// 429: too many requests; try again after this many seconds.
    RateLimited(u64),
    /// Anything else Holdall refused or failed with, answered with its own status.
    Holdall(ApiError),
}

impl DbxError {
    /// A route error made of nested union tags: `["path", "not_found"]` is
    /// `{".tag": "path", "path": {".tag": "not_found"}}`.
    pub fn tags(tags: &[&str]) -> DbxError {
        DbxError::nested(tags, json!({}))
    }

    /// Nested union tags whose innermost variant carries the fields of `leaf` (an object).
    pub fn nested(tags: &[&str], leaf: Value) -> DbxError {
        let mut error = leaf;
        for (i, tag) in tags.iter().enumerate().rev() {
            let mut node = json!({ ".tag": tag });
            if i + 1 == tags.len() {
                if let (Some(node), Some(fields)) = (node.as_object_mut(), error.as_object()) {
                    node.extend(fields.clone());
                }
            } else {
                node[*tag] = error;
            }
            error = node;
        }
        let mut summary: String = tags.iter().map(|t| format!("{t}/")).collect();
        summary.push('.');
        DbxError::Route { summary, error }
    }

    /// The lookup error of a path that names nothing, under `outer` (`path`, `from_lookup`…).
    pub fn not_found(outer: &str) -> DbxError {
        DbxError::tags(&[outer, "not_found"])
    }

    /// The answer.
    pub fn into_response(self) -> Response<Body> {
        match self {
            DbxError::BadInput(reason) => text(StatusCode::BAD_REQUEST, reason),
            DbxError::Auth(tag) => json_error(
                StatusCode::UNAUTHORIZED,
                json!({ "error_summary": format!("{tag}/"), "error": { ".tag": tag } }),
            ),
            DbxError::Route { summary, error } => json_error(
                StatusCode::CONFLICT,
                json!({ "error_summary": summary, "error": error }),
            ),
            DbxError::RateLimited(seconds) => {
                let mut r = json_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({
                        "error_summary": "too_many_requests/",
                        "error": { "reason": { ".tag": "too_many_requests" }, "retry_after": seconds },
                    }),
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
                r
            }
            DbxError::Holdall(e) => {
                let status = e.status();
                text(status, format!("{}: {}", e.code(), e.message()))
            }
        }
    }
}

impl From<ApiError> for DbxError {
    /// Holdall's refusals in Dropbox's words where Dropbox has them.
    fn from(e: ApiError) -> DbxError {
        match e.status() {
            StatusCode::UNAUTHORIZED if e.code() == "account_disabled" => {
                DbxError::Auth("user_suspended")
            }
            StatusCode::UNAUTHORIZED => DbxError::Auth("invalid_access_token"),
            StatusCode::TOO_MANY_REQUESTS => DbxError::RateLimited(e.retry_after_s().unwrap_or(1)),
            StatusCode::INSUFFICIENT_STORAGE if e.code() == "quota_exceeded" => {
                DbxError::tags(&["path", "insufficient_space"])
            }
            s if s.is_client_error() => {
                DbxError::BadInput(format!("{}: {}", e.code(), e.message()))
            }
            _ => DbxError::Holdall(e),
        }
    }
}

impl From<crate::shard::ShardError> for DbxError {
    fn from(e: crate::shard::ShardError) -> DbxError {
        DbxError::from(ApiError::from(e))
    }
}

fn text(status: StatusCode, reason: String) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(reason)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_error(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tags_read_as_dropbox_writes_them() {
        let DbxError::Route { summary, error } = DbxError::tags(&["path", "conflict", "file"])
        else {
            panic!("a route error");
        };
        assert_eq!(summary, "path/conflict/file/.");
        assert_eq!(
            error,
            json!({".tag": "path", "path": {".tag": "conflict", "conflict": {".tag": "file"}}})
        );
        let DbxError::Route { error, .. } = DbxError::nested(
            &["lookup_failed", "incorrect_offset"],
            json!({"correct_offset": 5}),
        ) else {
            panic!("a route error");
        };
        assert_eq!(
            error,
            json!({".tag": "lookup_failed", "lookup_failed": {".tag": "incorrect_offset", "correct_offset": 5}})
        );
    }
}
