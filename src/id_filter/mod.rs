//! Is this idempotency id new? A filter over the ids of the sealed segments.
//!
//! Without it, an append with a new id (the common case) binary-searched the ids section of
//! every sealed segment in the idempotency window: at 8M events with ids the append rate had
//! fallen from 300k to 68k events/s, and it falls on with every segment (docs/benchmarks.md).
//! The filter answers "certainly not in these segments" with one cache line per part, and the
//! exact search runs only in the segments of a part that says "maybe" (a full part does so
//! for about one new id in 700, a part below capacity for fewer).
//!
//! Shape: split-block Bloom filters (256-bit blocks of eight 32-bit words, one bit set in each
//! word, as Parquet's), `BITS_PER_ID` bits per id. A filter cannot grow, so the segments are
//! covered by a chain of parts, each over a contiguous run of segments, each made with twice
//! the capacity of the one before: the number of parts, and so of probes, grows with the log
//! of the ids (1M ids: five parts; 10^9: about 15; past 2^30 ids a part, `PART_IDS_MAX`, they
//! stop doubling, so 10^10 takes about 23), never with the segments.
//!
//! It is an accelerator only. Every id of a covered segment is in its part (no false "no"),
//! and whatever it does not cover yet is searched exactly, so the answers never depend on it:
//! a store opened with no filter at all, or with half of one, answers the same.

use std::sync::{Arc, Mutex};

use echolog_format::id_filter_file::{PartRef, SavedPart, SegmentIds};

use crate::segment::SealedSegment;
use crate::storage::Mapped;

mod bloom;
pub mod persist;

pub use bloom::BlockBloom;

/// Ids the first part is made for (it is made larger when the first segment holds more).
pub const PART_IDS_MIN: u64 = 64 * 1024;

/// Most ids one part is made for (2 GiB of filter): past it parts stop doubling.
pub const PART_IDS_MAX: u64 = 1 << 30;

/// One part of the chain: the ids of the sealed segments with seqs in `base_seq..end_seq`.
#[derive(Debug)]
struct Part {
    base_seq: u64,
    end_seq: u64,
    ids: u64,
    capacity: u64,
    /// The segments whose ids were added, with their ids sections' length and CRC32: what a
    /// saved part is checked against at the next open.
    segments: Vec<SegmentIds>,
    bloom: BlockBloom,
}

/// The chain of filters over the sealed segments, oldest first. Covers every sealed segment
/// below `covered_end` that was still in the store when it was added.
#[derive(Debug, Default)]
pub struct IdFilters {
    parts: Vec<Part>,
    covered_end: u64,
}

impl IdFilters {
    /// Nothing covered yet: segments from `first_base_seq` on are to be added in order.
    pub fn new(first_base_seq: u64) -> Self {
        IdFilters {
            parts: Vec::new(),
            covered_end: first_base_seq,
        }
    }

    /// Seq below which every sealed segment is covered.
    pub fn covered_end(&self) -> u64 {
        self.covered_end
    }

    /// Adds the ids (their hashes) of the sealed segment `seg`, which must be the next one
    /// (`seg.base_seq == covered_end`); returns false, adding nothing, otherwise: coverage
    /// never jumps over a segment.
    pub fn add_segment(
        &mut self,
        seg: SegmentIds,
        hashes: impl ExactSizeIterator<Item = u64>,
    ) -> bool {
        let SegmentIds {
            base_seq, end_seq, ..
        } = seg;
        if base_seq != self.covered_end || end_seq < base_seq {
            return false;
        }
        let n = hashes.len() as u64;
        // Saved blocks are copied into memory before the first insert; a damaged page there
        // makes the segment start a part of its own instead.
        let fits = self
            .parts
            .last_mut()
            .is_some_and(|p| p.ids + n <= p.capacity && (n == 0 || p.bloom.make_writable()));
        // The first segment always starts a part (its filter is allocated by its first id),
        // so the parts cover every segment from the first: a saved chain has no gap in front.
        if self.parts.is_empty() || (!fits && n > 0) {
            let capacity = self
                .parts
                .last()
                .map_or(PART_IDS_MIN, |p| p.capacity.saturating_mul(2))
                .min(PART_IDS_MAX)
                .max(n);
            self.parts.push(Part {
                base_seq,
                end_seq,
                ids: 0,
                capacity,
                segments: Vec::new(),
                bloom: BlockBloom::with_capacity(capacity),
            });
        }
        if let Some(p) = self.parts.last_mut() {
            for h in hashes {
                let inserted = p.bloom.insert(h);
                debug_assert!(inserted, "made writable above or new");
            }
            p.ids += n;
            p.end_seq = end_seq;
            p.segments.push(seg);
        }
        self.covered_end = end_seq;
        true
    }

