//! `history`: one entity's events, through the per-segment entity postings.
//!
//! Per segment, the entity's ordinals come from its postings (a roaring bitmap in a sealed
//! segment's index, a vector in the active one), are filtered by seq and by the ts column, and
//! only then are the blocks holding survivors read: a segment or block without the entity's
//! events is never decompressed. Where compaction has clustered a run of sealed segments,
//! the cluster file answers for all of them: its directory gives the entity's records as one
//! contiguous run of blocks.

use echolog_format::index::SECTION_ENTITIES;

use std::sync::Arc;

use crate::cluster::ClusterFile;
use crate::error::Result;
use crate::event::StoredEvent;
use crate::segment::SealedSegment;
use crate::store::{in_range, HistoryQuery, Store, View};
use crate::tombstones::{Tombstones, REASON_TAG_PREFIX};

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

/// What to do with one stored event given the query; None drops it.
pub(crate) fn present(
    mut ev: StoredEvent,
    include_deleted: bool,
    tomb: &Tombstones,
) -> Option<StoredEvent> {
    let reserved = ev
        .event
        .kind
        .starts_with(crate::event::RESERVED_KIND_PREFIX);
    if !include_deleted {
        return (!reserved && ev.deleted_by == 0).then_some(ev);
    }
    if ev.deleted_by != 0 {
        if let Some(reason) = tomb.reason(ev.deleted_by) {
            ev.event.tags.push(format!("{REASON_TAG_PREFIX}{reason}"));
        }
    }
    Some(ev)
}

pub(crate) fn history(store: &Store, q: &HistoryQuery) -> Result<Vec<StoredEvent>> {
    let view = store.view();
    let inner = &store.inner;
    let want = if q.limit == 0 {
        usize::MAX
    } else {
        q.limit as usize
    };
    let mut out = Answer {
        events: Vec::new(),
        bytes: 0,
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
            if let Some(ev) = present(
                inner.active_event(a, ord, &tomb, &mut hint)?,
                q.include_deleted,
                &tomb,
            ) {
                out.push(ev);
            }
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
        let keep = |o: &u32| seq_ok(base + u64::from(*o)) && in_range(l.ts(*o), q.from_ts, q.to_ts);
        let mut hint = None;
        let mut push = |ord: u32| -> Result<bool> {
            if let Some(ev) = present(
                inner.sealed_event(&l, ord, &tomb, &mut hint)?,
                q.include_deleted,
                &tomb,
            ) {
                out.push(ev);
            }
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
        c.visit_entity(
            &q.entity,
            q.reverse,
            q.after_seq,
            &|key, block, load| inner.block_cached(key, block, load),
            &mut |seq, r| {
                if seq < floor || !seq_ok(seq) || !in_range(r.ts, q.from_ts, q.to_ts) {
                    return Ok(true);
                }
                let ev = inner.decorate(StoredEvent::from_record(seq, r), &tomb);
                if let Some(ev) = present(ev, q.include_deleted, &tomb) {
                    out.push(ev);
                }
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
    out.truncate(want);
    Ok(out.events)
}

/// The events found so far, and whether the count or byte bound is reached.
struct Answer {
    events: Vec<StoredEvent>,
    bytes: u64,
    want: usize,
    bytes_max: u64,
}

impl Answer {
    fn push(&mut self, ev: StoredEvent) {
        self.bytes += ev.size_bytes();
        self.events.push(ev);
    }

    fn full(&self) -> bool {
        self.events.len() >= self.want || (self.bytes_max > 0 && self.bytes >= self.bytes_max)
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn truncate(&mut self, n: usize) {
        self.events.truncate(n);
        self.bytes = self.events.iter().map(StoredEvent::size_bytes).sum();
    }
}
