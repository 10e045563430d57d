//! Durability and fault behaviour: open cost, concurrency, full disk, failed fsync, corrupt
//! files, leftover temp files, and a writer killed with SIGKILL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use echolog::storage::sim::{Errno, FaultOp, FaultRule};
use echolog::{Error, HistoryQuery, Options, Store, SyncPolicy};

use common::{ev, small};

/// Fills a store until it has `sealed` sealed segments, then appends `tail` events.
fn fill(dir: &std::path::Path, sealed: usize, tail: u64) {
    let s = Store::open(dir, small()).unwrap();
    let mut i = 0;
    while s.stats().unwrap().segments as usize <= sealed {
        s.append(vec![ev(&format!("e{}", i % 10), i)]).unwrap();
        i += 1;
    }
    // Seal exactly at the boundary so that both stores end with the same active segment.
    s.seal_active().unwrap();
    for t in 0..tail {
        s.append(vec![ev("tail", t)]).unwrap();
    }
}

#[test]
fn open_cost_does_not_grow_with_sealed_segments() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fill(a.path(), 1, 20);
    fill(b.path(), 50, 20);
    let ra = Store::open(a.path(), small())
        .unwrap()
        .open_report()
        .clone();
    let rb = Store::open(b.path(), small())
        .unwrap()
        .open_report()
        .clone();
    assert!(
        ra.sealed_segments >= 1 && rb.sealed_segments >= 50,
        "{ra:?} {rb:?}"
    );
    assert_eq!(ra.sealed_bytes_read, 0);
    assert_eq!(rb.sealed_bytes_read, 0);
    assert_eq!(
        ra.bytes_read, rb.bytes_read,
        "open reads the same bytes with 1 or 50 sealed segments"
    );
}

/// Options whose active segment is sealed at close once it holds `bytes_min` bytes.
fn seal_at_close(bytes_min: u64) -> Options {
    Options {
        segment_size_bytes_max: 1 << 20,
        seal_at_close_bytes_min: Some(bytes_min),
        ..small()
    }
}

#[test]
fn closing_seals_a_large_active_segment_so_the_next_open_rebuilds_nothing() {
    let d = tempfile::tempdir().unwrap();
    let opts = seal_at_close(16 * 1024);
    let s = Store::open(d.path(), opts.clone()).unwrap();
    for i in 0..400 {
        s.append(vec![ev(&format!("e{}", i % 7), i)]).unwrap();
    }
    let active_bytes = s.stats().unwrap().disk_bytes;
    assert!(active_bytes > 16 * 1024, "{active_bytes}");
    drop(s);
    let s = Store::open(d.path(), opts.clone()).unwrap();
    let r = s.open_report().clone();
    assert_eq!(r.sealed_segments, 1, "{r:?}");
    assert_eq!(r.indexes_rebuilt, 0, "{r:?}");
    assert!(
        r.bytes_read < 1024,
        "open read {} bytes after the seal at close",
        r.bytes_read
    );
    assert_eq!(s.read(1, 0).unwrap().len(), 400);
    assert_eq!(s.last_seq(), 400);
    // Below the bound the active segment stays active: no tiny segment per short open.
    s.append(vec![ev("small", 1)]).unwrap();
    drop(s);
    let s = Store::open(d.path(), opts).unwrap();
    let r = s.open_report().clone();
    assert_eq!(r.sealed_segments, 1, "{r:?}");
    assert!(r.bytes_read > 0, "{r:?}");
    assert_eq!(s.read(1, 0).unwrap().len(), 401);
    assert!(
        !s.seal_for_close().unwrap(),
        "one small event is below the bound"
    );
}

#[test]
fn a_store_opened_without_seal_at_close_rebuilds_the_active_segment() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        seal_at_close_bytes_min: None,
        ..seal_at_close(1)
    };
    let s = Store::open(d.path(), opts.clone()).unwrap();
    for i in 0..100 {
        s.append(vec![ev("e", i)]).unwrap();
    }
    drop(s);
    let s = Store::open(d.path(), opts).unwrap();
    assert_eq!(s.open_report().sealed_segments, 0);
    assert_eq!(s.read(1, 0).unwrap().len(), 100);
}

