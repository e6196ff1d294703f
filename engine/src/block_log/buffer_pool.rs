//! A pool of 4 MiB-record DMA buffers.
//!
//! First touch of fresh memory is slow in VMs, and a full block's record is the one size that
//! dominates the traffic, so buffers of exactly [`RECORD_BYTES_MAX`] bytes are kept and
//! reused. Other sizes (small blocks) are allocated as needed: they are cheap, and a DMA
//! write always writes a buffer's full length, so a large buffer cannot carry a small record.

use std::cell::RefCell;

use crate::block_log::record::RECORD_BYTES_MAX;
use glommio::io::DmaBuffer;

/// Reuses full-record DMA buffers; bounded by `buffers_max` kept idle.
pub struct BufferPool {
    idle: RefCell<Vec<DmaBuffer>>,
    buffers_max: usize,
}

impl BufferPool {
    /// A pool that keeps at most `buffers_max` idle full-size buffers. It fills as buffers
    /// come back, so a log that never writes a full block never holds one.
    pub fn new(buffers_max: usize) -> BufferPool {
        BufferPool {
            idle: RefCell::new(Vec::with_capacity(buffers_max)),
            buffers_max,
        }
    }

    /// A buffer of exactly `len` bytes, aligned for O_DIRECT. Its content is unspecified.
    pub fn take(&self, len: usize) -> DmaBuffer {
        if len == RECORD_BYTES_MAX {
            if let Some(b) = self.idle.borrow_mut().pop() {
                return b;
            }
        }
        crate::storage::alloc_buffer(len)
    }

    /// Returns a buffer for reuse; buffers of other sizes, or beyond the bound, are freed.
    pub fn give(&self, buffer: DmaBuffer) {
        let mut idle = self.idle.borrow_mut();
        if buffer.len() == RECORD_BYTES_MAX && idle.len() < self.buffers_max {
            idle.push(buffer);
        }
    }

    /// Idle full-size buffers held.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_full_record_buffers_up_to_the_bound() {
        crate::runtime::run(async {
            let pool = BufferPool::new(2);
            let a = pool.take(RECORD_BYTES_MAX);
            let a_ptr = a.as_ptr();
            let b = pool.take(RECORD_BYTES_MAX);
            let b_ptr = b.as_ptr();
            let c = pool.take(RECORD_BYTES_MAX);
            let small = pool.take(4096);
            assert_eq!((a.len(), small.len()), (RECORD_BYTES_MAX, 4096));
            assert_eq!(a_ptr as usize % 4096, 0, "aligned for O_DIRECT");
            pool.give(a);
            pool.give(b);
            pool.give(c);
            pool.give(small);
            assert_eq!(pool.idle(), 2, "bounded; small buffers are not kept");
            let again = pool.take(RECORD_BYTES_MAX);
            assert_eq!(
                again.as_ptr(),
                b_ptr,
                "the last buffer given back is reused"
            );
            assert_eq!(pool.idle(), 1);
        });
    }
}
