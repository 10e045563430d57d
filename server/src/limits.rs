//! Bounds on what one client can make the server hold: connections, streams per connection,
//! bytes buffered per History/Tail stream, time per call, idle connections, and engine calls
//! running at once. Each is a named flag of `echolog serve` with the default below.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::Status;

/// Every bound, with its default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections in total; more are closed at accept.
    pub connections_max: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub streams_per_connection_max: u32,
    /// Bytes of events one History or Tail stream may hold waiting for a slow reader (the
    /// HTTP/2 flow-control window comes on top). A stalled reader costs at most this; it
    /// resumes where it stopped, read again from disk.
    pub stream_bytes_max: usize,
    /// Longest time a call may take to answer (the client's `grpc-timeout` is honored when
    /// shorter).
    pub call_timeout: Duration,
    /// HTTP/2 PING interval, and how long an unanswered PING keeps the connection.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A connection on which the client sends nothing (not even a PING answer) for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Engine calls running at once (each holds a blocking-pool thread).
    pub engine_calls_max: usize,
    /// How long a call waits for an engine slot before it is answered RESOURCE_EXHAUSTED.
    pub engine_queue_wait: Duration,
    /// Append requests queued or committing at once (they hold no thread, only their events).
    pub appends_in_flight_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 1024,
            streams_per_connection_max: 128,
            stream_bytes_max: 4 << 20,
            call_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            engine_calls_max: 64,
            engine_queue_wait: Duration::from_secs(2),
            appends_in_flight_max: 16_384,
        }
    }
}

/// Streams reset by the client that HTTP/2 keeps accepting before it closes the connection
/// (the "rapid reset" flood).
pub const PENDING_RESET_STREAMS_MAX: usize = 64;

/// A TCP connection holding one of the `connections_max` permits, closed when the client sends
/// nothing for `idle_timeout`.
pub struct LimitedIo {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Connected for LimitedIo {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle connection closed (--idle-timeout-ms)",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    // Forwarded so HTTP/2 writes a DATA frame's header and its payload in one `writev`; without
    // it every 16 KiB frame of a long history took two `sendto` calls (benchmarks.md).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepted connections, each holding a permit; over the limit a connection is closed at once.
pub fn limited_incoming(
    listener: tokio::net::TcpListener,
    limits: &Limits,
) -> impl Stream<Item = io::Result<LimitedIo>> {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let idle = limits.idle_timeout;
    let max = limits.connections_max;
    tokio_stream::StreamExt::filter_map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |s| match s {
            Err(e) => Some(Err(e)),
            Ok(s) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    // Small responses (an append's seqs) must not wait for Nagle's algorithm.
                    let _ = s.set_nodelay(true);
                    Some(Ok(LimitedIo {
                        inner: s,
                        _permit: permit,
                        idle,
                        deadline: Box::pin(tokio::time::sleep(idle)),
                    }))
                }
                Err(_) => {
                    tracing::warn!(limit = max, "connection refused: --connections-max reached");
                    None
                }
            },
        },
    )
}

/// An HTTP listener with the same connection bound and idle timeout as the gRPC one: over
/// the limit, a connection is closed at accept.
pub struct LimitedListener {
    inner: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
    max: usize,
}

