//! What an idempotency id costs as the store grows: loads N events of the seed workload, each
//! with a unique id, in batches of 1000 (one thread, `sync=never`, compaction off), printing
//! the rate of every million and the sealed segments so far; then reopens the store and times
//! the first single-event append with a new id and the p50 / p99 of 2000 more. With `cold`, the
//! page cache is dropped before the reopen (needs root); with 0 events, the store already in
//! `dir` is reopened as it is.
//! Run: `cargo run --release --example ids -- [events] [dir] [cold]`.

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::time::Instant;

use echolog::{Options, Store, SyncPolicy};

fn with_ids(start: u64, n: u64) -> Vec<echolog::Event> {
    let mut b = workload::batch(start, n);
    for (i, e) in b.iter_mut().enumerate() {
        e.id = Some(format!("req-{:016x}", workload::mix(start + i as u64)));
    }
    b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let dir = args.get(2).cloned().unwrap_or_else(|| "./ids-data".into());
    let cold = args.get(3).is_some_and(|a| a == "cold");
    if events > 0 {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let opts = Options {
        sync: SyncPolicy::Never,
        compaction: false,
        ..Options::default()
    };
    let s = Store::open(&dir, opts.clone()).expect("open");
    let chunk = 1_000_000u64;
    let mut i = 0;
    while i < events {
        let n = chunk.min(events - i);
        let batches: Vec<Vec<echolog::Event>> = (0..n / 1000)
            .map(|b| with_ids(i + b * 1000, 1000))
            .collect();
        let t = Instant::now();
        for b in batches {
            s.append(b).expect("append");
        }
        let secs = t.elapsed().as_secs_f64();
        i += n;
        println!(
            "events {i}: {:.0} events/s with ids, {} segments",
            n as f64 / secs,
            s.stats().expect("stats").segments
        );
    }
    let t = Instant::now();
    drop(s);
    let filter = std::fs::metadata(std::path::Path::new(&dir).join(echolog::ID_FILTER_FILE));
    println!(
        "close {:.0} ms (seal at close and saving the id filter: {} bytes)",
        t.elapsed().as_secs_f64() * 1e3,
        filter.map_or(0, |m| m.len())
    );
    if cold {
        let dropped = std::process::Command::new("sync")
            .status()
            .is_ok_and(|s| s.success())
            && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        println!("page cache dropped: {dropped}");
    }
    let t = Instant::now();
    let s = Store::open(&dir, opts).expect("reopen");
    println!("reopen {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let base = s.last_seq();
    let one = |k: u64| with_ids(base + k, 1);
    let t = Instant::now();
    s.append(one(0)).expect("append");
    let first_us = t.elapsed().as_secs_f64() * 1e6;
    let mut us: Vec<f64> = (1..=2000u64)
        .map(|k| {
            let e = one(k);
            let t = Instant::now();
            s.append(e).expect("append");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(|a, b| a.total_cmp(b));
    println!(
        "after reopen: first append with a new id {first_us:.0} us; next 2000: p50 {:.0} us, p99 {:.0} us",
        us[us.len() / 2],
        us[us.len() * 99 / 100]
    );
}
