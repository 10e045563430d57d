use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use echolog_format::index::ids_section_signature;
use echolog_format::segment_header::{SegmentHeader, SEGMENT_HEADER_LEN};
use echolog_format::FormatError;

use super::index::{check_index_bytes, rebuild, Expected, IndexBytes, IndexParts, RebuildAt};
use super::loaded::{LoadedSegment, SegBytes};
use crate::dir::{index_name, segment_name};
use crate::error::{Error, Result};
use crate::storage::{FileHandle, Storage};

/// Bytes `read_summary` reads from the start of an index: a page holds the header, a table of
/// up to 64 sections (1.5 KiB) and, in version 6 files, the summary section after it.
const SUMMARY_READ_BYTES: u64 = 4096;

/// A sealed segment: immutable data file plus index file, loaded on first use so that opening
/// the store reads none of it.
pub struct SealedSegment {
    pub base_seq: u64,
    /// One past the last seq (the next segment's base).
    pub end_seq: u64,
    dir: PathBuf,
    storage: Storage,
    /// The loaded segment, or the corruption that stopped it loading. A passing I/O error
    /// (EMFILE, a failed map) is not kept: the next reader tries again.
    loaded: Mutex<Option<Result<Arc<LoadedSegment>, Arc<Error>>>>,
    /// (disk bytes of segment and index, decompressed record bytes), once known.
    summary: OnceLock<(u64, u64)>,
    /// (min_ts, max_ts) of the records, once known.
    ts_bounds: OnceLock<(i64, i64)>,
    cache_key: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SharedError(pub Arc<Error>);

impl SealedSegment {
    pub fn new(dir: &Path, storage: &Storage, base_seq: u64, end_seq: u64) -> Self {
        SealedSegment {
            base_seq,
            end_seq,
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            loaded: Mutex::new(None),
            summary: OnceLock::new(),
            ts_bounds: OnceLock::new(),
            cache_key: base_seq,
        }
    }

    /// The segment after purge rewrote its files: a new object, whose blocks are cached
    /// under a new key (readers of older snapshots keep the old object and its mappings).
    pub fn rewritten(dir: &Path, storage: &Storage, base_seq: u64, end_seq: u64) -> Self {
        SealedSegment {
            cache_key: crate::block_cache::unique_file_key(),
            ..SealedSegment::new(dir, storage, base_seq, end_seq)
        }
    }

