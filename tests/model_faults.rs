//! Property test: the store on the simulated disk against a plain model, through appends (with
//! and without ids, small and multi-block), deletes, seals and reads, interleaved with failed
//! writes (EIO, ENOSPC, torn), failed fsyncs, renames and directory fsyncs, EMFILE, process
//! crashes, power losses (unsynced pages lost in any subset, unsynced renames undone) and the
//! power going off at any call of an append or a seal.
//!
//! After every fault the model's rule holds: every acknowledged event reads back exactly once
//! with identical content, seqs are never reused, a batch whose append failed is wholly
//! present or wholly absent after the restart (absent when the error was a clean "disk full"),
//! and a store that hit a failed fsync is read-only until reopened.
//! `PROPTEST_CASES=2000 cargo test --test model_faults` for a deeper run.

mod common;

use common::sim_store_opts;
use echolog::storage::sim::{Errno, FaultOp, FaultRule};
use echolog::{CountQuery, Error, Event, HistoryQuery, Options, Store};
use proptest::prelude::*;

const ENTITIES: [&str; 3] = ["e0", "e1", "e2"];

#[derive(Debug, Clone)]
enum Fault {
    Write(Errno, bool),
    Sync,
    Rename,
    SyncDir,
    CreateEmfile,
    MapEmfile,
}

#[derive(Debug, Clone)]
enum Op {
    /// (entity, id) per event.
    Append(Vec<(usize, Option<u8>)>),
    /// A batch of `n` incompressible events spanning several blocks and pages.
    Big(u8),
    Delete(usize),
    Seal,
    Check,
    /// Arms a fault that fires on the matching call after `skip` others went through.
    Arm(Fault, u8),
    Crash,
    PowerLoss(u64),
    /// The power goes off after `calls` more calls during an append (or a seal), then the
    /// machine restarts.
    PowerOffDuring {
        calls: u8,
        seal: bool,
        seed: u64,
    },
    /// Runs compaction to the end (a failure fails the step; only a failed directory fsync
    /// makes the store read-only).
    Compact,
    /// The power goes off after `calls` more calls during compaction, then the machine restarts.
    PowerOffCompacting {
        calls: u8,
        seed: u64,
    },
    /// A purge pass with no grace (a failure fails the pass; a failed rename or directory
    /// fsync makes the store read-only).
    Purge,
    /// The power goes off after `calls` more calls during a purge, then the machine restarts.
    PowerOffPurging {
        calls: u8,
        seed: u64,
    },
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (
            prop_oneof![Just(Errno::Eio), Just(Errno::Enospc)],
            any::<bool>()
        )
            .prop_map(|(e, p)| Fault::Write(e, p)),
        Just(Fault::Sync),
        Just(Fault::Rename),
        Just(Fault::SyncDir),
        Just(Fault::CreateEmfile),
        Just(Fault::MapEmfile),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec((0..3usize, proptest::option::weighted(0.4, 0..10u8)), 1..6)
            .prop_map(Op::Append),
        2 => (3..24u8).prop_map(Op::Big),
        1 => (0..3usize).prop_map(Op::Delete),
        1 => Just(Op::Seal),
        2 => Just(Op::Compact),
        1 => (0..40u8, any::<u64>()).prop_map(|(calls, seed)| Op::PowerOffCompacting { calls, seed }),
        1 => Just(Op::Purge),
        1 => (0..60u8, any::<u64>()).prop_map(|(calls, seed)| Op::PowerOffPurging { calls, seed }),
        2 => Just(Op::Check),
        3 => (fault(), 0..4u8).prop_map(|(f, s)| Op::Arm(f, s)),
        1 => Just(Op::Crash),
        2 => any::<u64>().prop_map(Op::PowerLoss),
        2 => (0..40u8, any::<bool>(), any::<u64>())
            .prop_map(|(calls, seal, seed)| Op::PowerOffDuring { calls, seal, seed }),
    ]
}

