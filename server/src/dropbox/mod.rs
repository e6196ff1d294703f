//! The Dropbox API v2, the subset file tools use, on holdalld's own port: `/2/{route}`,
//! over the same users, tokens, namespaces, journal and blocks as `/v1`. An RPC takes a
//! JSON body and answers JSON; a content call takes its argument in `Dropbox-API-Arg`
//! (uploads answer JSON, downloads put it in `Dropbox-API-Result`); the longpoll carries no
//! token (its cursor is its authority). docs/DROPBOX_API.md lists what is served.

use std::rc::Rc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::body::Body;
use crate::metrics::Route;
use crate::shard::Shard;

mod account;
mod call;
mod content;
mod cursor;
mod error;
mod files;
mod listing;
mod metadata;
mod names;
mod owner;
mod revisions;
mod sessions;
mod tree;
mod write;

use call::Call;
use error::DbxError;

/// How a route is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// JSON in, JSON out.
    Rpc,
    /// Bytes in with `Dropbox-API-Arg`, JSON out.
    Upload,
    /// `Dropbox-API-Arg` in, bytes out with `Dropbox-API-Result`.
    Download,
}

/// The metrics route of a Dropbox API call.
fn metric(style: Style) -> Route {
    match style {
        Style::Rpc => Route::DropboxRpc,
        Style::Upload => Route::DropboxUpload,
        Style::Download => Route::DropboxDownload,
    }
}

/// The style of each served route; `None` for a route not served.
fn style_of(route: &str) -> Option<Style> {
    Some(match route {
        "files/upload"
        | "files/upload_session/start"
        | "files/upload_session/append_v2"
        | "files/upload_session/finish" => Style::Upload,
        "files/download" => Style::Download,
        "users/get_current_account"
        | "users/get_space_usage"
        | "files/list_folder"
        | "files/list_folder/continue"
        | "files/list_folder/get_latest_cursor"
        | "files/list_folder/longpoll"
        | "files/get_metadata"
        | "files/create_folder_v2"
        | "files/delete_v2"
        | "files/move_v2"
        | "files/copy_v2"
        | "files/list_revisions"
        | "files/restore"
        | "files/search_v2"
        | "files/upload_session/finish_batch_v2"
        | "check/user" => Style::Rpc,
        _ => return None,
    })
}

/// Serves `POST /2/{route}`.
pub async fn handle(
    shard: &Rc<Shard>,
    route: &str,
    req: Request<Incoming>,
) -> (Route, Response<Body>) {
    let Some(style) = style_of(route) else {
        let e = call::bad_input(route, "Unknown API function");
        return (Route::DropboxRpc, e.into_response());
    };
    if req.method() != Method::POST {
        let e = call::bad_input(route, "the Dropbox API takes POST");
        return (metric(style), e.into_response());
    }
    if route == "files/list_folder/longpoll" {
        let answer = listing::longpoll(shard, route, req).await;
        return (
            Route::DropboxNotify,
            answer.unwrap_or_else(DbxError::into_response),
        );
    }
    let answer = match authenticate(shard, route, &req) {
        Ok(call) => serve(&call, req).await,
        Err(e) => Err(e),
    };
    (
        metric(style),
        answer.unwrap_or_else(DbxError::into_response),
    )
}

/// The caller of `req` by its bearer token, with the limits every call passes.
fn authenticate<'a>(
    shard: &'a Rc<Shard>,
    route: &'a str,
    req: &Request<Incoming>,
) -> Result<Call<'a>, DbxError> {
    let user = crate::auth::authenticate(shard, req)?;
    let token = crate::auth::bearer_sha256(req)?;
    let tree = tree::Tree::of(&shard.directory(), &user);
    Ok(Call {
        shard,
        route,
        user,
        token,
        tree,
    })
}

async fn serve(call: &Call<'_>, req: Request<Incoming>) -> Result<Response<Body>, DbxError> {
    match call.route {
        "users/get_current_account" => account::current_account(call).await,
        "users/get_space_usage" => account::space_usage(call).await,
        "check/user" => account::check_user(call, req).await,
        "files/get_metadata" => files::get_metadata(call, req).await,
        "files/create_folder_v2" => files::create_folder(call, req).await,
        "files/delete_v2" => files::delete(call, req).await,
        "files/move_v2" => files::relocate(call, req, files::Relocation::Move).await,
        "files/copy_v2" => files::relocate(call, req, files::Relocation::Copy).await,
        "files/search_v2" => files::search(call, req).await,
        "files/list_folder" => listing::list_folder(call, req).await,
        "files/list_folder/continue" => listing::list_continue(call, req).await,
        "files/list_folder/get_latest_cursor" => listing::latest_cursor(call, req).await,
        "files/list_revisions" => revisions::list_revisions(call, req).await,
        "files/restore" => revisions::restore(call, req).await,
        "files/upload" => content::upload(call, req).await,
        "files/download" => content::download(call, req).await,
        "files/upload_session/start" => sessions::start(call, req).await,
        "files/upload_session/append_v2" => sessions::append(call, req).await,
        "files/upload_session/finish" => sessions::finish(call, req).await,
        "files/upload_session/finish_batch_v2" => sessions::finish_batch(call, req).await,
        _ => Err(call.bad_input("Unknown API function")),
    }
}

/// A JSON answer, with the content type the SDKs insist on.
fn json_ok(body: &serde_json::Value) -> Response<Body> {
    crate::reply::json(hyper::StatusCode::OK, body)
}
