#![no_main]
//! A block from arbitrary bytes: header, checksum, decompression, records. The body decoders
//! are also driven directly so that fuzzing is not stopped by the checksum.

use echolog_format::block::{
    decode_block, decompress_body, record_at, record_offsets, BlockHeader, CODEC_ZSTD,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, body)) = decode_block(data) {
        if let Ok(raw) = decompress_body(&h, body) {
            let _ = record_offsets(&raw, h.count);
        }
    }
    let count = data.first().copied().unwrap_or(0) as u32;
    if let Ok(offsets) = record_offsets(data, count) {
        // Offsets check framing only; a record's contents (UTF-8 of its strings) are checked
        // when it is read, so reading may refuse, but never panic.
        for o in offsets {
            if let Ok(r) = record_at(data, o) {
                let _ = r.tags().count();
            }
        }
    }
    let h = BlockHeader {
        crc: 0,
        body_len: data.len() as u32,
        raw_len: 1 << 16,
        first_seq: 1,
        count: 1,
        codec: CODEC_ZSTD,
        flags: 0,
        min_ts: 0,
        max_ts: 0,
    };
    let _ = decompress_body(&h, data);
});
