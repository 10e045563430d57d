//! Events as appended and as read back, and their validation against the API's limits.

use echolog_format::limits::{
    ENTITY_BYTES_MAX, ID_BYTES_MAX, KIND_BYTES_MAX, TAGS_COUNT_MAX, TAG_BYTES_MAX,
};
use echolog_format::record::RecordRef;

use crate::error::Error;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The history key, e.g. `product:123`.
    pub entity: String,
    /// What happened, e.g. `price_changed`. Kinds starting with `$` are reserved.
    pub kind: String,
    /// Event time, ms since the Unix epoch; 0 means "the server's time at append".
    pub ts: i64,
    /// `key:value` tags, e.g. `tenant:t42`, kept in order.
    pub tags: Vec<String>,
    /// Opaque bytes, usually JSON.
    pub payload: Vec<u8>,
    /// Idempotency key.
    pub id: Option<String>,
}

/// An event as stored, with its seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
    /// Seq of the tombstone that deleted this event, 0 when live.
    pub deleted_by: u64,
}

impl StoredEvent {
    /// The bytes this event holds in memory, roughly: its strings and payload, plus 32.
    pub fn size_bytes(&self) -> u64 {
        let e = &self.event;
        let tags: usize = e.tags.iter().map(String::len).sum();
        let id = e.id.as_ref().map_or(0, String::len);
        (e.entity.len() + e.kind.len() + tags + e.payload.len() + id + 32) as u64
    }

    pub(crate) fn from_record(seq: u64, r: &RecordRef<'_>) -> Self {
        StoredEvent {
            seq,
            event: Event {
                entity: r.entity.to_owned(),
                kind: r.kind.to_owned(),
                ts: r.ts,
                tags: r.tags().map(str::to_owned).collect(),
                payload: r.payload.to_vec(),
                id: if r.id.is_empty() {
                    None
                } else {
                    Some(r.id.to_owned())
                },
            },
            deleted_by: 0,
        }
    }
}

/// A stored event borrowed from its decoded block, as [`crate::Store::history_into`] hands it
/// to a [`crate::EventSink`]: a caller that re-encodes events (the gRPC server) copies each
/// field once, where a [`StoredEvent`] allocates every string first.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub seq: u64,
    record: RecordRef<'a>,
    /// Seq of the tombstone that deleted this event, 0 when live.
    pub deleted_by: u64,
    /// With `include_deleted`, the reason of the tombstone that deleted this event. History
    /// returns it as the event's last tag, [`crate::REASON_TAG_PREFIX`] then the reason.
    pub reason: Option<&'a str>,
}

impl<'a> EventRef<'a> {
    pub(crate) fn new(
        seq: u64,
        record: RecordRef<'a>,
        deleted_by: u64,
        reason: Option<&'a str>,
    ) -> Self {
        EventRef {
            seq,
            record,
            deleted_by,
            reason,
        }
    }

    pub fn entity(&self) -> &'a str {
        self.record.entity
    }

    pub fn kind(&self) -> &'a str {
        self.record.kind
    }

    pub fn ts(&self) -> i64 {
        self.record.ts
    }

    /// The tags as appended, in order (without the reason tag).
    pub fn tags(&self) -> impl Iterator<Item = &'a str> {
        self.record.tags()
    }

    /// [`EventRef::tags`] as bytes, without checking their UTF-8 a second time.
    pub fn tag_bytes(&self) -> impl Iterator<Item = &'a [u8]> {
        self.record.tag_bytes()
    }

    pub fn payload(&self) -> &'a [u8] {
        self.record.payload
    }

    /// The idempotency key; empty when the event has none.
    pub fn id(&self) -> &'a str {
        self.record.id
    }

    /// [`StoredEvent::size_bytes`] of [`EventRef::to_stored`], without building it.
    pub fn size_bytes(&self) -> u64 {
        let r = &self.record;
        let tags: usize = self.tag_bytes().map(<[u8]>::len).sum::<usize>()
            + self
                .reason
                .map_or(0, |why| crate::REASON_TAG_PREFIX.len() + why.len());
        (r.entity.len() + r.kind.len() + tags + r.payload.len() + r.id.len() + 32) as u64
    }

    /// The owned event, the reason (if any) appended as a last tag.
    pub fn to_stored(&self) -> StoredEvent {
        let mut ev = StoredEvent::from_record(self.seq, &self.record);
        ev.deleted_by = self.deleted_by;
        if let Some(why) = self.reason {
            ev.event
                .tags
                .push(format!("{}{why}", crate::REASON_TAG_PREFIX));
        }
        ev
    }
}

/// Largest |ts| accepted, ms (about 36 million years): keeps every bucket boundary
/// (`floor(ts / width) * width`) representable in an i64.
pub const TS_ABS_MAX_MS: i64 = 1 << 60;

