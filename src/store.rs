//! The store: open and recovery, the public API, and the snapshot readers work on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

use echolog_format::record::RecordRef;
use echolog_format::segment_header::SEGMENT_HEADER_LEN;
use echolog_format::tombstone_file::{
    decode_tombstones, encode_tombstones, TombstoneEntry, REASON_BYTES_MAX, TOMBSTONE_SEQS_MAX,
    TYPE_DELETE_ENTITY, TYPE_DELETE_SEQS, TYPE_RESTORE,
};

use crate::block_cache::{BlockCache, DecodedBlock};
use crate::dir::{self, index_name, write_atomic, DirLock};
use crate::error::{Error, Result};
use crate::event::{encoded_len_max, validate_event, Event, EventRef, StoredEvent};
use crate::history::EventSink;
use crate::options::{Options, SyncPolicy};
use crate::segment::checkpoint;
use crate::segment::{ActiveSegment, LoadedSegment, SealedSegment};
use crate::storage::Storage;
use crate::tombstones::{
    entry_to_record, record_to_entry, Tombstones, KIND_PURGED, RESERVED_KINDS, TOMBSTONES_FILE,
};
use crate::writer::{create_segment, now_ms, prepare_batch, AppendOutcome, Queue, Writer};

/// What readers see: an immutable snapshot of the segment list, of how much of the active
/// segment is committed, and of the tombstone state, published together after every commit so
/// that a reader sees a commit whole or not at all (a `$delete` record and the deletion it
/// makes, say). Readers clone the Arc and never block the writer for longer than that clone.
#[derive(Clone)]
pub struct View {
    pub sealed: Arc<Vec<Arc<SealedSegment>>>,
    pub active: Arc<ActiveSegment>,
    /// Records of the active segment this snapshot covers: its in-memory index may already
    /// hold more (a commit being published), which readers of this snapshot ignore.
    pub active_len: u32,
    pub tombstones: Arc<Tombstones>,
    /// Cluster files by ascending base seq (disjoint ranges of whole sealed segments).
    pub clusters: Arc<Vec<Arc<crate::cluster::ClusterFile>>>,
}

/// What `open` did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub sealed_segments: usize,
    /// Bytes read from data files while opening (the active segment, the tombstone file, and
    /// any repair work).
    pub bytes_read: u64,
    /// Of those, bytes of sealed segments or their indexes (0 unless something was repaired).
    pub sealed_bytes_read: u64,
    /// Bytes cut from a torn tail of the active segment.
    pub truncated_bytes: u64,
    pub temp_files_removed: usize,
    pub unknown_files: Vec<PathBuf>,
    pub indexes_rebuilt: usize,
    /// Records of the active segment whose index came from its checkpoint.
    pub checkpoint_records: u64,
    /// Records of the active segment decoded by the scan after the checkpoint (all of them
    /// without one).
    pub scanned_records: u64,
    /// Checkpoint files of segments that are no longer active, removed (a seal cut short).
    pub checkpoints_removed: usize,
    /// Time spent reading and loading the active segment's checkpoint.
    pub checkpoint_load_us: u64,
    /// Time spent reading and scanning the active segment's blocks after the checkpoint.
    pub scan_us: u64,
}

/// Store-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records stored, tombstones included.
    pub events: u64,
    pub last_seq: u64,
    pub segments: u32,
    pub disk_bytes: u64,
    /// Decompressed record bytes.
    pub raw_bytes: u64,
    pub tombstones: u64,
    pub block_cache_bytes: u64,
    /// Blocks read from disk and decompressed since open (cache misses).
    pub blocks_decoded: u64,
    /// Group commits written since open (each one write and, with sync=always, one fdatasync).
    pub commits: u64,
    /// Block lookups by readers since open; `block_reads - blocks_decoded` were cache hits.
    pub block_reads: u64,
    /// The oldest seq still stored (1 until retention removes data).
    pub first_seq: u64,
    /// Records appended since open (tombstones included) and their decompressed bytes.
    pub appended_events: u64,
    pub appended_bytes: u64,
    /// Cluster files (entity-clustered copies of sealed segments) and their bytes, which are
    /// part of `disk_bytes`.
    pub cluster_files: u32,
    pub cluster_bytes: u64,
    /// Sealed segments no cluster file covers yet: compaction's backlog.
    pub compaction_backlog_segments: u32,
    /// Bytes compaction wrote since open.
    pub compaction_bytes_written: u64,
    /// True when compaction has nothing left to do (no backlog, no merge due).
    pub compaction_idle: bool,
    /// Events purge erased since open.
    pub purged_events: u64,
    /// Bytes of the id filter over the sealed segments' idempotency ids (on the heap, or
    /// mapped from the IDFILTER file after a reopen).
    pub id_filter_bytes: u64,
    /// Sealed segments the id filter does not cover yet (an append with an id searches each).
    pub id_filter_backlog_segments: u32,
}

/// One page of a positional read.
#[derive(Debug, Clone, Default)]
pub struct ReadPage {
    pub events: Vec<StoredEvent>,
    /// Where the next page starts: one past the last seq this one looked at.
    pub next_seq: u64,
}

/// The block the previous record came from, reused while records stay in it.
pub(crate) type BlockHint = Option<(usize, Arc<DecodedBlock>)>;

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub opts: Options,
    _lock: DirLock,
    pub view: RwLock<Arc<View>>,
    /// Shared with the interval flusher thread, which must never hold the store itself alive
    /// (the directory lock has to go away when the last handle is dropped).
    pub writer: Arc<Mutex<Writer>>,
    pub queue: Mutex<Queue>,
    /// Wakes the committer when a batch is queued or the store is closing.
    pub queue_cv: Condvar,
    pub cache: BlockCache,
    /// Every file operation goes through here; it also holds the read-only state.
    pub storage: Storage,
    last_seq: AtomicU64,
    blocks_decoded: AtomicU64,
    block_reads: AtomicU64,
    pub appended_events: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub commits: AtomicU64,
    /// The durable watermark Tail follows; shared with the interval flusher.
    pub durable: Arc<Durable>,
    /// Consumer cursors (their own file; commits are serialised by this lock).
    cursors: Mutex<crate::cursors::Cursors>,
    open_report: OpenReport,
    /// Deleted ordinals per sealed segment (by base seq), with the tombstone generation they
    /// were computed for.
    pub deleted_cache: Mutex<rustc_hash::FxHashMap<u64, (u64, Arc<roaring::RoaringBitmap>)>>,
    /// Background compaction into cluster files: its stop flag, wake-up and counters.
    pub compaction: crate::compaction::Compaction,
    /// Held while the files of sealed segments are removed or replaced (retention, purge) or
    /// linked into a backup, so that none of them sees another's half-done work.
    pub sealed_files: Mutex<()>,
    /// Events purge erased since open.
    pub purged_events: AtomicU64,
    pub purge_state: Mutex<crate::purge::PurgeState>,
    /// The filter over the sealed segments' idempotency ids (`id_filter.rs`).
    pub ids: Arc<Mutex<crate::id_filter::IdFilterState>>,
    /// Dropped with the store: its weak references tell the id filter's builder to stop.
    alive: Arc<()>,
}

