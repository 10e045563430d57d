//! Property test: the store against a plain in-memory model, through appends (with duplicate
//! ids), deletes, restores, history, counts, positional reads, clean reopens and crashes that
//! tear or corrupt the active segment's last block.

use std::collections::BTreeMap;
use std::path::Path;

use echolog::{Bucket, CountQuery, Event, HistoryQuery, Options, Store, StoredEvent};
use echolog_format::block::{BlockHeader, BLOCK_HEADER_LEN};
use echolog_format::segment_header::SEGMENT_HEADER_LEN;
use proptest::prelude::*;

const ENTITIES: [&str; 4] = ["e0", "e1", "e2", "e3"];
const KINDS: [&str; 2] = ["a", "b"];
const TAGS: [&str; 3] = ["t:1", "t:2", "t:3"];

#[derive(Debug, Clone)]
struct GenEvent {
    entity: usize,
    kind: usize,
    ts: i64,
    tags: Vec<usize>,
    id: Option<u8>,
}

#[derive(Debug, Clone)]
enum Crash {
    /// Drop the store only.
    Drop,
    /// Cut the active segment inside its last block (at this fraction of it).
    Cut(u16),
    /// Flip one bit in the active segment's last block.
    Flip(u16, u8),
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<GenEvent>),
    DeleteEntity(usize),
    DeleteSeqs(Vec<u16>),
    Restore(usize),
    History {
        entity: usize,
        reverse: bool,
        after: u16,
        limit: u8,
        from: Option<i64>,
        to: Option<i64>,
        deleted: bool,
    },
    Count {
        entity: Option<usize>,
        kind: Option<usize>,
        tags: Vec<usize>,
        from: Option<i64>,
        to: Option<i64>,
        bucket: u8,
        deleted: bool,
        reserved: bool,
    },
    Read {
        from: u16,
        limit: u8,
    },
    Reopen,
    Crash(Crash),
    /// Runs compaction to the end: segments become cluster files, which merge two by two.
    Compact,
    /// A purge pass with no grace: every deleted event of a sealed segment is erased.
    Purge,
    /// Seals the active segment (segments also seal when full, which small runs rarely are).
    Seal,
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        0..4usize,
        0..2usize,
        -300_000i64..400_000,
        proptest::collection::vec(0..3usize, 0..3),
        proptest::option::weighted(0.3, 0..6u8),
    )
        .prop_map(|(entity, kind, ts, tags, id)| GenEvent {
            entity,
            kind,
            ts: if ts == 0 { 1 } else { ts },
            tags,
            id,
        })
}

fn ts_bound() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(-300_000i64..400_000)
}

/// A count's range edge: anywhere, or on an hour boundary (whole hours are answered from the
/// per-tag hourly counts of sealed segments; the events span hours -1 and 0).
fn count_bound() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        3 => ts_bound(),
        1 => prop_oneof![Just(-3_600_000i64), Just(0), Just(3_600_000)].prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec(gen_event(), 1..12).prop_map(Op::Append),
        1 => (0..4usize).prop_map(Op::DeleteEntity),
        1 => proptest::collection::vec(any::<u16>(), 1..3).prop_map(Op::DeleteSeqs),
        1 => (0..4usize).prop_map(Op::Restore),
        3 => (0..4usize, any::<bool>(), any::<u16>(), 0..6u8, ts_bound(), ts_bound(), any::<bool>())
            .prop_map(|(entity, reverse, after, limit, from, to, deleted)| Op::History { entity, reverse, after, limit, from, to, deleted }),
        3 => (proptest::option::of(0..4usize), proptest::option::of(0..2usize), proptest::collection::vec(0..3usize, 0..2), count_bound(), count_bound(), 0..4u8, any::<bool>(), proptest::bool::weighted(0.1))
            .prop_map(|(entity, kind, tags, from, to, bucket, deleted, reserved)| Op::Count { entity, kind, tags, from, to, bucket, deleted, reserved }),
        1 => (any::<u16>(), 0..8u8).prop_map(|(from, limit)| Op::Read { from, limit }),
        1 => Just(Op::Reopen),
        2 => Just(Op::Compact),
        1 => Just(Op::Purge),
        2 => Just(Op::Seal),
        2 => prop_oneof![Just(Crash::Drop), any::<u16>().prop_map(Crash::Cut), (any::<u16>(), 0..8u8).prop_map(|(a, b)| Crash::Flip(a, b))].prop_map(Op::Crash),
    ]
}

