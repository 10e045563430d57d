//! A sealed index's sections are checked when first read, not when the segment is loaded: a
//! count answered by the per-tag hourly counts reads no other section, and a section found
//! damaged on its first read has the index rebuilt from its segment, the answer unchanged.

mod common;

use std::path::{Path, PathBuf};

use echolog::{Bucket, CountQuery, Event, HistoryQuery, Store};
use echolog_format::index::{
    IndexView, SECTION_ENTITIES, SECTION_IDS, SECTION_KINDS, SECTION_MINUTES, SECTION_TAGS,
    SECTION_TAG_HOURS, SECTION_TS,
};

use common::small;

const MINUTE_MS: i64 = 60_000;

/// Event `i`: ten entities, two kinds, two tenants, an id, a minute apart every 7 events.
fn event(i: u64) -> Event {
    Event {
        entity: format!("e{}", i % 10),
        kind: if i.is_multiple_of(3) { "price" } else { "link" }.into(),
        ts: 3_600_000 + (i as i64 / 7) * MINUTE_MS + (i as i64 % 7),
        tags: vec![format!("tenant:t{}", i % 2)],
        payload: format!("{{\"i\":{i},\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}").into_bytes(),
        id: Some(format!("id-{i}")),
    }
}

/// A store of `n` events in several sealed segments (closed cleanly, the last one sealed).
fn build(dir: &Path, n: u64) {
    let s = Store::open(dir, small()).unwrap();
    for i in 0..n {
        s.append(vec![event(i)]).unwrap();
    }
    s.seal_active().unwrap();
    assert!(s.stats().unwrap().segments >= 4, "several sealed segments");
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    v.sort();
    v
}

/// Flips one byte in the middle of section `id` of every index file (each must have it);
/// returns the damaged bytes of each file.
fn damage_section(dir: &Path, id: u32) -> Vec<(PathBuf, Vec<u8>)> {
    index_files(dir)
        .into_iter()
        .map(|p| {
            let mut bytes = std::fs::read(&p).unwrap();
            let at = {
                let v = IndexView::locate(&bytes).unwrap();
                let s = v.sections().iter().find(|s| s.id == id).unwrap().clone();
                assert!(!s.range.is_empty(), "section {id} of {}", p.display());
                s.range.start + s.range.len() / 2
            };
            bytes[at] ^= 0x55;
            std::fs::write(&p, &bytes).unwrap();
            assert!(IndexView::parse(&bytes).is_err());
            (p, bytes)
        })
        .collect()
}

/// Answers that read every section between them.
fn answers(s: &Store) -> Vec<String> {
    let tag_hours = CountQuery {
        tags: vec!["tenant:t1".into()],
        bucket: Bucket::Hour,
        ..Default::default()
    };
    let by_minute = CountQuery {
        tags: vec!["tenant:t0".into()],
        kind: Some("price".into()),
        bucket: Bucket::Minute,
        ..Default::default()
    };
    // Edges inside minutes (the first segment's first one too): the ts column is read.
    let cut = CountQuery {
        from_ts: Some(3_600_000 + 3),
        to_ts: Some(3_600_000 + 30 * MINUTE_MS + 2),
        ..Default::default()
    };
    let history = HistoryQuery {
        entity: "e3".into(),
        from_ts: Some(3_600_000 + 2),
        ..Default::default()
    };
    let seqs = |h: Vec<echolog::StoredEvent>| h.iter().map(|r| r.seq).collect::<Vec<_>>();
    // An id already stored in the first segment: a duplicate, nothing appended.
    let again = s.append(vec![event(5)]).unwrap();
    vec![
        format!("{:?}", s.count(&tag_hours).unwrap()),
        format!("{:?}", s.count(&by_minute).unwrap()),
        format!("{:?}", s.count(&cut).unwrap()),
        format!("{:?}", seqs(s.history(&history).unwrap())),
        format!("{:?} {}", again.seqs, again.duplicates),
    ]
}

#[test]
fn a_count_from_the_hourly_counts_checks_no_other_section() {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), 400);
    let q = CountQuery {
        tags: vec!["tenant:t1".into()],
        bucket: Bucket::Hour,
        ..Default::default()
    };
    let (want, stats) = {
        let s = Store::open(d.path(), small()).unwrap();
        (s.count(&q).unwrap(), s.stats().unwrap())
    };
    assert_eq!(want.total, 200);
    // Stats after the count loaded every segment takes its totals from the loaded indexes:
    // the same as from each index's first page.
    let fresh = Store::open(d.path(), small()).unwrap().stats().unwrap();
    assert_eq!(
        (stats.raw_bytes, stats.disk_bytes),
        (fresh.raw_bytes, fresh.disk_bytes)
    );
    damage_section(d.path(), SECTION_ENTITIES);
    let damaged = damage_section(d.path(), SECTION_TS);
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(s.count(&q).unwrap(), want);
    for (p, bytes) in &damaged {
        // Read with the damage still there: not checked, so not rebuilt.
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{}", p.display());
    }
    // The control: a history reads the entity section of every segment, finds each damaged
    // and answers from an index rebuilt in memory; the files stay as they were.
    let h = s
        .history(&HistoryQuery {
            entity: "e3".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.len(), 40);
    for (p, bytes) in &damaged {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{}", p.display());
    }
    drop(s);
    let report = echolog::verify(d.path()).unwrap();
    assert_eq!(
        report.problems.len(),
        damaged.len(),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_section_damaged_before_its_first_read_is_rebuilt_and_answers_the_same() {
    let sections = [
        SECTION_TS,
        SECTION_ENTITIES,
        SECTION_KINDS,
        SECTION_TAGS,
        SECTION_MINUTES,
        SECTION_IDS,
        SECTION_TAG_HOURS,
    ];
    for id in sections {
        let d = tempfile::tempdir().unwrap();
        build(d.path(), 300);
        let want = answers(&Store::open(d.path(), small()).unwrap());
        let damaged = damage_section(d.path(), id);
        let s = Store::open(d.path(), small()).unwrap();
        assert_eq!(answers(&s), want, "section {id}");
        // Rebuilt in memory only: the files are as they were.
        for (p, bytes) in &damaged {
            assert_eq!(&std::fs::read(p).unwrap(), bytes, "section {id}");
        }
        drop(s);
        // Reopened: found and rebuilt again, the same answers.
        assert_eq!(
            answers(&Store::open(d.path(), small()).unwrap()),
            want,
            "section {id}, reopened"
        );
    }
}

#[test]
fn a_damaged_index_removed_by_the_operator_is_written_anew_by_the_next_open() {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), 300);
    let q = HistoryQuery {
        entity: "e3".into(),
        ..Default::default()
    };
    let seqs = |s: &Store| {
        s.history(&q)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    let want = seqs(&Store::open(d.path(), small()).unwrap());
    assert_eq!(want.len(), 30);
    let damaged = damage_section(d.path(), SECTION_ENTITIES);
    assert_eq!(seqs(&Store::open(d.path(), small()).unwrap()), want);
    // What `echolog verify` names, the operator removes; the next open's first load of each
    // segment rebuilds its index and writes it.
    let report = echolog::verify(d.path()).unwrap();
    assert_eq!(report.problems.len(), damaged.len());
    for (p, _) in &damaged {
        std::fs::remove_file(p).unwrap();
    }
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(seqs(&s), want);
    drop(s);
    for (p, _) in &damaged {
        IndexView::parse(&std::fs::read(p).unwrap()).unwrap();
    }
    assert!(echolog::verify(d.path()).unwrap().problems.is_empty());
}
