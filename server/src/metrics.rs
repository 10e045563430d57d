//! Prometheus metrics: per-RPC counts, errors and latency (a tower layer in front of every
//! service), the engine's fsyncs and group commits (through its observer hook), and the store's
//! counters and sizes (read at scrape time). Served as text on `--metrics-listen`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use echolog::Store;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tonic::codegen::http;

/// Latency buckets, seconds: 50 us to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Group-commit size buckets, records.
const COMMIT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 65536.0,
];

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    rpc_requests: IntCounterVec,
    rpc_errors: IntCounterVec,
    rpc_seconds: HistogramVec,
    fsync_seconds: Histogram,
    commit_records: Histogram,
    commit_batches: Histogram,
    commit_bytes: IntCounter,
    appended_events: IntCounter,
    appended_bytes: IntCounter,
    block_cache_hits: IntCounter,
    block_cache_misses: IntCounter,
    events: IntGauge,
    last_seq: IntGauge,
    segments: IntGauge,
    disk_bytes: IntGauge,
    raw_bytes: IntGauge,
    read_only: IntGauge,
    cluster_files: IntGauge,
    compaction_backlog: IntGauge,
    compaction_bytes: IntCounter,
    purged_events: IntCounter,
    id_filter_bytes: IntGauge,
    id_filter_backlog: IntGauge,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    // Names are fixed and unique: registration cannot fail.
    let _ = r.register(Box::new(m.clone()));
    m
}

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>, prometheus::Error> {
        let r = Registry::new();
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let m = Metrics {
            rpc_requests: reg(&r, IntCounterVec::new(Opts::new("echolog_rpc_requests_total", "gRPC calls received, by method"), &["method"])?),
            rpc_errors: reg(&r, IntCounterVec::new(Opts::new("echolog_rpc_errors_total", "gRPC calls answered with a status other than OK, by method and code"), &["method", "code"])?),
            rpc_seconds: reg(&r, HistogramVec::new(HistogramOpts::new("echolog_rpc_duration_seconds", "time to the response headers of a gRPC call, by method (Append: the append latency, commit included)").buckets(LATENCY_BUCKETS.to_vec()), &["method"])?),
            fsync_seconds: reg(&r, Histogram::with_opts(HistogramOpts::new("echolog_fsync_duration_seconds", "duration of each fdatasync the engine makes").buckets(LATENCY_BUCKETS.to_vec()))?),
            commit_records: reg(&r, Histogram::with_opts(HistogramOpts::new("echolog_group_commit_records", "records written by one group commit").buckets(COMMIT_BUCKETS.to_vec()))?),
            commit_batches: reg(&r, Histogram::with_opts(HistogramOpts::new("echolog_group_commit_batches", "append batches sharing one group commit").buckets(COMMIT_BUCKETS.to_vec()))?),
            commit_bytes: reg(&r, counter("echolog_commit_bytes_total", "bytes written to segments by group commits")?),
            appended_events: reg(&r, counter("echolog_appended_events_total", "records appended since start, tombstones included")?),
            appended_bytes: reg(&r, counter("echolog_appended_raw_bytes_total", "decompressed bytes of the records appended since start")?),
            block_cache_hits: reg(&r, counter("echolog_block_cache_hits_total", "block reads served by the decompressed-block cache")?),
            block_cache_misses: reg(&r, counter("echolog_block_cache_misses_total", "block reads that read and decompressed a block")?),
            events: reg(&r, gauge("echolog_events", "records stored, tombstones included")?),
            last_seq: reg(&r, gauge("echolog_last_seq", "seq of the newest record")?),
            segments: reg(&r, gauge("echolog_segments", "segment files, the active one included")?),
            disk_bytes: reg(&r, gauge("echolog_disk_bytes", "bytes of segment, index and cluster files")?),
            raw_bytes: reg(&r, gauge("echolog_raw_bytes", "decompressed bytes of the stored records")?),
            read_only: reg(&r, gauge("echolog_read_only", "1 while the store refuses writes after an I/O failure")?),
            cluster_files: reg(&r, gauge("echolog_cluster_files", "entity-clustered files compaction has written and history reads")?),
            compaction_backlog: reg(&r, gauge("echolog_compaction_backlog_segments", "sealed segments no cluster file covers yet (compaction's backlog)")?),
            compaction_bytes: reg(&r, counter("echolog_compaction_written_bytes_total", "bytes compaction wrote")?),
            purged_events: reg(&r, counter("echolog_purged_events_total", "events purge erased")?),
            id_filter_bytes: reg(&r, gauge("echolog_id_filter_bytes", "bytes of the filter over the sealed segments' idempotency ids (heap, or mapped from IDFILTER)")?),
            id_filter_backlog: reg(&r, gauge("echolog_id_filter_backlog_segments", "sealed segments the id filter does not cover yet")?),
            registry: r,
        };
        Ok(Arc::new(m))
    }

    /// The text exposition of every metric, the store's read now.
    pub fn render(&self, store: &Store) -> String {
        if let Ok(s) = store.stats() {
            let catch_up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
            catch_up(&self.appended_events, s.appended_events);
            catch_up(&self.appended_bytes, s.appended_bytes);
            catch_up(&self.block_cache_misses, s.blocks_decoded);
            catch_up(
                &self.block_cache_hits,
                s.block_reads.saturating_sub(s.blocks_decoded),
            );
            let g = |gauge: &IntGauge, v: u64| gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
            g(&self.events, s.events);
            g(&self.last_seq, s.last_seq);
            g(&self.segments, u64::from(s.segments));
            g(&self.disk_bytes, s.disk_bytes);
            g(&self.raw_bytes, s.raw_bytes);
            g(&self.cluster_files, u64::from(s.cluster_files));
            g(
                &self.compaction_backlog,
                u64::from(s.compaction_backlog_segments),
            );
            catch_up(&self.compaction_bytes, s.compaction_bytes_written);
            catch_up(&self.purged_events, s.purged_events);
            g(&self.id_filter_bytes, s.id_filter_bytes);
            g(
                &self.id_filter_backlog,
                u64::from(s.id_filter_backlog_segments),
            );
        }
        self.read_only.set(i64::from(store.is_read_only()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn rpc_done(&self, method: &str, code: Option<&str>, elapsed: Duration) {
        self.rpc_requests.with_label_values(&[method]).inc();
        self.rpc_seconds
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
        if let Some(c) = code {
            self.rpc_errors.with_label_values(&[method, c]).inc();
        }
    }
}

/// The engine's observer: fsync latencies and group-commit sizes.
pub struct EngineObserver(pub Arc<Metrics>);

impl echolog::observe::Observer for EngineObserver {
    fn fsync(&self, elapsed: Duration) {
        self.0.fsync_seconds.observe(elapsed.as_secs_f64());
    }
    fn commit(&self, batches: usize, records: u64, bytes: u64) {
        self.0.commit_batches.observe(batches as f64);
        self.0.commit_records.observe(records as f64);
        self.0.commit_bytes.inc_by(bytes);
    }
}

/// The method name of a gRPC path (`/echolog.v1.EventStore/Append` -> `Append`); other
/// services keep their full path so labels stay few and fixed.
fn method_label(path: &str) -> String {
    match path.strip_prefix("/echolog.v1.EventStore/") {
        Some(m) => m.to_owned(),
        None => path
            .rsplit_once('/')
            .map_or(path, |(s, _)| s)
            .trim_start_matches('/')
            .to_owned(),
    }
}

/// Tower layer counting and timing every call, and giving each a request id in the logs.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

static REQUEST_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<S, B, R> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                REQUEST_IDS
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .to_string()
            });
        let span = tracing::info_span!("rpc", method = %method, request_id = %id);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = {
            let _g = span.enter();
            self.inner.call(req)
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let res = fut.await;
                let code = res.as_ref().ok().and_then(|r| {
                    r.headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .filter(|c| *c != "0")
                        .map(str::to_owned)
                });
                let code_name = code.as_deref().map(|c| {
                    let n: i32 = c.parse().unwrap_or(2);
                    format!("{:?}", tonic::Code::from_i32(n))
                });
                metrics.rpc_done(&method, code_name.as_deref(), started.elapsed());
                match &code_name {
                    Some(c) => {
                        tracing::info!(code = %c, elapsed_us = started.elapsed().as_micros() as u64, "call failed")
                    }
                    None => tracing::debug!(
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "call done"
                    ),
                }
                res
            },
            span,
        ))
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            let store = store.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || metrics.render(&store))
                    .await
                    .unwrap_or_default();
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
