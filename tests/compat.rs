//! Stores written by an older format version open and read back exactly as they were written.

use std::path::Path;

use echolog::{CountQuery, Event, HistoryQuery, Options, Store};

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn fixture() -> (tempfile::TempDir, Vec<Vec<String>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let d = tempfile::tempdir().unwrap();
    copy_dir(&root.join("v1-store"), d.path());
    let expected = std::fs::read_to_string(root.join("v1-store.expected.tsv"))
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    (d, expected)
}

fn row(e: &echolog::StoredEvent) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.event.entity.clone(),
        e.event.kind.clone(),
        e.event.ts.to_string(),
        e.event.tags.join(","),
        String::from_utf8_lossy(&e.event.payload).into_owned(),
        e.event.id.clone().unwrap_or_default(),
        e.deleted_by.to_string(),
    ]
}

#[test]
fn a_version_1_store_reads_back_every_record() {
    let (d, expected) = fixture();
    let s = Store::open(d.path(), Options::default()).unwrap();
    let got: Vec<Vec<String>> = s.read(1, 0).unwrap().iter().map(row).collect();
    assert_eq!(got, expected);
    let st = s.stats().unwrap();
    assert_eq!((st.events, st.last_seq, st.segments), (124, 124, 4));
    // History and counts agree with the records.
    let live_p3 = expected
        .iter()
        .filter(|r| r[1] == "product:3" && !r[2].starts_with('$') && r[7] == "0")
        .count();
    let h = s
        .history(&HistoryQuery {
            entity: "product:3".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.len(), live_p3);
    let live = expected
        .iter()
        .filter(|r| !r[2].starts_with('$') && r[7] == "0")
        .count() as u64;
    assert_eq!(s.count(&CountQuery::default()).unwrap().total, live);
}

#[test]
fn a_version_1_store_keeps_its_ids_and_takes_new_appends() {
    let (d, _) = fixture();
    {
        let s = Store::open(d.path(), Options::default()).unwrap();
        let dup = Event {
            entity: "product:0".into(),
            kind: "price_changed".into(),
            ts: 1,
            id: Some("feed:0".into()),
            ..Default::default()
        };
        let out = s.append(vec![dup]).unwrap();
        assert_eq!((out.seqs, out.duplicates), (vec![1], 1));
        for i in 0..200 {
            let e = Event {
                entity: format!("new:{}", i % 5),
                kind: "k".into(),
                ts: 1_000 + i,
                payload: vec![b'x'; 64],
                ..Default::default()
            };
            s.append(vec![e]).unwrap();
        }
        s.seal_active().unwrap();
    }
    let s = Store::open(d.path(), Options::default()).unwrap();
    assert_eq!(s.last_seq(), 324);
    assert_eq!(s.read(1, 0).unwrap().len(), 324);
    let h = s
        .history(&HistoryQuery {
            entity: "new:1".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(h.len(), 40);
}
