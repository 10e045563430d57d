//! A sealed segment's index file as a reader holds it: what is checked when the segment is
//! loaded (header, section table, block table: the first pages of the file), and each other
//! section checked against its CRC32 the first time a reader asks for it.
//!
//! Why lazily: a count that the per-tag hourly counts answer reads one small section per
//! segment; checking every section at load read the whole index (about 20 MB per full
//! segment, all of them for a count over the whole store) before the first answer.
//!
//! A section that fails its check is not served: the caller rebuilds the index from its
//! segment and keeps it in memory (`rebuild_in_memory`); a load that finds its index missing
//! or damaged rebuilds it and writes it in place (`rebuild`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use echolog_format::index::{
    decode_block_table, BlockEntry, IndexHeader, IndexView, LocatedSection,
    COMPACT_INDEX_VERSION_MIN, SECTION_BLOCKS, SECTION_TS,
};
use echolog_format::ts_column::TsColumn;
use echolog_format::FormatError;

use crate::dir::{index_name, write_atomic};
use crate::error::{Error, Result};
use crate::scan::scan_segment;
use crate::storage::{Advice, Mapped, Storage};

/// Bytes of an index file: mapped, or held in memory after a rebuild whose write failed.
pub(super) enum IndexBytes {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

impl IndexBytes {
    /// A read-pattern hint for the page cache (nothing for bytes in memory).
    fn advise(&self, advice: Advice) {
        if let IndexBytes::Mapped(m) = self {
            m.advise(advice);
        }
    }
}

impl std::ops::Deref for IndexBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IndexBytes::Mapped(m) => (**m).as_ref(),
            IndexBytes::Owned(v) => v,
        }
    }
}

/// What a sealed segment's index says of the segment (checked at load, never changes: a
/// rebuilt index must say the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexFacts {
    pub header: IndexHeader,
    pub blocks: Vec<BlockEntry>,
}

/// The segment a loaded index must describe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected {
    pub base_seq: u64,
    pub end_seq: u64,
    pub segment_len: u64,
}

/// An index file's bytes and where its sections are.
pub(super) struct IndexParts {
    pub bytes: IndexBytes,
    /// The file's format version: since version 6 the ts column is packed and dictionary
    /// values are tagged posting lists.
    pub version: u32,
    sections: Vec<LazySection>,
}

struct LazySection {
    at: LocatedSection,
    /// Set once the bytes matched their CRC32 (and, for the ts column, its frames parsed).
    checked: AtomicBool,
}

impl IndexParts {
    /// Checks what every read needs (header against `expect`, section table, block table)
    /// and locates the other sections without reading them.
    pub fn locate(bytes: IndexBytes, expect: Expected) -> Result<(Self, IndexFacts), FormatError> {
        // Lookups in an index touch a few pages here and there; a section is read whole only
        // to check it, and `check` asks for it whole first.
        bytes.advise(Advice::Random);
        let (facts, version, located) =
            locate_checked(&bytes, expect, |r| bytes.advise(Advice::WillNeed(r)))?;
        let sections = located
            .into_iter()
            .map(|at| LazySection {
                checked: AtomicBool::new(at.id == SECTION_BLOCKS),
                at,
            })
            .collect();
        let parts = IndexParts {
            bytes,
            version,
            sections,
        };
        Ok((parts, facts))
    }

    /// Like `locate`, then checks every section now (a rebuilt index, `verify`).
    pub fn check_all(
        bytes: IndexBytes,
        expect: Expected,
    ) -> Result<(Self, IndexFacts), FormatError> {
        let (parts, facts) = Self::locate(bytes, expect)?;
        for s in &parts.sections {
            parts.check(s, &facts.header)?;
        }
        Ok((parts, facts))
    }

    pub fn has_section(&self, id: u32) -> bool {
        self.sections.iter().any(|s| s.at.id == id)
    }

    /// The section's bytes, checked (once); an empty slice when the file has no such section.
    pub fn section(&self, id: u32, header: &IndexHeader) -> Result<&[u8], FormatError> {
        match self.sections.iter().find(|s| s.at.id == id) {
            None => Ok(&[]),
            Some(s) => self.check(s, header),
        }
    }

    fn check(&self, s: &LazySection, header: &IndexHeader) -> Result<&[u8], FormatError> {
        let bytes = self.bytes.get(s.at.range.clone()).unwrap_or_default();
        if s.checked.load(Ordering::Acquire) {
            return Ok(bytes);
        }
        self.bytes.advise(Advice::WillNeed(s.at.range.clone()));
        check_section(&self.bytes, &s.at, self.version, header)?;
        s.checked.store(true, Ordering::Release);
        Ok(bytes)
    }
}

