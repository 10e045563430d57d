#![no_main]
//! An index file from arbitrary bytes, and its sections driven directly.

use echolog_format::index::{
    decode_block_table, DictView, IdsView, IndexView, SECTION_BLOCKS, SECTION_ENTITIES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = IndexView::parse(data) {
        let _ = decode_block_table(v.section(SECTION_BLOCKS), &v.header);
        if let Ok(d) = DictView::parse(v.section(SECTION_ENTITIES)) {
            let _ = d.get(b"product:1");
        }
    }
    if let Ok(d) = DictView::parse(data) {
        for i in 0..d.len().min(256) {
            let _ = d.entry(i);
        }
        let _ = d.get(data.get(..4).unwrap_or(b""));
    }
    if let Ok(ids) = IdsView::parse(data) {
        let _ = ids.lookup(u64::from(data.len() as u32));
    }
});
