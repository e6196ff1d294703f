//! What every parser of untrusted bytes must do with any input: never panic, take no more
//! than it was given, and accept only what it can write back the same way. One function
//! per fuzz target of `fuzz/`; the corpus tests run the same functions over the corpora
//! and over mutations of valid inputs, so CI checks what the fuzzers found.
//!
//! Each function panics (which the fuzzer reports) when a property fails, and returns
//! whether the input was accepted (so tests can tell that valid inputs get past the checks).

pub mod crash;

use holdall_engine::block_log::{hint as segment_hint, record as block_record};
use holdall_engine::journal::record as journal_record;
use holdall_proto::api::{
    AddMemberRequest, CommitBatchRequest, CommitRequest, CreateNamespaceRequest, CreateUserRequest,
    DeletedRequest, HistoryRequest, ListRequest, LongpollRequest, RestoreRequest,
    RetrieveBatchRequest,
};
use holdall_proto::frame::{
    decode_retrieve_frames, decode_retrieve_header_of, decode_store_frames, encode_retrieve_frame,
    encode_store_frame, store_frame_header_v2, FrameFormat, RetrieveStatus,
};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use holdall_proto::path::{parent, validate_path, validate_path_bytes};
use holdall_proto::pieces::FrameSplitter;
use holdall_proto::retrieved::Retrieved;
use holdall_proto::BlockHash;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A target's check: panics when a property fails; true when the input was accepted.
pub type Check = fn(&[u8]) -> bool;

/// The targets, by name: what `fuzz/fuzz_targets/<name>.rs` runs and `fuzz/corpus/<name>/`
/// feeds.
pub const TARGETS: &[(&str, Check)] = &[
    ("store_frames", store_frames),
    ("retrieve_frames", retrieve_frames),
    ("journal_record", journal_record),
    ("block_record", block_record),
    ("segment_hint", segment_hint),
    ("json_bodies", json_bodies),
    ("path", path),
    ("store_stream", store_stream),
    ("retrieve_stream", retrieve_stream),
    ("store_stream_v2", store_stream_v2),
    ("retrieve_stream_v2", retrieve_stream_v2),
    ("delta_apply", delta_apply),
];

/// A store_batch body: frames decode within the payload bound, each re-encodes to exactly
/// the bytes it came from, and decoding stops at the first error. Accepted: every frame
/// decoded.
pub fn store_frames(body: &[u8]) -> bool {
    let limit = BATCH_BYTES_DEFAULT as u64;
    let mut at = 0usize;
    let mut payload = 0u64;
    for frame in decode_store_frames(body, limit) {
        let Ok(frame) = frame else { return false };
        assert!(frame.data.len() <= BLOCK_BYTES_MAX, "frame over a block");
        payload += frame.data.len() as u64;
        assert!(payload <= limit, "payload over the bound");
        let mut again = Vec::new();
        encode_store_frame(&mut again, &frame.hash, frame.data);
        assert_eq!(&body[at..at + again.len()], &again[..], "not canonical");
        at += again.len();
    }
    assert_eq!(at, body.len(), "frames did not cover the body");
    true
}

/// A retrieve_batch answer: as [`store_frames`], with statuses.
pub fn retrieve_frames(body: &[u8]) -> bool {
    let limit = BATCH_BYTES_DEFAULT as u64;
    let mut at = 0usize;
    for frame in decode_retrieve_frames(body, limit) {
        let Ok(frame) = frame else { return false };
        assert!(frame.data.len() <= BLOCK_BYTES_MAX, "frame over a block");
        let mut again = Vec::new();
        encode_retrieve_frame(&mut again, &frame.hash, frame.status, frame.data);
        assert_eq!(&body[at..at + again.len()], &again[..], "not canonical");
        at += again.len();
    }
    assert_eq!(at, body.len(), "frames did not cover the body");
    true
}

/// Payload bound of the streaming targets: over one aligned block, small enough that a
/// fresh answer buffer per input stays cheap.
const STREAM_PAYLOAD_BYTES_MAX: u64 = 3 << 20;

/// The chunk lengths a body is cut into: pseudo-random from `seed`, up to a bound the seed
/// picks (one byte, around a frame header, a page, a socket read).
fn chunk_lens(seed: u8, total: usize) -> Vec<usize> {
    let max = [1, 3, 35, 36, 37, 512, 4096, 65_536][seed as usize % 8];
    let mut rng = fastrand::Rng::with_seed(seed as u64);
    let mut lens = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = rng.usize(1..=max).min(left);
        lens.push(n);
        left -= n;
    }
    lens
}

