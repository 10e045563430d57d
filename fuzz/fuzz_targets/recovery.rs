#![no_main]
//! Segment recovery over arbitrary bytes: a store whose active segment holds a valid header
//! and then anything at all is opened on the simulated disk. Open either refuses with an error
//! or opens a store that reads back every record it claims, counts them, and takes appends.

use std::path::Path;

use echolog::storage::sim::SimDisk;
use echolog::storage::StorageBackend;
use echolog::{CountQuery, Event, Options, Store};
use echolog_format::segment_header::SegmentHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::new();
    let dir = Path::new("/fuzz");
    disk.create_dir_all(dir).expect("sim dir");
    let mut seg = SegmentHeader::new(1).encode().to_vec();
    seg.extend_from_slice(data);
    disk.write_file(&dir.join("00000000000000000001.seg"), &seg);
    let opts = Options {
        backend: Some(disk.backend()),
        ..Options::default()
    };
    let Ok(store) = Store::open(dir, opts) else {
        return;
    };
    let all = store.read(1, 0).expect("a store that opened reads back");
    // Every record reads back, in seq order; only `$purged` records (which the input may
    // hold) are left out of a read.
    let last = store.last_seq();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(all.last().is_none_or(|e| e.seq <= last));
    assert_eq!(store.stats().expect("stats").events, last);
    store
        .count(&CountQuery::default())
        .expect("a store that opened counts");
    let e = Event {
        entity: "after".into(),
        kind: "k".into(),
        ts: 1,
        ..Event::default()
    };
    let out = store.append(vec![e]).expect("appends after recovery");
    assert_eq!(out.seqs, vec![last + 1]);
});
