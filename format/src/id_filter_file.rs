//! The IDFILTER file: the id filter's parts (split-block Bloom filters over contiguous runs of
//! sealed segments), saved at close so the next open need not read every segment's ids
//! section to rebuild them.
//!
//! The file is derived data: a reader that finds it damaged, of another version, or bound to
//! segments other than the ones in the store drops it (or the parts from the first that does
//! not match) and rebuilds from the ids sections. Each part names the segments whose ids it
//! holds, with the CRC32 and length of each one's ids section, so a part is only used over
//! exactly the segments it was built from.
//!
//! The filter blocks of a part are checksummed per page ([`ID_FILTER_PAGE_BYTES`]), not as a
//! whole, so a reader can map the file and check only the pages its lookups touch:
//! [`decode_id_filter`] checks the header, every part head, segment list and page table, and
//! hands back where each part's blocks are; [`check_page`] checks one page before its bits
//! are trusted. [`decode_id_filter_whole`] checks every page and copies the blocks out.
//!
//! It has its own version ([`ID_FILTER_VERSION`]): no byte of the other files changed when it
//! was added, and a build that does not know the file lists it as unknown and leaves it alone.

use crate::cursor::Cursor;
use crate::{verify_crc32, FormatError};

pub const ID_FILTER_MAGIC: [u8; 8] = *b"ECHOLIDF";
/// Version of this file's layout (independent of [`crate::FORMAT_VERSION`]). Versions 1 (one
/// CRC over each part's blocks) and 2 (each part's head just before its blocks) were never
/// released; a file of either is refused like any other.
pub const ID_FILTER_VERSION: u32 = 3;
/// Bytes of filter blocks under one CRC32 of a part's page table (the last page may be short).
pub const ID_FILTER_PAGE_BYTES: usize = 4096;
/// Parts in one file. The chain doubles each part's capacity up to 2^30 ids, so 64 parts hold
/// over 3 * 10^10 ids.
pub const ID_FILTER_PARTS_MAX: u32 = 64;
/// 32-byte blocks in one part's filter: 2^30 ids at 16 bits each.
pub const ID_FILTER_BLOCKS_MAX: u64 = 1 << 26;
/// Segments named by one part.
pub const ID_FILTER_SEGMENTS_MAX: u32 = 1 << 20;
/// Bytes of one filter block: eight little-endian u32 words.
pub const ID_FILTER_BLOCK_LEN: usize = 32;

/// Header: magic, version, part count, CRC32 of the 16 bytes before it.
const HEADER_LEN: usize = 20;
/// Part head: base_seq, end_seq, ids, capacity, block_count (u64 each), segment count (u32).
const PART_HEAD_LEN: usize = 44;
/// A segment's entry: base_seq, end_seq, ids section length (u64 each), ids section CRC32.
const SEGMENT_ENTRY_LEN: usize = 28;

/// A sealed segment as a part saw it: its seq range and its ids section's length and CRC32
/// (as in its index's section table; 0 and 0 for an index without that section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentIds {
    pub base_seq: u64,
    pub end_seq: u64,
    pub ids_len: u64,
    pub ids_crc: u32,
}

/// One part of the chain, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPart {
    pub base_seq: u64,
    pub end_seq: u64,
    /// Ids inserted.
    pub ids: u64,
    /// Ids the filter was sized for.
    pub capacity: u64,
    /// The segments whose ids it holds, in seq order.
    pub segments: Vec<SegmentIds>,
    pub blocks: Vec<[u32; 8]>,
}

/// One part as found in a file: everything but its blocks checked; the blocks are at
/// `blocks_at` in the file's bytes, page `i` under `page_crcs[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedPart {
    pub base_seq: u64,
    pub end_seq: u64,
    pub ids: u64,
    pub capacity: u64,
    pub segments: Vec<SegmentIds>,
    pub block_count: usize,
    pub page_crcs: Vec<u32>,
    pub blocks_at: std::ops::Range<usize>,
}