fn payload(i: u64, bytes: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// What is compared: everything but the server-stamped ts of tombstones.
type Shape = (
    String,
    String,
    Option<i64>,
    Vec<String>,
    Vec<u8>,
    Option<String>,
);

fn shape(e: &Event) -> Shape {
    let reserved = e.kind.starts_with('$');
    (
        e.entity.clone(),
        e.kind.clone(),
        (!reserved).then_some(e.ts),
        e.tags.clone(),
        e.payload.clone(),
        e.id.clone(),
    )
}

#[derive(Default)]
struct Model {
    /// Acknowledged records, seq = index + 1.
    records: Vec<Event>,
    /// The records of the one append whose outcome is unknown (it failed after its write may
    /// have reached the file): after a restart they are all there or none is.
    doubt: Option<Vec<Event>>,
    read_only: bool,
    counter: u64,
    /// Seqs of deleted events a purge may have erased: each reads back whole or not at all.
    purgeable: std::collections::BTreeSet<u64>,
}

impl Model {
    /// The seqs an append of `batch` must return, and the records it adds.
    fn plan(&self, batch: &[Event]) -> (Vec<u64>, Vec<Event>) {
        let mut seqs = Vec::new();
        let mut fresh: Vec<Event> = Vec::new();
        for e in batch {
            let known = e.id.as_deref().and_then(|id| {
                self.records
                    .iter()
                    .chain(fresh.iter())
                    .position(|r| r.id.as_deref() == Some(id))
            });
            match known {
                Some(i) => seqs.push(i as u64 + 1),
                None => {
                    fresh.push(e.clone());
                    seqs.push((self.records.len() + fresh.len()) as u64);
                }
            }
        }
        (seqs, fresh)
    }

    /// Every deleted event may be erased by the purge about to run.
    fn purge_may_erase(&mut self) {
        for q in 1..=self.records.len() as u64 {
            if self.deleted(q) {
                self.purgeable.insert(q);
            }
        }
    }

    fn deleted(&self, seq: u64) -> bool {
        let e = &self.records[seq as usize - 1];
        !e.kind.starts_with('$')
            && self.records[seq as usize..]
                .iter()
                .any(|t| t.kind == "$delete" && t.entity == e.entity)
    }
}

fn opts(base: &Options) -> Options {
    Options {
        segment_size_bytes_max: 8192,
        // Dropping the store (before every crash and power loss here) seals an active segment
        // past a quarter of its size: the seal at close meets armed faults and power cuts.
        seal_at_close_bytes_min: Some(2048),
        // Checkpoint parts meet the faults and power cuts too; recovery loads what they hold.
        checkpoint_bytes: Some(2048),
        block_raw_bytes_target: 512,
        compaction: false,
        compaction_fanout: 2,
        cluster_block_raw_bytes_target: 1024,
        ..base.clone()
    }
}

/// Compaction to the end. It never changes what the store holds; a failed step leaves the
/// store writable unless a directory fsync failed (which makes it read-only, as everywhere).
fn compact(s: &Store, m: &mut Model) -> Result<(), TestCaseError> {
    tally(|t| t.compactions += 1);
    background(s, m, "compaction", s.compact_now()).map(drop)
}

/// A purge pass with no grace. Whatever it erases was deleted; a failed pass leaves the store
/// writable unless a rename or directory fsync failed.
fn purge(s: &Store, m: &mut Model) -> Result<(), TestCaseError> {
    tally(|t| t.purges += 1);
    m.purge_may_erase();
    let r = background(s, m, "purge", s.purge_now(Some(std::time::Duration::ZERO)))?;
    tally(|t| t.purged += r.map_or(0, |r| r.events_purged));
    Ok(())
}

/// The rule for background work's outcome: an I/O error, a full disk or read-only, never
/// another error; read-only exactly when the store says so.
fn background<T>(
    s: &Store,
    m: &mut Model,
    what: &str,
    r: echolog::Result<T>,
) -> Result<Option<T>, TestCaseError> {
    let out = match r {
        Ok(v) => {
            prop_assert!(!m.read_only || s.is_read_only());
            Some(v)
        }
        Err(e) => {
            if m.read_only {
                prop_assert!(matches!(e, Error::ReadOnly(_)), "{}", e);
            }
            prop_assert!(
                matches!(
                    e,
                    Error::Io { .. } | Error::DiskFull(_) | Error::ReadOnly(_)
                ),
                "unexpected {} error {}",
                what,
                e
            );
            m.read_only |= s.is_read_only();
            None
        }
    };
    prop_assert_eq!(s.is_read_only(), m.read_only);
    Ok(out)
}

/// The outcome of a failed write-path call, applied to the model.
fn failed(m: &mut Model, err: &Error, fresh: Vec<Event>) -> Result<(), TestCaseError> {
    if m.read_only {
        // Refused before anything was written.
        prop_assert!(matches!(err, Error::ReadOnly(_)), "{}", err);
        return Ok(());
    }
    match err {
        // Cleanly refused: nothing of it is stored.
        Error::DiskFull(_) | Error::Io { .. } => {}
        Error::ReadOnly(_) => {
            m.read_only = true;
            if !fresh.is_empty() {
                prop_assert!(m.doubt.is_none(), "a second append in doubt");
                m.doubt = Some(fresh);
            }
        }
        other => prop_assert!(false, "unexpected error {other}"),
    }
    Ok(())
}

/// Reopens after a crash or power loss and checks the rule: acknowledged records exactly
/// once, the append in doubt wholly there or wholly gone, nothing else.
fn reopen(dir: &std::path::Path, o: &Options, m: &mut Model) -> Result<Store, TestCaseError> {
    let s = Store::open(dir, o.clone()).map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
    let all = s.read(1, 0).unwrap();
    let n = m.records.len() as u64;
    let old: Vec<(u64, Shape)> = all
        .iter()
        .filter(|e| e.seq <= n)
        .map(|e| (e.seq, shape(&e.event)))
        .collect();
    let acked: Vec<(u64, Shape)> = m
        .records
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, shape(e)))
        .filter(|(q, _)| !m.purgeable.contains(q) || old.iter().any(|(g, _)| g == q))
        .collect();
    prop_assert_eq!(&old, &acked, "acknowledged records lost or changed");
    let rest: Vec<Shape> = all
        .iter()
        .filter(|e| e.seq > n)
        .map(|e| shape(&e.event))
        .collect();
    let rest = &rest[..];
    match m.doubt.take() {
        Some(d) if !rest.is_empty() => {
            let d_shapes: Vec<Shape> = d.iter().map(shape).collect();
            prop_assert_eq!(rest, &d_shapes[..], "an append in doubt came back in part");
            m.records.extend(d);
            tally(|t| t.in_doubt_kept += 1);
        }
        Some(_) => tally(|t| t.in_doubt_dropped += 1),
        None => prop_assert!(rest.is_empty(), "records nobody appended"),
    }
    prop_assert_eq!(s.last_seq(), m.records.len() as u64);
    m.read_only = false;
    Ok(s)
}

