//! Findings of the fault review, each pinned by a test on the simulated disk: a seal failing
//! at each step, passing errors while loading a sealed segment, temp files that are not the
//! store's, and the data directory's own durability.

mod common;

use std::path::Path;

use common::{ev, sim_store_opts};
use echolog::storage::sim::{Errno, FaultOp, FaultRule, SimDisk};
use echolog::{Error, Event, HistoryQuery, Options, Store};

fn with_id(entity: &str, i: u64) -> Event {
    Event {
        id: Some(format!("id-{i}")),
        ..ev(entity, i)
    }
}

/// Appends `n` events with ids, returning them in seq order.
fn fill(s: &Store, n: u64) -> Vec<Event> {
    let mut acked = Vec::new();
    for i in 0..n {
        let e = with_id(&format!("e{}", i % 3), i);
        let out = s.append(vec![e.clone()]).unwrap();
        assert_eq!(out.seqs, vec![i + 1]);
        acked.push(e);
    }
    acked
}

/// Every acknowledged event reads back exactly once, in order, and ids are still known.
fn check(dir: &Path, opts: &Options, acked: &[Event]) -> Store {
    let s = Store::open(dir, opts.clone()).unwrap();
    let all = s.read(1, 0).unwrap();
    let got: Vec<&Event> = all.iter().map(|e| &e.event).collect();
    let want: Vec<&Event> = acked.iter().collect();
    assert_eq!(got, want);
    assert_eq!(s.last_seq(), acked.len() as u64);
    for (i, e) in acked.iter().enumerate() {
        let out = s.append(vec![e.clone()]).unwrap();
        assert_eq!((out.seqs, out.duplicates), (vec![i as u64 + 1], 1));
    }
    s
}

/// A seal failing at `rule` must either leave the store appending safely into the old
/// segment, or turn it read-only; either way, after a crash or a power loss every
/// acknowledged event is there and no seq is reused.
fn seal_fails(rule: FaultRule, expect_read_only: bool) {
    for seed in [0u64, 1, 2, 3, 7, 11] {
        let (disk, dir, opts) = sim_store_opts();
        let s = Store::open(&dir, opts.clone()).unwrap();
        let mut acked = fill(&s, 5);
        disk.add_rule(rule.clone());
        let sealed = s.seal_active();
        assert_eq!(sealed.is_err(), disk.injected() > 0, "{rule:?}");
        let e = with_id("after", 100);
        match s.append(vec![e.clone()]) {
            Ok(out) => {
                assert!(!expect_read_only, "{rule:?}: append after a failed seal");
                assert_eq!(out.seqs, vec![6]);
                acked.push(e);
            }
            Err(err) => {
                assert!(expect_read_only, "{rule:?}: {err}");
                assert!(matches!(err, Error::ReadOnly(_)), "{err}");
                assert!(s.is_read_only());
            }
        }
        drop(s);
        if seed == 0 {
            disk.crash();
        } else {
            disk.power_loss(seed);
        }
        let s = check(&dir, &opts, &acked);
        // The store goes on sealing and appending after the restart.
        s.seal_active().unwrap();
        let out = s.append(vec![with_id("later", 200)]).unwrap();
        assert_eq!(out.seqs, vec![acked.len() as u64 + 1]);
    }
}

/// Closing the store seals its active segment (any size here): a power cut at every call of
/// that seal, then a power loss, leaves every acknowledged event exactly once.
#[test]
fn a_power_cut_at_any_step_of_the_seal_at_close_loses_and_doubles_nothing() {
    let setup = |seed: u64| {
        let (disk, dir, opts) = sim_store_opts();
        let opts = Options {
            segment_size_bytes_max: 1 << 20,
            seal_at_close_bytes_min: Some(1),
            ..opts
        };
        let s = Store::open(&dir, opts.clone()).unwrap();
        let acked = fill(&s, 5 + seed);
        (disk, dir, opts, s, acked)
    };
    // How many calls the seal at close makes when nothing fails.
    let (disk, _, _, s, _) = setup(0);
    let before = disk.calls();
    drop(s);
    let seal_calls = disk.calls() - before;
    assert!(seal_calls >= 6, "the seal at close made {seal_calls} calls");
    for cut in 0..=seal_calls {
        for seed in [1u64, 2, 5] {
            let (disk, dir, opts, s, acked) = setup(seed);
            disk.power_off_after(cut);
            drop(s);
            disk.power_loss(seed + cut);
            let s = check(&dir, &opts, &acked);
            let out = s.append(vec![with_id("later", 200)]).unwrap();
            assert_eq!(out.seqs, vec![acked.len() as u64 + 1], "cut after {cut}");
        }
    }
}

