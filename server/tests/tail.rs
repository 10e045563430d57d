//! Tail without gap or duplicate at the switch from catch-up to live: tails from seq 1 (one
//! unfiltered, one filtered by entity) run while 4 producers append; the received seqs must be
//! exactly the stored ones, in order. 10^6 events by default (about 11 s in a debug build);
//! `TAIL_EVENTS=N` for another size.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::{Events, Server};
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, TailRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_see_every_seq_once_in_order_across_the_switch_to_live() {
    let total: u64 = std::env::var("TAIL_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let d = tempfile::tempdir().unwrap();
    let srv = Server::start(d.path());
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    // Some history first, so the tails start in catch-up.
    let seed: Vec<pb::Event> = (0..1000).map(|i| event(i % 4, i)).collect();
    c.append(AppendRequest { events: seed }).await.unwrap();
    let e1_seqs = Arc::new(Mutex::new(
        (0..1000u64)
            .filter(|i| i % 4 == 1)
            .map(|i| i + 1)
            .collect::<BTreeSet<u64>>(),
    ));
    let tail = |entity: Option<String>| {
        let url = srv.url.clone();
        tokio::spawn(async move {
            let mut c = EventStoreClient::connect(url).await.unwrap();
            let s = c
                .tail(TailRequest {
                    from_seq: 1,
                    entity,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let mut events = Events::new(s);
            let mut seqs = Vec::new();
            while let Some(e) = events.next().await.unwrap() {
                seqs.push(e.seq);
                if e.seq >= total {
                    break;
                }
            }
            seqs
        })
    };
    let all = tail(None);
    let filtered = tail(Some("e1".into()));
    let per_producer = (total - 1000) / 4;
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let url = srv.url.clone();
        let e1 = e1_seqs.clone();
        producers.push(tokio::spawn(async move {
            let mut c = EventStoreClient::connect(url).await.unwrap();
            let mut sent = 0u64;
            let mut k = p * 7919;
            while sent < per_producer {
                k = k
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (1 + (k >> 33) % 400).min(per_producer - sent);
                let events: Vec<pb::Event> =
                    (0..n).map(|i| event((k >> 20) % 4 + i, sent + i)).collect();
                let entities: Vec<String> = events.iter().map(|e| e.entity.clone()).collect();
                let seqs = c
                    .append(AppendRequest { events })
                    .await
                    .unwrap()
                    .into_inner()
                    .seqs;
                let mut e1 = e1.lock().unwrap();
                for (s, ent) in seqs.iter().zip(entities) {
                    if ent == "e1" {
                        e1.insert(*s);
                    }
                }
                sent += n;
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    // The last seq: the filtered tail stops at `total` only if e1 has it; make sure.
    let last = c
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .last_seq;
    assert_eq!(last, total);
    if !e1_seqs.lock().unwrap().contains(&total) {
        // One more e1 event as the filtered tail's stop mark.
        let s = c
            .append(AppendRequest {
                events: vec![event(1, 0)],
            })
            .await
            .unwrap()
            .into_inner()
            .seqs[0];
        e1_seqs.lock().unwrap().insert(s);
    }
    let got = all.await.unwrap();
    assert_eq!(got.len() as u64, total, "unfiltered: one per seq");
    assert!(
        got.iter().zip(1u64..).all(|(s, want)| *s == want),
        "unfiltered tail: exactly 1..={total} in order"
    );
    let mut want: Vec<u64> = e1_seqs.lock().unwrap().iter().copied().collect();
    let got_f = tokio::time::timeout(std::time::Duration::from_secs(60), filtered)
        .await
        .unwrap()
        .unwrap();
    want.retain(|s| *s <= *got_f.last().unwrap());
    assert_eq!(got_f, want, "filtered tail: exactly the e1 seqs, in order");
    srv.stop();
}

fn event(entity: u64, i: u64) -> pb::Event {
    pb::Event {
        entity: format!("e{}", entity % 4),
        kind: "k".into(),
        ts: 1_700_000_000_000 + i as i64,
        payload: format!("{{\"i\":{i}}}").into_bytes().into(),
        ..Default::default()
    }
}
