//! Engine benches: append (batches of 1000, sync=always and sync=never), history of one
//! entity, and count per hour over a multi-segment store. Each group also measures its own
//! baseline in the same run (see docs/benchmarks.md).

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use echolog::{Bucket, CountQuery, HistoryQuery, Options, Store, SyncPolicy};

mod workload;
use workload::batch;

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_batch_1000");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    for (name, sync) in [
        ("sync_always", SyncPolicy::Always),
        ("sync_never", SyncPolicy::Never),
    ] {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(
            d.path(),
            Options {
                sync,
                ..Options::default()
            },
        )
        .unwrap();
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    i += 1000;
                    batch(i, 1000)
                },
                |events| s.append(events).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    // Baseline in the same run: the same bytes appended to a plain file with one fdatasync per
    // batch (what any durable log pays at least).
    let d = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(d.path().join("plain")).unwrap();
    let mut i = 0u64;
    g.bench_function("baseline_plain_file_write_fdatasync", |b| {
        b.iter_batched(
            || {
                i += 1000;
                batch(i, 1000)
            },
            |events| {
                for e in &events {
                    f.write_all(&e.payload).unwrap();
                }
                f.sync_data().unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn loaded_store(n: u64) -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(
        d.path(),
        Options {
            sync: SyncPolicy::Never,
            segment_size_bytes_max: 4 * 1024 * 1024,
            ..Options::default()
        },
    )
    .unwrap();
    let mut i = 0;
    while i < n {
        s.append(batch(i, 1000)).unwrap();
        i += 1000;
    }
    s.seal_active().unwrap();
    (d, s)
}

fn bench_reads(c: &mut Criterion) {
    let n = 300_000;
    let (_d, s) = loaded_store(n);
    let mut g = c.benchmark_group("reads_300k_events");
    // A typical entity (few events) and the hottest one.
    let hot = "product:0";
    let typical = s.read(n / 2, 1).unwrap()[0].event.entity.clone();
    g.bench_function("history_typical_entity", |b| {
        b.iter(|| {
            black_box(
                s.history(&HistoryQuery {
                    entity: typical.clone(),
                    ..Default::default()
                })
                .unwrap(),
            )
        })
    });
    g.bench_function("history_hot_entity", |b| {
        b.iter(|| {
            black_box(
                s.history(&HistoryQuery {
                    entity: hot.into(),
                    ..Default::default()
                })
                .unwrap(),
            )
        })
    });
    // Baseline in the same run: find the hot entity by decoding every event (a scan).
    g.sample_size(10);
    g.bench_function("baseline_full_scan_for_hot_entity", |b| {
        b.iter(|| {
            black_box(
                s.read(1, 0)
                    .unwrap()
                    .into_iter()
                    .filter(|e| e.event.entity == hot)
                    .count(),
            )
        })
    });
    g.sample_size(100);
    let q = CountQuery {
        tags: vec!["tenant:t7".into()],
        bucket: Bucket::Hour,
        ..Default::default()
    };
    g.bench_function("count_per_hour_one_tenant", |b| {
        b.iter(|| black_box(s.count(&q).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_reads);
criterion_main!(benches);
