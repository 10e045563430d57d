//! The write path: group commit, block encoding, fsync policy, segment roll-over.
//!
//! Appenders queue their batches (validated, and large ones already compressed, on their own
//! thread); one committer thread per store takes everything queued, writes it with one `write`
//! and one `fdatasync`, publishes it to readers and hands each appender its result: a blocked
//! thread through its slot, an async caller through a callback, so no thread is parked per
//! waiting append.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use echolog_format::block::{
    encode_block, BlockMeta, PreparedBlock, FLAG_COMMIT_END, FLAG_PRIOR_DURABLE,
};
use echolog_format::index::BlockEntry;
use echolog_format::limits::{BLOCK_RECORDS_MAX, SEGMENT_RECORDS_MAX};
use echolog_format::record::encode_record;
use echolog_format::segment_header::{SegmentHeader, SEGMENT_HEADER_LEN};

use crate::dir::{index_name, segment_name, write_atomic};
use crate::error::{is_disk_full, Error, Result};
use crate::event::Event;
use crate::mem_index::{MemBlock, MemIndex};
use crate::options::SyncPolicy;
use crate::segment::checkpoint::{Checkpointer, Covered};
use crate::segment::{ActiveSegment, SealedSegment};
use crate::storage::{FileHandle, Storage};
use crate::store::{Inner, View};

/// What an append returns: one seq per event of the batch, in order. A duplicate (its id
/// already stored, or repeated earlier in the batch) gets the original seq and is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    pub seqs: Vec<u64>,
    pub duplicates: u32,
}

/// A segment is sealed before it would hold more records than this, far below the format's
/// `SEGMENT_RECORDS_MAX` (2^30) so that one group commit always fits after the check.
pub(crate) const SEGMENT_RECORDS_ROLL: u64 = 1 << 28;

/// One batch queued for the next group commit.
pub(crate) struct Pending {
    pub done: Done,
    pub events: Vec<Event>,
    /// The batch already encoded into blocks by the appending thread (large batches only),
    /// used unless some of its events turn out to be duplicates.
    pub prepared: Option<Vec<PreparedBlock>>,
}

/// How an appender learns its result: a blocked thread's slot, or a callback (an async
/// server awaiting a channel, with no thread parked).
pub(crate) enum Done {
    Slot(Arc<Slot>),
    Callback(Box<dyn FnOnce(Result<AppendOutcome>) + Send>),
}

impl Done {
    pub fn complete(self, r: Result<AppendOutcome>) {
        match self {
            Done::Slot(s) => s.set(r),
            Done::Callback(f) => f(r),
        }
    }
}

thread_local! {
    /// Each appending thread's zstd context, with the level it was made for.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Encodes a whole batch into blocks of about `target` raw bytes, on the appending thread.
/// The events' ts must already be resolved (no 0).
pub(crate) fn prepare_batch(events: &[Event], target: usize, level: i32) -> Vec<PreparedBlock> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let mut compressor = slot.as_mut().map(|(_, c)| c);
        let mut out = Vec::new();
        let mut raw = Vec::with_capacity(target + 4096);
        let (mut count, mut min_ts, mut max_ts) = (0u32, i64::MAX, i64::MIN);
        for (i, e) in events.iter().enumerate() {
            encode_record(
                &mut raw,
                &e.entity,
                &e.kind,
                e.ts,
                &e.tags,
                &e.payload,
                e.id.as_deref().unwrap_or(""),
            );
            count += 1;
            min_ts = min_ts.min(e.ts);
            max_ts = max_ts.max(e.ts);
            let last = i + 1 == events.len();
            if raw.len() >= target || count >= BLOCK_RECORDS_MAX || last {
                let flags = if last { FLAG_COMMIT_END } else { 0 };
                out.push(PreparedBlock::new(
                    count,
                    min_ts,
                    max_ts,
                    flags,
                    &raw,
                    compressor.as_deref_mut(),
                ));
                raw.clear();
                (count, min_ts, max_ts) = (0, i64::MAX, i64::MIN);
            }
        }
        out
    })
}

