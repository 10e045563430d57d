//! The scale benchmark: `cargo bench -p echolog-server --bench scale -- [N] [DIR]`.
//!
//! Loads N events of the seed workload (default 100M) through the library with compaction
//! running, printing the ingest rate per tenth of N and compaction's backlog; then appends
//! through gRPC (batches of 1000 from 4 clients to the `echolog serve` binary, its own process
//! on 127.0.0.1, as a server is deployed); waits for compaction to finish; reopens (warm, and
//! cold when it may drop the page cache) timing open plus the first Stats; and times the query
//! classes through gRPC (the server process again) and in process: random product, newest 50
//! of a busy entity, whole history of a busy and of the hottest entity, and hourly counts of
//! one tenant over 30 days. Prints disk bytes, their ratio to the raw events, and resident
//! memory (anonymous and file-backed) of the server process and of this one.

#[path = "common/server_process.rs"]
mod server_process;
#[path = "../../benches/workload/mod.rs"]
mod workload;

use std::time::{Duration, Instant};

use echolog::{HistoryQuery, Options, Store};
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest};
use server_process::{status_of, ServerProcess};
use workload::{lists, tenant_count, Lists};

const APPENDERS: u64 = 4;
const BATCH: u64 = 1000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(us: &mut [f64]) -> String {
    us.sort_by(f64::total_cmp);
    format!(
        "p50 {:.0} us, p99 {:.0} us",
        percentile(us, 0.5),
        percentile(us, 0.99)
    )
}

fn status(field: &str) -> String {
    status_of("/proc/self/status", field)
}

/// Loads events [from, to) with APPENDERS threads, each taking every APPENDERS-th batch.
fn load(s: &Store, from: u64, to: u64) {
    std::thread::scope(|sc| {
        for t in 0..APPENDERS {
            sc.spawn(move || {
                let mut b = from + t * BATCH;
                while b < to {
                    let k = BATCH.min(to - b);
                    s.append(workload::batch(b, k)).expect("append");
                    b += APPENDERS * BATCH;
                }
            });
        }
    });
}

fn hq(entity: &str, reverse: bool, limit: u32) -> HistoryQuery {
    HistoryQuery {
        entity: entity.into(),
        reverse,
        limit,
        ..Default::default()
    }
}

fn in_process(s: &Store, l: &Lists) {
    let time = |name: &str, list: &[String], reverse: bool, limit: u32| {
        let mut us = Vec::new();
        let mut rows = 0;
        for e in list {
            let t = Instant::now();
            rows += s.history(&hq(e, reverse, limit)).expect("history").len();
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "in process: {name}: {} ({} queries, {rows} rows)",
            summary(&mut us),
            list.len()
        );
        rows
    };
    time("random product", &l.random, false, 0);
    time("newest 50 of a busy entity", &l.busy_newest, true, 50);
    let t = Instant::now();
    let rows = time("whole history of a busy entity", &l.busy, false, 0);
    println!(
        "in process: busy entities streamed at {:.0} events/s",
        rows as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let rows = time("whole history of the hottest entity", &l.hottest, false, 0);
    println!(
        "in process: the hottest entity streamed at {:.0} events/s",
        rows as f64 / t.elapsed().as_secs_f64()
    );
    into_columns(s, "busy entities", &l.busy);
    into_columns(s, "the hottest entity", &l.hottest);
    time_count(s, "hourly counts of one tenant over 30 days");
}

/// Whole histories through `Store::history_into`, materialized into flat columns (as the
/// in-process engines of `benches/compare` return Arrow columns) instead of owned events.
fn into_columns(s: &Store, name: &str, list: &[String]) {
    let t = Instant::now();
    let mut rows = 0;
    for e in list {
        let mut c = workload::Columns::default();
        s.history_into(&hq(e, false, 0), &mut c).expect("history");
        rows += c.len();
    }
    println!(
        "in process, into columns: {name} streamed at {:.0} events/s ({rows} rows)",
        rows as f64 / t.elapsed().as_secs_f64()
    );
}

fn time_count(s: &Store, label: &str) {
    let q = tenant_count();
    let mut us = Vec::new();
    let mut buckets = 0;
    let mut total = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let r = s.count(&q).expect("count");
        us.push(t.elapsed().as_secs_f64() * 1e6);
        (buckets, total) = (r.buckets.len(), r.total);
    }
    println!(
        "in process: {label}: {} ({buckets} buckets, {total} events)",
        summary(&mut us)
    );
}