/// Header against the segment, section table, section bounds and the block table: the
/// checks a load makes before serving anything.
fn locate_checked(
    bytes: &[u8],
    expect: Expected,
    will_read: impl Fn(std::ops::Range<usize>),
) -> Result<(IndexFacts, u32, Vec<LocatedSection>), FormatError> {
    let view = IndexView::locate(bytes)?;
    let h = view.header;
    let expect_count = expect.end_seq.saturating_sub(expect.base_seq);
    if h.base_seq != expect.base_seq
        || u64::from(h.record_count) != expect_count
        || h.segment_len != expect.segment_len
    {
        return Err(FormatError::Invalid {
            what: "index header",
            reason: format!(
                "describes base {} with {} records over {} bytes; the segment has base {} with {} records over {} bytes",
                h.base_seq, h.record_count, h.segment_len, expect.base_seq, expect_count, expect.segment_len
            ),
        });
    }
    let blocks_at = view.sections().iter().find(|s| s.id == SECTION_BLOCKS);
    let blocks = match blocks_at {
        Some(at) => {
            will_read(at.range.clone());
            decode_block_table(at.checked(bytes)?, &h)?
        }
        None => decode_block_table(&[], &h)?,
    };
    let facts = IndexFacts { header: h, blocks };
    Ok((facts, view.version, view.sections().to_vec()))
}

/// The ts column's shape: whole frames since version 6, one i64 per record before.
fn check_ts(ts: &[u8], version: u32, h: &IndexHeader) -> Result<(), FormatError> {
    if version >= COMPACT_INDEX_VERSION_MIN {
        TsColumn::parse(ts, h.record_count, h.min_ts, h.max_ts).map(drop)
    } else if ts.len() != h.record_count as usize * 8 {
        Err(FormatError::Invalid {
            what: "index ts column",
            reason: "length does not match record_count".into(),
        })
    } else {
        Ok(())
    }
}

/// Every check of an index file against its segment (for `verify`).
pub(super) fn check_index_bytes(bytes: &[u8], expect: Expected) -> Result<(), FormatError> {
    let (facts, version, located) = locate_checked(bytes, expect, |_| ())?;
    for at in &located {
        check_section(bytes, at, version, &facts.header)?;
    }
    Ok(())
}

/// Section `at` of index `bytes` against its CRC32, and the ts column's frames too: the check
/// a section passes before any read uses it.
fn check_section<'a>(
    bytes: &'a [u8],
    at: &LocatedSection,
    version: u32,
    header: &IndexHeader,
) -> Result<&'a [u8], FormatError> {
    let b = at.checked(bytes)?;
    if at.id == SECTION_TS {
        check_ts(b, version, header)?;
    }
    Ok(b)
}

/// Where a rebuild reads the segment and writes the new index.
pub(super) struct RebuildAt<'a> {
    pub storage: &'a Storage,
    pub dir: &'a Path,
    pub seg_path: &'a Path,
    pub idx_path: &'a Path,
}

/// Scans the whole segment (every block checksummed), builds its index, writes it in place of
/// the old one (kept in memory if the write fails) and checks all of it.
pub(super) fn rebuild(
    at: &RebuildAt<'_>,
    seg: &[u8],
    expect: Expected,
) -> Result<(IndexParts, IndexFacts)> {
    let bytes = rebuild_bytes(at.seg_path, seg, expect)?;
    let name = index_name(expect.base_seq);
    let idx = match write_atomic(at.storage, at.dir, &name, &bytes) {
        Ok(()) => at
            .storage
            .map(at.idx_path)
            .map(IndexBytes::Mapped)
            .unwrap_or(IndexBytes::Owned(bytes)),
        Err(e) => {
            tracing::warn!(file = %at.idx_path.display(), error = %e, "could not write the rebuilt index; keeping it in memory");
            IndexBytes::Owned(bytes)
        }
    };
    IndexParts::check_all(idx, expect).map_err(|source| Error::Corruption {
        file: at.idx_path.to_path_buf(),
        offset: 0,
        source,
    })
}

/// Like `rebuild`, but the index is kept in memory only. For damage found after the load: by
/// then the file under this segment's name may be another segment's (purge renames a
/// rewritten segment over it, retention removes it) while this reader still maps the old one,
/// so writing the index there could pair the old records' index with the new segment.
pub(super) fn rebuild_in_memory(
    seg_path: &Path,
    idx_path: &Path,
    seg: &[u8],
    expect: Expected,
) -> Result<(IndexParts, IndexFacts)> {
    let bytes = rebuild_bytes(seg_path, seg, expect)?;
    IndexParts::check_all(IndexBytes::Owned(bytes), expect).map_err(|source| Error::Corruption {
        file: idx_path.to_path_buf(),
        offset: 0,
        source,
    })
}

/// The index file bytes of a segment, from a scan of all of it.
pub(super) fn rebuild_bytes(seg_path: &Path, seg: &[u8], expect: Expected) -> Result<Vec<u8>> {
    let scan = scan_segment(seg, expect.base_seq).map_err(|source| Error::Corruption {
        file: seg_path.to_path_buf(),
        offset: 0,
        source,
    })?;
    if let Some((offset, source)) = scan.stopped {
        return Err(Error::Corruption {
            file: seg_path.to_path_buf(),
            offset,
            source,
        });
    }
    if scan.index.end_seq() != expect.end_seq {
        return Err(Error::Inconsistent(format!(
            "{} holds seqs {}..{}, but the next segment starts at {}",
            seg_path.display(),
            expect.base_seq,
            scan.index.end_seq(),
            expect.end_seq
        )));
    }
    tracing::info!(file = %seg_path.display(), records = scan.index.record_count(), "rebuilt index from segment");
    Ok(scan.index.to_index_file())
}
