//! `EventBatch` messages encoded straight from the engine's records.
//!
//! History and Tail stream most of what the server sends. Building a `pb::Event` per event
//! allocates every string and the payload, only for prost to copy them into the message and
//! drop them. [`EncodedPage`] is an [`EventSink`] that writes each event's protobuf bytes as
//! the engine hands it over, borrowed from its decoded block; a page becomes messages by
//! slicing that buffer, without a copy. [`TailPage`] filters a Tail's reads into one. [`EventBatch`] stands in for the generated type (`build.rs` maps
//! `echolog.v1.EventBatch` here): decoded batches fill `events` as the generated type did, and
//! `encoded` carries the pre-encoded events on the way out. The bytes are exactly prost's
//! encoding of the same `pb::Event` (a proptest below compares them byte for byte).

use bytes::{BufMut, Bytes};
use echolog::{EventRef, EventSink, REASON_TAG_PREFIX};
use prost::encoding::{self, encode_varint, encoded_len_varint, DecodeContext, WireType};

use crate::pb;

/// A History/Tail message: `repeated Event events = 1`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct EventBatch {
    /// Events as decoded (a client's side), or built to send.
    pub events: Vec<pb::Event>,
    /// Further events, already encoded as entries of field 1, sent after `events`.
    pub encoded: Bytes,
}

impl prost::Message for EventBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(1, &self.events, buf);
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            encoding::message::merge_repeated(wire_type, &mut self.events, buf, ctx)
        } else {
            encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(1, &self.events) + self.encoded.len()
    }

    fn clear(&mut self) {
        self.events.clear();
        self.encoded = Bytes::new();
    }
}

/// Field numbers of `echolog.v1.Event`.
mod field {
    pub const SEQ: u32 = 1;
    pub const ENTITY: u32 = 2;
    pub const KIND: u32 = 3;
    pub const TS: u32 = 4;
    pub const TAGS: u32 = 5;
    pub const PAYLOAD: u32 = 6;
    pub const ID: u32 = 7;
    pub const DELETED_BY: u32 = 8;
}

/// Key byte of field `tag` (every field of `Event` and `EventBatch` is below 16).
fn key(tag: u32, wire_type: WireType) -> u8 {
    debug_assert!(tag < 16);
    ((tag << 3) | wire_type as u32) as u8
}

fn len_delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Bytes of `ev` encoded as an `Event` body, as prost encodes it: fields in number order,
/// proto3 defaults (0, empty) left out, the reason tag after the record's tags.
fn event_body_len(ev: &EventRef<'_>) -> usize {
    let varint = |v: u64| if v == 0 { 0 } else { 1 + encoded_len_varint(v) };
    let text = |s: usize| if s == 0 { 0 } else { len_delimited_len(s) };
    let tags: usize = ev
        .tag_bytes()
        .map(|t| len_delimited_len(t.len()))
        .sum::<usize>()
        + ev.reason.map_or(0, |why| {
            len_delimited_len(REASON_TAG_PREFIX.len() + why.len())
        });
    varint(ev.seq)
        + text(ev.entity().len())
        + text(ev.kind().len())
        + varint(ev.ts() as u64)
        + tags
        + text(ev.payload().len())
        + text(ev.id().len())
        + varint(ev.deleted_by)
}

fn put_varint_field(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        buf.push(key(tag, WireType::Varint));
        encode_varint(v, buf);
    }
}

fn put_bytes_field(buf: &mut Vec<u8>, tag: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    buf.push(key(tag, WireType::LengthDelimited));
    encode_varint(len as u64, buf);
    for p in parts {
        buf.extend_from_slice(p);
    }
}

fn put_text_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_bytes_field(buf, tag, &[bytes]);
    }
}