impl LimitedListener {
    pub fn new(inner: tokio::net::TcpListener, limits: &Limits) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(limits.connections_max)),
            idle: limits.idle_timeout,
            max: limits.connections_max,
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (LimitedIo, std::net::SocketAddr) {
        loop {
            let (s, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = s.set_nodelay(true);
                    let io = LimitedIo {
                        inner: s,
                        _permit: permit,
                        idle: self.idle,
                        deadline: Box::pin(tokio::time::sleep(self.idle)),
                    };
                    return (io, addr);
                }
                Err(_) => {
                    tracing::warn!(
                        limit = self.max,
                        "HTTP connection refused: --connections-max reached"
                    );
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// The sending half of a stream bounded in bytes: `send` waits while the reader has
/// `stream_bytes_max` bytes not yet taken.
pub struct BoundedSender<T> {
    tx: tokio::sync::mpsc::Sender<(T, u32)>,
    budget: Arc<Semaphore>,
    max: u32,
}

impl<T> BoundedSender<T> {
    /// False when the reader has gone.
    pub async fn send(&self, item: T, bytes: usize) -> bool {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, self.max);
        match self.budget.acquire_many(n).await {
            Ok(p) => p.forget(),
            Err(_) => return false,
        }
        self.tx.send((item, n)).await.is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The reading half: gives the bytes back as items are taken.
pub struct BoundedReceiver<T> {
    rx: tokio::sync::mpsc::Receiver<(T, u32)>,
    budget: Arc<Semaphore>,
}

impl<T> Stream for BoundedReceiver<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((item, n))) => {
                self.budget.add_permits(n as usize);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream of at most `bytes_max` bytes in flight (and at most 1024 items).
pub fn bounded<T>(bytes_max: usize) -> (BoundedSender<T>, BoundedReceiver<T>) {
    let max = u32::try_from(bytes_max.max(1)).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(max as usize));
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    (
        BoundedSender {
            tx,
            budget: budget.clone(),
            max,
        },
        BoundedReceiver { rx, budget },
    )
}

/// Events to read from the engine next so that one page holds about `bytes_max` bytes, given
/// the average size seen so far.
pub fn page_events(avg_event_bytes: usize, bytes_max: usize, events_max: u32) -> u32 {
    let n = bytes_max / avg_event_bytes.max(1);
    u32::try_from(n).unwrap_or(u32::MAX).clamp(1, events_max)
}

/// Runs engine calls with at most `engine_calls_max` at once; a call that waits longer than
/// `engine_queue_wait` for a slot is answered RESOURCE_EXHAUSTED.
#[derive(Clone)]
pub struct EngineSlots {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
    flag: &'static str,
    /// Async workers that may run a bounded engine call themselves at once (see
    /// [`EngineSlots::run_bounded`]): half the runtime's workers, none on a one-thread runtime.
    inline: Arc<Semaphore>,
}

/// Async workers allowed to run a bounded engine call in place: half of a multi-thread
/// runtime's workers, so the other half always keeps the transport moving; none on a
/// current-thread runtime or outside a runtime.
fn inline_workers_max() -> usize {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            h.metrics().num_workers() / 2
        }
        _ => 0,
    }
}

impl EngineSlots {
    pub fn new(limits: &Limits) -> Self {
        EngineSlots::with(
            limits.engine_calls_max,
            limits.engine_queue_wait,
            "--engine-calls-max",
        )
    }

    /// Slots for appends in flight.
    pub fn appends(limits: &Limits) -> Self {
        EngineSlots::with(
            limits.appends_in_flight_max,
            limits.engine_queue_wait,
            "--appends-in-flight-max",
        )
    }

    fn with(max: usize, wait: Duration, flag: &'static str) -> Self {
        EngineSlots {
            slots: Arc::new(Semaphore::new(max.max(1))),
            max: max.max(1),
            wait,
            flag,
            inline: Arc::new(Semaphore::new(inline_workers_max())),
        }
    }

    /// Runs one engine call on the blocking pool, holding a slot; engine errors become status
    /// codes.
    pub async fn run<T: Send + 'static>(
        &self,
        store: &echolog::Store,
        f: impl FnOnce(&echolog::Store) -> echolog::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let slot = self.acquire().await?;
        on_pool(store, slot, f).await
    }

    /// Runs one engine call whose work is bounded (a history page: at most a thousand events
    /// and its byte bound, about a millisecond of CPU) on the async worker itself when fewer
    /// than [`inline_workers_max`] workers are already doing so, else like [`Self::run`].
    ///
    /// Why: the hop to the blocking pool and back wakes two threads, which on a 2-core machine
    /// costs 20-60 us of a short history's 110-200 us through gRPC (docs/benchmarks.md). The
    /// gate keeps at least half the workers free of engine calls, so a call that stalls (a
    /// page fault on a cold file) holds up only the tasks of its own worker, which the others
    /// may steal. A panic in the call becomes an INTERNAL status, as on the pool.
    pub async fn run_bounded<T: Send + 'static>(
        &self,
        store: &echolog::Store,
        f: impl FnOnce(&echolog::Store) -> echolog::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let slot = self.acquire().await?;
        let Ok(inline) = self.inline.clone().try_acquire_owned() else {
            return on_pool(store, slot, f).await;
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(store)));
        drop((slot, inline));
        r.map_err(|_| Status::internal("engine call panicked"))?
            .map_err(|e| crate::to_status(&e))
    }

    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Status> {
        // A free slot is taken without arming a timer (the common case, once per append).
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Status::resource_exhausted(format!(
                "server busy: {} calls running and none freed within {} ms \
                 ({}, --engine-queue-wait-ms)",
                self.max,
                self.wait.as_millis(),
                self.flag
            ))),
        }
    }
}

