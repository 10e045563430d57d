//! What a purge costs, and that appends carry on while it runs:
//! `cargo run --release --example purge -- N DIR`.
//!
//! Loads N events of the seed workload (compaction off), compacts them (timed: the baseline,
//! the same kind of rewrite), deletes 1% of the product entities (every 100th id, uniform over
//! the ids, so their events are in every segment) and the 1,000 hottest by seq delete of one
//! event each, then runs `purge_now(0)` while one thread appends single events back to back,
//! and reports: the purge's time, events erased, bytes rewritten, its rate against
//! compaction's, the append latency percentiles during the purge against the same appends with
//! nothing running, and compaction's catch-up afterwards. Checks every erased entity's history
//! with `include_deleted` is empty afterwards.

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use echolog::{Event, HistoryQuery, Options, Store};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Appends single events back to back until `stop`; returns each append's latency (us).
fn appender(s: Store, stop: Arc<AtomicBool>, tag: &'static str) -> Vec<f64> {
    let mut lat = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let e = Event {
            entity: format!("probe:{}", i % 64),
            kind: "probe".into(),
            ts: 1_763_769_600_000,
            tags: vec![tag.into()],
            payload: b"{}".to_vec(),
            id: None,
        };
        let t = Instant::now();
        s.append(vec![e]).expect("append");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn report(name: &str, lat: &[f64]) {
    println!(
        "{name}: {} appends, p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(0.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let dir = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "./purge-data".into());
    let _ = std::fs::remove_dir_all(&dir);
    let opts = Options {
        compaction: false,
        ..Options::default()
    };
    let s = Store::open(&dir, opts).expect("open");
    let t = Instant::now();
    workload::load(&s, n);
    let st = s.stats().expect("stats");
    println!(
        "loaded {n} events in {:.1}s; {} segments, {} bytes",
        t.elapsed().as_secs_f64(),
        st.segments,
        st.disk_bytes
    );
    let t = Instant::now();
    s.compact_now().expect("compact");
    let compact_s = t.elapsed().as_secs_f64();
    let st = s.stats().expect("stats");
    let seg_bytes = st.disk_bytes - st.cluster_bytes;
    println!(
        "compaction (baseline rewrite): {compact_s:.2}s for {seg_bytes} segment bytes ({:.0} MB/s)",
        seg_bytes as f64 / compact_s / 1e6
    );
    let deleted: Vec<u64> = (0..workload::ENTITIES).step_by(100).collect();
    for e in &deleted {
        s.delete(&format!("product:{e}"), &[], "upstream deleted")
            .expect("delete");
    }
    let seqs: Vec<u64> = (0..1000u64).map(|k| 1 + k * (n / 1000).max(1)).collect();
    for chunk in seqs.chunks(100) {
        // A seq delete on an event of an already deleted entity is fine: it is erased once.
        s.delete("", chunk, "voided").expect("delete seqs");
    }
    s.seal_active().expect("seal");

    // Baseline: the same appender with nothing else running, for as long as the purge takes
    // (measured after, so both see the same store size).
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || appender(s, stop, "during"))
    };
    let t = Instant::now();
    let r = s.purge_now(Some(Duration::ZERO)).expect("purge");
    let purge_s = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during = probe.join().expect("probe");
    println!(
        "purge: {purge_s:.2}s; {} events erased; {} segments rewritten, {} -> {} bytes ({:.0} MB/s of segments rewritten, {:.2}x compaction's rate); {} cluster files removed",
        r.events_purged,
        r.segments_rewritten,
        r.bytes_before,
        r.bytes_after,
        r.bytes_before as f64 / purge_s / 1e6,
        (r.bytes_before as f64 / purge_s) / (seg_bytes as f64 / compact_s),
        r.cluster_files_removed
    );
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || appender(s, stop, "idle"))
    };
    std::thread::sleep(Duration::from_secs_f64(purge_s.max(1.0)));
    stop.store(true, Ordering::Relaxed);
    let idle = probe.join().expect("probe");
    report("appends while nothing else runs (baseline)", &idle);
    report("appends during the purge", &during);
    println!(
        "append p99 during / baseline: {:.2}x",
        percentile(&during, 0.99) / percentile(&idle, 0.99)
    );
    let t = Instant::now();
    s.compact_now().expect("compact");
    println!(
        "compaction catch-up after the purge: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    for e in deleted.iter().step_by(50) {
        let q = HistoryQuery {
            entity: format!("product:{e}"),
            include_deleted: true,
            ..Default::default()
        };
        let h = s.history(&q).expect("history");
        assert!(
            h.iter().all(|ev| ev.event.kind.starts_with('$')),
            "product:{e} still has erased events"
        );
    }
    println!("checked: erased entities keep only their tombstone");
}
