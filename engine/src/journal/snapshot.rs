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
    // Decoding (a third of the time) runs on a thread of its own beside the applying, in
    // batches through a bounded channel: a restart is waiting for this.
    let decoded = std::thread::scope(|scope| {
        let (batches, arriving) = std::sync::mpsc::sync_channel(DECODED_BATCHES_MAX);
        let decoder = scope.spawn(move || decode_records(&body[SNAPSHOT_HEAD_BYTES..], batches));
        for batch in arriving {
            for record in batch {
                state.apply_sized(record, &mut sizing);
            }
        }
        decoder.join().ok().flatten()
    })?;
    (decoded == count).then_some(state)
}

/// Records per batch from the decoding thread, and batches decoded ahead of the applying.
const DECODED_BATCH_RECORDS: usize = 4096;
const DECODED_BATCHES_MAX: usize = 8;

/// Decodes every record of `bytes` into `batches`; how many, or `None` at the first that
/// does not decode (or if the applying side stopped listening).
fn decode_records(
    bytes: &[u8],
    batches: std::sync::mpsc::SyncSender<Vec<JournalRecord>>,
) -> Option<u64> {
    let (mut at, mut decoded) = (0, 0u64);
    let mut batch = Vec::with_capacity(DECODED_BATCH_RECORDS);
    while at < bytes.len() {
        let (record, len) = record::decode(&bytes[at..]).ok()?;
        batch.push(record);
        at += len;
        decoded += 1;
        if batch.len() == DECODED_BATCH_RECORDS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(DECODED_BATCH_RECORDS));
            batches.send(full).ok()?;
        }
    }
    batches.send(batch).ok()?;
    Some(decoded)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{NamespaceKind, Row};
    use holdall_proto::{BlockHash, FileVersion};

    /// A state of one namespace with `rows` files, enough for several decoded batches.
    fn state(rows: u64) -> State {
        let mut s = State::default();
        s.apply(JournalRecord::Namespace {
            id: 1,
            owner: 1,
            kind: NamespaceKind::Root,
        });
        for i in 0..rows {
            s.apply(JournalRecord::Row(Row {
                ns: 1,
                jid: i + 1,
                path: format!("f{i}"),
                version: FileVersion::file(vec![BlockHash::of(&i.to_le_bytes())], 1, 0),
                committed_ms: 0,
                author: Default::default(),
                prev: None,
                at: None,
            }));
        }
        s
    }

    /// Recomputes the whole-file checksum after an edit.
    fn reseal(bytes: &mut [u8]) {
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_snapshot_reads_back_whole_and_one_bad_record_or_count_refuses_it() {
        let rows = 3 * DECODED_BATCH_RECORDS as u64 + 5;
        let bytes = encode_snapshot(&state(rows), 7);
        let back = decode_snapshot(&bytes, 7).expect("decodes");
        assert_eq!(back.namespace(1).map(|n| n.len()), Some(rows as usize));
        assert!(decode_snapshot(&bytes, 8).is_none(), "another generation");

        // A record deep in the file whose own checksum fails, under a valid file checksum:
        // the decoding thread stops there and the snapshot is refused.
        let mut bad = bytes.clone();
        let at = bad.len() * 3 / 4;
        bad[at] ^= 0x40;
        reseal(&mut bad);
        assert!(decode_snapshot(&bad, 7).is_none());

        let mut short = bytes;
        let count = u64::from_le_bytes(short[16..24].try_into().unwrap()) + 1;
        short[16..24].copy_from_slice(&count.to_le_bytes());
        reseal(&mut short);
        assert!(decode_snapshot(&short, 7).is_none(), "a record missing");
    }
}