    /// Steps over the next segment, which retention removed before its ids were added: they
    /// are nowhere in the store any more. False, changing nothing, if it is not the next one.
    pub fn skip_removed(&mut self, base_seq: u64, end_seq: u64) -> bool {
        if base_seq != self.covered_end || end_seq < base_seq {
            return false;
        }
        // The last part's range grows over it (no id of it is anywhere), so a saved chain
        // reaches the next segment without a gap.
        if let Some(p) = self.parts.last_mut() {
            p.end_seq = end_seq;
        }
        self.covered_end = end_seq;
        true
    }

    /// The seq ranges of the parts that may hold an id of `hash`, newest first: the only
    /// covered segments an exact search needs to look at.
    pub fn may_contain(&mut self, hash: u64) -> Vec<(u64, u64)> {
        self.parts
            .iter_mut()
            .rev()
            .filter_map(|p| p.bloom.may_contain(hash).then_some((p.base_seq, p.end_seq)))
            .collect()
    }

    #[cfg(test)]
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    pub fn size_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bloom.size_bytes()).sum()
    }

    /// The parts to save, oldest first, and the coverage they hold: every part before the
    /// first one found with a damaged saved page. That one and those after it are left out,
    /// so the next open adds their segments from the ids sections instead of trusting them.
    pub fn saved_parts(&self) -> (Vec<PartRef<'_>>, u64) {
        let good = self
            .parts
            .iter()
            .position(|p| p.bloom.damaged())
            .unwrap_or(self.parts.len());
        let end = self
            .parts
            .get(good)
            .map_or(self.covered_end, |p| p.base_seq);
        let parts = self
            .parts
            .iter()
            .take(good)
            .map(|p| PartRef {
                base_seq: p.base_seq,
                end_seq: p.end_seq,
                ids: p.ids,
                capacity: p.capacity,
                segments: &p.segments,
                blocks: p.bloom.blocks_ref(),
            })
            .collect();
        (parts, end)
    }

    /// Takes over saved parts that `persist::load` checked against the store's segments, in
    /// order, while they continue the chain: a part wholly below the coverage (its segments
    /// removed since) is dropped, a part past a gap ends the adoption. Returns how many were
    /// taken.
    pub fn adopt(&mut self, file: &Arc<Mapped>, saved: Vec<SavedPart>) -> usize {
        if !self.parts.is_empty() {
            // Adoption comes before any segment is added; never expected otherwise.
            return 0;
        }
        let mut taken = 0;
        for p in saved {
            if taken == 0 && p.end_seq <= self.covered_end {
                // Every segment it covered is gone (retention removed them since).
                continue;
            }
            let continues = if taken == 0 {
                p.base_seq <= self.covered_end
            } else {
                p.base_seq == self.covered_end
            };
            if !continues {
                break;
            }
            let (base_seq, end_seq, ids, capacity) = (p.base_seq, p.end_seq, p.ids, p.capacity);
            let segments = p.segments.clone();
            let Some(bloom) = BlockBloom::saved(capacity, file.clone(), p) else {
                tracing::warn!(
                    base_seq,
                    "a saved id filter part has the wrong size for its capacity; rebuilding from there"
                );
                break;
            };
            self.covered_end = end_seq;
            self.parts.push(Part {
                base_seq,
                end_seq,
                ids,
                capacity,
                segments,
                bloom,
            });
            taken += 1;
        }
        taken
    }
}

/// The store's filters and the sealed segments still to be added to them, in seq order.
///
/// Segments sealed while the store runs are added at their seal, from the index in memory.
/// Those found at open are taken from the filter saved at the last close (`persist.rs`) by the
/// first id lookup, and whatever that does not cover is added by a background thread
/// (`spawn_builder`) from the ids sections, so an open reads none of them; until it is
/// through, the segments not covered are searched exactly. A segment whose index cannot be read stops the chain there (`stalled`)
/// until retention removes that segment or the store is opened again: coverage never skips a
/// segment that is still in the store.
#[derive(Default)]
pub struct IdFilterState {
    pub filters: IdFilters,
    pending: std::collections::VecDeque<Arc<SealedSegment>>,
    building: bool,
    stalled: Option<Stall>,
    saved: Saved,
}

