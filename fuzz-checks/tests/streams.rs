//! The streaming decoders against the whole-body ones on answers with blocks of a megabyte
//! and more (which land aligned), under every chunking the fuzz targets use; too large for
//! the corpus test's every-truncation pass.

use holdall_fuzz_checks::{retrieve_stream, store_stream};
use holdall_proto::frame::{encode_retrieve_frame, encode_store_frame, RetrieveStatus};
use holdall_proto::BlockHash;

fn block(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect()
}

#[test]
fn large_blocks_decode_alike_however_the_body_is_cut() {
    let blocks = [block(3, (1 << 20) + 5), block(7, 10), block(9, 1 << 20)];
    let mut store = Vec::new();
    let mut retrieve = Vec::new();
    for b in &blocks {
        encode_store_frame(&mut store, &BlockHash::of(b), b);
        encode_retrieve_frame(&mut retrieve, &BlockHash::of(b), RetrieveStatus::Ok, b);
    }
    for seed in 0..8u8 {
        assert!(store_stream(&[vec![seed], store.clone()].concat()));
        assert!(retrieve_stream(&[vec![seed], retrieve.clone()].concat()));
        // Cut inside the second large block: both refuse it alike.
        let cut = retrieve.len() - 1000;
        assert!(!store_stream(&[vec![seed], store[..cut].to_vec()].concat()));
        assert!(!retrieve_stream(
            &[vec![seed], retrieve[..cut].to_vec()].concat()
        ));
    }
}
