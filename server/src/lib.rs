//! The gRPC adapter around the synchronous engine: every engine call runs on tokio's blocking
//! pool, never on the async workers.

use std::pin::Pin;
use std::time::Duration;

use echolog::{Bucket, CountQuery, Error, HistoryQuery, Store};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("echolog.v1");
    pub use crate::event_batch::EventBatch;
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("echolog_descriptor");
}

use pb::event_store_server::{EventStore, EventStoreServer};

pub mod auth;
pub mod console;
pub mod event_batch;
pub mod http;
pub mod limits;
pub mod metrics;

use event_batch::{EncodedPage, TailFilter, TailPage};

/// PEM files for TLS: the server's certificate chain and key, and, for mutual TLS, the CA
/// that client certificates must chain to.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Server settings besides the store's own options.
#[derive(Clone)]
pub struct ServerConfig {
    /// Largest gRPC message accepted or sent, bytes.
    pub message_bytes_max: usize,
    /// TLS (and mutual TLS); `None` is plain TCP.
    pub tls: Option<TlsFiles>,
    /// Tokens and rights; [`auth::Auth::open`] allows every call.
    pub auth: auth::Auth,
    /// Where per-RPC metrics go (the engine's own are wired through its observer at open).
    pub metrics: std::sync::Arc<metrics::Metrics>,
    /// What one client can make the server hold.
    pub limits: limits::Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            message_bytes_max: 32 * 1024 * 1024,
            tls: None,
            auth: auth::Auth::open(),
            metrics: metrics::Metrics::new().expect("metric names are valid and unique"),
            limits: limits::Limits::default(),
        }
    }
}

/// How often health checks the store's read-only state.
const HEALTH_POLL_MS: u64 = 250;

/// The one place engine errors become status codes.
pub fn to_status(e: &Error) -> Status {
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        Error::TooLarge(m) => Status::resource_exhausted(m.clone()),
        Error::DiskFull(m) => Status::resource_exhausted(format!("disk full: {m}")),
        Error::ReadOnly(m) => {
            Status::unavailable(format!("store is read-only after an I/O failure: {m}"))
        }
        Error::Corruption { .. } => Status::data_loss(e.to_string()),
        Error::Shared(inner) => to_status(&inner.0),
        Error::Locked { .. } | Error::Inconsistent(_) | Error::Io { .. } => {
            Status::internal(e.to_string())
        }
    }
}

#[derive(Clone)]
pub struct Service {
    store: Store,
    message_bytes_max: usize,
    /// Becomes true when the server shuts down, so that open tails end and graceful shutdown
    /// does not wait on them forever.
    closing: tokio::sync::watch::Receiver<bool>,
    /// The store's last committed seq, published by one bridge thread for all tails.
    committed: tokio::sync::watch::Receiver<u64>,
    /// Bytes one History/Tail stream may hold for its reader.
    stream_bytes_max: usize,
    /// Bytes of one History/Tail message.
    batch_bytes_max: usize,
    slots: limits::EngineSlots,
    /// Appends queued or committing at once.
    appends: limits::EngineSlots,
}

impl Service {
    pub fn new(
        store: Store,
        config: &ServerConfig,
        closing: tokio::sync::watch::Receiver<bool>,
        committed: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        Service {
            store,
            message_bytes_max: config.message_bytes_max,
            closing,
            committed,
            stream_bytes_max: config.limits.stream_bytes_max,
            batch_bytes_max: BATCH_BYTES_MAX.min(config.message_bytes_max / 2).max(1),
            slots: limits::EngineSlots::new(&config.limits),
            appends: limits::EngineSlots::appends(&config.limits),
        }
    }

    /// One append request: size check, then the engine. Oversize requests are
    /// RESOURCE_EXHAUSTED (the transport itself refuses messages over
    /// [`TRANSPORT_LIMIT_FACTOR`] times the limit, with OUT_OF_RANGE).
    async fn append_one(&self, req: pb::AppendRequest) -> Result<pb::AppendResponse, Status> {
        self.submit(req).await?.answer().await
    }

