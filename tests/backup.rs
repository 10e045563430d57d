//! Online backup under load: the snapshot opens as a store holding exactly every event up to
//! the reported seq, identical to what was acknowledged, with tombstones and cursors; immutable
//! files are hard-linked; the backup is durable (a power loss right after keeps it).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{ev, small};
use echolog::{Event, HistoryQuery, Options, Store};

#[test]
fn a_backup_taken_while_producers_append_holds_everything_up_to_its_seq() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), small()).unwrap();
    let acked: Arc<Mutex<HashMap<u64, Event>>> = Arc::default();
    for i in 0..200 {
        let e = Event {
            id: Some(format!("pre-{i}")),
            ..ev(&format!("e{}", i % 5), i)
        };
        let seq = s.append(vec![e.clone()]).unwrap().seqs[0];
        acked.lock().unwrap().insert(seq, e);
    }
    s.delete("e3", &[], "gone").unwrap();
    s.commit_cursor("billing", 57).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let e = Event {
                        id: Some(format!("p{p}-{i}")),
                        ..ev(&format!("e{}", i % 5), 10_000 + i)
                    };
                    let seq = s.append(vec![e.clone()]).unwrap().seqs[0];
                    acked.lock().unwrap().insert(seq, e);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let dest = d.path().join("backup");
    let report = s.backup(&dest).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    assert!(
        report.files_linked > 0,
        "sealed segments are linked: {report:?}"
    );
    assert!(
        s.last_seq() > report.last_seq,
        "appends went on during the backup"
    );
    drop(s);
    assert!(echolog::verify(&dest).unwrap().ok());
    let b = Store::open(&dest, small()).unwrap();
    assert_eq!(b.last_seq(), report.last_seq);
    let acked = acked.lock().unwrap();
    let all = b.read(1, 0).unwrap();
    assert_eq!(all.len() as u64, report.last_seq);
    for r in &all {
        if let Some(e) = acked.get(&r.seq) {
            assert_eq!(&r.event, e, "seq {}", r.seq);
        } else {
            assert!(
                r.event.kind.starts_with('$'),
                "seq {} was never appended",
                r.seq
            );
        }
    }
    assert_eq!(b.cursor("billing").unwrap(), Some(57));
    let e3 = b
        .history(&HistoryQuery {
            entity: "e3".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(e3.iter().all(|e| e.seq > 201), "the tombstone came along");
    // The backup is a store: it takes appends, and the original is untouched by them.
    assert_eq!(
        b.append(vec![ev("x", 1)]).unwrap().seqs,
        vec![report.last_seq + 1]
    );
}

#[test]
fn a_backup_survives_a_power_loss_right_after_it() {
    for seed in 0..8u64 {
        let (disk, dir, opts) = common::sim_store_opts();
        let s = Store::open(&dir, opts.clone()).unwrap();
        for i in 0..120 {
            s.append(vec![ev("a", i)]).unwrap();
        }
        s.commit_cursor("c", 100).unwrap();
        let dest = std::path::PathBuf::from("/sim/backup");
        let r = s.backup(&dest).unwrap();
        drop(s);
        disk.power_loss(seed);
        let b = Store::open(&dest, Options { ..opts.clone() }).unwrap();
        assert_eq!(b.last_seq(), r.last_seq, "seed {seed}");
        assert_eq!(b.read(1, 0).unwrap().len(), 120);
        assert_eq!(b.cursor("c").unwrap(), Some(100));
    }
}

#[test]
fn a_backup_refuses_a_destination_that_is_not_empty() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path().join("data"), Options::default()).unwrap();
    std::fs::write(d.path().join("mine"), b"x").unwrap();
    let e = s.backup(d.path()).unwrap_err().to_string();
    assert!(e.contains("dest") && e.contains("empty"), "{e}");
}
