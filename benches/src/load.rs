//! The load generator behind `holdall-bench ingest|fetch`: unique pre-generated 4 MiB blocks
//! sent to a running holdalld with store_batch, and read back with retrieve_batch, from
//! `concurrency` threads each holding one keep-alive connection. Batches carry two blocks,
//! the most the server's 8 MiB batch limit takes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use holdall_proto::api::{
    AccountResponse, CommitRequest, CommitResult, EntryKind, NsId, RetrieveBatchRequest,
    RetrieveItem,
};
use holdall_proto::frame::{
    decode_retrieve_frames, store_frame_header, store_frame_header_v2, FrameFormat, RetrieveStatus,
    StoreHeader,
};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};
use holdall_proto::BlockHash;
use holdall_proto::FileVersion;

use crate::http_client::{Conn, Target};

/// Blocks per request.
const BLOCKS_PER_BATCH: usize = BATCH_BYTES_DEFAULT / BLOCK_BYTES_MAX;

/// A block and its name.
pub struct Block {
    /// SHA-256 of `data`.
    pub hash: BlockHash,
    /// 4 MiB of pseudo-random bytes.
    pub data: Vec<u8>,
}

/// `n` blocks no server has seen: seeded from the clock, so each run stores new blocks.
pub fn unique_blocks(n: usize) -> Vec<Block> {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (0..n as u64)
        .map(|i| {
            let data = crate::payload(
                base.wrapping_add(i.wrapping_mul(0x1000_0001)),
                BLOCK_BYTES_MAX,
            );
            Block {
                hash: BlockHash::of(&data),
                data,
            }
        })
        .collect()
}

/// Bytes moved and the time it took.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Payload bytes.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl Run {
    /// Payload GB/s.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }
}

/// Runs `work(conn, batch_index)` for every batch from `concurrency` threads.
pub(crate) fn parallel(
    target: &Target,
    batches: usize,
    concurrency: usize,
    work: impl Fn(&mut Conn, usize) -> Result<u64> + Sync,
) -> Result<Run> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let bytes = std::thread::scope(|s| -> Result<u64> {
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let mut conn = Conn::open(target)?;
                    let mut moved = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= batches {
                            return Ok(moved);
                        }
                        moved += work(&mut conn, i)?;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(total)
    })?;
    Ok(Run {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Stores `blocks` with store_batch.
pub fn ingest(target: &Target, token: &str, blocks: &[Block], concurrency: usize) -> Result<Run> {
    ingest_as(target, token, blocks, concurrency, FrameFormat::V1)
}

/// As [`ingest`], the frames in `format` (format 2: every block raw, flags 0).
pub fn ingest_as(
    target: &Target,
    token: &str,
    blocks: &[Block],
    concurrency: usize,
    format: FrameFormat,
) -> Result<Run> {
    let batches: Vec<&[Block]> = blocks.chunks(BLOCKS_PER_BATCH).collect();
    let extra = match format {
        FrameFormat::V1 => "",
        FrameFormat::V2 => "Holdall-Frame-Format: 2\r\n",
    };
    parallel(target, batches.len(), concurrency, |conn, i| {
        let batch = batches[i];
        let headers: Vec<Vec<u8>> = batch
            .iter()
            .map(|b| {
                let len = b.data.len() as u32;
                match format {
                    FrameFormat::V1 => store_frame_header(&b.hash, len).to_vec(),
                    FrameFormat::V2 => {
                        let h = StoreHeader {
                            hash: b.hash,
                            raw_len: len,
                            wire_len: len,
                            zstd: false,
                            delta: false,
                        };
                        store_frame_header_v2(&h).to_vec()
                    }
                }
            })
            .collect();
        let mut parts: Vec<&[u8]> = Vec::new();
        for (h, b) in headers.iter().zip(batch) {
            parts.push(h);
            parts.push(&b.data);
        }
        let (status, body) = conn.request_with("POST", "/v1/store_batch", token, extra, &parts)?;
        ensure!(
            status == 200,
            "store_batch: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(batch.iter().map(|b| b.data.len() as u64).sum())
    })
}

/// The caller's root namespace.
pub fn root_ns(target: &Target, token: &str) -> Result<NsId> {
    let (status, body) = Conn::open(target)?.request("GET", "/v1/account", token, &[])?;
    ensure!(
        status == 200,
        "account: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let account: AccountResponse = serde_json::from_slice(&body)?;
    Ok(account.root_ns)
}

/// Commits a file at `path` made of `blocks` (all stored), so they can be retrieved.
pub fn commit_file(
    target: &Target,
    token: &str,
    ns: NsId,
    path: &str,
    blocks: &[Block],
) -> Result<()> {
    let commit = CommitRequest {
        ns,
        path: path.into(),
        version: FileVersion {
            kind: EntryKind::File,
            blocklist: blocks.iter().map(|b| b.hash).collect(),
            size: blocks.iter().map(|b| b.data.len() as u64).sum(),
            mtime_ms: 0,
        },
        parent_jid: None,
    };
    let body = serde_json::to_vec(&commit)?;
    let (status, answer) = Conn::open(target)?.request("POST", "/v1/commit", token, &[&body])?;
    match serde_json::from_slice::<CommitResult>(&answer) {
        Ok(CommitResult::Ok { .. }) => Ok(()),
        _ => bail!("commit: {status} {}", String::from_utf8_lossy(&answer)),
    }
}

/// Reads the blocks of the file at `path` back with retrieve_batch, checking every frame.
pub fn fetch(
    target: &Target,
    token: &str,
    ns: NsId,
    path: &str,
    hashes: &[BlockHash],
    concurrency: usize,
) -> Result<Run> {
    let batches: Vec<&[BlockHash]> = hashes.chunks(BLOCKS_PER_BATCH).collect();
    parallel(target, batches.len(), concurrency, |conn, i| {
        let ask = RetrieveBatchRequest {
            items: vec![RetrieveItem {
                ns,
                path: path.into(),
                jid: None,
                prefetch: false,
                hashes: batches[i].to_vec(),
                signatures: Default::default(),
                bases: Default::default(),
            }],
            wait_ms: None,
        };
        let body = serde_json::to_vec(&ask)?;
        let (status, answer) = conn.request("POST", "/v1/retrieve_batch", token, &[&body])?;
        ensure!(
            status == 200,
            "retrieve_batch: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        let mut moved = 0;
        for (frame, want) in
            decode_retrieve_frames(&answer, BATCH_BYTES_DEFAULT as u64).zip(batches[i])
        {
            let frame = frame.context("retrieve frame")?;
            ensure!(
                frame.status == RetrieveStatus::Ok && frame.hash == *want,
                "block {want} not served"
            );
            moved += frame.data.len() as u64;
        }
        ensure!(
            moved == (batches[i].len() * BLOCK_BYTES_MAX) as u64,
            "short answer"
        );
        Ok(moved)
    })
}