async fn through_grpc(url: String, l: &Lists, pass: &str) {
    let mut c = EventStoreClient::connect(url.clone())
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20);
    let mut time = async |name: &str, list: &[String], reverse: bool, limit: u32| {
        let mut us = Vec::new();
        let mut rows = 0usize;
        let started = Instant::now();
        for e in list {
            let t = Instant::now();
            let req = pb::HistoryRequest {
                entity: e.clone(),
                reverse,
                limit,
                ..Default::default()
            };
            let mut stream = c.history(req).await.expect("history").into_inner();
            while let Some(b) = stream.message().await.expect("stream") {
                rows += b.events.len();
            }
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let rate = rows as f64 / started.elapsed().as_secs_f64();
        println!(
            "gRPC, {pass}: {name}: {} ({} queries, {rows} rows, {rate:.0} events/s)",
            summary(&mut us),
            list.len()
        );
    };
    // The transport's floor: a call that does nothing (Health/Check), on its own connection.
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut us = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let check = tonic_health::pb::HealthCheckRequest::default();
        health.check(check).await.expect("health");
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "gRPC, {pass}: round trip of a no-op call (Health/Check): {}",
        summary(&mut us)
    );
    time("random product", &l.random, false, 0).await;
    time("newest 50 of a busy entity", &l.busy_newest, true, 50).await;
    time("whole history of a busy entity", &l.busy, false, 0).await;
    time("whole history of the hottest entity", &l.hottest, false, 0).await;
    let q = tenant_count();
    let req = pb::CountRequest {
        tags: q.tags.clone(),
        bucket: pb::Bucket::Hour as i32,
        from_ts: q.from_ts,
        to_ts: q.to_ts,
        ..Default::default()
    };
    let mut us = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        c.count(req.clone()).await.expect("count");
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "gRPC, {pass}: hourly counts of one tenant over 30 days: {}",
        summary(&mut us)
    );
}

/// Appends events `from..from + n` through the server; returns the bytes its compaction
/// wrote while it ran (from its Stats).
async fn grpc_ingest(url: String, from: u64, n: u64) -> u64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..APPENDERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = EventStoreClient::connect(url).await.expect("connect");
            let mut b = from + t * BATCH;
            while b < from + n {
                let k = BATCH.min(from + n - b);
                let events = workload::batch(b, k)
                    .into_iter()
                    .map(|e| pb::Event {
                        entity: e.entity,
                        kind: e.kind,
                        ts: e.ts,
                        tags: e.tags,
                        payload: e.payload.into(),
                        ..Default::default()
                    })
                    .collect();
                c.append(AppendRequest { events }).await.expect("append");
                b += APPENDERS * BATCH;
            }
        }));
    }
    for t in tasks {
        t.await.expect("appender");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "gRPC ingest: {n} events in batches of {BATCH} from {APPENDERS} clients: {:.0} events/s",
        n as f64 / secs
    );
    let mut c = EventStoreClient::connect(url).await.expect("connect");
    c.stats(pb::StatsRequest {})
        .await
        .expect("stats")
        .into_inner()
        .compaction_bytes_written
}

