use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use echolog_format::block::{BlockHeader, BLOCK_HEADER_LEN};
use echolog_format::index::{
    ids_section_signature, BlockEntry, DictView, HourCounts, IdsView, IndexHeader,
    COMPACT_INDEX_VERSION_MIN, SECTION_IDS, SECTION_SUMMARY, SECTION_TAG_HOURS, SECTION_TS,
};
use echolog_format::postings::{decode_postings, Postings, RUNS_VERSION_MIN};
use echolog_format::ts_column::TsColumn;
use echolog_format::FormatError;
use roaring::RoaringBitmap;

use super::index::{rebuild_in_memory, Expected, IndexFacts, IndexParts};
use super::sealed::SharedError;
use crate::block_cache::DecodedBlock;
use crate::error::{Error, Result};
use crate::storage::{Advice, Mapped};

/// A mapped sealed segment file.
pub(super) struct SegBytes(pub(super) Mapped);

impl std::ops::Deref for SegBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// A sealed segment, mapped, with its index's header and block table checked; each other
/// index section is checked the first time it is read (see `index.rs`).
pub struct LoadedSegment {
    pub seg_path: PathBuf,
    pub idx_path: PathBuf,
    /// This file's key in the block cache (see [`crate::block_cache::BlockKey`]).
    pub cache_key: u64,
    seg: SegBytes,
    pub header: IndexHeader,
    pub blocks: Vec<BlockEntry>,
    /// The index as found on disk.
    index: IndexParts,
    /// The index rebuilt from the segment, in memory, after one of `index`'s sections failed
    /// its check (or why it could not be). Set once; `index` stays alive, so bytes a reader
    /// borrowed from it stay valid.
    repaired: OnceLock<std::result::Result<IndexParts, Arc<Error>>>,
    raw_bytes: OnceLock<u64>,
}

/// A dictionary section with what decoding its values needs (the version of the file it was
/// read from: a rebuilt index may be newer than the one it replaced).
pub struct SegDict<'a> {
    dict: DictView<'a>,
    version: u32,
    record_count: u32,
    seg: &'a LoadedSegment,
}

impl<'a> std::ops::Deref for SegDict<'a> {
    type Target = DictView<'a>;
    fn deref(&self) -> &DictView<'a> {
        &self.dict
    }
}

impl SegDict<'_> {
    /// Decodes one value of this dictionary into a bitmap.
    pub fn postings(&self, value: &[u8]) -> Result<RoaringBitmap> {
        postings(self.version, self.record_count, value).map_err(|e| self.seg.idx_corrupt(e))
    }

    /// How many of `f` one value of this dictionary holds. Runs are counted a range at a time
    /// (`range_cardinality`), without building their bitmap: a minute of a store whose events
    /// arrive in time order is one long run and a few late events.
    pub fn intersection_len(&self, value: &[u8], f: &RoaringBitmap) -> Result<u64> {
        if self.version < RUNS_VERSION_MIN {
            return Ok(f.intersection_len(&self.postings(value)?));
        }
        let corrupt = |e| self.seg.idx_corrupt(e);
        match decode_postings(value, self.record_count, self.version).map_err(corrupt)? {
            Postings::Runs(runs) => Ok(runs
                .iter()
                .map(|&(first, last)| f.range_cardinality(first..=last))
                .sum()),
            other => Ok(f.intersection_len(&bitmap_of(other).map_err(corrupt)?)),
        }
    }
}

/// The ts column of a loaded segment, checked.
#[derive(Clone, Copy)]
pub enum SegTs<'a> {
    /// Version 6 and later: bit-packed frames.
    Packed(TsColumn<'a>),
    /// Before: one little-endian i64 per record.
    Plain(&'a [u8]),
}

impl SegTs<'_> {
    /// Event time of the record at `ord` (0 past the last record, which callers never ask).
    pub fn get(&self, ord: u32) -> i64 {
        match self {
            SegTs::Packed(c) => c.get(ord).unwrap_or(0),
            SegTs::Plain(s) => {
                let at = ord as usize * 8;
                s.get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, i64::from_le_bytes)
            }
        }
    }
}

