//! Downloads of changed blocks as rsync deltas (the server's `delta` feature): the plan
//! and the rebuilding; `reconstruct` sends the requests and writes what they rebuild.
//!
//! Only where deltas pay: a block wanted from the server whose position in the file held
//! another block locally (the file at the same path, synced before, its blocklist known
//! and that block still hashing right), both at least [`DELTA_BLOCK_BYTES_MIN`]. Its
//! signature goes in the retrieve item; the answer is a delta against it, or the block
//! itself where the server found no saving. A block rebuilt counts only if it hashes to its
//! name; anything else is fetched whole afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use holdall_proto::api::{Jid, NsId, RetrieveBatchRequest, RetrieveItem};
use holdall_proto::delta::{apply, signature_of, DELTA_BLOCK_BYTES_MIN};
use holdall_proto::frame::RetrieveStatus;
use holdall_proto::limits::{BLOCK_BYTES_MAX, RETRIEVE_HASHES_MAX};
use holdall_proto::retrieved::Frame;
use holdall_proto::BlockHash;

use crate::local::read::{read_block, read_unchanged};

/// A wanted block asked for with the signature of the local block it replaces.
pub struct Asked {
    /// The block wanted.
    pub hash: BlockHash,
    /// Its length.
    pub len: u64,
    /// The fetch it is asked in.
    fetch: usize,
    /// The local block it replaces: file, offset, length, hash.
    base: (PathBuf, u64, usize, BlockHash),
    signature: Vec<u8>,
}

/// The local file a fetch replaces, as synced: its path, blocklist and size.
pub type Synced<'a> = (&'a Path, &'a [BlockHash], u64);

/// The wanted blocks (`owner_order`: fetch, hash, length; `position`: the block's offset
/// in that fetch's file; `synced`: the file the fetch replaces) that replace a local block
/// at their position, each with that block's signature.
pub fn plan<'a>(
    owner_order: &[(usize, BlockHash, u64)],
    position: impl Fn(usize, &BlockHash) -> Option<u64>,
    synced: impl Fn(usize) -> Option<Synced<'a>>,
) -> Vec<Asked> {
    let mut out = Vec::new();
    for &(i, hash, len) in owner_order {
        if (len as usize) < DELTA_BLOCK_BYTES_MIN {
            continue;
        }
        let Some(offset) = position(i, &hash) else {
            continue;
        };
        let Some((path, blocklist, size)) = synced(i) else {
            continue;
        };
        let j = (offset / BLOCK_BYTES_MAX as u64) as usize;
        let Some(old) = blocklist.get(j).filter(|old| **old != hash) else {
            continue;
        };
        let old_len = (size.saturating_sub(offset)).min(BLOCK_BYTES_MAX as u64) as usize;
        if old_len < DELTA_BLOCK_BYTES_MIN {
            continue;
        }
        let Some(base) = read_block(path, offset, old_len, old) else {
            continue;
        };
        out.push(Asked {
            hash,
            len,
            fetch: i,
            signature: signature_of(&base),
            base: (path.to_path_buf(), offset, old_len, *old),
        });
    }
    out
}

/// The asked blocks in retrieve_batch requests of at most `batch_bytes_max` of blocks, by
/// the row each fetch reads (`row`), each with its payload and the indexes (into `asked`)
/// it carries.
pub fn requests(
    asked: &[Asked],
    batch_bytes_max: u64,
    row: impl Fn(usize) -> (NsId, String, Jid),
) -> Vec<(RetrieveBatchRequest, u64, Vec<usize>)> {
    let mut groups: Vec<(Vec<RetrieveItem>, u64, Vec<usize>)> = Vec::new();
    for (k, a) in asked.iter().enumerate() {
        let fits = groups.last().is_some_and(|(_, payload, carried)| {
            payload + a.len <= batch_bytes_max && carried.len() < RETRIEVE_HASHES_MAX
        });
        if !fits {
            groups.push(Default::default());
        }
        let Some((items, payload, carried)) = groups.last_mut() else {
            continue;
        };
        let (ns, path, jid) = row(a.fetch);
        let same = |item: &RetrieveItem| item.ns == ns && item.path == path;
        if !items.last().is_some_and(same) {
            items.push(RetrieveItem {
                ns,
                path,
                jid: Some(jid),
                prefetch: false,
                hashes: Vec::new(),
                signatures: BTreeMap::new(),
                bases: BTreeMap::new(),
            });
        }
        if let Some(item) = items.last_mut() {
            item.hashes.push(a.hash);
            item.signatures.insert(a.hash, a.signature.clone());
            item.bases.insert(a.hash, a.base.3);
        }
        *payload += a.len;
        carried.push(k);
    }
    groups
        .into_iter()
        .map(|(items, payload, carried)| {
            let request = RetrieveBatchRequest {
                items,
                wait_ms: None,
            };
            (request, payload, carried)
        })
        .collect()
}

/// The block an answer frame gives for `asked`: rebuilt from the local base if it is a
/// delta, else as sent; only if it hashes to its name.
pub fn rebuilt(asked: &Asked, frame: &Frame) -> Option<Vec<u8>> {
    if frame.status != RetrieveStatus::Ok || frame.hash != asked.hash {
        return None;
    }
    let block = match frame.delta {
        Some(len) => {
            // Read as it is now, not hashed again: a base that changed since the plan
            // hashed it rebuilds a block that fails the check below.
            let (path, offset, len_base, _) = &asked.base;
            let mut base = vec![0u8; *len_base];
            read_unchanged(path, *offset, &mut base, None).then_some(())?;
            apply(&base, frame.payload.data(), len).ok()?
        }
        None => frame.payload.data().to_vec(),
    };
    (BlockHash::of(&block) == asked.hash).then_some(block)
}
