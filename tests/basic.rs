//! End-to-end behaviour of the engine through its public API.

use echolog::{Bucket, CountQuery, Error, Event, HistoryQuery, Options, Store, SyncPolicy};

fn ev(entity: &str, kind: &str, ts: i64, tags: &[&str]) -> Event {
    Event {
        entity: entity.into(),
        kind: kind.into(),
        ts,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        payload: format!("{{\"e\":\"{entity}\",\"ts\":{ts}}}").into_bytes(),
        id: None,
    }
}

fn small() -> Options {
    Options {
        segment_size_bytes_max: 4096,
        block_raw_bytes_target: 512,
        ..Options::default()
    }
}

fn hist(store: &Store, entity: &str) -> Vec<u64> {
    store
        .history(&HistoryQuery {
            entity: entity.into(),
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn appended_events_come_back_exactly_across_segments_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    {
        let s = Store::open(d.path(), small()).unwrap();
        for i in 0..300i64 {
            let mut e = ev(
                &format!("p:{}", i % 7),
                "k",
                1_000 + i,
                &["tenant:a", "x:y"],
            );
            e.id = (i % 3 == 0).then(|| format!("id-{i}"));
            let out = s.append(vec![e.clone()]).unwrap();
            assert_eq!(out.seqs, vec![i as u64 + 1]);
            all.push(e);
        }
        assert!(s.stats().unwrap().segments > 3, "small segments roll over");
    }
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(s.last_seq(), 300);
    let back = s.read(1, 0).unwrap();
    assert_eq!(back.len(), 300);
    for (i, b) in back.iter().enumerate() {
        assert_eq!(b.seq, i as u64 + 1);
        assert_eq!(b.event, all[i]);
        assert_eq!(b.deleted_by, 0);
    }
    let h = hist(&s, "p:3");
    let want: Vec<u64> = (0..300u64).filter(|i| i % 7 == 3).map(|i| i + 1).collect();
    assert_eq!(h, want);
    let rev = s
        .history(&HistoryQuery {
            entity: "p:3".into(),
            reverse: true,
            limit: 5,
            ..Default::default()
        })
        .unwrap();
    let want_rev: Vec<u64> = want.iter().rev().take(5).copied().collect();
    assert_eq!(rev.iter().map(|e| e.seq).collect::<Vec<_>>(), want_rev);
    assert!(hist(&s, "nobody").is_empty());
}

#[test]
fn second_writer_on_the_same_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let _a = Store::open(d.path(), Options::default()).unwrap();
    let e = Store::open(d.path(), Options::default()).err().unwrap();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

#[test]
fn ts_zero_means_server_time() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(
        d.path(),
        Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )
    .unwrap();
    s.append(vec![ev("a", "k", 0, &[])]).unwrap();
    let e = &s.read(1, 1).unwrap()[0];
    assert!(e.event.ts > 1_600_000_000_000, "{}", e.event.ts);
}

#[test]
fn counts_follow_filters_buckets_and_tombstones() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let hour = 3_600_000i64;
    for i in 0..200i64 {
        let tenant = if i % 2 == 0 { "tenant:a" } else { "tenant:b" };
        s.append(vec![ev(
            &format!("p:{}", i % 5),
            "call",
            i * 60_000 + 1,
            &[tenant],
        )])
        .unwrap();
    }
    let q = CountQuery {
        tags: vec!["tenant:a".into()],
        bucket: Bucket::Hour,
        ..Default::default()
    };
    let r = s.count(&q).unwrap();
    assert_eq!(r.total, 100);
    assert_eq!(r.buckets.iter().map(|b| b.count).sum::<u64>(), 100);
    assert_eq!(r.buckets[0].start_ts, 0);
    assert_eq!(r.buckets[1].start_ts, hour);
    assert_eq!(r.buckets[0].count, 30);
    let r = s
        .count(&CountQuery {
            from_ts: Some(90_000),
            to_ts: Some(300_000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.total, 3, "events at 2, 3, 4 minutes");
    let t = s.delete("p:1", &[], "upstream gone").unwrap();
    let r = s.count(&CountQuery::default()).unwrap();
    assert_eq!(r.total, 160);
    let h = s
        .history(&HistoryQuery {
            entity: "p:1".into(),
            include_deleted: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.len(), 41, "40 events and the tombstone");
    assert!(h[..40]
        .iter()
        .all(|e| e.deleted_by == t && e.event.tags.last().unwrap() == "reason:upstream gone"));
    assert!(hist(&s, "p:1").is_empty());
    s.restore("p:1").unwrap();
    assert_eq!(hist(&s, "p:1").len(), 40);
    assert_eq!(s.count(&CountQuery::default()).unwrap().total, 200);
    assert_eq!(
        s.count(&CountQuery {
            kind: Some("$delete".into()),
            ..Default::default()
        })
        .unwrap()
        .total,
        1
    );
}

#[test]
fn history_decompresses_only_blocks_holding_the_entity() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size_bytes_max: 1 << 20,
        block_raw_bytes_target: 256,
        // This is about reading a segment: a background compaction would cluster it first
        // (and then the three events sit in one block; tests/compaction.rs covers that).
        compaction: false,
        ..Options::default()
    };
    {
        let s = Store::open(d.path(), opts.clone()).unwrap();
        for i in 0..400i64 {
            let entity = if i == 50 || i == 51 || i == 300 {
                "needle"
            } else {
                "hay"
            };
            s.append(vec![ev(entity, "k", 1 + i, &[])]).unwrap();
        }
        s.seal_active().unwrap();
    }
    let s = Store::open(d.path(), opts).unwrap();
    assert_eq!(
        s.stats().unwrap().segments,
        2,
        "one sealed segment and an empty active one"
    );
    let h = s
        .history(&HistoryQuery {
            entity: "needle".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        h.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![51, 52, 301]
    );
    // Each append is its own block here, so three events mean three blocks.
    assert_eq!(s.stats().unwrap().blocks_decoded, 3);
    assert!(hist(&s, "absent").is_empty());
    assert_eq!(
        s.stats().unwrap().blocks_decoded,
        3,
        "an absent entity reads no block"
    );
}

#[test]
fn extreme_query_bounds_answer_without_panicking() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    for i in 0..50i64 {
        s.append(vec![ev("a", "k", 1 + i, &["t:1"])]).unwrap();
    }
    s.seal_active().unwrap();
    let q = HistoryQuery {
        entity: "a".into(),
        after_seq: u64::MAX,
        ..Default::default()
    };
    assert!(s.history(&q).unwrap().is_empty());
    let q = HistoryQuery {
        entity: "a".into(),
        after_seq: u64::MAX,
        reverse: true,
        ..Default::default()
    };
    assert_eq!(s.history(&q).unwrap().len(), 50);
    let q = CountQuery {
        from_ts: Some(i64::MIN),
        to_ts: Some(i64::MAX),
        bucket: Bucket::Day,
        ..Default::default()
    };
    assert_eq!(s.count(&q).unwrap().total, 50);
    assert!(s.read(u64::MAX, 0).unwrap().is_empty());
    assert!(s.get(u64::MAX).unwrap().is_none());
}

#[test]
fn a_reader_sees_a_delete_record_only_together_with_the_deletion_it_makes() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(
        d.path(),
        Options {
            sync: echolog::SyncPolicy::Never,
            ..Options::default()
        },
    )
    .unwrap();
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..3000 {
                let e = Event {
                    entity: "x".into(),
                    kind: "k".into(),
                    ts: 1 + i,
                    ..Default::default()
                };
                s.append(vec![e]).unwrap();
                s.delete("x", &[], "gone").unwrap();
            }
        })
    };
    let q = HistoryQuery {
        entity: "x".into(),
        include_deleted: true,
        ..Default::default()
    };
    let mut checked = 0;
    while !writer.is_finished() {
        let h = s.history(&q).unwrap();
        let newest_delete = h
            .iter()
            .filter(|e| e.event.kind == echolog::KIND_DELETE)
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        for e in h
            .iter()
            .filter(|e| e.event.kind == "k" && e.seq < newest_delete)
        {
            assert_ne!(
                e.deleted_by, 0,
                "seq {} reads as live beside the $delete at {newest_delete}",
                e.seq
            );
        }
        let all = s.read(1, 0).unwrap();
        let newest_delete = all
            .iter()
            .filter(|e| e.event.kind == echolog::KIND_DELETE)
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        assert!(all
            .iter()
            .filter(|e| e.event.kind == "k" && e.seq < newest_delete)
            .all(|e| e.deleted_by != 0));
        checked += 1;
    }
    writer.join().unwrap();
    assert!(checked > 0);
}