/// A handle to an open store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    // Dropped first: when the last handle goes, the committer is stopped and joined before
    // `inner` is released, so the directory lock is free the moment the drop returns.
    _closer: Arc<Closer>,
    pub(crate) inner: Arc<Inner>,
}

/// Stops and joins the committer thread when the last [`Store`] handle is dropped.
struct Closer {
    inner: Arc<Inner>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    compactor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closing = true;
        self.inner.queue_cv.notify_all();
        self.inner.compaction.close();
        let compactor = self
            .compactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut joined = true;
        for h in compactor.into_iter().chain(handle) {
            // The last handle may be dropped by a callback running on the committer itself.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            } else {
                joined = false;
            }
        }
        // Only once nothing else writes: the committer and the compactor have stopped.
        if joined {
            if let Err(e) = self.inner.seal_at_close() {
                tracing::warn!(error = %e, "could not seal the active segment at close; the next open rebuilds its index");
            }
            if self.inner.storage.poisoned().is_none() {
                crate::id_filter::persist::save(
                    &self.inner.storage,
                    &self.inner.dir,
                    &self.inner.ids,
                );
            }
        }
    }
}

/// Parameters of a history query.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub entity: String,
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
    /// Forward: only seqs above it. Reverse: only seqs below it (0: from the newest).
    pub after_seq: u64,
    /// 0 means no limit.
    pub limit: u32,
    pub reverse: bool,
    pub include_deleted: bool,
    /// Stop after the event that brings the answer to this many bytes
    /// ([`StoredEvent::size_bytes`] summed); 0 means no bound. A caller paging a long history
    /// with a memory bound gets one page per call whatever the events' sizes: the answer was
    /// cut by this bound exactly when its bytes reach it.
    pub bytes_max: u64,
}

/// Threads the first `Stats` after open reads segment summaries with.
const SUMMARY_READERS_MAX: usize = 16;

/// Reads the summaries `Stats` needs that are not cached yet, on up to
/// `SUMMARY_READERS_MAX` threads: with a cold page cache each is a disk read of its index's
/// first page, and a disk serves many at once far faster than one after another. Errors are
/// left for the caller's own `summary` call to meet and report.
fn prefetch_summaries(sealed: &[Arc<SealedSegment>]) {
    let pending: Vec<&Arc<SealedSegment>> = sealed.iter().filter(|s| !s.summary_cached()).collect();
    if pending.len() < 2 {
        return;
    }
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(seg) = pending.get(next.fetch_add(1, Ordering::Relaxed)) {
            let _ = seg.summary();
        }
    };
    on_threads(
        pending.len().min(SUMMARY_READERS_MAX),
        "echolog-stats",
        work,
    );
}

/// Runs `work` on up to `threads` threads at once, the caller's among them (the others
/// spawned and named `name`; fewer when the OS has none to spare), and returns when all have
/// returned. `work` takes its items from a list shared by all, so the list is done whatever
/// number of threads started.
pub(crate) fn on_threads(threads: usize, name: &str, work: impl Fn() + Sync) {
    std::thread::scope(|scope| {
        for _ in 1..threads {
            let spawned = std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(scope, &work);
            if spawned.is_err() {
                break;
            }
        }
        work();
    });
}

pub(crate) fn check_range(from_ts: Option<i64>, to_ts: Option<i64>) -> Result<()> {
    if let (Some(f), Some(t)) = (from_ts, to_ts) {
        if f > t {
            return Err(Error::invalid(format!(
                "from_ts ({f}) must not be greater than to_ts ({t})"
            )));
        }
    }
    Ok(())
}

