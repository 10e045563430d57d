#![no_main]
//! An index file from arbitrary bytes, and its sections driven directly.

use echolog_format::index::{
    decode_block_table, DictView, HourCounts, IdsView, IndexHeader, IndexView, SECTION_BLOCKS,
    SECTION_ENTITIES, SECTION_TAG_HOURS, SECTION_TS,
};
use echolog_format::postings::decode_postings;
use echolog_format::ts_column::TsColumn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = IndexView::parse(data) {
        let _ = decode_block_table(v.section(SECTION_BLOCKS), &v.header);
        if let Ok(d) = DictView::parse(v.section(SECTION_ENTITIES), v.version) {
            if let Ok(Some(value)) = d.get(b"product:1") {
                let _ = decode_postings(value, v.header.record_count, v.version);
            }
        }
        let h = v.header;
        if let Ok(ts) = TsColumn::parse(v.section(SECTION_TS), h.record_count, h.min_ts, h.max_ts) {
            for ord in (0..h.record_count.min(4096)).step_by(7) {
                let _ = ts.get(ord);
            }
        }
    }
    // A ts column and a posting value from arbitrary bytes.
    let count = data.first().map_or(0, |b| u32::from(*b) * 3);
    if let Ok(ts) = TsColumn::parse(data, count, i64::MIN, i64::MAX) {
        for ord in 0..=count {
            let _ = ts.get(ord);
        }
    }
    let split = TsColumn::split(data, count);
    let _ = split.get(count / 2);
    for version in [6, echolog_format::FORMAT_VERSION] {
        let _ = decode_postings(data, count, version);
    }
    for version in [6, echolog_format::FORMAT_VERSION] {
        if let Ok(d) = DictView::parse(data, version) {
            for i in 0..d.len().min(256) {
                let _ = d.entry(i);
            }
            let _ = d.get(data.get(..4).unwrap_or(b""));
            let mut cur = d.cursor();
            while let Ok(Some(_)) = cur.next_entry() {}
        }
    }
    if let Ok(v) = IndexView::parse(data) {
        if let Ok(d) = DictView::parse(v.section(SECTION_TAG_HOURS), v.version) {
            for i in 0..d.len().min(256) {
                if let Ok((_, value)) = d.entry(i) {
                    if let Ok(h) = HourCounts::parse(value, &v.header) {
                        let _ = h.iter().count();
                    }
                }
            }
        }
    }
    // Hour counts from arbitrary bytes against a header over all time.
    let wide = IndexHeader {
        base_seq: 1,
        record_count: u32::MAX,
        block_count: 0,
        segment_len: 0,
        min_ts: i64::MIN,
        max_ts: i64::MAX,
    };
    if let Ok(h) = HourCounts::parse(data, &wide) {
        let _ = h.iter().fold(0i64, |a, (hour, n)| {
            a.wrapping_add(hour).wrapping_add(i64::from(n))
        });
    }
    if let Ok(ids) = IdsView::parse(data) {
        let _ = ids.lookup(u64::from(data.len() as u32));
    }
});