/// Prefix of reserved kinds (tombstones, restores).
pub const RESERVED_KIND_PREFIX: char = '$';

/// Upper bound of one event's encoded size, bytes, used for batch-size accounting.
pub(crate) fn encoded_len_max(e: &Event) -> usize {
    let tags: usize = e.tags.iter().map(|t| t.len() + 10).sum();
    e.entity.len()
        + e.kind.len()
        + 8
        + tags
        + 10
        + e.payload.len()
        + 10
        + e.id.as_ref().map_or(0, |i| i.len())
        + 30
}

fn check_text(
    index: usize,
    field: &str,
    value: &str,
    max: usize,
    no_control: bool,
) -> Result<(), Error> {
    if value.is_empty() || value.len() > max {
        return Err(Error::invalid(format!(
            "event {index}: {field} must be 1..={max} bytes, got {}",
            value.len()
        )));
    }
    if no_control && value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "event {index}: {field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Validates one user-supplied event (reserved kinds are refused: only the store writes them).
pub(crate) fn validate_event(
    index: usize,
    e: &Event,
    payload_bytes_max: usize,
) -> Result<(), Error> {
    check_text(index, "entity", &e.entity, ENTITY_BYTES_MAX, true)?;
    check_text(index, "kind", &e.kind, KIND_BYTES_MAX, true)?;
    if e.kind.starts_with(RESERVED_KIND_PREFIX) {
        return Err(Error::invalid(format!(
            "event {index}: kind {:?} starts with '$', which is reserved for the store's own records",
            e.kind
        )));
    }
    if e.ts.unsigned_abs() > TS_ABS_MAX_MS as u64 {
        return Err(Error::invalid(format!(
            "event {index}: ts must be within ±{TS_ABS_MAX_MS} ms of the epoch, got {}",
            e.ts
        )));
    }
    if e.tags.len() > TAGS_COUNT_MAX {
        return Err(Error::invalid(format!(
            "event {index}: tags: at most {TAGS_COUNT_MAX} tags, got {}",
            e.tags.len()
        )));
    }
    for (t, tag) in e.tags.iter().enumerate() {
        check_text(index, &format!("tags[{t}]"), tag, TAG_BYTES_MAX, true)?;
    }
    if e.payload.len() > payload_bytes_max {
        return Err(Error::invalid(format!(
            "event {index}: payload must be at most {payload_bytes_max} bytes, got {}",
            e.payload.len()
        )));
    }
    if let Some(id) = &e.id {
        check_text(index, "id", id, ID_BYTES_MAX, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Event {
        Event {
            entity: "product:1".into(),
            kind: "price_changed".into(),
            ts: 5,
            tags: vec!["tenant:t1".into()],
            payload: b"{}".to_vec(),
            id: Some("x".into()),
        }
    }

    #[test]
    fn every_field_limit_is_enforced_and_named() {
        type Mutation = Box<dyn Fn(&mut Event)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("entity", Box::new(|e| e.entity.clear())),
            ("entity", Box::new(|e| e.entity = "x".repeat(257))),
            ("entity", Box::new(|e| e.entity = "a\nb".into())),
            ("kind", Box::new(|e| e.kind.clear())),
            ("kind", Box::new(|e| e.kind = "k".repeat(129))),
            ("kind", Box::new(|e| e.kind = "$delete".into())),
            ("tags", Box::new(|e| e.tags = vec!["t".into(); 33])),
            ("tags[0]", Box::new(|e| e.tags = vec![String::new()])),
            (
                "tags[1]",
                Box::new(|e| e.tags = vec!["a".into(), "t".repeat(257)]),
            ),
            ("payload", Box::new(|e| e.payload = vec![0; 1025])),
            ("id", Box::new(|e| e.id = Some(String::new()))),
            ("id", Box::new(|e| e.id = Some("i".repeat(129)))),
            ("ts", Box::new(|e| e.ts = i64::MIN)),
            ("ts", Box::new(|e| e.ts = (1 << 60) + 1)),
        ];
        assert!(validate_event(0, &ok(), 1024).is_ok());
        for (field, f) in cases {
            let mut e = ok();
            f(&mut e);
            let msg = validate_event(3, &e, 1024).unwrap_err().to_string();
            assert!(
                msg.contains(field) && msg.contains("event 3"),
                "{field}: {msg}"
            );
        }
        let mut e = ok();
        e.entity = "x".repeat(256);
        e.kind = "k".repeat(128);
        e.tags = vec!["t".repeat(256); 32];
        e.payload = vec![1; 1024];
        e.id = Some("i".repeat(128));
        assert!(validate_event(0, &e, 1024).is_ok(), "limits are inclusive");
    }
}