pub(crate) fn in_range(ts: i64, from_ts: Option<i64>, to_ts: Option<i64>) -> bool {
    from_ts.is_none_or(|f| ts >= f) && to_ts.is_none_or(|t| ts < t)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        let opened = std::time::Instant::now();
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = Storage::new(opts.backend.as_ref(), opts.observer.as_ref());
        create_data_dir(&storage, &dir)?;
        let lock = dir::lock(&storage, &dir)?;
        let mut report = OpenReport::default();
        let listing = dir::list(&storage, &dir)?;
        for t in &listing.temp_files {
            storage.remove(t)?;
            tracing::warn!(file = %t.display(), "removed leftover temporary file");
            report.temp_files_removed += 1;
        }
        for u in &listing.unknown {
            tracing::warn!(file = %u.display(), "file in the data directory is not echolog's; leaving it alone");
        }
        report.unknown_files = listing.unknown.clone();
        let mut segments = listing.segments.clone();
        if segments.is_empty() {
            create_segment(&storage, &dir, 1)?;
            segments.push(1);
        }
        let active_base = segments[segments.len() - 1];
        for idx in &listing.indexes {
            if *idx == active_base {
                // A seal that did not finish: the segment is still the active one.
                let p = dir.join(index_name(*idx));
                storage.remove(&p)?;
                tracing::warn!(file = %p.display(), "removed the index of the active segment (an unfinished seal)");
            } else if !segments.contains(idx) && *idx < segments[0] {
                // Retention unlinked the segment and was cut short before its index.
                let p = dir.join(index_name(*idx));
                storage.remove(&p)?;
                tracing::warn!(file = %p.display(), "removed the index of a segment retention had removed");
            } else if !segments.contains(idx) {
                tracing::warn!(file = %dir.join(index_name(*idx)).display(), "index file without a segment");
                report.unknown_files.push(dir.join(index_name(*idx)));
            }
        }
        for &c in listing.checkpoints.iter().filter(|c| **c != active_base) {
            let p = dir.join(checkpoint::checkpoint_name(c));
            storage.remove(&p)?;
            tracing::warn!(file = %p.display(), "removed the checkpoint of a segment that is no longer active (a seal cut short)");
            report.checkpoints_removed += 1;
        }
        // Sealed segments: nothing is read, unless an index is missing.
        let mut sealed = Vec::with_capacity(segments.len() - 1);
        for w in segments.windows(2) {
            let s = Arc::new(SealedSegment::new(&dir, &storage, w[0], w[1]));
            if !listing.indexes.contains(&w[0]) {
                tracing::warn!(file = %s.idx_path().display(), "index file missing; rebuilding it from its segment");
                let l = s.load()?;
                report.sealed_bytes_read += l.disk_bytes();
                report.indexes_rebuilt += 1;
            }
            sealed.push(s);
        }
        report.sealed_segments = sealed.len();
        // The active segment: its index from the checkpoint, then a scan of the blocks after
        // it; cut a torn tail.
        let path = dir.join(dir::segment_name(active_base));
        let recovered = checkpoint::recover_active(&storage, &dir, active_base, &path)?;
        report.bytes_read += recovered.bytes_read;
        report.checkpoint_records = u64::from(recovered.checkpoint_records);
        report.checkpoint_load_us = recovered.load_time.as_micros() as u64;
        report.scan_us = recovered.scan_time.as_micros() as u64;
        let checkpointer = recovered.checkpointer;
        let scan = recovered.scan;
        report.scanned_records =
            u64::from(scan.index.record_count() - recovered.checkpoint_records);
        // Damage that a later, complete commit follows is not a torn tail: refuse to open
        // rather than truncate committed data.
        if let (Some(at), Some((_, source))) = (scan.corrupt_at, &scan.stopped) {
            return Err(Error::Corruption {
                file: path,
                offset: at,
                source: source.clone(),
            });
        }
        let mut file = storage.open(&path, true)?;
        let file_len = file.size_bytes().map_err(|e| Error::io(&path, e))?;
        if scan.valid_len < file_len {
            let cut = file_len - scan.valid_len;
            let why = scan
                .stopped
                .as_ref()
                .map(|(_, e)| e.to_string())
                .unwrap_or_else(|| "unfinished commit".into());
            storage.truncate(&*file, &path, scan.valid_len)?;
            tracing::warn!(file = %path.display(), bytes = cut, offset = scan.valid_len, reason = %why, "truncated the torn tail of the active segment");
            report.truncated_bytes = cut;
        }
        // An active segment of an older format version is not appended to: when empty it is
        // replaced by one of this version, otherwise it is sealed below, once the store is up.
        // Version 1 blocks lack PRIOR_DURABLE: such a segment is sealed, not appended to.
        let convert = scan.version < 2;
        if convert && scan.index.record_count() == 0 {
            file = create_segment(&storage, &dir, active_base)?.0;
        } else {
            // What recovery kept may still be only in the page cache (after a process crash):
            // make it durable, so the next commit can say that everything before it is.
            storage.sync(&*file, &path)?;
        }
        let convert = convert && scan.index.record_count() > 0;
        // Every name this open relies on must be durable before an append is acknowledged: a
        // previous run may have renamed a file into place and died (or failed) before its
        // directory fsync, and a power loss now would undo that rename under new data.
        storage.sync_dir(&dir)?;
        let next_seq = scan.index.end_seq();
        let len = scan.valid_len;
        debug_assert!(len >= SEGMENT_HEADER_LEN as u64);
        let active = Arc::new(ActiveSegment::new(
            active_base,
            path,
            file.clone(),
            storage.clone(),
            scan.index,
        ));
        let writer = Writer::new(
            file,
            active.clone(),
            len,
            next_seq,
            opts.zstd_level,
            checkpointer,
        )?;
        let cursors = crate::cursors::Cursors::load(&storage, &dir)?;
        let active_len = active.index().record_count();
        let clusters =
            crate::compaction::choose_at_open(&storage, &dir, &listing.clusters, &sealed);
        let ids = crate::id_filter::IdFilterState::at_open(&sealed, active_base);
        let inner = Arc::new(Inner {
            cache: BlockCache::new(opts.block_cache_bytes_max),
            storage,
            dir,
            _lock: lock,
            view: RwLock::new(Arc::new(View {
                clusters: Arc::new(clusters),
                sealed: Arc::new(sealed),
                active_len,
                active,
                tombstones: Arc::new(Tombstones::default()),
            })),
            writer: Arc::new(Mutex::new(writer)),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            last_seq: AtomicU64::new(next_seq - 1),
            blocks_decoded: AtomicU64::new(0),
            block_reads: AtomicU64::new(0),
            appended_events: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            durable: Arc::new(Durable::new(next_seq - 1)),
            cursors: Mutex::new(cursors),
            opts,
            open_report: OpenReport::default(),
            deleted_cache: Mutex::new(Default::default()),
            compaction: Default::default(),
            sealed_files: Mutex::new(()),
            purged_events: AtomicU64::new(0),
            purge_state: Mutex::new(Default::default()),
            ids: Arc::new(Mutex::new(ids)),
            alive: Arc::new(()),
        });
        let tomb_bytes = inner.load_tombstones(active_base)?;
        report.bytes_read += tomb_bytes;
        if convert {
            let mut w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            inner.roll(&mut w)?;
            tracing::info!(
                base_seq = active_base,
                "sealed the active segment of an older format version; appends go to a new one"
            );
        }
        report.bytes_read += report.sealed_bytes_read;
        let mut inner = inner;
        if let Some(i) = Arc::get_mut(&mut inner) {
            i.open_report = report;
        }
        if let SyncPolicy::Interval(d) = inner.opts.sync {
            spawn_flusher(
                Arc::downgrade(&inner),
                inner.writer.clone(),
                inner.storage.clone(),
                inner.durable.clone(),
                d,
            );
        }
        let committer = {
            let for_thread = inner.clone();
            std::thread::Builder::new()
                .name("echolog-commit".into())
                .spawn(move || for_thread.run_committer())
                .map_err(|e| Error::io(&inner.dir, e))?
        };
        let compactor = if inner.opts.compaction || inner.opts.purge_grace.is_some() {
            let for_thread = inner.clone();
            let h = std::thread::Builder::new()
                .name("echolog-compact".into())
                .spawn(move || crate::compaction::run(&for_thread))
                .map_err(|e| Error::io(&inner.dir, e))?;
            Some(h)
        } else {
            None
        };
        let r = &inner.open_report;
        tracing::info!(
            dir = %inner.dir.display(),
            last_seq = next_seq - 1,
            ms = opened.elapsed().as_millis() as u64,
            checkpoint_records = r.checkpoint_records,
            scanned_records = r.scanned_records,
            "store open"
        );
        Ok(Store {
            _closer: Arc::new(Closer {
                inner: inner.clone(),
                committer: Mutex::new(Some(committer)),
                compactor: Mutex::new(compactor),
            }),
            inner,
        })
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.inner.open_report
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Appends a batch atomically. Every event is validated first; on any error nothing is
    /// stored and the error names the event index, the field and the limit. Blocks until the
    /// batch is committed.
    pub fn append(&self, events: Vec<Event>) -> Result<AppendOutcome> {
        match self.prepare(events)? {
            None => Ok(AppendOutcome {
                seqs: Vec::new(),
                duplicates: 0,
            }),
            Some((events, prepared)) => self.inner.append_queued(events, prepared),
        }
    }

    /// Like [`Store::append`], without blocking: validates (and, for a large batch,
    /// compresses) on the calling thread, queues the batch and returns. `done` is called once
    /// with the outcome, from the commit thread (or at once, on this thread, for bad input),
    /// so it must be quick: typically it sends on a channel.
    pub fn append_with(
        &self,
        events: Vec<Event>,
        done: impl FnOnce(Result<AppendOutcome>) + Send + 'static,
    ) {
        match self.prepare(events) {
            Err(e) => done(Err(e)),
            Ok(None) => done(Ok(AppendOutcome {
                seqs: Vec::new(),
                duplicates: 0,
            })),
            Ok(Some((events, prepared))) => self.inner.submit(
                events,
                prepared,
                crate::writer::Done::Callback(Box::new(done)),
            ),
        }
    }

    /// Validates a batch, resolves ts 0 to server time and compresses a large batch into
    /// blocks. `None` for an empty batch.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        events: Vec<Event>,
    ) -> Result<
        Option<(
            Vec<Event>,
            Option<Vec<echolog_format::block::PreparedBlock>>,
        )>,
    > {
        let opts = &self.inner.opts;
        if events.is_empty() {
            return Ok(None);
        }
        if events.len() > opts.batch_events_max {
            return Err(Error::TooLarge(format!(
                "events: a batch holds at most {} events, got {}",
                opts.batch_events_max,
                events.len()
            )));
        }
        let mut bytes = 0usize;
        for (i, e) in events.iter().enumerate() {
            validate_event(i, e, opts.payload_bytes_max)?;
            bytes += encoded_len_max(e);
        }
        if bytes > opts.batch_bytes_max {
            return Err(Error::TooLarge(format!(
                "events: a batch holds at most {} bytes, got about {bytes}",
                opts.batch_bytes_max
            )));
        }
        let mut events = events;
        let now = now_ms();
        for e in events.iter_mut().filter(|e| e.ts == 0) {
            e.ts = now;
        }
        // Large batches are encoded and compressed here, on the appending thread, so that
        // concurrent appenders do that work in parallel instead of inside the commit.
        let prepared = (bytes >= opts.block_raw_bytes_target)
            .then(|| prepare_batch(&events, opts.block_raw_bytes_target, opts.zstd_level));
        Ok(Some((events, prepared)))
    }

    /// Soft-deletes: with `seqs`, exactly those events; otherwise every event of `entity`
    /// below the tombstone. Returns the tombstone's seq.
    pub fn delete(&self, entity: &str, seqs: &[u64], reason: &str) -> Result<u64> {
        if reason.len() > REASON_BYTES_MAX || reason.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "reason: at most {REASON_BYTES_MAX} bytes without control characters, got {} bytes",
                reason.len()
            )));
        }
        let entry = if seqs.is_empty() {
            check_entity(entity)?;
            TombstoneEntry {
                kind: TYPE_DELETE_ENTITY,
                seq: 0,
                entity: entity.to_owned(),
                reason: reason.to_owned(),
                seqs: Vec::new(),
            }
        } else {
            if seqs.len() > TOMBSTONE_SEQS_MAX {
                return Err(Error::invalid(format!(
                    "seqs: at most {TOMBSTONE_SEQS_MAX} per delete, got {}",
                    seqs.len()
                )));
            }
            if !entity.is_empty() {
                check_entity(entity)?;
            }
            let mut sorted = seqs.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            for s in &sorted {
                match self.get(*s)? {
                    None if *s == 0 || *s > self.last_seq() => {
                        return Err(Error::invalid(format!(
                            "seqs: {s} does not exist (last seq is {})",
                            self.last_seq()
                        )))
                    }
                    None if *s < self.first_seq() => {
                        return Err(Error::invalid(format!(
                            "seqs: {s} was removed by retention (first seq is {})",
                            self.first_seq()
                        )))
                    }
                    None => {
                        return Err(Error::invalid(format!(
                            "seqs: {s} was purged (its event is erased)"
                        )))
                    }
                    Some(ev) if RESERVED_KINDS.contains(&ev.event.kind.as_str()) => {
                        return Err(Error::invalid(format!(
                            "seqs: {s} is a {} record, which cannot be deleted",
                            ev.event.kind
                        )))
                    }
                    Some(_) => {}
                }
            }
            TombstoneEntry {
                kind: TYPE_DELETE_SEQS,
                seq: 0,
                entity: entity.to_owned(),
                reason: reason.to_owned(),
                seqs: sorted,
            }
        };
        self.append_internal(&entry)
    }

    /// Lifts `entity`'s entity tombstones (seq deletes stay). Returns the restore record's seq.
    pub fn restore(&self, entity: &str) -> Result<u64> {
        check_entity(entity)?;
        self.append_internal(&TombstoneEntry {
            kind: TYPE_RESTORE,
            seq: 0,
            entity: entity.to_owned(),
            reason: String::new(),
            seqs: Vec::new(),
        })
    }

    fn append_internal(&self, entry: &TombstoneEntry) -> Result<u64> {
        let (kind, tags, payload) = entry_to_record(entry);
        let ev = Event {
            entity: entry.entity.clone(),
            kind: kind.to_owned(),
            ts: now_ms(),
            tags,
            payload,
            id: None,
        };
        let out = self.inner.append_queued(vec![ev], None)?;
        out.seqs
            .first()
            .copied()
            .ok_or_else(|| Error::Inconsistent("append returned no seq".into()))
    }

    /// Seq of the newest committed record (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// Seq of the newest durable record: with `sync=always` the same as [`Store::last_seq`];
    /// with `sync=interval` it trails until the next fdatasync; with `sync=never` (no
    /// durability at all) it is the last written record.
    pub fn durable_seq(&self) -> u64 {
        self.inner.durable.seq()
    }

    /// Waits until a record after `seq` is durable, or `timeout` passes. Returns the durable
    /// seq. Tail follows this, not `last_seq`: a consumer must never act on an event that a
    /// power loss could take back, and whose seq a later append would then reuse.
    pub fn wait_for_seq_after(&self, seq: u64, timeout: Duration) -> u64 {
        self.inner.durable.wait_after(seq, timeout)
    }

    /// Like [`Store::read`], but only durable records (up to [`Store::durable_seq`]): what a
    /// tail or a replay may hand to a consumer.
    pub fn read_durable(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEvent>> {
        Ok(self.read_durable_page(from_seq, limit)?.events)
    }

    /// [`Store::read_durable`], and where the next read goes on: past the last seq it looked
    /// at, which is past the last event returned when seqs purge removed follow it.
    pub fn read_durable_page(&self, from_seq: u64, limit: u32) -> Result<ReadPage> {
        let end = self.durable_seq();
        if from_seq.max(1) > end {
            return Ok(ReadPage {
                events: Vec::new(),
                next_seq: from_seq.max(1),
            });
        }
        self.read_until(from_seq, end, limit)
    }

    /// Commits consumer cursor `name` at `seq` (the seq to resume from, inclusive): durable
    /// once this returns, like an acknowledged append. `seq` may be anything up to
    /// `last_seq + 1`, and may move backwards (to replay).
    pub fn commit_cursor(&self, name: &str, seq: u64) -> Result<()> {
        crate::cursors::check_name(name)?;
        let limit = self.last_seq() + 1;
        if seq > limit {
            return Err(Error::invalid(format!(
                "seq: a cursor may be at most last_seq + 1 = {limit}, got {seq}"
            )));
        }
        if let Some(msg) = self.inner.poisoned() {
            return Err(Error::ReadOnly(msg));
        }
        let mut c = self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner());
        c.commit(&self.inner.storage, name, seq)
    }

    /// The seq committed for cursor `name`, if any.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>> {
        crate::cursors::check_name(name)?;
        let c = self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner());
        c.get(name)
    }

    /// Every cursor, by name.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>> {
        let c = self.inner.cursors.lock().unwrap_or_else(|p| p.into_inner());
        c.list()
    }

    /// True once an I/O failure has made the store read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.poisoned().is_some()
    }

    pub(crate) fn view(&self) -> Arc<View> {
        self.inner
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forces buffered appends to disk (only matters with `sync=interval` or `never`).
    pub fn sync(&self) -> Result<()> {
        let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = self.inner.poisoned() {
            return Err(Error::ReadOnly(msg));
        }
        if w.dirty {
            let path = w.active.path.clone();
            self.inner.storage.sync(&*w.file, &path)?;
            w.synced();
            self.inner.durable.advance(w.next_seq - 1);
        }
        Ok(())
    }

    /// Seals the active segment now (when it holds anything). Normally segments are sealed
    /// when they reach `segment_size_bytes_max`.
    pub fn seal_active(&self) -> Result<()> {
        let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = self.inner.poisoned() {
            return Err(Error::ReadOnly(msg));
        }
        if w.active.index().record_count() == 0 {
            return Ok(());
        }
        self.inner.roll(&mut w)
    }

    /// Seals the active segment now if it holds at least `seal_at_close_bytes_min` bytes, as
    /// closing the store does; a server calls it on shutdown to report a failure. Returns
    /// whether it sealed.
    pub fn seal_for_close(&self) -> Result<bool> {
        self.inner.seal_at_close()
    }

    /// The oldest seq still stored: reads and tails from before it start there.
    pub fn first_seq(&self) -> u64 {
        first_seq_of(&self.view())
    }

    /// Applies the retention options now (they also run after every seal).
    pub fn apply_retention(&self) -> Result<usize> {
        let mut w = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = self.inner.poisoned() {
            return Err(Error::ReadOnly(msg));
        }
        self.inner.apply_retention(&mut w)
    }

    pub fn stats(&self) -> Result<Stats> {
        let view = self.view();
        let mut s = Stats {
            last_seq: self.last_seq(),
            first_seq: first_seq_of(&view),
            segments: view.sealed.len() as u32 + 1,
            ..Default::default()
        };
        prefetch_summaries(&view.sealed);
        for seg in view.sealed.iter() {
            s.events += seg.end_seq - seg.base_seq;
            match seg.summary() {
                Ok((disk, raw)) => {
                    s.disk_bytes += disk;
                    s.raw_bytes += raw;
                }
                // A segment that cannot be loaded still occupies its files.
                Err(_) => {
                    for p in [seg.seg_path(), seg.idx_path()] {
                        let len = self.inner.storage.open(&p, false).map(|f| f.size_bytes());
                        s.disk_bytes += len.ok().and_then(|l| l.ok()).unwrap_or(0);
                    }
                }
            }
        }
        let idx = view.active.index();
        s.events += u64::from(view.active_len);
        s.disk_bytes += idx.len;
        s.raw_bytes += idx.raw_bytes;
        drop(idx);
        s.tombstones = view.tombstones.entries().len() as u64;
        s.block_cache_bytes = self.inner.cache.weight();
        s.blocks_decoded = self.inner.blocks_decoded.load(Ordering::Relaxed);
        s.block_reads = self.inner.block_reads.load(Ordering::Relaxed);
        s.appended_events = self.inner.appended_events.load(Ordering::Relaxed);
        s.appended_bytes = self.inner.appended_bytes.load(Ordering::Relaxed);
        s.commits = self.inner.commits.load(Ordering::Relaxed);
        s.cluster_files = view.clusters.len() as u32;
        s.cluster_bytes = view.clusters.iter().map(|c| c.size_bytes).sum();
        s.disk_bytes += s.cluster_bytes;
        s.compaction_backlog_segments = view
            .sealed
            .iter()
            .filter(|seg| {
                !view
                    .clusters
                    .iter()
                    .any(|c| c.covers(seg.base_seq, seg.end_seq))
            })
            .count() as u32;
        s.compaction_bytes_written = self.inner.compaction.bytes_written.load(Ordering::Relaxed);
        s.purged_events = self.inner.purged_events.load(Ordering::Relaxed);
        let (filter_bytes, covered_end) = {
            let st = self.inner.ids.lock().unwrap_or_else(|p| p.into_inner());
            (st.filters.size_bytes(), st.filters.covered_end())
        };
        s.id_filter_bytes = filter_bytes as u64;
        s.id_filter_backlog_segments = view
            .sealed
            .iter()
            .filter(|seg| seg.end_seq > covered_end)
            .count() as u32;
        let o = &self.inner.opts;
        s.compaction_idle =
            crate::compaction::idle(&view, o.compaction_fanout as usize, o.compaction_level_max);
        Ok(s)
    }

    /// Runs compaction steps on this thread until none is left (tests, benchmarks, and
    /// `Options { compaction: false }` stores that compact on demand). Returns the steps.
    pub fn compact_now(&self) -> Result<Vec<crate::compaction::Step>> {
        let mut done = Vec::new();
        loop {
            match crate::compaction::step(&self.inner)? {
                crate::compaction::Step::Idle => return Ok(done),
                s => done.push(s),
            }
        }
    }

    /// The record with `seq`, or None when there is none.
    pub fn get(&self, seq: u64) -> Result<Option<StoredEvent>> {
        Ok(self
            .read(seq, 1)?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq))
    }

    /// Up to `limit` records from `from_seq` on (inclusive), every kind and deleted or not,
    /// with `deleted_by` set. `limit = 0` means no limit. Seqs purge removed are skipped (the
    /// answer then has gaps in its seqs).
    pub fn read(&self, from_seq: u64, limit: u32) -> Result<Vec<StoredEvent>> {
        Ok(self.read_until(from_seq, u64::MAX, limit)?.events)
    }

    /// [`Store::read`] of the records with seqs up to `last` (inclusive).
    fn read_until(&self, from_seq: u64, last: u64, limit: u32) -> Result<ReadPage> {
        let mut events = crate::history::Collect::default();
        let next_seq = self.read_until_into(from_seq, last, limit, &mut events)?;
        Ok(ReadPage {
            events: events.0,
            next_seq,
        })
    }

    /// [`Store::read_durable_page`], handing each event to `sink` borrowed from its block;
    /// returns the page's `next_seq`.
    pub fn read_durable_into(
        &self,
        from_seq: u64,
        limit: u32,
        sink: &mut dyn EventSink,
    ) -> Result<u64> {
        let end = self.durable_seq();
        if from_seq.max(1) > end {
            return Ok(from_seq.max(1));
        }
        self.read_until_into(from_seq, end, limit, sink)
    }

    /// The records from `from_seq` up to `last` (inclusive), at most `limit` (0: no bound)
    /// of them given to `sink`, `$purged` placeholders skipped; returns the seq after the last
    /// record passed. Events carry `deleted_by`; tombstones are never deleted.
    fn read_until_into(
        &self,
        from_seq: u64,
        last: u64,
        limit: u32,
        sink: &mut dyn EventSink,
    ) -> Result<u64> {
        let view = self.view();
        let from_seq = from_seq.max(1);
        let mut next_seq = from_seq;
        let want = if limit == 0 {
            u64::MAX
        } else {
            u64::from(limit)
        };
        let mut taken = 0u64;
        let tomb = &view.tombstones;
        // Passes record `r` at `seq`; false once the page is complete.
        let mut keep = |seq: u64, r: &RecordRef<'_>| -> bool {
            if seq > last {
                return false;
            }
            next_seq = seq + 1;
            if r.kind != KIND_PURGED {
                let deleted_by = tomb.record_deleted_by(r.kind, r.entity, seq);
                sink.push(&EventRef::new(seq, *r, deleted_by, None));
                taken += 1;
            }
            taken < want
        };
        for seg in view.sealed.iter() {
            if seg.end_seq <= from_seq {
                continue;
            }
            let l = seg.load()?;
            let start = (from_seq.max(seg.base_seq) - seg.base_seq) as u32;
            let mut hint = None;
            for ord in start..l.record_count() {
                let (seq, r) = self.inner.sealed_record(&l, ord, &mut hint)?;
                if !keep(seq, &r) {
                    return Ok(next_seq);
                }
            }
        }
        let active = &view.active;
        let count = view.active_len;
        let start = from_seq.max(active.base_seq) - active.base_seq;
        let mut hint = None;
        for ord in start..u64::from(count) {
            let (seq, r) = self.inner.active_record(active, ord as u32, &mut hint)?;
            if !keep(seq, &r) {
                break;
            }
        }
        Ok(next_seq)
    }

    /// The history of one entity; see [`HistoryQuery`].
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredEvent>> {
        let mut events = crate::history::Collect::default();
        self.history_into(q, &mut events)?;
        Ok(events.0)
    }

    /// [`Store::history`], handing each event to `sink` borrowed from its block instead of
    /// collecting owned events: the same events, in the same order, within the same bounds.
    pub fn history_into(&self, q: &HistoryQuery, sink: &mut dyn EventSink) -> Result<()> {
        check_entity(&q.entity)?;
        check_range(q.from_ts, q.to_ts)?;
        crate::history::history(self, q, sink)
    }
}

