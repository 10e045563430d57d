//! The in-memory index of one segment: built while appending to the active segment (and while
//! scanning a segment at open or for a rebuild), turned into an index file when sealing.
//!
//! Postings are plain `Vec<u32>` of record ordinals while appending: a push is far cheaper than
//! a roaring insert into one of 100k bitmaps. They become roaring bitmaps once, at seal time.

use echolog_format::index::{
    encode_block_table, encode_dict, encode_hour_counts, encode_ids, minute_key, BlockEntry,
    IndexHeader, IndexWriter, HOUR_MS, SECTION_BLOCKS, SECTION_ENTITIES, SECTION_IDS,
    SECTION_KINDS, SECTION_MINUTES, SECTION_TAGS, SECTION_TAG_HOURS, SECTION_TS,
};
use echolog_format::limits::TAGS_COUNT_MAX;
use echolog_format::postings::{encode_roaring, encode_runs, encode_varints};
use echolog_format::record::RecordRef;
use echolog_format::ts_column::encode_ts_column;
use roaring::RoaringBitmap;

use crate::key_map::KeyMap;
use crate::tombstones::UNCOUNTED_KINDS;

/// Width of the finest time bucket kept in indexes, ms.
pub const MINUTE_MS: i64 = 60_000;

pub fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Stable 64-bit hash of an idempotency key (xxh3, seed 0): persisted in index files.
pub fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// A block of the active segment: its table entry and its length in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemBlock {
    pub entry: BlockEntry,
    pub len: u32,
}

/// Two indexes are equal when they hold the same postings, whatever the order their maps were
/// filled in (a checkpoint's load against a scan: `verify` and the tests compare them).
#[derive(Debug, Default, PartialEq)]
pub struct MemIndex {
    pub base_seq: u64,
    pub blocks: Vec<MemBlock>,
    pub ts: Vec<i64>,
    pub entities: KeyMap<Key, Vec<u32>>,
    pub kinds: KeyMap<Key, Vec<u32>>,
    pub tags: KeyMap<Key, Vec<u32>>,
    pub minutes: KeyMap<i64, Vec<u32>>,
    /// id hash -> first ordinal with that hash; later ordinals with the same hash (a hash
    /// collision between different ids) go to `id_collisions`.
    pub ids: KeyMap<u64, u32>,
    pub id_collisions: Vec<(u64, u32)>,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Bytes of the segment file covered by `blocks` (header included).
    pub len: u64,
    /// Decompressed record bytes.
    pub raw_bytes: u64,
}

/// A key of the postings maps. Keys up to 24 bytes (almost every entity, kind and tag) sit
/// in the map's slot itself: a lookup compares them there instead of following a pointer to
/// the heap, a cache miss per record among the ~200k entities of a segment.
pub type Key = compact_str::CompactString;

/// Posts `ord` under `key`, once: a record that repeats a tag is posted once. Ordinals are
/// added in ascending order, so a repeat is always the last one posted.
fn push(map: &mut KeyMap<Key, Vec<u32>>, key: &str, ord: u32) {
    if let Some(v) = map.get_mut(key) {
        if v.last() != Some(&ord) {
            v.push(ord);
        }
    } else {
        map.insert(Key::from(key), vec![ord]);
    }
}

impl MemIndex {
    pub fn new(base_seq: u64, header_len: u64) -> Self {
        MemIndex {
            base_seq,
            len: header_len,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            ..Default::default()
        }
    }

    pub fn record_count(&self) -> u32 {
        self.ts.len() as u32
    }

    /// Seq one past the last record.
    pub fn end_seq(&self) -> u64 {
        self.base_seq + self.ts.len() as u64
    }

    /// Adds the next record; its ordinal is the current record count.
    pub fn add_record(&mut self, r: &RecordRef<'_>) {
        self.add(r.entity, r.kind, r.ts, r.tags(), r.id);
    }