#[test]
fn a_directory_fsync_failing_after_the_new_segment_is_renamed_makes_the_store_read_only() {
    // The seal's third directory fsync follows the new segment's rename.
    seal_fails(FaultRule::new(FaultOp::SyncDir, Errno::Eio).skip(2), true);
}

#[test]
fn a_failed_rename_of_the_new_segment_makes_the_store_read_only() {
    seal_fails(
        FaultRule::new(FaultOp::Rename, Errno::Eio).path(".seg"),
        true,
    );
}

#[test]
fn a_failed_fsync_of_the_index_or_tombstone_file_makes_the_store_read_only() {
    seal_fails(
        FaultRule::new(FaultOp::Sync, Errno::Eio).path(".idx.tmp"),
        true,
    );
    seal_fails(
        FaultRule::new(FaultOp::Sync, Errno::Eio).path("TOMBSTONES.tmp"),
        true,
    );
    seal_fails(FaultRule::new(FaultOp::SyncDir, Errno::Eio), true);
}

#[test]
fn running_out_of_file_handles_while_sealing_keeps_appending_into_the_old_segment() {
    seal_fails(
        FaultRule::new(FaultOp::Create, Errno::Emfile).path(".seg.tmp"),
        false,
    );
    seal_fails(
        FaultRule::new(FaultOp::Create, Errno::Emfile).path(".idx.tmp"),
        false,
    );
    seal_fails(
        FaultRule::new(FaultOp::Write, Errno::Enospc).path("TOMBSTONES.tmp"),
        false,
    );
}

#[test]
fn a_seal_triggered_by_appends_survives_a_passing_emfile() {
    let (disk, dir, opts) = sim_store_opts();
    let s = Store::open(&dir, opts.clone()).unwrap();
    disk.add_rule(
        FaultRule::new(FaultOp::Create, Errno::Emfile)
            .path(".seg.tmp")
            .times(3),
    );
    let acked = fill(&s, 200);
    assert_eq!(disk.injected(), 3);
    assert!(!s.is_read_only());
    assert!(s.stats().unwrap().segments > 2, "later seals went through");
    drop(s);
    disk.power_loss(5);
    check(&dir, &opts, &acked);
}

#[test]
fn a_passing_error_while_first_loading_a_sealed_segment_is_not_remembered() {
    let (disk, dir, opts) = sim_store_opts();
    let acked = {
        let s = Store::open(&dir, opts.clone()).unwrap();
        let acked = fill(&s, 60);
        s.seal_active().unwrap();
        acked
    };
    let s = Store::open(&dir, opts.clone()).unwrap();
    disk.add_rule(FaultRule::new(FaultOp::Map, Errno::Emfile).path(".idx"));
    let q = HistoryQuery {
        entity: "e1".into(),
        ..Default::default()
    };
    let e = s.history(&q).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_eq!(s.history(&q).unwrap().len(), 20, "the next reader loads it");
    // The segment's header is read with one small read at the first load: a failure there
    // passes too.
    drop(s);
    let s = Store::open(&dir, opts.clone()).unwrap();
    let injected = disk.injected();
    disk.add_rule(FaultRule::new(FaultOp::Read, Errno::Eio).path(".seg"));
    let e = s.history(&q).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_eq!(disk.injected(), injected + 1);
    assert_eq!(s.history(&q).unwrap().len(), 20, "the next reader loads it");
    // A retried id: the saved id filter (read back whole, so no builder thread races for the
    // one fault) says "maybe" for its segment, whose first load fails once.
    drop(s);
    let s = Store::open(&dir, opts.clone()).unwrap();
    let injected = disk.injected();
    disk.add_rule(FaultRule::new(FaultOp::Map, Errno::Emfile).path(".seg"));
    assert!(s.append(vec![acked[3].clone()]).is_err());
    assert_eq!(disk.injected(), injected + 1);
    let out = s.append(vec![acked[3].clone()]).unwrap();
    assert_eq!(
        (out.seqs, out.duplicates),
        (vec![4], 1),
        "ids in sealed segments are found"
    );
    assert_eq!(s.append(vec![with_id("x", 1000)]).unwrap().seqs, vec![61]);
}

#[test]
fn only_the_stores_own_temp_files_are_removed_at_open() {
    let (disk, dir, opts) = sim_store_opts();
    drop(Store::open(&dir, opts.clone()).unwrap());
    disk.write_file(&dir.join("00000000000000000009.idx.tmp"), b"half");
    disk.write_file(&dir.join("TOMBSTONES.tmp"), b"half");
    disk.write_file(&dir.join("operator-notes.tmp"), b"mine");
    let s = Store::open(&dir, opts).unwrap();
    assert_eq!(s.open_report().temp_files_removed, 2);
    assert_eq!(
        s.open_report().unknown_files,
        vec![dir.join("operator-notes.tmp")]
    );
    assert_eq!(
        disk.read_file(&dir.join("operator-notes.tmp")).unwrap(),
        b"mine"
    );
}

