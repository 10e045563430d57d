//! Cluster files: a run of sealed segments rewritten in (entity, seq) order by compaction
//! (`compaction.rs`), so that one entity's history is a few contiguous blocks per file.
//!
//! They are derived data. The seq-ordered segments stay the primary copy (tail, replay,
//! positional reads, counts, retention and backup use them), so a missing or damaged cluster
//! file costs speed, never an event: open drops it and compaction builds it again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use echolog_format::block::{decode_block, decompress_body, record_at, record_offsets, BlockMeta};
use echolog_format::cluster::{
    encode_cluster_body, split_cluster_body, ClusterBlock, ClusterHeader, DirectoryBuilder,
    DirectoryView, EntityRun, CLUSTER_HEADER_LEN,
};
use echolog_format::record::RecordRef;
use echolog_format::FormatError;

use crate::block_cache::DecodedBlock;
use crate::error::{Error, Result};
use crate::read_ahead::pipelined;
use crate::storage::{temp_path, Advice, FileHandle, Mapped, Storage};

mod runs;
pub use runs::{RunCursor, RunSink};

pub const CLUSTER_EXT: &str = "clu";

/// `{base:020}-{end:020}.clu`: the seq range is in the name, so open can choose files without
/// reading them.
pub fn cluster_name(base_seq: u64, end_seq: u64) -> String {
    format!("{base_seq:020}-{end_seq:020}.{CLUSTER_EXT}")
}

/// The seq range of a cluster file's name.
pub fn parse_cluster_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(&format!(".{CLUSTER_EXT}"))?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    let (base, end) = (a.parse().ok()?, b.parse().ok()?);
    (base > 0 && end > base).then_some((base, end))
}

/// Decodes a block through a cache: `(cache key, block, decode) -> block`.
pub type BlockLoader<'a> =
    dyn Fn(u64, usize, &dyn Fn() -> Result<DecodedBlock>) -> Result<Arc<DecodedBlock>> + Sync + 'a;

/// What a reader tells [`ClusterFile::visit_entity`] so that it can ask the disk for the
/// blocks it will read before reading the first (see `LoadedSegment::prefetch_blocks`).
pub struct ReadAhead<'a> {
    /// Records the visitor takes at most (it may stop sooner).
    pub records_max: usize,
    /// Whether block (cache key, block number) is in the block cache: not asked for.
    pub cached: &'a dyn Fn(u64, usize) -> bool,
}

/// One cluster file as readers see it; mapped on first use. Compaction marks a file obsolete
/// when a merge replaces it; the file is removed when the last reader's handle goes.
pub struct ClusterFile {
    pub base_seq: u64,
    pub end_seq: u64,
    pub level: u32,
    pub size_bytes: u64,
    pub path: PathBuf,
    cache_key: u64,
    storage: Storage,
    loaded: Mutex<Option<Arc<Loaded>>>,
    obsolete: AtomicBool,
}

struct Loaded {
    bytes: Mapped,
    header: ClusterHeader,
}

impl Loaded {
    fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    fn directory(&self) -> Result<DirectoryView<'_>, FormatError> {
        let start = self.header.directory_offset as usize;
        let dir = self.bytes().get(start..).unwrap_or_default();
        DirectoryView::slice(dir, &self.header)
    }
}

impl Drop for ClusterFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Err(e) = self.storage.remove(&self.path) {
                tracing::warn!(file = %self.path.display(), error = %e, "could not remove a compacted cluster file; the next open will");
            }
        }
    }
}

impl ClusterFile {
    pub fn new(dir: &Path, storage: &Storage, h: &ClusterHeader, size_bytes: u64) -> Self {
        ClusterFile {
            base_seq: h.base_seq,
            end_seq: h.end_seq,
            level: h.level,
            size_bytes,
            path: dir.join(cluster_name(h.base_seq, h.end_seq)),
            cache_key: crate::block_cache::unique_file_key(),
            storage: storage.clone(),
            loaded: Mutex::new(None),
            obsolete: AtomicBool::new(false),
        }
    }

