//! Compaction into entity-clustered files: history answers the same through cluster files as
//! through the segments, files merge into O(log N) per entity, open keeps what is whole and
//! drops leftovers, and the background thread does it without being asked.

use std::collections::BTreeMap;
use std::path::Path;

use echolog::compaction::Step;
use echolog::{Event, HistoryQuery, Options, Store, StoredEvent};

fn opts() -> Options {
    Options {
        segment_size_bytes_max: 8 * 1024,
        block_raw_bytes_target: 2048,
        cluster_block_raw_bytes_target: 1024,
        compaction: false,
        compaction_fanout: 2,
        ..Options::default()
    }
}

fn ev(i: u64) -> Event {
    // Zipf-ish: entity 0 gets a third of the events.
    let entity = if i.is_multiple_of(3) { 0 } else { i * 7 % 41 };
    Event {
        entity: format!("product:{entity}"),
        kind: ["price", "link"][(i % 2) as usize].into(),
        ts: 1_000_000 + i as i64 * 1000,
        tags: vec![format!("tenant:t{}", i % 5)],
        payload: format!(
            "{{\"i\":{i},\"pad\":\"{}\"}}",
            "x".repeat((i % 50) as usize)
        )
        .into_bytes(),
        id: i.is_multiple_of(10).then(|| format!("id-{i}")),
    }
}

fn fill(s: &Store, n: u64) {
    fill_from(s, 0, n);
}

/// Appends events `from..from + n`.
fn fill_from(s: &Store, from: u64, n: u64) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(97) {
        s.append(chunk.iter().map(|i| ev(*i)).collect()).unwrap();
    }
}

/// Every entity's history from the records themselves (the plain model).
fn by_entity(s: &Store) -> BTreeMap<String, Vec<StoredEvent>> {
    let mut m: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    for e in s.read(1, 0).unwrap() {
        if !e.event.kind.starts_with('$') && e.deleted_by == 0 {
            m.entry(e.event.entity.clone()).or_default().push(e);
        }
    }
    m
}

fn history(s: &Store, entity: &str, reverse: bool, after: u64, limit: u32) -> Vec<u64> {
    s.history(&HistoryQuery {
        entity: entity.into(),
        reverse,
        after_seq: after,
        limit,
        ..Default::default()
    })
    .unwrap()
    .iter()
    .map(|e| e.seq)
    .collect()
}

fn check_all(s: &Store, model: &BTreeMap<String, Vec<StoredEvent>>) {
    for (entity, evs) in model {
        let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
        assert_eq!(history(s, entity, false, 0, 0), seqs, "{entity} forward");
        let mut rev = seqs.clone();
        rev.reverse();
        assert_eq!(history(s, entity, true, 0, 0), rev, "{entity} reverse");
        assert_eq!(
            history(s, entity, true, 0, 5),
            rev[..rev.len().min(5)],
            "{entity} newest 5"
        );
        if seqs.len() > 3 {
            let mid = seqs[seqs.len() / 2];
            let after: Vec<u64> = seqs.iter().copied().filter(|q| *q > mid).take(7).collect();
            assert_eq!(
                history(s, entity, false, mid, 7),
                after,
                "{entity} after {mid}"
            );
            let before: Vec<u64> = rev.iter().copied().filter(|q| *q < mid).take(7).collect();
            assert_eq!(
                history(s, entity, true, mid, 7),
                before,
                "{entity} before {mid}"
            );
        }
        // A byte bound stops after the event that reaches it.
        let bound = 700;
        let cut = s
            .history(&HistoryQuery {
                entity: entity.clone(),
                bytes_max: bound,
                ..Default::default()
            })
            .unwrap();
        let mut held = 0;
        let want: Vec<u64> = evs
            .iter()
            .take_while(|e| {
                let before = held;
                held += e.size_bytes();
                before < bound
            })
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            cut.iter().map(|e| e.seq).collect::<Vec<_>>(),
            want,
            "{entity} bytes"
        );
        // Whole events, not only seqs.
        let got = s
            .history(&HistoryQuery {
                entity: entity.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(&got, evs, "{entity} events");
    }
}

fn cluster_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".clu"))
        .collect();
    v.sort();
    v
}

