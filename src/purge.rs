//! Purge: events deleted longer ago than a grace period are erased from the sealed segments.
//!
//! An event is purgeable when a tombstone deletes it (its entity's `$delete` that no restore
//! lifted, or a `$delete_seqs` naming it) and that tombstone's record is older than the grace
//! period. Purge rewrites each sealed segment holding purgeable events, block by block: a
//! purged record becomes a `$purged` record with no entity, tags or payload, keeping only its
//! event time and idempotency id, so seqs stay dense (positional reads, the block table and the
//! ts column keep their shape) and a retried append of a purged event is still a duplicate.
//! Blocks without purged records are copied as they are. The active segment is purged after it
//! is sealed, by a later pass.
//!
//! Steps for one segment, each safe to be cut short by a crash:
//! 1. The new segment and its index are written to `<name>.tmp` files and fdatasynced.
//! 2. Cluster files covering the segment (derived copies holding the same events) are
//!    unlinked and the directory fsynced; compaction rebuilds them from the new segment.
//! 3. The old index is unlinked, directory fsynced: a crash here leaves the old segment, whose
//!    index open rebuilds.
//! 4. The new segment is renamed over the old one, directory fsynced: a crash here leaves the
//!    new segment without an index, which is rebuilt from it (and the index temp is removed).
//! 5. The new index is renamed into place, directory fsynced; the new segment is published.
//!
//! Readers holding an older snapshot keep the old files' mappings (purge maps them before it
//! unlinks anything), so they see the data as it was when they started, never a mix.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echolog_format::block::{encode_block, record_at, BlockHeader, BlockMeta, BLOCK_HEADER_LEN};
use echolog_format::index::{SECTION_ENTITIES, SECTION_KINDS};
use echolog_format::record::encode_record;
use echolog_format::segment_header::SegmentHeader;
use echolog_format::tombstone_file::{TYPE_DELETE_ENTITY, TYPE_DELETE_SEQS};
use roaring::RoaringBitmap;
use rustc_hash::FxHashSet;

use crate::cluster::ClusterFile;
use crate::dir::{index_name, segment_name};
use crate::error::{Error, Result};
use crate::scan::scan_segment;
use crate::segment::{LoadedSegment, SealedSegment};
use crate::storage::temp_path;
use crate::store::{Inner, Store, View};
use crate::tombstones::{Tombstones, KIND_PURGED, RESERVED_KINDS};
use crate::writer::now_ms;

/// What a purge pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Events erased (each now a `$purged` record).
    pub events_purged: u64,
    pub segments_rewritten: u32,
    /// Cluster files removed because they held purged events (compaction rebuilds them).
    pub cluster_files_removed: u32,
    /// Bytes of segments and indexes before and after their rewrite (cluster files apart).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// How often the background thread looks for purgeable events when `purge_grace` is set.
pub const PURGE_PASS_INTERVAL: Duration = Duration::from_secs(60);

/// What passes remember, so a pass with nothing new to do costs no I/O.
#[derive(Default)]
pub(crate) struct PurgeState {
    /// Event time of each delete tombstone's record, read once.
    tombstone_ts: rustc_hash::FxHashMap<u64, i64>,
    /// (tombstone generation, tombstones old enough, end seq of the sealed segments) of the
    /// last pass that finished: the same triple again means nothing new is purgeable.
    last_finished: Option<(u64, usize, u64)>,
}

impl Store {
    /// Runs a purge pass now: erases every event of a sealed segment deleted by a tombstone
    /// older than `grace` (None: the store's `purge_grace`; an error when neither is set).
    /// Returns what it removed. Events of the active segment wait until it is sealed.
    pub fn purge_now(&self, grace: Option<Duration>) -> Result<PurgeReport> {
        let grace = grace.or(self.inner.opts.purge_grace).ok_or_else(|| {
            Error::invalid("grace: no purge grace given and the store has no purge_grace set")
        })?;
        let _one = self
            .inner
            .compaction
            .step
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        purge(&self.inner, grace)
    }
}

