//! Purge: events deleted longer ago than the grace period are erased from the files, every
//! other event stays exactly as it was, idempotency ids stay known, and a power loss at any
//! step leaves each event whole or purged.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{sim_store_opts, small};
use echolog::storage::sim::SimDisk;
use echolog::{CountQuery, Event, HistoryQuery, Options, Store, StoredEvent};
use echolog_format::block::{decode_block, decompress_body};
use echolog_format::segment_header::{SegmentHeader, SEGMENT_HEADER_LEN};

const SECRET: &str = "SECRET-";

/// Event `i`: entities e0..e4; e1's payloads carry a marker the files must lose when purged.
fn event(i: u64) -> Event {
    let entity = format!("e{}", i % 5);
    let marker = if i % 5 == 1 && i < 300 {
        SECRET
    } else {
        "plain-"
    };
    Event {
        entity,
        kind: "k".into(),
        ts: 1_000 + i as i64,
        tags: vec![format!("tenant:t{}", i % 2)],
        payload: format!("{{\"m\":\"{marker}{i}\",\"pad\":\"abcdefghijklmnopqrstuvwxyz\"}}")
            .into_bytes(),
        id: i.is_multiple_of(3).then(|| format!("id-{i}")),
    }
}

/// 300 events; e1 deleted as an entity, two e2 events deleted by seq, then 20 more events (e1's
/// among them stay live), all sealed. Returns the store and the seqs purge must erase.
fn seeded(s: &Store) -> Vec<u64> {
    for k in 0..30 {
        s.append((k * 10..k * 10 + 10).map(event).collect())
            .unwrap();
    }
    s.delete("e1", &[], "gdpr").unwrap();
    // e2's events are seqs 3, 8, 13, ...
    s.delete("e2", &[3, 13], "wrong").unwrap();
    for k in 30..32 {
        s.append((k * 10..k * 10 + 10).map(event).collect())
            .unwrap();
    }
    s.seal_active().unwrap();
    let mut purged: Vec<u64> = (0..300).filter(|i| i % 5 == 1).map(|i| i + 1).collect();
    purged.extend([3, 13]);
    purged.sort_unstable();
    purged
}

/// The event stored at `seq` by `seeded` (seqs 301 and 302 are the tombstones).
fn original(seq: u64) -> Option<Event> {
    match seq {
        1..=300 => Some(event(seq - 1)),
        303..=322 => Some(event(seq - 3)),
        _ => None,
    }
}

/// Every decompressed byte of every segment and cluster file in `files`.
fn decompressed(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        let start = if name.ends_with(".seg") {
            SEGMENT_HEADER_LEN
        } else if name.ends_with(".clu") {
            64
        } else {
            continue;
        };
        let mut at = start;
        while let Ok((h, body)) = decode_block(&bytes[at..]) {
            out.extend(decompress_body(&h, body).unwrap());
            at += h.total_len() as usize;
        }
    }
    out
}

fn os_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn history(s: &Store, entity: &str, include_deleted: bool) -> Vec<u64> {
    let q = HistoryQuery {
        entity: entity.into(),
        include_deleted,
        ..Default::default()
    };
    s.history(&q).unwrap().iter().map(|e| e.seq).collect()
}

fn count_all(s: &Store, include_deleted: bool) -> u64 {
    let q = CountQuery {
        include_deleted,
        ..Default::default()
    };
    s.count(&q).unwrap().total
}

