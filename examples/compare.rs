//! The echolog half of `benches/pg_baseline.sh`: the same workload and the same queries as the
//! PostgreSQL half, so both are measured in one run.
//!
//! `compare csv N` writes the first N events of the seed workload as CSV (for COPY).
//! `compare crash-load N DIR` loads N events and closes without sealing (as after a crash);
//! `compare open _ DIR [cold [history]]` times an open, the first Stats, the first hourly
//! count of one tenant and the first history of a typical entity (`history`: the history
//! alone, as the first query). Closing does not seal, so it repeats; `cold` drops the page
//! cache first.
//! `compare compact _ DIR` compacts such a store on one thread and prints wall and CPU time.
//! `compare count _ DIR` times hourly counts of one tenant (from the tag hours) and of one kind
//! (from the minutes' postings); `count-bitmaps` the same without the tag hours.
//! `compare history _ DIR` and `compare newest _ DIR` time random-product histories and
//! newest-50 pages of busy entities on a store as it is; `compare hottest CACHE_MIB DIR` the
//! hottest entity's whole history.
//! `compare run N DIR` loads N events into a fresh store in DIR (batches of 1000, one thread,
//! sync=always, 1 GiB block cache like PostgreSQL's shared_buffers), then times: history of a typical and of the hottest entity, and an hourly
//! count for one tenant. Prints one line per figure.

#[path = "../benches/workload/mod.rs"]
mod workload;

use std::io::Write;
use std::time::Instant;

use echolog::{Bucket, CountQuery, HistoryQuery, Options, Store};

