//! One Dropbox API call: who makes it, their tree, and its argument, read the way each
//! style carries it (an RPC's JSON body; a content call's `Dropbox-API-Arg` header, or its
//! `arg` query parameter).

use std::rc::Rc;

use holdall_engine::journal::record::Author;
use holdall_engine::journal::state::User;
use holdall_engine::prefetch::Uploader;
use hyper::body::Incoming;
use hyper::Request;
use serde::de::DeserializeOwned;

use super::error::DbxError;
use super::tree::Tree;
use crate::shard::Shard;

/// Largest RPC argument: a path or two and a few options, or a batch of 1000 commits.
const RPC_ARG_BYTES_MAX: usize = 4 << 20;
/// Largest `Dropbox-API-Arg`.
const HEADER_ARG_BYTES_MAX: usize = 64 << 10;
/// The device name rows written through the API carry.
pub const DEVICE: &str = "dropbox-api";

/// A call and its caller.
pub struct Call<'a> {
    /// The shard serving it.
    pub shard: &'a Rc<Shard>,
    /// The route, `files/upload` say.
    pub route: &'a str,
    /// The caller.
    pub user: User,
    /// SHA-256 of the caller's token.
    pub token: [u8; 32],
    /// The caller's tree now.
    pub tree: Tree,
}

impl Call<'_> {
    /// The author of rows the call writes.
    pub fn author(&self) -> Author {
        Author {
            user: self.user.id,
            device: DEVICE.into(),
        }
    }

    /// The uploader the call's blocks are recorded under.
    pub fn uploader(&self) -> Uploader {
        Uploader {
            user: self.user.id,
            device: 0,
        }
    }

    /// A 400 naming the route, as Dropbox words them.
    pub fn bad_input(&self, what: impl std::fmt::Display) -> DbxError {
        bad_input(self.route, what)
    }

    /// The JSON argument of an RPC call.
    pub async fn rpc_arg<T: DeserializeOwned>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, DbxError> {
        rpc_arg(self.route, req).await
    }
}

/// A 400 for `route`.
pub fn bad_input(route: &str, what: impl std::fmt::Display) -> DbxError {
    DbxError::BadInput(format!("Error in call to API function \"{route}\": {what}"))
}

/// The JSON argument of an RPC call to `route`; an empty body reads as `null`.
pub async fn rpc_arg<T: DeserializeOwned>(
    route: &str,
    req: Request<Incoming>,
) -> Result<T, DbxError> {
    let body = crate::request::read_body(req, RPC_ARG_BYTES_MAX)
        .await
        .map_err(DbxError::from)?;
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &body
    };
    serde_json::from_slice(text).map_err(|e| bad_input(route, format!("request body: {e}")))
}

/// The argument of a content call: the `Dropbox-API-Arg` header, else the `arg` query
/// parameter.
pub fn header_arg<T: DeserializeOwned>(
    route: &str,
    req: &Request<Incoming>,
) -> Result<T, DbxError> {
    let from_header = req
        .headers()
        .get("dropbox-api-arg")
        .map(|v| v.as_bytes().to_vec());
    let from_query = || {
        form_urlencoded::parse(req.uri().query()?.as_bytes())
            .find(|(k, _)| k == "arg")
            .map(|(_, v)| v.as_bytes().to_vec())
    };
    let raw = from_header.or_else(from_query).ok_or_else(|| {
        bad_input(
            route,
            "Must provide HTTP header \"Dropbox-API-Arg\" or URL parameter \"arg\".",
        )
    })?;
    if raw.len() > HEADER_ARG_BYTES_MAX {
        return Err(bad_input(route, "the Dropbox-API-Arg header is too long"));
    }
    serde_json::from_slice(&raw).map_err(|e| {
        bad_input(
            route,
            format!("HTTP header \"Dropbox-API-Arg\": could not decode input as JSON: {e}"),
        )
    })
}

/// `e`, after reading the rest of `req`'s body (at most `limit` bytes) and dropping it: a
/// client still sending a large body then gets the answer, not a closed connection.
pub async fn drained(req: Request<Incoming>, limit: usize, e: DbxError) -> DbxError {
    if let Ok(mut body) = crate::request::BodyReader::new(req, limit) {
        while let Ok(Some(_)) = body.next().await {}
    }
    e
}
