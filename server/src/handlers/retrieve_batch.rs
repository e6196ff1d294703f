//! `POST /v1/retrieve_batch` and `GET /v1/blocks/{hash}`: the read routes. What may be
//! read and how is `retrieve`'s; the frames (format 1 or 2, blocks as kept, or deltas
//! against what the reader holds: `delta_answers`) are made here.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use holdall_engine::block_log::Form;
use holdall_engine::journal::state::User;
use holdall_proto::api::{Jid, NsId, RetrieveBatchRequest, RetrieveItem};
use holdall_proto::frame::{
    retrieve_delta_header, retrieve_frame_header, retrieve_frame_header_v2, FrameFormat,
    RetrieveStatus,
};
use holdall_proto::limits::{RETRIEVE_HASHES_MAX, RETRIEVE_WAIT_MS_MAX};
use holdall_proto::BlockHash;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::handlers::delta_answers::{asked_bases, deltas};
use crate::handlers::retrieve::retrieve;
use crate::reply::{binary, ApiError};
use crate::request::read_json;
use crate::shard::Shard;

/// Largest retrieve_batch body: 10,000 hashes with their items' paths (and, for deltas,
/// signatures of up to two blocks' worth of bases, 24 KiB each in base64).
const RETRIEVE_BODY_BYTES_MAX: usize = 8 << 20;

/// `POST /v1/retrieve_batch`.
pub async fn retrieve_batch(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let format = crate::handlers::frames::frame_format(shard, &req)?;
    let mut body: RetrieveBatchRequest = read_json(req, RETRIEVE_BODY_BYTES_MAX).await?;
    let asked: usize = body.items.iter().map(|i| i.hashes.len()).sum();
    if asked > RETRIEVE_HASHES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_hashes",
            format!("{asked} hashes; one retrieve_batch asks for at most {RETRIEVE_HASHES_MAX}"),
        ));
    }
    let wait = Duration::from_millis(body.wait_ms.unwrap_or(0).min(RETRIEVE_WAIT_MS_MAX));
    let held = asked_bases(shard, &mut body.items, format == FrameFormat::V2)?;
    // Format 1 takes blocks as themselves; format 2 as they are kept, compressed or not
    // (unless this server offers no compression).
    let expand = format == FrameFormat::V1 || !shard.compression();
    let answers = retrieve(shard, user, body.items, wait, expand).await?;
    let deltas = deltas(shard, user, &held, &answers).await?;
    let mut chunks = Vec::with_capacity(answers.len() * 2);
    for ((hash, status, data), delta) in answers.into_iter().zip(deltas) {
        if let (Some(delta), Some(d)) = (delta, data.as_ref()) {
            let (raw_len, wire_len) = (d.block_len() as u32, delta.len() as u32);
            chunks.push(Bytes::copy_from_slice(&retrieve_delta_header(
                &hash, raw_len, wire_len,
            )));
            chunks.push(Bytes::from(delta));
            continue;
        }
        let wire_len = data.as_ref().map_or(0, |d| d.pieces.len() as u32);
        let header = match (format, data.as_ref().map(|d| d.form)) {
            (FrameFormat::V1, _) => {
                Bytes::copy_from_slice(&retrieve_frame_header(&hash, status, wire_len))
            }
            (FrameFormat::V2, Some(Form::Zstd { block_len })) => {
                shard.metrics().compressed_served(1);
                Bytes::copy_from_slice(&retrieve_frame_header_v2(
                    &hash,
                    status,
                    (block_len, wire_len, true),
                ))
            }
            (FrameFormat::V2, _) => Bytes::copy_from_slice(&retrieve_frame_header_v2(
                &hash,
                status,
                (wire_len, wire_len, false),
            )),
        };
        chunks.push(header);
        chunks.extend(data.into_iter().flat_map(|d| d.pieces));
    }
    Ok(binary(Body::from_chunks(chunks)))
}

/// `GET /v1/blocks/{hash}?ns=&path=[&jid=]`.
pub async fn get_block(
    shard: &Rc<Shard>,
    user: &User,
    hash: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let bad = |code: &'static str, m: String| ApiError::new(StatusCode::BAD_REQUEST, code, m);
    let hash = BlockHash::from_hex(hash).map_err(|e| bad("bad_hash", e.to_string()))?;
    let (mut ns, mut path, mut jid) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "ns" => {
                ns = Some(
                    v.parse::<NsId>()
                        .map_err(|_| bad("bad_query", format!("ns={v:?} is not a namespace id")))?,
                )
            }
            "path" => path = Some(v.into_owned()),
            "jid" => {
                jid = Some(
                    v.parse::<Jid>()
                        .map_err(|_| bad("bad_query", format!("jid={v:?} is not a JID")))?,
                )
            }
            _ => return Err(bad("bad_query", format!("unknown query parameter {k:?}"))),
        }
    }
    let (Some(ns), Some(path)) = (ns, path) else {
        return Err(bad("bad_query", "ns and path are required".into()));
    };
    let item = RetrieveItem {
        ns,
        path,
        jid,
        prefetch: false,
        hashes: vec![hash],
        signatures: Default::default(),
        bases: Default::default(),
    };
    let answer = retrieve(shard, user, vec![item], Duration::ZERO, true)
        .await?
        .pop();
    match answer {
        Some((_, RetrieveStatus::Ok, Some(data))) => {
            Ok(binary(Body::from_chunks(data.pieces.into_iter().collect())))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no block {hash} in that file"),
        )),
    }
}