/// Appends `ev` to `buf` as one entry of `EventBatch.events`: key, length, `Event` body.
pub fn put_event_entry(buf: &mut Vec<u8>, ev: &EventRef<'_>) {
    let body_len = event_body_len(ev);
    let start = buf.len();
    buf.reserve(len_delimited_len(body_len));
    buf.push(key(1, WireType::LengthDelimited));
    encode_varint(body_len as u64, buf);
    let body_start = buf.len();
    put_varint_field(buf, field::SEQ, ev.seq);
    put_text_field(buf, field::ENTITY, ev.entity().as_bytes());
    put_text_field(buf, field::KIND, ev.kind().as_bytes());
    put_varint_field(buf, field::TS, ev.ts() as u64);
    for t in ev.tag_bytes() {
        put_bytes_field(buf, field::TAGS, &[t]);
    }
    if let Some(why) = ev.reason {
        put_bytes_field(
            buf,
            field::TAGS,
            &[REASON_TAG_PREFIX.as_bytes(), why.as_bytes()],
        );
    }
    put_text_field(buf, field::PAYLOAD, ev.payload());
    put_text_field(buf, field::ID, ev.id().as_bytes());
    put_varint_field(buf, field::DELETED_BY, ev.deleted_by);
    debug_assert_eq!(buf.len() - body_start, body_len);
    debug_assert_eq!(buf.len() - start, len_delimited_len(body_len));
}

/// One engine page of a history, encoded: the events' entries back to back, and per event
/// where its entry ends, its seq and the engine's byte measure so far (for the paging).
#[derive(Default)]
pub struct EncodedPage {
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// End offset of the event's entry in `buf`.
    end: usize,
    seq: u64,
    /// `EventRef::size_bytes` of the events up to this one: what the engine bounds pages by.
    size_bytes_end: u64,
}

impl EventSink for EncodedPage {
    fn push(&mut self, ev: &EventRef<'_>) {
        put_event_entry(&mut self.buf, ev);
        let entry = Entry {
            end: self.buf.len(),
            seq: ev.seq,
            size_bytes_end: self.size_bytes() + ev.size_bytes(),
        };
        self.entries.push(entry);
    }

    fn truncate(&mut self, n: usize) {
        self.entries.truncate(n);
        self.buf.truncate(self.entries.last().map_or(0, |e| e.end));
    }
}

impl EncodedPage {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seq of the last event, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries.last().map(|e| e.seq)
    }

    /// `EventRef::size_bytes` of the events, summed.
    pub fn size_bytes(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.size_bytes_end)
    }

    /// The page as messages of at most `events_max` events and `bytes_max` bytes each (an
    /// event larger than that goes alone), each with its size in bytes. Slices of one
    /// buffer: nothing is copied.
    pub fn into_batches(self, events_max: usize, bytes_max: usize) -> Vec<(EventBatch, usize)> {
        let buf = Bytes::from(self.buf);
        let mut out = Vec::new();
        // The open message: from this offset, holding this many events.
        let (mut from, mut held) = (0usize, 0usize);
        let mut prev_end = 0usize;
        for e in &self.entries {
            if held > 0 && (e.end - from > bytes_max || held >= events_max) {
                out.push(batch(&buf, from, prev_end));
                (from, held) = (prev_end, 0);
            }
            held += 1;
            prev_end = e.end;
        }
        if held > 0 {
            out.push(batch(&buf, from, prev_end));
        }
        out
    }
}

/// What a Tail passes on: events up to `to_seq` that match its entity, kind and tags.
pub struct TailFilter {
    pub entity: Option<String>,
    pub kind: Option<String>,
    pub tags: Vec<String>,
    pub to_seq: Option<u64>,
}

/// One engine read of a Tail: every event read is offered, the matching ones are encoded.
pub struct TailPage<'f> {
    filter: &'f TailFilter,
    pub matched: EncodedPage,
    /// Events read up to `to_seq`, matching or not, and about the memory they took
    /// (`approx_bytes`), to size the next read.
    pub read: usize,
    pub read_bytes: usize,
}

impl<'f> TailPage<'f> {
    pub fn new(filter: &'f TailFilter) -> Self {
        TailPage {
            filter,
            matched: EncodedPage::default(),
            read: 0,
            read_bytes: 0,
        }
    }
}

/// About the memory one event read takes, bytes (a decoded block's share and a page entry).
pub fn approx_bytes(ev: &EventRef<'_>) -> usize {
    let tags: usize = ev.tag_bytes().map(|t| t.len() + 24).sum();
    ev.payload().len() + ev.entity().len() + ev.kind().len() + tags + 128
}