pub(crate) fn check_entity(entity: &str) -> Result<()> {
    use echolog_format::limits::ENTITY_BYTES_MAX;
    if entity.is_empty() || entity.len() > ENTITY_BYTES_MAX || entity.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "entity must be 1..={ENTITY_BYTES_MAX} bytes without control characters, got {} bytes",
            entity.len()
        )));
    }
    Ok(())
}

fn view_end_seq(view: &RwLock<Arc<View>>) -> u64 {
    let v = view.read().unwrap_or_else(|p| p.into_inner()).clone();
    let end = v.active.index().end_seq();
    end
}

pub(crate) fn first_seq_of(view: &View) -> u64 {
    view.sealed
        .first()
        .map_or(view.active.base_seq, |s| s.base_seq)
        .max(1)
}

/// The durable watermark: the newest seq that survives a power loss, with a condition
/// variable that Tail's waiters sleep on.
pub(crate) struct Durable {
    seq: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Durable {
    fn new(seq: u64) -> Self {
        Durable {
            seq: AtomicU64::new(seq),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    pub fn advance(&self, seq: u64) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.seq.fetch_max(seq, Ordering::AcqRel);
        self.cv.notify_all();
    }

    fn wait_after(&self, seq: u64, timeout: Duration) -> u64 {
        let mut g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = std::time::Instant::now();
            if self.seq() > seq || now >= deadline {
                return self.seq();
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Creates the data directory if it is missing, and fsyncs its parent so that the directory
/// itself survives a power loss.
fn create_data_dir(storage: &Storage, dir: &Path) -> Result<()> {
    if storage.list_dir(dir).is_ok() {
        return Ok(());
    }
    storage.create_dir_all(dir)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    storage.sync_dir(parent)
}

/// Syncs an idle store at least every `every`. Holds the writer and the storage seam, and only
/// a weak reference to the store to notice that it is gone.
fn spawn_flusher(
    alive: Weak<Inner>,
    writer: Arc<Mutex<Writer>>,
    storage: Storage,
    durable: Arc<Durable>,
    every: Duration,
) {
    let _ = std::thread::Builder::new()
        .name("echolog-flusher".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            if alive.strong_count() == 0 || storage.poisoned().is_some() {
                return;
            }
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.dirty && w.last_sync.elapsed() >= every {
                let path = w.active.path.clone();
                if storage.sync(&*w.file, &path).is_err() {
                    return;
                }
                w.synced();
                durable.advance(w.next_seq - 1);
            }
        });
}

impl Drop for Inner {
    fn drop(&mut self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.dirty && self.storage.poisoned().is_none() {
            if let Err(e) = self.storage.sync(&*w.file, &w.active.path) {
                tracing::error!(error = %e, "final fdatasync at close failed");
            }
        }
    }
}

impl Inner {
    /// The current tombstone state (a cheap Arc clone).
    pub(crate) fn tombstones(&self) -> Arc<Tombstones> {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tombstones
            .clone()
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.storage.poisoned()
    }

    /// The current snapshot (a cheap Arc clone).
    pub(crate) fn current_view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes a commit: one new [`View`] with the active segment's committed length and
    /// the tombstone records applied, then wakes tail waiters for records up to `last`.
    pub(crate) fn publish(
        &self,
        last: u64,
        records: &[crate::writer::NewRecord<'_>],
        active_len: u32,
        durable: bool,
    ) {
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut tomb = view.tombstones.clone();
        for r in records {
            if r.event.kind.starts_with('$') {
                let tags: Vec<&str> = r.event.tags.iter().map(String::as_str).collect();
                if let Some(e) = record_to_entry(
                    r.seq,
                    &r.event.kind,
                    &r.event.entity,
                    &tags,
                    &r.event.payload,
                ) {
                    // Copy-on-write: readers holding the old state keep it.
                    Arc::make_mut(&mut tomb).apply(e);
                }
            }
        }
        *view = Arc::new(View {
            active_len,
            tombstones: tomb,
            ..View::clone(&view)
        });
        drop(view);
        self.last_seq.store(last, Ordering::Release);
        if durable {
            self.durable.advance(last);
        }
    }

    /// Whether block `block` of the file cached under `key` is in the block cache.
    pub(crate) fn block_is_cached(&self, key: u64, block: usize) -> bool {
        self.cache.contains(&(key, block as u32))
    }

    pub(crate) fn block_cached(
        &self,
        base_seq: u64,
        block: usize,
        load: impl FnOnce() -> Result<DecodedBlock>,
    ) -> Result<Arc<DecodedBlock>> {
        self.block_reads.fetch_add(1, Ordering::Relaxed);
        self.cache.get_or_load((base_seq, block as u32), || {
            self.blocks_decoded.fetch_add(1, Ordering::Relaxed);
            load()
        })
    }

    /// Sets `deleted_by` ([`Tombstones::record_deleted_by`]).
    pub(crate) fn decorate(&self, mut ev: StoredEvent, tomb: &Tombstones) -> StoredEvent {
        ev.deleted_by = tomb.record_deleted_by(&ev.event.kind, &ev.event.entity, ev.seq);
        ev
    }

    pub(crate) fn sealed_event(
        &self,
        l: &LoadedSegment,
        ord: u32,
        tomb: &Tombstones,
        hint: &mut BlockHint,
    ) -> Result<StoredEvent> {
        let (seq, r) = self.sealed_record(l, ord, hint)?;
        Ok(self.decorate(StoredEvent::from_record(seq, &r), tomb))
    }

    /// The seq and record of ordinal `ord` of a sealed segment, borrowed from its block,
    /// which `hint` keeps (and reuses when the next ordinal is in the same block).
    pub(crate) fn sealed_record<'h>(
        &self,
        l: &LoadedSegment,
        ord: u32,
        hint: &'h mut BlockHint,
    ) -> Result<(u64, RecordRef<'h>)> {
        let in_hint = hint.as_ref().is_some_and(|(i, _)| {
            let e = &l.blocks[*i];
            ord >= e.first_ordinal && ord - e.first_ordinal < e.count
        });
        if !in_hint {
            let block = l.block_of(ord).ok_or_else(|| {
                Error::Inconsistent(format!("ordinal {ord} not in {}", l.seg_path.display()))
            })?;
            let b = self.block_cached(l.cache_key, block, || l.read_block(block))?;
            *hint = Some((block, b));
        }
        let Some((block, b)) = hint.as_ref() else {
            return Err(Error::Inconsistent("block hint not set".into()));
        };
        let seq = l.header.base_seq + u64::from(ord);
        let r = b.record(seq).map_err(|source| Error::Corruption {
            file: l.seg_path.clone(),
            offset: l.blocks[*block].offset,
            source,
        })?;
        Ok((seq, r))
    }

    pub(crate) fn active_event(
        &self,
        a: &ActiveSegment,
        ord: u32,
        tomb: &Tombstones,
        hint: &mut BlockHint,
    ) -> Result<StoredEvent> {
        let (seq, r) = self.active_record(a, ord, hint)?;
        Ok(self.decorate(StoredEvent::from_record(seq, &r), tomb))
    }

    /// [`Inner::sealed_record`] for the active segment.
    pub(crate) fn active_record<'h>(
        &self,
        a: &ActiveSegment,
        ord: u32,
        hint: &'h mut BlockHint,
    ) -> Result<(u64, RecordRef<'h>)> {
        let seq = a.base_seq + u64::from(ord);
        let in_hint = hint
            .as_ref()
            .is_some_and(|(_, b)| seq >= b.first_seq && seq - b.first_seq < u64::from(b.count()));
        if !in_hint {
            let block = {
                let idx = a.index();
                idx.block_of(ord).ok_or_else(|| {
                    Error::Inconsistent(format!("ordinal {ord} not in {}", a.path.display()))
                })?
            };
            let b = self.block_cached(a.base_seq, block, || a.read_block(block))?;
            *hint = Some((block, b));
        }
        let Some((_, b)) = hint.as_ref() else {
            return Err(Error::Inconsistent("block hint not set".into()));
        };
        let r = b.record(seq).map_err(|source| Error::Corruption {
            file: a.path.clone(),
            offset: 0,
            source,
        })?;
        Ok((seq, r))
    }

    /// The record with `seq` in `view` (purged or not), if the view holds it.
    pub(crate) fn record_in_view(&self, view: &View, seq: u64) -> Result<Option<StoredEvent>> {
        let tomb = &view.tombstones;
        if let Some(seg) = view
            .sealed
            .iter()
            .find(|s| s.base_seq <= seq && seq < s.end_seq)
        {
            let l = seg.load()?;
            let ord = (seq - seg.base_seq) as u32;
            return self.sealed_event(&l, ord, tomb, &mut None).map(Some);
        }
        let a = &view.active;
        if a.base_seq <= seq && seq < a.base_seq + u64::from(view.active_len) {
            let ord = (seq - a.base_seq) as u32;
            return self.active_event(a, ord, tomb, &mut None).map(Some);
        }
        Ok(None)
    }

    /// The seq of the stored record with idempotency key `id`, if any within the idempotency
    /// window (records from `window_start` on). Called by the commit leader, which holds the
    /// writer: every committed record is in the view's segments.
    pub(crate) fn find_id(&self, id: &str, next_seq: u64) -> Result<Option<u64>> {
        let window = self.opts.idempotency_window_events;
        let window_start = if window == 0 {
            1
        } else {
            next_seq.saturating_sub(window).max(1)
        };
        let view = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        let hash = crate::mem_index::id_hash(id);
        // The first lookup after open takes back the filter saved at the last close (the parts
        // that still describe the sealed segments) before anything else is added to it.
        let unread = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_unread();
        if unread {
            let saved = crate::id_filter::persist::load(&self.storage, &self.dir, &view.sealed);
            if let Some((file, parts)) = saved {
                let mut st = self.ids.lock().unwrap_or_else(|p| p.into_inner());
                st.adopt(&file, parts);
            }
        }
        // Sealed segments below `covered_end` need a search only inside the filter's "maybe"
        // ranges; the first id after open starts the build over the segments the saved filter
        // did not cover.
        let (covered_end, maybe) = {
            let mut st = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            if st.needs_builder() {
                crate::id_filter::spawn_builder(&self.ids, &mut st, Arc::downgrade(&self.alive));
            }
            (st.filters.covered_end(), st.filters.may_contain(hash))
        };
        let empty = Tombstones::default();
        let candidates = view.active.index().id_candidates(hash);
        for ord in candidates {
            if view.active.base_seq + u64::from(ord) < window_start {
                continue;
            }
            let ev = self.active_event(&view.active, ord, &empty, &mut None)?;
            if ev.event.id.as_deref() == Some(id) {
                return Ok(Some(ev.seq));
            }
        }
        // Which sealed segments to search, newest first: those the filter does not cover,
        // then those inside its "maybe" ranges (disjoint, newest first). Found by binary
        // search, so a new id costs nothing per segment the filter rules out.
        let sealed = &view.sealed[..];
        let below = |seq: u64| sealed.partition_point(|s| s.base_seq < seq);
        let uncovered = below(covered_end)..sealed.len();
        let maybes = maybe.iter().map(|(b, e)| below(*b)..below(*e));
        for run in std::iter::once(uncovered).chain(maybes) {
            for seg in sealed[run].iter().rev() {
                if seg.end_seq <= window_start {
                    break;
                }
                if let Some(seq) = self.find_id_in(seg, id, hash, window_start, &empty)? {
                    return Ok(Some(seq));
                }
            }
        }
        Ok(None)
    }

    /// The seq of the record with idempotency key `id` (hashing to `hash`) in one sealed
    /// segment, at or after `window_start`.
    fn find_id_in(
        &self,
        seg: &SealedSegment,
        id: &str,
        hash: u64,
        window_start: u64,
        empty: &Tombstones,
    ) -> Result<Option<u64>> {
        let l = seg.load()?;
        for ord in l.ids()?.lookup(hash) {
            if seg.base_seq + u64::from(ord) < window_start {
                continue;
            }
            let ev = self.sealed_event(&l, ord, empty, &mut None)?;
            if ev.event.id.as_deref() == Some(id) {
                return Ok(Some(ev.seq));
            }
        }
        Ok(None)
    }

    /// Writes the tombstone state of everything below `covered_until` (called while sealing).
    pub(crate) fn save_tombstones(&self, covered_until: u64) -> Result<()> {
        let t = self.tombstones();
        let entries: Vec<TombstoneEntry> = t
            .entries()
            .iter()
            .filter(|e| e.seq < covered_until)
            .cloned()
            .collect();
        drop(t);
        write_atomic(
            &self.storage,
            &self.dir,
            TOMBSTONES_FILE,
            &encode_tombstones(covered_until, &entries),
        )
    }

    /// Loads the tombstone state at open: the saved file, then the reserved records of any
    /// segment it does not cover (normally just the active one, found through its kind index).
    /// Returns the bytes read.
    fn load_tombstones(&self, active_base: u64) -> Result<u64> {
        let path = self.dir.join(TOMBSTONES_FILE);
        let mut covered = 1u64;
        let mut read = 0u64;
        let mut state = Tombstones::default();
        match self.storage.read_all(&path) {
            Ok(bytes) => {
                read = bytes.len() as u64;
                // A seal that stopped after saving this file but before starting the next
                // segment leaves it covering part of the active segment: still valid, since a
                // segment is fsynced before it is sealed. Anything past the log's end is not.
                let end = view_end_seq(&self.view);
                match decode_tombstones(&bytes) {
                    Ok((c, entries)) if c <= end && entries.iter().all(|e| e.seq < c) => {
                        covered = c;
                        for e in entries {
                            state.apply(e);
                        }
                    }
                    Ok((c, _)) => {
                        tracing::warn!(file = %path.display(), covered = c, "tombstone file is ahead of the log; rebuilding it from the indexes")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "tombstone file is corrupt; rebuilding it from the indexes")
                    }
                }
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let view = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        let empty = Tombstones::default();
        let mut found: Vec<StoredEvent> = Vec::new();
        for seg in view.sealed.iter().filter(|s| s.end_seq > covered) {
            let l = seg.load()?;
            for kind in RESERVED_KINDS {
                if let Some(bm) = l.bitmap(echolog_format::index::SECTION_KINDS, kind.as_bytes())? {
                    for ord in bm {
                        found.push(self.sealed_event(&l, ord, &empty, &mut None)?);
                    }
                }
            }
        }
        let ords = view.active.index().ordinals_of_kinds(&RESERVED_KINDS);
        for ord in ords {
            found.push(self.active_event(&view.active, ord, &empty, &mut None)?);
        }
        found.sort_by_key(|e| e.seq);
        for ev in found.iter().filter(|e| e.seq >= covered) {
            let tags: Vec<&str> = ev.event.tags.iter().map(String::as_str).collect();
            if let Some(e) = record_to_entry(
                ev.seq,
                &ev.event.kind,
                &ev.event.entity,
                &tags,
                &ev.event.payload,
            ) {
                state.apply(e);
            }
        }
        if covered < active_base && !view.sealed.is_empty() {
            // Save the repaired state so the next open does not repeat the work.
            let entries: Vec<TombstoneEntry> = state
                .entries()
                .iter()
                .filter(|e| e.seq < active_base)
                .cloned()
                .collect();
            write_atomic(
                &self.storage,
                &self.dir,
                TOMBSTONES_FILE,
                &encode_tombstones(active_base, &entries),
            )?;
        }
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        *view = Arc::new(View {
            tombstones: Arc::new(state),
            ..View::clone(&view)
        });
        Ok(read)
    }
}