#[test]
fn concurrent_writers_get_dense_unique_seqs_and_readers_see_prefixes() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(
        d.path(),
        Options {
            segment_size_bytes_max: 64 * 1024,
            block_raw_bytes_target: 1024,
            ..Options::default()
        },
    )
    .unwrap();
    let writers = 6;
    let per = 150u64;
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        let done = done.clone();
        handles.push(std::thread::spawn(move || {
            let mut seqs = Vec::new();
            for i in 0..per {
                // Mixed sizes: small batches are packed by the commit leader, large ones
                // (12 events, over the 1 KiB block target) come prepared by this thread.
                let n = if i % 7 == 0 {
                    12
                } else if i % 5 == 0 {
                    2
                } else {
                    1
                };
                let batch = (0..n).map(|_| ev(&format!("w{w}"), i)).collect();
                seqs.extend(s.append(batch).unwrap().seqs);
            }
            done.fetch_add(1, Ordering::SeqCst);
            seqs
        }));
    }
    let reader = {
        let s = s.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut checks = 0;
            while done.load(Ordering::SeqCst) < writers || checks < 3 {
                let last = s.last_seq();
                let all = s.read(1, 0).unwrap();
                assert!(
                    all.len() as u64 >= last,
                    "a reader sees at least what was committed before it started"
                );
                for (i, e) in all.iter().enumerate() {
                    assert_eq!(e.seq, i as u64 + 1, "prefix without holes");
                }
                checks += 1;
            }
        })
    };
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    reader.join().unwrap();
    all.sort_unstable();
    let n = all.len() as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>());
    assert_eq!(s.last_seq(), n);
    for w in 0..writers {
        let h = s
            .history(&HistoryQuery {
                entity: format!("w{w}"),
                ..Default::default()
            })
            .unwrap();
        let want: u64 = (0..per)
            .map(|i| {
                if i % 7 == 0 {
                    12
                } else if i % 5 == 0 {
                    2
                } else {
                    1
                }
            })
            .sum();
        assert_eq!(h.len() as u64, want);
    }
}

#[test]
fn invalid_event_rejects_the_whole_batch() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), Options::default()).unwrap();
    let mut bad = ev("a", 1);
    bad.tags.push(String::new());
    let e = s.append(vec![ev("a", 0), bad, ev("a", 2)]).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::InvalidArgument(_))
            && msg.contains("event 1")
            && msg.contains("tags[1]"),
        "{msg}"
    );
    assert_eq!(s.last_seq(), 0);
    let mut big = ev("a", 1);
    big.payload = vec![b'x'; 1024 * 1024 + 1];
    let msg = s.append(vec![big]).unwrap_err().to_string();
    assert!(msg.contains("payload") && msg.contains("1048576"), "{msg}");
    assert_eq!(s.last_seq(), 0);
    let e = s
        .history(&HistoryQuery {
            entity: "a".into(),
            from_ts: Some(5),
            to_ts: Some(4),
            ..Default::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("from_ts"), "{e}");
}

#[test]
fn full_disk_fails_cleanly_and_appends_resume_when_space_returns() {
    let (disk, dir, opts) = common::sim_store_opts();
    let s = Store::open(&dir, opts.clone()).unwrap();
    s.append(vec![ev("a", 1)]).unwrap();
    disk.add_rule(FaultRule::new(FaultOp::Write, Errno::Enospc).partial());
    let e = s.append(vec![ev("a", 2), ev("a", 3)]).unwrap_err();
    assert!(matches!(e, Error::DiskFull(_)), "{e}");
    disk.add_rule(FaultRule::new(FaultOp::Write, Errno::Enospc));
    assert!(matches!(
        s.append(vec![ev("a", 4)]).unwrap_err(),
        Error::DiskFull(_)
    ));
    assert_eq!(s.last_seq(), 1, "nothing of the failed appends is visible");
    assert_eq!(s.append(vec![ev("a", 5)]).unwrap().seqs, vec![2]);
    drop(s);
    let s = Store::open(&dir, opts).unwrap();
    assert_eq!(
        s.open_report().truncated_bytes,
        0,
        "the half-written block was cut at once"
    );
    let all = s.read(1, 0).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].event, ev("a", 5));
}