/// One dictionary value as a bitmap: a bare roaring bitmap before version 6, a tagged list or
/// bitmap since, or (version 7 on) runs.
fn postings(version: u32, record_count: u32, value: &[u8]) -> Result<RoaringBitmap, FormatError> {
    if version >= COMPACT_INDEX_VERSION_MIN {
        bitmap_of(decode_postings(value, record_count, version)?)
    } else {
        bitmap_of(Postings::Roaring(value))
    }
}

/// A decoded posting value as a bitmap.
fn bitmap_of(p: Postings<'_>) -> Result<RoaringBitmap, FormatError> {
    match p {
        Postings::Roaring(bytes) => RoaringBitmap::deserialize_from(bytes)
            .map_err(|e| FormatError::invalid("roaring bitmap", e.to_string())),
        // Strictly increasing (checked by the decoder), so this cannot fail.
        Postings::Ordinals(ords) => RoaringBitmap::from_sorted_iter(ords)
            .map_err(|e| FormatError::invalid("posting list", e.to_string())),
        Postings::Runs(runs) => {
            let mut bm = RoaringBitmap::new();
            for (first, last) in runs {
                bm.insert_range(first..=last);
            }
            Ok(bm)
        }
    }
}

/// The byte ranges in the segment of `blocks` (ascending or descending, repeats allowed),
/// adjacent blocks joined into one range; block numbers past the table are left out.
fn byte_runs(
    table: &[BlockEntry],
    segment_len: u64,
    blocks: impl Iterator<Item = usize>,
) -> Vec<Range<u64>> {
    let mut runs: Vec<Range<u64>> = Vec::new();
    for b in blocks {
        let Some(e) = table.get(b) else {
            continue;
        };
        let end = table.get(b + 1).map_or(segment_len, |n| n.offset);
        match runs.last_mut() {
            Some(r) if r.start <= e.offset && end <= r.end => {}
            Some(r) if r.end == e.offset => r.end = end,
            Some(r) if end == r.start => r.start = e.offset,
            _ => runs.push(e.offset..end),
        }
    }
    runs
}

impl LoadedSegment {
    pub(super) fn new(
        paths: (PathBuf, PathBuf),
        cache_key: u64,
        seg: SegBytes,
        (index, facts): (IndexParts, IndexFacts),
    ) -> Self {
        let (seg_path, idx_path) = paths;
        LoadedSegment {
            seg_path,
            idx_path,
            cache_key,
            seg,
            header: facts.header,
            blocks: facts.blocks,
            index,
            repaired: OnceLock::new(),
            raw_bytes: OnceLock::new(),
        }
    }

    pub(crate) fn idx_corrupt(&self, source: FormatError) -> Error {
        Error::Corruption {
            file: self.idx_path.clone(),
            offset: 0,
            source,
        }
    }

    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// The index readers use: the rebuilt one once there is one.
    fn parts(&self) -> &IndexParts {
        match self.repaired.get() {
            Some(Ok(p)) => p,
            _ => &self.index,
        }
    }

    /// Section `id` (empty when the index has none) and the index it was read from. A
    /// section that fails its check has the index rebuilt from the segment (once), and the
    /// rebuilt index answers.
    fn section(&self, id: u32) -> Result<(&IndexParts, &[u8])> {
        let p = self.parts();
        match p.section(id, &self.header) {
            Ok(b) => Ok((p, b)),
            Err(cause) => {
                let r = self.repair(cause)?;
                let b = r
                    .section(id, &self.header)
                    .map_err(|e| self.idx_corrupt(e))?;
                Ok((r, b))
            }
        }
    }

