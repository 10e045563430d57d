//! Retention by total bytes and by age: whole old segments go, Stats reports first_seq, reads
//! start there, counts and history never include half-removed data, and a power loss at any
//! step of a removal leaves a store that opens with a contiguous run of intact events.

mod common;

use common::{ev, sim_store_opts, small};
use echolog::{CountQuery, Event, HistoryQuery, Options, Store};

#[test]
fn retention_by_bytes_keeps_the_store_under_its_bound_and_reads_start_at_first_seq() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        retention_bytes: Some(40_000),
        ..small()
    };
    let s = Store::open(d.path(), opts.clone()).unwrap();
    for i in 0..3000 {
        s.append(vec![ev(&format!("e{}", i % 3), i)]).unwrap();
    }
    let st = s.stats().unwrap();
    assert!(st.first_seq > 1, "{st:?}");
    assert!(st.disk_bytes <= 40_000 + 8192, "{st:?}");
    let all = s.read(1, 0).unwrap();
    assert_eq!(
        all[0].seq, st.first_seq,
        "a read from before first_seq starts there"
    );
    assert_eq!(all.len() as u64, 3000 - st.first_seq + 1);
    assert_eq!(
        s.count(&CountQuery::default()).unwrap().total,
        all.len() as u64
    );
    let h = s
        .history(&HistoryQuery {
            entity: "e1".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(h.iter().all(|e| e.seq >= st.first_seq));
    assert_eq!(
        h.len(),
        all.iter().filter(|e| e.event.entity == "e1").count()
    );
    drop(s);
    let s = Store::open(d.path(), opts).unwrap();
    assert_eq!(s.first_seq(), st.first_seq);
    assert_eq!(s.read(1, 0).unwrap().len(), all.len());
    drop(s);
    assert!(echolog::verify(d.path()).unwrap().ok());
}

#[test]
fn retention_by_age_removes_segments_whose_newest_event_is_older() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        retention_age: Some(std::time::Duration::from_secs(86_400)),
        ..small()
    };
    let s = Store::open(d.path(), opts).unwrap();
    // Old events (ts near the epoch), then current ones (ts 0: server time).
    for i in 0..400 {
        s.append(vec![ev("old", i)]).unwrap();
    }
    s.seal_active().unwrap();
    let first_new = s.last_seq() + 1;
    for i in 0..400 {
        s.append(vec![Event {
            ts: 0,
            ..ev("new", i)
        }])
        .unwrap();
    }
    s.seal_active().unwrap();
    assert_eq!(
        s.first_seq(),
        first_new,
        "every segment of old events is gone"
    );
    assert_eq!(s.read(1, 0).unwrap().len(), 400);
    assert!(s
        .history(&HistoryQuery {
            entity: "old".into(),
            ..Default::default()
        })
        .unwrap()
        .is_empty());
}

#[test]
fn a_power_loss_at_any_step_of_a_removal_leaves_a_contiguous_intact_run() {
    for calls in 0..14u64 {
        let (disk, dir, mut opts) = sim_store_opts();
        let events: Vec<Event> = (0..400).map(|i| ev(&format!("e{}", i % 3), i)).collect();
        {
            let s = Store::open(&dir, opts.clone()).unwrap();
            for e in &events {
                s.append(vec![e.clone()]).unwrap();
            }
            s.seal_active().unwrap();
        }
        opts.retention_bytes = Some(10_000);
        let s = Store::open(&dir, opts.clone()).unwrap();
        disk.power_off_after(calls);
        let _ = s.apply_retention();
        drop(s);
        disk.power_loss(calls * 7 + 1);
        let s = Store::open(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("power off after {calls} calls: {e}"));
        let got = s.read(1, 0).unwrap();
        let first = s.first_seq();
        assert_eq!(
            got.len() as u64,
            400 - first + 1,
            "contiguous up to the end"
        );
        for r in &got {
            assert_eq!(r.event, events[r.seq as usize - 1], "seq {}", r.seq);
        }
        // The next pass finishes the job.
        s.apply_retention().unwrap();
        assert!(s.stats().unwrap().disk_bytes <= 10_000 + 8192);
        assert!(disk
            .files(&dir)
            .iter()
            .filter(|f| f.ends_with(".idx"))
            .all(|f| f.as_str() >= format!("{:020}", s.first_seq()).as_str()));
    }
}
