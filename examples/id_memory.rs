//! Measures the resident memory the idempotency-key index costs per million ids in the active
//! segment: appends 1M events with ids and 1M without to two fresh stores, and compares the
//! growth of VmRSS. Run: `cargo run --release --example id_memory`.

use echolog::{Event, Options, Store, SyncPolicy};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn load(with_ids: bool) -> u64 {
    let d = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        sync: SyncPolicy::Never,
        segment_size_bytes_max: 1 << 30,
        block_cache_bytes_max: 1 << 20,
        ..Options::default()
    };
    let s = Store::open(d.path(), opts).expect("open");
    let before = rss_kib();
    for b in 0..1000u64 {
        let batch = (0..1000u64)
            .map(|i| {
                let n = b * 1000 + i;
                Event {
                    entity: format!("e{}", n % 1000),
                    kind: "k".into(),
                    ts: 1 + n as i64,
                    tags: vec![],
                    payload: b"{}".to_vec(),
                    id: with_ids.then(|| format!("req-{n:016x}")),
                }
            })
            .collect();
        s.append(batch).expect("append");
    }
    rss_kib().saturating_sub(before)
}

fn main() {
    let without = load(false);
    let with = load(true);
    println!("rss growth, 1M events without ids: {without} KiB");
    println!("rss growth, 1M events with ids:    {with} KiB");
    println!(
        "id index cost per million ids:      {} KiB",
        with.saturating_sub(without)
    );
}
