//! `history`: one entity's events, through the per-segment entity postings.
//!
//! Per segment, the entity's ordinals come from its postings (a roaring bitmap in a sealed
//! segment's index, a vector in the active one), are filtered by seq and by the ts column, and
//! only then are the blocks holding survivors read: a segment or block without the entity's
//! events is never decompressed. Where compaction has clustered a run of sealed segments,
//! the cluster file answers for all of them: its directory gives the entity's records as one
//! contiguous run of blocks.

use echolog_format::index::SECTION_ENTITIES;
use echolog_format::record::RecordRef;

use std::sync::Arc;

use crate::cluster::ClusterFile;
use crate::error::Result;
use crate::event::{EventRef, StoredEvent};
use crate::segment::SealedSegment;
use crate::store::{in_range, HistoryQuery, Store, View};
use crate::tombstones::Tombstones;

/// Where the sealed part of a snapshot is read from, in seq order: a cluster file for every
/// run of segments one covers, the segment itself otherwise.
enum Source<'a> {
    Segment(&'a SealedSegment),
    Cluster(&'a ClusterFile),
}

fn sources(view: &View) -> Vec<Source<'_>> {
    let mut out: Vec<Source<'_>> = Vec::with_capacity(view.sealed.len());
    let mut files = view.clusters.iter().peekable();
    let mut last: Option<&Arc<ClusterFile>> = None;
    for seg in view.sealed.iter() {
        while files.next_if(|c| c.end_seq <= seg.base_seq).is_some() {}
        match files.peek() {
            Some(c) if c.covers(seg.base_seq, seg.end_seq) => {
                if !last.is_some_and(|l| Arc::ptr_eq(l, c)) {
                    out.push(Source::Cluster(c));
                    last = Some(c);
                }
            }
            _ => out.push(Source::Segment(seg)),
        }
    }
    out
}

/// Receives the events of an answer one at a time, borrowed from their decoded blocks: a
/// history ([`Store::history_into`]) or a positional read ([`Store::read_durable_into`]).
pub trait EventSink {
    /// Takes the next event of the answer.
    fn push(&mut self, ev: &EventRef<'_>);
    /// Keeps only the first `n` events taken: a history drops what it took from a damaged
    /// cluster file and reads those events again from its segments. Positional reads never
    /// call it.
    fn truncate(&mut self, n: usize);
}

/// The sink behind [`Store::history`]: owned events.
#[derive(Default)]
pub(crate) struct Collect(pub Vec<StoredEvent>);

impl EventSink for Collect {
    fn push(&mut self, ev: &EventRef<'_>) {
        let stored = ev.to_stored();
        debug_assert_eq!(stored.size_bytes(), ev.size_bytes());
        self.0.push(stored);
    }

