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
    ListRequest, LongpollRequest, RetrieveBatchRequest,
};
use holdall_proto::frame::{
    decode_retrieve_frames, decode_store_frames, encode_retrieve_frame, encode_store_frame,
};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use holdall_proto::path::{parent, validate_path, validate_path_bytes};
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

/// A journal record: decodes only within the input, and re-encodes to the same bytes.
pub fn journal_record(bytes: &[u8]) -> bool {
    let Ok((record, len)) = journal_record::decode(bytes) else {
        return false;
    };
    assert!(len <= bytes.len(), "took more than it was given");
    let mut again = Vec::new();
    journal_record::encode(&record, &mut again);
    assert_eq!(&bytes[..len], &again[..], "not canonical");
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
