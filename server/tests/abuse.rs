//! Bounded resources under abuse, through a real server: a flood of streams opened and reset
//! at once (HTTP/2 rapid reset), 200 stalled Tail readers, 64 clients sending oversize or
//! malformed requests or raw garbage, idle and excess connections, and a saturated engine. The
//! server's resident memory stays under a stated bound and a well-behaved producer's appends
//! keep succeeding throughout.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, HistoryRequest, TailRequest};
use tonic::transport::Channel;
use tonic::Code;

fn rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn event(i: u64, payload: usize) -> pb::Event {
    pb::Event {
        entity: format!("e{}", i % 10),
        kind: "k".into(),
        ts: 1000 + i as i64,
        payload: vec![b'x' + (i % 3) as u8; payload].into(),
        ..Default::default()
    }
}

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Appends single events for as long as `until` says, every one of which must succeed
/// quickly. Returns how many went through.
async fn producer(url: String, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut c = EventStoreClient::new(channel(&url).await);
    let mut n = 0;
    while !*stop.borrow() {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.append(AppendRequest {
                events: vec![event(1_000_000 + n, 100)],
            }),
        )
        .await;
        let r = r.unwrap_or_else(|_| panic!("an append took over 5 s under abuse"));
        r.unwrap_or_else(|e| panic!("a well-behaved append failed under abuse: {e:?}"));
        assert!(started.elapsed() < Duration::from_secs(5));
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

/// Server RSS bound for these tests, MiB: 200 stalled streams at --stream-bytes-max 256 KiB
/// plus HTTP/2 buffers, with room for the allocator.
const RSS_MIB_MAX: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_stalled_readers_hold_their_bounds_while_a_producer_appends() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(d.path(), &["--stream-bytes-max", "262144"]);
    let pid = srv.child.id();
    let url = srv.url.clone();
    // 4 MiB of events to tail.
    let mut c = EventStoreClient::new(channel(&url).await);
    for b in 0..100 {
        let events = (0..10).map(|i| event(b * 10 + i, 4000)).collect();
        c.append(AppendRequest { events }).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let prod = tokio::spawn(producer(url.clone(), stop_rx));

    // 200 Tail readers that never read, over 4 connections (128 streams per connection max).
    let mut stalled = Vec::new();
    for k in 0..4 {
        let ch = channel(&url).await;
        for _ in 0..50 {
            let mut c = EventStoreClient::new(ch.clone());
            let r = c
                .tail(TailRequest {
                    from_seq: 1,
                    ..Default::default()
                })
                .await;
            stalled.push((c, r.unwrap()));
        }
        let _ = k;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_stalled = rss_mib(pid);
    println!("abuse: server RSS with 200 stalled tails: {rss_stalled} MiB");
    assert!(rss_stalled < RSS_MIB_MAX, "{rss_stalled} MiB");

    // Rapid reset: 3000 streams opened and dropped at once.
    let ch = channel(&url).await;
    let mut flood = Vec::new();
    for _ in 0..3000 {
        let mut c = EventStoreClient::new(ch.clone());
        flood.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_millis(1),
                c.tail(TailRequest {
                    from_seq: 1,
                    ..Default::default()
                }),
            )
            .await;
        }));
    }
    for f in flood {
        let _ = f.await;
    }

    // 64 clients with oversize and malformed requests, and 16 sending raw garbage.
    let mut bad = Vec::new();
    for k in 0..64u64 {
        let url = url.clone();
        bad.push(tokio::spawn(async move {
            let mut c = EventStoreClient::new(channel(&url).await);
            for i in 0..10 {
                let oversize = AppendRequest {
                    events: vec![event(i, 100_000)],
                };
                let e = c.append(oversize).await.unwrap_err();
                assert!(
                    matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange),
                    "{e:?}"
                );
                let mut malformed = event(i, 10);
                malformed.entity = String::new();
                let e = c
                    .append(AppendRequest {
                        events: vec![malformed],
                    })
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::InvalidArgument);
                let e = c
                    .history(HistoryRequest {
                        entity: "x".into(),
                        from_ts: Some(5),
                        to_ts: Some(1),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::InvalidArgument);
            }
            k
        }));
    }
    let addr = url.trim_start_matches("http://").to_owned();
    for k in 0..16u8 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let _ = s.write_all(&[k; 4096]);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    for b in bad {
        b.await.unwrap();
    }
    let rss_after = rss_mib(pid);
    println!("abuse: server RSS after the floods: {rss_after} MiB");
    assert!(rss_after < RSS_MIB_MAX, "{rss_after} MiB");
    let _ = stop_tx.send(true);
    let appended = prod.await.unwrap();
    assert!(appended > 10, "the producer kept appending ({appended})");
    // A stalled reader resumes where it stopped and gets everything, in order. (The other
    // stalled streams go first: unread, they hold their connection's HTTP/2 window.)
    let (_, r) = stalled.pop().unwrap();
    drop(stalled);
    let mut s = common::Events::new(r.into_inner());
    for want in 1..=1000u64 {
        let e = s.next().await.unwrap().unwrap();
        assert_eq!(e.seq, want);
    }
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_excess_connections_are_closed() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        d.path(),
        &["--connections-max", "3", "--idle-timeout-ms", "300"],
    );
    let addr = srv.url.trim_start_matches("http://").to_owned();
    // Reads (the server's HTTP/2 settings, if any) until the server closes, or `within` passes.
    let closed = |s: &mut std::net::TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) if Instant::now() < deadline => continue,
                Ok(_) => return false,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    };
    // Three silent connections take the three slots; a fourth is closed at once.
    let mut held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    let started = Instant::now();
    assert!(
        closed(&mut extra, Duration::from_millis(250)),
        "over --connections-max"
    );
    assert!(started.elapsed() < Duration::from_millis(250));
    // The silent ones are closed once idle for 300 ms, which frees the slots.
    for s in &mut held {
        assert!(closed(s, Duration::from_secs(3)), "idle connection closed");
    }
    let mut c = EventStoreClient::new(channel(&srv.url).await);
    c.append(AppendRequest {
        events: vec![event(1, 10)],
    })
    .await
    .unwrap();
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_engine_answers_resource_exhausted_instead_of_queueing_without_bound() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(
        d.path(),
        &["--engine-calls-max", "1", "--engine-queue-wait-ms", "1"],
    );
    let mut c = EventStoreClient::new(channel(&srv.url).await);
    for b in 0..20 {
        let events = (0..1000).map(|i| event(b * 1000 + i, 50)).collect();
        c.append(AppendRequest { events }).await.unwrap();
    }
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            c.count(pb::CountRequest::default()).await.map(|_| ())
        }));
    }
    let mut busy = 0;
    for t in calls {
        if let Err(e) = t.await.unwrap() {
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            assert!(e.message().contains("--engine-calls-max"), "{e:?}");
            busy += 1;
        }
    }
    assert!(
        busy > 0,
        "16 concurrent counts on one engine slot with a 1 ms wait"
    );
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honored_from_the_client_and_the_server_maximum() {
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start_with(d.path(), &["--call-timeout-ms", "20000"]);
    let mut c = EventStoreClient::new(channel(&srv.url).await);
    for b in 0..80 {
        // One event a minute: a count per minute answers 40k buckets, which takes well over
        // 1 ms even in a release build (events a millisecond apart fall into one bucket,
        // answered in microseconds). Batches of 500 stay under the 64 KiB message bound.
        let events = (0..500)
            .map(|i| pb::Event {
                ts: (b * 500 + i) as i64 * 60_000,
                ..event(b * 500 + i, 50)
            })
            .collect();
        c.append(AppendRequest { events }).await.unwrap();
    }
    // The client's grpc-timeout, far shorter than a count over 40k events takes.
    let mut req = tonic::Request::new(pb::CountRequest {
        bucket: pb::Bucket::Minute as i32,
        ..Default::default()
    });
    req.set_timeout(Duration::from_micros(1));
    let e = c.count(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{e:?}"
    );
    c.count(pb::CountRequest::default()).await.unwrap();
    srv.stop();
    // The server's own maximum.
    let srv = Server::start_with(d.path(), &["--call-timeout-ms", "1"]);
    let mut c = EventStoreClient::new(channel(&srv.url).await);
    let mut expired = 0;
    for _ in 0..5 {
        let r = c
            .count(pb::CountRequest {
                bucket: pb::Bucket::Minute as i32,
                ..Default::default()
            })
            .await;
        if let Err(e) = r {
            assert!(
                matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
                "{e:?}"
            );
            expired += 1;
        }
    }
    assert!(
        expired > 0,
        "a 1 ms server maximum cuts counts over 40k events"
    );
    srv.stop();
}