fn ok<T>(r: echolog::Result<T>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(e.to_string()))
}

fn check(s: &Store, m: &Model) -> Result<(), TestCaseError> {
    let all = ok(s.read(1, 0))?;
    let mut expect = 1u64;
    for r in all.iter() {
        // A seq missing from the answer is one a purge erased.
        while expect < r.seq {
            prop_assert!(m.purgeable.contains(&expect), "seq {} is missing", expect);
            expect += 1;
        }
        let i = r.seq as usize - 1;
        prop_assert!(i < m.records.len(), "seq {} nobody appended", r.seq);
        prop_assert_eq!(shape(&r.event), shape(&m.records[i]));
        prop_assert_eq!(
            r.deleted_by != 0,
            m.deleted(r.seq),
            "deleted_by of {}",
            r.seq
        );
        expect = r.seq + 1;
    }
    while expect <= m.records.len() as u64 {
        prop_assert!(m.purgeable.contains(&expect), "seq {} is missing", expect);
        expect += 1;
    }
    let live = (1..=m.records.len() as u64)
        .filter(|q| !m.records[*q as usize - 1].kind.starts_with('$') && !m.deleted(*q))
        .count() as u64;
    prop_assert_eq!(ok(s.count(&CountQuery::default()))?.total, live);
    for e in ENTITIES {
        let h = ok(s.history(&HistoryQuery {
            entity: e.into(),
            ..Default::default()
        }))?;
        let want = (1..=m.records.len() as u64)
            .filter(|q| {
                let r = &m.records[*q as usize - 1];
                r.entity == e && !r.kind.starts_with('$') && !m.deleted(*q)
            })
            .count();
        prop_assert_eq!(h.len(), want);
    }
    Ok(())
}

