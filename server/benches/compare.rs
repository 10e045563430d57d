//! The echolog half of `benches/compare/run` (the one command that compares echolog with
//! PostgreSQL, DuckDB and ClickHouse on the same events and the same query lists).
//!
//! - `prepare N WORK`: writes `WORK/events.csv` (seq, entity, kind, ts, tenant, payload: the
//!   first N events of the seed workload with the seqs echolog gives them) and
//!   `WORK/queries.json` (the query lists every engine runs).
//! - `echolog N WORK`: loads the same N events into a fresh store in `WORK/echolog` through
//!   the library (one thread, batches of 1000, so seq i+1 is event i; default options, so
//!   compaction runs), waits until compaction is idle, then starts the `echolog` server binary
//!   on 127.0.0.1 and times every query list through a tonic client, one query at a time, every
//!   event received. Writes `WORK/results-echolog.jsonl`, one JSON object per line, in the
//!   format `benches/compare/engines.py` writes for the other engines.
//! - `queries URL [CLASS]`: the same query lists against a server already running at URL (to
//!   compare two builds of the server on one store, or to profile it), printed only; with
//!   CLASS, only the classes whose names start with it (`whole`: the two whole histories).

#[path = "common/server_process.rs"]
mod server_process;
#[path = "../../benches/workload/mod.rs"]
mod workload;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use echolog::{Options, Store};
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self};
use serde_json::json;
use server_process::ServerProcess;

type Error = Box<dyn std::error::Error>;

const BATCH: u64 = 1000;
/// Untimed queries before each timed list (connection set-up, first page-ins).
const WARMUP_QUERIES: usize = 20;
/// Calls that do nothing, timed for the transport's floor.
const ROUND_TRIPS: usize = 2000;
const ROUND_TRIP_CLASS: &str = "round trip of a no-op call";

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let usage = "usage: compare prepare|echolog N WORK, or compare queries URL [CLASS]";
    let mode = args.first().ok_or(usage)?;
    if mode == "queries" {
        let url = args.get(1).ok_or(usage)?;
        return query_running_server(url, args.get(2).map(String::as_str));
    }
    let n: u64 = args.get(1).ok_or(usage)?.parse()?;
    let work = PathBuf::from(args.get(2).ok_or(usage)?);
    std::fs::create_dir_all(&work)?;
    match mode.as_str() {
        "prepare" => prepare(n, &work),
        "echolog" => run_echolog(n, &work),
        _ => Err(usage.into()),
    }
}

