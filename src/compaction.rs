//! Background compaction: sealed segments are rewritten into cluster files (`cluster/`),
//! records in (entity, seq) order, and cluster files are merged, `fanout` adjacent files of
//! one level into one of the next, so that an entity lives in O(log N) files. A merge copies
//! the blocks that hold one entity's records only as they are (`cluster/runs.rs`).
//!
//! One step at a time, on one thread per store, through the storage seam:
//! 1. cluster files whose whole range retention removed are dropped;
//! 2. else, when a level holds `2 x fanout` files or more (ingest outrunning merges), the
//!    oldest `fanout` adjacent files of the lowest such level are merged, so readers never
//!    face an unbounded number of files;
//! 3. else the oldest sealed segment no cluster file covers becomes a level-0 file;
//! 4. else the oldest `fanout` adjacent files of the lowest level that has them are merged.
//!
//! A new file is durable under its name (temp, fdatasync, rename, directory fsync) before it
//! is published; the files it replaces are marked obsolete and removed when the last reader
//! holding them lets go. A crash at any point leaves the segments untouched (they are the
//! primary copy) and at worst a cluster file whose range another covers: open removes it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use echolog_format::block::record_at;
use echolog_format::index::SECTION_ENTITIES;

use crate::cluster::{parse_cluster_name, ClusterFile, ClusterWriter, RunCursor, RunSink};
use crate::error::{Error, Result};
use crate::segment::SealedSegment;
use crate::storage::Storage;
use crate::store::{Inner, View};
use crate::tombstones::KIND_PURGED;
use echolog_format::cluster::ClusterBlock;

/// Compaction's shared state: the stop flag, the wake-up, the step lock and its counters.
#[derive(Default)]
pub(crate) struct Compaction {
    closing: AtomicBool,
    wake: Mutex<bool>,
    cv: Condvar,
    pub step: Mutex<()>,
    pub bytes_written: AtomicU64,
}