#[test]
fn purge_erases_events_deleted_past_the_grace_and_keeps_everything_else() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let purged = seeded(&s);
    let counted_before = count_all(&s, true);
    assert!(contains(&decompressed(&os_files(d.path())), SECRET));

    // Tombstones younger than the grace: nothing is purgeable yet.
    let r = s.purge_now(Some(Duration::from_secs(3600))).unwrap();
    assert_eq!(r.events_purged, 0, "{r:?}");
    assert_eq!(history(&s, "e1", true).len(), 60 + 1 + 4);

    let r = s.purge_now(Some(Duration::ZERO)).unwrap();
    assert_eq!(r.events_purged, purged.len() as u64, "{r:?}");
    assert!(
        r.segments_rewritten > 0 && r.bytes_after < r.bytes_before,
        "{r:?}"
    );
    assert!(
        !contains(&decompressed(&os_files(d.path())), SECRET),
        "a purged payload is still in a file"
    );

    let check = |s: &Store| {
        // Positional reads skip purged seqs and return every other record unchanged.
        let got: Vec<StoredEvent> = s.read(1, 0).unwrap();
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        let want: Vec<u64> = (1..=322).filter(|q| !purged.contains(q)).collect();
        assert_eq!(seqs, want);
        for e in got.iter().filter(|e| !e.event.kind.starts_with('$')) {
            assert_eq!(Some(&e.event), original(e.seq).as_ref(), "seq {}", e.seq);
        }
        assert_eq!(s.get(purged[0]).unwrap(), None);
        // include_deleted no longer returns them; e1's later events and its tombstone stay.
        assert_eq!(history(s, "e1", true), vec![301, 304, 309, 314, 319]);
        assert_eq!(history(s, "e1", false), vec![304, 309, 314, 319]);
        assert!(!history(s, "e2", true).contains(&3));
        // Counts with include_deleted lose exactly the purged events.
        assert_eq!(
            count_all(s, true) + purged.len() as u64,
            counted_before,
            "{}",
            count_all(s, false)
        );
    };
    check(&s);
    // Ids of purged events are still known: a retried append is a duplicate, not a new event.
    // Event 6 (seq 7, e1) carries id-6 and was purged.
    assert!(purged.contains(&7));
    let out = s.append(vec![event(6)]).unwrap();
    assert_eq!((out.seqs, out.duplicates), (vec![7], 1));

    // A second pass finds nothing; a reopened store answers the same; verify is clean.
    assert_eq!(s.purge_now(Some(Duration::ZERO)).unwrap().events_purged, 0);
    drop(s);
    let report = echolog::verify(d.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    let s = Store::open(d.path(), small()).unwrap();
    check(&s);
    // A restore after a purge brings back only what was not purged.
    s.restore("e1").unwrap();
    assert_eq!(history(&s, "e1", false), vec![304, 309, 314, 319]);
}

#[test]
fn purge_needs_a_grace_and_leaves_the_active_segment_for_later() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let err = s.purge_now(None).unwrap_err();
    assert!(err.to_string().contains("grace"), "{err}");
    for i in 0..3 {
        s.append(vec![event(i)]).unwrap();
    }
    s.delete("e1", &[], "").unwrap();
    // Still in the active segment: not purged until it is sealed.
    assert_eq!(s.purge_now(Some(Duration::ZERO)).unwrap().events_purged, 0);
    s.seal_active().unwrap();
    assert_eq!(s.purge_now(Some(Duration::ZERO)).unwrap().events_purged, 1);
}

#[test]
fn purge_removes_cluster_files_holding_purged_events_and_compaction_rebuilds_them() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let purged = seeded(&s);
    s.compact_now().unwrap();
    let clusters = s.stats().unwrap().cluster_files;
    assert!(clusters > 0);
    let live_e0 = history(&s, "e0", true);
    let r = s.purge_now(Some(Duration::ZERO)).unwrap();
    assert!(r.cluster_files_removed > 0, "{r:?}");
    assert!(!contains(&decompressed(&os_files(d.path())), SECRET));
    s.compact_now().unwrap();
    let st = s.stats().unwrap();
    assert_eq!(st.compaction_backlog_segments, 0);
    assert!(!contains(&decompressed(&os_files(d.path())), SECRET));
    // History through the rebuilt cluster files.
    assert_eq!(history(&s, "e0", true), live_e0);
    assert_eq!(history(&s, "e1", true), vec![301, 304, 309, 314, 319]);
    let e2 = history(&s, "e2", true);
    assert!(purged.iter().all(|p| !e2.contains(p)));
    // Rebuilt cluster files hold fewer records than their seq range: verify accepts that.
    drop(s);
    let report = echolog::verify(d.path()).unwrap();
    assert!(report.ok() && report.cluster_files > 0, "{report:?}");
}

/// The simulated store's files, for the marker search.
fn sim_files(disk: &SimDisk, dir: &Path) -> Vec<(String, Vec<u8>)> {
    disk.files(dir)
        .into_iter()
        .filter_map(|n| disk.read_file(&dir.join(&n)).map(|b| (n, b)))
        .collect()
}