/// The model: every stored record in seq order, plus which records each commit wrote.
#[derive(Default)]
struct Model {
    records: Vec<StoredEvent>,
    /// (first seq, last seq) of each commit that wrote records.
    commits: Vec<(u64, u64)>,
    /// Seqs purge erased: gone for every reader, their ids still known.
    purged: std::collections::BTreeSet<u64>,
}

impl Model {
    fn next_seq(&self) -> u64 {
        self.records.len() as u64 + 1
    }

    fn push(&mut self, event: Event) -> u64 {
        let seq = self.next_seq();
        self.records.push(StoredEvent {
            seq,
            event,
            deleted_by: 0,
        });
        seq
    }

    fn find_id(&self, id: &str) -> Option<u64> {
        self.records
            .iter()
            .find(|r| r.event.id.as_deref() == Some(id))
            .map(|r| r.seq)
    }

    /// The records a reader can see (all but purged ones).
    fn visible(&self) -> impl Iterator<Item = &StoredEvent> {
        self.records
            .iter()
            .filter(|r| !self.purged.contains(&r.seq))
    }

    fn reserved(r: &StoredEvent) -> bool {
        r.event.kind.starts_with('$')
    }

    fn reason(r: &StoredEvent) -> String {
        r.event
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("reason:"))
            .unwrap_or("")
            .to_string()
    }

    /// Straight from the spec: the first unlifted entity tombstone above the event, or the
    /// first seq tombstone naming it, whichever came first.
    fn deleted_by(&self, r: &StoredEvent) -> u64 {
        if Self::reserved(r) {
            return 0;
        }
        let mut by = 0u64;
        for t in &self.records {
            let hit = match t.event.kind.as_str() {
                "$delete" => {
                    t.event.entity == r.event.entity
                        && t.seq > r.seq
                        && !self.records.iter().any(|x| {
                            x.event.kind == "$restore"
                                && x.event.entity == r.event.entity
                                && x.seq > t.seq
                        })
                }
                "$delete_seqs" => t
                    .event
                    .payload
                    .chunks(8)
                    .any(|c| u64::from_le_bytes(c.try_into().unwrap()) == r.seq),
                _ => false,
            };
            if hit {
                by = if by == 0 { t.seq } else { by.min(t.seq) };
            }
        }
        by
    }

    fn decorated(&self, r: &StoredEvent, reason_tag: bool) -> StoredEvent {
        let mut r = r.clone();
        r.deleted_by = self.deleted_by(&r);
        if reason_tag && r.deleted_by != 0 {
            let t = &self.records[r.deleted_by as usize - 1];
            let reason = Self::reason(t);
            if !reason.is_empty() {
                r.event.tags.push(format!("reason:{reason}"));
            }
        }
        r
    }

    /// Drops the records of the last commit (a crash tore its block).
    fn drop_last_commit(&mut self) {
        if let Some((first, _)) = self.commits.pop() {
            self.records.truncate(first as usize - 1);
        }
    }
}

fn to_event(g: &GenEvent) -> Event {
    Event {
        entity: ENTITIES[g.entity].into(),
        kind: KINDS[g.kind].into(),
        ts: g.ts,
        tags: g.tags.iter().map(|t| TAGS[*t].to_string()).collect(),
        payload: format!("{{\"v\":{}}}", g.ts).into_bytes(),
        id: g.id.map(|i| format!("id-{i}")),
    }
}