impl SavedPart {
    /// The bytes of page `page` in `file` (the bytes the part was decoded from).
    fn page<'a>(&self, file: &'a [u8], page: usize) -> Option<&'a [u8]> {
        let start = self
            .blocks_at
            .start
            .checked_add(page.checked_mul(ID_FILTER_PAGE_BYTES)?)?;
        let end = start
            .saturating_add(ID_FILTER_PAGE_BYTES)
            .min(self.blocks_at.end);
        file.get(start..end)
    }

    /// The page that holds block `block`.
    pub fn page_of(block: usize) -> usize {
        block * ID_FILTER_BLOCK_LEN / ID_FILTER_PAGE_BYTES
    }

    /// The eight words of block `block`, read from `file` (whose page holding it the caller
    /// has checked with [`check_page`]). `None` past the part's blocks.
    pub fn block(&self, file: &[u8], block: usize) -> Option<[u32; 8]> {
        let at = self
            .blocks_at
            .start
            .checked_add(block.checked_mul(ID_FILTER_BLOCK_LEN)?)?;
        if block >= self.block_count {
            return None;
        }
        let bytes = file.get(at..at.checked_add(ID_FILTER_BLOCK_LEN)?)?;
        Some(words(bytes))
    }
}

fn words(bytes: &[u8]) -> [u32; 8] {
    let mut block = [0u32; 8];
    for (w, b) in block.iter_mut().zip(bytes.chunks_exact(4)) {
        let mut le = [0u8; 4];
        le.copy_from_slice(b);
        *w = u32::from_le_bytes(le);
    }
    block
}

/// Checks page `page` of `part` in `file` against its CRC32.
pub fn check_page(file: &[u8], part: &SavedPart, page: usize) -> Result<(), FormatError> {
    const WHAT: &str = "id filter page";
    let (Some(bytes), Some(crc)) = (part.page(file, page), part.page_crcs.get(page)) else {
        return Err(FormatError::invalid(
            WHAT,
            format!("page {page} of a part with {} pages", part.page_crcs.len()),
        ));
    };
    verify_crc32(WHAT, *crc, bytes)
}

/// Pages of a part with `block_count` blocks.
pub fn page_count(block_count: usize) -> usize {
    (block_count * ID_FILTER_BLOCK_LEN).div_ceil(ID_FILTER_PAGE_BYTES)
}

/// Where a part's blocks come from when it is encoded.
#[derive(Debug, Clone, Copy)]
pub enum BlocksRef<'a> {
    /// Blocks in memory: their page CRCs are computed.
    Words(&'a [[u32; 8]]),
    /// Blocks as another file holds them, with that file's page CRCs, copied as they are (a
    /// page damaged there stays detectably damaged here).
    Saved {
        bytes: &'a [u8],
        page_crcs: &'a [u32],
    },
}

/// A part to encode, borrowed from wherever it lives.
#[derive(Debug, Clone, Copy)]
pub struct PartRef<'a> {
    pub base_seq: u64,
    pub end_seq: u64,
    pub ids: u64,
    pub capacity: u64,
    pub segments: &'a [SegmentIds],
    pub blocks: BlocksRef<'a>,
}

impl FilterPart {
    pub fn as_ref(&self) -> PartRef<'_> {
        PartRef {
            base_seq: self.base_seq,
            end_seq: self.end_seq,
            ids: self.ids,
            capacity: self.capacity,
            segments: &self.segments,
            blocks: BlocksRef::Words(&self.blocks),
        }
    }
}

impl BlocksRef<'_> {
    fn block_count(&self) -> usize {
        match self {
            BlocksRef::Words(w) => w.len(),
            BlocksRef::Saved { bytes, .. } => bytes.len() / ID_FILTER_BLOCK_LEN,
        }
    }
}