#[test]
fn a_new_data_directory_is_made_durable_in_its_parent() {
    let disk = SimDisk::new();
    let opts = Options {
        backend: Some(disk.backend()),
        ..common::small()
    };
    disk.add_rule(FaultRule::new(FaultOp::SyncDir, Errno::Eio));
    let e = Store::open("/sim/new/data", opts.clone()).err().unwrap();
    let msg = e.to_string();
    assert!(msg.contains("fsync of directory /sim/new failed"), "{msg}");
    Store::open("/sim/new/data", opts).unwrap();
}

fn noisy(entity: &str, i: u64, bytes: usize) -> Event {
    // Incompressible payload, so that one batch spans several 4 KiB pages.
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let payload = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect();
    Event {
        payload,
        ..ev(entity, i)
    }
}

#[test]
fn a_power_loss_tearing_the_last_write_in_any_page_order_always_reopens() {
    for seed in 0..64u64 {
        let (disk, dir, mut opts) = sim_store_opts();
        opts.segment_size_bytes_max = 1 << 20;
        let s = Store::open(&dir, opts.clone()).unwrap();
        let mut acked = Vec::new();
        for i in 0..3 {
            let e = noisy("a", i, 300);
            s.append(vec![e.clone()]).unwrap();
            acked.push(e);
        }
        // One batch of ~18 KiB in ~36 blocks, written with one write; its fdatasync fails, so
        // it is not acknowledged, and the power goes before anything else reaches the disk.
        disk.add_rule(FaultRule::new(FaultOp::Sync, Errno::Eio));
        let batch: Vec<Event> = (10..70).map(|i| noisy("b", i, 300)).collect();
        assert!(s.append(batch.clone()).is_err());
        drop(s);
        disk.power_loss(seed);
        let s = Store::open(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("seed {seed}: a torn last write refused to open: {e}"));
        let all: Vec<Event> = s.read(1, 0).unwrap().into_iter().map(|e| e.event).collect();
        assert!(
            all == acked || all == [acked.clone(), batch.clone()].concat(),
            "seed {seed}: the unacknowledged batch is wholly there or wholly gone ({} records)",
            all.len()
        );
    }
}

#[test]
fn damage_to_durable_data_followed_by_a_later_commit_refuses_to_open() {
    let (disk, dir, mut opts) = sim_store_opts();
    opts.segment_size_bytes_max = 1 << 20;
    let s = Store::open(&dir, opts.clone()).unwrap();
    for i in 0..3 {
        s.append(vec![noisy("a", i, 300)]).unwrap();
    }
    drop(s);
    let seg = dir.join("00000000000000000001.seg");
    let mut bytes = disk.read_file(&seg).unwrap();
    bytes[32 + 60] ^= 0x40; // inside the first block's body
    disk.write_file(&seg, &bytes);
    let e = Store::open(&dir, opts).err().unwrap();
    assert!(
        matches!(e, Error::Corruption { offset: 32, .. }),
        "damage before a later durable commit is corruption: {e}"
    );
}

#[test]
fn with_sync_interval_tail_sees_only_what_a_power_loss_cannot_take_back() {
    let (disk, dir, mut opts) = sim_store_opts();
    opts.sync = echolog::SyncPolicy::Interval(std::time::Duration::from_secs(60));
    let s = Store::open(&dir, opts.clone()).unwrap();
    for i in 0..5 {
        s.append(vec![ev("a", i)]).unwrap();
    }
    assert_eq!(s.last_seq(), 5, "acknowledged and readable at once");
    assert_eq!(s.read(1, 0).unwrap().len(), 5);
    assert_eq!(s.durable_seq(), 0);
    assert!(s.read_durable(1, 0).unwrap().is_empty(), "but not tailed");
    let waited = s.wait_for_seq_after(0, std::time::Duration::from_millis(20));
    assert_eq!(waited, 0);
    s.sync().unwrap();
    assert_eq!(s.durable_seq(), 5);
    assert_eq!(s.read_durable(2, 2).unwrap().len(), 2);
    assert_eq!(s.read_durable(1, 0).unwrap().len(), 5);
    // Two more, not synced: a power loss takes them back, and seq 6 is handed out again.
    s.append(vec![ev("b", 1), ev("b", 2)]).unwrap();
    assert_eq!(s.read_durable(6, 0).unwrap().len(), 0);
    std::mem::forget(s); // no final fdatasync: the machine loses power with the process
    disk.power_loss(3);
    let s = Store::open(&dir, opts).unwrap();
    let kept: Vec<Event> = s.read(1, 5).unwrap().into_iter().map(|e| e.event).collect();
    let tailed: Vec<Event> = (0..5).map(|i| ev("a", i)).collect();
    assert_eq!(kept, tailed, "what a tail delivered is all still there");
    let next = s.last_seq() + 1;
    assert_eq!(s.append(vec![ev("c", 1)]).unwrap().seqs, vec![next]);
}

