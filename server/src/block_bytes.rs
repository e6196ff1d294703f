//! A block's bytes as the server moves and keeps them: the block itself, or the block
//! zstd-compressed as a client sent it (frame format 2). A compressed block is stored, cached
//! and served to format-2 clients as it came, never expanded and compressed again; it is
//! expanded only for readers that need the block itself (format-1 clients, the Dropbox API's
//! downloads, `GET /v1/blocks`).

use holdall_engine::block_log::record::{expand, RecordError};
use holdall_engine::block_log::Form;
use holdall_proto::pieces::Pieces;

/// A block's bytes and how they hold it.
#[derive(Debug, Clone)]
pub struct BlockBytes {
    /// The bytes: the block, or the block compressed.
    pub pieces: Pieces,
    /// Which.
    pub form: Form,
}

impl BlockBytes {
    /// The block's own bytes.
    pub fn raw(pieces: Pieces) -> BlockBytes {
        BlockBytes {
            pieces,
            form: Form::Raw,
        }
    }

    /// The block's length (what it expands to).
    pub fn block_len(&self) -> usize {
        match self.form {
            Form::Raw => self.pieces.len(),
            Form::Zstd { block_len } => block_len as usize,
        }
    }

    /// The block itself: expanded if compressed, never past its length.
    pub fn expanded(self) -> Result<Pieces, RecordError> {
        match self.form {
            Form::Raw => Ok(self.pieces),
            Form::Zstd { block_len } => {
                let block = expand(&self.pieces.contiguous(), block_len)?;
                Ok(Pieces::from(bytes::Bytes::from(block)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn raw_stays_and_compressed_expands_to_exactly_its_length() {
        let block = b"the same words again and again ".repeat(500);
        let raw = BlockBytes::raw(Pieces::from(Bytes::from(block.clone())));
        assert_eq!(raw.block_len(), block.len());
        assert_eq!(raw.expanded().unwrap().parts().concat(), block);
        let packed = zstd::bulk::compress(&block, 3).unwrap();
        let mut pieces = Pieces::default();
        pieces.push(Bytes::copy_from_slice(&packed[..10]));
        pieces.push(Bytes::copy_from_slice(&packed[10..]));
        let block_len = block.len() as u32;
        let zstd = BlockBytes {
            pieces,
            form: Form::Zstd { block_len },
        };
        assert_eq!(zstd.block_len(), block.len());
        assert_eq!(zstd.clone().expanded().unwrap().parts().concat(), block);
        let short = BlockBytes {
            form: Form::Zstd {
                block_len: block_len - 1,
            },
            ..zstd
        };
        assert_eq!(short.expanded().unwrap_err(), RecordError::Expand);
    }
}
