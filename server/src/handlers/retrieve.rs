//! Blocks the caller may read, for every route that reads them (retrieve_batch and
//! `GET /v1/blocks` in `retrieve_batch`, signatures and delta bases, the Dropbox API).
//!
//! Nobody reads a block by naming its hash alone. Each item names a file (namespace and
//! path, and a row or the path's prefetch entry); the namespace's owner shard decides, per
//! hash, whether that row or entry lists it. Allowed hashes are then read on their blocks'
//! owner shards, concurrently, and the answer goes out as frame headers and block buffers
//! side by side. A prefetch block not uploaded yet is `pending`; with `wait_ms` its owner
//! parks until the upload lands or the wait ends.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::Either;
use futures::StreamExt;
use holdall_engine::block_log::BlockLogError;
use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::User;
use holdall_proto::api::{EntryKind, RetrieveItem};
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use holdall_proto::pieces::Pieces;
use holdall_proto::BlockHash;
use hyper::StatusCode;

use crate::block_bytes::BlockBytes;
use crate::reply::ApiError;
use crate::shard::{shard_of_block, shard_of_namespace, Shard};

/// Blocks one `retrieve` asks for when its callers take them a few at a time: two full
/// blocks make the batch limit.
pub(crate) const BLOCKS_PER_READ: usize = BATCH_BYTES_DEFAULT / BLOCK_BYTES_MAX;
/// Block reads one request keeps in flight on one shard.
const READS_IN_FLIGHT_MAX: usize = 8;

/// What the namespace's owner says of one asked hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Listed by the row: serve it.
    Row,
    /// Listed by the live prefetch entry: serve it, or `pending` until uploaded.
    Prefetch,
    /// Refused with this status.
    Refused(RetrieveStatus),
}

/// Answers every asked hash in order: its status and, when `Ok`, its bytes.
/// With `expand`, every block comes as itself; otherwise compressed ones as they are kept.
pub(crate) async fn retrieve(
    shard: &Rc<Shard>,
    user: &User,
    items: Vec<RetrieveItem>,
    wait: Duration,
    expand: bool,
) -> Result<Vec<(BlockHash, RetrieveStatus, Option<BlockBytes>)>, ApiError> {
    let namespaces = crate::handlers::access::namespaces_of(&shard.directory(), user);
    for item in &items {
        crate::handlers::access::check(&namespaces, item.ns)?;
    }
    let mut by_owner: BTreeMap<usize, Vec<(usize, RetrieveItem)>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_owner
            .entry(shard_of_namespace(item.ns, shard.shards()))
            .or_default()
            .push((i, item.clone()));
    }
    let granted = by_owner.into_iter().map(|(owner, list)| {
        shard.submit_to(owner, move |s| {
            let s = s.clone();
            async move {
                let mut grants: Vec<(usize, Vec<Grant>)> = Vec::with_capacity(list.len());
                for (i, item) in list {
                    grants.push((i, grant_here(&s, &item).await?));
                }
                Ok::<_, ApiError>(grants)
            }
        })
    });
    let mut grants: Vec<Vec<Grant>> = vec![Vec::new(); items.len()];
    for answered in futures::future::join_all(granted).await {
        for (i, g) in answered?? {
            grants[i] = g;
        }
    }
    // Slots in answer order; allowed hashes go to their blocks' owners.
    let mut slots: Vec<(BlockHash, Grant)> = Vec::new();
    let mut reads: BTreeMap<usize, Vec<(usize, BlockHash, bool)>> = BTreeMap::new();
    for (item, item_grants) in items.iter().zip(&grants) {
        for (hash, grant) in item.hashes.iter().zip(item_grants) {
            if matches!(grant, Grant::Row | Grant::Prefetch) {
                reads
                    .entry(shard_of_block(hash, shard.shards()))
                    .or_default()
                    .push((slots.len(), *hash, *grant == Grant::Prefetch));
            }
            slots.push((*hash, *grant));
        }
    }
    let fetched = reads.into_iter().map(|(owner, list)| {
        shard.submit_to(owner, move |s| {
            let s = s.clone();
            async move { fetch_here(&s, list, wait, expand).await }
        })
    });
    let mut data: Vec<Option<BlockBytes>> = vec![None; slots.len()];
    let mut total_bytes = 0;
    for answered in futures::future::join_all(fetched).await {
        for (slot, bytes) in answered?? {
            total_bytes += bytes.as_ref().map_or(0, BlockBytes::block_len);
            data[slot] = bytes;
        }
    }
    if total_bytes > BATCH_BYTES_DEFAULT {
        return Err(too_large());
    }
    Ok(slots
        .into_iter()
        .zip(data)
        .map(|((hash, grant), bytes)| match (grant, bytes) {
            (_, Some(b)) => (hash, RetrieveStatus::Ok, Some(b)),
            (Grant::Prefetch, None) => (hash, RetrieveStatus::Pending, None),
            (Grant::Refused(status), None) => (hash, status, None),
            (Grant::Row, None) => (hash, RetrieveStatus::NotFound, None),
        })
        .collect())
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "the blocks asked for total more than {BATCH_BYTES_DEFAULT} bytes; split the request"
        ),
    )
}