#[test]
fn the_idempotency_window_bounds_how_far_back_an_id_is_recognised() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        idempotency_window_events: 50,
        segment_size_bytes_max: 4096,
        block_raw_bytes_target: 512,
        ..Options::default()
    };
    let s = Store::open(d.path(), opts).unwrap();
    let with_id = |id: &str| Event {
        id: Some(id.into()),
        ..ev("x", "k", 5, &[])
    };
    assert_eq!(s.append(vec![with_id("a")]).unwrap().seqs, vec![1]);
    s.seal_active().unwrap();
    for i in 0..49 {
        s.append(vec![ev("y", "k", 10 + i, &[])]).unwrap();
    }
    assert!(
        s.stats().unwrap().segments > 1,
        "the id is in a sealed segment"
    );
    let out = s.append(vec![with_id("a")]).unwrap();
    assert_eq!((out.seqs, out.duplicates), (vec![1], 1), "50 back: inside");
    s.append(vec![ev("y", "k", 99, &[])]).unwrap();
    let out = s.append(vec![with_id("a")]).unwrap();
    assert_eq!(
        (out.seqs, out.duplicates),
        (vec![52], 0),
        "51 back: outside"
    );
    let out = s.append(vec![with_id("a")]).unwrap();
    assert_eq!((out.seqs, out.duplicates), (vec![52], 1));
}

