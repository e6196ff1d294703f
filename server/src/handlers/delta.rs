//! rsync deltas (feature `delta`) that read bases: `POST /v1/signatures` and the
//! store_delta frames of store_batch (retrieve answers made deltas: `delta_answers`).
//!
//! Every base is a block the caller may read by retrieve_batch's rule, and is read through
//! it: a signature is of a block the named row lists, and a store_delta frame rebuilds its
//! block only from a block of the row it names, which must be its path's latest (naming a
//! block by hash alone would tell whether anyone stored it). A rebuilt block counts only
//! once it hashes to its name. Work per request is bounded: at most
//! [`SIGNATURE_HASHES_MAX`] signatures, [`DELTA_FRAMES_MAX`] store_delta frames, bases read
//! two at a time (the batch limit), and deltas answered only within the batch limit.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use holdall_engine::journal::state::User;
use holdall_proto::api::{EntryKind, RetrieveItem, SignaturesRequest};
use holdall_proto::delta::{self, BaseRef, BASE_REF_BYTES};
use holdall_proto::frame::{retrieve_frame_header, StoreHeader};
use holdall_proto::pieces::{Framed, Pieces};
use holdall_proto::BlockHash;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::block_bytes::BlockBytes;
use crate::body::Body;
use crate::handlers::retrieve::{retrieve, BLOCKS_PER_READ};
use crate::reply::{binary, ApiError};
use crate::request::read_json;
use crate::shard::{shard_of_namespace, Shard};

/// Most hashes one `POST /v1/signatures` asks for: each costs a block read and an MD4 pass
/// over it (about 7 ms for 4 MiB).
pub const SIGNATURE_HASHES_MAX: usize = 32;
/// Most store_delta frames in one store_batch: each reads its base, up to 4 MiB.
pub const DELTA_FRAMES_MAX: usize = 16;
/// Largest `POST /v1/signatures` body.
const SIGNATURES_BODY_BYTES_MAX: usize = 64 << 10;

fn no_deltas() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "this server does not offer deltas (no \"delta\" in its features)",
    )
}

/// `POST /v1/signatures`: retrieve frames whose bytes are each block's signature.
pub async fn signatures(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !shard.deltas() {
        return Err(no_deltas());
    }
    let body: SignaturesRequest = read_json(req, SIGNATURES_BODY_BYTES_MAX).await?;
    if body.hashes.len() > SIGNATURE_HASHES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_hashes",
            format!(
                "{} hashes; one signatures request asks for at most {SIGNATURE_HASHES_MAX}",
                body.hashes.len()
            ),
        ));
    }
    let mut chunks = Vec::with_capacity(body.hashes.len() * 2);
    for part in body.hashes.chunks(BLOCKS_PER_READ) {
        let item = RetrieveItem {
            ns: body.ns,
            path: body.path.clone(),
            jid: body.jid,
            prefetch: false,
            hashes: part.to_vec(),
            signatures: BTreeMap::new(),
            bases: BTreeMap::new(),
        };
        for (hash, status, data) in retrieve(shard, user, vec![item], Duration::ZERO, true).await? {
            let signature =
                data.map_or_else(Vec::new, |d| delta::signature_of(&d.pieces.contiguous()));
            if !signature.is_empty() {
                shard.metrics().signatures_served(1);
            }
            let header = retrieve_frame_header(&hash, status, signature.len() as u32);
            chunks.push(Bytes::copy_from_slice(&header));
            chunks.push(Bytes::from(signature));
        }
    }
    Ok(binary(Body::from_chunks(chunks)))
}

/// For store_batch: rebuilds the block of each store_delta frame from its base, checks
/// its hash, and returns them raw. The first frame that fails refuses the batch (400, the
/// block named), before anything is stored.
pub(crate) async fn rebuild(
    shard: &Rc<Shard>,
    user: &User,
    frames: Vec<Framed>,
) -> Result<Vec<(BlockHash, BlockBytes)>, ApiError> {
    if frames.is_empty() {
        return Ok(Vec::new());
    }
    refuse_unless_taken(shard, &frames)?;
    let parsed = frames
        .iter()
        .map(|frame| {
            let payload = frame.pieces.contiguous().into_owned();
            let (base, _) = BaseRef::split(&payload)
                .map_err(|e| refusal("bad_delta", frame.header.hash, &e.to_string()))?;
            Ok((frame.header, base, payload))
        })
        .collect::<Result<Vec<Parsed>, ApiError>>()?;
    let bases: Vec<BaseRef> = parsed.iter().map(|(_, b, _)| *b).collect();
    let paths = base_paths(shard, user, &bases).await?;
    let mut rebuilt = Vec::with_capacity(parsed.len());
    for (group, paths) in parsed
        .chunks(BLOCKS_PER_READ)
        .zip(paths.chunks(BLOCKS_PER_READ))
    {
        let read = retrieve(shard, user, base_items(group, paths)?, Duration::ZERO, true).await?;
        for ((header, base, payload), (_, _, data)) in group.iter().zip(read) {
            let base_block =
                data.ok_or_else(|| refusal("bad_delta_base", header.hash, &base_gone(base)))?;
            let delta_bytes = &payload[BASE_REF_BYTES..];
            let block = apply_one(header, &base_block.pieces.contiguous(), delta_bytes)?;
            rebuilt.push((
                header.hash,
                BlockBytes::raw(Pieces::from(Bytes::from(block))),
            ));
        }
    }
    Ok(rebuilt)
}

