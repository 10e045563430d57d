#![no_main]
//! Request validation: events and queries built from arbitrary bytes (any UTF-8, control
//! characters, empty and oversize fields, any ts). An append either stores the event exactly
//! as given (ts 0 resolved to server time) or refuses the whole batch with an InvalidArgument
//! or TooLarge error; queries answer or refuse with InvalidArgument. Never a panic.

use std::path::Path;

use echolog::storage::sim::SimDisk;
use echolog::{Bucket, CountQuery, Error, Event, HistoryQuery, Options, Store};
use libfuzzer_sys::fuzz_target;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn refused_cleanly(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument(_) | Error::TooLarge(_))
}

fuzz_target!(|data: &[u8]| {
    let (ts_bytes, rest) = data.split_at(data.len().min(8));
    let mut ts = [0u8; 8];
    ts[..ts_bytes.len()].copy_from_slice(ts_bytes);
    let ts = i64::from_le_bytes(ts);
    let parts: Vec<&[u8]> = rest.split(|b| *b == 0xff).collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or(&[]);
    let tags: Vec<String> = parts.iter().skip(4).map(|p| text(p)).collect();
    let event = Event {
        entity: text(part(0)),
        kind: text(part(1)),
        ts,
        tags,
        payload: part(2).to_vec(),
        id: (!part(3).is_empty()).then(|| text(part(3))),
    };
    let disk = SimDisk::new();
    let opts = Options {
        backend: Some(disk.backend()),
        payload_bytes_max: 64,
        ..Options::default()
    };
    let store = Store::open(Path::new("/fuzz"), opts).expect("open");
    match store.append(vec![event.clone()]) {
        Ok(out) => {
            let got = store.get(out.seqs[0]).expect("read").expect("stored");
            let mut want = event.clone();
            if want.ts == 0 {
                want.ts = got.event.ts;
            }
            assert_eq!(got.event, want);
        }
        Err(e) => assert!(refused_cleanly(&e), "{e}"),
    }
    let from = (ts % 1000 != 0).then_some(ts / 3);
    let h = store.history(&HistoryQuery {
        entity: event.entity.clone(),
        from_ts: from,
        to_ts: (ts % 7 != 0).then_some(ts),
        after_seq: ts as u64,
        limit: ts as u32,
        reverse: ts < 0,
        include_deleted: ts % 2 == 0,
        bytes_max: (ts as u64) >> 40,
    });
    if let Err(e) = h {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    let c = store.count(&CountQuery {
        entity: (!event.entity.is_empty()).then(|| event.entity.clone()),
        kind: (!event.kind.is_empty()).then(|| event.kind.clone()),
        tags: event.tags.clone(),
        from_ts: from,
        to_ts: (ts % 5 != 0).then_some(ts),
        bucket: [Bucket::None, Bucket::Minute, Bucket::Hour, Bucket::Day][(ts as usize) % 4],
        include_deleted: ts % 3 == 0,
    });
    if let Err(e) = c {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    if let Err(e) = store.delete(&event.entity, &[], &text(part(3))) {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
});
