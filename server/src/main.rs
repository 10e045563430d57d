//! `echolog`: the server (`echolog serve`) and client subcommands against a running server.

/// mimalloc: the append path allocates per request and per event from many threads, and
/// glibc malloc spent ~15% of a pipelined-append run in malloc/free and its arena locks
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use echolog::{Options, Store, SyncPolicy};
use echolog_server::limits::Limits;
use echolog_server::pb;
use echolog_server::pb::event_store_client::EventStoreClient;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "echolog",
    version,
    about = "Append-only event store: server and client"
)]
struct Cli {
    /// Server to talk to (client subcommands).
    #[arg(
        long,
        global = true,
        env = "ECHOLOG_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// CA certificate (PEM) to check the server's certificate with; use an https:// --server.
    #[arg(long, global = true, env = "ECHOLOG_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --tls-key.
    #[arg(long, global = true, env = "ECHOLOG_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "ECHOLOG_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    #[arg(long, global = true, env = "ECHOLOG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Filters of `count` and `export`: every one given must match.
#[derive(clap::Args)]
struct Filter {
    #[arg(long)]
    entity: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    /// A tag the events carry (repeatable: all must be there).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Start of the half-open event time range [from, to), ms; absent: open.
    #[arg(long, allow_hyphen_values = true)]
    from_ts: Option<i64>,
    /// End of the half-open range, ms; absent: open.
    #[arg(long, allow_hyphen_values = true)]
    to_ts: Option<i64>,
}

#[derive(Subcommand)]
enum CursorCmd {
    /// Print the seq a cursor resumes from.
    Get { name: String },
    /// Commit a cursor at a seq (at most last_seq + 1; may move back to replay).
    Set { name: String, seq: u64 },
    /// Every cursor: name, tab, seq.
    List,
}

/// How client subcommands reach the server.
#[derive(Clone)]
struct Conn {
    server: String,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    token: Option<String>,
}

// Parsed once per process: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        #[arg(long, env = "ECHOLOG_DATA_DIR", default_value = "./echolog-data")]
        data_dir: PathBuf,
        #[arg(long, env = "ECHOLOG_LISTEN", default_value = "127.0.0.1:50051")]
        listen: String,
        /// HTTP/JSON API address (`/api/v1/...`); `none` turns it off. Plain HTTP: a
        /// non-loopback address needs --insecure.
        #[arg(long, env = "ECHOLOG_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
        http_listen: String,
        /// always | interval:<ms> | never
        #[arg(long, env = "ECHOLOG_SYNC", default_value = "always")]
        sync: String,
        #[arg(long, env = "ECHOLOG_SEGMENT_SIZE_BYTES", default_value_t = Options::default().segment_size_bytes_max)]
        segment_size_bytes: u64,
        /// Shutdown seals the active segment once it holds this many bytes, so the next start
        /// has no index to rebuild (25-50 ms per MiB); 0: never.
        #[arg(long, env = "ECHOLOG_SEAL_AT_CLOSE_BYTES_MIN", default_value_t = Options::default().seal_at_close_bytes_min.unwrap_or(0))]
        seal_at_close_bytes_min: u64,
        /// Save the active segment's index in a checkpoint each time the segment has grown by
        /// this many durable bytes, so a start after a crash decodes only the blocks after it;
        /// 0: never (a start after a crash then decodes the whole active segment).
        #[arg(long, env = "ECHOLOG_CHECKPOINT_BYTES", default_value_t = Options::default().checkpoint_bytes.unwrap_or(0))]
        checkpoint_bytes: u64,
        #[arg(long, env = "ECHOLOG_PAYLOAD_BYTES_MAX", default_value_t = Options::default().payload_bytes_max)]
        payload_bytes_max: usize,
        #[arg(long, env = "ECHOLOG_BATCH_EVENTS_MAX", default_value_t = Options::default().batch_events_max)]
        batch_events_max: usize,
        #[arg(long, env = "ECHOLOG_BATCH_BYTES_MAX", default_value_t = Options::default().batch_bytes_max)]
        batch_bytes_max: usize,
        #[arg(long, env = "ECHOLOG_BLOCK_CACHE_BYTES", default_value_t = Options::default().block_cache_bytes_max)]
        block_cache_bytes: u64,
        /// Decompressed size at which a block is cut (smaller: faster history, worse ratio).
        #[arg(long, env = "ECHOLOG_BLOCK_BYTES_TARGET", default_value_t = Options::default().block_raw_bytes_target)]
        block_bytes_target: usize,
        #[arg(long, env = "ECHOLOG_ZSTD_LEVEL", default_value_t = Options::default().zstd_level)]
        zstd_level: i32,
        /// Remove whole old segments whose newest event is older than this: a number with
        /// a unit, ms s m h d (`30d`).
        #[arg(long, env = "ECHOLOG_RETENTION_AGE", value_parser = parse_age)]
        retention_age: Option<std::time::Duration>,
        /// Remove the oldest segments while segments and indexes take more than this many bytes.
        #[arg(long, env = "ECHOLOG_RETENTION_BYTES")]
        retention_bytes: Option<u64>,
        /// Erase deleted events once their tombstone is older than this (`30d`), checked every
        /// minute in the background; unset (the default): never (docs/operations.md, "Purge").
        #[arg(long, env = "ECHOLOG_PURGE_GRACE", value_parser = parse_age)]
        purge_grace: Option<std::time::Duration>,
        /// Rewrite sealed segments into entity-clustered files in the background (history then
        /// costs in proportion to the entity's events; docs/operations.md, "Compaction").
        #[arg(long, env = "ECHOLOG_COMPACTION", default_value_t = true, action = clap::ArgAction::Set)]
        compaction: bool,
        /// Bound on compaction's write rate in bytes per second (0: unbounded).
        #[arg(long, env = "ECHOLOG_COMPACTION_BYTES_PER_SECOND_MAX", default_value_t = Options::default().compaction_bytes_per_second_max)]
        compaction_bytes_per_second_max: u64,
        /// How many of the newest events an idempotency id is checked against (0: all).
        #[arg(long, env = "ECHOLOG_IDEMPOTENCY_WINDOW_EVENTS", default_value_t = Options::default().idempotency_window_events)]
        idempotency_window_events: u64,
        #[arg(long, env = "ECHOLOG_MESSAGE_BYTES_MAX", default_value_t = echolog_server::ServerConfig::default().message_bytes_max)]
        message_bytes_max: usize,
        /// Server certificate chain (PEM): serve gRPC over TLS, with --tls-key.
        #[arg(long, env = "ECHOLOG_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Server private key (PEM).
        #[arg(long, env = "ECHOLOG_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA (PEM) client certificates must chain to: mutual TLS.
        #[arg(long, env = "ECHOLOG_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Tokens file: one `<token> <rights>` per line (rights: read,write,admin). Re-read on
        /// SIGHUP. Without it every client may do everything.
        #[arg(long, env = "ECHOLOG_TOKENS_FILE")]
        tokens_file: Option<PathBuf>,
        /// Allow plain TCP on a non-loopback address (traffic and tokens travel unencrypted).
        #[arg(long, env = "ECHOLOG_INSECURE")]
        insecure: bool,
        /// Serve Prometheus metrics (text format) at http://<addr>/metrics.
        #[arg(long, env = "ECHOLOG_METRICS_LISTEN")]
        metrics_listen: Option<String>,
        /// Open connections in total; more are closed at accept.
        #[arg(long, env = "ECHOLOG_CONNECTIONS_MAX", default_value_t = Limits::default().connections_max)]
        connections_max: usize,
        /// Concurrent calls (HTTP/2 streams) per connection.
        #[arg(long, env = "ECHOLOG_STREAMS_PER_CONNECTION_MAX", default_value_t = Limits::default().streams_per_connection_max)]
        streams_per_connection_max: u32,
        /// Bytes one History or Tail stream may hold for a slow reader.
        #[arg(long, env = "ECHOLOG_STREAM_BYTES_MAX", default_value_t = Limits::default().stream_bytes_max)]
        stream_bytes_max: usize,
        /// Longest time a call may take to answer, ms (a shorter grpc-timeout is honored).
        #[arg(long, env = "ECHOLOG_CALL_TIMEOUT_MS", default_value_t = Limits::default().call_timeout.as_millis() as u64)]
        call_timeout_ms: u64,
        /// HTTP/2 PING interval, ms.
        #[arg(long, env = "ECHOLOG_KEEPALIVE_INTERVAL_MS", default_value_t = Limits::default().keepalive_interval.as_millis() as u64)]
        keepalive_interval_ms: u64,
        /// How long an unanswered PING keeps the connection, ms.
        #[arg(long, env = "ECHOLOG_KEEPALIVE_TIMEOUT_MS", default_value_t = Limits::default().keepalive_timeout.as_millis() as u64)]
        keepalive_timeout_ms: u64,
        /// Close a connection whose client sends nothing for this long, ms.
        #[arg(long, env = "ECHOLOG_IDLE_TIMEOUT_MS", default_value_t = Limits::default().idle_timeout.as_millis() as u64)]
        idle_timeout_ms: u64,
        /// Engine calls running at once.
        #[arg(long, env = "ECHOLOG_ENGINE_CALLS_MAX", default_value_t = Limits::default().engine_calls_max)]
        engine_calls_max: usize,
        /// How long a call waits for an engine slot before RESOURCE_EXHAUSTED, ms.
        #[arg(long, env = "ECHOLOG_ENGINE_QUEUE_WAIT_MS", default_value_t = Limits::default().engine_queue_wait.as_millis() as u64)]
        engine_queue_wait_ms: u64,
        /// Append requests queued or committing at once.
        #[arg(long, env = "ECHOLOG_APPENDS_IN_FLIGHT_MAX", default_value_t = Limits::default().appends_in_flight_max)]
        appends_in_flight_max: usize,
    },
    /// Append one event.
    Append {
        #[arg(long)]
        entity: String,
        #[arg(long)]
        kind: String,
        /// ms since the epoch; 0 = server time
        #[arg(long, default_value_t = 0)]
        ts: i64,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value = "")]
        payload: String,
        #[arg(long, default_value = "")]
        id: String,
    },
    /// Import a JSON-lines file: one event per line ({"entity","kind","ts","tags","payload","id"}).
    Import {
        file: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Stop at the first bad line instead of skipping it.
        #[arg(long)]
        strict: bool,
    },
    /// Write events as JSON lines in the shape `import` reads (export then import round-trips
    /// exactly). Tombstone records are left out; deleted events are kept.
    Export {
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        filter: Filter,
        /// Seq range [from, to]; to defaults to the last seq when the export starts.
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        #[arg(long)]
        to_seq: Option<u64>,
    },
    /// Show an entity's history.
    History {
        entity: String,
        #[arg(long)]
        from_ts: Option<i64>,
        #[arg(long)]
        to_ts: Option<i64>,
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long)]
        reverse: bool,
        #[arg(long)]
        include_deleted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Count events.
    Count {
        #[command(flatten)]
        filter: Filter,
        /// none | minute | hour | day
        #[arg(long, default_value = "none")]
        bucket: String,
        #[arg(long)]
        include_deleted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Soft-delete an entity, or single events with --seq.
    Delete {
        #[arg(long, default_value = "")]
        entity: String,
        #[arg(long = "seq")]
        seqs: Vec<u64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift an entity's tombstones.
    Restore { entity: String },
    /// Follow events from a seq on.
    Tail {
        #[arg(long, default_value_t = 0)]
        from_seq: u64,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Stop after this many events (0: follow forever).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Resume from this consumer cursor (or --from-seq when it does not exist yet), and
        /// commit it after each batch printed: at-least-once delivery.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Store statistics.
    Stats,
    /// A consistent backup while the server runs (DEST is a directory on the server's machine;
    /// admin right), or of a stopped store with --offline.
    Backup {
        dest: PathBuf,
        /// Back up the stopped store in --data-dir instead of asking the server.
        #[arg(long)]
        offline: bool,
        #[arg(long, default_value = "./echolog-data")]
        data_dir: PathBuf,
    },
    /// Erase now the events deleted longer ago than the grace period (admin right; the
    /// server also purges in the background with --purge-grace). Prints what it removed.
    Purge {
        /// Run a purge pass now (required: purging cannot be undone).
        #[arg(long)]
        now: bool,
        /// Grace period (`30d`, `0s`); default: the server's --purge-grace.
        #[arg(long, value_parser = parse_age)]
        grace: Option<std::time::Duration>,
        /// Purge the stopped store in --data-dir instead of asking the server (--grace needed).
        #[arg(long)]
        offline: bool,
        #[arg(long, default_value = "./echolog-data")]
        data_dir: PathBuf,
    },
    /// Consumer cursors: get, set or list.
    Cursor {
        #[command(subcommand)]
        cmd: CursorCmd,
    },
    /// Check every checksum of every file of a stopped store (offline; takes the lock).
    /// Exits non-zero, naming file and offset, when anything is corrupt.
    Verify {
        #[arg(default_value = "./echolog-data")]
        dir: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Engine calls are bounded by --engine-calls-max; the blocking pool gets that many threads
    // and a few more for the store's own blocking work.
    let blocking_threads = match &cli.cmd {
        Cmd::Serve {
            engine_calls_max, ..
        } => engine_calls_max.max(&1) + 16,
        _ => 64,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `30d`, `12h`, `90m`, `3600s`, `500ms`.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m, h, d)"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{s:?}: too long"))
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, BoxError> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()).into())
}

