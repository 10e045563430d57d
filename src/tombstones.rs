//! Tombstone state: which events are deleted, by which tombstone, for what reason.
//!
//! Tombstones are records in the log (reserved kinds `$delete`, `$delete_seqs`, `$restore`).
//! This in-memory state is derived from them, so that "is this event deleted?" never scans the
//! log. At each seal it is saved to the `TOMBSTONES` file; at open it is loaded from there and
//! completed from the active segment.

use echolog_format::tombstone_file::{
    TombstoneEntry, TYPE_DELETE_ENTITY, TYPE_DELETE_SEQS, TYPE_RESTORE,
};
use rustc_hash::FxHashMap;

use crate::key_map::KeyMap;

pub const TOMBSTONES_FILE: &str = "TOMBSTONES";

pub const KIND_DELETE: &str = "$delete";
pub const KIND_DELETE_SEQS: &str = "$delete_seqs";
pub const KIND_RESTORE: &str = "$restore";
pub const RESERVED_KINDS: [&str; 3] = [KIND_DELETE, KIND_DELETE_SEQS, KIND_RESTORE];
/// Kind of the record purge leaves where an event was: no entity, tags or payload, only the
/// seq (so seqs stay dense), the event time and the idempotency id (so a retried append of a
/// purged event is still answered as a duplicate). Never shown to readers, never counted.
pub const KIND_PURGED: &str = "$purged";
/// Kinds counts leave out unless the query names one.
pub const UNCOUNTED_KINDS: [&str; 4] = [KIND_DELETE, KIND_DELETE_SEQS, KIND_RESTORE, KIND_PURGED];
pub const REASON_TAG_PREFIX: &str = "reason:";

#[derive(Debug, Default, Clone)]
struct EntityState {
    /// Seqs of the entity's `$delete` records, ascending.
    deletes: Vec<u64>,
    /// Seq of the entity's last `$restore` (0: never restored). It lifts every delete below it.
    restored_at: u64,
}

impl EntityState {
    /// The first delete tombstone above `seq` that no restore lifted.
    fn deleted_by(&self, seq: u64) -> u64 {
        let i = self.deletes.partition_point(|t| *t <= seq);
        match self.deletes.get(i) {
            Some(t) if *t > self.restored_at => *t,
            // deletes are ascending: if this one is lifted, a later one may not be.
            Some(_) => self.deletes[i..]
                .iter()
                .copied()
                .find(|t| *t > self.restored_at)
                .unwrap_or(0),
            None => 0,
        }
    }

