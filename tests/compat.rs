//! Stores written by an older format version open and read back exactly as they were written.

use std::path::Path;

mod common;

use common::files_with_ext;
use echolog::{CountQuery, Event, HistoryQuery, Options, Store};

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A copy of the committed fixture `name` (tests/fixtures/README.md) in a temporary directory,
/// and the rows its build's `Store::read(1, 0)` returned.
fn fixture_named(name: &str) -> (tempfile::TempDir, Vec<Vec<String>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let d = tempfile::tempdir().unwrap();
    copy_dir(&root.join(name), d.path());
    let expected = std::fs::read_to_string(root.join(format!("{name}.expected.tsv")))
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    (d, expected)
}

fn fixture() -> (tempfile::TempDir, Vec<Vec<String>>) {
    fixture_named("v1-store")
}

/// Every record as a row; a tab inside a payload (a seq in a `$delete_seqs` record) is written
/// as `\t` in the expected files of versions 2 and later.
fn rows_escaped(s: &Store) -> Vec<Vec<String>> {
    s.read(1, 0)
        .unwrap()
        .iter()
        .map(|e| {
            let mut r = row(e);
            r[5] = r[5].replace('\t', "\\t");
            r
        })
        .collect()
}

fn row(e: &echolog::StoredEvent) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.event.entity.clone(),
        e.event.kind.clone(),
        e.event.ts.to_string(),
        e.event.tags.join(","),
        String::from_utf8_lossy(&e.event.payload).into_owned(),
        e.event.id.clone().unwrap_or_default(),
        e.deleted_by.to_string(),
    ]
}

