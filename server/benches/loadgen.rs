//! gRPC load generator. Starts, in this process, an echolog server (fresh temp store,
//! sync=always) and a no-op EventStore server (answers appends without storing: the transport's
//! ceiling), drives the same load against both over 127.0.0.1, and prints events/s, latency
//! percentiles and the ratio. Bounded in time and count; talks only to 127.0.0.1.
//!
//! cargo bench -p echolog-server --bench loadgen -- [single|batch|pipelined|stream] [clients] [seconds] [batch_size] [in_flight]
//! Defaults: single 64 5 1 (single-event appends from 64 clients for 5 s);
//! `batch 4 5 1000` drives batches of 1000 from 4 clients; `pipelined 64 5 1 125` keeps 125
//! single-event Append calls in flight on each of 64 connections (8,000 in flight);
//! `stream 32 5 1 250` keeps 250 single-event requests in flight on each of 32 AppendStream
//! calls, one connection each (8,000 in flight), latency from a request's send to its answer.
//! Environment knobs: `LOADGEN_COMPACTION=0` (compaction off), `LOADGEN_SEGMENT_BYTES=N`
//! (segment size), `LOADGEN_PER_SECOND=1` (stream mode: percentiles per second of sending).
//! Also prints the process's CPU time per event (client and server share the process, for the
//! no-op baseline as for echolog, so the difference is the server's own cost).

/// mimalloc: the append path allocates per request and per event from many threads, and
/// glibc malloc spent ~15% of a pipelined-append run in malloc/free and its arena locks
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use echolog::{Options, Store};
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::event_store_server::{EventStore, EventStoreServer};
use echolog_server::pb::{self, AppendRequest};
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Noop {
    next: std::sync::Arc<AtomicU64>,
}

