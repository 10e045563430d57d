//! Purge through a real server: the admin right, the grace, what History, Tail and Count see
//! afterwards, and the CLI.

mod common;

use std::time::Duration;

use common::{Events, Server};
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, DeleteRequest, HistoryRequest, PurgeRequest};
use tonic::Code;

fn with<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn event(i: u64) -> pb::Event {
    pb::Event {
        entity: format!("e{}", i % 5),
        kind: "k".into(),
        ts: 1_700_000_000_000 + i as i64,
        payload: format!("{{\"i\":{i},\"pad\":\"abcdefghijklmnopqrstuvwxyz0123456789\"}}")
            .into_bytes()
            .into(),
        ..Default::default()
    }
}

async fn history(c: &mut EventStoreClient<tonic::transport::Channel>, entity: &str) -> Vec<u64> {
    let r = HistoryRequest {
        entity: entity.into(),
        include_deleted: true,
        ..Default::default()
    };
    let s = c.history(with("r", r)).await.unwrap().into_inner();
    Events::new(s)
        .collect()
        .await
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_admin_erases_old_deletes_and_tail_and_history_step_over_them() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let tokens = d.path().join("tokens");
    std::fs::write(&tokens, "r read\nw read,write\nboss read,write,admin\n").unwrap();
    let srv = Server::start_with(
        &data,
        &[
            "--segment-size-bytes",
            "4096",
            "--tokens-file",
            tokens.to_str().unwrap(),
        ],
    );
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    for k in 0..10u64 {
        let events = (k * 50..(k + 1) * 50).map(event).collect();
        c.append(with("w", AppendRequest { events })).await.unwrap();
    }
    let del = DeleteRequest {
        entity: "e1".into(),
        reason: "gdpr".into(),
        ..Default::default()
    };
    let tomb = c
        .delete(with("boss", del))
        .await
        .unwrap()
        .into_inner()
        .tombstone_seq;
    // Enough after the tombstone that it, and every e1 event, sits in sealed segments.
    for k in 10..20u64 {
        let events = (k * 50..(k + 1) * 50).map(event).collect();
        c.append(with("w", AppendRequest { events })).await.unwrap();
    }
    let e1_before = history(&mut c, "e1").await;
    assert_eq!(e1_before.len(), 100 + 1 + 100);

    for token in ["r", "w"] {
        let err = c
            .purge(with(
                token,
                PurgeRequest {
                    grace_seconds: Some(0),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token}: {err}");
    }
    let err = c
        .purge(with("boss", PurgeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("grace"), "{}", err.message());
    let young = c
        .purge(with(
            "boss",
            PurgeRequest {
                grace_seconds: Some(3600),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(young.events_purged, 0);

    let r = c
        .purge(with(
            "boss",
            PurgeRequest {
                grace_seconds: Some(0),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.events_purged, 100, "{r:?}");
    assert!(r.bytes_after < r.bytes_before, "{r:?}");
    let e1_after = history(&mut c, "e1").await;
    assert_eq!(
        e1_after[0], tomb,
        "only the tombstone and later events stay"
    );
    assert_eq!(e1_after.len(), 1 + 100);
    let st = c.stats(with("r", pb::StatsRequest {})).await.unwrap();
    assert_eq!(st.into_inner().purged_events, 100);

    // A tail from seq 1 steps over the purged seqs, then follows new appends live.
    let tail = c
        .tail(with(
            "r",
            pb::TailRequest {
                from_seq: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut tail = Events::new(tail);
    let last = 1001u64;
    let mut got = Vec::new();
    while got.last().is_none_or(|s| *s < last) {
        let e = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("the tail keeps going past purged seqs")
            .unwrap()
            .unwrap();
        got.push(e.seq);
    }
    assert_eq!(got.len(), 1001 - 100);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    let live = c
        .append(with(
            "w",
            AppendRequest {
                events: vec![event(7)],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .seqs[0];
    let e = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.seq, live);

    // A tail with an end stops once it is passed, even when its last seq was erased; so does
    // an export up to it.
    let erased_last = e1_before[..100].last().copied().unwrap();
    assert!(!e1_after.contains(&erased_last));
    let bounded = c
        .tail(with(
            "r",
            pb::TailRequest {
                from_seq: erased_last - 20,
                to_seq: Some(erased_last),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let got = tokio::time::timeout(Duration::from_secs(10), Events::new(bounded).collect())
        .await
        .expect("a tail with to_seq ends");
    assert!(!got.is_empty() && got.iter().all(|e| e.seq < erased_last));
    let to = erased_last.to_string();
    let (ok, out, err) = srv.cli(&["--token", "r", "export", "--to-seq", &to]);
    assert!(ok, "{err}");
    // Seqs 1..=erased_last hold 100 erased e1 events and nothing else erased.
    assert_eq!(out.lines().count() as u64, erased_last - 100);

    // The CLI: --now is required; a second pass finds nothing left.
    let (ok, _, err) = srv.cli(&["--token", "boss", "purge"]);
    assert!(!ok && err.contains("--now"), "{err}");
    let (ok, out, err) = srv.cli(&["--token", "boss", "purge", "--now", "--grace", "0s"]);
    assert!(ok, "{err}");
    assert!(out.contains("purged 0 events"), "{out}");
    srv.stop();
}
