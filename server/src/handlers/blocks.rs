//! The block routes: `POST /v1/store_batch`.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use holdall_engine::block_log::{Form, PutOutcome};
use holdall_engine::journal::record::UserId;
use holdall_engine::journal::state::User;
use holdall_proto::api::StoreBatchResponse;
use holdall_proto::frame::FrameError;
use holdall_proto::limits::BATCH_BYTES_DEFAULT;
use holdall_proto::BlockHash;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::block_bytes::BlockBytes;
use crate::body::Body;
use crate::reply::{json, ApiError};
use crate::request::read_chunks;
use crate::shard::{shard_of_block, Blocks, Shard};
use holdall_proto::pieces::{FrameSplitter, Framed};

/// Room for frame headers on top of the payload limit: 36 bytes a frame, so about 116,000
/// frames (many tiny blocks) fit.
const FRAME_HEADERS_BYTES_MAX: usize = 4 << 20;

fn frame_error(e: FrameError) -> ApiError {
    match e {
        FrameError::BlockTooLarge { .. } | FrameError::BatchTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "bad_frame", e.to_string()),
    }
}

/// On the blocks' owner: checks each frame's block against its hash, expanding it first if
/// it came compressed (never past its declared length; the expansion is dropped, as the
/// block is kept compressed). The first frame that fails refuses all.
fn check_frames(frames: Vec<Framed>) -> Result<(), ApiError> {
    let refuse = |code, hash: BlockHash, why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("block {hash} {why}; nothing in this batch was kept"),
        )
    };
    for frame in frames {
        let header = frame.header;
        let hash = match block_bytes(frame).expanded() {
            Ok(raw) => raw.hash(),
            Err(_) => {
                return Err(refuse(
                    "bad_frame",
                    header.hash,
                    "does not decompress to its declared length",
                ))
            }
        };
        if hash != header.hash {
            return Err(refuse(
                "hash_mismatch",
                header.hash,
                "does not hash to its name",
            ));
        }
    }
    Ok(())
}

/// A frame's block as it came: raw, or compressed with its declared length.
fn block_bytes(frame: Framed) -> BlockBytes {
    BlockBytes {
        pieces: frame.pieces,
        form: match frame.header.zstd {
            true => Form::Zstd {
                block_len: frame.header.raw_len,
            },
            false => Form::Raw,
        },
    }
}

/// 400 if a frame is compressed and this server offers no compression.
fn refuse_compressed_unless_offered(shard: &Shard, frames: &[Framed]) -> Result<(), ApiError> {
    match frames.iter().find(|f| f.header.zstd) {
        Some(f) if !shard.compression() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_frame",
            format!(
                "block {} is zstd-compressed, and this server takes no compression",
                f.header.hash
            ),
        )),
        _ => Ok(()),
    }
}

/// `POST /v1/store_batch`: rebuilds store_delta frames' blocks from their bases, checks
/// every frame and every block's hash (on the block's own shard) before storing any, so a
/// rejected batch keeps nothing; answers once durable.
pub async fn store_batch(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let format = crate::handlers::frames::frame_format(shard, &req)?;
    let mut splitter = FrameSplitter::with_format(BATCH_BYTES_DEFAULT as u64, format);
    read_chunks(
        req,
        BATCH_BYTES_DEFAULT + FRAME_HEADERS_BYTES_MAX,
        |chunk| splitter.push(chunk).map_err(frame_error),
    )
    .await?;
    let frames = splitter.finish().map_err(frame_error)?;
    let order: Vec<BlockHash> = frames.iter().map(|f| f.header.hash).collect();
    let (deltas, frames): (Vec<Framed>, Vec<Framed>) =
        frames.into_iter().partition(|f| f.header.delta);
    refuse_compressed_unless_offered(shard, &frames)?;
    // Rebuilt and checked against their names first: a bad delta refuses the batch.
    let rebuilt = crate::handlers::delta::rebuild(shard, user, deltas).await?;
    let mut by_owner: BTreeMap<usize, Vec<Framed>> = BTreeMap::new();
    for frame in frames {
        by_owner
            .entry(shard_of_block(&frame.header.hash, shard.shards()))
            .or_default()
            .push(frame);
    }
    // Phase one, on every owner at once: check every hash (of compressed blocks, once
    // expanded). The owners get refcounted slices of the frames; nothing comes back.
    let checks = by_owner.iter().map(|(owner, frames)| {
        let frames = frames.clone();
        shard.submit_to(*owner, move |_| std::future::ready(check_frames(frames)))
    });
    for checked in futures::future::join_all(checks).await {
        checked??;
    }
    // Phase two: store them as they came, compressed or not, and the rebuilt ones raw.
    let mut by_owner: BTreeMap<usize, Blocks> = by_owner
        .into_iter()
        .map(|(owner, frames)| {
            let blocks = frames
                .into_iter()
                .map(|f| (f.header.hash, block_bytes(f)))
                .collect();
            (owner, blocks)
        })
        .collect();
    let rebuilt_count = rebuilt.len() as u64;
    for (hash, block) in rebuilt {
        by_owner
            .entry(shard_of_block(&hash, shard.shards()))
            .or_default()
            .push((hash, block));
    }
    let mut outcome = put_verified(shard, user.id, by_owner).await?;
    shard.metrics().delta_stored(rebuilt_count);
    let mut response = StoreBatchResponse {
        stored: Vec::new(),
        present: Vec::new(),
    };
    for hash in order {
        match outcome.remove(&hash) {
            Some(PutOutcome::Stored) => response.stored.push(hash),
            Some(PutOutcome::Present) => response.present.push(hash),
            None => {}
        }
    }
    Ok(json(StatusCode::OK, &response))
}

/// Stores blocks whose hashes were checked, each on its owner (`by_owner`), as uploaded by
/// `uploader`; what each put found. Answers once every block is durable.
pub(crate) async fn put_verified(
    shard: &Rc<Shard>,
    uploader: UserId,
    by_owner: BTreeMap<usize, Blocks>,
) -> Result<HashMap<BlockHash, PutOutcome>, ApiError> {
    let puts = by_owner.into_iter().map(|(owner, blocks)| async move {
        let hashes: Vec<BlockHash> = blocks.iter().map(|(h, _)| *h).collect();
        shard
            .submit_to(owner, move |s| {
                let s = s.clone();
                async move { s.put_blocks(blocks, uploader).await }
            })
            .await?
            .map(|outcomes| hashes.into_iter().zip(outcomes).collect::<Vec<_>>())
    });
    let mut outcome: HashMap<BlockHash, PutOutcome> = HashMap::new();
    for result in futures::future::join_all(puts).await {
        for (hash, o) in result? {
            // A block named twice in one batch is written once: stored wins.
            if o == PutOutcome::Stored || !outcome.contains_key(&hash) {
                outcome.insert(hash, o);
            }
        }
    }
    // Uploads in progress stay young in the prefetch tables, so the bounds evict idle
    // entries first. The entries live on their namespaces' shards, unknown here: ask all.
    let arrived: Vec<BlockHash> = outcome.keys().copied().collect();
    let shards = if shard.streaming() { shard.shards() } else { 0 };
    let touches = (0..shards).map(|to| {
        let arrived = arrived.clone();
        shard.submit_to(to, move |s| {
            let now = std::time::Instant::now();
            s.prefetch_mut().touch_uploads(uploader, &arrived, now);
            std::future::ready(())
        })
    });
    for touched in futures::future::join_all(touches).await {
        touched?;
    }
    Ok(outcome)
}