    /// Adds the next record from its fields.
    pub fn add<'t>(
        &mut self,
        entity: &str,
        kind: &str,
        ts: i64,
        tags: impl Iterator<Item = &'t str>,
        id: &str,
    ) {
        let ord = self.record_count();
        self.ts.push(ts);
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        push(&mut self.entities, entity, ord);
        push(&mut self.kinds, kind, ord);
        for t in tags {
            push(&mut self.tags, t, ord);
        }
        self.minutes.entry(minute_of(ts)).or_default().push(ord);
        if !id.is_empty() {
            let h = id_hash(id);
            if let Some(_first) = self.ids.get(&h) {
                self.id_collisions.push((h, ord));
            } else {
                self.ids.insert(h, ord);
            }
        }
    }

    pub fn add_block(&mut self, block: MemBlock) {
        debug_assert_eq!(block.entry.offset, self.len);
        self.len += u64::from(block.len);
        self.blocks.push(block);
    }

    /// Appends `tail`, the index of the records right after these (its `base_seq` is this
    /// index's end seq, its first block starts at this index's `len`), shifting its ordinals.
    /// The result is the index a scan of both stretches in one pass builds.
    pub fn append(&mut self, tail: MemIndex) {
        assert_eq!(
            tail.base_seq,
            self.end_seq(),
            "a tail starts where the index ends"
        );
        let shift = self.record_count();
        for mut b in tail.blocks {
            b.entry.first_ordinal += shift;
            self.add_block(b);
        }
        assert_eq!(self.len, tail.len, "a tail's blocks follow the index's");
        self.min_ts = self.min_ts.min(tail.min_ts);
        self.max_ts = self.max_ts.max(tail.max_ts);
        self.ts.extend_from_slice(&tail.ts);
        self.raw_bytes += tail.raw_bytes;
        for (map, more) in [
            (&mut self.entities, tail.entities),
            (&mut self.kinds, tail.kinds),
            (&mut self.tags, tail.tags),
        ] {
            for (k, ords) in more {
                let shifted = ords.iter().map(|o| o + shift);
                match map.get_mut(&k) {
                    Some(v) => v.extend(shifted),
                    None => {
                        map.insert(k, shifted.collect());
                    }
                }
            }
        }
        for (m, ords) in tail.minutes {
            let v = self.minutes.entry(m).or_default();
            v.extend(ords.iter().map(|o| o + shift));
        }
        // In ordinal order, as a scan meets them: the first of a hash is the map's, the
        // rest collisions.
        let mut ids: Vec<(u64, u32)> = tail.ids.into_iter().chain(tail.id_collisions).collect();
        ids.sort_unstable_by_key(|(_, o)| *o);
        for (h, o) in ids {
            match self.ids.entry(h) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.id_collisions.push((h, o + shift))
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(o + shift);
                }
            }
        }
    }

    /// Ordinals whose id hashes like `id` (candidates: the caller compares the stored id).
    pub fn id_candidates(&self, hash: u64) -> Vec<u32> {
        let mut out: Vec<u32> = self.ids.get(&hash).copied().into_iter().collect();
        out.extend(
            self.id_collisions
                .iter()
                .filter(|(h, _)| *h == hash)
                .map(|(_, o)| *o),
        );
        out
    }

    /// Ordinals of the records of any of `kinds`, ascending.
    pub fn ordinals_of_kinds(&self, kinds: &[&str]) -> Vec<u32> {
        let mut v: Vec<u32> = kinds
            .iter()
            .filter_map(|k| self.kinds.get(*k))
            .flatten()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Index of the block holding `ord`.
    pub fn block_of(&self, ord: u32) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| b.entry.first_ordinal <= ord);
        let i = i.checked_sub(1)?;
        let e = &self.blocks[i].entry;
        (ord < e.first_ordinal + e.count).then_some(i)
    }

    /// The index file for this segment, as sealed.
    pub fn to_index_file(&self) -> Vec<u8> {
        let (min_ts, max_ts) = if self.ts.is_empty() {
            (0, 0)
        } else {
            (self.min_ts, self.max_ts)
        };
        let header = IndexHeader {
            base_seq: self.base_seq,
            record_count: self.record_count(),
            block_count: self.blocks.len() as u32,
            segment_len: self.len,
            min_ts,
            max_ts,
        };
        let mut w = IndexWriter::new(header);
        // First, so that `Stats` finds it in the file's first page with the header and table.
        w.add_section(
            echolog_format::index::SECTION_SUMMARY,
            self.raw_bytes.to_le_bytes().to_vec(),
        );
        let entries: Vec<BlockEntry> = self.blocks.iter().map(|b| b.entry).collect();
        w.add_section(SECTION_BLOCKS, encode_block_table(&entries));
        w.add_section(SECTION_TS, encode_ts_column(&self.ts));
        w.add_section(SECTION_ENTITIES, str_dict(&self.entities));
        w.add_section(SECTION_KINDS, str_dict(&self.kinds));
        w.add_section(SECTION_TAGS, str_dict(&self.tags));
        let mut minutes: Vec<(i64, &Vec<u32>)> =
            self.minutes.iter().map(|(k, v)| (*k, v)).collect();
        minutes.sort_unstable_by_key(|(k, _)| *k);
        let keys: Vec<[u8; 8]> = minutes.iter().map(|(k, _)| minute_key(*k)).collect();
        w.add_section(
            SECTION_MINUTES,
            encode_dict(
                keys.iter()
                    .zip(&minutes)
                    .map(|(k, (_, v))| (&k[..], posting_value(v))),
            ),
        );
        let mut ids: Vec<(u64, u32)> = self.ids.iter().map(|(h, o)| (*h, *o)).collect();
        ids.extend_from_slice(&self.id_collisions);
        w.add_section(SECTION_IDS, encode_ids(&mut ids));
        w.add_section(SECTION_TAG_HOURS, self.tag_hours());
        w.finish()
    }

    /// The per-tag hourly counts of the counted records (`SECTION_TAG_HOURS`), from the tag
    /// postings and the ts column at seal time, so appends pay nothing for them.
    fn tag_hours(&self) -> Vec<u8> {
        let uncounted = self.ordinals_of_kinds(&UNCOUNTED_KINDS);
        let mut keys: Vec<(&Key, &Vec<u32>)> = self.tags.iter().collect();
        keys.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut posted = 0u64;
        let mut counted = 0u64;
        let dict = encode_dict(keys.into_iter().filter_map(|(k, ords)| {
            posted += ords.len() as u64;
            let hours = hour_counts(ords, &self.ts, &uncounted);
            counted += hours.iter().map(|(_, c)| u64::from(*c)).sum::<u64>();
            (!hours.is_empty()).then(|| (k.as_bytes(), encode_hour_counts(&hours)))
        }));
        // Every posting is counted once, unless its record is of a reserved kind.
        debug_assert!(
            counted <= posted && posted - counted <= uncounted.len() as u64 * TAGS_COUNT_MAX as u64
        );
        dict
    }
}