/// Runs `f` on the blocking pool, holding `slot` until it returns.
async fn on_pool<T: Send + 'static>(
    store: &echolog::Store,
    slot: OwnedSemaphorePermit,
    f: impl FnOnce(&echolog::Store) -> echolog::Result<T> + Send + 'static,
) -> Result<T, Status> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let r = f(&store);
        drop(slot);
        r
    })
    .await
    .map_err(|e| Status::internal(format!("engine task failed: {e}")))?
    .map_err(|e| crate::to_status(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_limited_connection_writes_vectored_and_the_peer_reads_every_byte() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            connections_max: 1,
            ..Limits::default()
        };
        let mut incoming = Box::pin(limited_incoming(listener, &limits));
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let mut io = incoming.next().await.unwrap().unwrap();
        assert!(
            io.is_write_vectored(),
            "the socket's vectored writes are passed through"
        );
        let (head, body) = (vec![1u8; 9], vec![2u8; 20_000]);
        let mut left = head.len() + body.len();
        let mut sent = 0;
        while left > 0 {
            let (h, b) = (
                head.get(sent.min(head.len())..).unwrap_or_default(),
                body.get(sent.saturating_sub(head.len())..)
                    .unwrap_or_default(),
            );
            let n = io
                .write_vectored(&[io::IoSlice::new(h), io::IoSlice::new(b)])
                .await
                .unwrap();
            // The first call takes more than the first slice: both went to the socket at once.
            assert!(
                n > 0 && (sent > 0 || n > head.len()),
                "one call wrote {n} bytes"
            );
            (sent, left) = (sent + n, left - n);
        }
        drop(io);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [head, body].concat());
    }

    #[tokio::test]
    async fn a_bounded_stream_holds_at_most_its_bytes() {
        let (tx, mut rx) = bounded::<u32>(100);
        for i in 0..3 {
            assert!(tx.send(i, 30).await);
        }
        // 90 bytes in flight: a 30-byte item must wait until the reader takes one.
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(3, 30)).await;
        assert!(blocked.is_err(), "over the byte bound, send waits");
        assert_eq!(rx.next().await, Some(0));
        assert!(tx.send(4, 30).await);
        // An item larger than the bound still goes through, alone.
        let (tx, mut rx) = bounded::<u32>(10);
        assert!(tx.send(7, 1000).await);
        assert_eq!(rx.next().await, Some(7));
    }

    fn test_store() -> (tempfile::TempDir, echolog::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = echolog::Store::open(dir.path(), echolog::Options::default()).unwrap();
        (dir, store)
    }

    fn slots() -> EngineSlots {
        EngineSlots::with(4, Duration::from_secs(5), "--engine-calls-max")
    }

    /// The thread a bounded call ran on, and whether it was the caller's.
    async fn ran_in_place(slots: &EngineSlots, store: &echolog::Store) -> bool {
        let caller = std::thread::current().id();
        let ran = slots
            .run_bounded(store, |_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        ran == caller
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_call_runs_in_place_while_half_the_workers_are_free() {
        let (_dir, store) = test_store();
        let slots = slots();
        assert_eq!(slots.inline.available_permits(), 1, "half of 2 workers");
        assert!(ran_in_place(&slots, &store).await);
        // One worker already in an engine call: the next goes to the blocking pool.
        let held = slots.inline.clone().try_acquire_owned().unwrap();
        assert!(!ran_in_place(&slots, &store).await);
        drop(held);
        assert!(ran_in_place(&slots, &store).await);
        // `run` always hops.
        let caller = std::thread::current().id();
        let ran = slots
            .run(&store, |_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran, caller);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_one_thread_runtime_never_runs_engine_calls_in_place() {
        let (_dir, store) = test_store();
        let slots = slots();
        assert_eq!(slots.inline.available_permits(), 0);
        assert!(!ran_in_place(&slots, &store).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_call_that_panics_is_an_internal_status_and_frees_its_slots() {
        let (_dir, store) = test_store();
        let slots = EngineSlots::with(1, Duration::from_millis(50), "--engine-calls-max");
        let err = slots
            .run_bounded(&store, |_| -> echolog::Result<()> { panic!("engine bug") })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert_eq!(slots.inline.available_permits(), 1);
        // The only engine slot was given back: the next call runs, in place again.
        assert!(ran_in_place(&slots, &store).await);
        // An engine error keeps its status code.
        let err = slots
            .run_bounded(&store, |s| s.history(&echolog::HistoryQuery::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    }

    #[test]
    fn pages_shrink_with_large_events() {
        assert_eq!(page_events(200, 4 << 20, 1000), 1000);
        assert_eq!(page_events(1 << 20, 4 << 20, 1000), 4);
        assert_eq!(page_events(16 << 20, 4 << 20, 1000), 1);
    }
}