/// `count_events_per_minute_bitmap = 0` forces counts through the minute bitmaps; the default
/// mostly reads timestamps on segments this small. Both must agree with the model.
fn opts(count_events_per_minute_bitmap: u64) -> Options {
    Options {
        segment_size_bytes_max: 4096,
        // Some reopens find the active segment sealed at close, others rebuild it.
        seal_at_close_bytes_min: Some(2048),
        // Reopens that rebuild it may load part of it from its checkpoint.
        checkpoint_bytes: Some(1024),
        block_raw_bytes_target: 200,
        count_events_per_minute_bitmap,
        // Compaction runs when the test says (Op::Compact), so every run is reproducible;
        // fanout 2 makes merges happen within a few segments.
        compaction: false,
        compaction_fanout: 2,
        ..Options::default()
    }
}

/// The active segment: the segment file with the highest base seq.
fn active_segment(dir: &Path) -> (std::path::PathBuf, u64) {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let p = segs.pop().unwrap();
    let base: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    (p, base)
}

/// Applies a crash mutation to the active segment's last block. Returns true when it hit
/// the block (so its commit is lost).
fn mutate(dir: &Path, crash: &Crash) -> bool {
    let (path, _) = active_segment(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    if bytes.len() <= SEGMENT_HEADER_LEN {
        return false;
    }
    let mut pos = SEGMENT_HEADER_LEN;
    let mut last = pos;
    while pos < bytes.len() {
        last = pos;
        let h = BlockHeader::decode(&bytes[pos..pos + BLOCK_HEADER_LEN]).unwrap();
        pos += h.total_len() as usize;
    }
    let span = bytes.len() - last;
    match crash {
        Crash::Drop => return false,
        Crash::Cut(f) => {
            let cut = last + (*f as usize % span);
            bytes.truncate(cut);
        }
        Crash::Flip(f, bit) => {
            let at = last + (*f as usize % span);
            bytes[at] ^= 1 << bit;
        }
    }
    std::fs::write(&path, bytes).unwrap();
    true
}

fn run(ops: Vec<Op>, planner: u64) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir().unwrap();
    let mut store = Some(Store::open(d.path(), opts(planner)).unwrap());
    let mut m = Model::default();
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Append(batch) => {
                let events: Vec<Event> = batch.iter().map(to_event).collect();
                let out = s.append(events.clone()).unwrap();
                let first = m.next_seq();
                let mut want = Vec::new();
                let mut dups = 0;
                for e in events {
                    match e.id.as_deref().and_then(|id| m.find_id(id)) {
                        Some(orig) => {
                            want.push(orig);
                            dups += 1;
                        }
                        None => want.push(m.push(e)),
                    }
                }
                if m.next_seq() > first {
                    m.commits.push((first, m.next_seq() - 1));
                }
                prop_assert_eq!(out.seqs, want);
                prop_assert_eq!(out.duplicates, dups);
            }
            Op::DeleteEntity(e) => {
                let t = s.delete(ENTITIES[e], &[], &format!("why{e}")).unwrap();
                let ev = Event {
                    entity: ENTITIES[e].into(),
                    kind: "$delete".into(),
                    ts: 0,
                    tags: vec![format!("reason:why{e}")],
                    payload: vec![],
                    id: None,
                };
                let seq = m.push(ev);
                m.commits.push((seq, seq));
                prop_assert_eq!(t, seq);
                // The store stamped a server time; copy it into the model.
                m.records[seq as usize - 1].event.ts = s.get(seq).unwrap().unwrap().event.ts;
            }
            Op::DeleteSeqs(picks) => {
                let n = m.records.len() as u64;
                let seqs: Vec<u64> = picks
                    .iter()
                    .map(|p| {
                        if n == 0 {
                            1
                        } else {
                            u64::from(*p) % (n + 2) + 1
                        }
                    })
                    .collect();
                let valid = seqs.iter().all(|q| {
                    *q <= n
                        && !Model::reserved(&m.records[*q as usize - 1])
                        && !m.purged.contains(q)
                });
                let res = s.delete("", &seqs, "void");
                if !valid {
                    prop_assert!(
                        res.is_err(),
                        "delete of missing, reserved or purged seqs must fail"
                    );
                    continue;
                }
                let t = res.unwrap();
                let mut sorted = seqs.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let payload = sorted.iter().flat_map(|q| q.to_le_bytes()).collect();
                let ev = Event {
                    entity: String::new(),
                    kind: "$delete_seqs".into(),
                    ts: 0,
                    tags: vec!["reason:void".into()],
                    payload,
                    id: None,
                };
                let seq = m.push(ev);
                m.commits.push((seq, seq));
                prop_assert_eq!(t, seq);
                m.records[seq as usize - 1].event.ts = s.get(seq).unwrap().unwrap().event.ts;
            }
            Op::Restore(e) => {
                let r = s.restore(ENTITIES[e]).unwrap();
                let ev = Event {
                    entity: ENTITIES[e].into(),
                    kind: "$restore".into(),
                    ts: 0,
                    tags: vec![],
                    payload: vec![],
                    id: None,
                };
                let seq = m.push(ev);
                m.commits.push((seq, seq));
                prop_assert_eq!(r, seq);
                m.records[seq as usize - 1].event.ts = s.get(seq).unwrap().unwrap().event.ts;
            }
            Op::History {
                entity,
                reverse,
                after,
                limit,
                from,
                to,
                deleted,
            } => {
                let after_seq = u64::from(after) % (m.records.len() as u64 + 3);
                // A byte bound on a third of the queries, from the same draw.
                let bytes_max = if after % 3 == 0 {
                    u64::from(after % 1500)
                } else {
                    0
                };
                let q = HistoryQuery {
                    entity: ENTITIES[entity].into(),
                    from_ts: from,
                    to_ts: to,
                    after_seq,
                    limit: u32::from(limit),
                    reverse,
                    include_deleted: deleted,
                    bytes_max,
                };
                let got = s.history(&q);
                if let (Some(f), Some(t)) = (from, to) {
                    if f > t {
                        prop_assert!(got.is_err());
                        continue;
                    }
                }
                let mut want: Vec<StoredEvent> = m
                    .visible()
                    .filter(|r| r.event.entity == ENTITIES[entity])
                    .filter(|r| {
                        if reverse {
                            after_seq == 0 || r.seq < after_seq
                        } else {
                            r.seq > after_seq
                        }
                    })
                    .filter(|r| {
                        from.is_none_or(|f| r.event.ts >= f) && to.is_none_or(|t| r.event.ts < t)
                    })
                    .map(|r| m.decorated(r, true))
                    .filter(|r| deleted || (!Model::reserved(r) && r.deleted_by == 0))
                    .collect();
                if reverse {
                    want.reverse();
                }
                if limit > 0 {
                    want.truncate(limit as usize);
                }
                if bytes_max > 0 {
                    // Up to and with the event that brings the answer to the bound.
                    let mut held = 0;
                    let keep = want
                        .iter()
                        .take_while(|e| {
                            let before = held;
                            held += e.size_bytes();
                            before < bytes_max
                        })
                        .count();
                    want.truncate(keep);
                }
                prop_assert_eq!(got.unwrap(), want);
            }
            Op::Count {
                entity,
                kind,
                tags,
                from,
                to,
                bucket,
                deleted,
                reserved,
            } => {
                let kind_name = if reserved {
                    Some("$delete".to_string())
                } else {
                    kind.map(|k| KINDS[k].to_string())
                };
                let bucket =
                    [Bucket::None, Bucket::Minute, Bucket::Hour, Bucket::Day][bucket as usize];
                let q = CountQuery {
                    entity: entity.map(|e| ENTITIES[e].into()),
                    kind: kind_name.clone(),
                    tags: tags.iter().map(|t| TAGS[*t].to_string()).collect(),
                    from_ts: from,
                    to_ts: to,
                    bucket,
                    include_deleted: deleted,
                };
                let got = s.count(&q);
                if let (Some(f), Some(t)) = (from, to) {
                    if f > t {
                        prop_assert!(got.is_err());
                        continue;
                    }
                }
                let got = got.unwrap();
                let mut total = 0u64;
                let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
                for r in m.visible() {
                    let e = &r.event;
                    let matches = q.entity.as_ref().is_none_or(|x| *x == e.entity)
                        && kind_name.as_ref().is_none_or(|k| *k == e.kind)
                        && q.tags.iter().all(|t| e.tags.contains(t))
                        && from.is_none_or(|f| e.ts >= f)
                        && to.is_none_or(|t| e.ts < t)
                        && (!Model::reserved(r) || kind_name.as_deref() == Some(e.kind.as_str()))
                        && (deleted || m.deleted_by(r) == 0);
                    if matches {
                        total += 1;
                        if let Some(w) = bucket.width_ms() {
                            *buckets.entry(e.ts.div_euclid(w) * w).or_default() += 1;
                        }
                    }
                }
                prop_assert_eq!(got.total, total);
                let got_b: Vec<(i64, u64)> =
                    got.buckets.iter().map(|b| (b.start_ts, b.count)).collect();
                prop_assert_eq!(got_b, buckets.into_iter().collect::<Vec<_>>());
            }
            Op::Read { from, limit } => {
                let from = u64::from(from) % (m.records.len() as u64 + 3);
                let got = s.read(from, u32::from(limit)).unwrap();
                let mut want: Vec<StoredEvent> = m
                    .visible()
                    .filter(|r| r.seq >= from.max(1))
                    .map(|r| m.decorated(r, false))
                    .collect();
                if limit > 0 {
                    want.truncate(limit as usize);
                }
                prop_assert_eq!(got, want);
            }
            Op::Compact => {
                let s = store.as_ref().unwrap();
                s.compact_now().unwrap();
                // Every sealed segment is in a cluster file now: history below reads them.
                prop_assert_eq!(s.stats().unwrap().compaction_backlog_segments, 0);
            }
            Op::Purge => {
                // Sealed: every segment but the active one (the highest base seq).
                let (_, active_base) = active_segment(d.path());
                let erase: Vec<u64> = m
                    .visible()
                    .filter(|r| r.seq < active_base && m.deleted_by(r) != 0)
                    .map(|r| r.seq)
                    .collect();
                let r = s.purge_now(Some(std::time::Duration::ZERO)).unwrap();
                prop_assert_eq!(r.events_purged, erase.len() as u64);
                m.purged.extend(erase);
            }
            Op::Seal => s.seal_active().unwrap(),
            Op::Reopen => {
                drop(store.take());
                store = Some(Store::open(d.path(), opts(planner)).unwrap());
                prop_assert_eq!(store.as_ref().unwrap().last_seq(), m.records.len() as u64);
            }
            Op::Crash(c) => {
                drop(store.take());
                let (_, base) = active_segment(d.path());
                let last_in_active = m.commits.last().is_some_and(|(first, _)| *first >= base);
                if last_in_active && mutate(d.path(), &c) {
                    m.drop_last_commit();
                }
                store = Some(Store::open(d.path(), opts(planner)).unwrap());
                prop_assert_eq!(
                    store.as_ref().unwrap().last_seq(),
                    m.records.len() as u64,
                    "after crash {:?}",
                    c
                );
            }
        }
    }
    // Final check: everything, positionally.
    let s = store.as_ref().unwrap();
    let all = s.read(1, 0).unwrap();
    let want: Vec<StoredEvent> = m.visible().map(|r| m.decorated(r, false)).collect();
    prop_assert_eq!(all, want);
    Ok(())
}

proptest! {
#![proptest_config(ProptestConfig {
        // PROPTEST_CASES=2000 for a deeper run; 48 keeps CI fast.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn store_matches_model_across_reopen_and_crashes(ops in proptest::collection::vec(op(), 1..45), bitmap_path in any::<bool>()) {
        run(ops, if bitmap_path { 0 } else { 64 })?;
    }
}
