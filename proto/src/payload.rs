//! A block's payload as received for a file: its bytes, and, when they landed at an
//! O_DIRECT alignment with zero padding, the same bytes as an aligned write takes them.

/// O_DIRECT's alignment of offsets, lengths and buffer addresses (the logical block size
/// of every common disk is at most this).
pub const ALIGN_BYTES: usize = 4096;
/// Writes at least this long go around the page cache.
pub const DIRECT_BYTES_MIN: usize = 1 << 20;
/// A block's bytes on their way to a file, and, when they were received in place for it,
/// the same bytes as O_DIRECT takes them (so they are written without a copy).
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    data: &'a [u8],
    /// `data` followed by zeros up to the alignment, starting at an aligned address.
    padded: Option<&'a [u8]>,
}

impl<'a> Payload<'a> {
    /// Bytes anywhere in memory (copied to an aligned place if written directly).
    pub fn plain(data: &'a [u8]) -> Payload<'a> {
        Payload { data, padded: None }
    }

    /// The first `len` bytes of `padded`, which must start at an aligned address, be `len`
    /// rounded up to the alignment long and hold zeros past `len`; None otherwise.
    pub fn aligned(padded: &'a [u8], len: usize) -> Option<Payload<'a>> {
        let fits = padded.as_ptr().align_offset(ALIGN_BYTES) == 0
            && padded.len() == len.next_multiple_of(ALIGN_BYTES)
            && padded[len..].iter().all(|&b| b == 0);
        fits.then_some(Payload {
            data: &padded[..len],
            padded: Some(padded),
        })
    }

    /// The bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The bytes followed by zeros up to the alignment, at an aligned address, when they
    /// were received that way.
    pub fn padded(&self) -> Option<&'a [u8]> {
        self.padded
    }
}
