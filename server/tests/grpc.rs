//! Integration tests through a real `echolog serve` process on 127.0.0.1 (ephemeral port),
//! with a generated gRPC client, and the CLI subcommands run as processes.

mod common;

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{
    self, AppendRequest, CountRequest, DeleteRequest, HistoryRequest, RestoreRequest, StatsRequest,
    TailRequest,
};
use tonic::Code;

fn ev(entity: &str, kind: &str, ts: i64, tags: &[&str], id: &str) -> pb::Event {
    pb::Event {
        entity: entity.into(),
        kind: kind.into(),
        ts,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        payload: b"{\"x\":1}".to_vec().into(),
        id: id.into(),
        ..Default::default()
    }
}

async fn collect(s: tonic::Streaming<pb::EventBatch>) -> Vec<pb::Event> {
    common::Events::new(s).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_works_through_a_real_server_and_data_survives_restart() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();

    // Append, with a duplicate id in the batch and one already stored.
    let r = c
        .append(AppendRequest {
            events: vec![
                ev("p:1", "price", 60_001, &["tenant:a"], "i1"),
                ev("p:1", "price", 120_001, &["tenant:a"], ""),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seqs, vec![1, 2]);
    let r = c
        .append(AppendRequest {
            events: vec![
                ev("p:1", "price", 5, &[], "i1"),
                ev("p:2", "link", 3_600_001, &["tenant:b"], "i2"),
                ev("p:2", "link", 3_600_002, &[], "i2"),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.seqs, r.duplicates), (vec![1, 3, 3], 2));

    // Streaming appends: one response per request, in order.
    let reqs = (0..3).map(|i| AppendRequest {
        events: vec![ev("p:3", "s", 10 + i, &[], "")],
    });
    let mut out = c
        .append_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(r) = out.message().await.unwrap() {
        seqs.extend(r.seqs);
    }
    assert_eq!(seqs, vec![4, 5, 6]);

    // History, exactly as appended.
    let h = collect(
        c.history(HistoryRequest {
            entity: "p:1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(h.len(), 2);
    assert_eq!(
        (
            h[0].seq,
            h[0].ts,
            h[0].tags.clone(),
            h[0].payload.clone(),
            h[0].id.clone()
        ),
        (
            1,
            60_001,
            vec!["tenant:a".to_string()],
            bytes::Bytes::from_static(b"{\"x\":1}"),
            "i1".to_string()
        )
    );
    let h = collect(
        c.history(HistoryRequest {
            entity: "p:3".into(),
            reverse: true,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(h.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 5]);
    assert!(collect(
        c.history(HistoryRequest {
            entity: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    )
    .await
    .is_empty());

    // Count per minute.
    let r = c
        .count(CountRequest {
            tags: vec!["tenant:a".into()],
            bucket: pb::Bucket::Minute as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total, 2);
    assert_eq!(
        r.buckets
            .iter()
            .map(|b| (b.start_ts, b.count))
            .collect::<Vec<_>>(),
        vec![(60_000, 1), (120_000, 1)]
    );

    // Count's bounds: absent is open, 0 is the instant 0 (not "open"), half-open.
    let count = |from_ts: Option<i64>, to_ts: Option<i64>| {
        let mut c = c.clone();
        async move {
            c.count(CountRequest {
                tags: vec!["tenant:a".into()],
                from_ts,
                to_ts,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().total)
        }
    };
    assert_eq!(count(None, None).await.unwrap(), 2);
    assert_eq!(count(Some(-1_000_000), Some(0)).await.unwrap(), 0);
    assert_eq!(count(Some(0), None).await.unwrap(), 2);
    assert_eq!(count(None, Some(60_001)).await.unwrap(), 0, "half-open");
    assert_eq!(count(None, Some(60_002)).await.unwrap(), 1);
    assert_eq!(count(Some(120_001), None).await.unwrap(), 1);
    assert_eq!(count(Some(120_001), Some(120_001)).await.unwrap(), 0);
    let e = count(Some(5), Some(0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("from_ts"), "{e:?}");

    // Delete, include_deleted, restore.
    let t = c
        .delete(DeleteRequest {
            entity: "p:1".into(),
            seqs: vec![],
            reason: "gone".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tombstone_seq;
    assert_eq!(t, 7);
    assert!(collect(
        c.history(HistoryRequest {
            entity: "p:1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    )
    .await
    .is_empty());
    let h = collect(
        c.history(HistoryRequest {
            entity: "p:1".into(),
            include_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(h[0].deleted_by, 7);
    assert!(h[0].tags.contains(&"reason:gone".to_string()));
    assert_eq!(
        c.count(CountRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        4
    );
    let r = c
        .restore(RestoreRequest {
            entity: "p:1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seq, 8);
    let e = c
        .delete(DeleteRequest {
            entity: String::new(),
            seqs: vec![999],
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Tail from a seq includes it, then follows new commits.
    let mut tail = common::Events::new(
        c.tail(TailRequest {
            from_seq: 7,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(tail.next().await.unwrap().unwrap().seq, 7);
    assert_eq!(tail.next().await.unwrap().unwrap().seq, 8);
    c.append(AppendRequest {
        events: vec![ev("p:9", "late", 1, &[], "")],
    })
    .await
    .unwrap();
    assert_eq!(
        tail.next().await.unwrap().unwrap().seq,
        9,
        "a live tail sends at once"
    );

    let s = c.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!((s.events, s.last_seq), (9, 9));
    drop(tail);
    drop(c);
    srv.stop();

    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let s = c.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(s.last_seq, 9, "data intact after restart");
    let h = collect(
        c.history(HistoryRequest {
            entity: "p:1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(h.len(), 2, "restored events are live after restart");
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field_and_stores_nothing() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(&str, pb::Event)> = vec![
        ("entity", ev("", "k", 1, &[], "")),
        ("entity", ev(&long(257), "k", 1, &[], "")),
        ("entity", ev("a\u{7}b", "k", 1, &[], "")),
        ("kind", ev("e", "", 1, &[], "")),
        ("kind", ev("e", &long(129), 1, &[], "")),
        ("kind", ev("e", "$delete", 1, &[], "")),
        ("tags", ev("e", "k", 1, &["t"; 33], "")),
        ("tags[0]", ev("e", "k", 1, &[""], "")),
        ("tags[0]", ev("e", "k", 1, &[&long(257)], "")),
        ("ts", ev("e", "k", i64::MIN, &[], "")),
        ("id", ev("e", "k", 1, &[], &long(129))),
        (
            "payload",
            pb::Event {
                payload: vec![0; 4097].into(),
                ..ev("e", "k", 1, &[], "")
            },
        ),
    ];
    for (field, bad) in cases {
        let e = c
            .append(AppendRequest {
                events: vec![ev("ok", "k", 1, &[], ""), bad],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {}", e.message());
        assert!(
            e.message().contains(field) && e.message().contains("event 1"),
            "{field}: {}",
            e.message()
        );
    }
    let big: Vec<pb::Event> = (0..100)
        .map(|_| pb::Event {
            payload: vec![b'x'; 1000].into(),
            ..ev("e", "k", 1, &[], "")
        })
        .collect();
    let e = c.append(AppendRequest { events: big }).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("65536"), "{}", e.message());
    let e = c
        .count(CountRequest {
            bucket: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("bucket"), "{}", e.message());
    let e = c
        .history(HistoryRequest {
            entity: "e".into(),
            from_ts: Some(5),
            to_ts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .count(CountRequest {
            from_ts: Some(5),
            to_ts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        c.stats(StatsRequest {}).await.unwrap().into_inner().events,
        0,
        "nothing stored"
    );
    srv.stop();
}

#[test]
fn cli_subcommands_work_against_a_running_server() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let (ok, out, err) = srv.cli(&[
        "append",
        "--entity",
        "product:1",
        "--kind",
        "price",
        "--ts",
        "1000",
        "--tag",
        "tenant:t1",
        "--payload",
        "{\"p\":1}",
    ]);
    assert!(ok && out.contains("seq 1"), "{out}{err}");
    let jsonl = d.path().join("in.jsonl");
    std::fs::write(&jsonl, "{\"entity\":\"product:1\",\"kind\":\"price\",\"ts\":2000,\"tags\":[\"tenant:t1\"]}\nnot json\n{\"entity\":\"product:2\",\"kind\":\"link\",\"ts\":3000}\n").unwrap();
    let (ok, out, err) = srv.cli(&["import", jsonl.to_str().unwrap()]);
    assert!(
        ok && out.contains("imported 2 events") && err.contains("line 2"),
        "{out}{err}"
    );
    let (ok, _, err) = srv.cli(&["import", "--strict", jsonl.to_str().unwrap()]);
    assert!(!ok && err.contains("line 2"), "{err}");
    let (ok, out, _) = srv.cli(&["history", "product:1", "--json"]);
    assert!(
        ok && out.lines().count() == 2 && out.contains("\"seq\":1"),
        "{out}"
    );
    let (ok, out, _) = srv.cli(&["history", "product:1"]);
    assert!(ok && out.contains("price"), "{out}");
    let (ok, out, _) = srv.cli(&[
        "count",
        "--tag",
        "tenant:t1",
        "--bucket",
        "minute",
        "--json",
    ]);
    assert!(ok && out.contains("\"total\":2"), "{out}");
    let (ok, out, _) = srv.cli(&["count"]);
    assert!(ok && out.contains("total 3"), "{out}");
    let (ok, out, _) = srv.cli(&["delete", "--entity", "product:1", "--reason", "gone"]);
    assert!(ok && out.contains("tombstone seq 4"), "{out}");
    let (ok, out, _) = srv.cli(&["restore", "product:1"]);
    assert!(ok && out.contains("restore seq 5"), "{out}");
    let (ok, out, _) = srv.cli(&["tail", "--from-seq", "4", "--count", "2"]);
    assert!(
        ok && out.contains("$delete") && out.contains("$restore"),
        "{out}"
    );
    let (ok, out, _) = srv.cli(&["stats"]);
    assert!(
        ok && out.contains("last_seq    5") && out.contains("first_seq   1"),
        "{out}"
    );
    let (ok, _, err) = srv.cli(&["append", "--entity", "", "--kind", "k"]);
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("entity"),
        "{err}"
    );
    // Cursors, and a tail that resumes from one and commits as it goes.
    let (ok, _, err) = srv.cli(&["cursor", "set", "ops.x", "2"]);
    assert!(ok, "{err}");
    let (ok, out, _) = srv.cli(&["cursor", "get", "ops.x"]);
    assert!(ok && out.trim() == "2", "{out}");
    let (ok, _, err) = srv.cli(&["cursor", "set", "ops.x", "99"]);
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("last_seq + 1"),
        "{err}"
    );
    let (ok, _, err) = srv.cli(&["cursor", "get", "nobody"]);
    assert!(!ok && err.contains("no cursor"), "{err}");
    let (ok, out, _) = srv.cli(&["tail", "--cursor", "t1", "--count", "2"]);
    assert!(
        ok && out.contains("\"seq\":1") && out.contains("\"seq\":2"),
        "{out}"
    );
    let (ok, out, _) = srv.cli(&["tail", "--cursor", "t1", "--count", "1"]);
    assert!(
        ok && out.contains("\"seq\":3") && !out.contains("\"seq\":1,"),
        "{out}"
    );
    let (ok, out, _) = srv.cli(&["cursor", "list"]);
    assert!(
        ok && out.contains("ops.x\t2") && out.contains("t1\t4"),
        "{out}"
    );
    let dir = d.path().to_str().unwrap();
    let (ok, _, err) = common::cli(&[], &["verify", dir]);
    assert!(
        !ok && err.contains("locked"),
        "verify refuses a running store: {err}"
    );
    srv.stop();
    let (ok, out, err) = common::cli(&[], &["verify", dir]);
    assert!(
        ok && out.contains("records") && out.contains(": ok"),
        "{out}{err}"
    );
    // Damage the first block: later durable commits make it corruption, named with file
    // and offset, and the exit code says so.
    let seg = d.path().join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let (ok, out, _) = common::cli(&[], &["verify", dir]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("CORRUPT") && out.contains("00000000000000000001.seg at offset 32"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_v1_and_v1alpha_answer() {
    use tokio_stream::StreamExt;
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let channel = tonic::transport::Endpoint::from_shared(srv.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "echolog.v1.EventStore".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1 as r1;
    let mut refl = r1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        msg.message_response
    else {
        panic!("no service list")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "echolog.v1.EventStore"),
        "{:?}",
        list.service
    );

    use tonic_reflection::pb::v1alpha as ra;
    let mut refl = ra::server_reflection_client::ServerReflectionClient::new(channel);
    let req = ra::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(ra::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    assert!(matches!(
        msg.message_response,
        Some(ra::server_reflection_response::MessageResponse::ListServicesResponse(_))
    ));
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_open_tails() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    c.append(AppendRequest {
        events: vec![ev("a", "k", 1, &[], "")],
    })
    .await
    .unwrap();
    let mut tail = common::Events::new(c.tail(TailRequest::default()).await.unwrap().into_inner());
    assert_eq!(tail.next().await.unwrap().unwrap().seq, 1);
    // The tail stays open; SIGTERM must still stop the server cleanly.
    let stopper = std::thread::spawn(move || srv.stop());
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match tail.next().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("tail ends within 10 s of SIGTERM");
    if let Err(status) = end {
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }
    // stop() asserts the server exited 0.
    stopper.join().unwrap();
}

/// Files of the data directory whose names end with `ext`, sorted.
fn files_ending(dir: &std::path::Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_seals_the_active_segment_past_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(d.path(), &["--seal-at-close-bytes-min", "1"]);
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let events = (0..10).map(|i| ev("a", "k", 1 + i, &[], "")).collect();
    c.append(AppendRequest { events }).await.unwrap();
    assert!(files_ending(d.path(), ".idx").is_empty());
    srv.stop();
    // The first segment was sealed on the way out; appends go to a new one.
    assert_eq!(
        files_ending(d.path(), ".idx"),
        vec!["00000000000000000001.idx"]
    );
    assert_eq!(
        files_ending(d.path(), ".seg"),
        vec!["00000000000000000001.seg", "00000000000000000011.seg"]
    );
    // With the default bound (2 MiB) one small event is left for the next open to rebuild.
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    c.append(AppendRequest {
        events: vec![ev("a", "k", 11, &[], "")],
    })
    .await
    .unwrap();
    let h = collect(
        c.history(HistoryRequest {
            entity: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(
        h.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    srv.stop();
    assert_eq!(files_ending(d.path(), ".idx").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_stream_in_pages_in_both_directions() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    for b in 0..5 {
        let events = (0..500)
            .map(|i| ev("big", "k", 1 + b * 500 + i, &[], ""))
            .collect();
        c.append(AppendRequest { events }).await.unwrap();
    }
    let mut s = common::Events::new(
        c.history(HistoryRequest {
            entity: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    let mut all = Vec::new();
    while let Some(e) = s.next().await.unwrap() {
        all.push(e);
    }
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=2500).collect::<Vec<u64>>()
    );
    // Events come many to a message (bounded by bytes and count), not one message each.
    assert!(s.batches < 30, "2500 events in {} messages", s.batches);
    let rev = collect(
        c.history(HistoryRequest {
            entity: "big".into(),
            reverse: true,
            limit: 1500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(
        rev.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1001..=2500).rev().collect::<Vec<u64>>()
    );
    let tail = collect(
        c.history(HistoryRequest {
            entity: "big".into(),
            after_seq: 1200,
            limit: 1001,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1201..=2201).collect::<Vec<u64>>()
    );
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_through_the_server_moves_first_seq_and_flags_lagging_cursors() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        d.path(),
        &["--segment-size-bytes", "4096", "--retention-bytes", "20000"],
    );
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    c.append(AppendRequest {
        events: vec![ev("a", "k", 1, &[], "")],
    })
    .await
    .unwrap();
    c.commit_cursor(pb::CommitCursorRequest {
        name: "slow".into(),
        seq: 1,
    })
    .await
    .unwrap();
    for i in 0..1500 {
        let e = ev(&format!("e{}", i % 4), "k", 10 + i, &["tenant:a"], "");
        c.append(AppendRequest { events: vec![e] }).await.unwrap();
    }
    let s = c.stats(StatsRequest {}).await.unwrap().into_inner();
    assert!(s.first_seq > 1 && s.disk_bytes <= 20_000 + 8192, "{s:?}");
    let mut tail = common::Events::new(
        c.tail(TailRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(
        tail.next().await.unwrap().unwrap().seq,
        s.first_seq,
        "a tail from before starts at first_seq"
    );
    let list = c
        .list_cursors(pb::ListCursorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .cursors;
    assert!(
        list.iter().any(|x| x.name == "slow" && x.lagging),
        "{list:?}"
    );
    drop(tail);
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_stream_pipelines_requests_and_stops_at_the_first_refused_one() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    // 2,000 requests sent without waiting for answers: answered in order, seqs dense, and
    // sharing group commits (far fewer commits than requests).
    let reqs: Vec<AppendRequest> = (0..2000)
        .map(|i| AppendRequest {
            events: vec![ev(&format!("p:{}", i % 9), "s", 1 + i, &[], "")],
        })
        .collect();
    let mut out = c
        .append_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(r) = out.message().await.unwrap() {
        assert_eq!(r.seqs.len(), 1);
        seqs.extend(r.seqs);
    }
    assert_eq!(seqs, (1..=2000).collect::<Vec<u64>>());

    // A bad request in the middle: those before it are answered and stored, then its error,
    // then the end; those after it are never stored.
    let mut reqs: Vec<AppendRequest> = (0..5)
        .map(|i| AppendRequest {
            events: vec![ev("q:1", "s", 1 + i, &[], "")],
        })
        .collect();
    reqs.insert(
        3,
        AppendRequest {
            events: vec![ev("", "s", 1, &[], "")],
        },
    );
    let mut out = c
        .append_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let err = loop {
        match out.message().await {
            Ok(Some(r)) => got.extend(r.seqs),
            Ok(None) => panic!("the stream ended without the error"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, vec![2001, 2002, 2003]);
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("entity"), "{}", err.message());
    let st = c.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(
        st.last_seq, 2003,
        "nothing after the refused request was stored"
    );
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_stream_pipelining_is_bounded_in_bytes_and_still_answers_everything() {
    let d = tempfile::tempdir().unwrap();
    // 64 KiB of queued requests per stream: one ~40 KB request at a time.
    let srv = Server::start_with(d.path(), &["--stream-bytes-max", "65536"]);
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let big = |i: i64| pb::Event {
        payload: vec![b'x'; 4000].into(),
        ..ev("big", "s", 1 + i, &[], "")
    };
    let reqs: Vec<AppendRequest> = (0..50)
        .map(|k| AppendRequest {
            events: (0..10).map(|i| big(k * 10 + i)).collect(),
        })
        .collect();
    let mut out = c
        .append_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(r) = out.message().await.unwrap() {
        seqs.extend(r.seqs);
    }
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    srv.stop();
}