#[test]
fn failed_fsync_makes_the_store_read_only_until_reopened() {
    let (disk, dir, opts) = common::sim_store_opts();
    let s = Store::open(&dir, opts.clone()).unwrap();
    s.append(vec![ev("a", 1)]).unwrap();
    disk.add_rule(FaultRule::new(FaultOp::Sync, Errno::Eio));
    assert!(matches!(
        s.append(vec![ev("a", 2)]).unwrap_err(),
        Error::ReadOnly(_)
    ));
    assert!(
        matches!(s.append(vec![ev("a", 3)]).unwrap_err(), Error::ReadOnly(_)),
        "no retry after a failed fsync"
    );
    assert!(s.is_read_only());
    assert_eq!(s.read(1, 0).unwrap().len(), 1, "reads keep working");
    drop(s);
    let s = Store::open(&dir, opts).unwrap();
    assert!(!s.is_read_only());
    s.append(vec![ev("a", 4)]).unwrap();
}

#[test]
fn corrupt_or_missing_index_is_rebuilt_from_its_segment() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 3, 0);
    let mut idx: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    idx.sort();
    std::fs::remove_file(&idx[0]).unwrap();
    let mut bytes = std::fs::read(&idx[1]).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&idx[1], bytes).unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(
        s.open_report().indexes_rebuilt,
        1,
        "the missing one at open"
    );
    let h = s
        .history(&HistoryQuery {
            entity: "e3".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(!h.is_empty());
    assert!(idx[0].exists());
    // Both rebuilt indexes are valid now: reopening rebuilds nothing.
    drop(s);
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(s.open_report().indexes_rebuilt, 0);
    assert_eq!(s.read(1, 0).unwrap().len() as u64, s.last_seq());
}

#[test]
fn corrupt_sealed_block_is_reported_with_file_and_offset_and_the_rest_serves() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 3, 5);
    let mut segs: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&segs[0], bytes).unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let e = s.read(1, 0).unwrap_err().to_string();
    assert!(
        e.contains("corruption")
            && e.contains(&segs[0].file_name().unwrap().to_string_lossy().to_string())
            && e.contains("offset"),
        "{e}"
    );
    let tail = s
        .history(&HistoryQuery {
            entity: "tail".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(tail.len(), 5, "other segments keep serving");
    s.append(vec![ev("x", 1)]).unwrap();
}

#[test]
fn leftover_temp_files_are_removed_and_unknown_files_reported() {
    let d = tempfile::tempdir().unwrap();
    drop(Store::open(d.path(), small()).unwrap());
    std::fs::write(d.path().join("00000000000000000009.idx.tmp"), b"partial").unwrap();
    std::fs::write(d.path().join("notes.txt"), b"mine").unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(s.open_report().temp_files_removed, 1);
    assert_eq!(s.open_report().unknown_files.len(), 1);
    assert!(d.path().join("notes.txt").exists());
}

#[test]
fn old_format_version_is_rejected_clearly() {
    let d = tempfile::tempdir().unwrap();
    drop(Store::open(d.path(), small()).unwrap());
    let p = d.path().join("00000000000000000001.seg");
    let mut b = std::fs::read(&p).unwrap();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&p, b).unwrap();
    let e = Store::open(d.path(), small()).err().unwrap().to_string();
    assert!(e.contains("unsupported format version 0"), "{e}");
}