fn wait_for_compaction(s: &Store) -> Duration {
    let t = Instant::now();
    loop {
        let st = s.stats().expect("stats");
        if st.compaction_idle {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens the store warm, then cold if the page cache can be dropped, timing open and the
/// first Stats.
fn time_opens(dir: &str, opts: &Options, what: &str) {
    for cold in [false, true] {
        if cold && !drop_page_cache() {
            println!("open cold {what}: not measured (dropping the page cache needs root)");
            continue;
        }
        let t = Instant::now();
        let s = Store::open(dir, opts.clone()).expect("open");
        let opened = t.elapsed();
        s.stats().expect("stats");
        let r = s.open_report();
        println!(
            "open {} {what}: {:.1} ms, first Stats answered at {:.1} ms ({} records of the active segment from the checkpoint, {} scanned)",
            if cold { "cold" } else { "warm" },
            opened.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3,
            r.checkpoint_records,
            r.scanned_records
        );
    }
}

/// Drops the page cache when allowed (root); says whether it did.
fn drop_page_cache() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000_000);
    let dir = args.get(1).cloned().unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("echolog-scale-{}", std::process::id()))
            .to_string_lossy()
            .into_owned()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("scale: {n} events into {dir} ({APPENDERS} appenders, batches of {BATCH}, sync=always, compaction on)");
    // Not sealed at close: the first opens below rebuild the active segment, as after a crash.
    let no_seal = Options {
        seal_at_close_bytes_min: None,
        ..Options::default()
    };
    let s = Store::open(&dir, no_seal.clone()).expect("open");
    let step = (n / 10).max(BATCH);
    let started = Instant::now();
    let mut at = 0;
    while at < n {
        let to = (at + step).min(n);
        let t = Instant::now();
        load(&s, at, to);
        let st = s.stats().expect("stats");
        println!(
            "library ingest {at}..{to}: {:.0} events/s; compaction backlog {} segments, {} cluster files, {:.2} bytes rewritten per byte ingested so far",
            (to - at) as f64 / t.elapsed().as_secs_f64(),
            st.compaction_backlog_segments,
            st.cluster_files,
            st.compaction_bytes_written as f64 / (st.disk_bytes - st.cluster_bytes).max(1) as f64
        );
        at = to;
    }
    println!(
        "library ingest: {n} events in {:.1}s = {:.0} events/s (generation included)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    let grpc_n = (n / 20).max(BATCH);
    // The server takes the store over, compaction's backlog with it; it does not seal at
    // close either, so the opens below still find an active segment to recover.
    // Compaction's bytes written are counted per open store: the three that compact here
    // (this process, the server, this process again) are added up.
    let mut written = s.stats().expect("stats").compaction_bytes_written;
    drop(s);
    let no_seal_args = [
        "--seal-at-close-bytes-min",
        "0",
        "--message-bytes-max",
        "16777216",
    ];
    let server = ServerProcess::start(dir.as_ref(), &no_seal_args).expect("start echolog serve");
    written += rt.block_on(grpc_ingest(server.url.clone(), n, grpc_n));
    server.stop().expect("stop echolog serve");
    let s = Store::open(&dir, no_seal.clone()).expect("open");
    let waited = wait_for_compaction(&s);
    let st = s.stats().expect("stats");
    written += st.compaction_bytes_written;
    println!(
        "compaction idle {:.1}s after the gRPC ingest; {} cluster files; {written} bytes written in all = {:.2}x the segment bytes",
        waited.as_secs_f64(),
        st.cluster_files,
        written as f64 / (st.disk_bytes - st.cluster_bytes).max(1) as f64
    );
    println!(
        "disk: {} bytes = {:.3}x the {} raw bytes (segments and indexes {:.3}x, cluster files {:.3}x)",
        st.disk_bytes,
        st.disk_bytes as f64 / st.raw_bytes as f64,
        st.raw_bytes,
        (st.disk_bytes - st.cluster_bytes) as f64 / st.raw_bytes as f64,
        st.cluster_bytes as f64 / st.raw_bytes as f64
    );
    drop(s);
    time_opens(
        &dir,
        &no_seal,
        "after a crash (the active segment's index from its checkpoint and the blocks after it)",
    );
    // The baseline in the same run: the same open with the checkpoint moved aside, so the
    // whole active segment is decoded.
    let ckpt: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    for p in &ckpt {
        std::fs::rename(p, p.with_extension("ckpt-aside")).expect("move the checkpoint aside");
    }
    time_opens(
        &dir,
        &no_seal,
        "after a crash without the checkpoint (the whole active segment decoded; baseline)",
    );
    for p in &ckpt {
        std::fs::rename(p.with_extension("ckpt-aside"), p).expect("put the checkpoint back");
    }
    let s = Store::open(&dir, Options::default()).expect("open");
    let t = Instant::now();
    drop(s);
    println!(
        "clean close, sealing the active segment: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    time_opens(&dir, &Options::default(), "after a clean close");
    let l = lists();
    // Default options, as `echolog serve` starts. The first pass after open reads the files
    // from disk (cold after the cold open above); the second finds them in the page cache.
    let server = ServerProcess::start(dir.as_ref(), &["--message-bytes-max", "16777216"])
        .expect("start echolog serve");
    rt.block_on(through_grpc(server.url.clone(), &l, "first pass"));
    rt.block_on(through_grpc(server.url.clone(), &l, "second pass"));
    println!(
        "resident memory of the server process after the gRPC queries: anonymous {}, file-backed {}",
        server.status("RssAnon:"),
        server.status("RssFile:")
    );
    server.stop().expect("stop echolog serve");
    let s = Store::open(&dir, Options::default()).expect("open");
    in_process(&s, &l);
    println!(
        "resident memory of this process after the in-process queries (their answers are whole vectors): anonymous {}, file-backed {}",
        status("RssAnon:"),
        status("RssFile:")
    );
    drop(s);
    // The baseline in the same run: the same counts from bitmaps and timestamps only.
    let opts = Options {
        count_tag_hours: false,
        ..Options::default()
    };
    let s = Store::open(&dir, opts).expect("open");
    time_count(&s, "hourly counts, bitmaps and timestamps only (baseline)");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