    /// Validates an append and queues it for the committer; the answer comes through the
    /// returned [`Submitted`]. No thread waits for the commit: the engine's committer answers
    /// through a channel. Validation runs here; a batch large enough to be compressed before
    /// queueing does that on the blocking pool, not on an async worker.
    async fn submit(&self, req: pb::AppendRequest) -> Result<Submitted, Status> {
        use prost::Message;
        let len = req.encoded_len();
        if len > self.message_bytes_max {
            return Err(Status::resource_exhausted(format!(
                "request is {len} bytes; the limit is {} (--message-bytes-max)",
                self.message_bytes_max
            )));
        }
        let events: Vec<echolog::Event> = req.events.into_iter().map(to_engine).collect();
        let slot = self.appends.acquire().await?;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let done = move |r| {
            let _ = tx.send(r);
        };
        if len >= self.store.options().block_raw_bytes_target {
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.append_with(events, done)).await;
        } else {
            self.store.append_with(events, done);
        }
        // A refusal (bad input, a read-only store) is answered before the batch is queued, so
        // it is already here: the caller learns it before sending anything else.
        match rx.try_recv() {
            Ok(Err(e)) => Err(to_status(&e)),
            Ok(Ok(out)) => Ok(Submitted {
                answer: Answer::Ready(out),
                _slot: slot,
            }),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => Ok(Submitted {
                answer: Answer::Pending(rx),
                _slot: slot,
            }),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                Err(Status::internal("the commit was dropped"))
            }
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> echolog::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        self.slots.run(&self.store, f).await
    }
}

/// An append the engine took, holding its in-flight slot until answered.
struct Submitted {
    answer: Answer,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

enum Answer {
    /// Already committed by the time it was queued.
    Ready(echolog::AppendOutcome),
    /// Queued for the committer, which answers here.
    Pending(tokio::sync::oneshot::Receiver<echolog::Result<echolog::AppendOutcome>>),
}

impl Submitted {
    async fn answer(self) -> Result<pb::AppendResponse, Status> {
        let out = match self.answer {
            Answer::Ready(out) => out,
            Answer::Pending(rx) => rx
                .await
                .map_err(|_| Status::internal("the commit was dropped"))?
                .map_err(|e| to_status(&e))?,
        };
        Ok(pb::AppendResponse {
            seqs: out.seqs,
            duplicates: out.duplicates,
        })
    }
}

/// Appends of one AppendStream queued and not yet answered: a client may send this many
/// (and at most `--stream-bytes-max` of them) before the first answer, and they share group
/// commits (the stream stops reading while the pipeline is full).
pub const APPEND_STREAM_PIPELINE_MAX: usize = 1024;

fn to_engine(e: pb::Event) -> echolog::Event {
    echolog::Event {
        entity: e.entity,
        kind: e.kind,
        ts: e.ts,
        tags: e.tags,
        // A slice of the request's buffer: copied once, here, into the engine's event.
        payload: Vec::from(e.payload),
        id: if e.id.is_empty() { None } else { Some(e.id) },
    }
}

pub fn to_pb(e: echolog::StoredEvent) -> pb::Event {
    pb::Event {
        seq: e.seq,
        entity: e.event.entity,
        kind: e.event.kind,
        ts: e.event.ts,
        tags: e.event.tags,
        payload: e.event.payload.into(),
        id: e.event.id.unwrap_or_default(),
        deleted_by: e.deleted_by,
    }
}

/// Events in one History/Tail message, at most.
pub const BATCH_EVENTS_MAX: usize = 4096;
/// Bytes of one History/Tail message, at most (an event larger than that goes alone).
pub const BATCH_BYTES_MAX: usize = 1 << 20;

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

type AppendStream = Pin<Box<dyn Stream<Item = Result<pb::AppendResponse, Status>> + Send>>;

/// Whether a History page is the last one: it was not cut by a bound (the count asked of it,
/// or its bytes), or it used up what the call asked for (`left` events).
fn is_last_page(page: &EncodedPage, left: u64, page_bytes: u64) -> bool {
    let asked = left.min(u64::from(HISTORY_PAGE_EVENTS));
    let cut = page.len() as u64 == asked || page.size_bytes() >= page_bytes;
    !cut || page.len() as u64 >= left
}

/// One page of a history, encoded for the wire in the engine call's thread.
fn history_page(s: &Store, q: &HistoryQuery) -> echolog::Result<EncodedPage> {
    let mut page = EncodedPage::default();
    s.history_into(q, &mut page)?;
    Ok(page)
}

/// The transport accepts messages up to this many times `message_bytes_max`, so that requests
/// a little over the limit get a clear RESOURCE_EXHAUSTED from the service.
pub const TRANSPORT_LIMIT_FACTOR: usize = 4;

/// Events a history stream reads from the engine at a time, at most.
const HISTORY_PAGE_EVENTS: u32 = 1000;
/// Events of a Tail's first read; later reads are sized from the events seen so far to hold
/// about `--stream-bytes-max` bytes (a read is in memory while it is sent). History pages are
/// bounded by bytes in the engine instead.
const FIRST_PAGE_EVENTS: u32 = 32;

/// How long shutdown waits for the HTTP side's connections to finish.
const HTTP_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Events a tail sends per engine read.
const TAIL_BATCH_EVENTS: u32 = 1000;
/// How long a tail waits for a commit before checking whether its client left.
const TAIL_WAIT_MS: u64 = 500;

#[tonic::async_trait]
impl EventStore for Service {
    async fn append(
        &self,
        req: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        Ok(Response::new(self.append_one(req.into_inner()).await?))
    }