/// One purge pass over the sealed segments, oldest first. The caller holds compaction's step
/// lock, so no cluster file is built from a segment while it is rewritten.
pub(crate) fn purge(inner: &Inner, grace: Duration) -> Result<PurgeReport> {
    if let Some(msg) = inner.poisoned() {
        return Err(Error::ReadOnly(msg));
    }
    let cutoff = now_ms().saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let view = inner.current_view();
    let old_enough = tombstones_older_than(inner, &view, cutoff)?;
    let mut report = PurgeReport::default();
    let sealed_end = view.sealed.last().map_or(0, |s| s.end_seq);
    let key = (view.tombstones.generation, old_enough.len(), sealed_end);
    let state = || inner.purge_state.lock().unwrap_or_else(|p| p.into_inner());
    if old_enough.is_empty() || state().last_finished == Some(key) {
        return Ok(report);
    }
    let started = Instant::now();
    let mut written = 0u64;
    let mut finished = true;
    for seg in view.sealed.iter() {
        if inner.compaction.closing() {
            finished = false;
            break;
        }
        // A segment that cannot be read cannot be rewritten; the others still are, and the
        // next pass tries it again.
        let l = match seg.load() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(base_seq = seg.base_seq, error = %e, "purge skipped a segment it could not load");
                finished = false;
                continue;
            }
        };
        let ords = purgeable(&l, &view.tombstones, &old_enough)?;
        if ords.is_empty() {
            continue;
        }
        let n = ords.len();
        let (before, after) = match rewrite(inner, seg, &l, &ords, &mut report) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            // Damage in a block to rewrite: that segment keeps its events (and `verify`
            // names the damage); the others are purged.
            Err(e @ Error::Corruption { .. }) => {
                tracing::warn!(base_seq = seg.base_seq, error = %e, "purge skipped a damaged segment");
                finished = false;
                continue;
            }
            Err(e) => return Err(e),
        };
        report.events_purged += n;
        report.segments_rewritten += 1;
        report.bytes_before += before;
        report.bytes_after += after;
        written += after;
        tracing::info!(
            base_seq = seg.base_seq,
            end_seq = seg.end_seq,
            events = n,
            bytes_before = before,
            bytes_after = after,
            "purge rewrote a segment"
        );
        let limit = inner.opts.compaction_bytes_per_second_max;
        std::thread::sleep(crate::compaction::throttle_wait(
            written,
            limit,
            started.elapsed(),
        ));
    }
    inner
        .purged_events
        .fetch_add(report.events_purged, Ordering::Relaxed);
    if finished {
        state().last_finished = Some(key);
    }
    Ok(report)
}

/// Seqs of the delete tombstones whose record (written at delete time) is at least as old as
/// `cutoff` (ms). A tombstone whose record retention removed deleted only removed events.
fn tombstones_older_than(inner: &Inner, view: &View, cutoff: i64) -> Result<FxHashSet<u64>> {
    let first = crate::store::first_seq_of(view);
    let mut out = FxHashSet::default();
    let mut state = inner.purge_state.lock().unwrap_or_else(|p| p.into_inner());
    for e in view.tombstones.entries() {
        if e.seq < first || !matches!(e.kind, TYPE_DELETE_ENTITY | TYPE_DELETE_SEQS) {
            continue;
        }
        let ts = match state.tombstone_ts.get(&e.seq) {
            Some(ts) => *ts,
            None => match inner.record_in_view(view, e.seq)? {
                Some(r) => *state.tombstone_ts.entry(e.seq).or_insert(r.event.ts),
                None => continue,
            },
        };
        if ts <= cutoff {
            out.insert(e.seq);
        }
    }
    Ok(out)
}

/// Ordinals of `l` to purge, from its index alone (no block is read): events of entities with
/// delete tombstones, and seqs named by seq tombstones, whose deleting tombstone is old enough.
/// Reserved-kind records (tombstones themselves, earlier purges) are never purged.
fn purgeable(
    l: &LoadedSegment,
    tomb: &Tombstones,
    old_enough: &FxHashSet<u64>,
) -> Result<RoaringBitmap> {
    let base = l.header.base_seq;
    let n = l.record_count();
    let mut out = RoaringBitmap::new();
    for entity in tomb.entities_with_deletes() {
        let Some(bm) = l.bitmap(SECTION_ENTITIES, entity.as_bytes())? else {
            continue;
        };
        for ord in bm {
            let t = tomb.entity_deleted_by(entity, base + u64::from(ord));
            if t != 0 && old_enough.contains(&t) {
                out.insert(ord);
            }
        }
    }
    for seq in tomb.deleted_seqs() {
        if seq < base || seq >= base + u64::from(n) {
            continue;
        }
        if old_enough.contains(&tomb.seq_deleted_by(seq)) {
            out.insert((seq - base) as u32);
        }
    }
    for k in RESERVED_KINDS.iter().chain(std::iter::once(&KIND_PURGED)) {
        if let Some(bm) = l.bitmap(SECTION_KINDS, k.as_bytes())? {
            out -= bm;
        }
    }
    Ok(out)
}