impl Compaction {
    pub fn notify(&self) {
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.notify();
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Sleeps until notified, `timeout` passes, or the store closes.
    fn wait(&self, timeout: Duration) {
        let mut woken = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken && !self.closing() {
            woken = self
                .cv
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *woken = false;
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Idle,
    Dropped {
        files: usize,
    },
    Built {
        base_seq: u64,
        end_seq: u64,
        bytes: u64,
    },
    Merged {
        base_seq: u64,
        end_seq: u64,
        level: u32,
        inputs: usize,
        bytes: u64,
        /// Records of the output that went out in whole blocks copied from the inputs
        /// (neither decompressed nor compressed again).
        records_copied: u64,
        /// Records of the output in all.
        records: u64,
    },
}

/// The background thread's loop: a purge pass when one is due (with `purge_grace` set), then
/// compaction steps while there is work (with `compaction` on), then a wait for a seal.
pub(crate) fn run(inner: &Inner) {
    let idle_wait = Duration::from_secs(1);
    let mut purged_at: Option<Instant> = None;
    while !inner.compaction.closing() {
        if let Some(grace) = inner.opts.purge_grace {
            if purged_at.is_none_or(|t| t.elapsed() >= crate::purge::PURGE_PASS_INTERVAL) {
                purged_at = Some(Instant::now());
                let one = inner
                    .compaction
                    .step
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Err(e) = crate::purge::purge(inner, grace) {
                    tracing::warn!(error = %e, "purge pass failed; retrying at the next one");
                }
                drop(one);
            }
        }
        if !inner.opts.compaction {
            inner.compaction.wait(idle_wait);
            continue;
        }
        match step(inner) {
            Ok(Step::Idle) => inner.compaction.wait(idle_wait),
            Ok(_) => {}
            Err(e) if inner.compaction.closing() => {
                tracing::debug!(error = %e, "compaction stopped for close");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "compaction step failed; retrying later");
                inner.compaction.wait(Duration::from_secs(10));
            }
        }
    }
}

/// Does one step of work, if there is any. Steps are serialised.
pub(crate) fn step(inner: &Inner) -> Result<Step> {
    let _one = inner
        .compaction
        .step
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(msg) = inner.poisoned() {
        return Err(Error::ReadOnly(msg));
    }
    let view = inner.current_view();
    let first = view.sealed.first().map(|s| s.base_seq);
    let stale: Vec<_> = view
        .clusters
        .iter()
        .filter(|c| first.is_none_or(|f| c.end_seq <= f))
        .cloned()
        .collect();
    if !stale.is_empty() {
        replace(inner, &stale, None);
        return Ok(Step::Dropped { files: stale.len() });
    }
    let fanout = inner.opts.compaction_fanout as usize;
    let level_max = inner.opts.compaction_level_max;
    let crowded = (0..level_max)
        .find(|l| view.clusters.iter().filter(|c| c.level == *l).count() >= 2 * fanout);
    if let Some(group) = crowded.and_then(|l| merge_group_at(&view.clusters, fanout, l)) {
        return merge_step(inner, &group);
    }
    let uncovered = view.sealed.iter().find(|s| {
        !view
            .clusters
            .iter()
            .any(|c| c.covers(s.base_seq, s.end_seq))
    });
    if let Some(seg) = uncovered {
        let out = build(inner, seg)?;
        let s = Step::Built {
            base_seq: out.base_seq,
            end_seq: out.end_seq,
            bytes: out.size_bytes,
        };
        tracing::info!(
            base_seq = out.base_seq,
            end_seq = out.end_seq,
            bytes = out.size_bytes,
            "compaction: clustered a segment"
        );
        replace(inner, &[], Some(out));
        return Ok(s);
    }
    if let Some(group) = merge_group(&view.clusters, fanout, level_max) {
        return merge_step(inner, &group);
    }
    Ok(Step::Idle)
}

fn merge_step(inner: &Inner, group: &[Arc<ClusterFile>]) -> Result<Step> {
    let (out, copied, records) = match merge(inner, group) {
        Ok(done) => done,
        Err(e) => {
            let bad = match &e {
                Error::Corruption { file, .. } => group.iter().find(|f| &f.path == file),
                _ => None,
            };
            let Some(bad) = bad else {
                return Err(e);
            };
            // A cluster file is a copy of its segments: a damaged one goes, and the steps
            // after this one cluster its segments again, instead of the merge failing for
            // good.
            tracing::warn!(error = %e, "compaction: a merge input is damaged; removing it, its segments will be clustered again");
            replace(inner, std::slice::from_ref(bad), None);
            return Ok(Step::Dropped { files: 1 });
        }
    };
    let s = Step::Merged {
        base_seq: out.base_seq,
        end_seq: out.end_seq,
        level: out.level,
        inputs: group.len(),
        bytes: out.size_bytes,
        records_copied: copied.records,
        records,
    };
    tracing::info!(
        base_seq = out.base_seq,
        end_seq = out.end_seq,
        level = out.level,
        inputs = group.len(),
        bytes = out.size_bytes,
        records_copied = copied.records,
        blocks_copied = copied.blocks,
        "compaction: merged cluster files"
    );
    replace(inner, group, Some(out));
    Ok(s)
}

/// True when a step would have nothing to do (no segment to cluster, no merge due).
pub(crate) fn idle(view: &View, fanout: usize, level_max: u32) -> bool {
    let first = view.sealed.first().map(|s| s.base_seq);
    let none_stale = view
        .clusters
        .iter()
        .all(|c| first.is_some_and(|f| c.end_seq > f));
    let all_covered = view.sealed.iter().all(|s| {
        view.clusters
            .iter()
            .any(|c| c.covers(s.base_seq, s.end_seq))
    });
    none_stale && all_covered && merge_group(&view.clusters, fanout, level_max).is_none()
}

/// The oldest run of `fanout` adjacent files of the lowest level below `level_max` that has one.
fn merge_group(
    files: &[Arc<ClusterFile>],
    fanout: usize,
    level_max: u32,
) -> Option<Vec<Arc<ClusterFile>>> {
    (0..level_max).find_map(|level| merge_group_at(files, fanout, level))
}

/// The oldest run of `fanout` adjacent files of `level`.
fn merge_group_at(
    files: &[Arc<ClusterFile>],
    fanout: usize,
    level: u32,
) -> Option<Vec<Arc<ClusterFile>>> {
    let mut run: Vec<Arc<ClusterFile>> = Vec::new();
    for f in files {
        let joins = run.last().is_some_and(|p| p.end_seq == f.base_seq);
        if f.level != level {
            run.clear();
            continue;
        }
        if !joins {
            run.clear();
        }
        run.push(f.clone());
        if run.len() == fanout {
            return Some(run);
        }
    }
    None
}

/// Publishes the cluster set without `remove` and with `add`; marks the removed obsolete.
fn replace(inner: &Inner, remove: &[Arc<ClusterFile>], add: Option<Arc<ClusterFile>>) {
    publish_clusters(inner, remove, add);
    for r in remove {
        r.mark_obsolete();
    }
}

/// Publishes the cluster set without `remove` and with `add`.
pub(crate) fn publish_clusters(
    inner: &Inner,
    remove: &[Arc<ClusterFile>],
    add: Option<Arc<ClusterFile>>,
) {
    {
        let mut view = inner.view.write().unwrap_or_else(|p| p.into_inner());
        let mut files: Vec<Arc<ClusterFile>> = view
            .clusters
            .iter()
            .filter(|c| !remove.iter().any(|r| Arc::ptr_eq(r, c)))
            .cloned()
            .collect();
        files.extend(add);
        files.sort_by_key(|c| c.base_seq);
        *view = Arc::new(View {
            clusters: Arc::new(files),
            ..View::clone(&view)
        });
    }
}

/// Records between two checkpoints of a build or merge (close requested? write rate?).
const CHECKPOINT_RECORDS: u64 = 4096;
/// Longest single sleep of the throttle, so a close is noticed promptly.
const THROTTLE_SLEEP_MAX: Duration = Duration::from_millis(200);

/// The output file of a step, its write-rate bound, and the checkpoint both loops share.
struct Output<'a> {
    inner: &'a Inner,
    writer: ClusterWriter,
    started: Instant,
    records: u64,
    /// `records` at which to next check for closing and throttle.
    next_check: u64,
    copied: Copied,
}

/// Whole blocks a merge copied as they were, and the records in them.
#[derive(Debug, Default, Clone, Copy)]
struct Copied {
    blocks: u64,
    records: u64,
}

impl<'a> Output<'a> {
    fn create(inner: &'a Inner, base_seq: u64, end_seq: u64, level: u32) -> Result<Self> {
        let o = &inner.opts;
        let writer = ClusterWriter::create(
            &inner.storage,
            &inner.dir,
            base_seq,
            end_seq,
            level,
            o.cluster_block_raw_bytes_target,
            o.zstd_level,
        )?;
        Ok(Output {
            inner,
            writer,
            started: Instant::now(),
            records: 0,
            next_check: CHECKPOINT_RECORDS,
            copied: Copied::default(),
        })
    }

