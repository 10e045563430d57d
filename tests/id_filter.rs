//! The id filter saved at close (the IDFILTER file): a reopened store answers "is this id new"
//! from it without mapping a sealed index, and never trusts one that is damaged or that was
//! made from other segments.

mod common;

use std::path::Path;

use common::{ev, sim_store_opts};
use echolog::storage::sim::{Errno, FaultOp, FaultRule, SimDisk};
use echolog::{Event, Options, Store, ID_FILTER_FILE};

fn with_id(prefix: &str, i: u64) -> Event {
    Event {
        id: Some(format!("{prefix}-{i:05}")),
        ..ev(&format!("e{}", i % 3), i)
    }
}

/// Appends `n` events with ids `prefix-i`, one a batch, into a store that seals every few.
fn fill(dir: &Path, opts: &Options, prefix: &str, n: u64) {
    let s = Store::open(dir, opts.clone()).unwrap();
    for i in 0..n {
        let out = s.append(vec![with_id(prefix, i)]).unwrap();
        assert_eq!((out.seqs, out.duplicates), (vec![i + 1], 0));
    }
    let segments = s.stats().unwrap().segments;
    assert!(segments >= 5, "ids in several sealed segments: {segments}");
}

/// Every id of `prefix-0..n` is a duplicate of the event that holds it.
fn retries_are_duplicates(s: &Store, prefix: &str, n: u64) {
    for i in 0..n {
        let out = s.append(vec![with_id(prefix, i)]).unwrap();
        assert_eq!((out.seqs, out.duplicates), (vec![i + 1], 1), "{prefix}-{i}");
    }
}

fn fail_index_maps(disk: &SimDisk) {
    disk.add_rule(
        FaultRule::new(FaultOp::Map, Errno::Eio)
            .path(".idx")
            .forever(),
    );
}

#[test]
fn a_reopened_store_takes_new_ids_without_mapping_a_sealed_index() {
    let (disk, dir, opts) = sim_store_opts();
    fill(&dir, &opts, "id", 200);
    assert!(
        disk.read_file(&dir.join(ID_FILTER_FILE)).is_some(),
        "saved at close"
    );

    let s = Store::open(&dir, opts.clone()).unwrap();
    // Any read of a sealed index fails from here: a new id must not need one.
    fail_index_maps(&disk);
    let out = s.append(vec![with_id("new", 1)]).unwrap();
    assert_eq!(out.duplicates, 0);
    let st = s.stats().unwrap();
    assert_eq!(
        st.id_filter_backlog_segments, 0,
        "every sealed segment covered"
    );
    assert!(st.id_filter_bytes > 0);
    disk.clear_rules();
    retries_are_duplicates(&s, "id", 200);
    drop(s);

    // The control: without the file the same append searches the sealed indexes.
    disk.backend().0.remove(&dir.join(ID_FILTER_FILE)).unwrap();
    let s = Store::open(&dir, opts.clone()).unwrap();
    fail_index_maps(&disk);
    assert!(s.append(vec![with_id("new", 2)]).is_err());
    disk.clear_rules();
    retries_are_duplicates(&s, "id", 200);
}

#[test]
fn a_filter_saved_from_other_segments_is_not_trusted() {
    // Two stores of the same shape (same seq ranges) but different ids.
    let (disk_a, dir, opts_a) = sim_store_opts();
    let (disk_b, _, opts_b) = sim_store_opts();
    fill(&dir, &opts_a, "aa", 200);
    fill(&dir, &opts_b, "bb", 200);
    let segs = |d: &SimDisk| {
        let mut f = d.files(&dir);
        f.retain(|n| n.ends_with(".seg"));
        f
    };
    assert_eq!(segs(&disk_a), segs(&disk_b), "the same seq ranges");
    // B gets A's filter: it holds none of B's ids, so trusting it would take B's retries as
    // new events, doubled.
    let a_filter = disk_a.read_file(&dir.join(ID_FILTER_FILE)).unwrap();
    disk_b.write_file(&dir.join(ID_FILTER_FILE), &a_filter);
    let s = Store::open(&dir, opts_b.clone()).unwrap();
    retries_are_duplicates(&s, "bb", 200);
    let out = s.append(vec![with_id("aa", 7)]).unwrap();
    assert_eq!(out.duplicates, 0, "A's ids are new in B");
}

#[test]
fn a_damaged_filter_is_never_trusted_and_is_rebuilt() {
    let (disk, dir, opts) = sim_store_opts();
    fill(&dir, &opts, "id", 200);
    let path = dir.join(ID_FILTER_FILE);
    let good = disk.read_file(&path).unwrap();
    // Damage to the header drops the whole file; to the blocks (every bit cleared, so every
    // id there would look new), only the pages a lookup touches, which then answer "maybe".
    let mut header = good.clone();
    header[5] ^= 0x10;
    let mut blocks = good.clone();
    let n = blocks.len();
    blocks[n - 4096..].fill(0);
    for bad in [header, blocks] {
        disk.write_file(&path, &bad);
        let s = Store::open(&dir, opts.clone()).unwrap();
        retries_are_duplicates(&s, "id", 200);
        drop(s);
        let saved = disk.read_file(&path).unwrap();
        assert_ne!(saved, bad, "rewritten at close, without what was damaged");
        let s = Store::open(&dir, opts.clone()).unwrap();
        retries_are_duplicates(&s, "id", 200);
        drop(s);
    }
}