/// A store_delta frame parsed: its header, its base, its payload (the base reference,
/// then the delta).
type Parsed = (StoreHeader, BaseRef, Vec<u8>);

/// 400 if this server takes no deltas, 413 past [`DELTA_FRAMES_MAX`].
fn refuse_unless_taken(shard: &Shard, frames: &[Framed]) -> Result<(), ApiError> {
    if !shard.deltas() {
        let why = "is a delta, and this server takes none";
        return Err(refusal("bad_frame", frames[0].header.hash, why));
    }
    if frames.len() > DELTA_FRAMES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} store_delta frames; one store_batch carries at most {DELTA_FRAMES_MAX}",
                frames.len()
            ),
        ));
    }
    Ok(())
}

/// The retrieve items that read `group`'s bases from their rows (`paths`, found readable,
/// per base); 400 for the first base found unreadable.
fn base_items(group: &[Parsed], paths: &[Option<String>]) -> Result<Vec<RetrieveItem>, ApiError> {
    group
        .iter()
        .zip(paths)
        .map(|((header, base, _), path)| {
            let path = path
                .clone()
                .ok_or_else(|| refusal("bad_delta_base", header.hash, &base_gone(base)))?;
            Ok(RetrieveItem {
                ns: base.ns,
                path,
                jid: Some(base.jid),
                prefetch: false,
                hashes: vec![base.hash],
                signatures: BTreeMap::new(),
                bases: BTreeMap::new(),
            })
        })
        .collect()
}

/// The block `delta` rebuilds from `base` for the frame of `header`, once it has the
/// declared length and hashes to its name.
fn apply_one(header: &StoreHeader, base: &[u8], delta: &[u8]) -> Result<Vec<u8>, ApiError> {
    let block = delta::apply(base, delta, header.raw_len as usize)
        .map_err(|e| refusal("bad_delta", header.hash, &e.to_string()))?;
    if BlockHash::of(&block) != header.hash {
        let why = "rebuilt from its base and delta, does not hash to its name";
        return Err(refusal("hash_mismatch", header.hash, why));
    }
    Ok(block)
}

fn base_gone(base: &BaseRef) -> String {
    format!(
        "names base {} of row {} in namespace {}, which is not the latest row of a file you can read listing it",
        base.hash, base.jid, base.ns
    )
}

fn refusal(code: &'static str, hash: BlockHash, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        code,
        format!("block {hash} {why}; nothing in this batch was kept"),
    )
}

/// Per base, the path of its row if the caller may read it there: a namespace the caller
/// reaches, a row still its path's latest, a file listing the base. Asked of each
/// namespace's owner.
async fn base_paths(
    shard: &Rc<Shard>,
    user: &User,
    bases: &[BaseRef],
) -> Result<Vec<Option<String>>, ApiError> {
    let namespaces = crate::handlers::access::namespaces_of(&shard.directory(), user);
    let mut by_owner: BTreeMap<usize, Vec<(usize, BaseRef)>> = BTreeMap::new();
    for (i, base) in bases.iter().enumerate() {
        if namespaces.contains(&base.ns) {
            by_owner
                .entry(shard_of_namespace(base.ns, shard.shards()))
                .or_default()
                .push((i, *base));
        }
    }
    let asked = by_owner.into_iter().map(|(owner, list)| {
        shard.submit_to(owner, move |s| {
            let state = s.journal().state();
            let found: Vec<(usize, Option<String>)> = list
                .into_iter()
                .map(|(i, base)| {
                    let path = state
                        .row(base.ns, base.jid)
                        .filter(|r| r.version.kind == EntryKind::File)
                        .filter(|r| r.version.blocklist.contains(&base.hash))
                        .map(|r| r.path.clone());
                    (i, path)
                })
                .collect();
            std::future::ready(found)
        })
    });
    let mut paths = vec![None; bases.len()];
    for answered in futures::future::join_all(asked).await {
        for (i, path) in answered? {
            paths[i] = path;
        }
    }
    Ok(paths)
}
