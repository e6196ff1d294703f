//! Retrieve answers made deltas (feature `delta`): a format-2 retrieve_batch item may carry,
//! per hash, the signature of the block the reader holds in its place and that block's
//! hash; the block is then answered as a delta against it when that is smaller than what
//! the frame would carry. The server diffs only against a signature it made itself from
//! that base, read by the retrieve rule from a version of the same path: a signature from
//! anyone else could make one 4 MiB diff hash gigabytes (fast_rsync gives up on a checksum
//! only after 1,024 false matches; 5.4 s of a core, measured), and the base's access check
//! keeps the delta from telling anything about a block the reader may not read.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use holdall_engine::block_log::Form;
use holdall_engine::journal::record::Row;
use holdall_engine::journal::state::User;
use holdall_proto::api::{EntryKind, Jid, NsId, RetrieveItem};
use holdall_proto::delta;
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::BlockHash;
use hyper::StatusCode;

use crate::block_bytes::BlockBytes;
use crate::handlers::retrieve::{retrieve, BLOCKS_PER_READ};
use crate::reply::ApiError;
use crate::shard::{shard_of_namespace, Shard};

/// What a reader holds in the place of one block it asks for: the signature it sent and
/// the hash of the block it describes, in the asking item's file.
pub(crate) struct Held {
    ns: NsId,
    path: String,
    signature: Vec<u8>,
    base: BlockHash,
}

/// Per answer (the items' hashes in order), what the reader holds in that block's place,
/// where it sent both a signature and its base; none when the request is not format 2 or
/// deltas are off. A signature this server would not index is refused before anything is
/// read.
pub(crate) fn asked_bases(
    shard: &Shard,
    items: &mut [RetrieveItem],
    format_two: bool,
) -> Result<Vec<Option<Held>>, ApiError> {
    let mut out = Vec::new();
    for item in items.iter_mut() {
        let mut signatures = std::mem::take(&mut item.signatures);
        let bases = std::mem::take(&mut item.bases);
        for hash in &item.hashes {
            let (Some(signature), Some(base)) = (signatures.remove(hash), bases.get(hash)) else {
                out.push(None);
                continue;
            };
            if !format_two || !shard.deltas() {
                out.push(None);
                continue;
            }
            if let Err(e) = delta::check_signature(&signature) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_signature",
                    format!("the signature sent for block {hash}: {e}"),
                ));
            }
            out.push(Some(Held {
                ns: item.ns,
                path: item.path.clone(),
                signature,
                base: *base,
            }));
        }
    }
    Ok(out)
}

/// Per answer, the delta to send instead of its block: for each block asked with a held
/// base, the base is read by the retrieve rule from a version of the same path, its own
/// signature must be the one the reader sent (so a signature never makes the server do
/// more than sign and diff honestly), and the delta must be smaller than the frame.
pub(crate) async fn deltas(
    shard: &Rc<Shard>,
    user: &User,
    held: &[Option<Held>],
    answers: &[(BlockHash, RetrieveStatus, Option<BlockBytes>)],
) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
    let mut out: Vec<Option<Vec<u8>>> = vec![None; answers.len()];
    let wanted: Vec<(usize, &Held)> = held
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((i, h.as_ref()?)))
        .filter(|(i, _)| answers[*i].2.is_some())
        .collect();
    let jids = base_rows(shard, &wanted).await?;
    let readable: Vec<(usize, &Held, Jid)> = wanted
        .iter()
        .zip(jids)
        .filter_map(|((i, h), jid)| Some((*i, *h, jid?)))
        .collect();
    for group in readable.chunks(BLOCKS_PER_READ) {
        let items = group
            .iter()
            .map(|(_, h, jid)| RetrieveItem {
                ns: h.ns,
                path: h.path.clone(),
                jid: Some(*jid),
                prefetch: false,
                hashes: vec![h.base],
                signatures: BTreeMap::new(),
                bases: BTreeMap::new(),
            })
            .collect();
        let read = retrieve(shard, user, items, Duration::ZERO, true).await?;
        for ((i, h, _), (_, _, base)) in group.iter().zip(read) {
            let (Some(base), Some(data)) = (base, answers[*i].2.as_ref()) else {
                continue;
            };
            out[*i] = delta_answer(shard, h, &base.pieces.contiguous(), data);
        }
    }
    Ok(out)
}

