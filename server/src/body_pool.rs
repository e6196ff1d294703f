//! Reused buffers for request bodies that arrive in several chunks (store_batch's 8 MiB).
//!
//! A fresh 8 MiB buffer per request is fresh memory from the kernel: a page fault and a
//! zeroed page per 4 KiB, 6–10 % of holdalld's CPU time while a device uploads. A body
//! buffer goes back to this pool when the last `Bytes` slice of it is dropped (on whichever
//! shard that happens: the block's owner, or the recent-blocks cache), and the next request
//! writes over memory that is already mapped.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers kept for reuse at most: about 8 × 8 MiB held while idle.
pub const POOLED_MAX: usize = 8;

/// Smaller buffers are not worth keeping.
pub const POOLED_BYTES_MIN: usize = 1 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer that holds at least `bytes` without growing: for a large body a pooled
/// one if one is large enough, else a new one.
pub fn take(bytes: usize) -> Vec<u8> {
    if bytes < POOLED_BYTES_MIN {
        return Vec::with_capacity(bytes);
    }
    let reused = {
        let mut pool = pool();
        let fits = pool.iter().position(|b| b.capacity() >= bytes);
        fits.map(|i| pool.swap_remove(i))
    };
    match reused {
        Some(mut buffer) => {
            buffer.clear();
            buffer
        }
        None => Vec::with_capacity(bytes),
    }
}

/// `buffer` as `Bytes` that return it to the pool once every slice of them is dropped.
pub fn freeze(buffer: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(buffer))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if buffer.capacity() < POOLED_BYTES_MIN {
            return;
        }
        let mut pool = pool();
        if pool.len() < POOLED_MAX {
            pool.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_body_is_reused_and_the_pool_is_bounded() {
        let mut first = take(2 << 20);
        first.extend_from_slice(&[7; 100]);
        let at = first.as_ptr();
        let bytes = freeze(first);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        let again = take(2 << 20);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the dropped buffer is reused");
        drop(freeze(again));
        let many: Vec<Bytes> = (0..POOLED_MAX + 4)
            .map(|_| freeze(take(POOLED_BYTES_MIN)))
            .collect();
        drop(many);
        assert!(pool().len() <= POOLED_MAX);
    }

    #[test]
    fn small_buffers_are_not_kept() {
        let small = take(1000);
        let at = small.as_ptr();
        drop(freeze(small));
        assert!(!pool().iter().any(|b| b.as_ptr() == at));
    }
}