    /// The index rebuilt from this segment in memory (built by the first caller; the others
    /// wait). Not written: see `index::rebuild_in_memory`.
    fn repair(&self, cause: FormatError) -> Result<&IndexParts> {
        let r = self.repaired.get_or_init(|| {
            tracing::warn!(file = %self.idx_path.display(), error = %cause, "index section is corrupt; rebuilding the index from its segment, in memory (`echolog verify` reports the file; remove it and the next open writes a new one)");
            let expect = Expected {
                base_seq: self.header.base_seq,
                end_seq: self.header.base_seq + u64::from(self.header.record_count),
                segment_len: self.seg.len() as u64,
            };
            let (parts, facts) =
                rebuild_in_memory(&self.seg_path, &self.idx_path, &self.seg, expect)
                    .map_err(Arc::new)?;
            if facts.header != self.header || facts.blocks != self.blocks {
                return Err(Arc::new(Error::Inconsistent(format!(
                    "the index rebuilt from {} describes it otherwise than the checked header and block table of {}",
                    self.seg_path.display(),
                    self.idx_path.display()
                ))));
            }
            Ok(parts)
        });
        match r {
            Ok(p) => Ok(p),
            Err(e) => Err(Error::Shared(SharedError(e.clone()))),
        }
    }

    /// The ts column, checked (once).
    pub fn ts_column(&self) -> Result<SegTs<'_>> {
        let (p, bytes) = self.section(SECTION_TS)?;
        Ok(if p.version >= COMPACT_INDEX_VERSION_MIN {
            SegTs::Packed(TsColumn::split(bytes, self.header.record_count))
        } else {
            SegTs::Plain(bytes)
        })
    }

    /// The bitmap stored under `key` in dictionary `section`.
    pub fn bitmap(&self, section: u32, key: &[u8]) -> Result<Option<RoaringBitmap>> {
        let dict = self.dict(section)?;
        match dict.get(key).map_err(|e| self.idx_corrupt(e))? {
            None => Ok(None),
            Some(bytes) => dict.postings(bytes).map(Some),
        }
    }

    pub fn has_section(&self, id: u32) -> bool {
        self.parts().has_section(id)
    }

    /// The hourly counts of `tag` (`SECTION_TAG_HOURS`, checked); None when the tag has no
    /// counted record here. Only for an index that has the section (version 5 and later).
    pub fn tag_hours(&self, tag: &[u8]) -> Result<Option<HourCounts<'_>>> {
        let dict = self.dict(SECTION_TAG_HOURS)?;
        match dict.get(tag).map_err(|e| self.idx_corrupt(e))? {
            None => Ok(None),
            Some(v) => HourCounts::parse(v, &self.header)
                .map(Some)
                .map_err(|e| self.idx_corrupt(e)),
        }
    }

    pub fn dict(&self, section: u32) -> Result<SegDict<'_>> {
        let (p, bytes) = self.section(section)?;
        Ok(SegDict {
            dict: DictView::parse(bytes, p.version).map_err(|e| self.idx_corrupt(e))?,
            version: p.version,
            record_count: self.header.record_count,
            seg: self,
        })
    }

    /// Length and CRC32 of the ids section, as its index's section table states them.
    pub fn ids_signature(&self) -> Result<(u64, u32)> {
        ids_section_signature(&self.parts().bytes).map_err(|e| self.idx_corrupt(e))
    }

    pub fn ids(&self) -> Result<IdsView<'_>> {
        let (_, bytes) = self.section(SECTION_IDS)?;
        IdsView::parse(bytes).map_err(|e| self.idx_corrupt(e))
    }

    /// Number of the block holding `ord`.
    pub fn block_of(&self, ord: u32) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| b.first_ordinal <= ord)
            .checked_sub(1)?;
        let e = &self.blocks[i];
        (ord < e.first_ordinal + e.count).then_some(i)
    }

    /// Asks the disk for `blocks` (ascending or descending block numbers, repeats allowed)
    /// at once, before any is read. A block read through the map faults its pages in, and a
    /// fault on a cold page reads the device's read-ahead around it (8 MiB on our benchmark
    /// disk): megabytes a block for a history that wants one event of it, read one fault
    /// after another. Pages asked for are queued together and then found in the page cache,
    /// so no fault reads around them. Runs of adjacent blocks are asked for in one call.
    pub fn prefetch_blocks(&self, blocks: impl Iterator<Item = usize>) {
        for r in byte_runs(&self.blocks, self.header.segment_len, blocks) {
            self.advise_seg(r);
        }
    }

    fn advise_seg(&self, r: Range<u64>) {
        self.seg
            .0
            .advise(Advice::WillNeed(r.start as usize..r.end as usize));
    }

    /// The stored bytes of one block (header and compressed body), not yet checked.
    pub fn block_bytes(&self, block: usize) -> Result<&[u8]> {
        let e = self
            .blocks
            .get(block)
            .ok_or_else(|| Error::Inconsistent(format!("sealed block {block} out of range")))?;
        let end = self
            .blocks
            .get(block + 1)
            .map_or(self.header.segment_len, |n| n.offset);
        self.seg
            .get(e.offset as usize..end as usize)
            .ok_or_else(|| Error::Corruption {
                file: self.seg_path.clone(),
                offset: e.offset,
                source: FormatError::Truncated {
                    what: "sealed block",
                    needed: end,
                    available: self.seg.len() as u64,
                },
            })
    }

    pub fn read_block(&self, block: usize) -> Result<DecodedBlock> {
        let bytes = self.block_bytes(block)?;
        let e = &self.blocks[block];
        DecodedBlock::decode(
            bytes,
            self.header.base_seq + u64::from(e.first_ordinal),
            e.count,
        )
        .map_err(|source| Error::Corruption {
            file: self.seg_path.clone(),
            offset: e.offset,
            source,
        })
    }

    /// Decompressed record bytes (computed once): from the index's summary section (version
    /// 3 and later: 8 bytes), else summed from the block headers, which reads a page of the
    /// segment per block.
    pub fn raw_bytes(&self) -> u64 {
        *self.raw_bytes.get_or_init(|| {
            let summary = self
                .section(SECTION_SUMMARY)
                .ok()
                .and_then(|(_, b)| <[u8; 8]>::try_from(b).ok());
            if let Some(b) = summary {
                return u64::from_le_bytes(b);
            }
            self.blocks
                .iter()
                .filter_map(|b| {
                    self.seg
                        .get(b.offset as usize..b.offset as usize + BLOCK_HEADER_LEN)
                })
                .filter_map(|h| BlockHeader::decode(h).ok())
                .map(|h| u64::from(h.raw_len))
                .sum()
        })
    }

    pub fn disk_bytes(&self) -> u64 {
        self.seg.len() as u64 + self.parts().bytes.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(offsets: &[u64]) -> Vec<BlockEntry> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, &offset)| BlockEntry {
                offset,
                first_ordinal: i as u32 * 10,
                count: 10,
                min_ts: 0,
                max_ts: 0,
            })
            .collect()
    }

    #[test]
    fn blocks_asked_for_are_joined_into_runs_of_adjacent_blocks() {
        let t = table(&[32, 100, 250, 400, 900]);
        let runs = |b: &[usize]| byte_runs(&t, 1000, b.iter().copied());
        assert_eq!(runs(&[0, 0, 1, 3, 4]), vec![32..250, 400..1000]);
        assert_eq!(runs(&[4, 3, 3, 1, 0]), vec![400..1000, 32..250]);
        assert_eq!(runs(&[2]), vec![250..400]);
        assert_eq!(runs(&[7, 2, 9]), vec![250..400], "past the table: left out");
        assert!(runs(&[]).is_empty());
    }
}
