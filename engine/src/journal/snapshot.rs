//! Snapshots: the whole state after a journal generation, so that a restart loads one
//! snapshot and replays only the journal files after it (format in docs/FORMATS.md).

use std::path::Path;

use tracing::warn;

use super::{generations, io_err, snapshot_path, JournalError};
use crate::journal::record::{self, JournalRecord};
use crate::journal::state::{Sizing, State};
use crate::storage::Storage;

const SNAPSHOT_MAGIC: [u8; 4] = *b"HSNP";
/// Version 2 holds rows with their locations (type 6); version 1 is read as well.
const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_VERSION_1: u8 = 1;
const SNAPSHOT_HEAD_BYTES: usize = 24;

pub(super) fn encode_snapshot(state: &State, generation: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for r in state.snapshot_records() {
        match &r {
            JournalRecord::Row(row) if row.at.is_some() => record::encode_located(&r, &mut out),
            _ => record::encode(&r, &mut out),
        }
        count += 1;
    }
    out[16..24].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(super) fn decode_snapshot(bytes: &[u8], generation: u64) -> Option<State> {
    if bytes.len() < SNAPSHOT_HEAD_BYTES + 4 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc
        || body[0..4] != SNAPSHOT_MAGIC
        || !(body[4] == SNAPSHOT_VERSION || body[4] == SNAPSHOT_VERSION_1)
        || u64::from_le_bytes(body[8..16].try_into().ok()?) != generation
    {
        return None;
    }
    let count = u64::from_le_bytes(body[16..24].try_into().ok()?);
    // Records are applied as they are decoded, with no list of them all in between: the
    // namespaces' maps are sized first from a quick pass over the rows' fixed fields.
    let mut sizing = Sizing::default();
    let mut at = SNAPSHOT_HEAD_BYTES;
    while at < body.len() {
        let (len, row) = record::peek_row(&body[at..])?;
        if let Some((ns, blocks)) = row {
            sizing.add(ns, blocks);
        }
        at += len;
    }
    let mut state = State::default();
    let mut sizing = Some(sizing);
    let (mut at, mut decoded) = (SNAPSHOT_HEAD_BYTES, 0u64);
    while at < body.len() {
        let (record, len) = record::decode(&body[at..]).ok()?;
        state.apply_sized(record, &mut sizing);
        at += len;
        decoded += 1;
    }
    (decoded == count).then_some(state)
}

/// The newest snapshot that checks out, its generation, and how many newer ones did not
/// (each counted as a damaged record).
pub(super) fn load_newest_snapshot(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<(State, u64, u64), JournalError> {
    let mut damaged = 0;
    for generation in generations(storage, dir, "snap-", ".hsnp")?
        .into_iter()
        .rev()
    {
        let path = snapshot_path(dir, generation);
        let bytes = storage
            .read_file(&path)
            .map_err(io_err(format!("reading {}", path.display())))?;
        match decode_snapshot(&bytes, generation) {
            Some(state) => return Ok((state, generation, damaged)),
            None => {
                damaged += 1;
                warn!(path = %path.display(), "damaged snapshot; using an older one or the journal")
            }
        }
    }
    Ok((State::default(), 0, damaged))
}