/// Per held base, the row of its path listing it: the latest, or one of the
/// [`BASE_VERSIONS_MAX`] versions before it still within the history retention. Asked of
/// each namespace's owner.
async fn base_rows(
    shard: &Rc<Shard>,
    wanted: &[(usize, &Held)],
) -> Result<Vec<Option<Jid>>, ApiError> {
    let mut by_owner: BTreeMap<usize, Vec<(usize, NsId, String, BlockHash)>> = BTreeMap::new();
    for (k, (_, h)) in wanted.iter().enumerate() {
        by_owner
            .entry(shard_of_namespace(h.ns, shard.shards()))
            .or_default()
            .push((k, h.ns, h.path.clone(), h.base));
    }
    let asked = by_owner.into_iter().map(|(owner, list)| {
        shard.submit_to(owner, move |s| {
            let s = s.clone();
            async move {
                let mut found = Vec::with_capacity(list.len());
                for (k, ns, path, base) in list {
                    found.push((k, base_row_here(&s, ns, &path, &base).await?));
                }
                Ok::<_, ApiError>(found)
            }
        })
    });
    let mut jids = vec![None; wanted.len()];
    for answered in futures::future::join_all(asked).await {
        for (k, jid) in answered?? {
            jids[k] = jid;
        }
    }
    Ok(jids)
}

/// Versions of a path, newest first, searched for a held base.
const BASE_VERSIONS_MAX: usize = 16;

/// On the namespace's owner: the newest row of `path` (within the retention, at most
/// [`BASE_VERSIONS_MAX`] back) that is a file listing `base`.
async fn base_row_here(
    shard: &Shard,
    ns: NsId,
    path: &str,
    base: &BlockHash,
) -> Result<Option<Jid>, ApiError> {
    let lists =
        |row: &Row| row.version.kind == EntryKind::File && row.version.blocklist.contains(base);
    if let Some(row) = shard.journal().state().latest(ns, path) {
        if lists(row) {
            return Ok(Some(row.jid));
        }
    }
    let cutoff_ms = shard.history_cutoff_ms();
    let mut walk = shard.journal().retained_history(ns, path, cutoff_ms);
    for _ in 0..BASE_VERSIONS_MAX {
        match walk.next().await? {
            Some(row) if lists(&row) => return Ok(Some(row.jid)),
            Some(_) => {}
            None => break,
        }
    }
    Ok(None)
}

/// The delta that rebuilds `data`'s block from `base`, when the reader's signature is the
/// base's own and the delta is smaller than the bytes the answer would otherwise carry.
fn delta_answer(shard: &Shard, held: &Held, base: &[u8], data: &BlockBytes) -> Option<Vec<u8>> {
    let block_len = data.block_len();
    if block_len < delta::DELTA_BLOCK_BYTES_MIN {
        return None;
    }
    let signature = delta::signature_of(base);
    if signature != held.signature {
        return None;
    }
    let wire_max = match data.form {
        Form::Raw => block_len - 1,
        Form::Zstd { .. } => data.pieces.len().saturating_sub(1),
    };
    let block = match data.clone().expanded() {
        Ok(block) => block,
        // Left to the frame as kept: the reader checks every block it takes.
        Err(_) => return None,
    };
    let block = block.contiguous();
    if !delta::worth_diffing(&signature, &block) {
        return None;
    }
    let signature = delta::parse_signature(signature).ok()?;
    let made = delta::delta_of(&signature, &block, wire_max);
    if made.is_some() {
        shard.metrics().delta_served(1);
    }
    made
}