#[derive(Default)]
pub(crate) struct Queue {
    pub pending: Vec<Pending>,
    /// Set when the last handle is dropped: the committer commits what is queued and stops.
    pub closing: bool,
}

/// Where one blocked appender waits for its result.
#[derive(Default)]
pub(crate) struct Slot {
    state: std::sync::Mutex<Option<Result<AppendOutcome>>>,
    cv: std::sync::Condvar,
}

impl Slot {
    fn set(&self, r: Result<AppendOutcome>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.cv.notify_one();
    }

    /// Blocks until the result is there, and takes it.
    fn wait(&self) -> Result<AppendOutcome> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// State owned by the commit leader.
pub(crate) struct Writer {
    pub file: Arc<dyn FileHandle>,
    pub active: Arc<ActiveSegment>,
    /// Bytes of the active segment written and published.
    pub len: u64,
    /// Bytes of the active segment known durable (fdatasynced); `len` when nothing is dirty.
    pub durable_len: u64,
    pub next_seq: u64,
    compressor: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
    raw: Vec<u8>,
    pub last_sync: Instant,
    pub dirty: bool,
    /// The active segment's index checkpoint.
    pub checkpoint: Checkpointer,
}

impl Writer {
    pub fn new(
        file: Arc<dyn FileHandle>,
        active: Arc<ActiveSegment>,
        len: u64,
        next_seq: u64,
        zstd_level: i32,
        checkpoint: Checkpointer,
    ) -> Result<Self> {
        let compressor = zstd::bulk::Compressor::new(zstd_level)
            .map_err(|e| Error::invalid(format!("zstd_level: {e}")))?;
        Ok(Writer {
            file,
            active,
            len,
            durable_len: len,
            next_seq,
            compressor,
            buf: Vec::new(),
            raw: Vec::new(),
            last_sync: Instant::now(),
            dirty: false,
            checkpoint,
        })
    }
}

impl Writer {
    /// Records that an fdatasync of everything written so far succeeded.
    pub fn synced(&mut self) {
        self.dirty = false;
        self.last_sync = Instant::now();
        self.durable_len = self.len;
    }
}

/// A record about to be written: the event (its ts already resolved, never 0) and its seq.
pub(crate) struct NewRecord<'a> {
    pub seq: u64,
    pub event: &'a Event,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(1)
}