    fn truncate(&mut self, n: usize) {
        self.0.truncate(n);
    }
}

/// Offers record `r` at `seq` to the answer: sets who deleted it, drops what the query does
/// not show (deleted events and tombstones themselves, unless `include_deleted`) and attaches
/// the tombstone's reason to what it shows. Reserved-kind records are never deleted.
fn offer(
    out: &mut Answer<'_>,
    seq: u64,
    r: &RecordRef<'_>,
    include_deleted: bool,
    tomb: &Tombstones,
) {
    let reserved = r.kind.starts_with(crate::event::RESERVED_KIND_PREFIX);
    let deleted_by = tomb.record_deleted_by(r.kind, r.entity, seq);
    if !include_deleted && (reserved || deleted_by != 0) {
        return;
    }
    let reason = if include_deleted && deleted_by != 0 {
        tomb.reason(deleted_by)
    } else {
        None
    };
    out.push(&EventRef::new(seq, *r, deleted_by, reason));
}

pub(crate) fn history(store: &Store, q: &HistoryQuery, sink: &mut dyn EventSink) -> Result<()> {
    let view = store.view();
    let inner = &store.inner;
    let want = if q.limit == 0 {
        usize::MAX
    } else {
        q.limit as usize
    };
    let mut out = Answer {
        sink,
        ends: Vec::new(),
        want,
        bytes_max: q.bytes_max,
    };
    // Seq bounds: forward wants seq > after_seq; reverse wants seq < after_seq (0: no bound).
    let seq_ok = |seq: u64| {
        if q.reverse {
            q.after_seq == 0 || seq < q.after_seq
        } else {
            seq > q.after_seq
        }
    };
    let tomb = view.tombstones.clone();
    let ts_overlaps =
        |min: i64, max: i64| q.from_ts.is_none_or(|f| max >= f) && q.to_ts.is_none_or(|t| min < t);

    // The active segment is the newest: first in reverse, last forward.
    let active_part = |out: &mut Answer| -> Result<()> {
        let a = &view.active;
        let ords: Vec<u32> = {
            let idx = a.index();
            match idx.entities.get(q.entity.as_str()) {
                None => return Ok(()),
                Some(v) => v
                    .iter()
                    .copied()
                    // Ordinals past the snapshot belong to a commit still being published.
                    .take_while(|o| *o < view.active_len)
                    .filter(|o| {
                        seq_ok(a.base_seq + u64::from(*o))
                            && in_range(idx.ts[*o as usize], q.from_ts, q.to_ts)
                    })
                    .collect(),
            }
        };
        let mut hint = None;
        let mut push = |ord: u32| -> Result<bool> {
            let (seq, r) = inner.active_record(a, ord, &mut hint)?;
            offer(out, seq, &r, q.include_deleted, &tomb);
            Ok(out.full())
        };
        if q.reverse {
            for o in ords.into_iter().rev() {
                if push(o)? {
                    break;
                }
            }
        } else {
            for o in ords {
                if push(o)? {
                    break;
                }
            }
        }
        Ok(())
    };

    let sealed_part = |seg: &crate::segment::SealedSegment, out: &mut Answer| -> Result<()> {
        // Skip segments entirely outside the seq bound without loading them.
        if q.reverse {
            if q.after_seq != 0 && seg.base_seq >= q.after_seq {
                return Ok(());
            }
        } else if seg.end_seq <= q.after_seq.saturating_add(1) {
            return Ok(());
        }
        let l = seg.load()?;
        if l.record_count() == 0 || !ts_overlaps(l.header.min_ts, l.header.max_ts) {
            return Ok(());
        }
        let Some(bm) = l.bitmap(SECTION_ENTITIES, q.entity.as_bytes())? else {
            return Ok(());
        };
        let base = l.header.base_seq;
        // The ts column is read (and checked, once) only for a history bounded in time.
        let ts = match (q.from_ts, q.to_ts) {
            (None, None) => None,
            _ => Some(l.ts_column()?),
        };
        let keep = |o: &u32| {
            seq_ok(base + u64::from(*o))
                && ts.is_none_or(|t| in_range(t.get(*o), q.from_ts, q.to_ts))
        };
        // The blocks the next events are in, asked for together (`prefetch_blocks`), at most
        // as many events as the answer still has room for, skipping cached blocks.
        let room = out.want.saturating_sub(out.len());
        let next_blocks = |ords: &mut dyn Iterator<Item = u32>| {
            let mut blocks: Vec<usize> = Vec::new();
            // Ordinals come in order: most fall in the block of the one before (no search).
            let mut last: Option<std::ops::Range<u32>> = None;
            for o in ords.take(room) {
                if last.as_ref().is_some_and(|r| r.contains(&o)) {
                    continue;
                }
                let Some(b) = l.block_of(o) else { continue };
                let e = &l.blocks[b];
                last = Some(e.first_ordinal..e.first_ordinal + e.count);
                if !inner.block_is_cached(l.cache_key, b) {
                    blocks.push(b);
                }
            }
            blocks
        };
        let ahead = if q.reverse {
            next_blocks(&mut bm.iter().rev().filter(keep))
        } else {
            next_blocks(&mut bm.iter().filter(keep))
        };
        // One block too: asked for, its fault finds it queued and reads nothing around it.
        if !ahead.is_empty() {
            l.prefetch_blocks(ahead.into_iter());
        }
        let mut hint = None;
        let mut push = |ord: u32| -> Result<bool> {
            let (seq, r) = inner.sealed_record(&l, ord, &mut hint)?;
            offer(out, seq, &r, q.include_deleted, &tomb);
            Ok(out.full())
        };
        if q.reverse {
            for o in bm.iter().rev().filter(keep) {
                if push(o)? {
                    break;
                }
            }
        } else {
            for o in bm.iter().filter(keep) {
                if push(o)? {
                    break;
                }
            }
        }
        Ok(())
    };

    // Seqs retention removed may still sit in a cluster file that also covers newer ones.
    let floor = view.sealed.first().map_or(0, |s| s.base_seq);
    let cluster_part = |c: &ClusterFile, out: &mut Answer| -> Result<()> {
        if q.reverse {
            if q.after_seq != 0 && c.base_seq >= q.after_seq {
                return Ok(());
            }
        } else if c.end_seq <= q.after_seq.saturating_add(1) {
            return Ok(());
        }
        let ahead = crate::cluster::ReadAhead {
            records_max: out.want.saturating_sub(out.len()),
            cached: &|key, block| inner.block_is_cached(key, block),
        };
        c.visit_entity(
            &q.entity,
            q.reverse,
            q.after_seq,
            &ahead,
            &|key, block, load| inner.block_cached(key, block, load),
            &mut |seq, r| {
                if seq < floor || !seq_ok(seq) || !in_range(r.ts, q.from_ts, q.to_ts) {
                    return Ok(true);
                }
                offer(out, seq, r, q.include_deleted, &tomb);
                Ok(!out.full())
            },
        )
    };
    let part = |s: &Source<'_>, out: &mut Answer| match s {
        Source::Segment(seg) => sealed_part(seg, out),
        Source::Cluster(c) => {
            let before = out.len();
            match cluster_part(c, out) {
                // A cluster file is a copy: when it is damaged, its segments answer instead.
                Err(e @ crate::error::Error::Corruption { .. }) => {
                    tracing::warn!(file = %c.path.display(), error = %e, "damaged cluster file; reading its segments instead (remove it and compaction rebuilds it)");
                    out.truncate(before);
                    let covered = view
                        .sealed
                        .iter()
                        .filter(|s| c.covers(s.base_seq, s.end_seq));
                    if q.reverse {
                        for seg in covered.rev() {
                            if out.full() {
                                break;
                            }
                            sealed_part(seg, out)?;
                        }
                    } else {
                        for seg in covered {
                            if out.full() {
                                break;
                            }
                            sealed_part(seg, out)?;
                        }
                    }
                    Ok(())
                }
                r => r,
            }
        }
    };
    let sources = sources(&view);
    if q.reverse {
        active_part(&mut out)?;
        for s in sources.iter().rev() {
            if out.full() {
                break;
            }
            part(s, &mut out)?;
        }
    } else {
        for s in sources.iter() {
            if out.full() {
                break;
            }
            part(s, &mut out)?;
        }
        if !out.full() {
            active_part(&mut out)?;
        }
    }
    Ok(())
}

/// The answer so far: what the sink took, and whether the count or byte bound is reached.
struct Answer<'s> {
    sink: &'s mut dyn EventSink,
    /// Bytes (`EventRef::size_bytes`) of the events taken, cumulative: `ends[i]` covers 0..=i.
    ends: Vec<u64>,
    want: usize,
    bytes_max: u64,
}

impl Answer<'_> {
    fn push(&mut self, ev: &EventRef<'_>) {
        debug_assert!(!self.full(), "history took an event past its bound");
        self.ends.push(self.bytes() + ev.size_bytes());
        self.sink.push(ev);
    }

    fn bytes(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    fn full(&self) -> bool {
        self.ends.len() >= self.want || (self.bytes_max > 0 && self.bytes() >= self.bytes_max)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn truncate(&mut self, n: usize) {
        self.ends.truncate(n);
        self.sink.truncate(n);
    }
}