/// Where the chain stands with the IDFILTER file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Saved {
    /// Not read yet: the first id lookup reads it, before any segment is added. Nothing is
    /// saved in this state, so a run without id lookups leaves the file as it found it.
    #[default]
    Unread,
    /// Read (or nothing to read); the coverage the file on disk holds, if known.
    Read { covered_end: Option<u64> },
}

/// Why the chain stopped growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The index of the segment with this base seq could not be read.
    Unreadable(u64),
    /// No thread could be started to add the segments found at open.
    NoThread,
}

impl IdFilterState {
    /// State at open: nothing covered, every sealed segment pending.
    pub fn at_open(sealed: &[Arc<SealedSegment>], active_base: u64) -> Self {
        IdFilterState {
            filters: IdFilters::new(sealed.first().map_or(active_base, |s| s.base_seq)),
            pending: sealed.iter().cloned().collect(),
            building: false,
            stalled: None,
            // With no sealed segment, a saved file could cover nothing that is in the store.
            saved: if sealed.is_empty() {
                Saved::Read { covered_end: None }
            } else {
                Saved::Unread
            },
        }
    }

    /// Whether the saved file is still to be read; true once, and from then on false.
    pub fn take_unread(&mut self) -> bool {
        let unread = self.saved == Saved::Unread;
        if unread {
            self.saved = Saved::Read { covered_end: None };
        }
        unread
    }

    /// Takes over the saved parts `persist::load` checked; the segments they cover leave
    /// the queue. Returns how many parts were taken.
    pub fn adopt(&mut self, file: &Arc<Mapped>, parts: Vec<SavedPart>) -> usize {
        let taken = self.filters.adopt(file, parts);
        let covered_end = self.filters.covered_end();
        self.pending.retain(|s| s.base_seq >= covered_end);
        self.saved = Saved::Read {
            covered_end: (taken > 0).then_some(covered_end),
        };
        taken
    }

    /// The file's bytes and the coverage they hold, when that differs from what the file on
    /// disk holds (never before that file was read: see [`Saved::Unread`]).
    pub fn to_save(&self) -> Option<(Vec<u8>, u64)> {
        let (parts, end) = self.filters.saved_parts();
        match self.saved {
            // No part, and no file this run trusts: nothing worth a file.
            Saved::Read { covered_end: None } if parts.is_empty() => None,
            Saved::Read { covered_end: c } if c != Some(end) => Some((
                echolog_format::id_filter_file::encode_id_filter(&parts),
                end,
            )),
            _ => None,
        }
    }

    /// The file now holds the coverage up to `covered_end`.
    pub fn saved(&mut self, covered_end: u64) {
        self.saved = Saved::Read {
            covered_end: Some(covered_end),
        };
    }

    /// Retention removed these segments (oldest first): they leave the queue, and coverage
    /// steps over the ones it had not reached. A chain stopped at one of them goes on.
    pub fn removed(&mut self, segments: &[(u64, u64)]) {
        for &(base_seq, end_seq) in segments {
            self.pending.retain(|s| s.base_seq != base_seq);
            self.filters.skip_removed(base_seq, end_seq);
            if self.stalled == Some(Stall::Unreadable(base_seq)) {
                self.stalled = None;
            }
        }
    }

    /// A segment was just sealed; `hashes` are its ids' hashes (from its in-memory index).
    pub fn sealed(&mut self, seg: &Arc<SealedSegment>, ids: (u64, u32), mut hashes: Vec<u64>) {
        if self.building || !self.pending.is_empty() || self.stalled.is_some() {
            self.pending.push_back(seg.clone());
            return;
        }
        // In hash order the inserts walk the filter's blocks front to back.
        hashes.sort_unstable();
        if !self
            .filters
            .add_segment(segment_ids(seg, ids), hashes.into_iter())
        {
            // Not the next segment: never expected, so the chain stops growing rather than
            // skip it.
            self.pending.push_back(seg.clone());
            self.stalled = Some(Stall::Unreadable(seg.base_seq));
        }
    }
}

impl IdFilterState {
    /// Whether segments wait to be added with no thread adding them (never before the saved
    /// file was read: its parts come first).
    pub fn needs_builder(&self) -> bool {
        !self.pending.is_empty()
            && !self.building
            && self.stalled.is_none()
            && self.saved != Saved::Unread
    }
}