    /// Events with seq below this are deleted (0: none).
    fn deleted_below(&self) -> u64 {
        match self.deletes.last() {
            Some(t) if *t > self.restored_at => *t,
            _ => 0,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Tombstones {
    entries: Vec<TombstoneEntry>,
    /// Keyed by entity names a client sent, so seeded (`key_map`).
    entities: KeyMap<String, EntityState>,
    seqs: FxHashMap<u64, u64>,
    reasons: FxHashMap<u64, String>,
    /// Bumped on every change, so cached derived sets know when to recompute.
    pub generation: u64,
}

impl Tombstones {
    pub fn entries(&self) -> &[TombstoneEntry] {
        &self.entries
    }

    /// Applies one tombstone or restore record. Records must come in seq order; a record at or
    /// below the last applied seq is ignored (replaying after a crash is harmless).
    pub fn apply(&mut self, e: TombstoneEntry) {
        if self.entries.last().is_some_and(|l| l.seq >= e.seq) {
            return;
        }
        match e.kind {
            TYPE_DELETE_ENTITY => {
                self.entities
                    .entry(e.entity.clone())
                    .or_default()
                    .deletes
                    .push(e.seq);
            }
            TYPE_DELETE_SEQS => {
                for s in &e.seqs {
                    self.seqs.entry(*s).or_insert(e.seq);
                }
            }
            TYPE_RESTORE => {
                self.entities
                    .entry(e.entity.clone())
                    .or_default()
                    .restored_at = e.seq;
            }
            _ => return,
        }
        if !e.reason.is_empty() {
            self.reasons.insert(e.seq, e.reason.clone());
        }
        self.entries.push(e);
        self.generation += 1;
    }

    /// Seq of the tombstone deleting event `seq` of `entity`, or 0 when it is live.
    pub fn deleted_by(&self, entity: &str, seq: u64) -> u64 {
        let by_entity = self.entities.get(entity).map_or(0, |s| s.deleted_by(seq));
        let by_seq = self.seqs.get(&seq).copied().unwrap_or(0);
        match (by_entity, by_seq) {
            (0, s) | (s, 0) => s,
            (a, b) => a.min(b),
        }
    }

    /// Seq of the tombstone deleting the record of `kind` at `seq` of `entity`, or 0 when it
    /// is live. Reserved-kind records (tombstones and restores themselves) are never deleted:
    /// the one place that rule is written, for every read path.
    pub fn record_deleted_by(&self, kind: &str, entity: &str, seq: u64) -> u64 {
        if kind.starts_with(crate::event::RESERVED_KIND_PREFIX) {
            0
        } else {
            self.deleted_by(entity, seq)
        }
    }

    /// The entity tombstone deleting event `seq` of `entity` (0: none, or lifted by a restore).
    pub fn entity_deleted_by(&self, entity: &str, seq: u64) -> u64 {
        self.entities.get(entity).map_or(0, |s| s.deleted_by(seq))
    }

    /// The seq tombstone deleting event `seq` (0: none).
    pub fn seq_deleted_by(&self, seq: u64) -> u64 {
        self.seqs.get(&seq).copied().unwrap_or(0)
    }

    /// Entities with at least one delete tombstone (lifted or not).
    pub fn entities_with_deletes(&self) -> impl Iterator<Item = &str> {
        self.entities
            .iter()
            .filter(|(_, s)| !s.deletes.is_empty())
            .map(|(e, _)| e.as_str())
    }

    pub fn reason(&self, tombstone_seq: u64) -> Option<&str> {
        self.reasons.get(&tombstone_seq).map(String::as_str)
    }

    /// Entities with deletes in force: (entity, events below this seq are deleted).
    pub fn deleted_entities(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entities
            .iter()
            .filter_map(|(e, s)| Some((e.as_str(), s.deleted_below())).filter(|(_, b)| *b > 0))
    }

    /// Single events deleted by seq tombstones.
    pub fn deleted_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.seqs.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The reserved-kind record of an entry, as written to the log: (kind, entity, tags, payload).
pub fn entry_to_record(e: &TombstoneEntry) -> (&'static str, Vec<String>, Vec<u8>) {
    match e.kind {
        TYPE_DELETE_ENTITY => (
            KIND_DELETE,
            vec![format!("{REASON_TAG_PREFIX}{}", e.reason)],
            Vec::new(),
        ),
        TYPE_DELETE_SEQS => {
            let mut payload = Vec::with_capacity(e.seqs.len() * 8);
            for s in &e.seqs {
                payload.extend_from_slice(&s.to_le_bytes());
            }
            (
                KIND_DELETE_SEQS,
                vec![format!("{REASON_TAG_PREFIX}{}", e.reason)],
                payload,
            )
        }
        _ => (KIND_RESTORE, Vec::new(), Vec::new()),
    }
}

/// The entry a reserved-kind record stands for, or None for any other record.
pub fn record_to_entry(
    seq: u64,
    kind: &str,
    entity: &str,
    tags: &[&str],
    payload: &[u8],
) -> Option<TombstoneEntry> {
    let reason = tags
        .iter()
        .find_map(|t| t.strip_prefix(REASON_TAG_PREFIX))
        .unwrap_or("")
        .to_owned();
    let (kind, seqs) = match kind {
        KIND_DELETE => (TYPE_DELETE_ENTITY, Vec::new()),
        KIND_DELETE_SEQS => (
            TYPE_DELETE_SEQS,
            payload
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        KIND_RESTORE => (TYPE_RESTORE, Vec::new()),
        _ => return None,
    };
    Some(TombstoneEntry {
        kind,
        seq,
        entity: entity.to_owned(),
        reason,
        seqs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: u8, seq: u64, entity: &str, seqs: Vec<u64>) -> TombstoneEntry {
        TombstoneEntry {
            kind,
            seq,
            entity: entity.into(),
            reason: "r".into(),
            seqs,
        }
    }

    #[test]
    fn entity_delete_covers_only_earlier_events_until_restored() {
        let mut t = Tombstones::default();
        t.apply(entry(TYPE_DELETE_ENTITY, 10, "a", vec![]));
        assert_eq!(t.deleted_by("a", 3), 10);
        assert_eq!(t.deleted_by("a", 11), 0);
        assert_eq!(t.deleted_by("b", 3), 0);
        t.apply(entry(TYPE_DELETE_ENTITY, 20, "a", vec![]));
        assert_eq!(t.deleted_by("a", 3), 10);
        assert_eq!(t.deleted_by("a", 15), 20);
        t.apply(entry(TYPE_RESTORE, 25, "a", vec![]));
        assert_eq!(t.deleted_by("a", 3), 0);
        assert_eq!(t.deleted_by("a", 15), 0);
        t.apply(entry(TYPE_DELETE_ENTITY, 30, "a", vec![]));
        assert_eq!(
            t.deleted_by("a", 3),
            30,
            "a later delete covers everything below it again"
        );
        assert_eq!(t.deleted_entities().collect::<Vec<_>>(), vec![("a", 30)]);
    }

    #[test]
    fn reserved_records_are_never_deleted() {
        let mut t = Tombstones::default();
        t.apply(entry(TYPE_DELETE_ENTITY, 10, "a", vec![]));
        t.apply(entry(TYPE_DELETE_SEQS, 11, "", vec![4]));
        assert_eq!(t.record_deleted_by("price", "a", 3), 10);
        assert_eq!(t.record_deleted_by("$delete", "a", 3), 0);
        assert_eq!(t.record_deleted_by("price", "b", 4), 11);
        assert_eq!(t.record_deleted_by("$delete", "b", 4), 0);
    }

    #[test]
    fn seq_deletes_survive_restore() {
        let mut t = Tombstones::default();
        t.apply(entry(TYPE_DELETE_SEQS, 10, "", vec![3, 4]));
        t.apply(entry(TYPE_RESTORE, 11, "a", vec![]));
        assert_eq!(t.deleted_by("a", 3), 10);
        assert_eq!(t.deleted_by("a", 5), 0);
        assert_eq!(t.reason(10), Some("r"));
    }

    #[test]
    fn records_round_trip_through_log_form() {
        for e in [
            entry(TYPE_DELETE_ENTITY, 5, "a", vec![]),
            entry(TYPE_DELETE_SEQS, 6, "", vec![1, 2]),
            TombstoneEntry {
                kind: TYPE_RESTORE,
                seq: 7,
                entity: "a".into(),
                reason: String::new(),
                seqs: vec![],
            },
        ] {
            let (kind, tags, payload) = entry_to_record(&e);
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            assert_eq!(
                record_to_entry(e.seq, kind, &e.entity, &tags, &payload),
                Some(e)
            );
        }
    }
}
