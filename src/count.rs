//! `count`: exact counts over a time range, optionally per minute, hour or day (UTC).
//!
//! Per sealed segment: the filters' bitmaps are intersected (entity AND kind AND every tag),
//! reserved-kind records and (unless asked for) deleted events are subtracted, and the result
//! is intersected with the segment's per-minute bitmaps with `and_cardinality`. Per-event
//! timestamps are read only for minutes cut by the range edges. The active segment is in
//! memory and is counted event by event from its postings.

use std::collections::BTreeMap;
use std::sync::Arc;

use echolog_format::index::{
    minute_from_key, SECTION_ENTITIES, SECTION_KINDS, SECTION_MINUTES, SECTION_TAGS,
};
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::mem_index::{MemIndex, MINUTE_MS};
use crate::segment::LoadedSegment;
use crate::store::{check_entity, check_range, in_range, Store};
use crate::tombstones::{Tombstones, UNCOUNTED_KINDS};

/// Bucket width of a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bucket {
    #[default]
    None,
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub fn width_ms(self) -> Option<i64> {
        match self {
            Bucket::None => None,
            Bucket::Minute => Some(60_000),
            Bucket::Hour => Some(3_600_000),
            Bucket::Day => Some(86_400_000),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CountQuery {
    pub entity: Option<String>,
    pub kind: Option<String>,
    pub tags: Vec<String>,
    /// Inclusive lower bound of event time; None is open.
    pub from_ts: Option<i64>,
    /// Exclusive upper bound; None is open.
    pub to_ts: Option<i64>,
    pub bucket: Bucket,
    pub include_deleted: bool,
}

impl CountQuery {
    /// True when the kind filter names a reserved kind: only then are tombstone records
    /// counted (and never as deleted).
    fn names_reserved_kind(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|k| UNCOUNTED_KINDS.contains(&k))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketCount {
    pub start_ts: i64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountResult {
    pub total: u64,
    /// Non-empty buckets in ascending `start_ts`; empty with `Bucket::None`.
    pub buckets: Vec<BucketCount>,
}

/// Accumulates counts per output bucket.
struct Acc<'q> {
    q: &'q CountQuery,
    total: u64,
    buckets: BTreeMap<i64, u64>,
    /// The bucket being added to, kept out of the map while consecutive events fall into it
    /// (timestamps mostly increase, so most adds hit it).
    current: Option<(i64, u64)>,
}

impl Acc<'_> {
    fn add(&mut self, ts_bucket_of: i64, n: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        if let Some(w) = self.q.bucket.width_ms() {
            let start = ts_bucket_of.div_euclid(w) * w;
            match &mut self.current {
                Some((s, c)) if *s == start => *c += n,
                cur => {
                    if let Some((s, c)) = cur.replace((start, n)) {
                        *self.buckets.entry(s).or_default() += c;
                    }
                }
            }
        }
    }

    fn finish(mut self) -> (u64, BTreeMap<i64, u64>) {
        if let Some((s, c)) = self.current.take() {
            *self.buckets.entry(s).or_default() += c;
        }
        (self.total, self.buckets)
    }
}

impl Store {
    pub fn count(&self, q: &CountQuery) -> Result<CountResult> {
        check_range(q.from_ts, q.to_ts)?;
        if let Some(e) = &q.entity {
            check_entity(e)?;
        }
        if let Some(k) = &q.kind {
            if k.is_empty() || k.len() > echolog_format::limits::KIND_BYTES_MAX {
                return Err(Error::invalid(format!(
                    "kind must be 1..={} bytes",
                    echolog_format::limits::KIND_BYTES_MAX
                )));
            }
        }
        if q.tags.len() > echolog_format::limits::TAGS_COUNT_MAX {
            return Err(Error::invalid(format!(
                "tags: at most {} filters",
                echolog_format::limits::TAGS_COUNT_MAX
            )));
        }
        for (i, t) in q.tags.iter().enumerate() {
            if t.is_empty() || t.len() > echolog_format::limits::TAG_BYTES_MAX {
                return Err(Error::invalid(format!(
                    "tags[{i}] must be 1..={} bytes",
                    echolog_format::limits::TAG_BYTES_MAX
                )));
            }
        }
        let view = self.view();
        let tomb = view.tombstones.clone();
        let mut acc = Acc {
            q,
            total: 0,
            buckets: BTreeMap::new(),
            current: None,
        };
        for seg in view.sealed.iter() {
            let l = seg.load()?;
            if l.record_count() == 0 {
                continue;
            }
            let (min, max) = (l.header.min_ts, l.header.max_ts);
            if q.from_ts.is_some_and(|f| max < f) || q.to_ts.is_some_and(|t| min >= t) {
                continue;
            }
            self.count_sealed(&l, q, &tomb, &mut acc)?;
        }
        count_active(&view.active.index(), view.active_len, q, &tomb, &mut acc);
        let (total, buckets) = acc.finish();
        let buckets = buckets
            .into_iter()
            .map(|(start_ts, count)| BucketCount { start_ts, count })
            .collect();
        Ok(CountResult { total, buckets })
    }

    fn count_sealed(
        &self,
        l: &LoadedSegment,
        q: &CountQuery,
        tomb: &Tombstones,
        acc: &mut Acc<'_>,
    ) -> Result<()> {
        let n = l.record_count();
        // 1. Filters.
        let mut f: Option<RoaringBitmap> = None;
        let mut and = |bm: Option<RoaringBitmap>| -> bool {
            match bm {
                None => false,
                Some(b) => {
                    f = Some(match f.take() {
                        None => b,
                        Some(a) => a & b,
                    });
                    true
                }
            }
        };
        if let Some(e) = &q.entity {
            if !and(l.bitmap(SECTION_ENTITIES, e.as_bytes())?) {
                return Ok(());
            }
        }
        if let Some(k) = &q.kind {
            if !and(l.bitmap(SECTION_KINDS, k.as_bytes())?) {
                return Ok(());
            }
        }
        for t in &q.tags {
            if !and(l.bitmap(SECTION_TAGS, t.as_bytes())?) {
                return Ok(());
            }
        }
        let mut f = f.unwrap_or_else(|| (0..n).collect());
        // 2. Exclusions.
        let kind_is_reserved = q.names_reserved_kind();
        if !kind_is_reserved {
            for k in UNCOUNTED_KINDS {
                if let Some(r) = l.bitmap(SECTION_KINDS, k.as_bytes())? {
                    f -= r;
                }
            }
        }
        if !q.include_deleted && !tomb.is_empty() && !kind_is_reserved {
            f -= &*self.deleted_in_segment(l, q.entity.as_deref(), tomb)?;
        }
        if f.is_empty() {
            return Ok(());
        }
        // 3. Time. Fast path: the whole segment is inside the range and inside one bucket.
        let (min, max) = (l.header.min_ts, l.header.max_ts);
        let inside = q.from_ts.is_none_or(|x| min >= x) && q.to_ts.is_none_or(|x| max < x);
        let one_bucket = q
            .bucket
            .width_ms()
            .is_none_or(|w| min.div_euclid(w) == max.div_euclid(w));
        if inside && one_bucket {
            acc.add(min, f.len());
            return Ok(());
        }
        let minutes = l.dict(SECTION_MINUTES)?;
        // A selective filter is cheaper to bucket by reading its matches' timestamps (one
        // 8-byte load each) than by decoding every minute bitmap of the segment; both exact.
        // Default 64 (Options): a minute bitmap costs 1-2 us, a timestamp read ~10-20 ns.
        if f.len() <= minutes.len() as u64 * self.inner.opts.count_events_per_minute_bitmap {
            for ord in &f {
                let ts = l.ts(ord);
                if in_range(ts, q.from_ts, q.to_ts) {
                    acc.add(ts, 1);
                }
            }
            return Ok(());
        }
        for i in 0..minutes.len() {
            let (key, bytes) = minutes.entry(i).map_err(|e| Error::Corruption {
                file: l.idx_path.clone(),
                offset: 0,
                source: e,
            })?;
            let m = minute_from_key(key).map_err(|e| Error::Corruption {
                file: l.idx_path.clone(),
                offset: 0,
                source: e,
            })?;
            let m_end = m.saturating_add(MINUTE_MS);
            if q.from_ts.is_some_and(|x| m_end <= x) || q.to_ts.is_some_and(|x| m >= x) {
                continue;
            }
            let mb = RoaringBitmap::deserialize_from(bytes).map_err(|e| Error::Corruption {
                file: l.idx_path.clone(),
                offset: 0,
                source: echolog_format::FormatError::Invalid {
                    what: "minute bitmap",
                    reason: e.to_string(),
                },
            })?;
            let whole = q.from_ts.is_none_or(|x| m >= x) && q.to_ts.is_none_or(|x| m_end <= x);
            if whole {
                acc.add(m, f.intersection_len(&mb));
            } else {
                // A minute cut by a range edge: read the timestamps of its matching events.
                for ord in &(&f & &mb) {
                    let ts = l.ts(ord);
                    if in_range(ts, q.from_ts, q.to_ts) {
                        acc.add(ts, 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// Deleted ordinals of a sealed segment (all of them, or only `entity`'s), cached per
    /// tombstone generation.
    fn deleted_in_segment(
        &self,
        l: &LoadedSegment,
        entity: Option<&str>,
        tomb: &Tombstones,
    ) -> Result<Arc<RoaringBitmap>> {
        let base = l.header.base_seq;
        let end = base + u64::from(l.record_count());
        let below_to_bitmap = |bm: RoaringBitmap, below: u64| -> RoaringBitmap {
            if below >= end {
                bm
            } else if below <= base {
                RoaringBitmap::new()
            } else {
                let cut = (below - base) as u32;
                let mut r = bm;
                r.remove_range(cut..);
                r
            }
        };
        let mut seq_deletes = RoaringBitmap::new();
        for s in tomb.deleted_seqs().filter(|s| (base..end).contains(s)) {
            seq_deletes.insert((s - base) as u32);
        }
        if let Some(e) = entity {
            // One entity: no need for the whole set.
            let below = tomb
                .deleted_entities()
                .find(|(x, _)| *x == e)
                .map_or(0, |(_, b)| b);
            let mut d = seq_deletes;
            if below > base {
                if let Some(bm) = l.bitmap(SECTION_ENTITIES, e.as_bytes())? {
                    d |= below_to_bitmap(bm, below);
                }
            }
            return Ok(Arc::new(d));
        }
        let mut cache = self
            .inner
            .deleted_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((gen, bm)) = cache.get(&base) {
            if *gen == tomb.generation {
                return Ok(bm.clone());
            }
        }
        let mut d = seq_deletes;
        for (e, below) in tomb.deleted_entities() {
            if below <= base {
                continue;
            }
            if let Some(bm) = l.bitmap(SECTION_ENTITIES, e.as_bytes())? {
                d |= below_to_bitmap(bm, below);
            }
        }
        let d = Arc::new(d);
        cache.insert(base, (tomb.generation, d.clone()));
        Ok(d)
    }
}

/// Counts the first `n` records of the active segment (those of the reader's snapshot).
fn count_active(idx: &MemIndex, n: u32, q: &CountQuery, tomb: &Tombstones, acc: &mut Acc<'_>) {
    if n == 0 {
        return;
    }
    let mut lists: Vec<&Vec<u32>> = Vec::new();
    if let Some(e) = &q.entity {
        match idx.entities.get(e.as_str()) {
            Some(v) => lists.push(v),
            None => return,
        }
    }
    if let Some(k) = &q.kind {
        match idx.kinds.get(k.as_str()) {
            Some(v) => lists.push(v),
            None => return,
        }
    }
    for t in &q.tags {
        match idx.tags.get(t.as_str()) {
            Some(v) => lists.push(v),
            None => return,
        }
    }
    let mut f: RoaringBitmap = match lists.split_first() {
        None => (0..n).collect(),
        Some((first, rest)) => {
            let mut f = RoaringBitmap::from_sorted_iter(first.iter().copied()).unwrap_or_default();
            for l in rest {
                f &= RoaringBitmap::from_sorted_iter(l.iter().copied()).unwrap_or_default();
            }
            f
        }
    };
    f.remove_range(n..);
    let kind_is_reserved = q.names_reserved_kind();
    if !kind_is_reserved {
        for k in UNCOUNTED_KINDS {
            if let Some(v) = idx.kinds.get(k) {
                for o in v {
                    f.remove(*o);
                }
            }
        }
    }
    let base = idx.base_seq;
    let check_deleted = !q.include_deleted && !tomb.is_empty() && !kind_is_reserved;
    // Entity of each ordinal is needed for entity tombstones: invert the postings of deleted
    // entities only.
    let mut deleted = RoaringBitmap::new();
    if check_deleted {
        for (e, below) in tomb.deleted_entities() {
            if below <= base {
                continue;
            }
            if let Some(v) = idx.entities.get(e) {
                for o in v.iter().take_while(|o| base + u64::from(**o) < below) {
                    deleted.insert(*o);
                }
            }
        }
        for s in tomb.deleted_seqs() {
            if s >= base && s < base + u64::from(n) {
                deleted.insert((s - base) as u32);
            }
        }
        f -= deleted;
    }
    for ord in &f {
        let ts = idx.ts[ord as usize];
        if in_range(ts, q.from_ts, q.to_ts) {
            acc.add(ts, 1);
        }
    }
}
