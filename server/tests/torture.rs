//! Crash torture: `echolog serve` as a child process under 4 concurrent producers (single
//! events and batches, every event with an idempotency id), SIGKILLed at random moments.
//! After each kill the store is opened with the engine and checked: every acknowledged event
//! is present at its acknowledged seq with identical content, seqs are dense, no id is stored
//! twice, and the count equals the stored events, each of which some producer sent. Batches
//! whose answer was lost are sent again after the restart (a producer's retry): they must not
//! be stored twice.
//!
//! `TORTURE_KILLS=200 cargo test --release -p echolog-server --test torture -- --nocapture`
//! for a long run (docs/reliability.md); CI runs the default 4.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest};

#[derive(Default)]
struct Ledger {
    /// id -> (seq, event) for every acknowledged event.
    acked: HashMap<String, (u64, pb::Event)>,
    /// Every event ever sent, by id (acknowledged or not).
    sent: HashMap<String, pb::Event>,
    /// Batches whose answer never came: sent again after the restart.
    retry: Vec<Vec<pb::Event>>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(producer: usize, n: u64) -> pb::Event {
    pb::Event {
        entity: format!("tenant:{}", n % 17),
        kind: if n.is_multiple_of(5) {
            "call".into()
        } else {
            "price".into()
        },
        ts: 1_700_000_000_000 + n as i64,
        tags: vec![format!("p:{producer}")],
        payload: format!("{{\"producer\":{producer},\"n\":{n}}}")
            .into_bytes()
            .into(),
        id: format!("p{producer}-{n}"),
        ..Default::default()
    }
}

async fn send(
    c: &mut EventStoreClient<tonic::transport::Channel>,
    ledger: &Mutex<Ledger>,
    batch: Vec<pb::Event>,
) -> bool {
    {
        let mut l = ledger.lock().unwrap();
        for e in &batch {
            l.sent.insert(e.id.clone(), e.clone());
        }
        // Pending until answered: a kill leaves it for the retry.
        l.retry.push(batch.clone());
    }
    let r = c
        .append(AppendRequest {
            events: batch.clone(),
        })
        .await;
    let mut l = ledger.lock().unwrap();
    match r {
        Ok(r) => {
            let seqs = r.into_inner().seqs;
            assert_eq!(seqs.len(), batch.len());
            for (e, s) in batch.iter().zip(seqs) {
                if let Some((prev, _)) = l.acked.get(&e.id) {
                    assert_eq!(*prev, s, "id {} acknowledged at two seqs", e.id);
                }
                l.acked.insert(e.id.clone(), (s, e.clone()));
            }
            let first = batch.first().map(|e| e.id.clone());
            l.retry
                .retain(|b| b.first().map(|e| &e.id) != first.as_ref());
            true
        }
        Err(_) => false,
    }
}

async fn producer(url: String, p: usize, start: u64, ledger: Arc<Mutex<Ledger>>, seed: u64) {
    let Ok(c) = EventStoreClient::connect(url).await else {
        return;
    };
    let mut c = c;
    let mut rng = Rng(seed | 1);
    let mut n = start;
    loop {
        let size = if rng.below(2) == 0 {
            1
        } else {
            1 + rng.below(40)
        };
        let batch: Vec<pb::Event> = (0..size)
            .map(|_| {
                n += 1;
                event(p, n)
            })
            .collect();
        if !send(&mut c, &ledger, batch).await {
            return;
        }
    }
}

fn check(dir: &std::path::Path, ledger: &Ledger) -> u64 {
    let store = echolog::Store::open(dir, echolog::Options::default()).unwrap();
    let all = store.read(1, 0).unwrap();
    let mut ids = HashSet::new();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "seqs are dense");
        let id = r.event.id.clone().expect("every event has an id");
        assert!(ids.insert(id.clone()), "id {id} stored twice");
        let sent = ledger.sent.get(&id).expect("stored an event nobody sent");
        assert_eq!(r.event.payload, sent.payload);
        assert_eq!(r.event.entity, sent.entity);
        assert_eq!(r.event.tags, sent.tags);
        assert_eq!(r.event.ts, sent.ts);
    }
    for (id, (seq, e)) in &ledger.acked {
        let r = all
            .get(*seq as usize - 1)
            .unwrap_or_else(|| panic!("acknowledged {id} at seq {seq} is gone"));
        assert_eq!(r.event.id.as_deref(), Some(id.as_str()));
        assert_eq!(r.event.payload, e.payload);
    }
    let total = store.count(&echolog::CountQuery::default()).unwrap().total;
    assert_eq!(total, all.len() as u64, "counts match the stored set");
    all.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_loses_and_doubles_no_acknowledged_event() {
    let kills: usize = std::env::var("TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    println!("torture: {kills} kills, TORTURE_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let d = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut stored = 0;
    for round in 0..kills {
        let srv = Server::start_with(d.path(), &["--segment-size-bytes", "65536"]);
        // Retries first: a batch whose answer was lost must come back with its original
        // seqs and store nothing twice.
        let retries = std::mem::take(&mut ledger.lock().unwrap().retry);
        let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
        for b in retries {
            assert!(send(&mut c, &ledger, b).await, "retry after restart");
        }
        let tasks: Vec<_> = (0..4)
            .map(|p| {
                let start = (round as u64 + 1) * 10_000_000;
                tokio::spawn(producer(
                    srv.url.clone(),
                    p,
                    start,
                    ledger.clone(),
                    rng.next(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30 + rng.below(300))).await;
        srv.kill();
        for t in tasks {
            let _ = t.await;
        }
        let l = ledger.lock().unwrap();
        stored = check(d.path(), &l);
        assert!(stored >= l.acked.len() as u64);
    }
    let l = ledger.lock().unwrap();
    println!(
        "torture: {kills} kills survived in {:.1} s; {} events acknowledged, {stored} stored, {} batches retried at the end",
        started.elapsed().as_secs_f64(),
        l.acked.len(),
        l.retry.len()
    );
    assert!(!l.acked.is_empty());
}