#[test]
fn a_power_cut_while_saving_leaves_a_filter_that_is_whole_or_absent() {
    for calls in 0..8u64 {
        let (disk, dir, opts) = sim_store_opts();
        fill(&dir, &opts, "id", 200);
        let s = Store::open(&dir, opts.clone()).unwrap();
        for i in 200..240 {
            s.append(vec![with_id("id", i)]).unwrap();
        }
        // The close seals nothing (the active segment is small): its calls are the save's.
        disk.power_off_after(calls);
        drop(s);
        disk.power_loss(calls);
        let s = Store::open(&dir, opts.clone()).unwrap();
        retries_are_duplicates(&s, "id", 240);
        let out = s.append(vec![with_id("new", calls)]).unwrap();
        assert_eq!(out.duplicates, 0);
    }
}

#[test]
fn a_filter_over_segments_without_ids_is_saved_and_taken_too() {
    let (disk, dir, opts) = sim_store_opts();
    let s = Store::open(&dir, opts.clone()).unwrap();
    s.append(vec![ev("plain", 0)]).unwrap();
    drop(s);
    assert!(
        disk.read_file(&dir.join(ID_FILTER_FILE)).is_none(),
        "nothing sealed: no file"
    );
    let s = Store::open(&dir, opts.clone()).unwrap();
    for i in 1..200 {
        s.append(vec![ev("plain", i)]).unwrap();
    }
    // One id (in the active segment) makes the filter cover the sealed segments before it.
    s.append(vec![with_id("id", 0)]).unwrap();
    assert!(s.stats().unwrap().segments >= 5);
    drop(s);
    let s = Store::open(&dir, opts.clone()).unwrap();
    fail_index_maps(&disk);
    let out = s.append(vec![with_id("new", 1)]).unwrap();
    assert_eq!(out.duplicates, 0);
    assert_eq!(s.stats().unwrap().id_filter_backlog_segments, 0);
    disk.clear_rules();
    let out = s.append(vec![with_id("id", 0)]).unwrap();
    assert_eq!((out.seqs, out.duplicates), (vec![201], 1));
}

#[test]
fn verify_checks_every_page_of_the_saved_filter() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), &common::small(), "id", 200);
    assert!(echolog::verify(d.path()).unwrap().ok());
    let path = d.path().join(ID_FILTER_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let r = echolog::verify(d.path()).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].file, path);
    assert!(
        r.problems[0].what.contains("id filter page"),
        "{}",
        r.problems[0].what
    );
}

#[test]
fn after_a_crash_the_last_saved_filter_still_covers_the_segments_it_covered() {
    let (disk, dir, opts) = sim_store_opts();
    fill(&dir, &opts, "id", 200);
    let path = dir.join(ID_FILTER_FILE);
    let saved = disk.read_file(&path).unwrap();
    // More sealed segments with ids, then a crash: no close, so no save.
    let s = Store::open(&dir, opts.clone()).unwrap();
    let before = s.stats().unwrap().segments;
    for i in 200..400 {
        s.append(vec![with_id("id", i)]).unwrap();
    }
    assert!(s.stats().unwrap().segments > before + 2);
    std::mem::forget(s);
    disk.crash();
    assert_eq!(
        disk.read_file(&path).unwrap(),
        saved,
        "not saved without a close"
    );

    let s = Store::open(&dir, opts.clone()).unwrap();
    // The first segment is covered by the saved file: neither the new id nor the builder
    // (which adds only the segments sealed since) reads its index.
    disk.add_rule(
        FaultRule::new(FaultOp::Map, Errno::Eio)
            .path("00000000000000000001.idx")
            .forever(),
    );
    assert_eq!(s.append(vec![with_id("new", 1)]).unwrap().duplicates, 0);
    let started = std::time::Instant::now();
    while s.stats().unwrap().id_filter_backlog_segments > 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the builder never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(disk.injected_by_op().is_empty(), "a covered index was read");
    disk.clear_rules();
    retries_are_duplicates(&s, "id", 400);
    drop(s);

    // A run without any id lookup leaves the file as it found it.
    let saved = disk.read_file(&path).unwrap();
    let s = Store::open(&dir, opts.clone()).unwrap();
    let next = s.last_seq();
    for i in 0..100 {
        s.append(vec![ev("plain", next + i)]).unwrap();
    }
    drop(s);
    assert_eq!(disk.read_file(&path).unwrap(), saved);
}
