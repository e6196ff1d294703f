//! Opening a block log: sealed segments from their hints (or a header-only scan when a hint
//! is missing or stale), the active segment scanned in full after its last checkpoint, a
//! torn tail cut; and creating segments and writing hints.

use std::path::Path;
use std::rc::Rc;

use tracing::warn;

use super::{hint_path, io_err, location, segment_path, Active, BlockLogError, BlockLogStats};
use crate::block_log::hint::{self, HintEntry};
use crate::block_log::index::BlockIndex;
use crate::block_log::record::{
    self, decode_header, decode_segment_header, encode_segment_header, RecordError, HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::storage::{self, OpenMode, Storage, StorageFile};
use crate::ALIGN_BYTES;

/// What scanning a segment found.
pub(super) struct Scan {
    pub(super) entries: Vec<HintEntry>,
    /// End of the last valid record.
    pub(super) valid_len: u64,
    pub(super) corrupt_records: u64,
}

pub(super) fn load_hint(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    segment_size: u64,
) -> Option<hint::Hint> {
    let path = hint_path(dir, id);
    let bytes = storage.read_file(&path).ok()?;
    match hint::decode(&bytes) {
        Ok(h) if h.segment_id == id as u64 && h.segment_len <= segment_size => Some(h),
        Ok(_) => {
            warn!(path = %path.display(), "hint does not match its segment; scanning instead");
            None
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "scanning segment instead of its hint");
            None
        }
    }
}

pub(super) fn write_hint(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    len: u64,
    entries: &[HintEntry],
) -> Result<(), BlockLogError> {
    let path = hint_path(dir, id);
    let bytes = hint::encode(id as u64, len, entries);
    storage::replace_file(storage, &path, &bytes)
        .map_err(io_err(format!("writing {}", path.display())))
}

pub(super) async fn read_segment_header(
    file: &dyn StorageFile,
    id: u32,
    fingerprint: u64,
) -> Result<Result<(), RecordError>, BlockLogError> {
    let page = file
        .read_at(0, SEGMENT_HEADER_BYTES as usize)
        .await
        .map_err(io_err(format!("reading segment {id}")))?;
    Ok(match decode_segment_header(&page) {
        Ok((found_id, fp)) if found_id == id as u64 => {
            if fp != fingerprint {
                return Err(BlockLogError::WrongKey(id as u64));
            }
            Ok(())
        }
        Ok(_) => Err(RecordError::Field("segment id does not match file name")),
        Err(e) => Err(e),
    })
}

pub(super) async fn open_sealed(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    fingerprint: u64,
    stats: &mut BlockLogStats,
) -> Result<Option<Rc<dyn StorageFile>>, BlockLogError> {
    let path = segment_path(dir, id);
    let file = storage
        .open(&path, OpenMode::Read)
        .await
        .map_err(io_err(format!("opening {}", path.display())))?;
    if let Err(e) = read_segment_header(&*file, id, fingerprint).await? {
        warn!(path = %path.display(), error = %e, "segment header is damaged; its blocks are treated as missing");
        stats.corrupt_records += 1;
        return Ok(None);
    }
    Ok(Some(file))
}

pub(super) async fn open_active(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    fingerprint: u64,
    stats: &mut BlockLogStats,
    index: &mut BlockIndex,
) -> Result<Option<Active>, BlockLogError> {
    let path = segment_path(dir, id);
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .await
        .map_err(io_err(format!("opening {}", path.display())))?;
    let size = file.size().await.map_err(io_err("segment size"))?;
    if let Err(e) = read_segment_header(&*file, id, fingerprint).await? {
        if size <= SEGMENT_HEADER_BYTES {
            // Created but its header never became durable: nothing in it was acknowledged.
            drop(file);
            storage
                .remove(&path)
                .map_err(io_err(format!("removing {}", path.display())))?;
            return Ok(Some(create_segment(storage, dir, id, fingerprint).await?));
        }
        warn!(path = %path.display(), error = %e, "active segment header is damaged; its blocks are treated as missing");
        stats.corrupt_records += 1;
        return Ok(None);
    }
    // A checkpoint hint covers a prefix that was durable when it was written; only what
    // follows it can hold a torn write, so only that is read and checked in full.
    let (mut entries, from) = match load_hint(storage, dir, id, size) {
        Some(hint) => (hint.entries, hint.segment_len),
        None => (Vec::new(), SEGMENT_HEADER_BYTES),
    };
    let mut scan = scan_segment(&*file, id, from, size, true).await?;
    entries.append(&mut scan.entries);
    scan.entries = entries;
    stats.corrupt_records += scan.corrupt_records;
    if scan.valid_len < size {
        warn!(
            segment = id,
            cut_at = scan.valid_len,
            bytes = size - scan.valid_len,
            "cutting torn tail of the active segment"
        );
        stats.torn_tail_cuts += 1;
        stats.torn_tail_bytes += size - scan.valid_len;
        storage
            .truncate(&path, scan.valid_len)
            .map_err(io_err(format!("cutting {}", path.display())))?;
    }
    for e in &scan.entries {
        index.insert_newest(e.hash, location(id, e.offset, e.record_len as u64));
    }
    Ok(Some(Active {
        id,
        file,
        len: scan.valid_len,
        hints: scan.entries,
        hinted_len: from,
    }))
}

