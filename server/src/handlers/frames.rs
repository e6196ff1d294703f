//! Which block frame format a request speaks (`Holdall-Frame-Format`), for store_batch and
//! retrieve_batch alike.

use holdall_proto::frame::{FrameFormat, FRAME_FORMAT_HEADER};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::reply::ApiError;
use crate::shard::Shard;

/// The frame format the request asks for (`Holdall-Frame-Format`, 1 when absent); format 2
/// only where the server offers compression or deltas (each frame's flags are checked
/// against what it offers).
pub fn frame_format(shard: &Shard, req: &Request<Incoming>) -> Result<FrameFormat, ApiError> {
    let Some(value) = req.headers().get(FRAME_FORMAT_HEADER) else {
        return Ok(FrameFormat::V1);
    };
    let refuse = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_frame_format", m);
    match value.to_str().ok().and_then(FrameFormat::from_header) {
        None => Err(refuse("Holdall-Frame-Format must be 1 or 2")),
        Some(FrameFormat::V2) if !shard.compression() && !shard.deltas() => Err(refuse(
            "this server offers neither compression nor deltas (no features): use frame format 1",
        )),
        Some(format) => Ok(format),
    }
}