/// The production store_batch decoder (`FrameSplitter`, fed chunk by chunk as hyper hands
/// the body over) against the whole-body decoder: the first input byte picks the chunking,
/// the rest is the body. Both give the same blocks, or the same error. Accepted: a body
/// that decodes.
pub fn store_stream(data: &[u8]) -> bool {
    let Some((&seed, body)) = data.split_first() else {
        return false;
    };
    let whole: Result<Vec<(BlockHash, Vec<u8>)>, _> =
        decode_store_frames(body, STREAM_PAYLOAD_BYTES_MAX)
            .map(|f| f.map(|f| (f.hash, f.data.to_vec())))
            .collect();
    let bytes = bytes::Bytes::copy_from_slice(body);
    let mut splitter = FrameSplitter::new(STREAM_PAYLOAD_BYTES_MAX);
    let mut at = 0;
    let mut pushed = Ok(());
    for len in chunk_lens(seed, body.len()) {
        pushed = splitter.push(bytes.slice(at..at + len));
        at += len;
        if pushed.is_err() {
            break;
        }
    }
    let streamed = pushed.and_then(|()| splitter.finish()).map(|blocks| {
        blocks
            .into_iter()
            .map(|frame| {
                let pieces = frame.pieces;
                assert_eq!(pieces.hash(), BlockHash::of_pieces(pieces.parts()));
                (
                    frame.header.hash,
                    pieces.into_iter().flat_map(|p| p.to_vec()).collect(),
                )
            })
            .collect::<Vec<_>>()
    });
    assert!(
        streamed == whole,
        "the streaming decoder disagrees: {} against {}",
        summary(&streamed),
        summary(&whole)
    );
    whole.is_ok()
}

/// A format-2 store_batch body through the production decoder (`FrameSplitter`, chunked by
/// the first byte): each frame's bytes are as long as its header says, a raw frame's
/// lengths agree and a compressed one is smaller than its block, block bytes stay within
/// the bound, and the frames re-encode to exactly the body. Accepted: a body that decodes.
pub fn store_stream_v2(data: &[u8]) -> bool {
    let Some((&seed, body)) = data.split_first() else {
        return false;
    };
    let bytes = bytes::Bytes::copy_from_slice(body);
    let mut splitter = FrameSplitter::with_format(STREAM_PAYLOAD_BYTES_MAX, FrameFormat::V2);
    let mut at = 0;
    for len in chunk_lens(seed, body.len()) {
        if splitter.push(bytes.slice(at..at + len)).is_err() {
            return false;
        }
        at += len;
    }
    let Ok(frames) = splitter.finish() else {
        return false;
    };
    let mut again = Vec::with_capacity(body.len());
    let mut blocks_total = 0u64;
    for frame in frames {
        let h = frame.header;
        assert_eq!(
            frame.pieces.len(),
            h.wire_len as usize,
            "bytes unlike the header"
        );
        assert!(h.raw_len as usize <= BLOCK_BYTES_MAX, "a block over 4 MiB");
        assert!(if h.zstd {
            h.wire_len < h.raw_len
        } else {
            h.wire_len == h.raw_len
        });
        blocks_total += u64::from(h.raw_len);
        again.extend_from_slice(&store_frame_header_v2(&h));
        for part in frame.pieces.parts() {
            again.extend_from_slice(part);
        }
    }
    assert!(
        blocks_total <= STREAM_PAYLOAD_BYTES_MAX,
        "blocks over the bound"
    );
    assert_eq!(again, body, "not canonical");
    true
}

/// Decoded blocks, short enough for a failure message: each block's length, or the error.
fn summary<E: std::fmt::Display>(blocks: &Result<Vec<(BlockHash, Vec<u8>)>, E>) -> String {
    match blocks {
        Ok(b) => format!("{:?}", b.iter().map(|(_, d)| d.len()).collect::<Vec<_>>()),
        Err(e) => format!("error: {e}"),
    }
}

/// Hands out a body in the given read lengths, as a socket does.
struct Reads<'a> {
    body: &'a [u8],
    lens: std::vec::IntoIter<usize>,
}

impl std::io::Read for Reads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .lens
            .next()
            .unwrap_or(self.body.len())
            .min(buf.len())
            .min(self.body.len());
        buf[..n].copy_from_slice(&self.body[..n]);
        self.body = &self.body[n..];
        Ok(n)
    }
}