fn arm(disk: &echolog::storage::sim::SimDisk, f: &Fault, skip: u8) {
    let skip = u64::from(skip);
    let rule = match f {
        Fault::Write(e, partial) => {
            let r = FaultRule::new(FaultOp::Write, *e).skip(skip);
            if *partial {
                r.partial()
            } else {
                r
            }
        }
        Fault::Sync => FaultRule::new(FaultOp::Sync, Errno::Eio).skip(skip),
        Fault::Rename => FaultRule::new(FaultOp::Rename, Errno::Eio).skip(skip),
        Fault::SyncDir => FaultRule::new(FaultOp::SyncDir, Errno::Eio).skip(skip),
        Fault::CreateEmfile => FaultRule::new(FaultOp::Create, Errno::Emfile).skip(skip),
        Fault::MapEmfile => FaultRule::new(FaultOp::Map, Errno::Emfile).skip(skip),
    };
    disk.add_rule(rule);
}

fn append(s: &Store, m: &mut Model, batch: Vec<Event>) -> Result<(), TestCaseError> {
    let (seqs, fresh) = m.plan(&batch);
    match s.append(batch) {
        Ok(out) => {
            prop_assert!(!m.read_only, "a read-only store took an append");
            prop_assert_eq!(out.seqs, seqs);
            m.records.extend(fresh);
        }
        Err(e) => {
            if m.read_only {
                prop_assert!(matches!(e, Error::ReadOnly(_)), "{}", e);
            }
            failed(m, &e, fresh)?;
        }
    }
    prop_assert_eq!(s.is_read_only(), m.read_only);
    Ok(())
}

