//! A real full disk: the real binary on a size-limited tmpfs that the test mounts itself.
//! Appends answer RESOURCE_EXHAUSTED, nothing half-written becomes visible, appends work
//! again once space is freed, and a restart finds every acknowledged event.
//!
//! Mounting needs root (CI runs as root). Where the kernel refuses the mount the test says so
//! and passes without checking anything else.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use echolog_server::pb::event_store_client::EventStoreClient;
use echolog_server::pb::{self, AppendRequest, StatsRequest};
use tonic::Code;

/// A tmpfs of a fixed size, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn event(n: u64) -> pb::Event {
    pb::Event {
        entity: format!("tenant:{}", n % 7),
        kind: "call".into(),
        ts: 1_700_000_000_000 + n as i64,
        // Incompressible, so the disk fills at a predictable pace.
        payload: (0..1000u64)
            .map(|i| b'a' + ((n * 7919 + i * 104_729) % 26) as u8)
            .collect(),
        id: format!("ev-{n}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_resource_exhausted_and_appends_resume_when_space_returns() {
    let base = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(base.path(), "6m") {
        Ok(fs) => fs,
        Err(e) => {
            println!("SKIPPED: this kernel or user may not mount a tmpfs ({e})");
            return;
        }
    };
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![0u8; 4 << 20]).unwrap();
    let data = fs.dir.join("data");
    let srv = Server::start_with(&data, &["--segment-size-bytes", "262144"]);
    let mut c = EventStoreClient::connect(srv.url.clone()).await.unwrap();
    let mut acked = 0u64;
    let mut n = 0u64;
    let failed_batch = loop {
        let batch: Vec<pb::Event> = (0..20)
            .map(|_| {
                n += 1;
                event(n)
            })
            .collect();
        match c
            .append(AppendRequest {
                events: batch.clone(),
            })
            .await
        {
            Ok(r) => {
                let seqs = r.into_inner().seqs;
                assert_eq!(seqs, (acked + 1..=acked + 20).collect::<Vec<_>>());
                acked += 20;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("disk full"), "{s:?}");
                break batch;
            }
        }
        assert!(n < 100_000, "the disk never filled");
    };
    assert!(acked > 0);
    let stats = c.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(
        stats.last_seq, acked,
        "nothing of the failed append is visible"
    );
    // Still full: the same batch is still refused, still nothing half-visible. (A smaller one
    // may fit in what the failed write left free.)
    let again = c
        .append(AppendRequest {
            events: failed_batch.clone(),
        })
        .await;
    assert_eq!(again.unwrap_err().code(), Code::ResourceExhausted);
    let stats = c.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.last_seq, acked);
    std::fs::remove_file(&filler).unwrap();
    let r = c
        .append(AppendRequest {
            events: failed_batch.clone(),
        })
        .await
        .expect("appends work again once space is freed")
        .into_inner();
    assert_eq!(
        r.seqs[0],
        acked + 1,
        "no seq was lost to the failed appends"
    );
    assert_eq!(r.duplicates, 0, "the failed batch was not stored");
    acked += 20;
    srv.stop();
    let (ok, out, err) = common::cli(&[], &["verify", data.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let store = echolog::Store::open(&data, echolog::Options::default()).unwrap();
    let all = store.read(1, 0).unwrap();
    assert_eq!(all.len() as u64, acked);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(
            e.event.id.as_deref(),
            Some(format!("ev-{}", i + 1).as_str())
        );
    }
    drop(store);
}