    /// Adds a record.
    fn push(&mut self, entity: &[u8], seq: u64, ts: i64, record: &[u8]) -> Result<()> {
        self.writer.push(entity, seq, ts, record)?;
        self.records += 1;
        self.check()
    }

    /// Past every CHECKPOINT_RECORDS records: stops if the store is closing, and sleeps as
    /// long as the write-rate bound asks.
    fn check(&mut self) -> Result<()> {
        if self.records < self.next_check {
            return Ok(());
        }
        self.next_check = self.records + CHECKPOINT_RECORDS;
        stop_if_closing(self.inner)?;
        let limit = self.inner.opts.compaction_bytes_per_second_max;
        let wait = throttle_wait(self.writer.bytes_written, limit, self.started.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        Ok(())
    }

    fn finish(self) -> Result<Arc<ClusterFile>> {
        let inner = self.inner;
        let (h, size) = self.writer.finish()?;
        inner
            .compaction
            .bytes_written
            .fetch_add(size, Ordering::Relaxed);
        Ok(Arc::new(ClusterFile::new(
            &inner.dir,
            &inner.storage,
            &h,
            size,
        )))
    }
}

impl RunSink for Output<'_> {
    fn record(&mut self, entity: &[u8], seq: u64, ts: i64, bytes: &[u8]) -> Result<()> {
        self.push(entity, seq, ts, bytes)
    }