/// Rewrites one segment without the records at `ords` (steps 1-5 of the module comment).
/// Returns the bytes of segment and index before and after, or None when retention removed
/// the segment meanwhile.
fn rewrite(
    inner: &Inner,
    seg: &Arc<SealedSegment>,
    l: &LoadedSegment,
    ords: &RoaringBitmap,
    report: &mut PurgeReport,
) -> Result<Option<(u64, u64)>> {
    let (seg_path, idx_path) = (l.seg_path.clone(), l.idx_path.clone());
    let (seg_tmp, idx_tmp) = (temp_path(&seg_path), temp_path(&idx_path));
    // 1. Both new files durable under temp names. The segment is written block by block and
    // read back whole (every block checksummed) to build its index, so memory holds one
    // block and the index being built, not the segment.
    let staged = stage_segment(inner, l, ords, &seg_tmp).and_then(|seg_len| {
        let idx_bytes = index_of(inner, seg, &seg_tmp)?;
        stage(inner, &idx_tmp, &idx_bytes)?;
        Ok(seg_len + idx_bytes.len() as u64)
    });
    let after = match staged {
        Ok(after) => after,
        Err(e) => {
            let _ = inner.storage.remove(&seg_tmp);
            let _ = inner.storage.remove(&idx_tmp);
            return Err(e);
        }
    };
    let before = l.disk_bytes();
    // 2. Cluster files holding the segment's events go first.
    report.cluster_files_removed += remove_covering_clusters(inner, seg)?;
    let _files = inner.sealed_files.lock().unwrap_or_else(|p| p.into_inner());
    let current = inner.current_view();
    if !current.sealed.iter().any(|s| Arc::ptr_eq(s, seg)) {
        // Retention removed it meanwhile.
        let _ = inner.storage.remove(&seg_tmp);
        let _ = inner.storage.remove(&idx_tmp);
        return Ok(None);
    }
    // 3-5. Old index out, new segment in, new index in; each step durable before the next.
    inner.storage.remove(&idx_path)?;
    inner.storage.sync_dir(&inner.dir)?;
    inner.storage.rename(&seg_tmp, &seg_path)?;
    inner.storage.sync_dir(&inner.dir)?;
    inner.storage.rename(&idx_tmp, &idx_path)?;
    inner.storage.sync_dir(&inner.dir)?;
    let new = Arc::new(SealedSegment::rewritten(
        &inner.dir,
        &inner.storage,
        seg.base_seq,
        seg.end_seq,
    ));
    publish_segment(inner, seg, new);
    debug_assert_eq!(seg_path, inner.dir.join(segment_name(seg.base_seq)));
    debug_assert_eq!(idx_path, inner.dir.join(index_name(seg.base_seq)));
    Ok(Some((before, after)))
}

/// Writes the segment with the records at `ords` turned into `$purged` records to `path`,
/// block by block, and fdatasyncs it. Returns its length.
fn stage_segment(
    inner: &Inner,
    l: &LoadedSegment,
    ords: &RoaringBitmap,
    path: &std::path::Path,
) -> Result<u64> {
    let f = inner.storage.create(path)?;
    let header = SegmentHeader::new(l.header.base_seq).encode();
    inner.storage.write_derived(&*f, path, &header, 0)?;
    let mut at = header.len() as u64;
    let mut compressor = zstd::bulk::Compressor::new(inner.opts.zstd_level).ok();
    let (mut raw, mut out) = (Vec::new(), Vec::new());
    for (b, e) in l.blocks.iter().enumerate() {
        let stored = l.block_bytes(b)?;
        let first = e.first_ordinal;
        let bytes = if ords.range_cardinality(first..first + e.count) == 0 {
            stored
        } else {
            out.clear();
            reencode_block(l, b, ords, &mut raw, &mut out, compressor.as_mut())?;
            &out[..]
        };
        inner.storage.write_derived(&*f, path, bytes, at)?;
        at += bytes.len() as u64;
    }
    inner.storage.sync_derived(&*f, path)?;
    Ok(at)
}