impl Inner {
    /// Queues `events` for the committer; `done` gets the outcome once they are committed
    /// (durable as the sync policy says) or failed.
    pub(crate) fn submit(
        &self,
        events: Vec<Event>,
        prepared: Option<Vec<PreparedBlock>>,
        done: Done,
    ) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closing {
            drop(q);
            done.complete(Err(Error::ReadOnly("the store is closing".into())));
            return;
        }
        q.pending.push(Pending {
            events,
            prepared,
            done,
        });
        drop(q);
        self.queue_cv.notify_one();
    }

    /// Queues `events` and blocks until they are committed (or failed).
    pub(crate) fn append_queued(
        &self,
        events: Vec<Event>,
        prepared: Option<Vec<PreparedBlock>>,
    ) -> Result<AppendOutcome> {
        let slot = Arc::new(Slot::default());
        self.submit(events, prepared, Done::Slot(slot.clone()));
        slot.wait()
    }

    /// The committer thread: takes everything queued, commits it as one group (one write,
    /// one fdatasync), hands each appender its result, and waits for more. Returns once the
    /// store is closing and the queue is empty.
    pub(crate) fn run_committer(&self) {
        loop {
            let work = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.pending.is_empty() && !q.closing {
                    q = self.queue_cv.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            self.commit_and_answer(work);
        }
    }

    fn commit_and_answer(&self, mut work: Vec<Pending>) {
        let dones: Vec<Done> = work
            .iter_mut()
            .map(|p| std::mem::replace(&mut p.done, Done::Callback(Box::new(|_| {}))))
            .collect();
        // A panic here would leave every appender waiting forever: turn it into errors for
        // this group and refuse writes until restart (the file's state is unknown).
        let results = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.commit_group(&work)
        })) {
            Ok(r) => r,
            Err(_) => {
                let msg =
                    "internal error: the commit leader panicked; writes are refused until restart";
                self.storage.poison(msg.into());
                dones
                    .iter()
                    .map(|_| Err(Error::ReadOnly(msg.into())))
                    .collect()
            }
        };
        // One result per queued batch, in queue order.
        debug_assert_eq!(results.len(), dones.len());
        for (done, r) in dones.into_iter().zip(results) {
            done.complete(r);
        }
        // A panic there must not end the commit thread (every later appender would wait
        // forever): it costs that segment its checkpoint, nothing else.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.checkpoint_if_due()))
            .is_err()
        {
            tracing::error!("internal error: writing a checkpoint part panicked; no more parts for this segment");
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.checkpoint.stop();
        }
        // The group's events are freed only now, after every appender has its answer: the
        // frees of their strings took about a tenth of the commit thread's time, and a woken
        // appender prepares its next batch on the other core meanwhile. Handing each blocked
        // appender its events to free on its own thread was measured slower (2 appenders,
        // `examples/ingest 4000000 2 never`, five interleaved runs: 408k-553k events/s against
        // 535k-621k here): the appender is the busier thread.
        drop(work);
    }

    /// Appends a part to the active segment's checkpoint once the durable segment has grown
    /// by `checkpoint_bytes` since the last one. Runs after a group's appenders have their
    /// answers, so a part delays the next group, never this one. With sync=never the segment
    /// is fdatasynced first: a part may cover only durable bytes.
    fn checkpoint_if_due(&self) {
        let Some(every) = self.opts.checkpoint_bytes else {
            return;
        };
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.poisoned().is_some() || !w.checkpoint.due(w.len, every) {
            return;
        }
        if w.dirty && self.opts.sync == SyncPolicy::Never {
            if self.storage.sync(&*w.file, &w.active.path).is_err() {
                return;
            }
            w.synced();
        }
        if w.dirty {
            // sync=interval: the next commit that syncs takes the part.
            return;
        }
        let started = Instant::now();
        let Writer {
            active,
            checkpoint,
            file,
            ..
        } = &mut *w;
        let idx = active.index();
        match checkpoint.write(&self.storage, &idx, &**file, &active.path) {
            Ok(bytes) => tracing::debug!(
                base_seq = active.base_seq,
                records = idx.record_count(),
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "checkpointed the active segment's index"
            ),
            Err(e) => tracing::warn!(
                base_seq = active.base_seq,
                error = %e,
                "could not write a checkpoint of the active segment's index; no more for this segment (open after a crash scans more of it)"
            ),
        }
    }

    /// At close: seals the active segment when it holds at least `seal_at_close_bytes_min`
    /// bytes, so the next open need not rebuild its index. The seal is the same roll as a
    /// full segment's, with the same crash analysis. Returns whether it sealed.
    pub(crate) fn seal_at_close(&self) -> Result<bool> {
        let Some(bytes_min) = self.opts.seal_at_close_bytes_min else {
            return Ok(false);
        };
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.poisoned().is_some() || w.active.index().record_count() == 0 {
            return Ok(false);
        }
        if w.len < bytes_min {
            return Ok(false);
        }
        let started = Instant::now();
        let bytes = w.len;
        self.roll(&mut w)?;
        tracing::info!(
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "sealed the active segment at close, so the next open has no index to rebuild"
        );
        Ok(true)
    }

    /// Seals the active segment when it is full: by size, or before ordinals (u32, at most
    /// SEGMENT_RECORDS_MAX) could run out, since very compressible events could pack more
    /// records than that into a segment. A seal that failed cleanly (a passing EMFILE) leaves
    /// the old segment active and complete: the group goes into it and the next commit tries
    /// again. Errors: read-only (the seal failed past its point of no return) or disk full.
    fn seal_if_full(&self, w: &mut Writer, group_events: u64) -> Result<()> {
        let records = u64::from(w.active.index().record_count());
        let full = w.len >= self.opts.segment_size_bytes_max
            || records + group_events > SEGMENT_RECORDS_ROLL;
        if !full || records == 0 {
            return Ok(());
        }
        let e = match self.roll(w) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tracing::error!(error = %e, "could not seal the active segment");
        let disk_full = match &e {
            Error::DiskFull(_) => true,
            Error::Io { source, .. } => is_disk_full(source),
            _ => false,
        };
        let fits = records + group_events <= u64::from(SEGMENT_RECORDS_MAX);
        if self.poisoned().is_some() || matches!(e, Error::ReadOnly(_)) {
            Err(Error::ReadOnly(e.to_string()))
        } else if disk_full {
            Err(Error::DiskFull(format!("sealing the active segment: {e}")))
        } else if !fits {
            // The old segment cannot take the group: its ordinals would run out.
            Err(e)
        } else {
            Ok(())
        }
    }

    /// Commits the queued batches; returns one result per batch, in order.
    fn commit_group(&self, work: &[Pending]) -> Vec<Result<AppendOutcome>> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = self.poisoned() {
            return work
                .iter()
                .map(|_| Err(Error::ReadOnly(msg.clone())))
                .collect();
        }
        let group_events: u64 = work.iter().map(|p| p.events.len() as u64).sum();
        if let Err(e) = self.seal_if_full(&mut w, group_events) {
            return work.iter().map(|_| Err(same_error(&e))).collect();
        }
        // Assign seqs, resolve duplicates.
        let mut outcomes: Vec<Result<AppendOutcome>> = Vec::with_capacity(work.len());
        let mut records: Vec<NewRecord<'_>> = Vec::new();
        // Each batch's records, with its prepared blocks when they can be used as they are.
        let mut units: Vec<(std::ops::Range<usize>, Option<&[PreparedBlock]>)> = Vec::new();
        let mut group_ids: HashMap<&str, u64> = HashMap::new();
        let mut next_seq = w.next_seq;
        for p in work {
            let mut seqs = Vec::with_capacity(p.events.len());
            let mut duplicates = 0u32;
            let mut failed = None;
            let start = records.len();
            let group_ids_before = group_ids.len();
            for e in &p.events {
                if let Some(id) = e.id.as_deref() {
                    let found = match group_ids.get(id) {
                        Some(s) => Some(*s),
                        None => match self.find_id(id, w.next_seq) {
                            Ok(f) => f,
                            Err(err) => {
                                failed = Some(err);
                                break;
                            }
                        },
                    };
                    if let Some(orig) = found {
                        seqs.push(orig);
                        duplicates += 1;
                        continue;
                    }
                    group_ids.insert(id, next_seq);
                }
                debug_assert_ne!(e.ts, 0, "ts is resolved before queueing");
                records.push(NewRecord {
                    seq: next_seq,
                    event: e,
                });
                seqs.push(next_seq);
                next_seq += 1;
            }
            if let Some(err) = failed {
                // Undo this batch's records: it is atomic.
                records.truncate(start);
                next_seq = w.next_seq + records.len() as u64;
                if group_ids.len() != group_ids_before {
                    group_ids.retain(|_, s| *s < next_seq);
                }
                outcomes.push(Err(err));
                continue;
            }
            if records.len() > start {
                let prepared = p
                    .prepared
                    .as_deref()
                    .filter(|_| duplicates == 0 && records.len() - start == p.events.len());
                units.push((start..records.len(), prepared));
            }
            outcomes.push(Ok(AppendOutcome { seqs, duplicates }));
        }
        if records.is_empty() {
            return outcomes;
        }
        if let Err(e) = self.write_records(&mut w, &records, &units) {
            let msg = e.to_string();
            let disk_full = matches!(e, Error::DiskFull(_)) && self.poisoned().is_none();
            return outcomes
                .into_iter()
                .map(|r| {
                    let err = if disk_full {
                        Error::DiskFull(msg.clone())
                    } else {
                        Error::ReadOnly(msg.clone())
                    };
                    r.and(Err(err))
                })
                .collect();
        }
        outcomes
    }

    /// Encodes, writes, syncs and publishes `records`. Leaves the store unchanged on a clean
    /// failure (disk full); poisons it when it cannot know what reached the disk.
    fn write_records(
        &self,
        w: &mut Writer,
        records: &[NewRecord<'_>],
        units: &[(std::ops::Range<usize>, Option<&[PreparedBlock]>)],
    ) -> Result<()> {
        let target = self.opts.block_raw_bytes_target;
        let base_seq = w.active.base_seq;
        let mut blocks: Vec<MemBlock> = Vec::new();
        let offset0 = w.len;
        // The group's first block says whether everything before it is durable (recovery's
        // way to tell a torn last write from damaged durable data).
        let mut lead_flag = if w.durable_len == offset0 {
            FLAG_PRIOR_DURABLE
        } else {
            0
        };
        let Writer {
            buf,
            raw,
            compressor,
            ..
        } = &mut *w;
        buf.clear();
        raw.clear();
        let mut raw_total = 0u64;
        // Small batches are packed together into blocks here; a block is cut after the record
        // that crosses the target, and carries COMMIT_END when that record ends a batch.
        let mut open_first: Option<usize> = None;
        let mut emit = |buf: &mut Vec<u8>,
                        raw: &mut Vec<u8>,
                        recs: &[NewRecord<'_>],
                        end: bool,
                        extra_flags: u8| {
            let min_ts = recs.iter().map(|r| r.event.ts).min().unwrap_or(0);
            let max_ts = recs.iter().map(|r| r.event.ts).max().unwrap_or(0);
            let meta = BlockMeta {
                first_seq: recs[0].seq,
                count: recs.len() as u32,
                min_ts,
                max_ts,
                flags: extra_flags | if end { FLAG_COMMIT_END } else { 0 },
            };
            let at = buf.len() as u64;
            let len = encode_block(buf, meta, raw, Some(&mut *compressor));
            let block = MemBlock {
                entry: BlockEntry {
                    offset: offset0 + at,
                    first_ordinal: (recs[0].seq - base_seq) as u32,
                    count: recs.len() as u32,
                    min_ts,
                    max_ts,
                },
                len: len as u32,
            };
            let raw_len = raw.len() as u64;
            raw.clear();
            (block, raw_len)
        };
        for (range, prepared) in units {
            match prepared {
                Some(pre) => {
                    if let Some(f) = open_first.take() {
                        let lead = std::mem::take(&mut lead_flag);
                        let (b, n) = emit(buf, raw, &records[f..range.start], true, lead);
                        blocks.push(b);
                        raw_total += n;
                    }
                    let mut seq = records[range.start].seq;
                    for pb in pre.iter() {
                        let at = buf.len() as u64;
                        let len = pb.write_to(buf, seq, std::mem::take(&mut lead_flag));
                        blocks.push(MemBlock {
                            entry: BlockEntry {
                                offset: offset0 + at,
                                first_ordinal: (seq - base_seq) as u32,
                                count: pb.count(),
                                min_ts: pb.min_ts(),
                                max_ts: pb.max_ts(),
                            },
                            len: len as u32,
                        });
                        raw_total += u64::from(pb.raw_len());
                        seq += u64::from(pb.count());
                    }
                    assert_eq!(
                        seq,
                        records[range.end - 1].seq + 1,
                        "prepared blocks hold the batch"
                    );
                }
                None => {
                    for i in range.clone() {
                        let r = &records[i];
                        let e = r.event;
                        encode_record(
                            raw,
                            &e.entity,
                            &e.kind,
                            e.ts,
                            &e.tags,
                            &e.payload,
                            e.id.as_deref().unwrap_or(""),
                        );
                        let f = *open_first.get_or_insert(i);
                        // Cut on bytes, and on records: tiny records could otherwise pack
                        // more than a block holds under a large target.
                        if raw.len() >= target || i + 1 - f >= BLOCK_RECORDS_MAX as usize {
                            let lead = std::mem::take(&mut lead_flag);
                            let end = i + 1 == range.end;
                            let (b, n) = emit(buf, raw, &records[f..=i], end, lead);
                            blocks.push(b);
                            raw_total += n;
                            open_first = None;
                        }
                    }
                }
            }
        }
        if let Some(f) = open_first.take() {
            let lead = std::mem::take(&mut lead_flag);
            let (b, n) = emit(buf, raw, &records[f..], true, lead);
            blocks.push(b);
            raw_total += n;
        }
        // Write, then sync: the seam cuts back a failed write and turns the store read-only
        // when it cannot know what reached the disk.
        let at = w.len;
        let path = w.active.path.clone();
        self.storage.write_at(&*w.file, &path, &w.buf, at)?;
        w.dirty = true;
        let sync_now = match self.opts.sync {
            SyncPolicy::Always => true,
            SyncPolicy::Interval(d) => w.last_sync.elapsed() >= d,
            SyncPolicy::Never => false,
        };
        if sync_now {
            self.storage.sync(&*w.file, &path)?;
            w.last_sync = Instant::now();
            w.dirty = false;
            w.durable_len = at + w.buf.len() as u64;
        }
        // sync=never gives durability up altogether: what is written counts as durable.
        let durable = !w.dirty || self.opts.sync == SyncPolicy::Never;
        // Publish.
        {
            let mut idx = w.active.index.write().unwrap_or_else(|p| p.into_inner());
            let mut r = records.iter();
            for b in &blocks {
                for rec in r.by_ref().take(b.entry.count as usize) {
                    let e = rec.event;
                    idx.add(
                        &e.entity,
                        &e.kind,
                        e.ts,
                        e.tags.iter().map(String::as_str),
                        e.id.as_deref().unwrap_or(""),
                    );
                }
                idx.add_block(*b);
            }
            idx.raw_bytes += raw_total;
        }
        w.len += w.buf.len() as u64;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.appended_events
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.appended_bytes
            .fetch_add(raw_total, std::sync::atomic::Ordering::Relaxed);
        if let Some(o) = self.storage.observer() {
            o.commit(units.len(), records.len() as u64, w.buf.len() as u64);
        }
        let last = records[records.len() - 1].seq;
        w.next_seq = last + 1;
        let active_len = w.active.index().record_count();
        self.publish(last, records, active_len, durable);
        Ok(())
    }

    /// Seals the active segment and starts the next one. Steps, each durable before the next:
    /// 1. the segment's data is fdatasynced (sync=interval/never may have left it dirty);
    /// 2. its index file is written (temp, fdatasync, rename, directory fsync);
    /// 3. the TOMBSTONES file is written the same way, covering seqs below the new base;
    /// 4. the next segment file is created the same way; from its rename on it is the active
    ///    segment for any later open.
    ///
    /// A failure before a rename leaves the old segment active and complete (the temp file is
    /// removed; at open a leftover index of the last segment is dropped as an unfinished seal).
    /// A failed fdatasync, rename or directory fsync makes the store read-only (the seam's rule):
    /// after step 4's rename, appending to the old segment would put acknowledged events where a
    /// later open never looks.
    pub(crate) fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        let end_seq = w.next_seq;
        if w.dirty {
            self.storage.sync(&*w.file, &old.path)?;
            w.synced();
            self.durable.advance(w.next_seq - 1);
        }
        let bytes = old.index().to_index_file();
        write_atomic(&self.storage, &self.dir, &index_name(old.base_seq), &bytes)?;
        self.save_tombstones(end_seq)?;
        let (file, active) = create_segment(&self.storage, &self.dir, end_seq)?;
        let sealed = Arc::new(SealedSegment::new(
            &self.dir,
            &self.storage,
            old.base_seq,
            end_seq,
        ));
        {
            let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
            let mut sealed_list = Vec::with_capacity(view.sealed.len() + 1);
            sealed_list.extend(view.sealed.iter().cloned());
            sealed_list.push(sealed.clone());
            *view = Arc::new(View {
                sealed: Arc::new(sealed_list),
                active: active.clone(),
                active_len: 0,
                ..View::clone(&view)
            });
        }
        self.compaction.notify();
        let hashes: Vec<u64> = {
            let idx = old.index();
            let collisions = idx.id_collisions.iter().map(|(h, _)| *h);
            idx.ids.keys().copied().chain(collisions).collect()
        };
        // The ids section as written, which the saved filter is checked against at open.
        let ids = echolog_format::index::ids_section_signature(&bytes).unwrap_or((0, 0));
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sealed(&sealed, ids, hashes);
        w.file = file;
        w.active = active;
        let done = std::mem::replace(
            &mut w.checkpoint,
            Checkpointer::new(&self.dir, end_seq, Covered::start()),
        );
        done.remove(&self.storage);
        w.len = SEGMENT_HEADER_LEN as u64;
        w.durable_len = w.len;
        w.dirty = false;
        tracing::info!(base_seq = old.base_seq, end_seq, "sealed segment");
        // Best effort: a failure leaves old segments for the next pass (a failed directory
        // fsync has made the store read-only through the seam already).
        if let Err(e) = self.apply_retention(w) {
            tracing::warn!(error = %e, "retention pass failed; it runs again after the next seal");
        }
        Ok(())
    }
}