#[test]
fn a_version_1_store_reads_back_every_record() {
    let (d, expected) = fixture();
    let s = Store::open(d.path(), Options::default()).unwrap();
    let got: Vec<Vec<String>> = s.read(1, 0).unwrap().iter().map(row).collect();
    assert_eq!(got, expected);
    let st = s.stats().unwrap();
    // The version 1 active segment was sealed at open: appends go to a version 2 segment.
    assert_eq!((st.events, st.last_seq, st.segments), (124, 124, 5));
    let last = d.path().join("00000000000000000125.seg");
    let header =
        echolog_format::segment_header::SegmentHeader::decode(&std::fs::read(last).unwrap());
    assert_eq!(header.unwrap().version, echolog_format::FORMAT_VERSION);
    // History and counts agree with the records.
    let live_p3 = expected
        .iter()
        .filter(|r| r[1] == "product:3" && !r[2].starts_with('$') && r[7] == "0")
        .count();
    let h = s
        .history(&HistoryQuery {
            entity: "product:3".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.len(), live_p3);
    let live = expected
        .iter()
        .filter(|r| !r[2].starts_with('$') && r[7] == "0")
        .count() as u64;
    assert_eq!(s.count(&CountQuery::default()).unwrap().total, live);
}

#[test]
fn a_version_1_store_keeps_its_ids_and_takes_new_appends() {
    let (d, _) = fixture();
    {
        let s = Store::open(d.path(), Options::default()).unwrap();
        let dup = Event {
            entity: "product:0".into(),
            kind: "price_changed".into(),
            ts: 1,
            id: Some("feed:0".into()),
            ..Default::default()
        };
        let out = s.append(vec![dup]).unwrap();
        assert_eq!((out.seqs, out.duplicates), (vec![1], 1));
        for i in 0..200 {
            let e = Event {
                entity: format!("new:{}", i % 5),
                kind: "k".into(),
                ts: 1_000 + i,
                payload: vec![b'x'; 64],
                ..Default::default()
            };
            s.append(vec![e]).unwrap();
        }
        s.seal_active().unwrap();
    }
    let s = Store::open(d.path(), Options::default()).unwrap();
    assert_eq!(s.last_seq(), 324);
    assert_eq!(s.read(1, 0).unwrap().len(), 324);
    let h = s
        .history(&HistoryQuery {
            entity: "new:1".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.len(), 40);
}

#[test]
fn an_empty_version_1_active_segment_is_replaced_by_a_current_one() {
    use echolog_format::segment_header::SegmentHeader;
    let d = tempfile::tempdir().unwrap();
    let seg = d.path().join("00000000000000000001.seg");
    let v1 = SegmentHeader {
        version: 1,
        base_seq: 1,
    };
    std::fs::write(&seg, v1.encode()).unwrap();
    let s = Store::open(d.path(), Options::default()).unwrap();
    let header = SegmentHeader::decode(&std::fs::read(&seg).unwrap()).unwrap();
    assert_eq!(header.version, echolog_format::FORMAT_VERSION);
    let e = Event {
        entity: "a".into(),
        kind: "k".into(),
        ts: 5,
        ..Default::default()
    };
    assert_eq!(s.append(vec![e]).unwrap().seqs, vec![1]);
}

#[test]
fn a_version_2_store_reads_back_keeps_appending_and_compacts() {
    let (d, expected) = fixture_named("v2-store");
    let s = Store::open(d.path(), Options::default()).unwrap();
    let got = rows_escaped(&s);
    assert_eq!(got, expected);
    // Version 2 segments are appended to as they are (they differ from 3 only in the number).
    let st = s.stats().unwrap();
    assert_eq!((st.events, st.last_seq, st.segments), (124, 124, 4));
    let cursors = s.cursors().unwrap();
    assert_eq!(cursors.len(), 2, "{cursors:?}");
    let live_p0: Vec<u64> = expected
        .iter()
        .filter(|r| r[1] == "product:0" && !r[2].starts_with('$') && r[7] == "0")
        .map(|r| r[0].parse().unwrap())
        .collect();
    let q = HistoryQuery {
        entity: "product:0".into(),
        ..Default::default()
    };
    let seqs = |s: &Store| -> Vec<u64> { s.history(&q).unwrap().iter().map(|e| e.seq).collect() };
    assert_eq!(seqs(&s), live_p0);
    // Its sealed segments become cluster files, and history answers the same from them.
    s.compact_now().unwrap();
    assert!(s.stats().unwrap().cluster_files > 0);
    assert_eq!(seqs(&s), live_p0);
    let e = Event {
        entity: "product:0".into(),
        kind: "k".into(),
        ts: 9,
        ..Default::default()
    };
    assert_eq!(s.append(vec![e]).unwrap().seqs, vec![125]);
}

/// Writes the fixture workload with this build into `ECHOLOG_FIXTURE_OUT` (a new directory) and
/// its `Store::read(1, 0)` as `<dir>.expected.tsv`. Run by hand when a format version is about
/// to change: `ECHOLOG_FIXTURE_OUT=tests/fixtures/vN-store cargo test --test compat -- --ignored`.
#[test]
#[ignore = "writes a fixture; run by hand"]
fn write_fixture_with_this_build() {
    let Ok(out) = std::env::var("ECHOLOG_FIXTURE_OUT") else {
        return;
    };
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();
    let opts = Options {
        segment_size_bytes_max: 4096,
        compaction: false,
        ..Default::default()
    };
    let s = Store::open(out, opts).unwrap();
    let kinds = ["price_changed", "linked", "api_call"];
    let batch = |from: u64| -> Vec<Event> {
        (from..from + 40)
            .map(|i| Event {
                entity: format!("product:{}", i % 7),
                kind: kinds[(i % 3) as usize].into(),
                ts: 1_763_769_600_000 + i as i64 * 61_000,
                tags: vec![format!("tenant:t{}", i % 5)],
                payload: format!("{{\"i\":{i},\"pad\":\"abcdefghijklmnop\"}}").into_bytes(),
                id: (i % 4 == 0).then(|| format!("feed:{i}")),
            })
            .collect()
    };
    s.append(batch(0)).unwrap();
    s.seal_active().unwrap();
    s.delete("product:3", &[], "upstream deleted").unwrap();
    s.append(batch(40)).unwrap();
    s.seal_active().unwrap();
    s.delete("product:1", &[2, 9], "wrong price").unwrap();
    s.restore("product:3").unwrap();
    s.append(batch(80)).unwrap();
    s.seal_active().unwrap();
    s.delete("product:5", &[], "gdpr").unwrap();
    s.commit_cursor("billing-sync", 57).unwrap();
    s.commit_cursor("audit", 101).unwrap();
    s.compact_now().unwrap();
    // Since version 4: the deleted events of the sealed segments erased (`$purged` records).
    s.purge_now(Some(std::time::Duration::ZERO)).unwrap();
    s.compact_now().unwrap();
    let rows: Vec<String> = rows_escaped(&s).iter().map(|r| r.join("	")).collect();
    drop(s);
    std::fs::remove_file(out.join("LOCK")).unwrap();
    let tsv = format!("{}.expected.tsv", out.display());
    std::fs::write(tsv, rows.join("\n") + "\n").unwrap();
}

#[test]
fn a_version_3_store_reads_back_through_its_cluster_files_and_keeps_appending() {
    let (d, expected) = fixture_named("v3-store");
    let opts = Options {
        compaction: false,
        ..Default::default()
    };
    let s = Store::open(d.path(), opts).unwrap();
    let got = rows_escaped(&s);
    assert_eq!(got, expected);
    let st = s.stats().unwrap();
    assert_eq!((st.events, st.last_seq, st.segments), (124, 124, 4));
    assert_eq!((st.cluster_files, st.compaction_backlog_segments), (3, 0));
    assert_eq!(s.cursor("billing-sync").unwrap(), Some(57));
    for entity in ["product:0", "product:1", "product:3", "product:5"] {
        let live: Vec<u64> = expected
            .iter()
            .filter(|r| r[1] == entity && !r[2].starts_with('$') && r[7] == "0")
            .map(|r| r[0].parse().unwrap())
            .collect();
        let q = HistoryQuery {
            entity: entity.into(),
            ..Default::default()
        };
        let seqs: Vec<u64> = s.history(&q).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, live, "{entity}");
    }
    let e = Event {
        entity: "product:0".into(),
        kind: "k".into(),
        ts: 9,
        ..Default::default()
    };
    assert_eq!(s.append(vec![e]).unwrap().seqs, vec![125]);
}

/// Hourly counts of each tenant as the records say: counted kinds, live events only.
fn hourly_by_tag(rows: &[Vec<String>], tag: &str) -> Vec<(i64, u64)> {
    let mut m = std::collections::BTreeMap::<i64, u64>::new();
    for r in rows {
        let tagged = r[4].split(',').any(|t| t == tag);
        if tagged && !r[2].starts_with('$') && r[7] == "0" {
            let ts: i64 = r[3].parse().unwrap();
            *m.entry(ts.div_euclid(3_600_000) * 3_600_000).or_default() += 1;
        }
    }
    m.into_iter().collect()
}

fn hourly(s: &Store, tag: &str) -> Vec<(i64, u64)> {
    let q = CountQuery {
        tags: vec![tag.into()],
        bucket: echolog::Bucket::Hour,
        ..Default::default()
    };
    let r = s.count(&q).unwrap();
    r.buckets.iter().map(|b| (b.start_ts, b.count)).collect()
}

fn has_tag_hours(idx: &Path) -> bool {
    let bytes = std::fs::read(idx).unwrap();
    let v = echolog_format::index::IndexView::parse(&bytes).unwrap();
    v.has_section(echolog_format::index::SECTION_TAG_HOURS)
}

#[test]
fn a_version_4_store_with_purged_records_reads_back_counts_and_keeps_appending() {
    let (d, expected) = fixture_named("v4-store");
    let opts = Options {
        compaction: false,
        ..Default::default()
    };
    let s = Store::open(d.path(), opts).unwrap();
    assert_eq!(rows_escaped(&s), expected);
    let st = s.stats().unwrap();
    assert_eq!((st.last_seq, st.segments, st.cluster_files), (124, 4, 3));
    // Purge erased 19 events (seqs 2 and 9, and product:5's): reads step over them.
    assert_eq!(expected.len(), 124 - 19);
    assert!(!expected.iter().any(|r| r[0] == "2" || r[0] == "9"));
    // Its indexes predate the per-tag hourly counts: counted from bitmaps and timestamps.
    assert!(!has_tag_hours(&d.path().join("00000000000000000001.idx")));
    for t in 0..5 {
        let tag = format!("tenant:t{t}");
        assert_eq!(hourly(&s, &tag), hourly_by_tag(&expected, &tag), "{tag}");
    }
    // New segments have hourly counts (version 5 and later); old and new count together.
    let more = more_events(40, 600_000);
    s.append(more).unwrap();
    s.seal_active().unwrap();
    assert!(has_tag_hours(&d.path().join("00000000000000000124.idx")));
    let all = rows_escaped(&s);
    assert_eq!(all.len(), expected.len() + 40);
    for t in 0..5 {
        let tag = format!("tenant:t{t}");
        assert_eq!(hourly(&s, &tag), hourly_by_tag(&all, &tag), "{tag}");
    }
}

fn index_version(idx: &Path) -> u32 {
    let bytes = std::fs::read(idx).unwrap();
    echolog_format::index::IndexView::parse(&bytes)
        .unwrap()
        .version
}

/// Live seqs of `entity` in the expected rows.
fn live_seqs(rows: &[Vec<String>], entity: &str) -> Vec<u64> {
    rows.iter()
        .filter(|r| r[1] == entity && !r[2].starts_with('$') && r[7] == "0")
        .map(|r| r[0].parse().unwrap())
        .collect()
}

/// The history of every product entity is its live seqs in `rows`.
fn assert_histories(s: &Store, rows: &[Vec<String>]) {
    for p in 0..7 {
        let entity = format!("product:{p}");
        let q = HistoryQuery {
            entity: entity.clone(),
            ..Default::default()
        };
        let seqs: Vec<u64> = s.history(&q).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, live_seqs(rows, &entity), "{entity}");
    }
}