    type AppendStreamStream = AppendStream;

    async fn append_stream(
        &self,
        req: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // Pipelined: one task reads and queues each request as it arrives, another answers
        // them in order as their commits land, so requests sent back to back share group
        // commits instead of waiting one commit each. The first request refused (bad input,
        // no slot) ends the reading; what was queued before it is still answered, then the
        // error, then the end of the stream.
        // Bounded in requests (APPEND_STREAM_PIPELINE_MAX) and in bytes (--stream-bytes-max of
        // requests queued and not answered), so one stream cannot hold more than a fair share
        // of the appends in flight.
        let (pipe_tx, mut pipe_rx) = tokio::sync::mpsc::channel(APPEND_STREAM_PIPELINE_MAX);
        let bytes_max = u32::try_from(self.stream_bytes_max.max(1)).unwrap_or(u32::MAX);
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(bytes_max as usize));
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = input.message().await.transpose() {
                let queued = match msg {
                    Ok(r) => {
                        use prost::Message;
                        let need = u32::try_from(r.encoded_len()).unwrap_or(u32::MAX);
                        match budget
                            .clone()
                            .acquire_many_owned(need.clamp(1, bytes_max))
                            .await
                        {
                            Ok(bytes) => svc.submit(r).await.map(|q| (q, bytes)),
                            Err(_) => Err(Status::internal("append stream budget closed")),
                        }
                    }
                    Err(e) => Err(e),
                };
                let stop = queued.is_err();
                if pipe_tx.send(queued).await.is_err() || stop {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(queued) = pipe_rx.recv().await {
                let res = match queued {
                    // The bytes are released once the answer is known.
                    Ok((q, _bytes)) => q.answer().await,
                    Err(e) => Err(e),
                };
                let stop = res.is_err();
                if tx.send(res).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type HistoryStream = BatchStream;

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        let r = req.into_inner();
        let q = HistoryQuery {
            entity: r.entity,
            from_ts: r.from_ts,
            to_ts: r.to_ts,
            after_seq: r.after_seq,
            limit: r.limit,
            reverse: r.reverse,
            include_deleted: r.include_deleted,
            bytes_max: 0,
        };
        // Pages of at most HISTORY_PAGE_EVENTS events and HISTORY_PAGE_BYTES of events (the
        // engine stops a page at either bound, so most histories are one engine call), sent
        // through a byte-bounded channel: a hot entity's history, or a stalled reader, holds
        // bounded memory. The first page runs before the response, so bad input is the call's
        // status.
        let bytes_max = self.stream_bytes_max;
        let page_bytes = (bytes_max / 2).max(1) as u64;
        let mut left = if q.limit == 0 {
            u64::MAX
        } else {
            u64::from(q.limit)
        };
        let page = move |q: &HistoryQuery, left: u64| {
            let mut q = q.clone();
            q.limit = left.min(u64::from(HISTORY_PAGE_EVENTS)) as u32;
            q.bytes_max = page_bytes;
            q
        };
        let first_q = page(&q, left);
        let first = self
            .slots
            .run_bounded(&self.store, move |s| history_page(s, &first_q))
            .await?;
        if is_last_page(&first, left, page_bytes) {
            // The whole answer is in hand (most histories): send it without a task and a
            // channel between the engine and the transport. It is at most one page.
            let batches: Vec<_> = first
                .into_batches(BATCH_EVENTS_MAX, self.batch_bytes_max)
                .into_iter()
                .map(|(b, _)| Ok(b))
                .collect();
            return Ok(Response::new(Box::pin(tokio_stream::iter(batches))));
        }
        let (tx, rx) = limits::bounded(bytes_max);
        let svc = self.clone();
        tokio::spawn(async move {
            let mut events = first;
            let mut q = q;
            loop {
                let last_page = is_last_page(&events, left, page_bytes);
                left -= events.len() as u64;
                let last = events.last_seq();
                for (batch, len) in events.into_batches(BATCH_EVENTS_MAX, svc.batch_bytes_max) {
                    if !tx.send(Ok(batch), len).await {
                        return;
                    }
                }
                let Some(last) = last.filter(|_| !last_page) else {
                    return;
                };
                q.after_seq = last;
                let next_q = page(&q, left);
                events = match svc.run(move |s| history_page(s, &next_q)).await {
                    Ok(e) => e,
                    Err(status) => {
                        let _ = tx.send(Err(status), 0).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(rx)))
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let r = req.into_inner();
        let bucket = match pb::Bucket::try_from(r.bucket) {
            Ok(pb::Bucket::None) => Bucket::None,
            Ok(pb::Bucket::Minute) => Bucket::Minute,
            Ok(pb::Bucket::Hour) => Bucket::Hour,
            Ok(pb::Bucket::Day) => Bucket::Day,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "bucket: {} is not one of 0..=3",
                    r.bucket
                )))
            }
        };
        // proto3 int64 has no presence: 0 is an open bound.
        let q = CountQuery {
            entity: r.entity,
            kind: r.kind,
            tags: r.tags,
            from_ts: r.from_ts,
            to_ts: r.to_ts,
            bucket,
            include_deleted: r.include_deleted,
        };
        let out = self.run(move |s| s.count(&q)).await?;
        Ok(Response::new(pb::CountResponse {
            total: out.total,
            buckets: out
                .buckets
                .into_iter()
                .map(|b| pb::BucketCount {
                    start_ts: b.start_ts,
                    count: b.count,
                })
                .collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let seq = self
            .run(move |s| s.delete(&r.entity, &r.seqs, &r.reason))
            .await?;
        Ok(Response::new(pb::DeleteResponse { tombstone_seq: seq }))
    }

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        let r = req.into_inner();
        let seq = self.run(move |s| s.restore(&r.entity)).await?;
        Ok(Response::new(pb::RestoreResponse { seq }))
    }

    type TailStream = BatchStream;

    async fn tail(
        &self,
        req: Request<pb::TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let r = req.into_inner();
        let bytes_max = self.stream_bytes_max;
        let (tx, rx) = limits::bounded(bytes_max);
        let svc = self.clone();
        let filter = std::sync::Arc::new(TailFilter {
            entity: r.entity,
            kind: r.kind,
            tags: r.tags,
            to_seq: r.to_seq,
        });
        tokio::spawn(async move {
            let mut next = r.from_seq.max(1);
            let mut batch_events = FIRST_PAGE_EVENTS;
            loop {
                if filter.to_seq.is_some_and(|to| next > to) {
                    // Every seq up to `to_seq` was passed: the stream ends here, OK.
                    return;
                }
                if *svc.closing.borrow() {
                    let status = Status::unavailable("server is shutting down");
                    let _ = tx.send(Err(status), 0).await;
                    return;
                }
                let from = next;
                let want = batch_events;
                let f = filter.clone();
                let read = svc.run(move |s| {
                    let mut page = TailPage::new(&f);
                    let next_seq = s.read_durable_into(from, want, &mut page)?;
                    Ok((page.matched, page.read, page.read_bytes, next_seq))
                });
                let (matched, n, read_bytes, next_seq) = match read.await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e), 0).await;
                        return;
                    }
                };
                if n == 0 && next_seq > next {
                    // Only seqs purge removed, or past `to_seq`: go on past them.
                    next = next_seq;
                    continue;
                }
                if n == 0 {
                    if tx.is_closed() {
                        return;
                    }
                    // Wait for a commit past what we sent (or a timeout, to notice a client
                    // that left or a shutdown).
                    let mut committed = svc.committed.clone();
                    let after = next - 1;
                    let _ = tokio::time::timeout(
                        Duration::from_millis(TAIL_WAIT_MS),
                        committed.wait_for(|last| *last > after),
                    )
                    .await;
                    continue;
                }
                // What is committed goes out now, batch full or not.
                for (batch, len) in matched.into_batches(BATCH_EVENTS_MAX, svc.batch_bytes_max) {
                    if !tx.send(Ok(batch), len).await {
                        return;
                    }
                }
                next = next.max(next_seq);
                // Size the next read by what this one held (matching or not: all of it was in
                // memory).
                let avg = read_bytes / n.max(1);
                batch_events = limits::page_events(avg, bytes_max, TAIL_BATCH_EVENTS);
            }
        });
        Ok(Response::new(Box::pin(rx)))
    }