/// The production retrieve_batch decoder (`Retrieved`, reading from a socket) against the
/// whole-body decoder: the same frames up to the first bad one, and damage exactly when the
/// whole-body decoder finds an error, with its message. Accepted: an answer without damage.
pub fn retrieve_stream(data: &[u8]) -> bool {
    let Some((&seed, body)) = data.split_first() else {
        return false;
    };
    let mut whole = Vec::new();
    let mut error = None;
    for frame in decode_retrieve_frames(body, STREAM_PAYLOAD_BYTES_MAX) {
        match frame {
            Ok(f) => whole.push((f.hash, f.status, f.data.to_vec())),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let (answer, streamed, moved) = streamed_frames(body, seed, FrameFormat::V1);
    assert_eq!(
        streamed, whole,
        "the streaming decoder disagrees on the frames"
    );
    assert_eq!(
        answer.damage(),
        error.as_deref(),
        "the streaming decoder disagrees on damage"
    );
    if error.is_none() {
        assert_eq!(moved, body.len() as u64, "every byte counted once");
    }
    error.is_none()
}

/// A decoded retrieve frame: the hash, the status, the block.
type FrameSeen = (BlockHash, RetrieveStatus, Vec<u8>);

/// Frames of a retrieve answer as `Retrieved` reads them from `body` in `format`, in the
/// read lengths `seed` picks: the reader (for its damage), the frames, the bytes counted.
fn streamed_frames(body: &[u8], seed: u8, format: FrameFormat) -> (Retrieved, Vec<FrameSeen>, u64) {
    let mut reader = Reads {
        body,
        lens: chunk_lens(seed, body.len()).into_iter(),
    };
    let mut answer = Retrieved::default();
    let mut moved = 0u64;
    answer
        .read_from(
            &mut reader,
            format,
            STREAM_PAYLOAD_BYTES_MAX,
            usize::MAX,
            |n| moved += n,
        )
        .expect("a reader that never fails");
    let frames = answer
        .frames()
        .map(|f| (f.hash, f.status, f.payload.data().to_vec()))
        .collect();
    (answer, frames, moved)
}

/// A format-2 retrieve_batch answer (read in the chunk lengths the first byte picks)
/// through the production decoder (`Retrieved`), against a whole-body reference that
/// decodes each header and expands each compressed block with a bound: the same blocks up
/// to the first bad frame, damage exactly when the reference finds a bad frame, every
/// block exactly its declared length. Accepted: an answer without damage.
pub fn retrieve_stream_v2(data: &[u8]) -> bool {
    let Some((&seed, body)) = data.split_first() else {
        return false;
    };
    let (whole, bad) = retrieve_v2_reference(body);
    let (answer, streamed, moved) = streamed_frames(body, seed, FrameFormat::V2);
    assert!(
        streamed == whole,
        "the streaming decoder disagrees on the frames"
    );
    assert_eq!(
        answer.damage().is_some(),
        bad,
        "the streaming decoder disagrees on damage"
    );
    if !bad {
        assert_eq!(moved, body.len() as u64, "every byte counted once");
    }
    !bad
}

/// The frames of a format-2 answer decoded from the whole body, and whether a bad frame
/// stopped it.
fn retrieve_v2_reference(body: &[u8]) -> (Vec<FrameSeen>, bool) {
    let header_bytes = FrameFormat::V2.retrieve_header_bytes();
    let (mut frames, mut at, mut total) = (Vec::new(), 0, 0u64);
    while at < body.len() {
        let Some(header) = body.get(at..at + header_bytes) else {
            return (frames, true);
        };
        let Ok(h) = decode_retrieve_header_of(
            FrameFormat::V2,
            header,
            at,
            &mut total,
            STREAM_PAYLOAD_BYTES_MAX,
        ) else {
            return (frames, true);
        };
        let start = at + header_bytes;
        let Some(wire) = body.get(start..start + h.wire_len as usize) else {
            return (frames, true);
        };
        let block = match h.zstd {
            false => wire.to_vec(),
            true => match zstd::bulk::decompress(wire, h.len as usize) {
                Ok(b) if b.len() == h.len as usize => b,
                _ => return (frames, true),
            },
        };
        frames.push((h.hash, h.status, block));
        at = start + wire.len();
    }
    (frames, false)
}

/// The base the delta target applies its inputs to: 64 KiB of fixed noise.
pub fn delta_base() -> &'static [u8] {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let mut rng = fastrand::Rng::with_seed(64);
        (0..DELTA_BASE_BYTES).map(|_| rng.u8(..)).collect()
    })
}

/// Bytes of [`delta_base`].
pub const DELTA_BASE_BYTES: usize = 64 << 10;