/// Child side of the kill -9 test: append forever, printing each acknowledged seq.
#[test]
#[ignore = "run as a child process by killed_writer_loses_no_acknowledged_event"]
fn child_writer() {
    let Ok(dir) = std::env::var("ECHOLOG_CHILD_DIR") else {
        return;
    };
    let s = Store::open(
        &dir,
        Options {
            segment_size_bytes_max: 16 * 1024,
            sync: SyncPolicy::Always,
            ..Options::default()
        },
    )
    .unwrap();
    use std::io::Write;
    let mut out = std::io::stdout();
    for i in 0.. {
        let seqs = s.append(vec![ev("k", i), ev("k", i)]).unwrap().seqs;
        writeln!(out, "{}", seqs[1]).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_writer_loses_no_acknowledged_event() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ECHOLOG_CHILD_DIR", d.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = 0u64;
        let target = 200 + round * 150;
        while let Some(Ok(l)) = lines.next() {
            if let Ok(n) = l.trim().parse::<u64>() {
                acked = n;
                if acked >= target {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = Store::open(d.path(), small()).unwrap();
        assert!(
            s.last_seq() >= acked,
            "round {round}: acknowledged {acked}, store has {}",
            s.last_seq()
        );
        assert_eq!(s.last_seq() % 2, 0, "batches are atomic");
        let all = s.read(1, 0).unwrap();
        assert_eq!(all.len() as u64, s.last_seq());
    }
}

#[test]
fn interval_and_never_policies_keep_acknowledged_events_across_a_clean_reopen() {
    for sync in ["interval:5", "never"] {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            sync: sync.parse().unwrap(),
            ..small()
        };
        {
            let s = Store::open(d.path(), opts.clone()).unwrap();
            for i in 0..50 {
                s.append(vec![ev("a", i)]).unwrap();
            }
            // Let the interval flusher run at least once.
            std::thread::sleep(std::time::Duration::from_millis(30));
            s.append(vec![ev("a", 50)]).unwrap();
        }
        let s = Store::open(d.path(), opts).unwrap();
        assert_eq!(s.last_seq(), 51, "{sync}");
        assert_eq!(s.read(1, 0).unwrap().len(), 51, "{sync}");
    }
}

/// A store with deletes spread over sealed segments; returns the live count of "e1".
fn store_with_deletes(dir: &std::path::Path) -> usize {
    let s = Store::open(dir, small()).unwrap();
    for i in 0..60 {
        s.append(vec![ev(&format!("e{}", i % 3), i)]).unwrap();
    }
    s.delete("e0", &[], "gone").unwrap();
    s.seal_active().unwrap();
    let victim = s
        .history(&HistoryQuery {
            entity: "e1".into(),
            ..Default::default()
        })
        .unwrap()[3]
        .seq;
    s.delete("", &[victim], "void").unwrap();
    for i in 60..90 {
        s.append(vec![ev(&format!("e{}", i % 3), i)]).unwrap();
    }
    s.seal_active().unwrap();
    s.history(&HistoryQuery {
        entity: "e1".into(),
        ..Default::default()
    })
    .unwrap()
    .len()
}

fn live(s: &Store, e: &str) -> usize {
    s.history(&HistoryQuery {
        entity: e.into(),
        ..Default::default()
    })
    .unwrap()
    .len()
}

#[test]
fn corrupt_or_missing_tombstone_file_is_rebuilt_from_the_indexes() {
    for damage in ["flip", "remove"] {
        let d = tempfile::tempdir().unwrap();
        let e1_live = store_with_deletes(d.path());
        let p = d.path().join(echolog::TOMBSTONES_FILE);
        if damage == "flip" {
            let mut b = std::fs::read(&p).unwrap();
            b[30] ^= 0x40;
            std::fs::write(&p, b).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
        let s = Store::open(d.path(), small()).unwrap();
        assert_eq!(
            live(&s, "e0"),
            10,
            "{damage}: only e0's events after its tombstone are live"
        );
        assert_eq!(live(&s, "e1"), e1_live, "{damage}: the seq delete holds");
        drop(s);
        // The repaired file is valid: a second open agrees without repairing again.
        let s = Store::open(d.path(), small()).unwrap();
        assert_eq!(live(&s, "e0"), 10);
    }
}

#[test]
fn a_seal_cut_short_before_the_next_segment_is_recovered() {
    let d = tempfile::tempdir().unwrap();
    let e1_live = store_with_deletes(d.path());
    // Crash after the index and tombstone file were written, before the new segment existed.
    let newest = common::files_with_ext(d.path(), "seg").pop().unwrap();
    assert_eq!(
        std::fs::metadata(&newest).unwrap().len(),
        32,
        "the newest segment is empty"
    );
    std::fs::remove_file(&newest).unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    assert_eq!(live(&s, "e0"), 10);
    assert_eq!(live(&s, "e1"), e1_live);
    let last = s.last_seq();
    assert_eq!(s.append(vec![ev("e9", 1)]).unwrap().seqs, vec![last + 1]);
    assert_eq!(s.read(1, 0).unwrap().len() as u64, last + 1);
}

#[test]
fn damage_before_valid_blocks_of_the_active_segment_refuses_to_open_instead_of_truncating() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = Store::open(d.path(), small()).unwrap();
        for i in 0..5 {
            s.append(vec![ev("a", i)]).unwrap();
        }
    }
    let seg = common::files_with_ext(d.path(), "seg").pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[32 + 60] ^= 0x10; // inside the first block's body
    std::fs::write(&seg, &b).unwrap();
    let e = Store::open(d.path(), small())
        .err()
        .expect("open must fail")
        .to_string();
    assert!(e.contains("corruption") && e.contains("offset 32"), "{e}");
    assert_eq!(std::fs::read(&seg).unwrap(), b, "nothing was truncated");
}

#[test]
fn dropping_the_last_handle_releases_the_directory_at_once_even_with_a_flusher() {
    // The interval flusher wakes every millisecond; it must never keep the store (and its
    // lock) alive past the last handle.
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: "interval:1".parse().unwrap(),
        ..small()
    };
    for i in 0..40 {
        let s = Store::open(d.path(), opts.clone()).unwrap();
        s.append(vec![ev("a", i)]).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(300 + 50 * i));
        drop(s);
    }
    assert_eq!(Store::open(d.path(), opts).unwrap().last_seq(), 40);
}