/// The entities and tenant the PostgreSQL half queries too.
pub const TYPICAL_ENTITY: &str = "product:4242";
pub const HOT_ENTITY: &str = "product:0";
pub const TENANT: &str = "tenant:t7";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU time of this process (user and system) so far, from /proc/self/stat (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn time_it(name: &str, runs: usize, mut f: impl FnMut() -> usize) {
    let mut us = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = f();
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    println!(
        "echolog {name}: p50 {:.1} us, p99 {:.1} us ({n} rows, {runs} runs)",
        percentile(&us, 0.5),
        percentile(&us, 0.99)
    );
}

/// Times 4000 histories `query(1..=4000)` on the store in `dir` as it is (compaction off).
fn time_histories(dir: &str, name: &str, query: impl Fn(u64) -> HistoryQuery) {
    let opts = Options {
        compaction: false,
        ..Options::default()
    };
    let s = Store::open(dir, opts).expect("open");
    let (mut i, mut rows) = (0u64, 0usize);
    time_it(name, 4000, || {
        i += 1;
        let n = s.history(&query(i)).expect("history").len();
        rows += n;
        n
    });
    println!("({rows} rows in all)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("run");
    let n: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    if mode == "csv" {
        let out = std::io::stdout();
        let mut out = std::io::BufWriter::new(out.lock());
        for i in 0..n {
            let e = workload::event(i);
            let tenant = e.tags[0].trim_start_matches("tenant:");
            let payload = String::from_utf8_lossy(&e.payload).replace('"', "\"\"");
            writeln!(
                out,
                "{},{},{},{},\"{{{}}}\",\"{}\"",
                e.entity, e.kind, e.ts, tenant, e.tags[0], payload
            )
            .expect("stdout");
        }
        return;
    }
    let dir = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "./compare-data".into());
    if mode == "crash-load" {
        // `compare crash-load N DIR`: load N events into a fresh store and close it without the
        // seal at close, as a crash would leave it: the active segment is rebuilt at open.
        let _ = std::fs::remove_dir_all(&dir);
        let opts = Options {
            compaction: false,
            seal_at_close_bytes_min: None,
            ..Options::default()
        };
        let s = Store::open(&dir, opts).expect("open");
        let mut i = 0;
        while i < n {
            let k = 1000.min(n - i);
            s.append(workload::batch(i, k)).expect("append");
            i += k;
        }
        return;
    }
    if mode == "open" {
        // `compare open _ DIR`: time opening an existing store. Closing does not seal, so
        // repeated opens of a store left by `crash-load` each rebuild its active segment.
        let opts = Options {
            seal_at_close_bytes_min: None,
            // No background merge competing with the first count.
            compaction: false,
            ..Options::default()
        };
        // `compare open _ DIR cold` drops the page cache first (as root).
        if args.get(4).is_some_and(|a| a == "cold") {
            let _ = std::process::Command::new("sync").status();
            let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
            println!("page cache dropped: {dropped}");
        }
        let t = Instant::now();
        let s = Store::open(&dir, opts).expect("open");
        let opened = t.elapsed();
        let r = s.open_report();
        println!(
            "recovery: {} records from the checkpoint in {:.1} ms, {} scanned in {:.1} ms",
            r.checkpoint_records,
            r.checkpoint_load_us as f64 / 1e3,
            r.scanned_records,
            r.scan_us as f64 / 1e3
        );
        let st = s.stats().expect("stats");
        let stats_at = t.elapsed();
        // Then the first count of one tenant by hour over the whole store, as the
        // benchmark's count class asks it.
        // `... cold history` leaves the count out, so the history is the first query.
        let count_too = args.get(5).is_none_or(|a| a != "history");
        let c = Instant::now();
        let buckets = if count_too {
            s.count(&CountQuery {
                tags: vec![TENANT.into()],
                bucket: Bucket::Hour,
                ..Default::default()
            })
            .expect("count")
            .buckets
            .len()
        } else {
            0
        };
        let counted = c.elapsed();
        // Then the first history of a typical entity (its entity sections and blocks).
        let h = Instant::now();
        let rows = s
            .history(&HistoryQuery {
                entity: TYPICAL_ENTITY.into(),
                ..Default::default()
            })
            .expect("history")
            .len();
        println!(
            "echolog open: {:.1} ms, first Stats at {:.1} ms, then first count {:.1} ms ({buckets} buckets), then first history {:.1} ms ({rows} rows), last seq {}, {} segments",
            opened.as_secs_f64() * 1e3,
            stats_at.as_secs_f64() * 1e3,
            counted.as_secs_f64() * 1e3,
            h.elapsed().as_secs_f64() * 1e3,
            s.last_seq(),
            st.segments
        );
        return;
    }
    if mode == "compact" {
        // `compare compact _ DIR`: compact an existing store (one left by `crash-load`, so
        // nothing is compacted yet) on this thread; prints wall and CPU time. It changes DIR:
        // run it on a copy.
        let opts = Options {
            compaction: false,
            seal_at_close_bytes_min: None,
            ..Options::default()
        };
        let s = Store::open(&dir, opts).expect("open");
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let steps = s.compact_now().expect("compact");
        println!(
            "echolog compact: {} steps in {:.2} s wall, {:.2} s CPU; {} cluster bytes",
            steps.len(),
            t.elapsed().as_secs_f64(),
            cpu_seconds() - cpu,
            s.stats().expect("stats").cluster_bytes
        );
        return;
    }
    if mode == "history" {
        // `compare history _ DIR`: time histories on an existing store through its segments'
        // indexes (no compaction; remove cluster files first to keep them out).
        time_histories(&dir, "history of spread product ids", |i| HistoryQuery {
            entity: format!("product:{}", (i * 7919) % 500_000),
            ..Default::default()
        });
        return;
    }
    if mode == "newest" {
        // `compare newest _ DIR`: the newest 50 events of entities drawn by event frequency
        // (busy ones), as the query class of that name, on an existing store as it is.
        time_histories(&dir, "newest 50 of a busy entity", |i| HistoryQuery {
            entity: format!(
                "product:{}",
                workload::entity_of(workload::mix(i * 7919 + 13))
            ),
            reverse: true,
            limit: 50,
            ..Default::default()
        });
        return;
    }
    if mode == "hottest" {
        // `compare hottest CACHE_MIB DIR`: the hottest entity's whole history, three times
        // into flat columns (`history_into`) and three times as owned events (`history`),
        // with a block cache of CACHE_MIB MiB (small: every block is decompressed).
        let opts = Options {
            compaction: false,
            block_cache_bytes_max: n << 20,
            ..Options::default()
        };
        let s = Store::open(&dir, opts).expect("open");
        let q = HistoryQuery {
            entity: HOT_ENTITY.into(),
            ..Default::default()
        };
        for _ in 0..3 {
            let t = Instant::now();
            let mut c = workload::Columns::default();
            s.history_into(&q, &mut c).expect("history");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "echolog hottest into columns: {} events in {secs:.3} s = {:.2}M events/s",
                c.len(),
                c.len() as f64 / secs / 1e6
            );
        }
        for _ in 0..3 {
            let t = Instant::now();
            let n = s.history(&q).expect("history").len();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "echolog hottest as owned events: {n} events in {secs:.3} s = {:.2}M events/s",
                n as f64 / secs / 1e6
            );
        }
        return;
    }
    if mode == "count" || mode == "count-bitmaps" {
        // `compare count _ DIR`: time the hourly tenant count on an existing store;
        // `count-bitmaps` without the per-tag hourly counts (bitmaps and timestamps only).
        let opts = Options {
            count_tag_hours: mode == "count",
            // No background merge competing with the timing.
            compaction: false,
            ..Options::default()
        };
        let s = Store::open(&dir, opts).expect("open");
        let q = CountQuery {
            tags: vec![TENANT.into()],
            bucket: Bucket::Hour,
            ..Default::default()
        };
        time_it("count per hour one tenant", 2000, || {
            s.count(&q).expect("count").buckets.len()
        });
        // The same count bounded to the hours of the first and the last event (late events
        // before the first one's hour fall outside, hence a bucket fewer): the bounded path,
        // where every segment overlaps the range.
        let first = s.read(s.first_seq(), 1).expect("read");
        let last = s.read(s.last_seq(), 1).expect("read");
        let (Some(first), Some(last)) = (first.first(), last.first()) else {
            return;
        };
        let bounded = CountQuery {
            from_ts: Some(first.event.ts.div_euclid(3_600_000) * 3_600_000),
            to_ts: Some((last.event.ts.div_euclid(3_600_000) + 1) * 3_600_000),
            ..q
        };
        time_it("count per hour one tenant, bounded", 2000, || {
            s.count(&bounded).expect("count").buckets.len()
        });
        // One kind of the 20 per hour: too many events to read their timestamps one by one,
        // so each segment is counted through its minutes' postings.
        let kind = CountQuery {
            kind: Some("kind_3".into()),
            tags: Vec::new(),
            ..bounded
        };
        time_it("count per hour one kind, bounded", 200, || {
            s.count(&kind).expect("count").buckets.len()
        });
        return;
    }
    if mode != "run" {
        eprintln!("usage: compare csv N | compare run N DIR | compare crash-load N DIR | compare open _ DIR [cold [history]] | compare compact _ DIR");
        std::process::exit(2);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Block cache as large as the PostgreSQL half's shared_buffers (1 GiB).
    let s = Store::open(
        &dir,
        Options {
            block_cache_bytes_max: 1 << 30,
            ..Options::default()
        },
    )
    .expect("open");
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let k = 1000.min(n - i);
        s.append(workload::batch(i, k)).expect("append");
        i += k;
    }
    let secs = start.elapsed().as_secs_f64();
    // Generating the events is part of the loop above; measure it alone to subtract it.
    let gen = Instant::now();
    let mut j = 0;
    while j < n {
        let k = 1000.min(n - j);
        std::hint::black_box(workload::batch(j, k));
        j += k;
    }
    let gen_secs = gen.elapsed().as_secs_f64();
    let st = s.stats().expect("stats");
    println!(
        "echolog ingest: {n} events in {:.2}s (generation excluded) = {:.0} events/s; disk {} bytes ({:.3}x raw)",
        secs - gen_secs,
        n as f64 / (secs - gen_secs),
        st.disk_bytes,
        st.disk_bytes as f64 / st.raw_bytes as f64
    );
    // Reopen: open reads the active segment only, however many sealed segments there are.
    drop(s);
    let t = Instant::now();
    let s = Store::open(
        &dir,
        Options {
            block_cache_bytes_max: 1 << 30,
            ..Options::default()
        },
    )
    .expect("reopen");
    let r = s.open_report().clone();
    println!(
        "echolog open: {:.1} ms ({} sealed segments, {} bytes read, {} of them sealed)",
        t.elapsed().as_secs_f64() * 1e3,
        r.sealed_segments,
        r.bytes_read,
        r.sealed_bytes_read
    );
    let h = |e: &str| HistoryQuery {
        entity: e.into(),
        ..Default::default()
    };
    time_it("history typical entity", 2000, || {
        s.history(&h(TYPICAL_ENTITY)).expect("history").len()
    });
    time_it("history hot entity", 20, || {
        s.history(&h(HOT_ENTITY)).expect("history").len()
    });
    let q = CountQuery {
        tags: vec![TENANT.into()],
        bucket: Bucket::Hour,
        ..Default::default()
    };
    time_it("count per hour one tenant", 200, || {
        s.count(&q).expect("count").buckets.len()
    });
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    println!(
        "echolog resident memory after the queries: {}",
        rss.trim_start_matches("VmRSS:").trim()
    );
}
