//! Uploads of changed blocks as rsync deltas (the server's `delta` feature).
//!
//! Only where deltas pay: a needed block of a file synced before (its change carries the
//! row it replaces) whose position in that row held another block, both at least
//! [`DELTA_BLOCK_BYTES_MIN`]. The old block's signature comes from the server
//! (`POST /v1/signatures`, by the row), the delta is made here against the block as read now
//! (from a file that still has the stat it was hashed with), and it goes up in a store_delta
//! frame only if it is well under the block. Whatever does not go this way — no signature,
//! no saving, a refused batch — is left to the whole-block upload that follows, so a delta
//! can only save bytes, never lose a block.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use holdall_proto::api::{SignaturesRequest, StoreBatchResponse};
use holdall_proto::delta::{
    delta_of, parse_signature, worth_diffing, BaseRef, BASE_REF_BYTES, DELTA_BLOCK_BYTES_MIN,
};
use holdall_proto::frame::{store_frame_header_v2, StoreHeader};
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;

use crate::local::read::read_unchanged;
use crate::net::api::{Api, ApiError};
use crate::transfer::change::Change;

/// Most hashes per signatures request (the server's bound).
const SIGNATURE_HASHES_MAX: usize = 32;
/// Most store_delta frames per store_batch (the server's bound).
const DELTA_FRAMES_MAX: usize = 16;
/// Blocks of a file tried first; if none of them goes as a delta, none of the file does.
const PROBE_BLOCKS: usize = 4;

/// What the delta pass stored.
#[derive(Debug, Default)]
pub struct DeltasSent {
    /// Blocks the server now has (rebuilt from deltas, or already there).
    pub stored: HashSet<BlockHash>,
    /// Blocks sent as deltas.
    pub blocks: u64,
    /// Bytes of the store_delta frames sent.
    pub wire_bytes: u64,
}

/// One block that may go as a delta: at `offset` of the change's file, `len` bytes,
/// replacing `base` at the same position of the synced row.
struct Candidate {
    hash: BlockHash,
    base: BlockHash,
    offset: u64,
    len: usize,
}

/// Sends as deltas what pays of the blocks `waiting` needs; the rest is the caller's.
pub fn send_deltas(
    api: &Api,
    root: &Path,
    batch_bytes_max: u64,
    waiting: &[(Change, Vec<BlockHash>)],
) -> Result<DeltasSent, ApiError> {
    let mut sent = DeltasSent::default();
    let mut batch = Batch::new(batch_bytes_max);
    let mut seen: HashSet<BlockHash> = HashSet::new();
    for (change, need) in waiting {
        let candidates = candidates_of(change, need, &mut seen);
        let mut start = 0;
        while start < candidates.len() {
            // A few blocks first: a file rewritten rather than edited yields no delta, and
            // the rest of it goes whole without costing a signature or a diff each.
            let size = if start == 0 {
                PROBE_BLOCKS
            } else {
                SIGNATURE_HASHES_MAX
            };
            let chunk = &candidates[start..(start + size).min(candidates.len())];
            let made = send_chunk(api, root, change, chunk, &mut batch, &mut sent)?;
            if start == 0 && made == 0 {
                break;
            }
            start += chunk.len();
        }
    }
    batch.send(api, &mut sent)?;
    Ok(sent)
}

/// Makes the deltas of `chunk` (candidates of `change`) that pay and queues them in
/// `batch`, sending it when full; how many it made.
fn send_chunk(
    api: &Api,
    root: &Path,
    change: &Change,
    chunk: &[Candidate],
    batch: &mut Batch,
    sent: &mut DeltasSent,
) -> Result<usize, ApiError> {
    let signatures = signatures_of(api, change, chunk)?;
    let path = root.join(&change.lpath);
    let (mut read, mut made) = (Vec::new(), 0);
    for c in chunk {
        let Some(signature) = signatures.get(&c.base) else {
            continue;
        };
        read.resize(c.len, 0);
        if !read_unchanged(&path, c.offset, &mut read, change.stat.as_ref())
            || !worth_diffing(signature.serialized(), &read)
        {
            continue;
        }
        // Worth it only well under the block: the frame adds the base reference.
        let wire_max = (c.len * 7 / 8).saturating_sub(BASE_REF_BYTES);
        let Some(delta) = delta_of(signature, &read, wire_max) else {
            continue;
        };
        let base = BaseRef {
            ns: change.request.ns,
            jid: change.base.as_ref().map_or(0, |b| b.jid),
            hash: c.base,
        };
        if !batch.fits(c.len) {
            batch.send(api, sent)?;
        }
        batch.push(c.hash, c.len, base, &delta);
        made += 1;
    }
    Ok(made)
}

