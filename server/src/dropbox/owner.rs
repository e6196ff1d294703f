//! Work on a namespace's owner shard: its journal state read there, and answers brought
//! back. Every read of rows the API makes goes through here.

use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::State;
use holdall_proto::api::{Jid, NsId};

use super::call::Call;
use super::error::DbxError;
use super::tree::{is_under, lookup, Node, Place};
use crate::reply::ApiError;
use crate::shard::shard_of_namespace;

/// Runs `work` on `ns`'s owner with its journal state.
pub async fn on_owner<T, W>(call: &Call<'_>, ns: NsId, work: W) -> Result<T, DbxError>
where
    T: Send + 'static,
    W: FnOnce(&State) -> T + Send + 'static,
{
    let owner = shard_of_namespace(ns, call.shard.shards());
    Ok(call
        .shard
        .submit_to(owner, move |s| {
            std::future::ready(work(&s.journal().state()))
        })
        .await?)
}

/// Row `jid` of `ns`, which was just written.
pub async fn row_at(call: &Call<'_>, ns: NsId, jid: Jid) -> Result<Row, DbxError> {
    on_owner(call, ns, move |state| state.row(ns, jid).cloned())
        .await?
        .ok_or_else(|| DbxError::Holdall(ApiError::internal("a row just written is gone")))
}

/// What `place` names, its case resolved; in the root namespace, a folder on the way to a
/// mount is a folder even with no row.
pub async fn lookup_at(call: &Call<'_>, place: &Place) -> Result<Option<Node>, DbxError> {
    let (ns, path) = (place.ns, place.path.clone());
    let found = on_owner(call, ns, move |state| lookup(state, ns, &path)).await?;
    if found.is_some() || ns != call.tree.root {
        return Ok(found);
    }
    let lower = place.path.to_lowercase();
    Ok(call
        .tree
        .mounts
        .iter()
        .find(|(_, at)| is_under(&at.to_lowercase(), &lower))
        .and_then(|(_, at)| at.get(..place.path.len()))
        .map(|exact| Node::Folder(exact.to_owned(), None)))
}