/// An error of the same kind and message as `e`, one for each waiter of a failed group.
fn same_error(e: &Error) -> Error {
    let msg = e.to_string();
    match e {
        Error::ReadOnly(_) => Error::ReadOnly(msg),
        Error::DiskFull(_) => Error::DiskFull(msg),
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: source
                .raw_os_error()
                .map(std::io::Error::from_raw_os_error)
                .unwrap_or_else(|| std::io::Error::new(source.kind(), source.to_string())),
        },
        _ => Error::Inconsistent(msg),
    }
}

/// Creates a new, empty segment file durably (temp file, fdatasync, rename, directory fsync)
/// and returns its handle, open for appending and reading.
pub(crate) fn create_segment(
    storage: &Storage,
    dir: &Path,
    base_seq: u64,
) -> Result<(Arc<dyn FileHandle>, Arc<ActiveSegment>)> {
    let path = dir.join(segment_name(base_seq));
    let file = storage.write_new_file(&path, &SegmentHeader::new(base_seq).encode())?;
    let active = Arc::new(ActiveSegment::new(
        base_seq,
        path,
        file.clone(),
        storage.clone(),
        MemIndex::new(base_seq, SEGMENT_HEADER_LEN as u64),
    ));
    Ok((file, active))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;
    use crate::{Options, Store};

    fn tiny(i: usize) -> Event {
        Event {
            entity: "e".into(),
            kind: "k".into(),
            ts: 1 + (i % 7) as i64,
            ..Event::default()
        }
    }

    #[test]
    fn packed_tiny_batches_are_cut_at_the_block_record_limit() {
        // The largest block target the options accept lets 2^20 records of 15 bytes (15.7 MB)
        // pass without crossing it: blocks must be cut on record count too.
        let disk = SimDisk::new();
        let opts = Options {
            block_raw_bytes_target: echolog_format::limits::BLOCK_RAW_BYTES_MAX / 2 - 64 * 1024,
            backend: Some(disk.backend()),
            ..Options::default()
        };
        let store = Store::open("/sim/d", opts.clone()).unwrap();
        let batches = 2;
        let per_batch = 600_000;
        let work: Vec<Pending> = (0..batches)
            .map(|b| Pending {
                done: Done::Slot(Arc::new(Slot::default())),
                events: (0..per_batch).map(|i| tiny(b * per_batch + i)).collect(),
                prepared: None,
            })
            .collect();
        let results = store.inner.commit_group(&work);
        assert!(results.iter().all(|r| r.is_ok()), "{:?}", results[0]);
        assert!(!store.is_read_only());
        let view = store.view();
        let idx = view.active.index();
        assert!(idx.blocks.len() >= 2);
        assert!(idx
            .blocks
            .iter()
            .all(|b| b.entry.count <= BLOCK_RECORDS_MAX));
        drop(idx);
        drop(view);
        drop(store);
        let store = Store::open("/sim/d", opts).unwrap();
        assert_eq!(store.last_seq(), (batches * per_batch) as u64);
    }
}
