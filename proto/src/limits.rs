//! Protocol limits shared by both sides.

/// Largest block: files are cut into blocks of exactly this size, the last one shorter.
pub const BLOCK_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Default bound on the payload bytes of one store_batch or retrieve_batch body
/// (frame headers not counted, so two full blocks fit).
pub const BATCH_BYTES_DEFAULT: usize = 8 * 1024 * 1024;

/// Longest path, in bytes of UTF-8.
pub const PATH_BYTES_MAX: usize = 4096;

/// Longest path segment, in bytes of UTF-8.
pub const SEGMENT_BYTES_MAX: usize = 255;

/// Most commits in one commit_batch request.
pub const COMMIT_BATCH_MAX: usize = 1000;

/// Longpoll timeout when the request names none, and the most it may ask for.
pub const LONGPOLL_TIMEOUT_S_DEFAULT: u32 = 30;
/// See [`LONGPOLL_TIMEOUT_S_DEFAULT`].
pub const LONGPOLL_TIMEOUT_S_MAX: u32 = 480;

/// Entries of one list answer when the request names no limit, and the most it may ask for.
pub const LIST_LIMIT_DEFAULT: u32 = 2000;
/// See [`LIST_LIMIT_DEFAULT`].
pub const LIST_LIMIT_MAX: u32 = 10_000;

/// Most hashes one retrieve_batch may ask for.
pub const RETRIEVE_HASHES_MAX: usize = 10_000;

/// Longest a retrieve_batch may wait for pending blocks (`wait_ms`).
pub const RETRIEVE_WAIT_MS_MAX: u64 = 60_000;