/// `(hour number, count)` of the ordinals `ords` (ascending) that are not in `uncounted`
/// (ascending), hours ascending.
fn hour_counts(ords: &[u32], ts: &[i64], uncounted: &[u32]) -> Vec<(i64, u32)> {
    let mut out: Vec<(i64, u32)> = Vec::new();
    let mut in_order = true;
    for &o in ords {
        if uncounted.binary_search(&o).is_ok() {
            continue;
        }
        let Some(t) = ts.get(o as usize) else {
            continue;
        };
        let hour = t.div_euclid(HOUR_MS);
        match out.last_mut() {
            Some((h, c)) if *h == hour => *c += 1,
            last => {
                in_order &= last.is_none_or(|(h, _)| *h < hour);
                out.push((hour, 1));
            }
        }
    }
    if !in_order {
        // Late events: runs of one hour may repeat out of order; sort and merge them.
        out.sort_unstable_by_key(|(h, _)| *h);
        out.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
    }
    out
}

/// Serialized roaring bitmap of sorted ordinals.
fn bitmap_bytes(sorted: &[u32]) -> Vec<u8> {
    let bm = RoaringBitmap::from_sorted_iter(sorted.iter().copied())
        .unwrap_or_else(|_| sorted.iter().copied().collect());
    let mut out = Vec::with_capacity(bm.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = bm.serialize_into(&mut out);
    out
}

/// A dictionary value of an index: the varint list of `sorted` (ascending, unique) when it
/// takes at most half the bytes of the roaring bitmap, else the bitmap; and runs instead of
/// either when they take at most half the bytes of that. Decoding a list costs a varint per
/// ordinal where a bitmap is copied whole, so a list must pay for that in bytes: it does for
/// the entity of a handful of events (a few bytes against 16 plus 10 per touched 64 Ki
/// chunk), not for a tag or minute of thousands (about 2 bytes an ordinal either way;
/// measured: a one-tenant count read 1.8x slower from lists). Runs decode a range at a time:
/// a minute of a store whose events arrive in time order is one run and its few late events.
pub fn posting_value(sorted: &[u32]) -> Vec<u8> {
    let list = encode_varints(sorted);
    // Up to 4,096 ordinals every roaring container is an array, and the bitmap takes at least
    // 16 bytes plus 2 per ordinal: a list within half of that wins without building it.
    let chosen = if sorted.len() <= 4096 && 2 * list.len() <= 1 + 16 + 2 * sorted.len() {
        list
    } else {
        let roaring = encode_roaring(&bitmap_bytes(sorted));
        if 2 * list.len() <= roaring.len() {
            list
        } else {
            roaring
        }
    };
    // Runs decode (and count) a run at a time, so like a list they must pay for that: at most
    // half the bytes of the other form. Many short runs (a kind of one event in 20) would save
    // a few percent and decode slower than the bitmap. Runs take at least 2 bytes each: ruled
    // out cheaply first.
    if sorted.len() > 1 && runs_count(sorted) * 4 <= chosen.len() {
        let runs = encode_runs(sorted);
        if runs.len() * 2 <= chosen.len() {
            return runs;
        }
    }
    chosen
}

/// Runs of consecutive values in `sorted`.
fn runs_count(sorted: &[u32]) -> usize {
    1 + sorted.windows(2).filter(|w| w[1] != w[0] + 1).count()
}

fn str_dict(map: &KeyMap<Key, Vec<u32>>) -> Vec<u8> {
    let mut keys: Vec<(&Key, &Vec<u32>)> = map.iter().collect();
    keys.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    encode_dict(
        keys.into_iter()
            .map(|(k, v)| (k.as_bytes(), posting_value(v))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_repeated_on_one_record_is_posted_once_and_long_keys_work_as_short_ones() {
        let long = "tenant:".to_string() + &"x".repeat(100);
        let mut idx = MemIndex::new(1, 32);
        idx.add("e", "k", 10, ["a", "a", long.as_str(), "b"].into_iter(), "");
        idx.add(
            "e",
            "k",
            11,
            ["a", long.as_str(), long.as_str()].into_iter(),
            "",
        );
        idx.add(&long, "k", 12, ["b"].into_iter(), "");
        assert_eq!(idx.tags.get("a"), Some(&vec![0, 1]));
        assert_eq!(idx.tags.get(long.as_str()), Some(&vec![0, 1]));
        assert_eq!(idx.tags.get("b"), Some(&vec![0, 2]));
        assert_eq!(idx.entities.get("e"), Some(&vec![0, 1]));
        assert_eq!(idx.entities.get(long.as_str()), Some(&vec![2]));
        assert_eq!(idx.kinds.get("k"), Some(&vec![0, 1, 2]));
    }

    #[test]
    fn each_posting_takes_the_smallest_form_that_pays() {
        use echolog_format::postings::{decode_postings, Postings, PostingsEncoding};
        let tag = |ords: &[u32]| PostingsEncoding::try_from(posting_value(ords)[0]).unwrap();
        // An entity of a few scattered events: a list.
        assert_eq!(tag(&[5, 90_000, 700_000]), PostingsEncoding::Varints);
        // A minute of records in time order, with late ones after it: runs.
        let mut minute: Vec<u32> = (10_000..16_000).collect();
        minute.extend((0..60).map(|i| 30_000 + i * 5_000));
        assert_eq!(tag(&minute), PostingsEncoding::Runs);
        let v = echolog_format::FORMAT_VERSION;
        match decode_postings(&posting_value(&minute), 400_000, v).unwrap() {
            Postings::Runs(r) => {
                let back: Vec<u32> = r.iter().flat_map(|&(a, b)| a..=b).collect();
                assert_eq!(back, minute);
            }
            other => panic!("{other:?}"),
        }
        // A tenant: every fifth record: a bitmap.
        let tenant: Vec<u32> = (0..400_000).step_by(5).collect();
        assert_eq!(tag(&tenant), PostingsEncoding::Roaring);
        // A kind of one record in 20 at random: runs of one or two, a little smaller than the
        // bitmap but slower to decode: the bitmap.
        let mut x = 1u64;
        let kind: Vec<u32> = (0..400_000u32)
            .filter(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.is_multiple_of(20)
            })
            .collect();
        assert!(encode_runs(&kind).len() < posting_value(&kind).len());
        assert_eq!(tag(&kind), PostingsEncoding::Roaring);
        // One record: a list (two bytes), never a run (three).
        assert_eq!(tag(&[7]), PostingsEncoding::Varints);
    }
}