#[test]
fn a_version_5_store_reads_its_plain_indexes_and_writes_compact_ones_beside_them() {
    let (d, expected) = fixture_named("v5-store");
    // History through the segments' indexes, not the cluster files: remove those (derived data).
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "clu") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let old_idx = d.path().join("00000000000000000001.idx");
    assert_eq!(index_version(&old_idx), 5);
    // Every count from bitmaps and the plain ts column, none from the tag hours.
    let opts = Options {
        compaction: false,
        count_tag_hours: false,
        ..Default::default()
    };
    let s = Store::open(d.path(), opts).unwrap();
    assert_eq!(rows_escaped(&s), expected);
    for t in 0..5 {
        let tag = format!("tenant:t{t}");
        assert_eq!(hourly(&s, &tag), hourly_by_tag(&expected, &tag), "{tag}");
    }
    assert_histories(&s, &expected);
    // New indexes are version 6 or later: packed ts column, tagged postings. Both kinds count
    // together.
    let more = more_events(300, 97_000);
    s.append(more).unwrap();
    s.seal_active().unwrap();
    let new_idx = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .max()
        .unwrap();
    assert_eq!(index_version(&new_idx), echolog_format::FORMAT_VERSION);
    let all = rows_escaped(&s);
    assert_eq!(all.len(), expected.len() + 300);
    for t in 0..5 {
        let tag = format!("tenant:t{t}");
        assert_eq!(hourly(&s, &tag), hourly_by_tag(&all, &tag), "{tag}");
    }
    assert_histories(&s, &all);
}

