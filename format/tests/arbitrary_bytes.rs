//! Every decoder, fed arbitrary bytes, returns Ok or Err and never panics. Later stages
//! (decompression, record parsing, dictionaries) are also fed garbage directly, since a
//! checksum would otherwise stop random input before reaching them.

use echolog_format::block::{
    decode_block, decompress_body, record_offsets, BlockHeader, CODEC_ZSTD,
};
use echolog_format::cursors_file::decode_cursors;
use echolog_format::id_filter_file::{check_page, decode_id_filter, decode_id_filter_whole};
use echolog_format::index::{decode_block_table, DictView, IdsView, IndexHeader, IndexView};
use echolog_format::segment_header::SegmentHeader;
use echolog_format::tombstone_file::decode_tombstones;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), count in 0u32..2000, raw_len in 0u32..100_000) {
        let _ = SegmentHeader::decode(&bytes);
        let _ = BlockHeader::decode(&bytes);
        let _ = decode_block(&bytes);
        let _ = record_offsets(&bytes, count);
        let h = BlockHeader { crc: 0, body_len: bytes.len() as u32, raw_len, first_seq: 1, count: 1, codec: CODEC_ZSTD, flags: 0, min_ts: 0, max_ts: 0 };
        let _ = decompress_body(&h, &bytes);
        let _ = IndexView::parse(&bytes);
        for version in [6, echolog_format::FORMAT_VERSION] {
            if let Ok(d) = DictView::parse(&bytes, version) {
                for i in 0..d.len().min(64) {
                    let _ = d.entry(i);
                }
                let _ = d.get(b"key");
                let mut cur = d.cursor();
                while let Ok(Some(_)) = cur.next_entry() {}
            }
        }
        if let Ok(ids) = IdsView::parse(&bytes) {
            let _ = ids.lookup(7);
        }
        let ih = IndexHeader { base_seq: 1, record_count: count, block_count: (bytes.len() / 32) as u32, segment_len: 1 << 20, min_ts: 0, max_ts: 0 };
        let _ = decode_block_table(&bytes, &ih);
        let _ = decode_tombstones(&bytes);
        let _ = decode_cursors(&bytes);
        let _ = decode_id_filter_whole(&bytes);
        if let Ok(parts) = decode_id_filter(&bytes) {
            for p in &parts {
                let _ = check_page(&bytes, p, count as usize % 4);
                let _ = p.block(&bytes, count as usize);
            }
        }
    }
}

#[test]
fn zstd_bombs_are_capped() {
    // A small frame that claims a large output is not decompressed past raw_len.
    for len in [1usize, 1023, 1024, 1025, 64 << 20] {
        let body = zstd::bulk::compress(&vec![0u8; len], 1).unwrap();
        let h = BlockHeader {
            crc: 0,
            body_len: body.len() as u32,
            raw_len: 1024,
            first_seq: 1,
            count: 1,
            codec: CODEC_ZSTD,
            flags: 0,
            min_ts: 0,
            max_ts: 0,
        };
        assert_eq!(decompress_body(&h, &body).is_ok(), len == 1024, "len {len}");
    }
}