#[test]
fn history_through_cluster_files_equals_history_through_segments() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), opts()).unwrap();
    fill(&s, 6000);
    s.delete("product:7", &[], "gone").unwrap();
    let deleted_seq = history(&s, "product:0", false, 0, 3)[2];
    s.delete("product:0", &[deleted_seq], "typo").unwrap();
    fill(&s, 100);
    let model = by_entity(&s);
    check_all(&s, &model);
    let sealed = s.stats().unwrap().segments - 1;
    assert!(sealed >= 8, "enough segments to merge: {sealed}");

    assert!(!s.stats().unwrap().compaction_idle);
    let steps = s.compact_now().unwrap();
    assert!(s.stats().unwrap().compaction_idle);
    // Level-0 files never pile up past 2 x fanout: merges go first once they would.
    let mut level0 = 0i64;
    for st in &steps {
        match st {
            Step::Built { .. } => level0 += 1,
            Step::Merged {
                level: 1, inputs, ..
            } => level0 -= *inputs as i64,
            _ => {}
        }
        assert!(level0 <= 4, "{level0} level-0 files: {steps:?}");
    }
    let built = steps
        .iter()
        .filter(|s| matches!(s, Step::Built { .. }))
        .count();
    let merged = steps
        .iter()
        .filter(|s| matches!(s, Step::Merged { .. }))
        .count();
    assert_eq!(built as u32, sealed, "one level-0 file per sealed segment");
    assert!(merged > 0, "{steps:?}");
    // product:0 fills whole 1 KiB blocks: merges copy those as they are and write the
    // blocks where runs meet record by record (check_all below reads both kinds).
    let (copied, records) = steps.iter().fold((0, 0), |(c, n), st| match st {
        Step::Merged {
            records_copied,
            records,
            ..
        } => (c + records_copied, n + records),
        _ => (c, n),
    });
    assert!(
        copied > 0 && copied < records,
        "{copied} of {records} copied"
    );
    let st = s.stats().unwrap();
    assert_eq!(st.compaction_backlog_segments, 0);
    // Fanout 2: at most one file per level (plus one) remains, O(log N).
    let levels = 32 - sealed.leading_zeros();
    assert!(
        st.cluster_files <= levels + 1,
        "{} files for {sealed} segments",
        st.cluster_files
    );
    assert_eq!(
        cluster_files(d.path()).len() as u32,
        st.cluster_files,
        "inputs were removed"
    );
    check_all(&s, &model);
    // The deleted event shows with include_deleted, with its reason, from a cluster file.
    let all = s
        .history(&HistoryQuery {
            entity: "product:0".into(),
            include_deleted: true,
            ..Default::default()
        })
        .unwrap();
    let gone = all.iter().find(|e| e.seq == deleted_seq).unwrap();
    assert!(gone.deleted_by > 0 && gone.event.tags.contains(&"reason:typo".to_string()));

    // Reopen: the same files serve the same answers; new data joins through segments.
    drop(s);
    let s = Store::open(d.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().compaction_backlog_segments, 0);
    check_all(&s, &model);
    fill(&s, 3000);
    let model = by_entity(&s);
    check_all(&s, &model);
    s.compact_now().unwrap();
    check_all(&s, &model);
}

