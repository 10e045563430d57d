//! `count`: exact counts over a time range, optionally per minute, hour or day (UTC).
//!
//! Per sealed segment: the filters' bitmaps are intersected (entity AND kind AND every tag),
//! reserved-kind records and (unless asked for) deleted events are subtracted, and the result
//! is intersected with the segment's per-minute bitmaps with `and_cardinality`. Per-event
//! timestamps are read only for minutes cut by the range edges. The active segment is in
//! memory and is counted event by event from its postings.
//!
//! A count of one tag per hour or day (or in all) over whole hours reads, per sealed segment,
//! only that tag's pre-aggregated hourly counts (index section `SECTION_TAG_HOURS`, format
//! version 5), minus its deleted events.
//!
//! A count bounded in time passes over a sealed segment whose records all fall outside the
//! range from its index header alone (`SealedSegment::ts_bounds`: one small read, cached), so
//! the first such count after open maps only the indexes it counts from.
//!
//! A sealed index is checked section by section as a count reads it (`segment/index.rs`), so
//! the first count after open reads of each index only its first pages and the sections that
//! count uses; segments not loaded yet are counted on several threads at once, because with a
//! cold page cache those reads are disk waits that overlap.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use echolog_format::index::{
    minute_from_key, HOUR_MS, SECTION_ENTITIES, SECTION_KINDS, SECTION_MINUTES, SECTION_TAGS,
    SECTION_TAG_HOURS,
};
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::mem_index::{MemIndex, MINUTE_MS};
use crate::segment::{LoadedSegment, SealedSegment};
use crate::store::{check_entity, check_range, in_range, on_threads, Store};
use crate::tombstones::{Tombstones, UNCOUNTED_KINDS};

/// Threads a count loads and counts segments no reader has loaded yet with (the caller's
/// included), as `Stats` reads summaries: see `Store::count_cold`.
const COLD_COUNT_THREADS_MAX: usize = 16;

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

