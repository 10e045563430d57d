//! The HTTP/JSON API with a plain HTTP client: every endpoint, bad input, the rights, the SSE
//! tail, and counts equal to the gRPC Count's answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, CountRequest};

/// One HTTP/1.1 request; returns the status and the body.
fn http(base: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    // Chunked bodies: take the JSON between the chunk sizes.
    let body = if out
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines()
            .filter(|l| l.starts_with('{') || l.starts_with('['))
            .collect()
    } else {
        body
    };
    (status, body)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_with_rights_bad_input_and_a_live_tail() {
    let d = tempfile::tempdir().unwrap();
    let tokens = d.path().join("tokens");
    std::fs::write(&tokens, "r read\nw write\n").unwrap();
    let srv = Server::start_with(
        &d.path().join("data"),
        &["--tokens-file", tokens.to_str().unwrap()],
    );
    let h = srv.http_url.clone();
    let body = r#"{"events":[
        {"entity":"product:123","kind":"price_changed","ts":3600000,"tags":["tenant:t42"],"payload_json":{"old":12900,"new":11900},"id":"feed:1"},
        {"entity":"product:123","kind":"price_changed","ts":7200001,"tags":["tenant:t42"],"payload":"AAEC"}]}"#;
    assert_eq!(http(&h, "POST", "/api/v1/append", None, body).0, 401);
    let (st, b) = http(&h, "POST", "/api/v1/append", Some("r"), body);
    assert_eq!(st, 403, "{b}");
    assert_eq!(json(&b)["error"]["code"], "PermissionDenied");
    let (st, b) = http(&h, "POST", "/api/v1/append", Some("w"), body);
    assert_eq!(st, 200, "{b}");
    assert_eq!(json(&b)["seqs"], serde_json::json!([1, 2]));
    let (st, b) = http(&h, "POST", "/api/v1/append", Some("w"), body);
    assert_eq!(json(&b)["duplicates"], 1, "the id is idempotent: {st} {b}");

    // Bad input names the field.
    let big = format!(
        r#"{{"events":[{{"entity":"x","kind":"k","payload_json":"{}"}}]}}"#,
        "y".repeat(70_000)
    );
    let (st, b) = http(&h, "POST", "/api/v1/append", Some("w"), &big);
    assert!(st == 429 && b.contains("--message-bytes-max"), "{st} {b}");
    let (st, b) = http(&h, "POST", "/api/v1/append", Some("w"), "{not json");
    assert_eq!(st, 400, "{b}");
    let (st, b) = http(
        &h,
        "POST",
        "/api/v1/append",
        Some("w"),
        r#"{"events":[{"entity":"","kind":"k"}]}"#,
    );
    assert!(st == 400 && b.contains("entity"), "{st} {b}");
    let (st, b) = http(
        &h,
        "GET",
        "/api/v1/history?entity=x&from_ts=5&to_ts=1",
        Some("r"),
        "",
    );
    assert!(st == 400 && b.contains("from_ts"), "{st} {b}");
    let (st, b) = http(&h, "GET", "/api/v1/count?bucket=week", Some("r"), "");
    assert!(st == 400 && b.contains("bucket"), "{st} {b}");

    // History: newest first, payload as base64 and, when JSON, inlined.
    let (st, b) = http(
        &h,
        "GET",
        "/api/v1/history?entity=product:123&reverse=true",
        Some("r"),
        "",
    );
    assert_eq!(st, 200, "{b}");
    let v = json(&b);
    let evs = v["events"].as_array().unwrap();
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2]["payload_json"]["new"], 11900);
    assert_eq!(evs[2]["id"], "feed:1");
    assert_eq!(evs[0]["payload"], "AAEC");
    assert!(evs[0].get("payload_json").is_none());

    // Count equals the gRPC answer.
    let (st, b) = http(
        &h,
        "GET",
        "/api/v1/count?tag=tenant:t42&bucket=hour&from_ts=0",
        Some("r"),
        "",
    );
    assert_eq!(st, 200, "{b}");
    let v = json(&b);
    let mut ch = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let mut req = tonic::Request::new(CountRequest {
        tags: vec!["tenant:t42".into()],
        bucket: pb::Bucket::Hour as i32,
        from_ts: Some(0),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", "Bearer r".parse().unwrap());
    let g = ch.count(req).await.unwrap().into_inner();
    assert_eq!(v["total"], g.total);
    let http_buckets: Vec<(i64, u64)> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start_ts"].as_i64().unwrap(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let grpc_buckets: Vec<(i64, u64)> = g.buckets.iter().map(|b| (b.start_ts, b.count)).collect();
    assert_eq!(http_buckets, grpc_buckets);
    assert_eq!(http_buckets, vec![(3_600_000, 1), (7_200_000, 2)]);

    let (st, b) = http(&h, "GET", "/api/v1/stats", Some("r"), "");
    assert_eq!(st, 200);
    assert_eq!(json(&b)["last_seq"], 3);

    // Tail as Server-Sent Events: what exists, then what is appended while watching.
    let addr = h.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /api/v1/tail?from_seq=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer r\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (st, _) = http(
        &h,
        "POST",
        "/api/v1/append",
        Some("w"),
        r#"{"events":[{"entity":"late","kind":"k","ts":5}]}"#,
    );
    assert_eq!(st, 200);
    let mut seqs = Vec::new();
    let mut line = String::new();
    while seqs.len() < 2 {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            seqs.push(json(data.trim())["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![3, 4]);
    console_files(&h);
    srv.stop();
}

/// The console's files need no token (they hold no data) and carry a content security policy.
fn console_files(base: &str) {
    let get = |path: &str| {
        let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let index = get("/");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    let lower = index.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{index}");
    assert!(
        lower.contains("content-security-policy: default-src 'self'"),
        "{index}"
    );
    assert!(lower.contains("x-content-type-options: nosniff"), "{index}");
    assert!(index.contains("<title>echolog console</title>"));
    let js = get("/console/app.js");
    assert!(
        js.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{js}"
    );
    assert!(get("/console/vendor/uplot/uPlot.iife.min.js").starts_with("HTTP/1.1 200"));
    assert!(get("/console/../Cargo.toml").starts_with("HTTP/1.1 404"));
    assert!(get("/console/nope.js").starts_with("HTTP/1.1 404"));
}

/// A history response stops at about 16 MiB of events and says where to go on; paging on
/// returns every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_large_events_pages_by_bytes() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        &d.path().join("data"),
        &[
            "--payload-bytes-max",
            "100000",
            "--message-bytes-max",
            "1000000",
        ],
    );
    let h = srv.http_url.clone();
    let payload = "z".repeat(50_000);
    let n = 400;
    for i in 0..n {
        let body = format!(
            r#"{{"events":[{{"entity":"big:1","kind":"blob","ts":{i},"payload_json":"{payload}"}}]}}"#
        );
        let (st, b) = http(&h, "POST", "/api/v1/append", None, &body);
        assert_eq!(st, 200, "{b}");
    }
    let mut seqs = Vec::new();
    let mut pages = 0;
    let mut after = 0u64;
    loop {
        let path = format!("/api/v1/history?entity=big:1&after_seq={after}");
        let (st, b) = http(&h, "GET", &path, None, "");
        assert_eq!(st, 200);
        let v = json(&b);
        let events = v["events"].as_array().unwrap();
        assert!(!events.is_empty());
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        pages += 1;
        match v.get("next_after_seq") {
            Some(next) => {
                assert!(events.len() < n, "a page under the byte bound is whole");
                after = next.as_u64().unwrap();
            }
            None => break,
        }
    }
    assert!(pages >= 2, "20 MB of events do not fit one response");
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    srv.stop();
}
