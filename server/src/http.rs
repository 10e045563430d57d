//! The HTTP/JSON API under `/api/v1/` (`--http-listen`, default 127.0.0.1:8080): history, count,
//! stats, append, and tail as Server-Sent Events, with the gRPC calls' semantics, rights and
//! limits (the same tokens, as `Authorization: Bearer <token>`). Errors are JSON naming the
//! code and, through the engine's message, the field and the limit.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use echolog::{Bucket, CountQuery, HistoryQuery, Store};
use serde_json::{json, Value};
use tonic::Status;

use crate::auth::{Auth, Right};
use crate::limits::{self, EngineSlots};
use crate::pb;

/// Events one history response holds when the request sets no smaller limit; past it the
/// response says `next_after_seq` to page on.
pub const HTTP_HISTORY_EVENTS_MAX: u32 = 10_000;
/// Bytes of events one history response holds at most (past the event that reaches it, the
/// response says `next_after_seq`), so large payloads cannot make one response huge.
pub const HTTP_HISTORY_BYTES_MAX: u64 = 16 << 20;

#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub auth: Auth,
    pub slots: EngineSlots,
    pub committed: tokio::sync::watch::Receiver<u64>,
    pub closing: tokio::sync::watch::Receiver<bool>,
    pub message_bytes_max: usize,
}

pub fn router(state: HttpState) -> Router {
    // Bodies up to the message limit reach the handler, which answers larger ones itself.
    let body_max = state.message_bytes_max.saturating_mul(2);
    Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/history", get(history))
        .route("/api/v1/count", get(count))
        .route("/api/v1/append", post(append))
        .route("/api/v1/tail", get(tail))
        .layer(axum::extract::DefaultBodyLimit::max(body_max))
        .with_state(state)
        .merge(crate::console::router())
}

/// An error as JSON with the HTTP status matching its gRPC code.
struct ApiError(Status);

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError(s)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use tonic::Code;
        let code = self.0.code();
        let http = match code {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded | Code::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let name = format!("{code:?}");
        let body = json!({"error": {"code": name, "message": self.0.message()}});
        (http, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Query parameters, with repeated keys kept (`tag=a&tag=b`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Params {
        let raw = raw.unwrap_or_default();
        Params(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn str(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Status> {
        self.str(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| Status::invalid_argument(format!("{key}: {v:?} is not a number")))
            })
            .transpose()
    }
    fn flag(&self, key: &str) -> Result<bool, Status> {
        match self.str(key).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(v) => Err(Status::invalid_argument(format!(
                "{key}: {v:?} is not true or false"
            ))),
        }
    }
}

/// An event as JSON: the proto's JSON mapping (payload as base64) and, when the payload is
/// UTF-8 JSON, the same again inlined as `payload_json`.
pub fn event_json(e: &pb::Event) -> Value {
    let mut v = json!({
        "seq": e.seq, "entity": e.entity, "kind": e.kind, "ts": e.ts, "tags": e.tags,
        "payload": base64::engine::general_purpose::STANDARD.encode(&e.payload),
        "id": e.id, "deleted_by": e.deleted_by,
    });
    if let Ok(j) = serde_json::from_slice::<Value>(&e.payload) {
        v["payload_json"] = j;
    }
    v
}

impl HttpState {
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> echolog::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        self.slots.run(&self.store, f).await
    }
}

async fn stats(State(st): State<HttpState>, headers: HeaderMap) -> ApiResult {
    st.auth.check(&headers, Right::Read)?;
    let s = st.run(|s| s.stats()).await?;
    Ok(Json(json!({
        "events": s.events, "first_seq": s.first_seq, "last_seq": s.last_seq,
        "segments": s.segments, "disk_bytes": s.disk_bytes, "raw_bytes": s.raw_bytes,
        "tombstones": s.tombstones, "read_only": st.store.is_read_only(),
        "cluster_files": s.cluster_files,
        "compaction_backlog_segments": s.compaction_backlog_segments,
        "compaction_bytes_written": s.compaction_bytes_written,
        "purged_events": s.purged_events,
        "id_filter_bytes": s.id_filter_bytes,
        "id_filter_backlog_segments": s.id_filter_backlog_segments,
    }))
    .into_response())
}

async fn history(
    State(st): State<HttpState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    st.auth.check(&headers, Right::Read)?;
    let p = Params::parse(raw);
    let asked = p.num::<u32>("limit")?.unwrap_or(0);
    let limit = if asked == 0 || asked > HTTP_HISTORY_EVENTS_MAX {
        HTTP_HISTORY_EVENTS_MAX
    } else {
        asked
    };
    let q = HistoryQuery {
        entity: p.str("entity").unwrap_or_default(),
        from_ts: p.num("from_ts")?,
        to_ts: p.num("to_ts")?,
        after_seq: p.num("after_seq")?.unwrap_or(0),
        limit,
        reverse: p.flag("reverse")?,
        include_deleted: p.flag("include_deleted")?,
        bytes_max: HTTP_HISTORY_BYTES_MAX,
    };
    let events = st.run(move |s| s.history(&q)).await?;
    let held: u64 = events.iter().map(echolog::StoredEvent::size_bytes).sum();
    let cut_by_count = events.len() as u32 == limit && (asked == 0 || asked > limit);
    let cut_by_bytes =
        held >= HTTP_HISTORY_BYTES_MAX && (asked == 0 || events.len() < asked as usize);
    let full = cut_by_count || cut_by_bytes;
    let next = full.then(|| events.last().map(|e| e.seq)).flatten();
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| event_json(&crate::to_pb(e)))
        .collect();
    let mut body = json!({ "events": events });
    if let Some(n) = next {
        body["next_after_seq"] = n.into();
    }
    Ok(Json(body).into_response())
}