/// A merge that meets a damaged block in one of its inputs drops that input (a copy of its
/// segments) instead of failing for good: its segments are clustered again and merged, no
/// damaged byte is copied on, and history answers as the records say.
#[test]
fn a_merge_input_found_damaged_is_dropped_and_rebuilt_from_its_segments() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), opts()).unwrap();
    let mut i = 0;
    while s.stats().unwrap().segments < 2 {
        fill_from(&s, i, 50);
        i += 50;
    }
    s.compact_now().unwrap();
    let files = cluster_files(d.path());
    assert_eq!(files.len(), 1, "one level-0 file: {files:?}");
    // Damage the body of its first block (past the 64-byte file header and 48-byte block
    // header): only reading that block finds it.
    let path = d.path().join(&files[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[64 + 48 + 4] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    while s.stats().unwrap().segments < 3 {
        fill_from(&s, i, 50);
        i += 50;
    }
    let model = by_entity(&s);
    let steps = s.compact_now().unwrap();
    assert!(steps.contains(&Step::Dropped { files: 1 }), "{steps:?}");
    assert!(
        steps.iter().any(|st| matches!(st, Step::Merged { .. })),
        "{steps:?}"
    );
    assert!(s.stats().unwrap().compaction_idle);
    assert!(
        !cluster_files(d.path()).contains(&files[0]),
        "the damaged file is gone"
    );
    check_all(&s, &model);
    drop(s);
    let report = echolog::verify(d.path()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn open_removes_leftover_and_damaged_cluster_files_and_history_stays_right() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), opts()).unwrap();
    fill(&s, 3000);
    // Level-0 files only: keep copies of two, as a merge cut short before removing its inputs
    // would leave them.
    let o = Options {
        compaction_level_max: 0,
        ..opts()
    };
    drop(s);
    let s = Store::open(d.path(), o).unwrap();
    s.compact_now().unwrap();
    let level0 = cluster_files(d.path());
    assert!(level0.len() >= 4);
    let saved: Vec<(String, Vec<u8>)> = level0[..2]
        .iter()
        .map(|n| (n.clone(), std::fs::read(d.path().join(n)).unwrap()))
        .collect();
    drop(s);
    let s = Store::open(d.path(), opts()).unwrap();
    s.compact_now().unwrap();
    let merged = cluster_files(d.path());
    assert!(merged.len() < level0.len());
    drop(s);
    for (n, bytes) in &saved {
        std::fs::write(d.path().join(n), bytes).unwrap();
    }
    // And a damaged one that covers a segment nothing else covers... after a new segment.
    let s = Store::open(d.path(), opts()).unwrap();
    assert_eq!(
        cluster_files(d.path()),
        merged,
        "covered leftovers are removed at open"
    );
    fill(&s, 1500);
    s.compact_now().unwrap();
    let newest = cluster_files(d.path()).last().unwrap().clone();
    let model = by_entity(&s);
    drop(s);
    let p = d.path().join(&newest);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[20] ^= 0xff; // inside the header: its checksum fails
    std::fs::write(&p, bytes).unwrap();
    let s = Store::open(d.path(), opts()).unwrap();
    assert!(
        !d.path().join(&newest).exists(),
        "a damaged cluster file is removed"
    );
    assert!(s.stats().unwrap().compaction_backlog_segments > 0);
    check_all(&s, &model);
    s.compact_now().unwrap();
    assert_eq!(s.stats().unwrap().compaction_backlog_segments, 0);
    check_all(&s, &model);
}

#[test]
fn the_background_thread_compacts_after_seals() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(
        d.path(),
        Options {
            compaction: true,
            ..opts()
        },
    )
    .unwrap();
    fill(&s, 4000);
    let started = std::time::Instant::now();
    loop {
        let st = s.stats().unwrap();
        if st.compaction_backlog_segments == 0 && st.cluster_files > 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "compaction did not catch up: {st:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    check_all(&s, &by_entity(&s));
    // Closing while compaction may be running: the directory is free at once.
    fill(&s, 2000);
    drop(s);
    let s = Store::open(d.path(), opts()).unwrap();
    check_all(&s, &by_entity(&s));
}

#[test]
fn verify_reads_cluster_files_whole_and_names_a_damaged_one() {
    let d = tempfile::tempdir().unwrap();
    let model = {
        let s = Store::open(d.path(), opts()).unwrap();
        fill(&s, 3000);
        s.compact_now().unwrap();
        by_entity(&s)
    };
    let r = echolog::verify(d.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    let files = cluster_files(d.path());
    assert_eq!(r.cluster_files, files.len());
    // A flipped byte in the middle of a cluster file: inside a block or the directory.
    let p = d.path().join(&files[0]);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    let r = echolog::verify(d.path()).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].file, p);
    // History still answers right: the damaged file's segments stand in for it.
    let s = Store::open(d.path(), opts()).unwrap();
    check_all(&s, &model);
}