    async fn commit_cursor(
        &self,
        req: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::CommitCursorResponse>, Status> {
        let r = req.into_inner();
        self.run(move |s| s.commit_cursor(&r.name, r.seq)).await?;
        Ok(Response::new(pb::CommitCursorResponse {}))
    }

    async fn get_cursor(
        &self,
        req: Request<pb::GetCursorRequest>,
    ) -> Result<Response<pb::GetCursorResponse>, Status> {
        let r = req.into_inner();
        let c = self.run(move |s| s.cursor(&r.name)).await?;
        Ok(Response::new(pb::GetCursorResponse {
            seq: c.unwrap_or(0),
            found: c.is_some(),
        }))
    }

    async fn list_cursors(
        &self,
        _req: Request<pb::ListCursorsRequest>,
    ) -> Result<Response<pb::ListCursorsResponse>, Status> {
        let (list, first) = self.run(|s| Ok((s.cursors()?, s.first_seq()))).await?;
        Ok(Response::new(pb::ListCursorsResponse {
            cursors: list
                .into_iter()
                .map(|(name, seq)| pb::Cursor {
                    name,
                    seq,
                    lagging: seq < first,
                })
                .collect(),
        }))
    }

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let dest = std::path::PathBuf::from(req.into_inner().dest);
        if dest.as_os_str().is_empty() {
            return Err(Status::invalid_argument(
                "dest: a directory path is required",
            ));
        }
        let r = self.run(move |s| s.backup(&dest)).await?;
        Ok(Response::new(pb::BackupResponse {
            last_seq: r.last_seq,
            files_linked: r.files_linked,
            files_copied: r.files_copied,
            bytes_copied: r.bytes_copied,
        }))
    }

