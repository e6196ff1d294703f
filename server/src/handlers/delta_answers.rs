//! Retrieve answers made deltas (feature `delta`): a format-2 retrieve_batch item may carry,
//! per hash, the signature of the block the reader holds in its place; the block is then
//! answered as a delta against it when that is smaller than what the frame would carry.
//! Signatures are checked before anything is read, and deltas are computed only for blocks
//! the batch limit already admits.

use std::borrow::Cow;

use holdall_engine::block_log::Form;
use holdall_proto::api::RetrieveItem;
use holdall_proto::delta;
use holdall_proto::pieces::Pieces;
use hyper::StatusCode;

use crate::block_bytes::BlockBytes;
use crate::reply::ApiError;
use crate::shard::Shard;

/// A block's bytes in one slice: as they are when they are one part (read from the log or
/// the cache), gathered otherwise.
pub(crate) fn contiguous(pieces: &Pieces) -> Cow<'_, [u8]> {
    match pieces.parts() {
        [one] => Cow::Borrowed(&one[..]),
        parts => Cow::Owned(parts.concat()),
    }
}

/// The signatures of a retrieve_batch's items, one per answer (in the items' hash order),
/// checked before anything is read; none when the request is not format 2 or deltas are off.
pub(crate) fn asked_signatures(
    shard: &Shard,
    items: &mut [RetrieveItem],
    format_two: bool,
) -> Result<Vec<Option<delta::Signature>>, ApiError> {
    let mut out = Vec::new();
    for item in items.iter_mut() {
        let mut signatures = std::mem::take(&mut item.signatures);
        for hash in &item.hashes {
            let asked = match signatures.remove(hash) {
                Some(s) if format_two && shard.deltas() => s,
                _ => {
                    out.push(None);
                    continue;
                }
            };
            let signature = delta::parse_signature(asked).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_signature",
                    format!("the signature sent for block {hash}: {e}"),
                )
            })?;
            out.push(Some(signature));
        }
    }
    Ok(out)
}

/// The delta that rebuilds `data`'s block from the base `signature` describes, when it is
/// smaller than the bytes the answer would otherwise carry.
pub(crate) fn delta_answer(
    shard: &Shard,
    signature: &delta::Signature,
    data: &BlockBytes,
) -> Option<Vec<u8>> {
    let block_len = data.block_len();
    if block_len < delta::DELTA_BLOCK_BYTES_MIN {
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
    let made = delta::delta_of(signature, &contiguous(&block), wire_max);
    if made.is_some() {
        shard.metrics().delta_served(1);
    }
    made
}
