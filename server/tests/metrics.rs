//! Prometheus metrics, scraped from a real server: RPC counts, errors by code and latency,
//! fsync and group-commit histograms, appended events, block cache, store sizes, read-only flag.

mod common;

use std::io::{Read, Write};

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, HistoryRequest};

fn scrape(url: &str) -> String {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

/// The value of the first sample line starting with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_with_rpc_engine_and_store_figures() {
    let d = tempfile::tempdir().unwrap();
    let mut srv = Server::start_with(d.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let line = srv.read_line();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.ends_with("/metrics"), "{line}");
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    for i in 0..10 {
        let e = pb::Event {
            entity: format!("e{}", i % 2),
            kind: "k".into(),
            ts: 1000 + i,
            ..Default::default()
        };
        c.append(AppendRequest { events: vec![e] }).await.unwrap();
    }
    let bad = c
        .history(HistoryRequest {
            entity: String::new(),
            ..Default::default()
        })
        .await;
    assert!(bad.is_err());
    c.history(HistoryRequest {
        entity: "e1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let text = scrape(&url);
    assert_eq!(
        value(&text, "echolog_rpc_requests_total{method=\"Append\"}"),
        10.0
    );
    assert_eq!(
        value(
            &text,
            "echolog_rpc_errors_total{code=\"InvalidArgument\",method=\"History\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "echolog_rpc_duration_seconds_count{method=\"Append\"}"
        ),
        10.0
    );
    assert!(value(&text, "echolog_fsync_duration_seconds_count") >= 10.0);
    assert_eq!(value(&text, "echolog_group_commit_records_sum"), 10.0);
    assert_eq!(value(&text, "echolog_appended_events_total"), 10.0);
    assert!(value(&text, "echolog_appended_raw_bytes_total") > 0.0);
    assert!(value(&text, "echolog_block_cache_misses_total") >= 1.0);
    assert_eq!(value(&text, "echolog_last_seq"), 10.0);
    assert_eq!(value(&text, "echolog_events"), 10.0);
    assert_eq!(value(&text, "echolog_segments"), 1.0);
    assert!(value(&text, "echolog_disk_bytes") > 0.0);
    assert_eq!(value(&text, "echolog_read_only"), 0.0);
    // Nothing is sealed yet: nothing to compact.
    assert_eq!(value(&text, "echolog_compaction_backlog_segments"), 0.0);
    assert_eq!(value(&text, "echolog_cluster_files"), 0.0);
    assert_eq!(value(&text, "echolog_compaction_written_bytes_total"), 0.0);
    // Nothing sealed: the id filter has nothing to cover and holds no memory.
    assert_eq!(value(&text, "echolog_id_filter_bytes"), 0.0);
    assert_eq!(value(&text, "echolog_id_filter_backlog_segments"), 0.0);
    srv.stop();
}