/// The change's needed blocks that replace another block at their position of the row it
/// replaces, each once over the upload.
fn candidates_of(
    change: &Change,
    need: &[BlockHash],
    seen: &mut HashSet<BlockHash>,
) -> Vec<Candidate> {
    let Some(base) = &change.base else {
        return Vec::new();
    };
    let version = &change.request.version;
    let need: HashSet<&BlockHash> = need.iter().collect();
    let mut out = Vec::new();
    for (i, hash) in version.blocklist.iter().enumerate() {
        let offset = i as u64 * BLOCK_BYTES_MAX as u64;
        let len = (version.size - offset).min(BLOCK_BYTES_MAX as u64) as usize;
        let Some(old) = base.blocklist.get(i) else {
            break;
        };
        if old != hash && len >= DELTA_BLOCK_BYTES_MIN && need.contains(hash) && seen.insert(*hash)
        {
            out.push(Candidate {
                hash: *hash,
                base: *old,
                offset,
                len,
            });
        }
    }
    out
}

/// The signatures of the candidates' bases the server gives, by base hash (a base it no
/// longer has, or a row that moved on, just has none).
fn signatures_of(
    api: &Api,
    change: &Change,
    candidates: &[Candidate],
) -> Result<HashMap<BlockHash, holdall_proto::delta::Signature>, ApiError> {
    let mut bases: Vec<BlockHash> = candidates.iter().map(|c| c.base).collect();
    bases.sort_unstable();
    bases.dedup();
    let mut out = HashMap::new();
    for chunk in bases.chunks(SIGNATURE_HASHES_MAX) {
        let request = SignaturesRequest {
            ns: change.request.ns,
            path: change.request.path.clone(),
            jid: change.base.as_ref().map(|b| b.jid),
            hashes: chunk.to_vec(),
        };
        let answers = match api.signatures(&request) {
            Ok(a) => a,
            Err(ApiError::Server { code, message, .. }) => {
                tracing::debug!(code, message, "no signatures; sending whole blocks");
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        for (hash, signature) in chunk.iter().zip(answers) {
            if let Some(s) = signature.and_then(|s| parse_signature(s).ok()) {
                out.insert(*hash, s);
            }
        }
    }
    Ok(out)
}

/// store_delta frames gathered for one store_batch.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    hashes: Vec<BlockHash>,
    frames: usize,
    block_bytes: u64,
    block_bytes_max: u64,
}

impl Batch {
    fn new(block_bytes_max: u64) -> Batch {
        Batch {
            block_bytes_max,
            ..Batch::default()
        }
    }

    /// Whether a block of `len` bytes still fits.
    fn fits(&self, len: usize) -> bool {
        self.frames < DELTA_FRAMES_MAX && self.block_bytes + len as u64 <= self.block_bytes_max
    }

    fn push(&mut self, hash: BlockHash, len: usize, base: BaseRef, delta: &[u8]) {
        let header = StoreHeader {
            hash,
            raw_len: len as u32,
            wire_len: (BASE_REF_BYTES + delta.len()) as u32,
            zstd: false,
            delta: true,
        };
        self.body.extend_from_slice(&store_frame_header_v2(&header));
        self.body.extend_from_slice(&base.encode());
        self.body.extend_from_slice(delta);
        self.hashes.push(hash);
        self.frames += 1;
        self.block_bytes += len as u64;
    }

    /// Sends the frames gathered, if any; a refused batch is left to the whole-block
    /// upload (the server kept none of it).
    fn send(&mut self, api: &Api, sent: &mut DeltasSent) -> Result<(), ApiError> {
        if self.frames == 0 {
            return Ok(());
        }
        let batch = std::mem::replace(self, Batch::new(self.block_bytes_max));
        match api.store_deltas(&batch.body) {
            Ok(StoreBatchResponse { stored, present }) => {
                sent.blocks += batch.frames as u64;
                sent.wire_bytes += batch.body.len() as u64;
                sent.stored.extend(stored);
                sent.stored.extend(present);
                Ok(())
            }
            Err(ApiError::Server { code, message, .. }) => {
                tracing::debug!(
                    code,
                    message,
                    blocks = batch.frames,
                    "deltas refused; sending whole blocks"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::stat::Stat;
    use crate::net::api::Endpoint;
    use crate::net::bulk::tests::request;
    use crate::transfer::change::Base;
    use holdall_proto::api::CommitRequest;
    use holdall_proto::delta::{apply, signature_of};
    use holdall_proto::frame::{
        decode_store_header_of, encode_retrieve_frame, FrameFormat, RetrieveStatus,
        STORE_V2_HEADER_BYTES,
    };
    use holdall_proto::FileVersion;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A fake server holding `base`: signatures of it, and store_batch answered `refuse`
    /// (a status line and JSON) or, when None, checked by rebuilding each delta from it.
    fn fake(base: Vec<u8>, refuse: Option<&'static str>) -> (Api, Arc<Mutex<Vec<BlockHash>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rebuilt: Arc<Mutex<Vec<BlockHash>>> = Arc::default();
        let log = rebuilt.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut s = conn.unwrap();
                while let Some((head, body)) = request(&mut s) {
                    let (status, bytes) = match head.split_whitespace().nth(1) {
                        Some("/v1/signatures") => {
                            let ask: SignaturesRequest = serde_json::from_slice(&body).unwrap();
                            let mut out = Vec::new();
                            for h in ask.hashes {
                                encode_retrieve_frame(
                                    &mut out,
                                    &h,
                                    RetrieveStatus::Ok,
                                    &signature_of(&base),
                                );
                            }
                            ("200 OK", out)
                        }
                        _ => match refuse {
                            Some(json) => ("400 Bad Request", json.as_bytes().to_vec()),
                            None => {
                                let mut stored = Vec::new();
                                let mut at = 0;
                                while at < body.len() {
                                    let h = decode_store_header_of(
                                        FrameFormat::V2,
                                        &body[at..],
                                        at,
                                        &mut 0,
                                        u64::MAX,
                                    )
                                    .unwrap();
                                    let start = at + STORE_V2_HEADER_BYTES;
                                    let payload = &body[start..start + h.wire_len as usize];
                                    let (_, delta) = BaseRef::split(payload).unwrap();
                                    let block = apply(&base, delta, h.raw_len as usize).unwrap();
                                    assert!(h.delta && BlockHash::of(&block) == h.hash);
                                    stored.push(h.hash);
                                    at = start + payload.len();
                                }
                                log.lock().unwrap().extend(&stored);
                                let answer = StoreBatchResponse {
                                    stored,
                                    present: Vec::new(),
                                };
                                ("200 OK", serde_json::to_vec(&answer).unwrap())
                            }
                        },
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
                        bytes.len()
                    );
                    s.write_all(head.as_bytes()).unwrap();
                    s.write_all(&bytes).unwrap();
                }
            }
        });
        let endpoint = Endpoint {
            url,
            token: "t".into(),
            ca: None,
        };
        (Api::new(&endpoint, 0, 0).unwrap(), rebuilt)
    }

    /// A synced one-block file `f` under `dir` edited to `new`: its change and need.
    fn edited(dir: &Path, base: &[u8], new: &[u8]) -> Vec<(Change, Vec<BlockHash>)> {
        std::fs::write(dir.join("f"), new).unwrap();
        let stat = Stat::of(&std::fs::metadata(dir.join("f")).unwrap());
        let change = Change {
            lpath: "f".into(),
            request: CommitRequest {
                ns: 1,
                path: "f".into(),
                version: FileVersion::file(vec![BlockHash::of(new)], new.len() as u64, 0),
                parent_jid: Some(5),
            },
            stat: Some(stat),
            base: Some(Base {
                jid: 5,
                blocklist: vec![BlockHash::of(base)],
            }),
        };
        vec![(change, vec![BlockHash::of(new)])]
    }

    #[test]
    fn an_edited_block_goes_as_a_delta_and_a_refused_one_is_left_for_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let base = holdall_testkit::pseudo_random_bytes(1, 1 << 20);
        let mut new = base.clone();
        new[5000..6024].fill(9);
        let waiting = edited(dir.path(), &base, &new);

        let (api, rebuilt) = fake(base.clone(), None);
        let sent = send_deltas(&api, dir.path(), 8 << 20, &waiting).unwrap();
        assert_eq!(sent.blocks, 1);
        assert!(sent.wire_bytes < 8 << 10, "{} bytes", sent.wire_bytes);
        assert!(sent.stored.contains(&BlockHash::of(&new)));
        assert_eq!(*rebuilt.lock().unwrap(), vec![BlockHash::of(&new)]);

        let refusal = r#"{"error":"bad_delta_base","message":"moved on"}"#;
        let (api, _) = fake(base.clone(), Some(refusal));
        let sent = send_deltas(&api, dir.path(), 8 << 20, &waiting).unwrap();
        assert!(
            sent.stored.is_empty() && sent.blocks == 0,
            "left to the whole-block upload"
        );

        // A block that shares nothing with its base is not worth a delta.
        let waiting = edited(
            dir.path(),
            &base,
            &holdall_testkit::pseudo_random_bytes(2, 1 << 20),
        );
        let (api, rebuilt) = fake(base, None);
        let sent = send_deltas(&api, dir.path(), 8 << 20, &waiting).unwrap();
        assert!(sent.stored.is_empty() && rebuilt.lock().unwrap().is_empty());
    }
}
