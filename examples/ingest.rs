//! Library ingest rate for the seed workload, batches of 1000, one appending thread per
//! `--threads`. Run: `cargo run --release --example ingest -- [events] [threads] [always|never]
//! [checkpoint bytes|off]` (the last one sets `checkpoint_bytes`, to time what checkpoints cost).

#[path = "../benches/workload/mod.rs"]
mod workload;

use echolog::{Options, Store, SyncPolicy};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let threads: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let sync = args
        .get(3)
        .map_or(SyncPolicy::Always, |s| s.parse().expect("sync policy"));
    let checkpoint_bytes = match args.get(4).map(String::as_str) {
        None => Options::default().checkpoint_bytes,
        Some("off") => None,
        Some(b) => Some(b.parse().expect("checkpoint bytes")),
    };
    let d = tempfile::tempdir().expect("tempdir");
    let s = Store::open(
        d.path(),
        Options {
            sync,
            checkpoint_bytes,
            ..Options::default()
        },
    )
    .expect("open");
    let batches: Vec<Vec<Vec<echolog::Event>>> = (0..threads)
        .map(|t| {
            (0..events / threads / 1000)
                .map(|b| workload::batch((t * events / threads) + b * 1000, 1000))
                .collect()
        })
        .collect();
    let start = std::time::Instant::now();
    let handles: Vec<_> = batches
        .into_iter()
        .map(|bs| {
            let s = s.clone();
            std::thread::spawn(move || {
                for b in bs {
                    s.append(b).expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let st = s.stats().expect("stats");
    println!(
        "{} events in {secs:.2}s: {:.0} events/s ({threads} threads, {sync:?}, checkpoint_bytes {checkpoint_bytes:?}); disk {} bytes = {:.3}x raw {} bytes",
        st.events,
        st.events as f64 / secs,
        st.disk_bytes,
        st.disk_bytes as f64 / st.raw_bytes.max(1) as f64,
        st.raw_bytes
    );
}