    /// Reads and checks the header of the cluster file at `path`.
    pub fn read_header(storage: &Storage, path: &Path) -> Result<(ClusterHeader, u64)> {
        let f = storage.open(path, false)?;
        let len = f.size_bytes().map_err(|e| Error::io(path, e))?;
        let mut head = [0u8; CLUSTER_HEADER_LEN];
        if len < CLUSTER_HEADER_LEN as u64 {
            return Err(corrupt(
                path,
                0,
                FormatError::invalid("cluster header", "file too short"),
            ));
        }
        storage.read_at(&*f, path, &mut head, 0)?;
        let h = ClusterHeader::decode(&head, len).map_err(|e| corrupt(path, 0, e))?;
        Ok((h, len))
    }

    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    pub fn covers(&self, base_seq: u64, end_seq: u64) -> bool {
        self.base_seq <= base_seq && end_seq <= self.end_seq
    }

    /// Maps the file now (before purge unlinks it, so readers holding it keep reading).
    pub fn preload(&self) -> Result<()> {
        self.load().map(drop)
    }

    /// Maps the file and checks its directory (checksum, bounds, order, tiling) once.
    fn load(&self) -> Result<Arc<Loaded>> {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone());
        }
        let bytes = self.storage.map(&self.path)?;
        let header = {
            let all = (*bytes).as_ref();
            let header = ClusterHeader::decode(all, all.len() as u64)
                .map_err(|e| corrupt(&self.path, 0, e))?;
            let start = header.directory_offset as usize;
            // Read whole next (its checksum): asked for at once, rather than faulted in with
            // the device's read-ahead around each fault.
            bytes.advise(Advice::WillNeed(start..all.len()));
            DirectoryView::parse(all.get(start..).unwrap_or_default(), &header)
                .map_err(|e| corrupt(&self.path, header.directory_offset, e))?;
            header
        };
        let l = Arc::new(Loaded { bytes, header });
        *slot = Some(l.clone());
        Ok(l)
    }

    fn read_block(&self, l: &Loaded, b: &ClusterBlock) -> Result<DecodedBlock> {
        let at = b.offset as usize;
        let bytes = l.bytes().get(at..at + b.len as usize).ok_or_else(|| {
            Error::Inconsistent(format!("block at {at} outside {}", self.path.display()))
        })?;
        decode_cluster_block(bytes, b.count, b.first_seq, l.header.version)
            .map_err(|e| corrupt(&self.path, b.offset, e))
    }

    /// Calls `visit(seq, record)` for the entity's records in seq order (newest first with
    /// `reverse`) until it returns false, starting near `after_seq` (history's bound: forward
    /// seqs above it, reverse seqs below it, 0 for none) without reading the blocks before it.
    /// `load_block` decodes (and may cache) a block.
    pub fn visit_entity(
        &self,
        entity: &str,
        reverse: bool,
        after_seq: u64,
        ahead: &ReadAhead<'_>,
        load_block: &BlockLoader<'_>,
        visit: &mut dyn FnMut(u64, &RecordRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        let l = self.load()?;
        let dir = l
            .directory()
            .map_err(|e| corrupt(&self.path, l.header.directory_offset, e))?;
        let run = dir
            .find(entity.as_bytes())
            .map_err(|e| corrupt(&self.path, l.header.directory_offset, e))?;
        let Some(run) = run else {
            return Ok(());
        };
        let mut spans = spans_of(&dir, run).ok_or_else(|| {
            Error::Inconsistent(format!(
                "entity run outside the blocks of {}",
                self.path.display()
            ))
        })?;
        // Spans after the first start at their block's first record, whose seq the (checked)
        // block table holds: a binary search finds the span where the bound falls.
        let first_seq = |k: usize| -> u64 {
            match k {
                0 => 0,
                _ => spans
                    .get(k)
                    .and_then(|s| dir.block(s.0))
                    .map_or(u64::MAX, |b| b.first_seq),
            }
        };
        let ks: Vec<usize> = (0..spans.len()).collect();
        if after_seq != 0 {
            if reverse {
                // The last span holding a seq below the bound, and those before it.
                let keep = ks.partition_point(|k| first_seq(*k) < after_seq);
                spans.truncate(keep);
            } else {
                // The span holding the bound's successor, and those after it.
                let above = ks.partition_point(|k| first_seq(*k) <= after_seq);
                spans.drain(..above.saturating_sub(1));
            }
        }
        if reverse {
            spans.reverse();
        }
        // The spans holding the records the answer has room for: asked for from the disk
        // together, and read ahead on a second thread (read_ahead.rs) when there are enough.
        let wanted = spans_holding(&spans, ahead.records_max);
        self.prefetch(&l, &dir, spans.get(..wanted).unwrap_or_default(), ahead);
        let span = |k: usize| {
            let (block, from, n) = *spans.get(k)?;
            Some((dir.block(block)?, block, from, n))
        };
        let missing = |k: usize| {
            Error::Inconsistent(format!(
                "span {k} of an entity run missing in {}",
                self.path.display()
            ))
        };
        let load = |k: usize| -> Result<Arc<DecodedBlock>> {
            let (row, block, _, _) = span(k).ok_or_else(|| missing(k))?;
            load_block(self.cache_key, block as usize, &|| {
                self.read_block(&l, &row)
            })
        };
        pipelined(spans.len(), wanted, &load, &mut |k, d| {
            let (row, _, from, n) = span(k).ok_or_else(|| missing(k))?;
            let mut go = |i: u32| -> Result<bool> {
                let (seq, r) =
                    cluster_record(&d, i).map_err(|e| corrupt(&self.path, row.offset, e))?;
                visit(seq, &r)
            };
            if reverse {
                for i in (from..from + n).rev() {
                    if !go(i)? {
                        return Ok(false);
                    }
                }
            } else {
                for i in from..from + n {
                    if !go(i)? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })
    }
}

impl ClusterFile {
    /// Asks the disk, at once, for the blocks of `spans` that are not cached; adjacent
    /// blocks in one call.
    fn prefetch(
        &self,
        l: &Loaded,
        dir: &DirectoryView<'_>,
        spans: &[(u32, u32, u32)],
        ahead: &ReadAhead<'_>,
    ) {
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for &(block, _, _) in spans {
            if (ahead.cached)(self.cache_key, block as usize) {
                continue;
            }
            let Some(b) = dir.block(block) else {
                continue;
            };
            let (start, end) = (b.offset as usize, b.offset as usize + b.len as usize);
            match runs.last_mut() {
                Some(r) if r.end == start => r.end = end,
                Some(r) if end == r.start => r.start = start,
                _ => runs.push(start..end),
            }
        }
        for r in runs {
            l.bytes.advise(Advice::WillNeed(r));
        }
    }
}

fn corrupt(path: &Path, offset: u64, source: FormatError) -> Error {
    Error::Corruption {
        file: path.to_path_buf(),
        offset,
        source,
    }
}

/// How many of `spans` (in visiting order) it takes to hold the first `records_max` records:
/// every span that starts before that many records have gone by.
fn spans_holding(spans: &[(u32, u32, u32)], records_max: usize) -> usize {
    let mut records = 0usize;
    spans
        .iter()
        .take_while(|(_, _, n)| {
            let before = records;
            records = records.saturating_add(*n as usize);
            before < records_max
        })
        .count()
}

/// The (block, first record, count) pieces of an entity's run.
fn spans_of(dir: &DirectoryView<'_>, run: EntityRun) -> Option<Vec<(u32, u32, u32)>> {
    let (mut block, mut from, mut left) = (run.first_block, run.first_record, run.count);
    let mut out = Vec::new();
    while left > 0 {
        let b = dir.block(block)?;
        let n = b.count.checked_sub(from)?.min(left);
        if n == 0 {
            return None;
        }
        out.push((block, from, n));
        left -= n;
        block += 1;
        from = 0;
    }
    Some(out)
}

/// A decoded cluster block of a file of format `version`: `raw` is the whole body (the seq
/// column, then the records), `offsets` point at the records within it, `seqs` are theirs.
pub fn decode_cluster_block(
    bytes: &[u8],
    count: u32,
    first_seq: u64,
    version: u32,
) -> Result<DecodedBlock, FormatError> {
    let (h, body) = decode_block(bytes)?;
    if h.count != count || h.first_seq != first_seq {
        return Err(FormatError::invalid(
            "cluster block",
            format!(
                "holds {} records from seq {}, the directory says {count} from {first_seq}",
                h.count, h.first_seq
            ),
        ));
    }
    let raw = decompress_body(&h, body)?;
    let (seqs, records) = split_cluster_body(&raw, count, first_seq, version)?;
    let seq_bytes = (raw.len() - records.len()) as u32;
    let offsets = record_offsets(records, count)?
        .into_iter()
        .map(|o| o + seq_bytes)
        .collect();
    Ok(DecodedBlock {
        first_seq: h.first_seq,
        raw,
        offsets,
        seqs,
    })
}

fn cluster_record(d: &DecodedBlock, i: u32) -> Result<(u64, RecordRef<'_>), FormatError> {
    let seq = *d
        .seqs
        .get(i as usize)
        .ok_or(FormatError::invalid("cluster block", "seq column"))?;
    let off = *d
        .offsets
        .get(i as usize)
        .ok_or(FormatError::invalid("cluster block", "record index"))?;
    Ok((seq, record_at(&d.raw, off)?))
}

/// Where record `i`'s encoded bytes are in `d.raw`: from its offset to the next record's (or
/// the body's end).
fn record_span(d: &DecodedBlock, i: u32) -> std::ops::Range<usize> {
    let start = d.offsets.get(i as usize).copied().unwrap_or(0) as usize;
    let end = d
        .offsets
        .get(i as usize + 1)
        .map_or(d.raw.len(), |o| *o as usize);
    start..end
}

/// Writes one cluster file: records pushed in (entity, seq) order go into blocks of about
/// `block_raw_bytes_target`; `finish` adds the directory and header, fdatasyncs, renames the
/// temp file into place and fsyncs the directory. Dropping it unfinished removes the temp file.
pub struct ClusterWriter {
    storage: Storage,
    tmp: PathBuf,
    path: PathBuf,
    dir_path: PathBuf,
    file: Arc<dyn FileHandle>,
    offset: u64,
    pending: Vec<u8>,
    directory: DirectoryBuilder,
    block_raw_bytes_target: usize,
    seqs: Vec<u64>,
    records: Vec<u8>,
    min_ts: i64,
    max_ts: i64,
    entity: Vec<u8>,
    /// The current entity's newest seq: seqs ascend within an entity.
    last_seq: u64,
    /// Records of the current entity so far (none before the first record).
    run: Option<u32>,
    record_count: u64,
    compressor: zstd::bulk::Compressor<'static>,
    header: ClusterHeader,
    done: bool,
    /// Bytes written so far, for throttling and stats.
    pub bytes_written: u64,
}

/// Output is written in pieces of this size.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

impl ClusterWriter {
    pub fn create(
        storage: &Storage,
        dir: &Path,
        base_seq: u64,
        end_seq: u64,
        level: u32,
        block_raw_bytes_target: usize,
        zstd_level: i32,
    ) -> Result<Self> {
        let path = dir.join(cluster_name(base_seq, end_seq));
        let tmp = temp_path(&path);
        let file = storage.create(&tmp)?;
        let compressor = zstd::bulk::Compressor::new(zstd_level).map_err(|e| Error::io(&tmp, e))?;
        Ok(ClusterWriter {
            storage: storage.clone(),
            tmp,
            path,
            dir_path: dir.to_path_buf(),
            file,
            offset: CLUSTER_HEADER_LEN as u64,
            pending: Vec::with_capacity(WRITE_CHUNK_BYTES),
            directory: DirectoryBuilder::default(),
            block_raw_bytes_target,
            seqs: Vec::new(),
            records: Vec::new(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            entity: Vec::new(),
            last_seq: 0,
            run: None,
            record_count: 0,
            compressor,
            header: ClusterHeader {
                version: echolog_format::FORMAT_VERSION,
                base_seq,
                end_seq,
                record_count: 0,
                level,
                block_count: 0,
                directory_offset: 0,
                directory_len: 0,
            },
            done: false,
            bytes_written: 0,
        })
    }

    /// Adds one record (its encoded bytes, as in a segment block).
    /// Records come from files on disk (a segment, or cluster files being merged), so order
    /// and range are checked here rather than assumed: a violation is an error naming the
    /// file being written, never a panic or a misordered file.
    pub fn push(&mut self, entity: &[u8], seq: u64, ts: i64, record: &[u8]) -> Result<()> {
        if !(self.header.base_seq..self.header.end_seq).contains(&seq) {
            return Err(Error::Inconsistent(format!(
                "{}: seq {seq} is outside the file's range {}..{}",
                self.path.display(),
                self.header.base_seq,
                self.header.end_seq
            )));
        }
        self.enter_entity(entity)?;
        if seq <= self.last_seq {
            return Err(Error::Inconsistent(format!(
                "{}: seq {seq} after {} within one entity",
                self.path.display(),
                self.last_seq
            )));
        }
        self.last_seq = seq;
        self.grow_run(1)?;
        self.seqs.push(seq);
        self.records.extend_from_slice(record);
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.record_count += 1;
        if self.records.len() + self.seqs.len() * 8 >= self.block_raw_bytes_target
            || self.seqs.len() as u32 >= echolog_format::limits::BLOCK_RECORDS_MAX
        {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Starts `entity`'s run unless it is the current one; entities must ascend.
    fn enter_entity(&mut self, entity: &[u8]) -> Result<()> {
        if self.run.is_some() && entity == self.entity.as_slice() {
            return Ok(());
        }
        if self.run.is_some() && entity < self.entity.as_slice() {
            return Err(Error::Inconsistent(format!(
                "{}: records arrive out of entity order",
                self.path.display()
            )));
        }
        self.end_entity();
        self.entity.clear();
        self.entity.extend_from_slice(entity);
        self.last_seq = 0;
        self.run = Some(0);
        Ok(())
    }

    /// Adds a whole block of `entity`'s records as it is, without decompressing it: a merge
    /// copying a block of an input that holds nothing but part of one entity's run. `bytes`
    /// is the block (header and body, checksum checked by [`checked_block`]) and `row` its
    /// row in the input's block table. The block being filled is flushed first, so blocks
    /// stay in record order. The copied block's seqs are not decoded: its first seq must
    /// follow the entity's last one, and the next record must follow its first seq plus its
    /// count (a lower bound of its last seq; the input checked the order within the block
    /// when it wrote it).
    pub fn push_block_copy(
        &mut self,
        entity: &[u8],
        bytes: &[u8],
        row: ClusterBlock,
    ) -> Result<()> {
        let last_seq_min = row
            .first_seq
            .checked_add(u64::from(row.count.saturating_sub(1)))
            .filter(|_| row.count > 0 && bytes.len() == row.len as usize);
        let Some(last_seq_min) = last_seq_min.filter(|l| {
            (self.header.base_seq..self.header.end_seq).contains(&row.first_seq)
                && *l < self.header.end_seq
        }) else {
            return Err(Error::Inconsistent(format!(
                "{}: a copied block of {} records from seq {} ({} bytes, {} in its row) does not fit the file's range {}..{}",
                self.path.display(),
                row.count,
                row.first_seq,
                bytes.len(),
                row.len,
                self.header.base_seq,
                self.header.end_seq
            )));
        };
        self.enter_entity(entity)?;
        if row.first_seq <= self.last_seq {
            return Err(Error::Inconsistent(format!(
                "{}: a copied block from seq {} after {} within one entity",
                self.path.display(),
                row.first_seq,
                self.last_seq
            )));
        }
        self.flush_block()?;
        self.pending.extend_from_slice(bytes);
        self.directory.push_block(ClusterBlock {
            offset: self.offset,
            ..row
        });
        self.offset += bytes.len() as u64;
        self.last_seq = last_seq_min;
        self.grow_run(row.count)?;
        self.record_count += u64::from(row.count);
        if self.pending.len() >= WRITE_CHUNK_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Counts `records` more in the current entity's run (a directory entry counts in u32).
    fn grow_run(&mut self, records: u32) -> Result<()> {
        let Some(r) = self.run.as_mut() else {
            return Ok(());
        };
        *r = r.checked_add(records).ok_or_else(|| {
            Error::Inconsistent(format!(
                "{}: one entity's run passes {} records in one file",
                self.path.display(),
                u32::MAX
            ))
        })?;
        Ok(())
    }

    fn end_entity(&mut self) {
        if let Some(count) = self.run.take() {
            self.directory.push_entity(&self.entity, count);
        }
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        let mut raw = Vec::with_capacity(self.seqs.len() * 8 + self.records.len());
        encode_cluster_body(&mut raw, &self.seqs, &self.records);
        let meta = BlockMeta {
            first_seq: self.seqs[0],
            count: self.seqs.len() as u32,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            flags: 0,
        };
        let start = self.pending.len();
        let len = echolog_format::block::encode_block(
            &mut self.pending,
            meta,
            &raw,
            Some(&mut self.compressor),
        );
        debug_assert_eq!(self.pending.len() - start, len);
        self.directory.push_block(ClusterBlock {
            offset: self.offset,
            len: len as u32,
            count: self.seqs.len() as u32,
            first_seq: self.seqs[0],
        });
        self.offset += len as u64;
        self.seqs.clear();
        self.records.clear();
        self.min_ts = i64::MAX;
        self.max_ts = i64::MIN;
        if self.pending.len() >= WRITE_CHUNK_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        let at = self.offset - self.pending.len() as u64;
        self.storage
            .write_derived(&*self.file, &self.tmp, &self.pending, at)?;
        self.bytes_written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Finishes the file and puts it in place durably. Returns its header and size.
    pub fn finish(mut self) -> Result<(ClusterHeader, u64)> {
        self.flush_block()?;
        self.end_entity();
        self.write_pending()?;
        let directory = std::mem::take(&mut self.directory);
        self.header.block_count = directory.block_count();
        let dir_bytes = directory.finish();
        self.header.record_count = self.record_count;
        self.header.directory_offset = self.offset;
        self.header.directory_len = dir_bytes.len() as u64;
        self.pending = dir_bytes;
        self.offset += self.pending.len() as u64;
        self.write_pending()?;
        let head = self.header.encode();
        self.storage
            .write_derived(&*self.file, &self.tmp, &head, 0)?;
        self.bytes_written += head.len() as u64;
        // Durable before it has its name: a power loss after the rename finds it whole.
        self.storage.sync_derived(&*self.file, &self.tmp)?;
        self.storage.rename_derived(&self.tmp, &self.path)?;
        self.done = true;
        // The directory holds the store's own files too: a failed fsync of it makes the store
        // read-only, as everywhere else.
        self.storage.sync_dir(&self.dir_path)?;
        Ok((self.header, self.offset))
    }
}

impl Drop for ClusterWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.storage.remove(&self.tmp);
        }
    }
}

/// Reads a cluster file's records one after the other in file order (for `verify`).
pub struct ClusterCursor {
    file: Arc<ClusterFile>,
    loaded: Arc<Loaded>,
    next_block: u32,
    block: Option<DecodedBlock>,
    /// File offset of `block`, for errors.
    block_offset: u64,
    /// Index of the next record of `block` to move to.
    next_record: u32,
    /// The current record: seq, ts, and where its entity and bytes are in `block`.
    current: Option<(u64, i64, std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl ClusterCursor {
    pub fn open(file: Arc<ClusterFile>) -> Result<Self> {
        let loaded = file.load()?;
        Ok(ClusterCursor {
            file,
            loaded,
            next_block: 0,
            block: None,
            block_offset: 0,
            next_record: 0,
            current: None,
        })
    }

    /// Moves to the next record; false (and no current record) past the last one.
    pub fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some(d) = self.block.as_ref() {
                if self.next_record < d.count() {
                    let i = self.next_record;
                    self.next_record += 1;
                    let (seq, r) = cluster_record(d, i)
                        .map_err(|e| corrupt(&self.file.path, self.block_offset, e))?;
                    let base = d.raw.as_ptr() as usize;
                    let at = r.entity.as_ptr() as usize - base;
                    self.current = Some((seq, r.ts, at..at + r.entity.len(), record_span(d, i)));
                    return Ok(true);
                }
            }
            let dir = self
                .loaded
                .directory()
                .map_err(|e| corrupt(&self.file.path, self.loaded.header.directory_offset, e))?;
            let Some(row) = dir.block(self.next_block) else {
                self.block = None;
                self.current = None;
                return Ok(false);
            };
            self.next_block += 1;
            self.block_offset = row.offset;
            self.block = Some(self.file.read_block(&self.loaded, &row)?);
            self.next_record = 0;
        }
    }

    /// The current record: entity, seq, ts and its encoded bytes.
    pub fn current(&self) -> Option<(&[u8], u64, i64, &[u8])> {
        let (seq, ts, e, b) = self.current.as_ref()?;
        let raw = &self.block.as_ref()?.raw;
        Some((raw.get(e.clone())?, *seq, *ts, raw.get(b.clone())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;
    use crate::storage::StorageBackend;

    #[test]
    fn the_spans_holding_the_first_records_are_those_that_start_before_them() {
        let spans = [(0, 5, 3), (1, 0, 4), (2, 0, 4), (3, 0, 2)];
        assert_eq!(spans_holding(&spans, 0), 0);
        assert_eq!(spans_holding(&spans, 1), 1);
        assert_eq!(spans_holding(&spans, 3), 1);
        assert_eq!(spans_holding(&spans, 4), 2);
        assert_eq!(spans_holding(&spans, 11), 3);
        assert_eq!(spans_holding(&spans, 12), 4);
        assert_eq!(spans_holding(&spans, usize::MAX), 4);
    }

    fn record(entity: &str) -> Vec<u8> {
        let mut out = Vec::new();
        echolog_format::record::encode_record::<&str>(&mut out, entity, "k", 1, &[], b"{}", "");
        out
    }

    fn writer() -> (SimDisk, ClusterWriter) {
        let disk = SimDisk::new();
        let dir = PathBuf::from("/d");
        disk.create_dir_all(&dir).unwrap();
        let storage = Storage::new(Some(&disk.backend()), None);
        let w = ClusterWriter::create(&storage, &dir, 10, 20, 0, 1024, 1).unwrap();
        (disk, w)
    }

    #[test]
    fn records_out_of_order_or_range_are_errors_and_leave_no_file() {
        let (disk, mut w) = writer();
        w.push(b"b", 11, 1, &record("b")).unwrap();
        assert!(w.push(b"a", 12, 1, &record("a")).is_err(), "entity order");
        assert!(
            w.push(b"b", 11, 1, &record("b")).is_err(),
            "seqs ascend within an entity"
        );
        assert!(
            w.push(b"c", 20, 1, &record("c")).is_err(),
            "end_seq is exclusive"
        );
        assert!(w.push(b"c", 9, 1, &record("c")).is_err(), "below base_seq");
        drop(w);
        assert!(
            disk.files(Path::new("/d")).is_empty(),
            "the temp file is gone"
        );
    }

    /// A block copied whole must fit the file as a record would: in range, after the
    /// entity's last seq, entities ascending, its row matching its bytes.
    #[test]
    fn copied_blocks_out_of_order_or_range_are_errors_and_leave_no_file() {
        let (disk, mut w) = writer();
        let row = |first_seq, count, len| ClusterBlock {
            offset: 0,
            len,
            count,
            first_seq,
        };
        let bytes = vec![0u8; 64];
        w.push(b"b", 12, 1, &record("b")).unwrap();
        assert!(
            w.push_block_copy(b"b", &bytes, row(12, 2, 64)).is_err(),
            "seqs ascend"
        );
        assert!(
            w.push_block_copy(b"a", &bytes, row(13, 2, 64)).is_err(),
            "entity order"
        );
        assert!(
            w.push_block_copy(b"c", &bytes, row(19, 2, 64)).is_err(),
            "past end_seq"
        );
        assert!(
            w.push_block_copy(b"c", &bytes, row(9, 2, 64)).is_err(),
            "below base_seq"
        );
        assert!(
            w.push_block_copy(b"c", &bytes, row(13, 2, 65)).is_err(),
            "row and bytes"
        );
        assert!(
            w.push_block_copy(b"c", &bytes, row(13, 0, 64)).is_err(),
            "no records"
        );
        // After a copied block of seqs 13 and up (two records), the entity goes on above 14.
        w.push_block_copy(b"c", &bytes, row(13, 2, 64)).unwrap();
        assert!(
            w.push(b"c", 14, 1, &record("c")).is_err(),
            "inside the copied block"
        );
        w.push(b"c", 15, 1, &record("c")).unwrap();
        drop(w);
        assert!(
            disk.files(Path::new("/d")).is_empty(),
            "the temp file is gone"
        );
    }

    #[test]
    fn a_finished_file_reads_back_by_entity_in_both_directions() {
        let (disk, mut w) = writer();
        for (e, s) in [
            ("a", 12),
            ("a", 15),
            ("b", 10),
            ("c", 11),
            ("c", 13),
            ("c", 19),
        ] {
            w.push(e.as_bytes(), s, 1, &record(e)).unwrap();
        }
        let (h, len) = w.finish().unwrap();
        assert_eq!(disk.files(Path::new("/d")), vec![cluster_name(10, 20)]);
        let storage = Storage::new(Some(&disk.backend()), None);
        let f = ClusterFile::new(Path::new("/d"), &storage, &h, len);
        let seqs = |entity: &str, reverse: bool, after: u64| {
            let mut out = Vec::new();
            let load: &BlockLoader<'_> = &|_, _, decode| decode().map(Arc::new);
            let ahead = ReadAhead {
                records_max: usize::MAX,
                cached: &|_, _| false,
            };
            f.visit_entity(entity, reverse, after, &ahead, load, &mut |seq, r| {
                assert_eq!(r.entity, entity);
                out.push(seq);
                Ok(true)
            })
            .unwrap();
            out
        };
        assert_eq!(seqs("c", false, 0), vec![11, 13, 19]);
        assert_eq!(seqs("c", true, 0), vec![19, 13, 11]);
        assert_eq!(seqs("a", false, 0), vec![12, 15]);
        assert!(seqs("zz", false, 0).is_empty());
    }
}
