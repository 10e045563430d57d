#![no_main]
//! A cluster file's header and directory from arbitrary bytes: parse, look up, walk.

use echolog_format::cluster::{
    split_cluster_body, ClusterHeader, DirectoryView, CLUSTER_HEADER_LEN,
};
use echolog_format::FORMAT_VERSION;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ClusterHeader::decode(data, data.len() as u64) {
        let dir = data.get(h.directory_offset as usize..).unwrap_or_default();
        if let Ok(d) = DirectoryView::parse(dir, &h) {
            let _ = d.find(b"product:1");
            for i in 0..d.entity_count().min(256) {
                let _ = d.entry(i);
            }
            for b in 0..d.block_count().min(256) {
                let _ = d.block(b);
            }
        }
    }
    // The directory alone, in either layout, against a header made from the first bytes.
    if data.len() > CLUSTER_HEADER_LEN {
        let (head, rest) = data.split_at(CLUSTER_HEADER_LEN);
        let h = ClusterHeader {
            version: if head[2] & 1 == 0 { 6 } else { FORMAT_VERSION },
            base_seq: 1,
            end_seq: u64::MAX,
            record_count: u64::from(head[0]),
            level: 0,
            block_count: u32::from(head[1]),
            directory_offset: CLUSTER_HEADER_LEN as u64,
            directory_len: rest.len() as u64,
        };
        if let Ok(d) = DirectoryView::slice(rest, &h) {
            let _ = d.find(head.get(3..10).unwrap_or_default());
            for i in 0..d.entity_count().min(64) {
                let _ = d.entry(i);
            }
        }
        let _ = DirectoryView::parse(rest, &h);
    }
    let count = u32::from(data.first().copied().unwrap_or(0));
    for version in [6, FORMAT_VERSION] {
        let _ = split_cluster_body(data, count, 1, version);
    }
});