/// A sealed segment as a part records it: its range and its ids section's (length, CRC32).
pub fn segment_ids(seg: &SealedSegment, (ids_len, ids_crc): (u64, u32)) -> SegmentIds {
    SegmentIds {
        base_seq: seg.base_seq,
        end_seq: seg.end_seq,
        ids_len,
        ids_crc,
    }
}

/// Adds the pending segments on a thread of its own (`st` is `state`, locked by the caller);
/// the thread stops when they are done, when one cannot be read, or when the store is gone
/// (`alive` has no strong reference left). Started by the first id looked up after open, so
/// a store whose events carry no ids never reads its ids sections.
pub fn spawn_builder<T: Send + Sync + 'static>(
    state: &Arc<Mutex<IdFilterState>>,
    st: &mut IdFilterState,
    alive: std::sync::Weak<T>,
) {
    st.building = true;
    let for_thread = state.clone();
    let spawned = std::thread::Builder::new()
        .name("echolog-id-filter".into())
        .spawn(move || build_pending(&for_thread, &alive));
    if spawned.is_err() {
        // No thread: the segments stay uncovered and are searched exactly.
        st.building = false;
        st.stalled = Some(Stall::NoThread);
    }
}

fn build_pending<T>(state: &Mutex<IdFilterState>, alive: &std::sync::Weak<T>) {
    let started = std::time::Instant::now();
    let mut added = 0u64;
    loop {
        let next = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            match st.pending.pop_front() {
                Some(seg) if alive.strong_count() > 0 => Some(seg),
                _ => {
                    st.building = false;
                    None
                }
            }
        };
        let Some(seg) = next else { break };
        let hashes = seg.load().and_then(|l| {
            let hashes: Vec<u64> = l.ids()?.iter().map(|(h, _)| h).collect();
            Ok((l.ids_signature()?, hashes))
        });
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if st.filters.covered_end() > seg.base_seq {
            // Retention removed it meanwhile and coverage stepped over it.
            continue;
        }
        let ok = match hashes {
            Ok((ids, h)) => st
                .filters
                .add_segment(segment_ids(&seg, ids), h.into_iter()),
            Err(e) => {
                tracing::warn!(base_seq = seg.base_seq, error = %e, "the id filter stops before a segment it cannot read; ids from there on are searched in each segment");
                false
            }
        };
        if !ok {
            // The rest waits: retention removing this segment lets the chain go on.
            st.pending.push_front(seg.clone());
            st.stalled = Some(Stall::Unreadable(seg.base_seq));
            st.building = false;
            return;
        }
        added += 1;
    }
    tracing::info!(
        segments = added,
        ms = started.elapsed().as_millis() as u64,
        "id filter built over the sealed segments"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(i: u64) -> u64 {
        crate::mem_index::id_hash(&format!("req-{i}"))
    }

    fn seg(base_seq: u64, end_seq: u64) -> SegmentIds {
        SegmentIds {
            base_seq,
            end_seq,
            ids_len: 0,
            ids_crc: 0,
        }
    }

    fn hs(r: std::ops::Range<u64>) -> std::vec::IntoIter<u64> {
        r.map(h).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parts_double_so_their_number_grows_with_the_log_of_the_ids() {
        let mut f = IdFilters::new(1);
        let per_segment = 50_000u64;
        for s in 0..64u64 {
            let base = 1 + s * per_segment;
            let hashes: Vec<u64> = (base..base + per_segment).map(h).collect();
            assert!(f.add_segment(seg(base, base + per_segment), hashes.into_iter()));
        }
        // 3.2M ids from parts of 64k, 128k, ...: 64k * (2^k - 1) >= 3.2M at k = 6.
        assert_eq!(f.parts(), 6);
        assert_eq!(f.covered_end(), 1 + 64 * per_segment);
        // Every id is found, in a part whose range holds its segment.
        for i in (1..1 + 64 * per_segment).step_by(997) {
            let ranges = f.may_contain(h(i));
            assert!(ranges.iter().any(|(b, e)| *b <= i && i < *e), "{i}");
        }
    }

    #[test]
    fn coverage_neither_repeats_nor_skips_a_segment() {
        let mut f = IdFilters::new(1);
        assert!(f.add_segment(seg(1, 11), hs(1..11)));
        assert!(!f.add_segment(seg(1, 11), hs(1..11)), "added twice");
        assert!(!f.add_segment(seg(21, 31), hs(21..31)), "11..21 skipped");
        assert_eq!(f.covered_end(), 11);
        // A segment without ids advances the coverage and makes no part.
        assert!(f.add_segment(seg(11, 21), std::iter::empty()));
        assert_eq!((f.covered_end(), f.parts()), (21, 1));
    }

    /// Ids a segment of `saved_chain` holds: enough that ten segments need three parts.
    const IDS_PER_SEGMENT: u64 = 20_000;

    /// A chain over segments `1..11, 11..21, ...` (segment `s` holding the ids
    /// `s * IDS_PER_SEGMENT..`) as the file holds it: the mapped bytes and their parts.
    fn saved_chain(segments: u64) -> (Arc<Mapped>, Vec<SavedPart>) {
        let mut f = IdFilters::new(1);
        for s in 0..segments {
            let base = 1 + s * 10;
            let ids = s * IDS_PER_SEGMENT..(s + 1) * IDS_PER_SEGMENT;
            assert!(f.add_segment(seg(base, base + 10), hs(ids)));
        }
        let bytes = echolog_format::id_filter_file::encode_id_filter(&f.saved_parts().0);
        let parts = echolog_format::id_filter_file::decode_id_filter(&bytes).unwrap();
        (Arc::new(Box::new(bytes)), parts)
    }

    /// Whether every sampled id of the chain's segments is a "maybe" in a part over its seq.
    fn finds_every_id(f: &mut IdFilters, segments: u64) -> bool {
        (0..segments * IDS_PER_SEGMENT).step_by(101).all(|id| {
            let seq = 1 + id / IDS_PER_SEGMENT * 10;
            f.may_contain(h(id))
                .iter()
                .any(|(b, e)| *b <= seq && seq < *e)
        })
    }

    #[test]
    fn adopted_parts_answer_as_the_chain_they_were_saved_from() {
        let (file, saved) = saved_chain(10);
        assert_eq!(saved.len(), 3);
        let mut f = IdFilters::new(1);
        assert_eq!(f.adopt(&file, saved.clone()), 3);
        assert_eq!(f.covered_end(), 101);
        assert!(finds_every_id(&mut f, 10));
        // Segments removed from the front since (the store starts at seq 71, inside the
        // second part, 31..91): the part wholly before it is dropped.
        let mut f = IdFilters::new(71);
        assert_eq!(f.adopt(&file, saved.clone()), 2);
        assert_eq!(f.covered_end(), 101);
        // A gap before the first part saved: nothing is taken.
        let mut f = IdFilters::new(1);
        assert_eq!(f.adopt(&file, saved.clone().split_off(1)), 0);
        assert_eq!(f.covered_end(), 1);
        // A part of the wrong size for its capacity ends the adoption there.
        let mut bad = saved;
        bad[1].block_count -= 1;
        let mut f = IdFilters::new(1);
        assert_eq!(f.adopt(&file, bad), 1);
        assert_eq!(f.covered_end(), 31);
    }

    #[test]
    fn a_damaged_saved_page_answers_maybe_and_is_never_written_into() {
        let (file, saved) = saved_chain(10);
        let mut bytes: Vec<u8> = (**file).as_ref().to_vec();
        // Clear every bit of the last part's blocks: its ids would look new.
        bytes[saved[2].blocks_at.clone()].fill(0);
        let file: Arc<Mapped> = Arc::new(Box::new(bytes));
        let mut f = IdFilters::new(1);
        assert_eq!(f.adopt(&file, saved), 3);
        assert!(finds_every_id(&mut f, 10), "the damaged page says maybe");
        // The next segment cannot go into the damaged part: it starts a part of its own.
        assert!(f.add_segment(seg(101, 111), hs(900_000..900_010)));
        assert_eq!(f.parts(), 4);
        assert!(finds_every_id(&mut f, 10));
        assert!(f.may_contain(h(900_005)).contains(&(101, 111)));
        // Saved again, the damaged part and those after it are left for the next open to
        // rebuild from the ids sections.
        let (parts, end) = f.saved_parts();
        assert_eq!((parts.len(), end), (2, 91));
    }

    #[test]
    fn the_next_segment_after_adoption_joins_the_last_saved_part() {
        let (file, saved) = saved_chain(10);
        let mut f = IdFilters::new(1);
        f.adopt(&file, saved);
        assert!(f.add_segment(seg(101, 111), hs(900_000..900_010)));
        assert_eq!(f.parts(), 3, "copied into memory and added to");
        assert!(finds_every_id(&mut f, 10));
        assert!(f.may_contain(h(900_005)).contains(&(91, 111)));
        // Saved again, it answers the same.
        let bytes = echolog_format::id_filter_file::encode_id_filter(&f.saved_parts().0);
        let parts = echolog_format::id_filter_file::decode_id_filter(&bytes).unwrap();
        let file: Arc<Mapped> = Arc::new(Box::new(bytes));
        let mut g = IdFilters::new(1);
        assert_eq!(g.adopt(&file, parts), 3);
        assert!(finds_every_id(&mut g, 10));
        assert!(g.may_contain(h(900_005)).contains(&(91, 111)));
    }

    /// Segments in a directory that does not exist: every load fails, as an unreadable index.
    fn missing_segments(ranges: &[(u64, u64)]) -> Vec<Arc<SealedSegment>> {
        let storage = crate::storage::Storage::new(None, None);
        let dir = std::path::Path::new("/nonexistent/echolog-id-filter-test");
        ranges
            .iter()
            .map(|(b, e)| Arc::new(SealedSegment::new(dir, &storage, *b, *e)))
            .collect()
    }

    #[test]
    fn an_unreadable_segment_stops_the_chain_until_retention_removes_it() {
        let segs = missing_segments(&[(1, 11), (11, 21), (21, 31)]);
        let state = Mutex::new(IdFilterState::at_open(&segs[..2], 21));
        let alive = Arc::new(());
        assert!(
            !state.lock().unwrap().needs_builder(),
            "the saved file comes first"
        );
        assert!(state.lock().unwrap().take_unread());
        assert!(state.lock().unwrap().needs_builder());
        state.lock().unwrap().building = true;
        build_pending(&state, &Arc::downgrade(&alive));
        {
            let mut st = state.lock().unwrap();
            assert_eq!(st.stalled, Some(Stall::Unreadable(1)));
            assert_eq!(st.filters.covered_end(), 1, "nothing skipped");
            assert!(!st.needs_builder() && !st.building);
            // A seal while stalled waits in line, in order.
            st.sealed(&segs[2], (0, 0), vec![h(25)]);
            assert_eq!(st.pending.len(), 3);
            // Retention removes the first segment: coverage steps over it, the chain goes on.
            st.removed(&[(1, 11)]);
            assert_eq!(st.filters.covered_end(), 11);
            assert_eq!(st.stalled, None);
            assert!(st.needs_builder());
            st.building = true;
        }
        build_pending(&state, &Arc::downgrade(&alive));
        let st = state.lock().unwrap();
        assert_eq!(st.stalled, Some(Stall::Unreadable(11)));
        assert_eq!(st.filters.covered_end(), 11);
        assert_eq!(st.pending.len(), 2);
    }

    #[test]
    fn the_builder_stops_when_the_store_is_gone() {
        let segs = missing_segments(&[(1, 11)]);
        let state = Mutex::new(IdFilterState::at_open(&segs, 11));
        let alive = Arc::new(());
        let weak = Arc::downgrade(&alive);
        drop(alive);
        state.lock().unwrap().building = true;
        build_pending(&state, &weak);
        let st = state.lock().unwrap();
        assert!(!st.building);
        assert_eq!((st.stalled, st.filters.covered_end()), (None, 1));
    }

    proptest! {
        /// No false "no": every id added is reported as maybe in the part that holds it.
        #[test]
        fn every_added_id_may_be_there(
            segments in proptest::collection::vec(
                proptest::collection::vec(any::<u64>(), 0..300), 1..20),
        ) {
            let mut f = IdFilters::new(1);
            let mut base = 1u64;
            let mut added = Vec::new();
            for hashes in &segments {
                let end = base + hashes.len() as u64 + 1;
                prop_assert!(f.add_segment(seg(base, end), hashes.iter().copied()));
                added.extend(hashes.iter().map(|h| (*h, base)));
                base = end;
            }
            for (hash, seg_base) in added {
                let ranges = f.may_contain(hash);
                prop_assert!(ranges.iter().any(|(b, e)| *b <= seg_base && seg_base < *e));
            }
        }
    }
}