/// A store of small blocks where product:0's events are in ~every block of its segments.
/// Checks every history against the records, with a deleted event inside a limit, and again
/// after a reopen.
fn long_histories_read_the_same_as_the_records(o: Options, segments: impl Fn(u32) -> bool) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), o.clone()).unwrap();
    fill(&s, 6000);
    let deleted_seq = history(&s, "product:0", false, 0, 40)[30];
    s.delete("product:0", &[deleted_seq], "typo").unwrap();
    let n = s.stats().unwrap().segments;
    assert!(segments(n), "{n} segments");
    let model = by_entity(&s);
    assert!(model["product:0"].len() > 1900);
    check_all(&s, &model);
    // A limit that reaches past the deleted event: the answer has room for 40 ordinals, one
    // of them is dropped, so the 40th event comes from the ordinals after those.
    let seqs: Vec<u64> = model["product:0"].iter().map(|e| e.seq).collect();
    assert_eq!(history(&s, "product:0", false, 0, 40), seqs[..40]);
    let before: Vec<u64> = seqs
        .iter()
        .rev()
        .copied()
        .filter(|q| *q < deleted_seq)
        .take(2)
        .collect();
    assert_eq!(history(&s, "product:0", true, deleted_seq + 1, 2), before);
    // After a reopen the segments are read back from their files.
    drop(s);
    let s = Store::open(d.path(), o).unwrap();
    check_all(&s, &model);
}

#[test]
fn a_long_history_in_the_active_segment_reads_the_same_as_its_records() {
    // One segment of ~1000 blocks.
    let o = Options {
        segment_size_bytes_max: 64 << 20,
        block_raw_bytes_target: 512,
        ..opts()
    };
    long_histories_read_the_same_as_the_records(o, |n| n == 1);
}

#[test]
fn a_long_history_in_sealed_segments_no_cluster_file_covers_reads_the_same_as_its_records() {
    // Sealed segments of ~100 blocks each, compaction off.
    let o = Options {
        segment_size_bytes_max: 64 << 10,
        block_raw_bytes_target: 512,
        ..opts()
    };
    long_histories_read_the_same_as_the_records(o, |n| n >= 4);
}

/// A segment of more entities than a dictionary is front-coded from: history reads each
/// entity through the segment's index, counts read its tag and minute dictionaries, and
/// compaction walks the entity dictionary in order; cluster files then answer the same.
#[test]
fn a_segment_with_a_front_coded_entity_dictionary_reads_counts_and_compacts() {
    let d = tempfile::tempdir().unwrap();
    let o = Options {
        compaction: false,
        ..Options::default()
    };
    let s = Store::open(d.path(), o).unwrap();
    let entities = echolog_format::dictionary::DICT_CODED_KEYS_MIN as u64 * 3 / 2;
    let events: Vec<Event> = (0..entities * 2)
        .map(|i| Event {
            // Names sharing prefixes of every length, out of order.
            entity: format!("product:{}", (i % entities) * 7919 % 100_003),
            kind: "price".into(),
            ts: 1_000_000 + i as i64 * 1000,
            tags: vec![format!("tenant:t{}", i % 5)],
            ..Default::default()
        })
        .collect();
    for chunk in events.chunks(1000) {
        s.append(chunk.to_vec()).unwrap();
    }
    s.seal_active().unwrap();
    let model = by_entity(&s);
    assert_eq!(model.len() as u64, entities);
    let idx = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .unwrap();
    let bytes = std::fs::read(&idx).unwrap();
    let v = echolog_format::index::IndexView::parse(&bytes).unwrap();
    let dict = v.section(echolog_format::index::SECTION_ENTITIES);
    let interval = u32::from_le_bytes(dict[4..8].try_into().unwrap()) as usize;
    assert_eq!(interval, echolog_format::dictionary::DICT_RESTART_INTERVAL);
    let check = |s: &Store| {
        for (entity, evs) in &model {
            let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
            assert_eq!(history(s, entity, false, 0, 0), seqs, "{entity}");
        }
        assert!(history(s, "product:", false, 0, 0).is_empty());
        assert!(history(s, "product:10000000", false, 0, 0).is_empty());
        let n = s
            .count(&echolog::CountQuery {
                tags: vec!["tenant:t3".into()],
                from_ts: Some(1_000_500),
                to_ts: Some(1_000_000 + 5_000 * 1000 + 1),
                ..Default::default()
            })
            .unwrap();
        let want = events
            .iter()
            .filter(|e| {
                e.tags[0] == "tenant:t3" && (1_000_500..1_000_000 + 5_000_001).contains(&e.ts)
            })
            .count() as u64;
        assert_eq!(n.total, want);
    };
    check(&s);
    s.compact_now().unwrap();
    assert!(!cluster_files(d.path()).is_empty());
    check(&s);
}
