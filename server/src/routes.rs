//! Request routing, authentication, and the handlers.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use holdall_engine::sfj::User;
use holdall_proto::api::{AccountResponse, ErrorBody, Limits, Mount};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::directory::token_sha256;
use crate::metrics::Route;
use crate::shard::Shard;

/// Response body type.
pub type Body = Full<Bytes>;

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

async fn dispatch(shard: &Shard, req: Request<Incoming>) -> (Route, Response<Body>) {
    let path = req.uri().path();
    let method = req.method();
    match path {
        "/healthz" => (
            Route::Healthz,
            if method == Method::GET {
                text(StatusCode::OK, "ok\n")
            } else {
                method_not_allowed("GET")
            },
        ),
        "/metrics" => (
            Route::Metrics,
            if method == Method::GET {
                shard.publish_gauges();
                let mut r = text(StatusCode::OK, &crate::metrics::render(&shard.all_metrics));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            } else {
                method_not_allowed("GET")
            },
        ),
        "/v1/account" => (
            Route::Account,
            if method == Method::GET {
                match authenticate(shard, &req) {
                    Ok(user) => account(shard, &user),
                    Err(e) => e.into_response(),
                }
            } else {
                method_not_allowed("GET")
            },
        ),
        _ => (
            Route::Other,
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such route: {path}"),
            ),
        ),
    }
}

/// A refused request: its status, a machine-readable code, and what was wrong.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
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
        },
    };
    json(StatusCode::OK, &body)
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
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

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
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

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this route takes {allow}"),
    );
    r.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    r
}