/// Retries are recognised in every sealed segment, by the id filter of the segments sealed
/// while the store runs and, after a reopen, while and after its builder adds the segments
/// found at open; ids never seen are taken as new.
#[test]
fn every_retried_id_is_a_duplicate_in_any_segment_before_and_after_a_reopen() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size_bytes_max: 4096,
        block_raw_bytes_target: 512,
        compaction: false,
        ..Options::default()
    };
    let with_id = |i: u64| Event {
        id: Some(format!("req-{i}")),
        ..ev("x", "k", i as i64 + 1, &[])
    };
    let s = Store::open(d.path(), opts.clone()).unwrap();
    let n = 3000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        s.append(chunk.iter().map(|i| with_id(*i)).collect())
            .unwrap();
    }
    let st = s.stats().unwrap();
    assert!(st.segments >= 8, "ids in many sealed segments");
    // Segments sealed while the store runs join the filter at their seal.
    assert_eq!(st.id_filter_backlog_segments, 0);
    assert!(st.id_filter_bytes > 0);
    let retry_all = |s: &Store, step: u64| {
        for i in (0..n).step_by(step as usize) {
            let out = s.append(vec![with_id(i)]).unwrap();
            assert_eq!((out.seqs, out.duplicates), (vec![i + 1], 1), "req-{i}");
        }
    };
    retry_all(&s, 7);
    drop(s);
    for round in 0..2 {
        if round == 0 {
            // Without the filter saved at close: the builder adds every sealed segment.
            std::fs::remove_file(d.path().join(echolog::ID_FILTER_FILE)).unwrap();
        }
        let s = Store::open(d.path(), opts.clone()).unwrap();
        let st = s.stats().unwrap();
        assert_eq!(
            (st.id_filter_backlog_segments, st.id_filter_bytes),
            (st.segments - 1, 0),
            "after open every sealed segment waits for the first id"
        );
        // The first round starts right after open, while the builder runs; the second takes
        // the filter the first saved at close, whole, at its first id.
        retry_all(&s, 1 + round);
        if round == 1 {
            assert_eq!(s.stats().unwrap().id_filter_backlog_segments, 0);
        }
        let fresh = s.append(vec![with_id(n + 10 + round)]).unwrap();
        assert_eq!(fresh.duplicates, 0);
        assert_eq!(fresh.seqs, vec![s.last_seq()]);
        // The builder the first id started covers every sealed segment in the end.
        let started = std::time::Instant::now();
        while s.stats().unwrap().id_filter_backlog_segments > 0 {
            assert!(
                started.elapsed().as_secs() < 30,
                "the builder never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(s.stats().unwrap().id_filter_bytes > 0);
    }
}

/// Retention that removes segments the id filter has not reached yet (after a reopen, before
/// the first id) tells the filter so: its builder steps over them instead of stopping at a
/// file that is gone, and ends covering every sealed segment left.
#[test]
fn retention_of_segments_the_id_filter_has_not_reached_does_not_stop_it() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size_bytes_max: 4096,
        block_raw_bytes_target: 512,
        compaction: false,
        ..Options::default()
    };
    let with_id = |i: u64| Event {
        id: Some(format!("req-{i}")),
        ..ev("x", "k", i as i64 + 1, &[])
    };
    let s = Store::open(d.path(), opts.clone()).unwrap();
    for chunk in (0..2000u64).collect::<Vec<_>>().chunks(50) {
        s.append(chunk.iter().map(|i| with_id(*i)).collect())
            .unwrap();
    }
    let before = s.stats().unwrap();
    drop(s);
    let s = Store::open(
        d.path(),
        Options {
            retention_bytes: Some(before.disk_bytes / 2),
            ..opts
        },
    )
    .unwrap();
    // Events without ids: segments seal, retention removes the oldest, the filter waits.
    let mut i = 0;
    while s.stats().unwrap().first_seq == 1 {
        s.append(vec![ev("y", "k", 10_000 + i, &[])]).unwrap();
        i += 1;
        assert!(i < 100_000, "retention never removed a segment");
    }
    assert!(s.stats().unwrap().id_filter_backlog_segments > 0);
    // The first id starts the builder; it must get through.
    s.append(vec![with_id(1_000_000)]).unwrap();
    let started = std::time::Instant::now();
    while s.stats().unwrap().id_filter_backlog_segments > 0 {
        assert!(started.elapsed().as_secs() < 30, "the id filter stopped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The newest id of the first run is still stored: its retry is a duplicate.
    let out = s.append(vec![with_id(1999)]).unwrap();
    assert_eq!((out.seqs, out.duplicates), (vec![2000], 1));
}