/// On the namespace's owner: which of the item's hashes its row or prefetch entry lists.
async fn grant_here(shard: &Shard, item: &RetrieveItem) -> Result<Vec<Grant>, ApiError> {
    let refuse = |status| vec![Grant::Refused(status); item.hashes.len()];
    if item.prefetch {
        let mut table = shard.prefetch_mut();
        let Some(entry) = table.get(item.ns, &item.path, Instant::now()) else {
            return Ok(refuse(RetrieveStatus::NotEligible));
        };
        return Ok(item
            .hashes
            .iter()
            .map(|h| match entry.blocklist.contains(h) {
                true => Grant::Prefetch,
                false => Grant::Refused(RetrieveStatus::NotEligible),
            })
            .collect());
    }
    {
        let state = shard.journal().state();
        let row = match item.jid {
            Some(jid) => state.row(item.ns, jid).filter(|r| r.path == item.path),
            None => state.latest(item.ns, &item.path),
        };
        match row {
            Some(row) => return Ok(grant_listed(row, item)),
            None if item.jid.is_none() => return Ok(refuse(RetrieveStatus::NotFound)),
            None => {}
        }
    }
    // An older version of the path, while it is within the history retention.
    let jid = item.jid.unwrap_or_default();
    let cutoff_ms = shard.history_cutoff_ms();
    let mut walk = shard
        .journal()
        .retained_history(item.ns, &item.path, cutoff_ms);
    while let Some(row) = walk.next().await? {
        if row.jid == jid {
            return Ok(grant_listed(&row, item));
        }
        if row.jid < jid {
            break;
        }
    }
    Ok(refuse(RetrieveStatus::NotFound))
}

/// Grants the item's hashes that `row`, a file, lists.
fn grant_listed(row: &Row, item: &RetrieveItem) -> Vec<Grant> {
    if row.version.kind != EntryKind::File {
        return vec![Grant::Refused(RetrieveStatus::NotFound); item.hashes.len()];
    }
    item.hashes
        .iter()
        .map(|h| match row.version.blocklist.contains(h) {
            true => Grant::Row,
            false => Grant::Refused(RetrieveStatus::NotFound),
        })
        .collect()
}

/// On the blocks' owner: reads each block, waiting up to `wait` for prefetch blocks not
/// uploaded yet. Stops with 413 once the bytes read pass the batch limit.
async fn fetch_here(
    shard: &Rc<Shard>,
    list: Vec<(usize, BlockHash, bool)>,
    wait: Duration,
    expand: bool,
) -> Result<Vec<(usize, Option<BlockBytes>)>, ApiError> {
    let deadline = Instant::now() + wait;
    let read_bytes = Cell::new(0usize);
    let reads = futures::stream::iter(list).map(|(slot, hash, may_wait)| {
        let read_bytes = &read_bytes;
        async move {
            if may_wait && !shard.blocks().contains(&hash) {
                await_arrival(shard, hash, deadline).await;
            }
            let Some(data) = read_here(shard, &hash).await? else {
                return Ok((slot, None));
            };
            read_bytes.set(read_bytes.get() + data.block_len());
            if read_bytes.get() > BATCH_BYTES_DEFAULT {
                return Err(too_large());
            }
            match expand {
                false => Ok((slot, Some(data))),
                true => match data.expanded() {
                    Ok(raw) => Ok((slot, Some(BlockBytes::raw(raw)))),
                    // Authenticated and checksummed, yet not the block: corruption.
                    Err(reason) => {
                        shard.blocks().forget_corrupt(&hash, &reason);
                        Ok((slot, None))
                    }
                },
            }
        }
    });
    reads
        .buffered(READS_IN_FLIGHT_MAX)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Block `hash` as this shard keeps it, from the cache or the log; None if it is not here.
async fn read_here(shard: &Shard, hash: &BlockHash) -> Result<Option<BlockBytes>, ApiError> {
    // A block stored or served moments ago is still in memory.
    let cached = shard.block_cache_mut().get(hash);
    if cached.is_some() {
        return Ok(cached);
    }
    let mut out = shard.block_cache_mut().spare_buffer();
    let form = match shard.blocks().get_stored(hash, &mut out).await {
        Ok(Some(form)) => form,
        // A damaged record (counted and logged by the log, dropped from its index) is a
        // block this server no longer has: the others of the batch are served.
        Ok(None) | Err(BlockLogError::Corrupt { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let data = BlockBytes {
        pieces: Pieces::from(Bytes::from(out)),
        form,
    };
    shard.block_cache_mut().insert_served(*hash, data.clone());
    Ok(Some(data))
}

/// Waits until `hash` is stored here or `deadline` passes.
async fn await_arrival(shard: &Shard, hash: BlockHash, deadline: Instant) {
    let now = Instant::now();
    if now >= deadline {
        return;
    }
    let Ok(arrived) = shard.arrivals_mut().park(hash, ()) else {
        return;
    };
    shard.metrics().pending_wait();
    let timeout = glommio::timer::sleep(deadline - now);
    if let Either::Right(_) = futures::future::select(arrived, Box::pin(timeout)).await {
        shard.metrics().pending_wait_timed_out();
    }
}