/// Format version of every cluster file in `dir`, by file name.
fn cluster_versions(dir: &Path) -> Vec<u32> {
    files_with_ext(dir, "clu")
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            echolog_format::cluster::ClusterHeader::decode(&bytes, bytes.len() as u64)
                .unwrap()
                .version
        })
        .collect()
}

#[test]
fn a_version_6_store_reads_its_cluster_files_beside_new_ones_and_merges_them() {
    let (d, expected) = fixture_named("v6-store");
    assert_eq!(cluster_versions(d.path()), vec![6, 6, 6]);
    let opts = |fanout| Options {
        compaction: false,
        compaction_fanout: fanout,
        ..Default::default()
    };
    let s = Store::open(d.path(), opts(8)).unwrap();
    assert_eq!(rows_escaped(&s), expected);
    let st = s.stats().unwrap();
    assert_eq!((st.last_seq, st.segments, st.cluster_files), (124, 4, 3));
    assert_histories(&s, &expected);
    for t in 0..5 {
        let tag = format!("tenant:t{t}");
        assert_eq!(hourly(&s, &tag), hourly_by_tag(&expected, &tag), "{tag}");
    }
    // A new segment's cluster file is written in this build's version; history reads old
    // and new files together.
    let more = more_events(300, 97_000);
    s.append(more).unwrap();
    s.seal_active().unwrap();
    s.compact_now().unwrap();
    let now = echolog_format::FORMAT_VERSION;
    assert_eq!(cluster_versions(d.path()), vec![6, 6, 6, now]);
    let all = rows_escaped(&s);
    assert_eq!(all.len(), expected.len() + 300);
    assert_histories(&s, &all);
    drop(s);
    // Merging old files writes a new-version file holding their records.
    let s = Store::open(d.path(), opts(2)).unwrap();
    s.compact_now().unwrap();
    let versions = cluster_versions(d.path());
    assert!(versions.iter().all(|v| *v == now), "{versions:?}");
    assert!(s.stats().unwrap().cluster_files < 4);
    assert_eq!(rows_escaped(&s), all);
    assert_histories(&s, &all);
    drop(s);
    // Without cluster files and tag hours, history and counts read the dictionaries of the
    // version 6 indexes and of the new one (front-coded keys) together.
    let idx_versions: Vec<u32> = files_with_ext(d.path(), "idx")
        .iter()
        .map(|p| index_version(p))
        .collect();
    assert_eq!(idx_versions, vec![6, 6, 6, now]);
    for p in files_with_ext(d.path(), "clu") {
        std::fs::remove_file(p).unwrap();
    }
    let s = Store::open(
        d.path(),
        Options {
            compaction: false,
            count_tag_hours: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.stats().unwrap().cluster_files, 0);
    assert_histories(&s, &all);
    for t in 0..5 {
        let tag = format!("tenant:t{t}");
        assert_eq!(hourly(&s, &tag), hourly_by_tag(&all, &tag), "{tag}");
    }
}

/// `n` new events over the fixtures' entities and tenants, `step_ms` apart.
fn more_events(n: i64, step_ms: i64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            entity: format!("product:{}", i % 7),
            kind: "price_changed".into(),
            ts: 1_763_769_600_000 + i * step_ms,
            tags: vec![format!("tenant:t{}", i % 5)],
            ..Default::default()
        })
        .collect()
}