#[test]
fn stats_after_open_totals_the_store_without_mapping_an_index() {
    let (disk, dir, opts) = sim_store_opts();
    let before = {
        let s = Store::open(&dir, opts.clone()).unwrap();
        fill(&s, 200);
        s.seal_active().unwrap();
        s.stats().unwrap()
    };
    assert!(before.segments > 3, "{before:?}");
    let s = Store::open(&dir, opts.clone()).unwrap();
    // Any attempt to map an index file fails: Stats must not need one.
    disk.add_rule(
        FaultRule::new(FaultOp::Map, Errno::Emfile)
            .path(".idx")
            .times(u64::MAX),
    );
    // One read of each index's first page (header, table and summary: version 6 writes the
    // summary first), a disk read per segment when the page cache is cold; a second read fails.
    let sealed = u64::from(before.segments) - 1;
    disk.add_rule(
        FaultRule::new(FaultOp::Read, Errno::Eio)
            .path(".idx")
            .skip(sealed)
            .times(u64::MAX),
    );
    let st = s.stats().unwrap();
    assert_eq!(
        (st.events, st.disk_bytes, st.raw_bytes, st.segments),
        (
            before.events,
            before.disk_bytes,
            before.raw_bytes,
            before.segments
        )
    );
    assert!(disk.injected_by_op().is_empty(), "no index was mapped");
}

/// A count bounded in time reads only the index headers of the sealed segments outside its
/// range (one small read each): it maps and checksums only the indexes it counts from.
#[test]
fn a_bounded_count_after_open_maps_no_index_outside_its_range() {
    let (disk, dir, opts) = sim_store_opts();
    {
        let s = Store::open(&dir, opts.clone()).unwrap();
        fill(&s, 200);
        assert!(s.stats().unwrap().segments > 3);
    }
    let s = Store::open(&dir, opts.clone()).unwrap();
    let newest = s.read(s.last_seq(), 1).unwrap()[0].event.ts;
    disk.add_rule(
        FaultRule::new(FaultOp::Map, Errno::Eio)
            .path(".idx")
            .forever(),
    );
    // The newest event is in the active segment: no sealed segment reaches its ts.
    let q = |from_ts| echolog::CountQuery {
        from_ts: Some(from_ts),
        ..Default::default()
    };
    assert_eq!(s.count(&q(newest)).unwrap().total, 1);
    assert!(disk.injected_by_op().is_empty(), "no index was mapped");
    // The control: a count from the start needs them all.
    assert!(s.count(&q(0)).is_err());
    disk.clear_rules();
    assert_eq!(s.count(&q(0)).unwrap().total, 200);
}

#[test]
fn a_failing_cluster_file_fails_only_its_compaction_step_but_a_directory_fsync_is_read_only() {
    let cases = [
        (FaultOp::Create, Errno::Emfile, false),
        (FaultOp::Write, Errno::Eio, false),
        (FaultOp::Write, Errno::Enospc, false),
        (FaultOp::Sync, Errno::Eio, false),
        (FaultOp::Rename, Errno::Eio, false),
        (FaultOp::SyncDir, Errno::Eio, true),
    ];
    for (op, errno, read_only) in cases {
        let (disk, dir, opts) = sim_store_opts();
        let s = Store::open(&dir, opts.clone()).unwrap();
        let mut acked = fill(&s, 60);
        s.seal_active().unwrap();
        let rule = FaultRule::new(op, errno);
        // Only the cluster file's calls fail (the directory fsync names the directory).
        disk.add_rule(if op == FaultOp::SyncDir {
            rule
        } else {
            rule.path(".clu")
        });
        let e = s.compact_now().unwrap_err();
        assert_eq!(s.is_read_only(), read_only, "{op:?} {errno:?}: {e}");
        disk.clear_rules();
        let leftovers: Vec<String> = disk
            .files(&dir)
            .into_iter()
            .filter(|f| f.ends_with(".clu.tmp"))
            .collect();
        if read_only {
            drop(s);
            check(&dir, &opts, &acked);
            continue;
        }
        assert!(leftovers.is_empty(), "{op:?}: {leftovers:?}");
        // Appends go on, and the next compaction does the work.
        let e = with_id("e1", 1000);
        s.append(vec![e.clone()]).unwrap();
        acked.push(e);
        s.compact_now().unwrap();
        assert!(s.stats().unwrap().compaction_idle, "{op:?}");
        let q = HistoryQuery {
            entity: "e1".into(),
            ..Default::default()
        };
        assert_eq!(s.history(&q).unwrap().len(), 21, "{op:?}");
        drop(s);
        check(&dir, &opts, &acked);
    }
}
