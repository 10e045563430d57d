use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use echolog_format::block::{BlockHeader, BLOCK_HEADER_LEN};
use echolog_format::index::{
    ids_section_signature, BlockEntry, DictView, HourCounts, IdsView, IndexHeader,
    COMPACT_INDEX_VERSION_MIN, SECTION_IDS, SECTION_TAG_HOURS,
};
use echolog_format::postings::{decode_postings, Postings};
use echolog_format::ts_column::TsColumn;
use echolog_format::FormatError;
use roaring::RoaringBitmap;

use crate::block_cache::DecodedBlock;
use crate::error::{Error, Result};
use crate::storage::Mapped;

/// Bytes of an index file: mapped, or held in memory after a rebuild whose write failed.
pub(super) enum IndexBytes {
    Mapped(Mapped),
    Owned(Vec<u8>),
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

/// A mapped sealed segment file.
pub(super) struct SegBytes(pub(super) Mapped);

impl std::ops::Deref for SegBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// A sealed segment, mapped and with its index verified.
pub struct LoadedSegment {
    pub seg_path: PathBuf,
    pub idx_path: PathBuf,
    /// This file's key in the block cache (see [`crate::block_cache::BlockKey`]).
    pub cache_key: u64,
    pub(super) seg: SegBytes,
    pub(super) idx: IndexBytes,
    pub header: IndexHeader,
    pub blocks: Vec<BlockEntry>,
    pub(super) sections: Vec<(u32, Range<usize>)>,
    /// Where the ts column is in `idx` (looked up once: `ts` is on hot paths).
    pub(super) ts_range: Range<usize>,
    /// The index file's format version: since version 6 the ts column is packed and
    /// dictionary values are tagged posting lists.
    pub(super) version: u32,
    pub(super) raw_bytes: OnceLock<u64>,
}

impl LoadedSegment {
    pub fn section(&self, id: u32) -> &[u8] {
        self.sections
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| &self.idx[r.clone()])
            .unwrap_or(&[])
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

    /// Event time of the record at `ord` (the column was checked at load: one i64 per record
    /// before version 6, whole frames since).
    pub fn ts(&self, ord: u32) -> i64 {
        let s = &self.idx[self.ts_range.clone()];
        if self.version >= COMPACT_INDEX_VERSION_MIN {
            return TsColumn::split(s, self.header.record_count)
                .get(ord)
                .unwrap_or(0);
        }
        let at = ord as usize * 8;
        match s.get(at..at + 8) {
            Some(b) => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => 0,
        }
    }

    /// The bitmap stored under `key` in dictionary `section`.
    pub fn bitmap(&self, section: u32, key: &[u8]) -> Result<Option<RoaringBitmap>> {
        let dict = DictView::parse(self.section(section)).map_err(|e| self.idx_corrupt(e))?;
        match dict.get(key).map_err(|e| self.idx_corrupt(e))? {
            None => Ok(None),
            Some(bytes) => self.postings(bytes).map(Some),
        }
    }

    /// Decodes one dictionary value of this index into a bitmap: a bare roaring bitmap before
    /// version 6, a tagged list or bitmap since.
    pub fn postings(&self, value: &[u8]) -> Result<RoaringBitmap> {
        let roaring = if self.version >= COMPACT_INDEX_VERSION_MIN {
            match decode_postings(value, self.header.record_count)
                .map_err(|e| self.idx_corrupt(e))?
            {
                Postings::Roaring(bytes) => bytes,
                Postings::Ordinals(ords) => {
                    // Strictly increasing (checked by the decoder), so this cannot fail.
                    return RoaringBitmap::from_sorted_iter(ords).map_err(|e| {
                        self.idx_corrupt(FormatError::invalid("posting list", e.to_string()))
                    });
                }
            }
        } else {
            value
        };
        RoaringBitmap::deserialize_from(roaring).map_err(|e| {
            self.idx_corrupt(FormatError::Invalid {
                what: "roaring bitmap",
                reason: e.to_string(),
            })
        })
    }

    pub fn has_section(&self, id: u32) -> bool {
        self.sections.iter().any(|(i, _)| *i == id)
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

    pub fn dict(&self, section: u32) -> Result<DictView<'_>> {
        DictView::parse(self.section(section)).map_err(|e| self.idx_corrupt(e))
    }

    /// Length and CRC32 of the ids section, as its index's section table states them.
    pub fn ids_signature(&self) -> Result<(u64, u32)> {
        ids_section_signature(&self.idx).map_err(|e| self.idx_corrupt(e))
    }

    pub fn ids(&self) -> Result<IdsView<'_>> {
        IdsView::parse(self.section(SECTION_IDS)).map_err(|e| self.idx_corrupt(e))
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

    /// Decompressed record bytes, summed from the block headers (computed once).
    pub fn raw_bytes(&self) -> u64 {
        *self.raw_bytes.get_or_init(|| {
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
        self.seg.len() as u64 + self.idx.len() as u64
    }
}