    async fn purge(
        &self,
        req: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let grace = req
            .into_inner()
            .grace_seconds
            .map(std::time::Duration::from_secs);
        let r = self.run(move |s| s.purge_now(grace)).await?;
        Ok(Response::new(pb::PurgeResponse {
            events_purged: r.events_purged,
            segments_rewritten: r.segments_rewritten,
            cluster_files_removed: r.cluster_files_removed,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
        }))
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let s = self.run(|s| s.stats()).await?;
        Ok(Response::new(pb::StatsResponse {
            events: s.events,
            last_seq: s.last_seq,
            segments: s.segments,
            disk_bytes: s.disk_bytes,
            raw_bytes: s.raw_bytes,
            tombstones: s.tombstones,
            first_seq: s.first_seq,
            cluster_files: s.cluster_files,
            compaction_backlog_segments: s.compaction_backlog_segments,
            compaction_bytes_written: s.compaction_bytes_written,
            purged_events: s.purged_events,
            id_filter_bytes: s.id_filter_bytes,
            id_filter_backlog_segments: s.id_filter_backlog_segments,
        }))
    }
}

/// Serves `store` on `listener` until `shutdown` resolves; in-flight calls finish first.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_with_http(store, listener, None, config, shutdown).await
}

/// Like [`serve`], and the HTTP/JSON API on `http` when given.
pub async fn serve_with_http(
    store: Store,
    listener: tokio::net::TcpListener,
    http: Option<tokio::net::TcpListener>,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EventStoreServer<Service>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight calls, ending tails");
        let _ = closing_tx.send(true);
    };
    let transport_limit = config
        .message_bytes_max
        .saturating_mul(TRANSPORT_LIMIT_FACTOR);
    // One thread turns the engine's commit notifications into a watch channel for all tails.
    let (committed_tx, committed_rx) = tokio::sync::watch::channel(store.durable_seq());
    let bridge = {
        let store = store.clone();
        let closing = closing_rx.clone();
        std::thread::Builder::new()
            .name("echolog-tail-bridge".into())
            .spawn(move || {
                let mut last = store.durable_seq();
                while !*closing.borrow() && !committed_tx.is_closed() {
                    last = store.wait_for_seq_after(last, Duration::from_millis(TAIL_WAIT_MS));
                    committed_tx.send_replace(last);
                }
            })?
    };
    // Health says NOT_SERVING while the store is read-only after an I/O failure.
    {
        let reporter = health_reporter.clone();
        let store = store.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(HEALTH_POLL_MS)) => {}
                    _ = closing.changed() => return,
                }
                let ok = !store.is_read_only();
                if ok != serving {
                    serving = ok;
                    let status = if ok {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter
                        .set_service_status(
                            <EventStoreServer<Service> as tonic::server::NamedService>::NAME,
                            status,
                        )
                        .await;
                    reporter.set_service_status("", status).await;
                }
            }
        });
    }
    let mut http_task = None;
    if let Some(l) = http {
        let state = http::HttpState {
            store: store.clone(),
            auth: config.auth.clone(),
            slots: limits::EngineSlots::new(&config.limits),
            committed: committed_rx.clone(),
            closing: closing_rx.clone(),
            message_bytes_max: config.message_bytes_max,
        };
        let mut closing = closing_rx.clone();
        let limits_for_http = config.limits.clone();
        http_task = Some(tokio::spawn(async move {
            let stop = async move {
                let _ = closing.wait_for(|c| *c).await;
            };
            let listener = limits::LimitedListener::new(l, &limits_for_http);
            if let Err(e) = axum::serve(listener, http::router(state))
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "the HTTP API stopped");
            }
        }));
    }
    let svc = EventStoreServer::new(Service::new(store, &config, closing_rx, committed_rx))
        .max_decoding_message_size(transport_limit)
        .max_encoding_message_size(transport_limit);
    let lim = &config.limits;
    let incoming = limits::limited_incoming(listener, lim);
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(lim.streams_per_connection_max)
        .concurrency_limit_per_connection(lim.streams_per_connection_max as usize)
        .http2_max_pending_accept_reset_streams(Some(limits::PENDING_RESET_STREAMS_MAX))
        .timeout(lim.call_timeout)
        .http2_keepalive_interval(Some(lim.keepalive_interval))
        .http2_keepalive_timeout(Some(lim.keepalive_timeout))
        .tcp_keepalive(Some(lim.keepalive_interval));
    if let Some(t) = &config.tls {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&t.cert_pem, &t.key_pem));
        if let Some(ca) = &t.client_ca_pem {
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(tls)
            .map_err(|e| format!("TLS configuration: {e}"))?;
    }
    builder
        .layer(metrics::MetricsLayer(config.metrics.clone()))
        .layer(auth::AuthLayer(config.auth.clone()))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    // Returns only once nothing here holds the store any more, so the caller can close or
    // reopen it at once: the HTTP side finishes its calls, the tail bridge sees the close
    // within one wait.
    if let Some(t) = http_task {
        // A client that holds a connection open cannot hold the shutdown up for long.
        let _ = tokio::time::timeout(HTTP_SHUTDOWN_WAIT, t).await;
    }
    let _ = tokio::task::spawn_blocking(move || bridge.join()).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_maps_to_the_status_design_names() {
        use echolog::FormatError;
        use tonic::Code;
        let corrupt = || Error::Corruption {
            file: "x.seg".into(),
            offset: 7,
            source: FormatError::BadMagic { what: "block" },
        };
        let cases = [
            (
                Error::InvalidArgument("entity".into()),
                Code::InvalidArgument,
            ),
            (Error::TooLarge("events".into()), Code::ResourceExhausted),
            (Error::DiskFull("full".into()), Code::ResourceExhausted),
            (Error::ReadOnly("fsync".into()), Code::Unavailable),
            (corrupt(), Code::DataLoss),
            (
                Error::Shared(echolog::SharedError(std::sync::Arc::new(corrupt()))),
                Code::DataLoss,
            ),
            (Error::Inconsistent("x".into()), Code::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(to_status(&e).code(), code, "{e}");
        }
    }
}
