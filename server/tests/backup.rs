//! Online backup through a real server under load, checked against the acknowledged set; the
//! admin right; and the offline backup of a stopped store, through the CLI.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, BackupRequest, CommitCursorRequest};
use tonic::Code;

fn with<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn event(p: u64, i: u64) -> pb::Event {
    pb::Event {
        entity: format!("tenant:{}", i % 7),
        kind: "call".into(),
        ts: 1_700_000_000_000 + i as i64,
        payload: format!("{{\"p\":{p},\"i\":{i}}}").into_bytes().into(),
        id: format!("p{p}-{i}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_load_holds_every_acknowledged_event_up_to_its_seq() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let tokens = d.path().join("tokens");
    std::fs::write(&tokens, "w write\nboss read,write,admin\n").unwrap();
    let srv = Server::start_with(
        &data,
        &[
            "--segment-size-bytes",
            "65536",
            "--tokens-file",
            tokens.to_str().unwrap(),
        ],
    );
    let acked: Arc<Mutex<HashMap<u64, pb::Event>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut producers = Vec::new();
    for p in 0..3u64 {
        let (url, acked, stop) = (srv.url.clone(), acked.clone(), stop_rx.clone());
        producers.push(tokio::spawn(async move {
            let mut c = EventStoreClient::connect(url).await.unwrap();
            let mut i = 0;
            while !*stop.borrow() {
                let batch: Vec<pb::Event> = (0..20).map(|k| event(p, i + k)).collect();
                let mut r = tonic::Request::new(AppendRequest {
                    events: batch.clone(),
                });
                r.metadata_mut()
                    .insert("authorization", "Bearer w".parse().unwrap());
                let seqs = c.append(r).await.unwrap().into_inner().seqs;
                let mut a = acked.lock().unwrap();
                for (s, e) in seqs.into_iter().zip(batch) {
                    a.insert(s, e);
                }
                i += 20;
            }
        }));
    }
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    // Wait (bounded) until a few segments are sealed, so the backup has files to link.
    for _ in 0..300 {
        let s = c
            .stats(with("boss", pb::StatsRequest {}))
            .await
            .unwrap()
            .into_inner();
        if s.segments >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.commit_cursor(with(
        "w",
        CommitCursorRequest {
            name: "sync".into(),
            seq: 5,
        },
    ))
    .await
    .unwrap();
    let dest = d.path().join("snap");
    let req = |t| {
        with(
            t,
            BackupRequest {
                dest: dest.to_string_lossy().into_owned(),
            },
        )
    };
    assert_eq!(
        c.backup(req("w")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let r = c.backup(req("boss")).await.unwrap().into_inner();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    for p in producers {
        p.await.unwrap();
    }
    srv.stop();
    assert!(r.last_seq > 0 && r.files_linked > 0, "{r:?}");
    let (ok, out, err) = common::cli(&[], &["verify", dest.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let b = echolog::Store::open(&dest, echolog::Options::default()).unwrap();
    assert_eq!(b.last_seq(), r.last_seq);
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() as u64 > r.last_seq,
        "appends went on past the backup"
    );
    for e in b.read(1, 0).unwrap() {
        let want = acked
            .get(&e.seq)
            .expect("every seq of the backup was acknowledged");
        assert_eq!(e.event.id.as_deref(), Some(want.id.as_str()));
        assert_eq!(e.event.payload, want.payload);
    }
    assert_eq!(b.read(1, 0).unwrap().len() as u64, r.last_seq);
    assert_eq!(b.cursor("sync").unwrap(), Some(5));
    drop(b);

    // Offline, of the stopped store, through the CLI.
    let offline = d.path().join("offline");
    let (ok, out, err) = common::cli(
        &[],
        &[
            "backup",
            "--offline",
            "--data-dir",
            data.to_str().unwrap(),
            offline.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("every event up to seq"), "{out}{err}");
    let b = echolog::Store::open(&offline, echolog::Options::default()).unwrap();
    assert_eq!(b.last_seq() as usize, acked.len());
}