async fn count(
    State(st): State<HttpState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    st.auth.check(&headers, Right::Read)?;
    let p = Params::parse(raw);
    let bucket = match p.str("bucket").as_deref() {
        None | Some("none") => Bucket::None,
        Some("minute") => Bucket::Minute,
        Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "bucket: {other:?} is not one of none, minute, hour, day"
            ))
            .into())
        }
    };
    let q = CountQuery {
        entity: p.str("entity"),
        kind: p.str("kind"),
        tags: p.all("tag"),
        from_ts: p.num("from_ts")?,
        to_ts: p.num("to_ts")?,
        bucket,
        include_deleted: p.flag("include_deleted")?,
    };
    let r = st.run(move |s| s.count(&q)).await?;
    let buckets: Vec<Value> = r
        .buckets
        .iter()
        .map(|b| json!({"start_ts": b.start_ts, "count": b.count}))
        .collect();
    Ok(Json(json!({"total": r.total, "buckets": buckets})).into_response())
}

/// One event of an append body: the proto's JSON shape, the payload as base64 in `payload`
/// or as any JSON value in `payload_json` (stored as its text).
fn event_from_json(i: usize, v: &Value) -> Result<echolog::Event, Status> {
    let bad =
        |field: &str, what: &str| Status::invalid_argument(format!("event {i}: {field}: {what}"));
    let text = |k: &str| -> Result<String, Status> {
        match v.get(k) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(k, "must be a string")),
        }
    };
    let ts = match v.get("ts") {
        None => 0,
        Some(t) => t
            .as_i64()
            .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| bad("ts", "must be an integer (ms since the epoch)"))?,
    };
    let tags = match v.get("tags") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("tags", "must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("tags", "must be an array of strings")),
    };
    let payload = match (v.get("payload"), v.get("payload_json")) {
        (Some(_), Some(_)) => return Err(bad("payload", "give payload or payload_json, not both")),
        (Some(Value::String(b)), None) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| bad("payload", &format!("not base64: {e}")))?,
        (Some(_), None) => return Err(bad("payload", "must be a base64 string")),
        (None, Some(j)) => j.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    let id = text("id")?;
    Ok(echolog::Event {
        entity: text("entity")?,
        kind: text("kind")?,
        ts,
        tags,
        payload,
        id: (!id.is_empty()).then_some(id),
    })
}

async fn append(
    State(st): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    st.auth.check(&headers, Right::Write)?;
    if body.len() > st.message_bytes_max {
        return Err(Status::resource_exhausted(format!(
            "request is {} bytes; the limit is {} (--message-bytes-max)",
            body.len(),
            st.message_bytes_max
        ))
        .into());
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Status::invalid_argument(format!("body: not JSON: {e}")))?;
    let list = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| Status::invalid_argument("events: the body must be {\"events\": [...]}"))?;
    let events = list
        .iter()
        .enumerate()
        .map(|(i, e)| event_from_json(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    let out = st.run(move |s| s.append(events)).await?;
    Ok(Json(json!({"seqs": out.seqs, "duplicates": out.duplicates})).into_response())
}

async fn tail(
    State(st): State<HttpState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    st.auth.check(&headers, Right::Read)?;
    let p = Params::parse(raw);
    let from = p.num::<u64>("from_seq")?.unwrap_or(1).max(1);
    let (entity, kind, tags) = (p.str("entity"), p.str("kind"), p.all("tag"));
    let (tx, rx) = limits::bounded::<Result<SseEvent, Infallible>>(4 << 20);
    tokio::spawn(async move {
        let mut next = from;
        loop {
            if *st.closing.borrow() {
                return;
            }
            let at = next;
            let page = match st.run(move |s| s.read_durable_page(at, 256)).await {
                Ok(p) => p,
                Err(_) => return,
            };
            let batch = page.events;
            if batch.is_empty() && page.next_seq > next {
                // Only seqs purge removed: go on past them.
                next = page.next_seq;
                continue;
            }
            if batch.is_empty() {
                if tx.is_closed() {
                    return;
                }
                let mut committed = st.committed.clone();
                let after = next - 1;
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    committed.wait_for(|last| *last > after),
                )
                .await;
                continue;
            }
            for e in batch {
                next = e.seq + 1;
                let ev = &e.event;
                let matches = entity.as_ref().is_none_or(|x| *x == ev.entity)
                    && kind.as_ref().is_none_or(|k| *k == ev.kind)
                    && tags.iter().all(|t| ev.tags.contains(t));
                if !matches {
                    continue;
                }
                let data = event_json(&crate::to_pb(e)).to_string();
                let len = data.len();
                if !tx.send(Ok(SseEvent::default().data(data)), len).await {
                    return;
                }
            }
            next = next.max(page.next_seq);
        }
    });
    Ok(Sse::new(rx)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