/// `n` incompressible events of 300 bytes, with ids `<prefix>-<n>` when a prefix is given.
fn big_batch(m: &mut Model, n: u8, id_prefix: Option<&str>) -> Vec<Event> {
    (0..n)
        .map(|_| {
            m.counter += 1;
            Event {
                entity: ENTITIES[m.counter as usize % 3].into(),
                kind: "big".into(),
                ts: 1_000 + m.counter as i64,
                tags: vec![],
                payload: payload(m.counter, 300),
                id: id_prefix.map(|p| format!("{p}-{}", m.counter)),
            }
        })
        .collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (disk, dir, base) = sim_store_opts();
    let o = opts(&base);
    let mut m = Model::default();
    let mut s = Store::open(&dir, o.clone()).unwrap();
    for op in ops {
        match op {
            Op::Append(spec) => {
                let batch = spec
                    .iter()
                    .map(|(e, id)| {
                        m.counter += 1;
                        Event {
                            entity: ENTITIES[*e].into(),
                            kind: "k".into(),
                            ts: 1_000 + m.counter as i64,
                            tags: vec![format!("n:{}", m.counter % 3)],
                            payload: format!("{{\"n\":{}}}", m.counter).into_bytes(),
                            id: id.map(|i| format!("id-{i}")),
                        }
                    })
                    .collect();
                append(&s, &mut m, batch)?;
            }
            Op::Big(n) => {
                let batch = big_batch(&mut m, n, None);
                append(&s, &mut m, batch)?;
            }
            Op::Delete(e) => {
                let t = Event {
                    entity: ENTITIES[e].into(),
                    kind: "$delete".into(),
                    ts: 0,
                    tags: vec!["reason:gone".into()],
                    payload: vec![],
                    id: None,
                };
                match s.delete(ENTITIES[e], &[], "gone") {
                    Ok(seq) => {
                        prop_assert_eq!(seq, m.records.len() as u64 + 1);
                        m.records.push(t);
                    }
                    Err(err) => failed(&mut m, &err, vec![t])?,
                }
            }
            Op::Seal => {
                if let Err(e) = s.seal_active() {
                    failed(&mut m, &e, vec![])?;
                }
                prop_assert_eq!(s.is_read_only(), m.read_only);
            }
            Op::Check => {
                // A passing EMFILE armed for a map may fail a read: that is an error, never a
                // wrong answer, and the next read works.
                if check(&s, &m).is_err() {
                    disk.clear_rules();
                    check(&s, &m)?;
                }
            }
            Op::Arm(f, skip) => arm(&disk, &f, skip),
            Op::Compact => compact(&s, &mut m)?,
            Op::PowerOffCompacting { calls, seed } => {
                tally(|t| t.power_offs += 1);
                // Make sure there is something to compact.
                if let Err(e) = s.seal_active() {
                    failed(&mut m, &e, vec![])?;
                }
                disk.power_off_after(u64::from(calls));
                compact(&s, &mut m)?;
                drop(s);
                disk.power_loss(seed);
                s = reopen(&dir, &o, &mut m)?;
            }
            Op::Purge => purge(&s, &mut m)?,
            Op::PowerOffPurging { calls, seed } => {
                tally(|t| t.power_offs += 1);
                // Make sure deleted events sit in sealed segments.
                if let Err(e) = s.seal_active() {
                    failed(&mut m, &e, vec![])?;
                }
                disk.power_off_after(u64::from(calls));
                purge(&s, &mut m)?;
                drop(s);
                disk.power_loss(seed);
                s = reopen(&dir, &o, &mut m)?;
            }
            Op::Crash => {
                tally(|t| t.crashes += 1);
                drop(s);
                disk.crash();
                s = reopen(&dir, &o, &mut m)?;
            }
            Op::PowerLoss(seed) => {
                tally(|t| t.power_losses += 1);
                drop(s);
                disk.power_loss(seed);
                s = reopen(&dir, &o, &mut m)?;
            }
            Op::PowerOffDuring { calls, seal, seed } => {
                tally(|t| t.power_offs += 1);
                disk.power_off_after(u64::from(calls));
                if seal {
                    if let Err(e) = s.seal_active() {
                        failed(&mut m, &e, vec![])?;
                    }
                } else {
                    let batch = big_batch(&mut m, 6, Some("p"));
                    append(&s, &mut m, batch)?;
                }
                drop(s);
                disk.power_loss(seed);
                s = reopen(&dir, &o, &mut m)?;
            }
        }
    }
    drop(s);
    let injected = disk.injected_by_op();
    disk.crash();
    let s = reopen(&dir, &o, &mut m)?;
    check(&s, &m)?;
    tally(|t| {
        t.cases += 1;
        t.acked += m.records.len() as u64;
        for (k, v) in injected {
            *t.faults.entry(k).or_default() += v;
        }
    });
    Ok(())
}

/// What the runs did, summed over all cases (printed at the end: docs/reliability.md).
#[derive(Default)]
struct Tally {
    cases: u64,
    faults: std::collections::BTreeMap<String, u64>,
    crashes: u64,
    power_losses: u64,
    power_offs: u64,
    acked: u64,
    in_doubt_kept: u64,
    in_doubt_dropped: u64,
    compactions: u64,
    purges: u64,
    purged: u64,
}

static TALLY: std::sync::Mutex<Option<Tally>> = std::sync::Mutex::new(None);

fn tally(f: impl FnOnce(&mut Tally)) {
    let mut t = TALLY.lock().unwrap_or_else(|p| p.into_inner());
    f(t.get_or_insert_with(Tally::default));
}

#[test]
fn acknowledged_events_survive_every_fault_exactly_once() {
    // PROPTEST_CASES=2000 for a deeper run; 64 keeps CI fast.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..60), run);
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = TALLY.lock().unwrap().take().unwrap_or_default();
    println!(
        "model_faults: {} runs (shrinking included); {} acknowledged events checked; {} crashes, \
         {} power losses, {} power-offs mid-operation, {} compactions, {} purge passes ({} events \
         erased); appends in doubt: {} came back whole, {} vanished whole",
        t.cases,
        t.acked,
        t.crashes,
        t.power_losses,
        t.power_offs,
        t.compactions,
        t.purges,
        t.purged,
        t.in_doubt_kept,
        t.in_doubt_dropped
    );
    for (what, n) in &t.faults {
        println!("model_faults: injected {what}: {n}");
    }
}