/// A delta from a peer (the input after a u16 LE declaring the block's length in units of
/// 16 bytes, up to 1 MiB) applied to [`delta_base`]: never panics, and rebuilds a block of
/// exactly the declared length or refuses. The same bytes taken as a signature: refused, or
/// indexed and diffed against the base without panic. Accepted: the delta applied.
pub fn delta_apply(data: &[u8]) -> bool {
    let Some((len, delta)) = data.split_first_chunk::<2>() else {
        return false;
    };
    let declared = u16::from_le_bytes(*len) as usize * 16;
    let base = delta_base();
    if let Ok(signature) = holdall_proto::delta::parse_signature(delta.to_vec()) {
        let _ = holdall_proto::delta::delta_of(&signature, base, base.len());
    }
    match holdall_proto::delta::apply(base, delta, declared) {
        Ok(block) => {
            assert_eq!(
                block.len(),
                declared,
                "rebuilt another length than declared"
            );
            true
        }
        Err(_) => false,
    }
}

/// A journal record: decodes only within the input, and re-encodes (as the type it was) to
/// the same bytes; a version-1 record re-encodes as the current version and reads back the
/// same.
pub fn journal_record(bytes: &[u8]) -> bool {
    let Ok((record, len)) = journal_record::decode(bytes) else {
        return false;
    };
    assert!(len <= bytes.len(), "took more than it was given");
    let mut again = Vec::new();
    if bytes[5] == 6 {
        journal_record::encode_located(&record, &mut again);
    } else {
        journal_record::encode(&record, &mut again);
    }
    if bytes[4] == journal_record::VERSION {
        assert_eq!(&bytes[..len], &again[..], "not canonical");
    } else {
        let (back, _) = journal_record::decode(&again).expect("re-encoded record decodes");
        assert_eq!(back, record, "changed by re-encoding");
    }
    true
}

/// A block record or a segment header page: a record header that checks out stays within
/// a block's bounds, and a record whose payload passes its checksum opens without panic.
/// Accepted: a segment header, or a record that opens.
pub fn block_record(bytes: &[u8]) -> bool {
    if block_record::decode_segment_header(bytes).is_ok() {
        return true;
    }
    let Ok(header) = block_record::decode_header(bytes) else {
        return false;
    };
    assert!(
        header.payload_len as usize <= BLOCK_BYTES_MAX,
        "payload over a block"
    );
    assert!(
        header.stored_len >= header.payload_len,
        "stored less than the payload"
    );
    if block_record::check_payload(&header, bytes).is_err() {
        return false;
    }
    let mut out = Vec::new();
    block_record::open_record(bytes, &header.hash, None, &mut out).is_ok()
}

/// A segment hint file: decodes or refuses, never panics; what decodes re-encodes.
pub fn segment_hint(bytes: &[u8]) -> bool {
    let Ok(hint) = segment_hint::decode(bytes) else {
        return false;
    };
    let again = segment_hint::encode(hint.segment_id, hint.segment_len, &hint.entries);
    assert_eq!(bytes, &again[..], "not canonical");
    true
}

/// A JSON request body of any route: each request type either refuses it or reads a value
/// that writes back and reads again as the same value. Accepted: some type read it.
pub fn json_bodies(bytes: &[u8]) -> bool {
    [
        round_trip::<CommitRequest>(bytes),
        round_trip::<CommitBatchRequest>(bytes),
        round_trip::<ListRequest>(bytes),
        round_trip::<LongpollRequest>(bytes),
        round_trip::<RetrieveBatchRequest>(bytes),
        round_trip::<CreateUserRequest>(bytes),
        round_trip::<CreateNamespaceRequest>(bytes),
        round_trip::<AddMemberRequest>(bytes),
        round_trip::<HistoryRequest>(bytes),
        round_trip::<RestoreRequest>(bytes),
        round_trip::<DeletedRequest>(bytes),
    ]
    .contains(&true)
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<T>(bytes) else {
        return false;
    };
    let text = serde_json::to_vec(&value).expect("a value serde read writes back");
    let again: T = serde_json::from_slice(&text).expect("what was written reads back");
    assert_eq!(value, again, "round trip changed the value");
    true
}

/// A path from the network: accepted paths are valid as text too, and their parents are
/// valid paths that end.
pub fn path(bytes: &[u8]) -> bool {
    let Ok(p) = validate_path_bytes(bytes) else {
        return false;
    };
    assert!(validate_path(p).is_ok(), "bytes and text disagree");
    let mut current = p;
    for _ in 0..=p.len() {
        match parent(current) {
            Some(up) => {
                assert!(up.len() < current.len(), "parent not shorter");
                assert!(validate_path(up).is_ok(), "invalid parent {up:?}");
                current = up;
            }
            None => return true,
        }
    }
    panic!("parents of {p:?} did not end");
}