/// What an accumulator finished with: the total and the count of each non-empty bucket.
type Counted = (u64, BTreeMap<i64, u64>);

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

    fn new(q: &CountQuery) -> Acc<'_> {
        Acc {
            q,
            total: 0,
            buckets: BTreeMap::new(),
            current: None,
        }
    }

    /// Adds what another accumulator of the same query finished with.
    fn merge(&mut self, total: u64, buckets: BTreeMap<i64, u64>) {
        self.total += total;
        for (start, n) in buckets {
            *self.buckets.entry(start).or_default() += n;
        }
    }

    fn finish(mut self) -> Counted {
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
        let mut acc = Acc::new(q);
        let mut cold: Vec<&Arc<SealedSegment>> = Vec::new();
        for seg in view.sealed.iter() {
            match seg.loaded_if_any() {
                Some(l) => self.count_loaded(&l, q, &tomb, &mut acc)?,
                None => cold.push(seg),
            }
        }
        self.count_cold(&cold, q, &tomb, &mut acc)?;
        count_active(&view.active.index(), view.active_len, q, &tomb, &mut acc);
        let (total, buckets) = acc.finish();
        let buckets = buckets
            .into_iter()
            .map(|(start_ts, count)| BucketCount { start_ts, count })
            .collect();
        Ok(CountResult { total, buckets })
    }

    /// Loads one sealed segment and counts it into `acc`, unless its index header says its
    /// records all fall outside the range (then it is not loaded).
    fn count_segment(
        &self,
        seg: &SealedSegment,
        q: &CountQuery,
        tomb: &Tombstones,
        acc: &mut Acc<'_>,
    ) -> Result<()> {
        if (q.from_ts.is_some() || q.to_ts.is_some())
            && seg.ts_bounds().is_some_and(|b| outside(q, b))
        {
            return Ok(());
        }
        let l = seg.load()?;
        self.count_loaded(&l, q, tomb, acc)
    }

    /// Counts a loaded sealed segment into `acc`, unless its records all fall outside the
    /// range.
    fn count_loaded(
        &self,
        l: &LoadedSegment,
        q: &CountQuery,
        tomb: &Tombstones,
        acc: &mut Acc<'_>,
    ) -> Result<()> {
        if l.record_count() == 0 || outside(q, (l.header.min_ts, l.header.max_ts)) {
            return Ok(());
        }
        self.count_sealed(l, q, tomb, acc)
    }

    /// Counts segments no reader has loaded yet on up to `COLD_COUNT_THREADS_MAX` threads
    /// (the caller's among them), each into its own accumulator, then adds them up. Such a
    /// segment costs a few disk reads of its index when the page cache is cold (header, block
    /// table, the sections the count reads), and a disk serves many at once far faster than
    /// one after another; loaded segments are counted on the caller's thread.
    fn count_cold(
        &self,
        cold: &[&Arc<SealedSegment>],
        q: &CountQuery,
        tomb: &Tombstones,
        acc: &mut Acc<'_>,
    ) -> Result<()> {
        if cold.len() < 2 {
            return cold
                .iter()
                .try_for_each(|seg| self.count_segment(seg, q, tomb, acc));
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let parts: Mutex<Vec<Result<Counted>>> = Mutex::new(Vec::new());
        let work = || {
            let mut mine = Acc::new(q);
            let mut r = Ok(());
            while let Some(seg) = cold.get(next.fetch_add(1, Ordering::Relaxed)) {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                r = self.count_segment(seg, q, tomb, &mut mine);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                    break;
                }
            }
            let part = r.map(|()| mine.finish());
            parts.lock().unwrap_or_else(|p| p.into_inner()).push(part);
        };
        on_threads(
            cold.len().min(COLD_COUNT_THREADS_MAX),
            "echolog-count",
            work,
        );
        for part in parts.into_inner().unwrap_or_else(|p| p.into_inner()) {
            let (total, buckets) = part?;
            acc.merge(total, buckets);
        }
        Ok(())
    }

    fn count_sealed(
        &self,
        l: &LoadedSegment,
        q: &CountQuery,
        tomb: &Tombstones,
        acc: &mut Acc<'_>,
    ) -> Result<()> {
        if self.count_by_tag_hours(l, q, tomb, acc)? {
            return Ok(());
        }
        self.count_sealed_exact(l, q, tomb, acc)
    }

    /// Counts a sealed segment from its bitmaps and timestamps: any query, any index version.
    fn count_sealed_exact(
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
        // load each, a frame entry too in a packed column) than by decoding every minute
        // bitmap of the segment; both exact.
        // Default 64 (Options): a minute bitmap costs 1-2 us, a timestamp read ~10-20 ns.
        if f.len() <= minutes.len() as u64 * self.inner.opts.count_events_per_minute_bitmap {
            let ts_column = l.ts_column()?;
            for ord in &f {
                let ts = ts_column.get(ord);
                if in_range(ts, q.from_ts, q.to_ts) {
                    acc.add(ts, 1);
                }
            }
            return Ok(());
        }
        let corrupt = |e| Error::Corruption {
            file: l.idx_path.clone(),
            offset: 0,
            source: e,
        };
        let mut entries = minutes.cursor();
        while let Some((key, bytes)) = entries.next_entry().map_err(corrupt)? {
            let m = minute_from_key(key).map_err(corrupt)?;
            let m_end = m.saturating_add(MINUTE_MS);
            if q.from_ts.is_some_and(|x| m_end <= x) || q.to_ts.is_some_and(|x| m >= x) {
                continue;
            }
            let whole = q.from_ts.is_none_or(|x| m >= x) && q.to_ts.is_none_or(|x| m_end <= x);
            if whole {
                acc.add(m, minutes.intersection_len(bytes, &f)?);
            } else {
                let mb = minutes.postings(bytes)?;
                // A minute cut by a range edge: read the timestamps of its matching events.
                let ts_column = l.ts_column()?;
                for ord in &(&f & &mb) {
                    let ts = ts_column.get(ord);
                    if in_range(ts, q.from_ts, q.to_ts) {
                        acc.add(ts, 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a sealed segment from its per-tag hourly counts when they answer the query
    /// exactly: one tag and no entity or kind filter, buckets of an hour, a day or none, an
    /// index that has them (version 5), and no hour of the tag here cut by a range edge. The
    /// deleted events of the tag are subtracted hour by hour (they are few; their timestamps
    /// are read). Returns false, having counted nothing, when it does not apply.
    fn count_by_tag_hours(
        &self,
        l: &LoadedSegment,
        q: &CountQuery,
        tomb: &Tombstones,
        acc: &mut Acc<'_>,
    ) -> Result<bool> {
        let [tag] = q.tags.as_slice() else {
            return Ok(false);
        };
        if !self.inner.opts.count_tag_hours
            || q.entity.is_some()
            || q.kind.is_some()
            || q.bucket == Bucket::Minute
            || !l.has_section(SECTION_TAG_HOURS)
        {
            return Ok(false);
        }
        let Some(hours) = l.tag_hours(tag.as_bytes())? else {
            return Ok(true);
        };
        // The hour holding an edge that is not on an hour boundary is only partly inside.
        let cut = |edge: Option<i64>| {
            edge.filter(|t| t.rem_euclid(HOUR_MS) != 0)
                .map(|t| t.div_euclid(HOUR_MS))
        };
        let cut_hours = [cut(q.from_ts), cut(q.to_ts)];
        if hours.iter().any(|(h, _)| cut_hours.contains(&Some(h))) {
            return Ok(false);
        }
        let mut deleted_per_hour: BTreeMap<i64, u32> = BTreeMap::new();
        if !q.include_deleted && !tomb.is_empty() {
            let d = self.deleted_in_segment(l, None, tomb)?;
            if !d.is_empty() {
                if let Some(tagged) = l.bitmap(SECTION_TAGS, tag.as_bytes())? {
                    let mut gone = &*d & &tagged;
                    let ts_column = l.ts_column()?;
                    for k in UNCOUNTED_KINDS {
                        if let Some(r) = l.bitmap(SECTION_KINDS, k.as_bytes())? {
                            gone -= r;
                        }
                    }
                    for ord in &gone {
                        *deleted_per_hour
                            .entry(ts_column.get(ord).div_euclid(HOUR_MS))
                            .or_default() += 1;
                    }
                }
            }
        }
        for (hour, n) in hours.iter() {
            let start = hour.saturating_mul(HOUR_MS);
            let end = start.saturating_add(HOUR_MS);
            if q.from_ts.is_some_and(|f| end <= f) || q.to_ts.is_some_and(|t| start >= t) {
                continue;
            }
            let gone = deleted_per_hour.get(&hour).copied().unwrap_or(0);
            debug_assert!(gone <= n, "more deleted than counted in hour {hour}");
            acc.add(start, u64::from(n.saturating_sub(gone)));
        }
        Ok(true)
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

/// Whether records whose ts lie in `[min, max]` all fall outside the query's range.
fn outside(q: &CountQuery, (min, max): (i64, i64)) -> bool {
    q.from_ts.is_some_and(|f| max < f) || q.to_ts.is_some_and(|t| min >= t)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Options};

    const H: i64 = HOUR_MS;

    /// Ten hours of events over three tags and two entities, 2% of them up to an hour late,
    /// in many small segments, with an entity delete, a seq delete and a restore.
    fn store(dir: &std::path::Path) -> Store {
        let opts = Options {
            segment_size_bytes_max: 4096,
            block_raw_bytes_target: 512,
            compaction: false,
            ..Options::default()
        };
        let s = Store::open(dir, opts).unwrap();
        let events: Vec<Event> = (0..600i64)
            .map(|i| Event {
                entity: format!("e{}", i % 2),
                kind: format!("k{}", i % 3),
                ts: i * 60_000 - if i % 50 == 7 { 50 * 60_000 } else { 0 },
                tags: vec![format!("t{}", i % 3), "all".into()],
                // Poorly compressible, so 4 KiB segments fill.
                payload: format!(
                    "{{\"x\":\"{:x}\"}}",
                    (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                )
                .into_bytes(),
                id: None,
            })
            .collect();
        for c in events.chunks(5) {
            s.append(c.to_vec()).unwrap();
        }
        s.delete("e1", &[], "gone").unwrap();
        s.delete("e0", &[11, 13, 301], "wrong").unwrap();
        s.seal_active().unwrap();
        s
    }

    fn run(
        s: &Store,
        q: &CountQuery,
        mut f: impl FnMut(&LoadedSegment, &mut Acc<'_>) -> Result<()>,
    ) -> CountResult {
        let mut acc = Acc::new(q);
        for seg in s.view().sealed.iter() {
            f(&seg.load().unwrap(), &mut acc).unwrap();
        }
        let (total, buckets) = acc.finish();
        let buckets = buckets
            .into_iter()
            .map(|(start_ts, count)| BucketCount { start_ts, count })
            .collect();
        CountResult { total, buckets }
    }

    #[test]
    fn segments_not_loaded_yet_are_counted_on_several_threads_to_the_same_answer() {
        let d = tempfile::tempdir().unwrap();
        let opts = store(d.path()).options().clone();
        let queries: Vec<CountQuery> = [None, Some("t1")]
            .into_iter()
            .flat_map(|tag| {
                [Bucket::None, Bucket::Minute, Bucket::Hour].map(|bucket| CountQuery {
                    tags: tag.into_iter().map(String::from).collect(),
                    bucket,
                    from_ts: Some(H + 1),
                    ..Default::default()
                })
            })
            .collect();
        for q in &queries {
            let s = Store::open(d.path(), opts.clone()).unwrap();
            assert!(s
                .view()
                .sealed
                .iter()
                .all(|seg| seg.loaded_if_any().is_none()));
            let cold = s.count(q).unwrap();
            let loaded = s
                .view()
                .sealed
                .iter()
                .filter(|seg| seg.loaded_if_any().is_some())
                .count();
            assert!(loaded > 2, "{loaded} segments counted cold");
            // Now every segment is loaded: counted one after another on this thread.
            assert_eq!(s.count(q).unwrap(), cold, "{q:?}");
            assert!(cold.total > 0, "{q:?}");
        }
        // A segment that cannot be read fails the whole count, never a partial answer.
        let first = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .min()
            .unwrap();
        std::fs::write(&first, b"not a segment").unwrap();
        let s = Store::open(d.path(), opts).unwrap();
        assert!(s.count(&CountQuery::default()).is_err());
    }

    #[test]
    fn hourly_counts_of_a_tag_equal_the_exact_count_and_are_used_on_whole_hours() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        assert!(
            s.view().sealed.len() > 5,
            "{} segments",
            s.view().sealed.len()
        );
        let mut fast_used = 0;
        for restored in [false, true] {
            if restored {
                s.restore("e1").unwrap();
                s.seal_active().unwrap();
            }
            let tomb = s.view().tombstones.clone();
            for tag in ["t0", "t1", "all", "gone", "reason:gone"] {
                for bucket in [Bucket::None, Bucket::Hour, Bucket::Day] {
                    for (from, to) in [
                        (None, None),
                        (Some(H), Some(7 * H)),
                        (Some(-H), None),
                        (Some(H + 1), Some(5 * H - 1)),
                        (None, Some(3 * H + 30 * 60_000)),
                    ] {
                        for include_deleted in [false, true] {
                            let q = CountQuery {
                                tags: vec![tag.into()],
                                bucket,
                                from_ts: from,
                                to_ts: to,
                                include_deleted,
                                ..Default::default()
                            };
                            let exact =
                                run(&s, &q, |l, acc| s.count_sealed_exact(l, &q, &tomb, acc));
                            let mut applied = 0;
                            let fast = run(&s, &q, |l, acc| {
                                if s.count_by_tag_hours(l, &q, &tomb, acc)? {
                                    applied += 1;
                                } else {
                                    s.count_sealed_exact(l, &q, &tomb, acc)?;
                                }
                                Ok(())
                            });
                            assert_eq!(fast, exact, "{q:?}");
                            // On whole hours every segment is answered from the hour counts.
                            let whole = |t: Option<i64>| t.is_none_or(|t| t % H == 0);
                            if whole(from) && whole(to) {
                                assert_eq!(applied, s.view().sealed.len(), "{q:?}");
                            }
                            fast_used += applied;
                        }
                    }
                }
            }
        }
        assert!(fast_used > 0);
        // The public path agrees too: all but the three seqs still deleted after the restore.
        let q = CountQuery {
            tags: vec!["all".into()],
            bucket: Bucket::Hour,
            ..Default::default()
        };
        assert_eq!(s.count(&q).unwrap().total, 597);
    }

    #[test]
    fn filters_other_than_one_tag_or_minute_buckets_take_the_exact_path() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let view = s.view();
        let l = view.sealed[0].load().unwrap();
        let one_tag = CountQuery {
            tags: vec!["t0".into()],
            bucket: Bucket::Hour,
            ..Default::default()
        };
        for q in [
            CountQuery {
                entity: Some("e0".into()),
                ..one_tag.clone()
            },
            CountQuery {
                kind: Some("k0".into()),
                ..one_tag.clone()
            },
            CountQuery {
                tags: vec!["t0".into(), "all".into()],
                ..one_tag.clone()
            },
            CountQuery {
                bucket: Bucket::Minute,
                ..one_tag.clone()
            },
            CountQuery {
                tags: vec![],
                ..one_tag.clone()
            },
        ] {
            let mut acc = Acc {
                q: &q,
                total: 0,
                buckets: BTreeMap::new(),
                current: None,
            };
            assert!(!s
                .count_by_tag_hours(&l, &q, &view.tombstones, &mut acc)
                .unwrap());
            assert_eq!(acc.total, 0);
        }
    }

    /// Minutes of events in time order are stored as runs (with their late events); counted
    /// through them (every count forced onto the minutes), answers match the events.
    #[test]
    fn minutes_stored_as_runs_count_what_the_events_say() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            compaction: false,
            count_events_per_minute_bitmap: 0,
            count_tag_hours: false,
            ..Options::default()
        };
        let s = Store::open(d.path(), opts).unwrap();
        // 100 events a minute for 30 minutes; one in 25 is 3 to 7 minutes late.
        let ts_of = |i: i64| i * 600 - if i % 25 == 3 { (3 + i % 5) * 60_000 } else { 0 };
        let events: Vec<Event> = (0..3000i64)
            .map(|i| Event {
                entity: format!("e{}", i % 7),
                kind: format!("k{}", i % 4),
                ts: 3_600_000 + ts_of(i),
                tags: vec![format!("t{}", i % 3)],
                ..Default::default()
            })
            .collect();
        s.append(events.clone()).unwrap();
        s.seal_active().unwrap();
        let seg = s.view().sealed.first().cloned().unwrap();
        let l = seg.load().unwrap();
        let minutes = l.dict(SECTION_MINUTES).unwrap();
        let mut cur = minutes.cursor();
        let mut runs = 0;
        while let Some((_, v)) = cur.next_entry().unwrap() {
            runs += usize::from(v.first() == Some(&2));
        }
        assert!(runs >= 25, "{runs} of {} minutes as runs", minutes.len());
        let cases = [
            (None, None, None, Bucket::Minute),
            (Some("k1"), None, None, Bucket::Hour),
            (
                Some("k2"),
                Some(3_600_000 + 4 * 60_000 + 123),
                Some(3_600_000 + 21 * 60_000 + 5),
                Bucket::Minute,
            ),
            (
                None,
                Some(3_600_000 + 60_000),
                Some(3_600_000 + 17 * 60_000),
                Bucket::None,
            ),
        ];
        for (kind, from_ts, to_ts, bucket) in cases {
            let q = CountQuery {
                kind: kind.map(str::to_string),
                from_ts,
                to_ts,
                bucket,
                ..Default::default()
            };
            let mut want = BTreeMap::<i64, u64>::new();
            for e in &events {
                if kind.is_some_and(|k| e.kind != k) || !in_range(e.ts, from_ts, to_ts) {
                    continue;
                }
                let start = bucket.width_ms().map_or(0, |w| e.ts.div_euclid(w) * w);
                *want.entry(start).or_default() += 1;
            }
            let got = s.count(&q).unwrap();
            assert_eq!(got.total, want.values().sum::<u64>(), "{q:?}");
            if bucket != Bucket::None {
                let got: BTreeMap<i64, u64> =
                    got.buckets.iter().map(|b| (b.start_ts, b.count)).collect();
                assert_eq!(got, want, "{q:?}");
            }
        }
    }
}
