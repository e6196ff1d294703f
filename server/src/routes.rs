//! Request routing: each path and method to its handler, authentication first where the
//! route needs it, and every answer counted in the shard's metrics.

use std::rc::Rc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::authenticate;
use crate::body::Body;
use crate::handlers::{
    account, admin, backup, blocks, commit, delta, history, list, quota, retrieve_batch, rewind,
    tokens, users,
};
use crate::metrics::Route;
use crate::reply::{method_not_allowed, text, ApiError};
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
    shard.metrics().record(
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
    if let Some(route) = path.strip_prefix("/2/") {
        return crate::dropbox::handle(shard, route, req).await;
    }
    let (route, allowed) = match segments.as_slice() {
        ["healthz"] => (Route::Healthz, Method::GET),
        ["metrics"] => (Route::Metrics, Method::GET),
        ["v1", "account"] => (Route::Account, Method::GET),
        ["v1", "tokens"] if method == Method::GET => (Route::TokensList, Method::GET),
        ["v1", "tokens"] => (Route::TokensCreate, Method::POST),
        ["v1", "tokens", _] => (Route::TokensRevoke, Method::DELETE),
        ["v1", "admin", "users"] if method == Method::GET => (Route::AdminListUsers, Method::GET),
        ["v1", "admin", "users"] => (Route::AdminUsers, Method::POST),
        ["v1", "admin", "users", _, "disable"] => (Route::AdminDisable, Method::POST),
        ["v1", "admin", "users", _, "enable"] => (Route::AdminEnable, Method::POST),
        ["v1", "admin", "gc"] => (Route::AdminGc, Method::POST),
        ["v1", "admin", "fsck"] => (Route::AdminFsck, Method::POST),
        ["v1", "admin", "backup"] => (Route::AdminBackup, Method::POST),
        ["v1", "admin", "users", _, "quota"] => (Route::AdminQuota, Method::POST),
        ["v1", "store_batch"] => (Route::StoreBatch, Method::POST),
        ["v1", "namespaces"] => (Route::Namespaces, Method::POST),
        ["v1", "namespaces", _, "members"] => (Route::Members, Method::POST),
        ["v1", "commit"] => (Route::Commit, Method::POST),
        ["v1", "commit_batch"] => (Route::CommitBatch, Method::POST),
        ["v1", "list"] => (Route::List, Method::POST),
        ["v1", "longpoll"] => (Route::Longpoll, Method::POST),
        ["v1", "retrieve_batch"] => (Route::RetrieveBatch, Method::POST),
        ["v1", "blocks", _] => (Route::Blocks, Method::GET),
        ["v1", "signatures"] => (Route::Signatures, Method::POST),
        ["v1", "history"] => (Route::History, Method::POST),
        ["v1", "restore"] => (Route::Restore, Method::POST),
        ["v1", "deleted"] => (Route::Deleted, Method::POST),
        ["v1", "rewind"] => (Route::Rewind, Method::POST),
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
            let mut r = text(StatusCode::OK, &crate::metrics::render(shard.all_metrics()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        _ => match authenticate(shard, &req) {
            Err(e) => Err(e),
            Ok(user) => match route {
                Route::Account => account::account(shard, &user).await,
                Route::AdminUsers => admin::create_user(shard, &user, req).await,
                Route::StoreBatch => blocks::store_batch(shard, &user, req).await,
                Route::Namespaces => admin::create_namespace(shard, &user, req).await,
                Route::Members => admin::add_member(shard, &user, segments[2], req).await,
                Route::Commit => commit::commit(shard, &user, req).await,
                Route::CommitBatch => commit::commit_batch(shard, &user, req).await,
                Route::List => list::list(shard, &user, req).await,
                Route::Longpoll => list::longpoll(shard, &user, req).await,
                Route::RetrieveBatch => retrieve_batch::retrieve_batch(shard, &user, req).await,
                Route::Blocks => {
                    retrieve_batch::get_block(shard, &user, segments[2], req.uri().query()).await
                }
                Route::Signatures => delta::signatures(shard, &user, req).await,
                Route::History => history::history(shard, &user, req).await,
                Route::Restore => history::restore(shard, &user, req).await,
                Route::Deleted => history::deleted(shard, &user, req).await,
                Route::Rewind => rewind::rewind(shard, &user, req).await,
                Route::AdminGc => admin::gc(shard, &user).await,
                Route::AdminFsck => admin::fsck(shard, &user).await,
                Route::AdminBackup => backup::backup(shard, &user, req).await,
                Route::AdminQuota => quota::set_quota(shard, &user, segments[3], req).await,
                Route::AdminListUsers => users::list_users(shard, &user).await,
                Route::TokensCreate => tokens::create_token(shard, &user, req).await,
                Route::TokensList => tokens::list_tokens(shard, &user).await,
                Route::TokensRevoke => tokens::revoke_token(shard, &user, segments[2]).await,
                Route::AdminDisable => users::set_disabled(shard, &user, segments[3], true).await,
                Route::AdminEnable => users::set_disabled(shard, &user, segments[3], false).await,
                Route::Healthz
                | Route::Metrics
                | Route::Other
                | Route::DropboxRpc
                | Route::DropboxUpload
                | Route::DropboxDownload
                | Route::DropboxNotify => Err(ApiError::internal("route dispatched twice")),
            },
        },
    };
    (route, result.unwrap_or_else(ApiError::into_response))
}