/// Block `b` of `l` with its records at `ords` replaced by `$purged` records, encoded into
/// `out` with the same first seq, count, ts bounds and flags.
fn reencode_block(
    l: &LoadedSegment,
    b: usize,
    ords: &RoaringBitmap,
    raw: &mut Vec<u8>,
    out: &mut Vec<u8>,
    compressor: Option<&mut zstd::bulk::Compressor<'_>>,
) -> Result<()> {
    let e = &l.blocks[b];
    let header = l
        .block_bytes(b)?
        .get(..BLOCK_HEADER_LEN)
        .ok_or_else(|| Error::Inconsistent("block shorter than its header".into()))
        .and_then(|h| BlockHeader::decode(h).map_err(|source| corrupt(l, e.offset, source)))?;
    let d = l.read_block(b)?;
    raw.clear();
    for i in 0..d.count() {
        let off = d.offsets[i as usize];
        let end = d
            .offsets
            .get(i as usize + 1)
            .map_or(d.raw.len(), |o| *o as usize);
        if ords.contains(e.first_ordinal + i) {
            let r = record_at(&d.raw, off).map_err(|source| corrupt(l, e.offset, source))?;
            encode_record::<&str>(raw, "", KIND_PURGED, r.ts, &[], b"", r.id);
        } else {
            raw.extend_from_slice(&d.raw[off as usize..end]);
        }
    }
    let meta = BlockMeta {
        first_seq: header.first_seq,
        count: header.count,
        min_ts: header.min_ts,
        max_ts: header.max_ts,
        flags: header.flags,
    };
    encode_block(out, meta, raw, compressor);
    Ok(())
}

/// Reads the staged segment back whole (every block checksummed) and builds its index.
fn index_of(inner: &Inner, seg: &SealedSegment, path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = inner.storage.map(path)?;
    let scan =
        scan_segment((*bytes).as_ref(), seg.base_seq).map_err(|source| Error::Corruption {
            file: path.to_path_buf(),
            offset: 0,
            source,
        })?;
    if scan.stopped.is_some() || scan.index.end_seq() != seg.end_seq {
        return Err(Error::Inconsistent(format!(
            "purge's rewrite {} does not read back whole",
            path.display()
        )));
    }
    Ok(scan.index.to_index_file())
}

fn corrupt(l: &LoadedSegment, offset: u64, source: echolog_format::FormatError) -> Error {
    Error::Corruption {
        file: l.seg_path.clone(),
        offset,
        source,
    }
}

/// Writes and fdatasyncs a new file that is not part of the store yet: its failures cost only
/// the file.
fn stage(inner: &Inner, path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let f = inner.storage.create(path)?;
    inner.storage.write_derived(&*f, path, bytes, 0)?;
    inner.storage.sync_derived(&*f, path)
}

/// Unlinks the cluster files covering `seg` (after mapping them, for readers of older
/// snapshots) and publishes the set without them; durable before this returns.
fn remove_covering_clusters(inner: &Inner, seg: &SealedSegment) -> Result<u32> {
    let view = inner.current_view();
    let covering: Vec<Arc<ClusterFile>> = view
        .clusters
        .iter()
        .filter(|c| c.covers(seg.base_seq, seg.end_seq))
        .cloned()
        .collect();
    if covering.is_empty() {
        return Ok(0);
    }
    for c in &covering {
        // A damaged file needs no mapping: readers already read around it.
        let _ = c.preload();
    }
    crate::compaction::publish_clusters(inner, &covering, None);
    for c in &covering {
        inner.storage.remove(&c.path)?;
    }
    inner.storage.sync_dir(&inner.dir)?;
    Ok(covering.len() as u32)
}

/// Publishes a view with `new` in place of `old` (same seq range).
fn publish_segment(inner: &Inner, old: &Arc<SealedSegment>, new: Arc<SealedSegment>) {
    let mut view = inner.view.write().unwrap_or_else(|p| p.into_inner());
    let sealed: Vec<Arc<SealedSegment>> = view
        .sealed
        .iter()
        .map(|s| {
            if Arc::ptr_eq(s, old) {
                new.clone()
            } else {
                s.clone()
            }
        })
        .collect();
    *view = Arc::new(View {
        sealed: Arc::new(sealed),
        ..View::clone(&view)
    });
    drop(view);
    inner
        .deleted_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&old.base_seq);
}