#[test]
fn batches_over_the_configured_limits_are_too_large_and_store_nothing() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        batch_events_max: 3,
        batch_bytes_max: 2_000,
        ..small()
    };
    let s = Store::open(d.path(), opts).unwrap();
    let e = s.append((0..4).map(|i| ev("a", i)).collect()).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge(_)) && e.to_string().contains("at most 3 events"),
        "{e}"
    );
    let mut big = ev("a", 1);
    big.payload = vec![b'x'; 1_500];
    let e = s.append(vec![big.clone(), big]).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge(_)) && e.to_string().contains("at most 2000 bytes"),
        "{e}"
    );
    assert_eq!(s.last_seq(), 0);
    assert_eq!(s.append(vec![ev("a", 1)]).unwrap().seqs, vec![1]);
}

#[test]
fn verify_checks_the_active_segments_checkpoint_against_a_scan_of_its_segment() {
    use echolog_format::checkpoint::{decode_part, encode_part, PartSource};
    let d = tempfile::tempdir().unwrap();
    let o = Options {
        segment_size_bytes_max: 1 << 20,
        seal_at_close_bytes_min: None,
        checkpoint_bytes: Some(4096),
        compaction: false,
        ..Options::default()
    };
    let s = Store::open(d.path(), o.clone()).unwrap();
    for i in 0..2000u64 {
        s.append(vec![ev(&format!("e{}", i % 10), i)]).unwrap();
    }
    drop(s);
    let r = echolog::verify(d.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert!(r.checkpoint_records > 1000, "{r:?}");
    // A checkpoint whose checksums hold but which lies: its first part re-encoded with two
    // entities' postings swapped. Open would trust it; verify compares it with the segment.
    let ckpt = d.path().join(format!("{:020}.ckpt", 1));
    let bytes = std::fs::read(&ckpt).unwrap();
    let (part, len) = decode_part(&bytes).unwrap();
    let mut entities: Vec<(&[u8], &[u32])> = part
        .entities
        .iter()
        .map(|(k, r)| (*k, part.ordinals(r)))
        .collect();
    let (a, b) = (entities[0].1, entities[1].1);
    entities[0].1 = b;
    entities[1].1 = a;
    let src = PartSource {
        blocks: part.blocks.clone(),
        ts: &part.ts,
        entities,
        kinds: part
            .kinds
            .iter()
            .map(|(k, r)| (*k, part.ordinals(r)))
            .collect(),
        tags: part
            .tags
            .iter()
            .map(|(k, r)| (*k, part.ordinals(r)))
            .collect(),
        minutes: part
            .minutes
            .iter()
            .map(|(m, r)| (*m, part.ordinals(r)))
            .collect(),
        ids: part.ids.clone(),
    };
    let mut lying = encode_part(&part.header, &src);
    lying.extend_from_slice(&bytes[len..]);
    std::fs::write(&ckpt, &lying).unwrap();
    let r = echolog::verify(d.path()).unwrap();
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(r.problems[0].what.contains("differs from a scan"), "{r:?}");
    // A damaged checkpoint is only a note: open scans the segment instead.
    let mut damaged = bytes.clone();
    damaged[10] ^= 1;
    std::fs::write(&ckpt, &damaged).unwrap();
    let r = echolog::verify(d.path()).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert!(
        r.notes.iter().any(|n| n.contains("not used")),
        "{:?}",
        r.notes
    );
    let s = Store::open(d.path(), o).unwrap();
    assert_eq!(s.open_report().checkpoint_records, 0);
    assert_eq!(s.last_seq(), 2000);
}