/// Re-reads the tokens file on SIGHUP; a bad file keeps the tokens in force.
fn spawn_token_reloader(auth: echolog_server::auth::Auth) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match auth.reload() {
                Ok(n) => tracing::info!(tokens = n, "re-read the tokens file"),
                Err(e) => {
                    tracing::error!(error = %e, "tokens file not re-read; the tokens in force stay")
                }
            }
        }
    });
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = EventStoreClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn client(conn: &Conn) -> Result<Client, BoxError> {
    let url = &conn.server;
    let mut ep = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| format!("--server {url}: {e}"))?;
    if conn.tls_ca.is_some() || conn.tls_cert.is_some() || url.starts_with("https://") {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &conn.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem("--tls-ca", ca)?));
        }
        if let (Some(c), Some(k)) = (&conn.tls_cert, &conn.tls_key) {
            tls = tls.identity(Identity::from_pem(
                read_pem("--tls-cert", c)?,
                read_pem("--tls-key", k)?,
            ));
        }
        ep = ep.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let bearer = match &conn.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "--token: not a valid header value")?,
        ),
        None => None,
    };
    Ok(EventStoreClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(64 * 1024 * 1024))
}

fn status_err(s: tonic::Status) -> BoxError {
    format!("{:?}: {}", s.code(), s.message()).into()
}