impl EventSink for TailPage<'_> {
    fn push(&mut self, ev: &EventRef<'_>) {
        let f = self.filter;
        if f.to_seq.is_some_and(|to| ev.seq > to) {
            return;
        }
        self.read += 1;
        self.read_bytes += approx_bytes(ev);
        let matches = f.entity.as_ref().is_none_or(|x| x == ev.entity())
            && f.kind.as_ref().is_none_or(|k| k == ev.kind())
            && f.tags
                .iter()
                .all(|t| ev.tag_bytes().any(|x| x == t.as_bytes()));
        if matches {
            self.matched.push(ev);
        }
    }

    fn truncate(&mut self, _n: usize) {
        // Positional reads never take back what they gave (only history's fallback from a
        // damaged cluster file does).
        debug_assert!(false, "a Tail read truncated");
    }
}

fn batch(buf: &Bytes, from: usize, until: usize) -> (EventBatch, usize) {
    let b = EventBatch {
        events: Vec::new(),
        encoded: buf.slice(from..until),
    };
    (b, until - from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use echolog::{Event, HistoryQuery, Options, Store};
    use proptest::prelude::*;
    use prost::Message;

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            0..3u8,
            prop::sample::select(vec!["created", "price_changed", "k"]),
            prop_oneof![
                Just(0i64),
                1..1_000_000i64,
                -1_000_000..0i64,
                Just(1i64 << 59)
            ],
            prop::collection::vec("[a-z:é0-9]{1,12}", 0..4),
            prop::collection::vec(any::<u8>(), 0..300),
            prop::option::of("[a-z0-9]{1,8}"),
        )
            .prop_map(|(e, kind, ts, tags, payload, id)| Event {
                entity: format!("product:{e}"),
                kind: kind.into(),
                ts,
                tags,
                payload,
                id,
            })
    }

    /// prost's encoding of what `Store::history` returns, as entries of field 1.
    fn prost_entries(s: &Store, q: &HistoryQuery) -> (Vec<u8>, Vec<pb::Event>) {
        let events: Vec<pb::Event> = s
            .history(q)
            .unwrap()
            .into_iter()
            .map(crate::to_pb)
            .collect();
        let mut buf = Vec::new();
        encoding::message::encode_repeated(1, &events, &mut buf);
        (buf, events)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Byte for byte what prost writes for the same events, deleted ones with their reason
        /// included, and batches that decode back to them.
        #[test]
        fn an_encoded_page_is_prosts_encoding_of_the_same_history(
            events in prop::collection::vec(arb_event(), 1..60),
            delete_entity in any::<bool>(),
            delete_seqs in prop::collection::vec(1..60u64, 0..6),
            reverse in any::<bool>(),
            events_max in 1..8usize,
            bytes_max in 1..2000usize,
        ) {
            let d = tempfile::tempdir().unwrap();
            let s = Store::open(d.path(), Options::default()).unwrap();
            s.append(events).unwrap();
            // Events with a repeated id are stored once: the last seq, not the count, bounds
            // the seqs to delete.
            let n = s.last_seq();
            if delete_entity {
                s.delete("product:1", &[], "gdpr request 42").unwrap();
            }
            let seqs: Vec<u64> = delete_seqs.into_iter().filter(|q| *q <= n).collect();
            if !seqs.is_empty() {
                s.delete("", &seqs, "").unwrap();
            }
            for entity in ["product:0", "product:1", "product:2"] {
                for include_deleted in [false, true] {
                    let q = HistoryQuery {
                        entity: entity.into(),
                        reverse,
                        include_deleted,
                        ..Default::default()
                    };
                    let mut page = EncodedPage::default();
                    s.history_into(&q, &mut page).unwrap();
                    let (want, want_events) = prost_entries(&s, &q);
                    prop_assert_eq!(&page.buf, &want);
                    prop_assert_eq!(page.len(), want_events.len());
                    prop_assert_eq!(page.last_seq(), want_events.last().map(|e| e.seq));
                    let mut got = Vec::new();
                    for (b, len) in page.into_batches(events_max, bytes_max) {
                        prop_assert_eq!(b.encoded.len(), len);
                        prop_assert!(b.encoded_len() == len);
                        let decoded = EventBatch::decode(b.encode_to_vec().as_slice()).unwrap();
                        let n = decoded.events.len();
                        prop_assert!(n >= 1 && n <= events_max);
                        prop_assert!(n == 1 || len <= bytes_max);
                        got.extend(decoded.events);
                    }
                    prop_assert_eq!(got, want_events);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// A Tail read encodes exactly the events of the same positional read that match its
        /// filter and lie up to `to_seq`, and counts every event read up to `to_seq`.
        #[test]
        fn a_tail_page_encodes_the_matching_events_of_a_positional_read(
            events in prop::collection::vec(arb_event(), 1..60),
            from_seq in 1..70u64,
            limit in 0..40u32,
            entity in prop::option::of(0..3u8),
            kind in prop::option::of(prop::sample::select(vec!["created", "k"])),
            tag in prop::option::of("[a-z:é0-9]{1,2}"),
            to_seq in prop::option::of(1..70u64),
            deleted in prop::collection::vec(1..60u64, 0..4),
        ) {
            let d = tempfile::tempdir().unwrap();
            let s = Store::open(d.path(), Options::default()).unwrap();
            s.append(events).unwrap();
            let n = s.last_seq();
            let deleted: Vec<u64> = deleted.into_iter().filter(|q| *q <= n).collect();
            if !deleted.is_empty() {
                s.delete("", &deleted, "why").unwrap();
            }
            let filter = TailFilter {
                entity: entity.map(|e| format!("product:{e}")),
                kind: kind.map(str::to_owned),
                tags: tag.into_iter().collect(),
                to_seq,
            };
            let mut page = TailPage::new(&filter);
            let next_seq = s.read_durable_into(from_seq, limit, &mut page).unwrap();
            let want = s.read_durable_page(from_seq, limit).unwrap();
            prop_assert_eq!(next_seq, want.next_seq);
            let upto: Vec<_> = want
                .events
                .into_iter()
                .filter(|e| filter.to_seq.is_none_or(|to| e.seq <= to))
                .collect();
            prop_assert_eq!(page.read, upto.len());
            let matching: Vec<pb::Event> = upto
                .into_iter()
                .filter(|e| {
                    filter.entity.as_ref().is_none_or(|x| *x == e.event.entity)
                        && filter.kind.as_ref().is_none_or(|k| *k == e.event.kind)
                        && filter.tags.iter().all(|t| e.event.tags.contains(t))
                })
                .map(crate::to_pb)
                .collect();
            let mut bytes = Vec::new();
            encoding::message::encode_repeated(1, &matching, &mut bytes);
            prop_assert_eq!(page.matched.buf, bytes);
        }
    }

    #[test]
    fn a_batch_with_decoded_and_encoded_events_sends_both_in_order() {
        let e = |seq: u64| pb::Event {
            seq,
            entity: "e".into(),
            ..Default::default()
        };
        let mut tail = Vec::new();
        encoding::message::encode_repeated(1, &[e(3)], &mut tail);
        let b = EventBatch {
            events: vec![e(1), e(2)],
            encoded: Bytes::from(tail),
        };
        let decoded = EventBatch::decode(b.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.events, vec![e(1), e(2), e(3)]);
        assert_eq!(b.encoded_len(), b.encode_to_vec().len());
    }

    #[test]
    fn truncating_a_page_drops_the_bytes_of_the_events_past_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Options::default()).unwrap();
        let ev = |i: i64| Event {
            entity: "e".into(),
            kind: "k".into(),
            ts: i,
            ..Default::default()
        };
        s.append((1..=5).map(ev).collect()).unwrap();
        let q = HistoryQuery {
            entity: "e".into(),
            ..Default::default()
        };
        let mut page = EncodedPage::default();
        s.history_into(&q, &mut page).unwrap();
        let sizes: Vec<u64> = s
            .history(&q)
            .unwrap()
            .iter()
            .map(|e| e.size_bytes())
            .collect();
        page.truncate(2);
        assert_eq!(page.len(), 2);
        assert_eq!(page.last_seq(), Some(2));
        assert_eq!(page.size_bytes(), sizes[0] + sizes[1]);
        let q2 = HistoryQuery { limit: 2, ..q };
        assert_eq!(page.buf, prost_entries(&s, &q2).0);
    }
}