type S<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EventStore for Noop {
    async fn append(
        &self,
        req: Request<AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let n = req.get_ref().events.len() as u64;
        let first = self.next.fetch_add(n, Ordering::Relaxed) + 1;
        Ok(Response::new(pb::AppendResponse {
            seqs: (first..first + n).collect(),
            duplicates: 0,
        }))
    }
    type AppendStreamStream = S<pb::AppendResponse>;
    async fn append_stream(
        &self,
        req: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        // Answers each request as it arrives, without storing it.
        let mut input = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let next = self.next.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = input.message().await {
                let n = r.events.len() as u64;
                let first = next.fetch_add(n, Ordering::Relaxed) + 1;
                let out = pb::AppendResponse {
                    seqs: (first..first + n).collect(),
                    duplicates: 0,
                };
                if tx.send(Ok(out)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
    type HistoryStream = S<pb::EventBatch>;
    async fn history(
        &self,
        _: Request<pb::HistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn count(
        &self,
        _: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn restore(
        &self,
        _: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    type TailStream = S<pb::EventBatch>;
    async fn tail(
        &self,
        _: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn commit_cursor(
        &self,
        _: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::CommitCursorResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn get_cursor(
        &self,
        _: Request<pb::GetCursorRequest>,
    ) -> Result<Response<pb::GetCursorResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn list_cursors(
        &self,
        _: Request<pb::ListCursorsRequest>,
    ) -> Result<Response<pb::ListCursorsResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn backup(
        &self,
        _: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn purge(
        &self,
        _: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
    async fn stats(
        &self,
        _: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Err(Status::unimplemented("no-op"))
    }
}

fn event(i: u64) -> pb::Event {
    pb::Event {
        entity: format!("product:{}", i % 500_000),
        kind: format!("kind_{}", i % 20),
        ts: 1_700_000_000_000 + i as i64,
        tags: vec![format!("tenant:t{}", i % 1000)],
        payload: format!("{{\"product\":{},\"old_price\":12900,\"new_price\":11900,\"currency\":\"EUR\",\"source\":\"feed-{}\",\"note\":\"scheduled price update\",\"batch\":{}}}", i % 500_000, i % 30, i / 1000).into_bytes().into(),
        ..Default::default()
    }
}

/// The requests client `c` cycles through. Built before the clock starts, so the generator
/// measures the server rather than its own formatting; no ids, so nothing is deduplicated.
fn request_pool(c: usize, batch: u64) -> Vec<AppendRequest> {
    let base = c as u64 * 1_000_000_000;
    (0..16u64)
        .map(|k| AppendRequest {
            events: (base + k * batch..base + (k + 1) * batch)
                .map(event)
                .collect(),
        })
        .collect()
}

struct Outcome {
    events: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

/// CPU time of this process so far, seconds (utime + stime from /proc, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

async fn drive(url: String, clients: usize, seconds: u64, batch: u64, in_flight: usize) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(seconds) + Duration::from_millis(200);
    let start = Instant::now() + Duration::from_millis(200);
    // One connection per client, as separate producers would have; `in_flight` request loops
    // share each.
    let mut conns = Vec::new();
    for _ in 0..clients {
        let ch = EventStoreClient::connect(url.clone())
            .await
            .expect("connect")
            .max_encoding_message_size(64 << 20);
        conns.push(ch);
    }
    let mut handles = Vec::new();
    for (k, ch) in conns.iter().enumerate() {
        for j in 0..in_flight {
            let c = k * in_flight + j;
            let mut client = ch.clone();
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                let pool = request_pool(c, batch);
                tokio::time::sleep_until(start.into()).await;
                // Bounded: stops at the deadline or after 10M events per client.
                while Instant::now() < deadline && n < 10_000_000 {
                    let req = pool[(n / batch) as usize % pool.len()].clone();
                    let t = Instant::now();
                    client.append(req).await.expect("append");
                    lat.push(t.elapsed().as_micros() as u64);
                    n += batch;
                }
                (n, lat)
            }));
        }
    }
    let mut events = 0;
    let mut lat_us = Vec::new();
    for t in handles {
        let (n, l) = t.await.expect("client task");
        events += n;
        lat_us.extend(l);
    }
    lat_us.sort_unstable();
    Outcome {
        events,
        secs: start.elapsed().as_secs_f64(),
        lat_us,
    }
}

/// `streams` AppendStream calls, one connection each, each keeping `in_flight` requests sent
/// and not yet answered (a request goes out as soon as an answer comes back).
async fn drive_stream(
    url: String,
    streams: usize,
    seconds: u64,
    batch: u64,
    in_flight: usize,
) -> Outcome {
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    // LOADGEN_PER_SECOND=1 prints the latency percentiles of the requests sent in each second.
    let per_second = std::env::var("LOADGEN_PER_SECOND").is_ok_and(|v| v == "1");
    let by_second: std::sync::Arc<std::sync::Mutex<Vec<Vec<u64>>>> = Default::default();
    for c in 0..streams {
        let by_second = by_second.clone();
        let mut client = EventStoreClient::connect(url.clone())
            .await
            .expect("connect")
            .max_encoding_message_size(64 << 20);
        handles.push(tokio::spawn(async move {
            let pool = request_pool(c, batch);
            let (req_tx, req_rx) = tokio::sync::mpsc::channel::<AppendRequest>(in_flight);
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            let window = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
            tokio::time::sleep_until(start.into()).await;
            let mut answers = client
                .append_stream(tokio_stream::wrappers::ReceiverStream::new(req_rx))
                .await
                .expect("append_stream")
                .into_inner();
            let sender = {
                let window = window.clone();
                tokio::spawn(async move {
                    let mut k = 0usize;
                    // Bounded: stops at the deadline or after 10M requests per stream.
                    while Instant::now() < deadline && k < 10_000_000 {
                        window.acquire().await.expect("window").forget();
                        let _ = sent_tx.send(Instant::now());
                        if req_tx.send(pool[k % pool.len()].clone()).await.is_err() {
                            break;
                        }
                        k += 1;
                    }
                })
            };
            let mut lat = Vec::new();
            let mut n = 0u64;
            while let Some(a) = answers.message().await.expect("answer") {
                let sent = sent_rx.recv().await.expect("a send time per request");
                lat.push(sent.elapsed().as_micros() as u64);
                if per_second {
                    let sec = sent.saturating_duration_since(start).as_secs() as usize;
                    let mut t = by_second.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() <= sec {
                        t.resize(sec + 1, Vec::new());
                    }
                    t[sec].push(*lat.last().unwrap_or(&0));
                }
                n += a.seqs.len() as u64;
                window.add_permits(1);
            }
            sender.await.expect("sender");
            (n, lat)
        }));
    }
    let mut events = 0;
    let mut lat_us = Vec::new();
    for t in handles {
        let (n, l) = t.await.expect("stream task");
        events += n;
        lat_us.extend(l);
    }
    lat_us.sort_unstable();
    for (sec, mut v) in std::mem::take(&mut *by_second.lock().unwrap_or_else(|p| p.into_inner()))
        .into_iter()
        .enumerate()
    {
        v.sort_unstable();
        println!(
            "  second {sec}: {} requests, p50 {} us, p99 {} us, max {} us",
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(0)
        );
    }
    Outcome {
        events,
        secs: start.elapsed().as_secs_f64(),
        lat_us,
    }
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, o: &Outcome) -> f64 {
    let rate = o.events as f64 / o.secs;
    println!(
        "{name}: {} events in {:.2}s = {:.0} events/s; request latency p50 {} us, p99 {} us",
        o.events,
        o.secs,
        rate,
        pct(&o.lat_us, 0.5),
        pct(&o.lat_us, 0.99)
    );
    rate
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("single");
    let clients: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(match mode {
            "batch" => 4,
            "stream" => 32,
            _ => 64,
        });
    let seconds: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5)
        .min(600);
    let batch: u64 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(if mode == "batch" { 1000 } else { 1 });
    let in_flight: usize = args
        .get(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or(match mode {
            "pipelined" => 125,
            "stream" => 250,
            _ => 1,
        })
        .clamp(1, 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Options { compaction: std::env::var("LOADGEN_COMPACTION").map_or(true, |v| v != "0"), segment_size_bytes_max: std::env::var("LOADGEN_SEGMENT_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(Options::default().segment_size_bytes_max), ..Options::default() }).expect("open store");
        let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let echolog_url = format!("http://{}", l1.local_addr().expect("addr"));
        let cfg = echolog_server::ServerConfig {
            message_bytes_max: 64 << 20,
            ..Default::default()
        };
        tokio::spawn(echolog_server::serve(store.clone(), l1, cfg, async move {
            let _ = stop_rx.await;
        }));
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let noop_url = format!("http://{}", l2.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    EventStoreServer::new(Noop::default()).max_decoding_message_size(64 << 20),
                )
                .serve_with_incoming(tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(l2),
                    |s| {
                        if let Ok(s) = &s {
                            let _ = s.set_nodelay(true);
                        }
                        s
                    },
                )),
        );
        println!(
            "load: {mode}, {clients} connections x {in_flight} in flight, {batch} events per request, {seconds} s each"
        );
        let go = |url: String| {
            let streamed = mode == "stream";
            async move {
                if streamed {
                    drive_stream(url, clients, seconds, batch, in_flight).await
                } else {
                    drive(url, clients, seconds, batch, in_flight).await
                }
            }
        };
        let cpu0 = cpu_seconds();
        let noop = go(noop_url).await;
        let cpu1 = cpu_seconds();
        let base = report("no-op tonic server (baseline)", &noop);
        let real = go(echolog_url).await;
        let cpu2 = cpu_seconds();
        let rate = report("echolog, sync=always", &real);
        println!("ratio echolog / no-op: {:.2}x", rate / base);
        let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
        println!(
            "process CPU per event (client + server): no-op {:.1} us, echolog {:.1} us",
            per(cpu1 - cpu0, noop.events),
            per(cpu2 - cpu1, real.events)
        );
        let st = store.stats().expect("stats");
        println!(
            "echolog group commits: {} ({:.1} events per commit)",
            st.commits,
            st.events as f64 / st.commits.max(1) as f64
        );
        assert_eq!(st.events, real.events, "every acknowledged event is stored");
    });
}