fn event_json(e: &pb::Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq, "entity": e.entity, "kind": e.kind, "ts": e.ts, "tags": e.tags,
        "payload": String::from_utf8_lossy(&e.payload), "id": e.id, "deleted_by": e.deleted_by,
    })
}

fn print_event_row(out: &mut impl Write, e: &pb::Event) -> std::io::Result<()> {
    let deleted = if e.deleted_by != 0 {
        format!(" deleted_by={}", e.deleted_by)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{:>10}  {:>14}  {:<20} {:<24} [{}] {}{}",
        e.seq,
        e.ts,
        e.entity,
        e.kind,
        e.tags.join(","),
        String::from_utf8_lossy(&e.payload),
        deleted
    )
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let conn = Conn {
        server: cli.server.clone(),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        token: cli.token.clone(),
    };
    match cli.cmd {
        Cmd::Serve {
            data_dir,
            listen,
            http_listen,
            sync,
            segment_size_bytes,
            seal_at_close_bytes_min,
            checkpoint_bytes,
            payload_bytes_max,
            batch_events_max,
            batch_bytes_max,
            block_cache_bytes,
            block_bytes_target,
            zstd_level,
            idempotency_window_events,
            retention_age,
            retention_bytes,
            purge_grace,
            compaction,
            compaction_bytes_per_second_max,
            message_bytes_max,
            tls_cert,
            tls_key,
            tls_client_ca,
            tokens_file,
            insecure,
            metrics_listen,
            connections_max,
            streams_per_connection_max,
            stream_bytes_max,
            call_timeout_ms,
            keepalive_interval_ms,
            keepalive_timeout_ms,
            idle_timeout_ms,
            engine_calls_max,
            engine_queue_wait_ms,
            appends_in_flight_max,
        } => {
            use std::time::Duration;
            let ms = Duration::from_millis;
            let limits = Limits {
                connections_max: connections_max.max(1),
                streams_per_connection_max: streams_per_connection_max.max(1),
                stream_bytes_max: stream_bytes_max.max(1),
                call_timeout: ms(call_timeout_ms.max(1)),
                keepalive_interval: ms(keepalive_interval_ms.max(1)),
                keepalive_timeout: ms(keepalive_timeout_ms.max(1)),
                idle_timeout: ms(idle_timeout_ms.max(1)),
                engine_calls_max: engine_calls_max.max(1),
                engine_queue_wait: ms(engine_queue_wait_ms),
                appends_in_flight_max: appends_in_flight_max.max(1),
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("ECHOLOG_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let metrics = echolog_server::metrics::Metrics::new()?;
            let observer = echolog::observe::ObserverHook(std::sync::Arc::new(
                echolog_server::metrics::EngineObserver(metrics.clone()),
            ));
            let opts = Options {
                observer: Some(observer),
                sync: sync.parse::<SyncPolicy>()?,
                segment_size_bytes_max: segment_size_bytes,
                seal_at_close_bytes_min: (seal_at_close_bytes_min > 0)
                    .then_some(seal_at_close_bytes_min),
                checkpoint_bytes: (checkpoint_bytes > 0).then_some(checkpoint_bytes),
                payload_bytes_max,
                batch_events_max,
                batch_bytes_max,
                block_cache_bytes_max: block_cache_bytes,
                block_raw_bytes_target: block_bytes_target,
                zstd_level,
                idempotency_window_events,
                retention_age,
                retention_bytes,
                purge_grace,
                compaction,
                compaction_bytes_per_second_max,
                ..Options::default()
            };
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some(echolog_server::TlsFiles {
                    cert_pem: read_pem("--tls-cert", &c)?,
                    key_pem: read_pem("--tls-key", &k)?,
                    client_ca_pem: match tls_client_ca {
                        Some(ca) => Some(read_pem("--tls-client-ca", &ca)?),
                        None => None,
                    },
                }),
                _ => None,
            };
            let auth = match &tokens_file {
                Some(p) => echolog_server::auth::Auth::from_file(p)?,
                None => echolog_server::auth::Auth::open(),
            };
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr()?;
            if tls.is_none() && !addr.ip().is_loopback() && !insecure {
                return Err(format!(
                    "refusing to serve plain TCP on {addr}, which is not a loopback address: \
                     anyone on the network could read the traffic and the tokens. Give \
                     --tls-cert and --tls-key, or --insecure to accept that"
                )
                .into());
            }
            let http = if http_listen == "none" {
                None
            } else {
                let l = tokio::net::TcpListener::bind(&http_listen)
                    .await
                    .map_err(|e| format!("cannot listen on --http-listen {http_listen}: {e}"))?;
                let a = l.local_addr()?;
                if !a.ip().is_loopback() && !insecure {
                    return Err(format!(
                        "refusing to serve plain HTTP on {a}, which is not a loopback address \
                         (the HTTP API has no TLS): use a loopback --http-listen, `none`, or --insecure"
                    )
                    .into());
                }
                Some(l)
            };
            if auth.enabled() {
                spawn_token_reloader(auth.clone());
            }
            let store = tokio::task::spawn_blocking(move || Store::open(data_dir, opts)).await??;
            // Tests and scripts read this line to learn the port.
            println!("echolog listening on {addr}");
            if let Some(l) = &http {
                println!("echolog http on http://{}", l.local_addr()?);
            }
            if let Some(m) = &metrics_listen {
                let l = tokio::net::TcpListener::bind(m)
                    .await
                    .map_err(|e| format!("--metrics-listen {m}: {e}"))?;
                println!("echolog metrics on http://{}/metrics", l.local_addr()?);
                tokio::spawn(echolog_server::metrics::serve_metrics(
                    l,
                    metrics.clone(),
                    store.clone(),
                    std::future::pending(),
                ));
            }
            std::io::stdout().flush()?;
            tracing::info!(%addr, "serving");
            echolog_server::serve_with_http(
                store.clone(),
                listener,
                http,
                echolog_server::ServerConfig {
                    message_bytes_max,
                    tls,
                    auth,
                    metrics,
                    limits,
                },
                echolog_server::shutdown_signal(),
            )
            .await?;
            // Sealing a large active segment now saves the next start its index rebuild.
            tokio::task::spawn_blocking(move || {
                store.sync()?;
                store.seal_for_close()
            })
            .await??;
            tracing::info!("shut down cleanly");
            Ok(())
        }
        Cmd::Append {
            entity,
            kind,
            ts,
            tags,
            payload,
            id,
        } => {
            let mut c = client(&conn).await?;
            let ev = pb::Event {
                entity,
                kind,
                ts,
                tags,
                payload: payload.into_bytes().into(),
                id,
                ..Default::default()
            };
            let r = c
                .append(pb::AppendRequest { events: vec![ev] })
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "seq {} (duplicates: {})",
                r.seqs.first().copied().unwrap_or(0),
                r.duplicates
            );
            Ok(())
        }
        Cmd::Import {
            file,
            batch,
            strict,
        } => import(&conn, file, batch.clamp(1, 100_000), strict).await,
        Cmd::Export {
            output,
            filter,
            from_seq,
            to_seq,
        } => export(&conn, filter, from_seq.max(1), to_seq, output).await,
        Cmd::History {
            entity,
            from_ts,
            to_ts,
            after_seq,
            limit,
            reverse,
            include_deleted,
            json,
        } => {
            let mut c = client(&conn).await?;
            let mut s = c
                .history(pb::HistoryRequest {
                    entity,
                    from_ts,
                    to_ts,
                    after_seq,
                    limit,
                    reverse,
                    include_deleted,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            let mut out = std::io::stdout().lock();
            if !json {
                writeln!(
                    out,
                    "{:>10}  {:>14}  {:<20} {:<24} tags payload",
                    "seq", "ts", "entity", "kind"
                )?;
            }
            while let Some(b) = s.message().await.map_err(status_err)? {
                for e in &b.events {
                    if json {
                        writeln!(out, "{}", event_json(e))?;
                    } else {
                        print_event_row(&mut out, e)?;
                    }
                }
            }
            Ok(())
        }
        Cmd::Count {
            filter:
                Filter {
                    entity,
                    kind,
                    tags,
                    from_ts,
                    to_ts,
                },
            bucket,
            include_deleted,
            json,
        } => {
            let bucket = match bucket.as_str() {
                "none" => pb::Bucket::None,
                "minute" => pb::Bucket::Minute,
                "hour" => pb::Bucket::Hour,
                "day" => pb::Bucket::Day,
                other => {
                    return Err(format!(
                        "--bucket: {other:?} is not one of none, minute, hour, day"
                    )
                    .into())
                }
            };
            let mut c = client(&conn).await?;
            let r = c
                .count(pb::CountRequest {
                    entity,
                    kind,
                    tags,
                    from_ts,
                    to_ts,
                    bucket: bucket as i32,
                    include_deleted,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            if json {
                let b: Vec<_> = r
                    .buckets
                    .iter()
                    .map(|b| serde_json::json!({"start_ts": b.start_ts, "count": b.count}))
                    .collect();
                println!("{}", serde_json::json!({"total": r.total, "buckets": b}));
            } else {
                for b in &r.buckets {
                    println!("{:>14}  {}", b.start_ts, b.count);
                }
                println!("total {}", r.total);
            }
            Ok(())
        }
        Cmd::Delete {
            entity,
            seqs,
            reason,
        } => {
            let mut c = client(&conn).await?;
            let r = c
                .delete(pb::DeleteRequest {
                    entity,
                    seqs,
                    reason,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("tombstone seq {}", r.tombstone_seq);
            Ok(())
        }
        Cmd::Restore { entity } => {
            let mut c = client(&conn).await?;
            let r = c
                .restore(pb::RestoreRequest { entity })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("restore seq {}", r.seq);
            Ok(())
        }
        Cmd::Tail {
            from_seq,
            entity,
            kind,
            tags,
            count,
            cursor,
        } => {
            let mut c = client(&conn).await?;
            let mut from_seq = from_seq;
            if let Some(name) = &cursor {
                let r = c
                    .get_cursor(pb::GetCursorRequest { name: name.clone() })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                if r.found {
                    from_seq = r.seq;
                }
            }
            let mut cc = c.clone();
            let mut s = c
                .tail(pb::TailRequest {
                    from_seq,
                    entity,
                    kind,
                    tags,
                    to_seq: None,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            let mut n = 0;
            'batches: while let Some(b) = s.message().await.map_err(status_err)? {
                let mut last = None;
                for e in &b.events {
                    println!("{}", event_json(e));
                    last = Some(e.seq);
                    n += 1;
                    if count != 0 && n >= count {
                        break;
                    }
                }
                // At-least-once: the cursor moves past what was printed, after printing it.
                if let (Some(name), Some(seq)) = (&cursor, last) {
                    std::io::stdout().flush()?;
                    cc.commit_cursor(pb::CommitCursorRequest {
                        name: name.clone(),
                        seq: seq + 1,
                    })
                    .await
                    .map_err(status_err)?;
                }
                if count != 0 && n >= count {
                    break 'batches;
                }
            }
            Ok(())
        }
        Cmd::Purge {
            now,
            grace,
            offline,
            data_dir,
        } => {
            if !now {
                return Err("purge: pass --now to run a purge pass now (it cannot be undone); the server purges in the background with --purge-grace".into());
            }
            let r = if offline {
                tokio::task::spawn_blocking(move || {
                    let s = Store::open(&data_dir, Options::default())?;
                    s.purge_now(grace)
                })
                .await??
            } else {
                let mut c = client(&conn).await?;
                let r = c
                    .purge(pb::PurgeRequest {
                        grace_seconds: grace.map(|g| g.as_secs()),
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                echolog::PurgeReport {
                    events_purged: r.events_purged,
                    segments_rewritten: r.segments_rewritten,
                    cluster_files_removed: r.cluster_files_removed,
                    bytes_before: r.bytes_before,
                    bytes_after: r.bytes_after,
                }
            };
            println!(
                "purged {} events: {} segments rewritten ({} -> {} bytes), {} cluster files removed (compaction rebuilds them)",
                r.events_purged, r.segments_rewritten, r.bytes_before, r.bytes_after, r.cluster_files_removed
            );
            Ok(())
        }
        Cmd::Backup {
            dest,
            offline,
            data_dir,
        } => {
            let (last_seq, linked, copied, bytes) = if offline {
                let r = tokio::task::spawn_blocking(move || {
                    let s = Store::open(&data_dir, Options::default())?;
                    s.backup(&dest)
                })
                .await??;
                (r.last_seq, r.files_linked, r.files_copied, r.bytes_copied)
            } else {
                let dest = std::path::absolute(&dest).unwrap_or(dest);
                let mut c = client(&conn).await?;
                let r = c
                    .backup(pb::BackupRequest {
                        dest: dest.to_string_lossy().into_owned(),
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                (r.last_seq, r.files_linked, r.files_copied, r.bytes_copied)
            };
            println!(
                "backup holds every event up to seq {last_seq}: {linked} files linked, {copied} copied ({bytes} bytes)"
            );
            Ok(())
        }
        Cmd::Cursor { cmd } => {
            let mut c = client(&conn).await?;
            match cmd {
                CursorCmd::Get { name } => {
                    let r = c
                        .get_cursor(pb::GetCursorRequest { name: name.clone() })
                        .await
                        .map_err(status_err)?
                        .into_inner();
                    if !r.found {
                        return Err(format!("no cursor named {name:?}").into());
                    }
                    println!("{}", r.seq);
                }
                CursorCmd::Set { name, seq } => {
                    c.commit_cursor(pb::CommitCursorRequest { name, seq })
                        .await
                        .map_err(status_err)?;
                }
                CursorCmd::List => {
                    let r = c
                        .list_cursors(pb::ListCursorsRequest {})
                        .await
                        .map_err(status_err)?
                        .into_inner();
                    for cur in r.cursors {
                        let lag = if cur.lagging { "\tlagging" } else { "" };
                        println!("{}\t{}{lag}", cur.name, cur.seq);
                    }
                }
            }
            Ok(())
        }
        Cmd::Verify { dir } => {
            let r = tokio::task::spawn_blocking(move || echolog::verify(&dir)).await??;
            for n in &r.notes {
                println!("note: {n}");
            }
            for p in &r.problems {
                println!(
                    "CORRUPT {} at offset {}: {}",
                    p.file.display(),
                    p.offset,
                    p.what
                );
            }
            println!(
                "checked {} segments, {} index files, {} cluster files, {} records, {} bytes: {}",
                r.segments,
                r.index_files,
                r.cluster_files,
                r.records,
                r.bytes_checked,
                if r.ok() {
                    "ok".to_string()
                } else {
                    format!("{} problems", r.problems.len())
                }
            );
            if r.ok() {
                Ok(())
            } else {
                Err(format!("{} corrupt places found", r.problems.len()).into())
            }
        }
        Cmd::Stats => {
            let mut c = client(&conn).await?;
            let r = c
                .stats(pb::StatsRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            println!("events      {}\nfirst_seq   {}\nlast_seq    {}\nsegments    {}\ndisk_bytes  {}\nraw_bytes   {}\ntombstones  {}\ncluster_files {}\ncompaction_backlog_segments {}\ncompaction_bytes_written {}\npurged_events {}\nid_filter_bytes {}\nid_filter_backlog_segments {}", r.events, r.first_seq, r.last_seq, r.segments, r.disk_bytes, r.raw_bytes, r.tombstones, r.cluster_files, r.compaction_backlog_segments, r.compaction_bytes_written, r.purged_events, r.id_filter_bytes, r.id_filter_backlog_segments);
            Ok(())
        }
    }
}

fn parse_line(line: &str) -> Result<pb::Event, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let entity = s("entity").ok_or("missing string field \"entity\"")?;
    let kind = s("kind").ok_or("missing string field \"kind\"")?;
    let ts = match v.get("ts") {
        None => 0,
        Some(t) => t
            .as_i64()
            .ok_or("\"ts\" must be an integer (ms since epoch)")?,
    };
    let tags = match v.get("tags") {
        None => Vec::new(),
        Some(t) => t
            .as_array()
            .ok_or("\"tags\" must be an array of strings")?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or("\"tags\" must be an array of strings")
            })
            .collect::<Result<_, _>>()?,
    };
    let payload = match (v.get("payload"), v.get("payload_base64")) {
        (_, Some(serde_json::Value::String(b))) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("\"payload_base64\" is not base64: {e}"))?
        }
        (_, Some(_)) => return Err("\"payload_base64\" must be a string".into()),
        (None, None) => Vec::new(),
        (Some(serde_json::Value::String(p)), None) => p.clone().into_bytes(),
        (Some(other), None) => other.to_string().into_bytes(),
    };
    Ok(pb::Event {
        entity,
        kind,
        ts,
        tags,
        payload: payload.into(),
        id: s("id").unwrap_or_default(),
        ..Default::default()
    })
}

/// One event as a JSON line `import` reads: the payload as a string when it is UTF-8, else
/// as `payload_base64`.
fn export_line(e: &pb::Event) -> serde_json::Value {
    let mut v = serde_json::json!({
        "entity": e.entity, "kind": e.kind, "ts": e.ts, "tags": e.tags,
    });
    match std::str::from_utf8(&e.payload) {
        Ok(s) => v["payload"] = serde_json::Value::String(s.to_owned()),
        Err(_) => {
            use base64::Engine;
            v["payload_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&e.payload)
                .into();
        }
    }
    if !e.id.is_empty() {
        v["id"] = e.id.clone().into();
    }
    v
}

async fn export(
    conn: &Conn,
    f: Filter,
    from_seq: u64,
    to_seq: Option<u64>,
    output: Option<PathBuf>,
) -> Result<(), BoxError> {
    let mut c = client(conn).await?;
    let last = match to_seq {
        Some(s) => s,
        None => {
            c.stats(pb::StatsRequest {})
                .await
                .map_err(status_err)?
                .into_inner()
                .last_seq
        }
    };
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = indicatif::ProgressBar::new(last.saturating_sub(from_seq) + 1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seqs {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut written = 0u64;
    if from_seq <= last {
        // Unfiltered, so that the stream itself shows when `last` is passed; filters apply here.
        // The stream ends once `last` is passed, even when purge erased `last` itself.
        let mut s = c
            .tail(pb::TailRequest {
                from_seq,
                to_seq: Some(last),
                ..Default::default()
            })
            .await
            .map_err(status_err)?
            .into_inner();
        'batches: while let Some(b) = s.message().await.map_err(status_err)? {
            for e in &b.events {
                if e.seq > last {
                    break 'batches;
                }
                bar.set_position(e.seq + 1 - from_seq);
                let wanted = f.from_ts.is_none_or(|t| e.ts >= t)
                    && f.to_ts.is_none_or(|t| e.ts < t)
                    && f.entity.as_ref().is_none_or(|x| *x == e.entity)
                    && f.kind.as_ref().is_none_or(|k| *k == e.kind)
                    && f.tags.iter().all(|t| e.tags.contains(t));
                if wanted && !e.kind.starts_with('$') {
                    writeln!(out, "{}", export_line(e))?;
                    written += 1;
                }
                if e.seq == last {
                    break 'batches;
                }
            }
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {written} events (seqs {}..={last})", from_seq);
    Ok(())
}

/// Appends one import batch; returns (events newly stored, duplicates).
async fn send_batch(
    c: &mut Client,
    events: Vec<pb::Event>,
    first_line: usize,
) -> Result<(u64, u64), BoxError> {
    let r = c
        .append(pb::AppendRequest { events })
        .await
        .map_err(|s| format!("batch starting at line {first_line}: {}", status_err(s)))?
        .into_inner();
    let dups = u64::from(r.duplicates);
    Ok((r.seqs.len() as u64 - dups, dups))
}

async fn import(conn: &Conn, file: PathBuf, batch: usize, strict: bool) -> Result<(), BoxError> {
    let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut c = client(conn).await?;
    let started = std::time::Instant::now();
    let (mut sent, mut dups, mut bad) = (0u64, 0u64, 0u64);
    let mut pending: Vec<pb::Event> = Vec::with_capacity(batch);
    let mut first_line = 1usize;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: line {}: {e}", file.display(), i + 1))?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(e) => {
                if pending.is_empty() {
                    first_line = i + 1;
                }
                pending.push(e)
            }
            Err(msg) if strict => {
                return Err(format!("{}: line {}: {msg}", file.display(), i + 1).into())
            }
            Err(msg) => {
                bar.suspend(|| eprintln!("{}: line {}: {msg} (skipped)", file.display(), i + 1));
                bad += 1;
            }
        }
        if pending.len() >= batch {
            let (n, d) = send_batch(&mut c, std::mem::take(&mut pending), first_line).await?;
            sent += n;
            dups += d;
        }
    }
    if !pending.is_empty() {
        let (n, d) = send_batch(&mut c, pending, first_line).await?;
        sent += n;
        dups += d;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!("imported {sent} events ({dups} duplicates, {bad} bad lines skipped) in {secs:.2}s: {:.0} events/s", sent as f64 / secs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_line_imports_back_to_the_same_event_binary_payloads_included() {
        for payload in [b"{\"a\":1}".to_vec(), vec![0xff, 0x00, 0xc3], Vec::new()] {
            let e = pb::Event {
                seq: 9,
                entity: "product:1".into(),
                kind: "price".into(),
                ts: -5,
                tags: vec!["b:2".into(), "a:1".into()],
                payload: payload.into(),
                id: "feed:1".into(),
                deleted_by: 0,
            };
            let line = export_line(&e).to_string();
            let back = parse_line(&line).unwrap();
            assert_eq!(
                back,
                pb::Event {
                    seq: 0,
                    ..e.clone()
                },
                "{line}"
            );
        }
    }
}