#[test]
fn a_power_loss_at_any_step_of_a_purge_leaves_each_event_whole_or_purged() {
    let mut finished = false;
    for calls in 0..2000u64 {
        let (disk, dir, opts) = sim_store_opts();
        let purged = {
            let s = Store::open(&dir, opts.clone()).unwrap();
            let purged = seeded(&s);
            // Cluster files too: purge removes those holding purged events, mid-crash or not.
            s.compact_now().unwrap();
            purged
        };
        let s = Store::open(&dir, opts.clone()).unwrap();
        disk.power_off_after(calls);
        let done = s.purge_now(Some(Duration::ZERO)).is_ok();
        drop(s);
        disk.power_loss(calls * 13 + 5);
        let s = Store::open(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("power off after {calls} calls: {e}"));
        let got = s.read(1, 0).unwrap();
        let mut expect = 1u64;
        for e in &got {
            // Missing seqs are purged ones, never others.
            while expect < e.seq {
                assert!(
                    purged.contains(&expect),
                    "seq {expect} lost (calls {calls})"
                );
                expect += 1;
            }
            if !e.event.kind.starts_with('$') {
                assert_eq!(Some(&e.event), original(e.seq).as_ref(), "seq {}", e.seq);
            }
            expect = e.seq + 1;
        }
        assert_eq!(expect, 323, "calls {calls}");
        // History (through whatever cluster files survived) agrees with the segments.
        for entity in ["e0", "e1", "e2"] {
            let by_seq: Vec<u64> = got
                .iter()
                .filter(|e| e.event.entity == entity)
                .map(|e| e.seq)
                .collect();
            assert_eq!(history(&s, entity, true), by_seq, "{entity}, calls {calls}");
        }
        // The next pass finishes the job.
        s.purge_now(Some(Duration::ZERO)).unwrap();
        let left: Vec<u64> = s.read(1, 0).unwrap().iter().map(|e| e.seq).collect();
        assert!(purged.iter().all(|p| !left.contains(p)), "calls {calls}");
        assert!(!contains(&decompressed(&sim_files(&disk, &dir)), SECRET));
        if done {
            eprintln!(
                "the purge ran to its end after {calls} calls; every earlier cut was checked"
            );
            finished = true;
            break;
        }
    }
    assert!(
        finished,
        "the purge never ran to its end within the budget of calls"
    );
}

#[test]
fn a_version_3_store_is_purged_into_current_version_segments() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3-store");
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&root).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    let opts = Options {
        compaction: false,
        ..Default::default()
    };
    let s = Store::open(d.path(), opts.clone()).unwrap();
    // product:5 (deleted at 124, the active segment) and seqs 2 and 9 of product:1.
    let before: Vec<u64> = s.read(1, 0).unwrap().iter().map(|e| e.seq).collect();
    let r = s.purge_now(Some(Duration::ZERO)).unwrap();
    let after: Vec<u64> = s.read(1, 0).unwrap().iter().map(|e| e.seq).collect();
    let gone: Vec<u64> = before
        .iter()
        .filter(|q| !after.contains(q))
        .copied()
        .collect();
    assert_eq!(r.events_purged, 17 + 2, "{r:?} {gone:?}");
    let before = before.len();
    drop(s);
    let seg = std::fs::read(d.path().join("00000000000000000001.seg")).unwrap();
    assert_eq!(
        SegmentHeader::decode(&seg).unwrap().version,
        echolog_format::FORMAT_VERSION
    );
    let s = Store::open(d.path(), opts).unwrap();
    assert_eq!(s.read(1, 0).unwrap().len(), before - 19);
    assert!(history(&s, "product:5", true).iter().all(|q| *q >= 124));
}

#[test]
fn with_a_purge_grace_the_background_thread_purges_after_open() {
    let d = tempfile::tempdir().unwrap();
    let purged = {
        let s = Store::open(d.path(), small()).unwrap();
        seeded(&s)
    };
    let opts = Options {
        purge_grace: Some(Duration::ZERO),
        ..small()
    };
    let s = Store::open(d.path(), opts).unwrap();
    // Bounded wait: the first pass runs as the background thread starts.
    for _ in 0..500 {
        if s.stats().unwrap().purged_events > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.stats().unwrap().purged_events, purged.len() as u64);
    assert_eq!(history(&s, "e1", true), vec![301, 304, 309, 314, 319]);
}

#[test]
fn a_pass_with_nothing_new_to_erase_makes_no_file_call() {
    let (disk, dir, opts) = sim_store_opts();
    let s = Store::open(&dir, opts).unwrap();
    let purged = seeded(&s);
    let first = s.purge_now(Some(Duration::ZERO)).unwrap();
    assert_eq!(first.events_purged, purged.len() as u64);
    let calls = disk.calls();
    assert_eq!(s.purge_now(Some(Duration::ZERO)).unwrap().events_purged, 0);
    assert_eq!(
        disk.calls(),
        calls,
        "a pass with nothing new read or wrote files"
    );
    // A new tombstone is new work.
    s.delete("e0", &[], "").unwrap();
    s.seal_active().unwrap();
    let r = s.purge_now(Some(Duration::ZERO)).unwrap();
    assert_eq!(r.events_purged, 60 + 4, "{r:?}");
}

#[test]
fn a_damaged_block_keeps_its_segment_out_of_the_pass_and_the_rest_is_purged() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let purged = seeded(&s);
    drop(s);
    // Flip a byte inside the body of the first block of the first segment (it holds seq 2,
    // an e1 event to erase).
    let first = d.path().join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[SEGMENT_HEADER_LEN + 60] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let r = s.purge_now(Some(Duration::ZERO)).unwrap();
    assert!(r.events_purged > 0, "{r:?}");
    assert!(r.events_purged < purged.len() as u64, "{r:?}");
    // The damaged segment was left as it was.
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
}
