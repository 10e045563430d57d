//! History through the seq-ordered segments against history through cluster files, on the
//! same store in one run: `cargo run --release --example clustered -- N DIR [LEVEL_MAX ...]`.
//!
//! Loads N events of the seed workload with compaction off, times the history query classes
//! (random product, newest 50 of a busy entity, whole history of a busy entity, the hottest
//! entity) on a freshly opened store, compacts it (`compact_now`, timed, bytes written
//! reported against the bytes ingested), reopens and times the same query lists again. The
//! answers of every phase are compared row for row count.
//!
//! With LEVEL_MAX values, the store is compacted once per value instead, each time from the
//! segments (the cluster files of the previous value removed first: they are derived data),
//! with `compaction_level_max` set to it: a file then spans at most `fanout ^ LEVEL_MAX`
//! segments, so an entity lives in more files the lower the value (0: one file per segment).

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::time::Instant;

use echolog::{HistoryQuery, Options, Store};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Times `q` over the list; returns (p50 us, p99 us, rows per query).
fn run(s: &Store, list: &[HistoryQuery]) -> (f64, f64, Vec<usize>) {
    let mut us = Vec::with_capacity(list.len());
    let mut rows = Vec::with_capacity(list.len());
    for q in list {
        let t = Instant::now();
        let n = s.history(q).expect("history").len();
        us.push(t.elapsed().as_secs_f64() * 1e6);
        rows.push(n);
    }
    us.sort_by(f64::total_cmp);
    (percentile(&us, 0.5), percentile(&us, 0.99), rows)
}

fn q(entity: u64, reverse: bool, limit: u32) -> HistoryQuery {
    HistoryQuery {
        entity: format!("product:{entity}"),
        reverse,
        limit,
        ..Default::default()
    }
}

fn opts(compaction: bool) -> Options {
    Options {
        compaction,
        ..Options::default()
    }
}

/// Removes the cluster files of a closed store (derived data; the segments stay).
fn remove_cluster_files(dir: &str) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let path = e.expect("dir entry").path();
        if path.extension().is_some_and(|x| x == "clu") {
            std::fs::remove_file(&path).expect("remove cluster file");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "./clustered-data".into());
    let _ = std::fs::remove_dir_all(&dir);
    {
        let s = Store::open(&dir, opts(false)).expect("open");
        let t = Instant::now();
        workload::load(&s, n);
        let st = s.stats().expect("stats");
        println!(
            "loaded {n} events in {:.1}s; {} segments, disk {} bytes ({:.3}x raw)",
            t.elapsed().as_secs_f64(),
            st.segments,
            st.disk_bytes,
            st.disk_bytes as f64 / st.raw_bytes as f64
        );
    }
    // Query lists, identical in both phases: random products uniform over the ids, busy
    // entities drawn by event frequency (the entity of a random event), the hottest.
    let pick = |k: u64| workload::entity_of(workload::mix(k * 7919 + 13));
    let random: Vec<HistoryQuery> = (0..2000)
        .map(|k| q(workload::mix(k) % workload::ENTITIES, false, 0))
        .collect();
    let newest: Vec<HistoryQuery> = (0..2000).map(|k| q(pick(k), true, 50)).collect();
    let busy: Vec<HistoryQuery> = (0..40).map(|k| q(pick(k + 10_000), false, 0)).collect();
    let hottest: Vec<HistoryQuery> = (0..3).map(|_| q(0, false, 0)).collect();
    let classes = [
        ("random product", &random),
        ("newest 50 of a busy entity", &newest),
        ("whole history of a busy entity", &busy),
        ("whole history of the hottest entity", &hottest),
    ];
    let phase = |name: &str| -> Vec<Vec<usize>> {
        let s = Store::open(&dir, opts(false)).expect("open");
        let st = s.stats().expect("stats");
        println!(
            "-- {name}: {} cluster files, {} segments not clustered",
            st.cluster_files, st.compaction_backlog_segments
        );
        classes
            .iter()
            .map(|(label, list)| {
                let (p50, p99, rows) = run(&s, list);
                let total: usize = rows.iter().sum();
                println!(
                    "{name}: {label}: p50 {p50:.0} us, p99 {p99:.0} us ({} queries, {total} rows)",
                    list.len()
                );
                rows
            })
            .collect()
    };
    let before = phase("segments");
    let levels: Vec<Option<u32>> = if args.len() > 3 {
        args[3..]
            .iter()
            .map(|a| Some(a.parse().expect("LEVEL_MAX")))
            .collect()
    } else {
        vec![None]
    };
    for level_max in levels {
        let mut o = opts(false);
        if let Some(l) = level_max {
            remove_cluster_files(&dir);
            o.compaction_level_max = l;
        }
        let s = Store::open(&dir, o).expect("open");
        let t = Instant::now();
        let steps = s.compact_now().expect("compact");
        let st = s.stats().expect("stats");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "compaction: {} steps in {secs:.1}s; {} bytes written = {:.2} x the {} bytes of segments; \
             {} cluster files, {} bytes ({:.3}x raw); disk in all {:.3}x raw",
            steps.len(),
            st.compaction_bytes_written,
            st.compaction_bytes_written as f64 / (st.disk_bytes - st.cluster_bytes) as f64,
            st.disk_bytes - st.cluster_bytes,
            st.cluster_files,
            st.cluster_bytes,
            st.cluster_bytes as f64 / st.raw_bytes as f64,
            st.disk_bytes as f64 / st.raw_bytes as f64
        );
        drop(s);
        let name = match level_max {
            Some(l) => format!("cluster files, level_max {l}"),
            None => "cluster files".to_string(),
        };
        let after = phase(&name);
        assert_eq!(before, after, "every layout answers the same rows");
    }
    println!("every phase returned the same number of rows for every query");
}