fn prepare(n: u64, work: &Path) -> Result<(), Error> {
    let started = Instant::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(work.join("events.csv"))?);
    for i in 0..n {
        let e = workload::event(i);
        let tenant = e.tags.first().ok_or("a workload event has no tag")?;
        let payload = String::from_utf8(e.payload)?.replace('"', "\"\"");
        writeln!(
            out,
            "{},{},{},{},{},\"{}\"",
            i + 1,
            e.entity,
            e.kind,
            e.ts,
            tenant.trim_start_matches("tenant:"),
            payload
        )?;
    }
    out.flush()?;
    let l = workload::lists();
    let queries = json!({
        "random": l.random,
        "busy_newest": l.busy_newest,
        "busy": l.busy,
        "hottest": l.hottest,
        "count": {
            "tenant": workload::COUNT_TENANT.trim_start_matches("tenant:"),
            "from_ts": workload::COUNT_FROM_TS,
            "to_ts": workload::COUNT_TO_TS,
            "bucket_ms": 3_600_000,
            "runs": 200,
        },
    });
    std::fs::write(
        work.join("queries.json"),
        serde_json::to_vec_pretty(&queries)?,
    )?;
    println!(
        "compare prepare: {n} events and the query lists in {} ({:.1} s)",
        work.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The results file (one JSON object per line), if any; every line is printed too.
struct Results {
    out: Option<std::fs::File>,
}

impl Results {
    fn write(&mut self, v: serde_json::Value) -> Result<(), Error> {
        if let Some(out) = &mut self.out {
            writeln!(out, "{v}")?;
        }
        println!("echolog: {v}");
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Times the queries of one class: each query's latency, its rows and the sum of their seqs
/// (the check every engine must agree on), and the wall time of the whole list.
struct Timer {
    us: Vec<f64>,
    rows: u64,
    seq_sum: u64,
    started: Instant,
}

impl Timer {
    fn start(queries: usize) -> Timer {
        Timer {
            us: Vec::with_capacity(queries),
            rows: 0,
            seq_sum: 0,
            started: Instant::now(),
        }
    }

    /// One query that began at `t` and returned `rows` rows whose seqs sum to `seq_sum`.
    fn record(&mut self, t: Instant, rows: u64, seq_sum: u64) {
        self.us.push(t.elapsed().as_secs_f64() * 1e6);
        self.rows += rows;
        self.seq_sum += seq_sum;
    }

    fn finish(self, class: &str) -> serde_json::Value {
        let seconds = self.started.elapsed().as_secs_f64();
        timing(class, self.us, self.rows, self.seq_sum, seconds)
    }
}

fn timing(
    class: &str,
    mut us: Vec<f64>,
    rows: u64,
    seq_sum: u64,
    seconds: f64,
) -> serde_json::Value {
    us.sort_by(f64::total_cmp);
    json!({
        "engine": "echolog",
        "class": class,
        "queries": us.len(),
        "p50_us": percentile(&us, 0.5),
        "p99_us": percentile(&us, 0.99),
        "rows": rows,
        "check": seq_sum,
        "seconds": seconds,
    })
}

fn run_echolog(n: u64, work: &Path) -> Result<(), Error> {
    let dir = work.join("echolog");
    let _ = std::fs::remove_dir_all(&dir);
    let (load_seconds, stats) = load(n, &dir)?;
    let mut results = Results {
        out: Some(std::fs::File::create(work.join("results-echolog.jsonl"))?),
    };
    results.write(json!({
        "engine": "echolog", "class": "load", "events": n, "seconds": load_seconds,
    }))?;
    results.write(json!({
        "engine": "echolog", "class": "disk", "bytes": stats.disk_bytes,
        "raw_bytes": stats.raw_bytes,
    }))?;
    in_process_columns(&dir, &mut results)?;
    let server = ServerProcess::start(&dir, &[])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timed = rt.block_on(queries(&server.url, &mut results, None));
    let rss = server.status("RssAnon:");
    server.stop()?;
    timed?;
    results.write(json!({
        "engine": "echolog", "class": "server memory", "rss_anon": rss,
    }))?;
    Ok(())
}

/// Suffix of the whole-history classes read in process, into flat columns.
const IN_PROCESS_SUFFIX: &str = ", in process into columns";

/// The two whole-history lists in process (`Store::history_into` into flat columns, as
/// DuckDB and ClickHouse return Arrow columns in process), before the server takes the store.
fn in_process_columns(dir: &Path, results: &mut Results) -> Result<(), Error> {
    let opts = Options {
        compaction: false,
        ..Options::default()
    };
    let s = Store::open(dir, opts)?;
    let l = workload::lists();
    let lists: [(&str, &[String]); 2] = [
        ("whole history of a busy entity", &l.busy),
        ("whole history of the hottest entity", &l.hottest),
    ];
    for (class, list) in lists {
        let mut timer = Timer::start(list.len());
        for e in list {
            let t = Instant::now();
            let mut c = workload::Columns::default();
            let q = echolog::HistoryQuery {
                entity: e.clone(),
                ..Default::default()
            };
            s.history_into(&q, &mut c)?;
            timer.record(t, c.len() as u64, c.seqs.iter().sum::<u64>());
        }
        results.write(timer.finish(&format!("{class}{IN_PROCESS_SUFFIX}")))?;
    }
    Ok(())
}

/// The query lists against a server already running at `url` (to compare builds of the
/// server on one store); results go to stdout only.
fn query_running_server(url: &str, only: Option<&str>) -> Result<(), Error> {
    let mut results = Results { out: None };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(queries(url, &mut results, only))
}

/// Loads events 0..n in order and waits for compaction; returns the seconds until idle.
fn load(n: u64, dir: &Path) -> Result<(f64, echolog::Stats), Error> {
    let started = Instant::now();
    let s = Store::open(dir, Options::default())?;
    let mut i = 0;
    while i < n {
        let k = BATCH.min(n - i);
        s.append(workload::batch(i, k))?;
        i += k;
    }
    let appended = started.elapsed().as_secs_f64();
    loop {
        let st = s.stats()?;
        if st.compaction_idle {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = s.stats()?;
    println!(
        "echolog: loaded {n} events in {appended:.1} s, compaction idle at {:.1} s ({} cluster files)",
        started.elapsed().as_secs_f64(),
        st.cluster_files
    );
    Ok((started.elapsed().as_secs_f64(), st))
}

type Client = EventStoreClient<tonic::transport::Channel>;

/// Runs one History call to the end; returns (rows, sum of their seqs).
async fn history(
    c: &mut Client,
    entity: &str,
    reverse: bool,
    limit: u32,
) -> Result<(u64, u64), Error> {
    let req = pb::HistoryRequest {
        entity: entity.into(),
        reverse,
        limit,
        ..Default::default()
    };
    let mut stream = c.history(req).await?.into_inner();
    let (mut rows, mut seq_sum) = (0u64, 0u64);
    while let Some(b) = stream.message().await? {
        rows += b.events.len() as u64;
        seq_sum += b.events.iter().map(|e| e.seq).sum::<u64>();
    }
    Ok((rows, seq_sum))
}

/// A replay of the whole store through Tail, from seq 1 to the last seq: (events, seq sum).
async fn replay(c: &mut Client, to_seq: u64) -> Result<(u64, u64), Error> {
    let req = pb::TailRequest {
        from_seq: 1,
        to_seq: Some(to_seq),
        ..Default::default()
    };
    let mut stream = c.tail(req).await?.into_inner();
    let (mut rows, mut seq_sum) = (0u64, 0u64);
    while let Some(b) = stream.message().await? {
        rows += b.events.len() as u64;
        seq_sum += b.events.iter().map(|e| e.seq).sum::<u64>();
    }
    Ok((rows, seq_sum))
}

/// Every class, or with `only` those whose names start with it. `replay` (a Tail of the
/// whole store, twice) runs only when asked for by name: the other engines have no Tail.
async fn queries(url: &str, results: &mut Results, only: Option<&str>) -> Result<(), Error> {
    let wanted = |class: &str| only.is_none_or(|o| class.starts_with(o));
    let mut c = EventStoreClient::connect(url.to_owned())
        .await?
        .max_decoding_message_size(64 << 20);
    if only == Some("replay") {
        let last = c.stats(pb::StatsRequest {}).await?.into_inner().last_seq;
        let mut us = Vec::new();
        let (mut rows, mut seq_sum) = (0, 0);
        let started = Instant::now();
        for _ in 0..2 {
            let t = Instant::now();
            (rows, seq_sum) = replay(&mut c, last).await?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let seconds = started.elapsed().as_secs_f64();
        return results.write(timing(
            "replay of the whole store",
            us,
            rows * 2,
            seq_sum,
            seconds,
        ));
    }
    // The transport's floor: a call that does nothing (Health/Check), through the same client.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(url.to_owned())?
            .connect()
            .await?,
    );
    let check = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..WARMUP_QUERIES {
        health.check(check()).await?;
    }
    let round_trips = if wanted(ROUND_TRIP_CLASS) {
        ROUND_TRIPS
    } else {
        0
    };
    let mut timer = Timer::start(round_trips);
    for _ in 0..round_trips {
        let t = Instant::now();
        health.check(check()).await?;
        timer.record(t, 0, 0);
    }
    if round_trips > 0 {
        results.write(timer.finish(ROUND_TRIP_CLASS))?;
    }
    let l = workload::lists();
    let classes: [(&str, &[String], bool, u32); 4] = [
        ("random product", &l.random, false, 0),
        ("newest 50 of a busy entity", &l.busy_newest, true, 50),
        ("whole history of a busy entity", &l.busy, false, 0),
        ("whole history of the hottest entity", &l.hottest, false, 0),
    ];
    for (class, list, reverse, limit) in classes.into_iter().filter(|c| wanted(c.0)) {
        for e in l.random.iter().take(WARMUP_QUERIES) {
            history(&mut c, e, reverse, limit).await?;
        }
        let mut timer = Timer::start(list.len());
        for e in list {
            let t = Instant::now();
            let (rows, seq_sum) = history(&mut c, e, reverse, limit).await?;
            timer.record(t, rows, seq_sum);
        }
        results.write(timer.finish(class))?;
    }
    let req = pb::CountRequest {
        tags: vec![workload::COUNT_TENANT.into()],
        bucket: pb::Bucket::Hour as i32,
        from_ts: Some(workload::COUNT_FROM_TS),
        to_ts: Some(workload::COUNT_TO_TS),
        ..Default::default()
    };
    if !wanted("hourly counts of one tenant") {
        return Ok(());
    }
    for _ in 0..WARMUP_QUERIES {
        c.count(req.clone()).await?;
    }
    let mut us = Vec::new();
    let (mut buckets, mut total) = (0, 0);
    let started = Instant::now();
    for _ in 0..200 {
        let t = Instant::now();
        let r = c.count(req.clone()).await?.into_inner();
        us.push(t.elapsed().as_secs_f64() * 1e6);
        buckets = r.buckets.iter().filter(|b| b.count > 0).count() as u64;
        total = r.buckets.iter().map(|b| b.count).sum();
    }
    let seconds = started.elapsed().as_secs_f64();
    results.write(timing(
        "hourly counts of one tenant",
        us,
        buckets,
        total,
        seconds,
    ))
}