    fn block(&mut self, entity: &[u8], bytes: &[u8], row: ClusterBlock) -> Result<()> {
        self.writer.push_block_copy(entity, bytes, row)?;
        self.records += u64::from(row.count);
        self.copied.blocks += 1;
        self.copied.records += u64::from(row.count);
        self.check()
    }
}

/// How long to sleep so that `bytes` written over `elapsed` stay under `bytes_per_second_max`
/// (0: unbounded), at most THROTTLE_SLEEP_MAX at a time.
pub(crate) fn throttle_wait(bytes: u64, bytes_per_second_max: u64, elapsed: Duration) -> Duration {
    if bytes_per_second_max == 0 {
        return Duration::ZERO;
    }
    let due = Duration::from_secs_f64(bytes as f64 / bytes_per_second_max as f64);
    due.saturating_sub(elapsed).min(THROTTLE_SLEEP_MAX)
}

fn stop_if_closing(inner: &Inner) -> Result<()> {
    if inner.compaction.closing() {
        return Err(Error::Inconsistent(
            "compaction stopped: the store is closing".into(),
        ));
    }
    Ok(())
}

/// Where one record of a segment sits in the build's arena.
struct Row {
    start: usize,
    len: u32,
    entity_at: u32,
    entity_len: u16,
    seq: u64,
    ts: i64,
}

/// `rows_of_ordinals` entry of a record the build leaves out (what purge left of an event).
const NO_ROW: u32 = u32::MAX;

/// A level-0 cluster file from one sealed segment: every record read once into an arena, then
/// written out in (entity, seq) order.
///
/// The order comes from the segment's own entity dictionary (keys sorted bytewise, each with
/// its ordinals ascending) rather than from sorting the rows: a sort compared entities at
/// random places of a ~250 MB arena and took about a quarter of compaction's CPU. The index
/// is checked against the records as they go out: each record's entity must be its key, and
/// every record must go out exactly once.
fn build(inner: &Inner, seg: &SealedSegment) -> Result<Arc<ClusterFile>> {
    let l = seg.load()?;
    let mut arena: Vec<u8> = Vec::new();
    let mut rows: Vec<Row> = Vec::with_capacity(l.record_count() as usize);
    let mut rows_of_ordinals: Vec<u32> = Vec::with_capacity(l.record_count() as usize);
    for b in 0..l.blocks.len() {
        stop_if_closing(inner)?;
        let d = l.read_block(b)?;
        for i in 0..d.count() {
            let off = d.offsets[i as usize] as usize;
            let end = d
                .offsets
                .get(i as usize + 1)
                .map_or(d.raw.len(), |o| *o as usize);
            let r = record_at(&d.raw, off as u32).map_err(|source| Error::Corruption {
                file: l.seg_path.clone(),
                offset: l.blocks[b].offset,
                source,
            })?;
            // What purge left of an event belongs to no entity's history.
            if r.kind == KIND_PURGED {
                rows_of_ordinals.push(NO_ROW);
                continue;
            }
            let entity_rel = r.entity.as_ptr() as usize - d.raw[off..].as_ptr() as usize;
            let start = arena.len();
            rows_of_ordinals.push(rows.len() as u32);
            rows.push(Row {
                start,
                len: (end - off) as u32,
                entity_at: (start + entity_rel) as u32,
                entity_len: r.entity.len() as u16,
                seq: d.first_seq + u64::from(i),
                ts: r.ts,
            });
            arena.extend_from_slice(&d.raw[off..end]);
        }
    }
    let entity =
        |r: &Row| &arena[r.entity_at as usize..r.entity_at as usize + r.entity_len as usize];
    let disagrees = |what: String| {
        Error::Inconsistent(format!(
            "{}: the index and the segment disagree: {what}",
            l.seg_path.display()
        ))
    };
    let dict = l.dict(SECTION_ENTITIES)?;
    let mut out = Output::create(inner, seg.base_seq, seg.end_seq, 0)?;
    let mut written = 0usize;
    let mut entries = dict.cursor();
    while let Some((key, value)) = entries.next_entry().map_err(|e| l.idx_corrupt(e))? {
        for ord in dict.postings(value)?.iter() {
            let row = match rows_of_ordinals.get(ord as usize) {
                Some(&NO_ROW) => continue,
                Some(&r) => &rows[r as usize],
                None => return Err(disagrees(format!("ordinal {ord} has no record"))),
            };
            if entity(row) != key {
                return Err(disagrees(format!(
                    "seq {} is not under its entity",
                    row.seq
                )));
            }
            let bytes = &arena[row.start..row.start + row.len as usize];
            out.push(key, row.seq, row.ts, bytes)?;
            written += 1;
        }
    }
    if written != rows.len() {
        return Err(disagrees(format!(
            "{written} records under the entities, {} in the segment",
            rows.len()
        )));
    }
    out.finish()
}

/// Merges adjacent files (ascending, contiguous seq ranges) into one of the next level,
/// entity by entity, each input read once in order. Returns the file, what it copied whole
/// and the records it holds.
fn merge(inner: &Inner, group: &[Arc<ClusterFile>]) -> Result<(Arc<ClusterFile>, Copied, u64)> {
    let (first, last) = match (group.first(), group.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(Error::Inconsistent("empty merge".into())),
    };
    let mut out = Output::create(inner, first.base_seq, last.end_seq, first.level + 1)?;
    let mut inputs = group
        .iter()
        .map(|f| RunCursor::open(f.clone(), true))
        .collect::<Result<Vec<_>>>()?;
    // The smallest entity of the inputs goes next, its runs oldest input first: inputs cover
    // ascending, disjoint seq ranges, so that is seq order.
    while let Some(entity) = inputs
        .iter()
        .filter_map(|c| c.entity())
        .min()
        .map(<[u8]>::to_vec)
    {
        for c in inputs.iter_mut() {
            if c.entity() == Some(entity.as_slice()) {
                c.emit_run(&mut out)?;
            }
        }
    }
    let (copied, records) = (out.copied, out.records);
    Ok((out.finish()?, copied, records))
}

/// At open: the cluster files to use, and the ones to remove (damaged, not aligned with the
/// sealed segments, or covered by a larger file a finished merge left behind).
pub(crate) fn choose_at_open(
    storage: &Storage,
    dir: &Path,
    names: &[String],
    sealed: &[Arc<SealedSegment>],
) -> Vec<Arc<ClusterFile>> {
    let starts: std::collections::HashSet<u64> = sealed.iter().map(|s| s.base_seq).collect();
    let ends: std::collections::HashSet<u64> = sealed.iter().map(|s| s.end_seq).collect();
    let mut found: Vec<(u64, u64, String)> = names
        .iter()
        .filter_map(|n| parse_cluster_name(n).map(|(b, e)| (b, e, n.clone())))
        .collect();
    // Larger ranges first at equal starts, so a merge's output wins over its inputs.
    found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut keep: Vec<Arc<ClusterFile>> = Vec::new();
    let mut covered_to = 0u64;
    for (base, end, name) in found {
        let path = dir.join(&name);
        let aligned = starts.contains(&base) && ends.contains(&end);
        let fits = base >= covered_to;
        let header = if aligned && fits {
            ClusterFile::read_header(storage, &path).ok()
        } else {
            None
        };
        match header {
            Some((h, len)) if h.base_seq == base && h.end_seq == end => {
                covered_to = end;
                keep.push(Arc::new(ClusterFile::new(dir, storage, &h, len)));
            }
            _ => {
                let why = if !aligned {
                    "its range is not whole sealed segments"
                } else if !fits {
                    "another cluster file covers its range"
                } else {
                    "its header is damaged"
                };
                tracing::info!(file = %path.display(), why, "removing a cluster file (derived data; compaction rebuilds what is missing)");
                if let Err(e) = storage.remove(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a cluster file");
                }
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of one sealed segment or more, its first sealed segment's base seq and bytes.
    fn sealed_store(dir: &Path) -> (crate::Options, u64, Vec<u8>) {
        let opts = crate::Options {
            segment_size_bytes_max: 8 * 1024,
            block_raw_bytes_target: 2048,
            compaction: false,
            ..crate::Options::default()
        };
        let s = crate::Store::open(dir, opts.clone()).unwrap();
        for i in 0..400u64 {
            let e = crate::Event {
                entity: format!("e{}", i % 3),
                kind: "k".into(),
                ts: 1_000 + i as i64,
                tags: vec![],
                payload: vec![b'x'; 40],
                id: None,
            };
            s.append(vec![e]).unwrap();
        }
        assert!(s.stats().unwrap().segments >= 2);
        drop(s);
        let seg = std::fs::read(dir.join(crate::dir::segment_name(1))).unwrap();
        (opts, 1, seg)
    }

    /// The build takes its order from the index's entity dictionary and checks it against the
    /// records: an index that files records under the wrong entity, or leaves some out, stops
    /// the build with an error naming the segment, leaves no cluster file and no damage.
    #[test]
    fn a_build_whose_index_disagrees_with_its_segment_fails_and_leaves_no_file() {
        type Edit = fn(&mut crate::mem_index::MemIndex);
        let wrong_entity: Edit = |idx| {
            let ords = idx.entities.remove("e0").unwrap();
            idx.entities.insert("e9".into(), ords);
        };
        let missing: Edit = |idx| {
            idx.entities.remove("e1").unwrap();
        };
        for (edit, says) in [
            (wrong_entity, "is not under its entity"),
            (missing, "records under the entities"),
        ] {
            let d = tempfile::tempdir().unwrap();
            let (opts, base, seg) = sealed_store(d.path());
            let mut scan = crate::scan::scan_segment(&seg, base).unwrap();
            edit(&mut scan.index);
            let idx_path = d.path().join(crate::dir::index_name(base));
            std::fs::write(&idx_path, scan.index.to_index_file()).unwrap();
            let s = crate::Store::open(d.path(), opts).unwrap();
            let err = s.compact_now().unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Inconsistent(_)), "{err:?}");
            assert!(msg.contains(says) && msg.contains("disagree"), "{msg}");
            assert!(msg.contains(&crate::dir::segment_name(base)), "{msg}");
            let clusters = std::fs::read_dir(d.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains(".clu"))
                .count();
            assert_eq!(clusters, 0, "no cluster file, finished or temporary");
            // Appends go on: compaction's failure is not the store's.
            s.append(vec![crate::Event {
                entity: "e0".into(),
                kind: "k".into(),
                ts: 5_000,
                tags: vec![],
                payload: vec![],
                id: None,
            }])
            .unwrap();
        }
    }

    #[test]
    fn the_throttle_sleeps_what_keeps_the_rate_under_its_bound() {
        let s = Duration::from_secs;
        assert_eq!(
            throttle_wait(1 << 30, 0, s(0)),
            Duration::ZERO,
            "0 is unbounded"
        );
        // 100 MB at 100 MB/s after 0.9 s: 0.1 s more.
        let w = throttle_wait(100_000_000, 100_000_000, Duration::from_millis(900));
        assert_eq!(w, Duration::from_millis(100));
        assert_eq!(
            throttle_wait(100, 100, s(5)),
            Duration::ZERO,
            "behind: no sleep"
        );
        assert_eq!(
            throttle_wait(1 << 40, 1, s(0)),
            THROTTLE_SLEEP_MAX,
            "one sleep is short"
        );
    }

    #[test]
    fn merge_groups_take_adjacent_files_of_one_level_oldest_first() {
        let storage = Storage::new(None, None);
        let file = |b: u64, e: u64, level: u32| {
            let h = echolog_format::cluster::ClusterHeader {
                version: echolog_format::FORMAT_VERSION,
                base_seq: b,
                end_seq: e,
                record_count: 0,
                level,
                block_count: 0,
                directory_offset: 64,
                directory_len: 8,
            };
            Arc::new(ClusterFile::new(
                Path::new("/nonexistent"),
                &storage,
                &h,
                72,
            ))
        };
        let files = vec![
            file(1, 100, 1),
            file(100, 110, 0),
            file(110, 120, 0),
            file(130, 140, 0), // a gap before it: not adjacent
            file(140, 150, 0),
            file(150, 160, 0),
        ];
        assert!(
            merge_group(&files, 4, 4).is_none(),
            "no 4 adjacent files of one level"
        );
        let g = merge_group(&files, 3, 4).unwrap();
        assert_eq!(g[0].base_seq, 130, "the gap at 120..130 splits the runs");
        let g = merge_group(&files, 2, 4).unwrap();
        assert_eq!((g[0].base_seq, g[1].end_seq), (100, 120));
        assert!(
            merge_group(&files, 2, 0).is_none(),
            "level_max 0 never merges"
        );
    }
}