    pub fn seg_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.base_seq))
    }

    pub fn idx_path(&self) -> PathBuf {
        self.dir.join(index_name(self.base_seq))
    }

    /// Bytes on disk (segment and index) and decompressed record bytes, for `Stats`. Read
    /// from the index's summary section and the files' sizes, a few small reads, without
    /// mapping or checksumming the whole index; an index without the section (written before
    /// format version 3) is loaded instead.
    pub fn summary(&self) -> Result<(u64, u64)> {
        if let Some(s) = self.summary.get() {
            return Ok(*s);
        }
        let loaded = self.loaded_if_any();
        let s = match loaded {
            Some(l) => (l.disk_bytes(), l.raw_bytes()),
            None => match self.read_summary()? {
                Some(s) => s,
                None => {
                    let l = self.load()?;
                    (l.disk_bytes(), l.raw_bytes())
                }
            },
        };
        Ok(*self.summary.get_or_init(|| s))
    }

    fn read_summary(&self) -> Result<Option<(u64, u64)>> {
        use echolog_format::index::{
            decode_summary, section_count, section_table, INDEX_HEADER_LEN, SECTION_ENTRY_LEN,
            SECTION_SUMMARY,
        };
        let idx_path = self.idx_path();
        let corrupt = |source| Error::Corruption {
            file: idx_path.clone(),
            offset: 0,
            source,
        };
        let (idx, idx_len, head) = self.read_index_head()?;
        if head.len() < INDEX_HEADER_LEN {
            return Ok(None);
        }
        let n = section_count(&head).map_err(corrupt)?;
        let table_len = n as usize * SECTION_ENTRY_LEN + 4;
        let Some(table) = head.get(INDEX_HEADER_LEN..INDEX_HEADER_LEN + table_len) else {
            return Ok(None);
        };
        let rows = section_table(table, n).map_err(corrupt)?;
        let Some(row) = rows.iter().find(|r| r.id == SECTION_SUMMARY && r.len == 8) else {
            return Ok(None);
        };
        if row.offset.checked_add(8).is_none_or(|end| end > idx_len) {
            return Ok(None);
        }
        let at = row.offset as usize;
        let raw: [u8; 8] = match head.get(at..at + 8) {
            Some(b) => b.try_into().unwrap_or_default(),
            None => {
                let mut raw = [0u8; 8];
                self.storage
                    .read_at(&*idx, &idx_path, &mut raw, row.offset)?;
                raw
            }
        };
        let raw_bytes = decode_summary(&raw, row).map_err(corrupt)?;
        let seg_path = self.seg_path();
        let seg = self.storage.open(&seg_path, false)?;
        let seg_len = seg.size_bytes().map_err(|e| Error::io(&seg_path, e))?;
        Ok(Some((seg_len + idx_len, raw_bytes)))
    }

    /// The index file, its length and its first page. One read of that page holds the header,
    /// the section table and, since version 6 (which writes the summary first), the summary
    /// too: one disk read per segment when cold.
    fn read_index_head(&self) -> Result<(Arc<dyn FileHandle>, u64, Vec<u8>)> {
        let idx_path = self.idx_path();
        let idx = self.storage.open(&idx_path, false)?;
        let idx_len = idx.size_bytes().map_err(|e| Error::io(&idx_path, e))?;
        let mut head = vec![0u8; idx_len.min(SUMMARY_READ_BYTES) as usize];
        self.storage.read_at(&*idx, &idx_path, &mut head, 0)?;
        Ok((idx, idx_len, head))
    }

    /// Length and CRC32 of the ids section, from the index's header and section table (one
    /// small read; nothing is mapped): what the saved id filter is checked against.
    pub fn ids_signature(&self) -> Result<(u64, u32)> {
        let (_, _, head) = self.read_index_head()?;
        ids_section_signature(&head).map_err(|source| Error::Corruption {
            file: self.idx_path(),
            offset: 0,
            source,
        })
    }

    /// (min_ts, max_ts) of the segment's records from its index header (one small read, then
    /// cached), so a count can pass over a segment outside its range without mapping and
    /// checksumming its index. `None` when the header cannot tell (unreadable, damaged, or not
    /// this segment's): the caller loads the segment, which rebuilds such an index.
    pub fn ts_bounds(&self) -> Option<(i64, i64)> {
        if let Some(b) = self.ts_bounds.get() {
            return Some(*b);
        }
        let loaded = self.loaded_if_any();
        if let Some(l) = loaded {
            // Already mapped: its checked header answers without a read.
            let h = l.header;
            return Some(*self.ts_bounds.get_or_init(|| (h.min_ts, h.max_ts)));
        }
        let (_, _, head) = self.read_index_head().ok()?;
        let h = echolog_format::index::decode_index_header(&head).ok()?;
        let describes = h.base_seq == self.base_seq
            && u64::from(h.record_count) == self.end_seq - self.base_seq;
        describes.then(|| *self.ts_bounds.get_or_init(|| (h.min_ts, h.max_ts)))
    }

    /// The loaded segment, if a reader loaded it already (nothing is read here).
    pub fn loaded_if_any(&self) -> Option<Arc<LoadedSegment>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|r| r.as_ref().ok().cloned())
    }

    /// Whether `summary` would answer without reading a file.
    pub fn summary_cached(&self) -> bool {
        self.summary.get().is_some()
    }

    /// Maps the segment and its index, checking the index's header, section table and block
    /// table (once; the other sections are checked when first read).
    pub fn load(&self) -> Result<Arc<LoadedSegment>> {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = slot.as_ref() {
            return match r {
                Ok(l) => Ok(l.clone()),
                Err(e) => Err(Error::Shared(SharedError(e.clone()))),
            };
        }
        match self.load_inner() {
            Ok(l) => {
                let l = Arc::new(l);
                *slot = Some(Ok(l.clone()));
                Ok(l)
            }
            Err(e) if is_confirmed_damage(&e) => {
                let e = Arc::new(e);
                *slot = Some(Err(e.clone()));
                Err(Error::Shared(SharedError(e)))
            }
            Err(e) => Err(e),
        }
    }

    fn load_inner(&self) -> Result<LoadedSegment> {
        let seg_path = self.seg_path();
        let idx_path = self.idx_path();
        let seg = SegBytes(self.storage.map(&seg_path)?);
        self.check_segment_header(&seg_path)?;
        let expect = self.expected(seg.len() as u64);
        let index = match self.storage.map(&idx_path) {
            Ok(m) => match IndexParts::locate(IndexBytes::Mapped(m), expect) {
                Ok(located) => Some(located),
                Err(e) => {
                    tracing::warn!(file = %idx_path.display(), error = %e, "index file is corrupt; rebuilding it from its segment");
                    None
                }
            },
            // Only a missing index is rebuilt; a passing error (EMFILE, a failed map) is
            // returned and the next reader tries again.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %idx_path.display(), "index file is missing; rebuilding it from its segment");
                None
            }
            Err(e) => return Err(e),
        };
        let index = match index {
            Some(located) => located,
            None => {
                let at = RebuildAt {
                    storage: &self.storage,
                    dir: &self.dir,
                    seg_path: &seg_path,
                    idx_path: &idx_path,
                };
                rebuild(&at, &seg, expect)?
            }
        };
        Ok(LoadedSegment::new(
            (seg_path, idx_path),
            self.cache_key,
            seg,
            index,
        ))
    }

    /// Checks the segment file's header with one small read, not through the map: a fault on
    /// a cold mapped page reads ahead as far as the device's read-ahead (8 MiB on our benchmark
    /// disk), and a count that reads no block would pay that for every segment.
    fn check_segment_header(&self, seg_path: &Path) -> Result<()> {
        let f = self.storage.open(seg_path, false)?;
        let len = f.size_bytes().map_err(|e| Error::io(seg_path, e))?;
        let mut head = vec![0u8; len.min(SEGMENT_HEADER_LEN as u64) as usize];
        self.storage.read_at(&*f, seg_path, &mut head, 0)?;
        SegmentHeader::decode(&head)
            .map(drop)
            .map_err(|source| Error::Corruption {
                file: seg_path.to_path_buf(),
                offset: 0,
                source,
            })
    }

    /// What this segment's index must say of it.
    fn expected(&self, segment_len: u64) -> Expected {
        Expected {
            base_seq: self.base_seq,
            end_seq: self.end_seq,
            segment_len,
        }
    }

    /// Checks index file bytes against this segment, every section (for `verify`).
    pub fn check_index_bytes(&self, bytes: &[u8], seg_len: u64) -> Result<(), FormatError> {
        check_index_bytes(bytes, self.expected(seg_len))
    }
}

/// Damage that stays damage: worth remembering, unlike an I/O error that may pass.
fn is_confirmed_damage(e: &Error) -> bool {
    matches!(e, Error::Corruption { .. } | Error::Inconsistent(_))
}