/// Bytes read at a time when walking a segment.
const SCAN_WINDOW_BYTES: usize = 8 << 20;

/// Sequential reads of a segment in large windows.
struct Window<'a> {
    file: &'a dyn StorageFile,
    file_len: u64,
    start: u64,
    data: Option<storage::ReadBuf>,
}

impl Window<'_> {
    /// `len` bytes at `offset` (both aligned), reading a new window when needed.
    async fn get(&mut self, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let covered = self.data.as_ref().is_some_and(|d| {
            offset >= self.start && offset + len as u64 <= self.start + d.len() as u64
        });
        if !covered {
            let rest = crate::align_up(self.file_len.saturating_sub(offset)) as usize;
            let want = SCAN_WINDOW_BYTES.min(rest).max(len);
            self.data = Some(self.file.read_at(offset, want).await?);
            self.start = offset;
        }
        let d = self.data.as_ref().expect("window read");
        let from = (offset - self.start) as usize;
        if d.len() < from + len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment shorter than its size",
            ));
        }
        Ok(&d[from..from + len])
    }
}

/// Walks a segment's records from `from` to `size`. With `check_payloads`, each record's
/// stored bytes are checked too (the active segment's unhinted tail, where a torn write may
/// have left a bad payload); otherwise only headers are trusted. A bad run followed by a good
/// record is damage in the middle: counted as corrupt and skipped. Bad bytes with nothing
/// good after them are the torn tail, left out of `valid_len`.
pub(super) async fn scan_segment(
    file: &dyn StorageFile,
    id: u32,
    from: u64,
    size: u64,
    check_payloads: bool,
) -> Result<Scan, BlockLogError> {
    let ctx = || format!("scanning segment {id}");
    let mut scan = Scan {
        entries: Vec::new(),
        valid_len: from.min(size),
        corrupt_records: 0,
    };
    let mut window = Window {
        file,
        file_len: size,
        start: 0,
        data: None,
    };
    let mut offset = from;
    let mut in_bad_run = false;
    while offset + ALIGN_BYTES <= size {
        let page = window
            .get(offset, ALIGN_BYTES as usize)
            .await
            .map_err(io_err(ctx()))?;
        let header = match decode_header(&page[..HEADER_BYTES]) {
            Ok(h) if offset + h.record_len() as u64 <= size => h,
            _ => {
                in_bad_run = true;
                offset += ALIGN_BYTES;
                continue;
            }
        };
        let len = header.record_len() as u64;
        let resync_in_clear = in_bad_run && !header.encrypted;
        if check_payloads || resync_in_clear {
            let record = window
                .get(offset, len as usize)
                .await
                .map_err(io_err(ctx()))?;
            let good = record::check_payload(&header, record).is_ok()
                && (!resync_in_clear || record::payload_matches_name(&header, record));
            if !good {
                in_bad_run = true;
                offset += if resync_in_clear { ALIGN_BYTES } else { len };
                continue;
            }
        }
        if in_bad_run {
            scan.corrupt_records += 1;
            warn!(
                segment = id,
                from = scan.valid_len,
                to = offset,
                "skipping damaged bytes between good records"
            );
            in_bad_run = false;
        }
        scan.entries.push(HintEntry {
            hash: header.hash,
            offset,
            record_len: len as u32,
        });
        offset += len;
        scan.valid_len = offset;
    }
    Ok(scan)
}

pub(super) async fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    id: u32,
    fingerprint: u64,
) -> Result<Active, BlockLogError> {
    let path = segment_path(dir, id);
    let ctx = format!("creating {}", path.display());
    let file = storage
        .open(&path, OpenMode::Create)
        .await
        .map_err(io_err(ctx.clone()))?;
    let mut page = storage::alloc_buffer(SEGMENT_HEADER_BYTES as usize);
    encode_segment_header(page.as_bytes_mut(), id as u64, fingerprint);
    storage::write_all_at(&*file, Rc::new(page), 0)
        .await
        .map_err(io_err(ctx.clone()))?;
    file.sync().await.map_err(io_err(ctx.clone()))?;
    storage.sync_dir(dir).map_err(io_err(ctx))?;
    Ok(Active {
        id,
        file,
        len: SEGMENT_HEADER_BYTES,
        hints: Vec::new(),
        hinted_len: SEGMENT_HEADER_BYTES,
    })
}
