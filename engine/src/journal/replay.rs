//! Reading journal files back at open: whole files read in large chunks, records parsed
//! with padding skipped, damage in the middle skipped and counted, a torn tail found.

use tracing::warn;

use super::JournalRecord;
use crate::align_up;
use crate::journal::record::{self, RowAt, MAGIC};
use crate::storage::StorageFile;

/// Bytes read from a journal file per read at open.
const READ_CHUNK_BYTES: usize = 8 << 20;

/// What parsing a journal file found.
pub(super) struct Parsed {
    pub(super) records: Vec<JournalRecord>,
    /// End of the last good record.
    pub(super) valid_end: usize,
    pub(super) corrupt_records: u64,
}

/// Parses the bytes of journal file `generation`: zero bytes where a record would start are
/// padding (skip to the next page); a bad record followed by a good one is damage, skipped
/// and counted; bad bytes with nothing good after them end the parse (the torn tail). Rows
/// come out with their location.
pub(super) fn parse(bytes: &[u8], generation: u64) -> Parsed {
    let mut p = Parsed {
        records: Vec::new(),
        valid_end: 0,
        corrupt_records: 0,
    };
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        if bytes[at..at + 4] == [0; 4] {
            at = align_up(at as u64 + 1) as usize;
            continue;
        }
        match record::decode(&bytes[at..]) {
            Ok((mut record, len)) => {
                if let JournalRecord::Row(row) = &mut record {
                    row.at = Some(RowAt {
                        generation,
                        offset: at as u64,
                    });
                }
                p.records.push(record);
                at += len;
                p.valid_end = at;
            }
            Err(_) => match next_good_record(bytes, at + 1) {
                Some(next) => {
                    p.corrupt_records += 1;
                    warn!(
                        from = at,
                        to = next,
                        "skipping damaged journal bytes between good records"
                    );
                    at = next;
                }
                None => break,
            },
        }
    }
    p
}

fn next_good_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 4 <= bytes.len() {
        let rel = bytes[at..].windows(4).position(|w| w == MAGIC)?;
        at += rel;
        if record::decode(&bytes[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

pub(super) async fn read_all(file: &dyn StorageFile, len: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let mut pos = 0u64;
    while pos < len {
        let want = READ_CHUNK_BYTES.min(align_up(len - pos) as usize);
        let chunk = file.read_at(pos, want).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
        pos += chunk.len() as u64;
    }
    out.truncate(len as usize);
    Ok(out)
}