/// The file's bytes for `parts` (oldest first): the header, every part's head, segment list
/// and page table, then every part's blocks, so a reader finds all it checks up front in one
/// read.
pub fn encode_id_filter(parts: &[PartRef<'_>]) -> Vec<u8> {
    let bodies: Vec<(std::borrow::Cow<'_, [u8]>, Vec<u32>)> = parts.iter().map(body).collect();
    let bytes: usize = parts
        .iter()
        .zip(&bodies)
        .map(|(p, (b, crcs))| {
            PART_HEAD_LEN + p.segments.len() * SEGMENT_ENTRY_LEN + 4 + crcs.len() * 4 + 4 + b.len()
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER_LEN + bytes);
    out.extend_from_slice(&ID_FILTER_MAGIC);
    out.extend_from_slice(&ID_FILTER_VERSION.to_le_bytes());
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    let crc = crate::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for (p, (_, crcs)) in parts.iter().zip(&bodies) {
        encode_part_head(&mut out, p, crcs);
    }
    for (b, _) in &bodies {
        out.extend_from_slice(b);
    }
    out
}

/// A part's blocks as bytes, and the CRC32 of each page of them.
fn body<'a>(p: &PartRef<'a>) -> (std::borrow::Cow<'a, [u8]>, Vec<u32>) {
    match p.blocks {
        BlocksRef::Words(blocks) => {
            let mut body = Vec::with_capacity(blocks.len() * ID_FILTER_BLOCK_LEN);
            for w in blocks.iter().flatten() {
                body.extend_from_slice(&w.to_le_bytes());
            }
            let crcs = body
                .chunks(ID_FILTER_PAGE_BYTES)
                .map(crate::crc32)
                .collect();
            (std::borrow::Cow::Owned(body), crcs)
        }
        BlocksRef::Saved { bytes, page_crcs } => {
            (std::borrow::Cow::Borrowed(bytes), page_crcs.to_vec())
        }
    }
}

fn encode_part_head(out: &mut Vec<u8>, p: &PartRef<'_>, crcs: &[u32]) {
    let start = out.len();
    let block_count = p.blocks.block_count();
    debug_assert_eq!(crcs.len(), page_count(block_count));
    for v in [p.base_seq, p.end_seq, p.ids, p.capacity, block_count as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(p.segments.len() as u32).to_le_bytes());
    for s in p.segments {
        out.extend_from_slice(&s.base_seq.to_le_bytes());
        out.extend_from_slice(&s.end_seq.to_le_bytes());
        out.extend_from_slice(&s.ids_len.to_le_bytes());
        out.extend_from_slice(&s.ids_crc.to_le_bytes());
    }
    let crc = crate::crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    let table_start = out.len();
    for c in crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crate::crc32(&out[table_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes a file: the header and every part's head, segment list and page table checked;
/// the blocks only located (check each page with [`check_page`] before using it). Arbitrary
/// bytes give an error, and no allocation is larger than the bytes given (every count is
/// checked against what is left).
pub fn decode_id_filter(bytes: &[u8]) -> Result<Vec<SavedPart>, FormatError> {
    const WHAT: &str = "id filter file";
    let mut c = Cursor::new(WHAT, bytes);
    let head = c.take(HEADER_LEN - 4)?;
    let stored = c.u32()?;
    let mut h = Cursor::new(WHAT, head);
    if h.array::<8>()? != ID_FILTER_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    verify_crc32("id filter header", stored, head)?;
    let version = h.u32()?;
    if version != ID_FILTER_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: version,
            supported: ID_FILTER_VERSION,
        });
    }
    let count = h.u32()?;
    if count > ID_FILTER_PARTS_MAX {
        return Err(FormatError::LimitExceeded {
            what: "id filter part_count",
            value: u64::from(count),
            max: u64::from(ID_FILTER_PARTS_MAX),
        });
    }
    let mut parts = (0..count)
        .map(|_| decode_part_head(bytes, &mut c))
        .collect::<Result<Vec<_>, _>>()?;
    // The blocks follow the heads, part after part.
    for p in &mut parts {
        let start = c.position();
        c.take(p.block_count * ID_FILTER_BLOCK_LEN)?;
        p.blocks_at = start..c.position();
    }
    if !c.is_empty() {
        return Err(FormatError::invalid(
            WHAT,
            format!("{} bytes after the last part", c.remaining()),
        ));
    }
    check_chain(&parts)?;
    Ok(parts)
}

/// Decodes a file with every page checked, the blocks copied out.
pub fn decode_id_filter_whole(bytes: &[u8]) -> Result<Vec<FilterPart>, FormatError> {
    decode_id_filter(bytes)?
        .into_iter()
        .map(|p| {
            (0..p.page_crcs.len()).try_for_each(|page| check_page(bytes, &p, page))?;
            let blocks = bytes
                .get(p.blocks_at.clone())
                .unwrap_or_default()
                .chunks_exact(ID_FILTER_BLOCK_LEN)
                .map(words)
                .collect();
            Ok(FilterPart {
                base_seq: p.base_seq,
                end_seq: p.end_seq,
                ids: p.ids,
                capacity: p.capacity,
                segments: p.segments,
                blocks,
            })
        })
        .collect()
}

/// A part's head, segment list and page table; its blocks are located by the caller.
fn decode_part_head(bytes: &[u8], c: &mut Cursor<'_>) -> Result<SavedPart, FormatError> {
    const WHAT: &str = "id filter part";
    let start = c.position();
    let mut head = Cursor::new(WHAT, c.take(PART_HEAD_LEN)?);
    let (base_seq, end_seq, ids, capacity) = (head.u64()?, head.u64()?, head.u64()?, head.u64()?);
    let block_count = head.u64()?;
    let segment_count = head.u32()?;
    if segment_count > ID_FILTER_SEGMENTS_MAX {
        return Err(FormatError::LimitExceeded {
            what: "id filter part segment_count",
            value: u64::from(segment_count),
            max: u64::from(ID_FILTER_SEGMENTS_MAX),
        });
    }
    // 0 blocks: a part no id was inserted into (its filter was never allocated).
    if block_count > ID_FILTER_BLOCKS_MAX {
        return Err(FormatError::LimitExceeded {
            what: "id filter part block_count",
            value: block_count,
            max: ID_FILTER_BLOCKS_MAX,
        });
    }
    let block_count = block_count as usize;
    let entries = c.take(segment_count as usize * SEGMENT_ENTRY_LEN)?;
    // The head and the entries just read, which the CRC after them covers.
    let described = bytes.get(start..c.position()).unwrap_or_default();
    verify_crc32("id filter part head", c.u32()?, described)?;
    let mut e = Cursor::new(WHAT, entries);
    let segments = (0..segment_count)
        .map(|_| {
            Ok(SegmentIds {
                base_seq: e.u64()?,
                end_seq: e.u64()?,
                ids_len: e.u64()?,
                ids_crc: e.u32()?,
            })
        })
        .collect::<Result<Vec<_>, FormatError>>()?;
    let table = c.take(page_count(block_count) * 4)?;
    verify_crc32("id filter page table", c.u32()?, table)?;
    let page_crcs = table
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(SavedPart {
        base_seq,
        end_seq,
        ids,
        capacity,
        segments,
        block_count,
        page_crcs,
        blocks_at: 0..0,
    })
}

/// Parts follow each other without gap or overlap, and each one's segments lie inside it, in
/// order: what the engine relies on when it adopts them.
fn check_chain(parts: &[SavedPart]) -> Result<(), FormatError> {
    const WHAT: &str = "id filter parts";
    let mut next = None;
    for p in parts {
        if p.end_seq < p.base_seq || next.is_some_and(|n| n != p.base_seq) {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "part {}..{} does not follow the one before",
                    p.base_seq, p.end_seq
                ),
            ));
        }
        let mut at = p.base_seq;
        for s in &p.segments {
            if s.base_seq < at || s.end_seq < s.base_seq || s.end_seq > p.end_seq {
                return Err(FormatError::invalid(
                    WHAT,
                    format!(
                        "segment {}..{} out of order in part {}..{}",
                        s.base_seq, s.end_seq, p.base_seq, p.end_seq
                    ),
                ));
            }
            at = s.end_seq;
        }
        next = Some(p.end_seq);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(base: u64, end: u64, blocks: usize) -> FilterPart {
        FilterPart {
            base_seq: base,
            end_seq: end,
            ids: 3,
            capacity: 100,
            segments: vec![
                SegmentIds {
                    base_seq: base,
                    end_seq: base + 1,
                    ids_len: 36,
                    ids_crc: 7,
                },
                SegmentIds {
                    base_seq: base + 1,
                    end_seq: end,
                    ids_len: 0,
                    ids_crc: 0,
                },
            ],
            blocks: (0..blocks)
                .map(|i| [i as u32, 1, 2, 3, 4, 5, 6, u32::MAX])
                .collect(),
        }
    }

    fn encode(parts: &[FilterPart]) -> Vec<u8> {
        encode_id_filter(&parts.iter().map(FilterPart::as_ref).collect::<Vec<_>>())
    }

    #[test]
    fn parts_round_trip() {
        // 300 blocks: three pages, the last one short.
        let parts = vec![part(1, 10, 3), part(10, 30, 300), part(30, 31, 0)];
        let bytes = encode(&parts);
        assert_eq!(decode_id_filter_whole(&bytes).unwrap(), parts);
        let saved = decode_id_filter(&bytes).unwrap();
        assert_eq!(saved[1].page_crcs.len(), 3);
        assert_eq!(saved[1].block(&bytes, 299), Some(parts[1].blocks[299]));
        assert_eq!(saved[1].block(&bytes, 300), None);
        assert_eq!(decode_id_filter_whole(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn saved_blocks_are_copied_with_their_page_crcs() {
        let parts = vec![part(1, 10, 200)];
        let mut bytes = encode(&parts);
        let saved = decode_id_filter(&bytes).unwrap();
        // Damage page 1, then encode the part again from the damaged file's bytes.
        let at = saved[0].blocks_at.start + ID_FILTER_PAGE_BYTES + 9;
        bytes[at] ^= 4;
        let p = &saved[0];
        let again = encode_id_filter(&[PartRef {
            base_seq: p.base_seq,
            end_seq: p.end_seq,
            ids: p.ids,
            capacity: p.capacity,
            segments: &p.segments,
            blocks: BlocksRef::Saved {
                bytes: &bytes[p.blocks_at.clone()],
                page_crcs: &p.page_crcs,
            },
        }]);
        let copied = decode_id_filter(&again).unwrap();
        assert!(check_page(&again, &copied[0], 0).is_ok());
        assert!(check_page(&again, &copied[0], 1).is_err(), "still damaged");
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_an_error() {
        let parts = [part(1, 10, 2)];
        let bytes = encode(&parts);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                decode_id_filter_whole(&b).is_err(),
                "bit {i} flipped was accepted"
            );
        }
        for n in 0..bytes.len() {
            assert!(decode_id_filter(&bytes[..n]).is_err(), "{n} bytes accepted");
        }
    }

    #[test]
    fn a_flipped_block_bit_fails_only_its_page() {
        let parts = [part(1, 10, 300)];
        let mut bytes = encode(&parts);
        let saved = decode_id_filter(&bytes).unwrap();
        bytes[saved[0].blocks_at.start + 2 * ID_FILTER_PAGE_BYTES + 1] ^= 1;
        let saved = decode_id_filter(&bytes).unwrap();
        let checked: Vec<bool> = (0..3)
            .map(|page| check_page(&bytes, &saved[0], page).is_ok())
            .collect();
        assert_eq!(checked, [true, true, false]);
        assert!(check_page(&bytes, &saved[0], 3).is_err(), "no such page");
    }

    #[test]
    fn another_version_is_refused_by_number() {
        let mut bytes = encode(&[part(1, 10, 1)]);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crate::crc32(&bytes[..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        match decode_id_filter(&bytes) {
            Err(FormatError::UnsupportedVersion {
                found, supported, ..
            }) => {
                assert_eq!((found, supported), (1, ID_FILTER_VERSION));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parts_with_a_gap_are_refused() {
        let bytes = encode(&[part(1, 10, 1), part(11, 30, 1)]);
        let err = decode_id_filter(&bytes).unwrap_err();
        assert!(matches!(err, FormatError::Invalid { .. }), "{err}");
    }

    #[test]
    fn a_part_count_over_the_limit_names_the_field() {
        let mut bytes = encode(&[]);
        bytes[12..16].copy_from_slice(&(ID_FILTER_PARTS_MAX + 1).to_le_bytes());
        let crc = crate::crc32(&bytes[..16]);
        bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        match decode_id_filter(&bytes) {
            Err(FormatError::LimitExceeded { what, value, max }) => {
                assert_eq!(what, "id filter part_count");
                assert_eq!((value, max), (65, 64));
            }
            other => panic!("{other:?}"),
        }
    }
}
