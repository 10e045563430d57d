//! Index files: written once when a segment is sealed, then read through mmap.
//!
//! An index file is a header, a section table and sections. Each section carries its own CRC32
//! in the table; the table and the header carry theirs. The engine verifies everything once
//! when it first maps the file.

use crate::cursor::Cursor;
use crate::{verify_crc32, FormatError, FORMAT_VERSION};

pub const INDEX_MAGIC: [u8; 8] = *b"ECHOLIDX";
pub const INDEX_HEADER_LEN: usize = 64;
pub const SECTION_ENTRY_LEN: usize = 24;
/// Sections in one index file (a named limit so a corrupt count cannot make us loop).
pub const SECTIONS_MAX: u32 = 64;

pub const SECTION_BLOCKS: u32 = 1;
pub const SECTION_TS: u32 = 2;
pub const SECTION_ENTITIES: u32 = 3;
pub const SECTION_KINDS: u32 = 4;
pub const SECTION_TAGS: u32 = 5;
pub const SECTION_MINUTES: u32 = 6;
pub const SECTION_IDS: u32 = 7;
/// Version 3: 8 bytes, u64 decompressed bytes of the segment's records, so `Stats` can total
/// a store without mapping every index.
pub const SECTION_SUMMARY: u32 = 8;
/// Version 5: per tag, how many counted records (every kind but the reserved `$` kinds of
/// deletes, restores and purges) fall in each UTC hour, so an hourly or daily count of one tag
/// reads a few entries per segment instead of one timestamp per event. A dictionary keyed like
/// [`SECTION_TAGS`] (a tag with no counted record has no key); each value is a list of
/// [`HOUR_COUNT_ENTRY_LEN`]-byte entries, see [`encode_hour_counts`].
pub const SECTION_TAG_HOURS: u32 = 9;
/// First version whose ts column is a packed [`crate::ts_column`] and whose dictionary values
/// are tagged [`crate::postings`]; older index files hold `record_count` plain i64s and bare
/// roaring bitmaps.
pub const COMPACT_INDEX_VERSION_MIN: u32 = 6;
/// Width of a pre-aggregated bucket, ms.
pub const HOUR_MS: i64 = 3_600_000;
/// One (hour, count) entry of [`SECTION_TAG_HOURS`]: i64 hour number (`ts.div_euclid(HOUR_MS)`)
/// and u32 count, little endian.
pub const HOUR_COUNT_ENTRY_LEN: usize = 12;

pub const BLOCK_ENTRY_LEN: usize = 32;
pub const ID_ENTRY_LEN: usize = 12;
pub use crate::dictionary::{encode_dict, DictCursor, DictView, DICT_KEY_BYTES_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    pub base_seq: u64,
    pub record_count: u32,
    pub block_count: u32,
    /// Length of the segment file this index describes, bytes.
    pub segment_len: u64,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// One block's entry in the block table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// Byte offset of the block header in the segment file.
    pub offset: u64,
    /// Ordinal (seq - base_seq) of the block's first record.
    pub first_ordinal: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// Assembles an index file from sections.
pub struct IndexWriter {
    header: IndexHeader,
    sections: Vec<(u32, Vec<u8>)>,
}

impl IndexWriter {
    pub fn new(header: IndexHeader) -> Self {
        IndexWriter {
            header,
            sections: Vec::new(),
        }
    }

    pub fn add_section(&mut self, id: u32, bytes: Vec<u8>) {
        assert!(
            self.sections.iter().all(|(i, _)| *i != id),
            "section {id} added twice"
        );
        assert!((self.sections.len() as u32) < SECTIONS_MAX);
        self.sections.push((id, bytes));
    }

    pub fn finish(self) -> Vec<u8> {
        let table_len = self.sections.len() * SECTION_ENTRY_LEN + 4;
        let data_len: usize = self.sections.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + table_len + data_len);
        let h = &self.header;
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        out.extend_from_slice(&h.base_seq.to_le_bytes());
        out.extend_from_slice(&h.record_count.to_le_bytes());
        out.extend_from_slice(&h.block_count.to_le_bytes());
        out.extend_from_slice(&h.segment_len.to_le_bytes());
        out.extend_from_slice(&h.min_ts.to_le_bytes());
        out.extend_from_slice(&h.max_ts.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        let crc = crate::crc32(&out[0..60]);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), INDEX_HEADER_LEN);
        let mut offset = (INDEX_HEADER_LEN + table_len) as u64;
        let table_start = out.len();
        for (id, bytes) in &self.sections {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&crate::crc32(bytes).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            offset += bytes.len() as u64;
        }
        let crc = crate::crc32(&out[table_start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        for (_, bytes) in &self.sections {
            out.extend_from_slice(bytes);
        }
        out
    }
}

/// One row of the section table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEntry {
    pub id: u32,
    pub crc: u32,
    pub offset: u64,
    pub len: u64,
}

/// The section count of an index header (64 bytes), after checking its magic and checksum,
/// so a caller knows how much of the table to read.
pub fn section_count(head: &[u8]) -> Result<u32, FormatError> {
    decode_head(head).map(|(_, n, _)| n)
}

/// The first 64 bytes of an index file, checked (magic, checksum, version, section count
/// limit): its version, section count and header.
fn decode_head(head: &[u8]) -> Result<(u32, u32, IndexHeader), FormatError> {
    const WHAT: &str = "index header";
    let h = head.get(..INDEX_HEADER_LEN).ok_or(FormatError::Truncated {
        what: WHAT,
        needed: INDEX_HEADER_LEN as u64,
        available: head.len() as u64,
    })?;
    let mut c = Cursor::new(WHAT, h);
    let magic: [u8; 8] = c.array()?;
    if magic != INDEX_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(h.get(60..64).unwrap_or(&[0; 4]));
    verify_crc32(
        WHAT,
        u32::from_le_bytes(stored),
        h.get(..60).unwrap_or_default(),
    )?;
    let version = crate::check_version(WHAT, c.u32()?)?;
    let n = c.u32()?;
    if n > SECTIONS_MAX {
        return Err(FormatError::LimitExceeded {
            what: "index section_count",
            value: u64::from(n),
            max: u64::from(SECTIONS_MAX),
        });
    }
    let header = IndexHeader {
        base_seq: c.u64()?,
        record_count: c.u32()?,
        block_count: c.u32()?,
        segment_len: c.u64()?,
        min_ts: c.i64()?,
        max_ts: c.i64()?,
    };
    Ok((version, n, header))
}

/// The section table that follows a header of `count` sections (`count` x 24 bytes and its
/// CRC32), checked, without reading any section.
pub fn section_table(table: &[u8], count: u32) -> Result<Vec<SectionEntry>, FormatError> {
    const WHAT: &str = "index section table";
    let mut t = Cursor::new(WHAT, table);
    let rows = t.take(count as usize * SECTION_ENTRY_LEN)?;
    verify_crc32(WHAT, t.u32()?, rows)?;
    let mut c = Cursor::new(WHAT, rows);
    (0..count)
        .map(|_| {
            Ok(SectionEntry {
                id: c.u32()?,
                crc: c.u32()?,
                offset: c.u64()?,
                len: c.u64()?,
            })
        })
        .collect()
}

/// The header of an index file, from its first 64 bytes (magic, version and checksum checked;
/// no section is read).
pub fn decode_index_header(head: &[u8]) -> Result<IndexHeader, FormatError> {
    decode_head(head).map(|(_, _, h)| h)
}

/// The length and CRC32 of the ids section, read from the start of an index file (header and
/// section table, both checked; no section is read). `(0, 0)` for an index without one.
pub fn ids_section_signature(head: &[u8]) -> Result<(u64, u32), FormatError> {
    let n = section_count(head)?;
    let table = head.get(INDEX_HEADER_LEN..).unwrap_or_default();
    let rows = section_table(table, n)?;
    Ok(rows
        .iter()
        .find(|r| r.id == SECTION_IDS)
        .map_or((0, 0), |r| (r.len, r.crc)))
}

/// The summary section's raw-bytes total, checked against its CRC32.
pub fn decode_summary(bytes: &[u8], entry: &SectionEntry) -> Result<u64, FormatError> {
    verify_crc32("index summary", entry.crc, bytes)?;
    let mut c = Cursor::new("index summary", bytes);
    c.u64()
}

/// One section of an index file: its id, the CRC32 its table row states and where its bytes
/// are (inside the file, checked by [`IndexView::locate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedSection {
    pub id: u32,
    pub crc: u32,
    pub range: std::ops::Range<usize>,
}

impl LocatedSection {
    /// The section's bytes within `bytes` (the file it was located in), checked against its
    /// CRC32.
    pub fn checked<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], FormatError> {
        let b = bytes
            .get(self.range.clone())
            .ok_or(FormatError::Truncated {
                what: "index section",
                needed: self.range.end as u64,
                available: bytes.len() as u64,
            })?;
        verify_crc32("index section", self.crc, b)?;
        Ok(b)
    }
}

/// A parsed index file borrowed from its bytes: header and section table checked, every
/// section located inside the file; with [`IndexView::parse`], every section checked too.
#[derive(Debug, Clone)]
pub struct IndexView<'a> {
    pub header: IndexHeader,
    /// The file's format version: since [`COMPACT_INDEX_VERSION_MIN`] the ts column is packed
    /// and dictionary values are tagged posting lists.
    pub version: u32,
    bytes: &'a [u8],
    sections: Vec<LocatedSection>,
}

impl<'a> IndexView<'a> {
    /// Parses and verifies every checksum in the file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let view = Self::locate(bytes)?;
        for s in &view.sections {
            s.checked(bytes)?;
        }
        Ok(view)
    }

    /// Checks the header and the section table and that every section lies inside the file,
    /// without reading any section: what a reader needs before it checks only the sections it
    /// uses ([`LocatedSection::checked`]). Reads the file's first page, whatever its size.
    pub fn locate(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let (version, section_count, header) = decode_head(bytes)?;
        let table = section_table(
            bytes.get(INDEX_HEADER_LEN..).unwrap_or_default(),
            section_count,
        )?;
        let sections = table
            .into_iter()
            .map(|row| {
                let end = row
                    .offset
                    .checked_add(row.len)
                    .filter(|e| *e <= bytes.len() as u64)
                    .ok_or(FormatError::Truncated {
                        what: "index section",
                        needed: row.offset.saturating_add(row.len),
                        available: bytes.len() as u64,
                    })?;
                Ok(LocatedSection {
                    id: row.id,
                    crc: row.crc,
                    range: row.offset as usize..end as usize,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        Ok(IndexView {
            header,
            version,
            bytes,
            sections,
        })
    }

    /// The section's bytes, or an empty slice when the file has no such section (checked only
    /// if the view came from [`IndexView::parse`]).
    pub fn section(&self, id: u32) -> &'a [u8] {
        self.sections
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| self.bytes.get(s.range.clone()))
            .unwrap_or(&[])
    }

    /// The located sections, in table order.
    pub fn sections(&self) -> &[LocatedSection] {
        &self.sections
    }

    pub fn has_section(&self, id: u32) -> bool {
        self.sections.iter().any(|s| s.id == id)
    }
}

pub fn encode_block_table(entries: &[BlockEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * BLOCK_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.first_ordinal.to_le_bytes());
        out.extend_from_slice(&e.count.to_le_bytes());
        out.extend_from_slice(&e.min_ts.to_le_bytes());
        out.extend_from_slice(&e.max_ts.to_le_bytes());
    }
    out
}

/// Decodes the block table and checks it against the header: blocks contiguous in ordinals,
/// covering exactly `record_count` records, offsets increasing and inside the segment.
pub fn decode_block_table(
    bytes: &[u8],
    header: &IndexHeader,
) -> Result<Vec<BlockEntry>, FormatError> {
    const WHAT: &str = "index block table";
    if bytes.len() != header.block_count as usize * BLOCK_ENTRY_LEN {
        return Err(FormatError::invalid(
            WHAT,
            "length does not match block_count",
        ));
    }
    let mut c = Cursor::new(WHAT, bytes);
    let mut out = Vec::with_capacity(header.block_count as usize);
    let mut next_ordinal = 0u32;
    let mut last_offset = 0u64;
    for _ in 0..header.block_count {
        let e = BlockEntry {
            offset: c.u64()?,
            first_ordinal: c.u32()?,
            count: c.u32()?,
            min_ts: c.i64()?,
            max_ts: c.i64()?,
        };
        if e.first_ordinal != next_ordinal
            || e.count == 0
            || e.offset < last_offset
            || e.offset >= header.segment_len
        {
            return Err(FormatError::invalid(WHAT, "blocks are not contiguous"));
        }
        next_ordinal = next_ordinal
            .checked_add(e.count)
            .ok_or_else(|| FormatError::invalid(WHAT, "ordinal overflow"))?;
        last_offset = e.offset;
        out.push(e);
    }
    if next_ordinal != header.record_count {
        return Err(FormatError::invalid(
            WHAT,
            "blocks do not cover record_count",
        ));
    }
    Ok(out)
}

/// A [`SECTION_TAG_HOURS`] value: `(hour number, count)` entries, hours strictly increasing,
/// counts at least 1.
pub fn encode_hour_counts(entries: &[(i64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * HOUR_COUNT_ENTRY_LEN);
    let mut prev: Option<i64> = None;
    for &(hour, count) in entries {
        assert!(
            prev.is_none_or(|p| p < hour),
            "hour counts must be in strictly increasing hours"
        );
        assert!(count > 0, "an hour count is at least 1");
        prev = Some(hour);
        out.extend_from_slice(&hour.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

/// A checked [`SECTION_TAG_HOURS`] value: whole entries, hours strictly increasing, no zero
/// count, and no hour outside the segment's `[min_ts, max_ts]`.
#[derive(Debug, Clone, Copy)]
pub struct HourCounts<'a> {
    bytes: &'a [u8],
}

impl<'a> HourCounts<'a> {
    pub fn parse(bytes: &'a [u8], header: &IndexHeader) -> Result<Self, FormatError> {
        const WHAT: &str = "tag hour counts";
        if !bytes.len().is_multiple_of(HOUR_COUNT_ENTRY_LEN) {
            return Err(FormatError::invalid(WHAT, "not a whole number of entries"));
        }
        let v = HourCounts { bytes };
        let (lo, hi) = (
            header.min_ts.div_euclid(HOUR_MS),
            header.max_ts.div_euclid(HOUR_MS),
        );
        let mut prev: Option<i64> = None;
        let mut total = 0u64;
        for (hour, count) in v.iter() {
            if prev.is_some_and(|p| p >= hour) {
                return Err(FormatError::invalid(WHAT, "hours not strictly increasing"));
            }
            if count == 0 || hour < lo || hour > hi {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("entry (hour {hour}, count {count}) outside the segment"),
                ));
            }
            prev = Some(hour);
            total += u64::from(count);
        }
        if total > u64::from(header.record_count) {
            return Err(FormatError::LimitExceeded {
                what: WHAT,
                value: total,
                max: u64::from(header.record_count),
            });
        }
        Ok(v)
    }

    /// The `(hour number, count)` entries, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (i64, u32)> + 'a {
        self.bytes.chunks_exact(HOUR_COUNT_ENTRY_LEN).map(|e| {
            let mut hour = [0u8; 8];
            let mut count = [0u8; 4];
            hour.copy_from_slice(&e[..8]);
            count.copy_from_slice(&e[8..]);
            (i64::from_le_bytes(hour), u32::from_le_bytes(count))
        })
    }
}

/// Dictionary key for a minute bucket: the bucket's start ts with the sign bit flipped, big
/// endian, so that byte order equals numeric order.
pub fn minute_key(start_ts: i64) -> [u8; 8] {
    ((start_ts as u64) ^ (1u64 << 63)).to_be_bytes()
}

pub fn minute_from_key(key: &[u8]) -> Result<i64, FormatError> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| FormatError::invalid("minute key", "not 8 bytes"))?;
    Ok((u64::from_be_bytes(arr) ^ (1u64 << 63)) as i64)
}

/// The id section: (64-bit hash of the id, ordinal) pairs sorted by hash.
pub fn encode_ids(pairs: &mut [(u64, u32)]) -> Vec<u8> {
    pairs.sort_unstable();
    let mut out = Vec::with_capacity(pairs.len() * ID_ENTRY_LEN);
    for (h, o) in pairs.iter() {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&o.to_le_bytes());
    }
    out
}

#[derive(Debug, Clone, Copy)]
pub struct IdsView<'a> {
    bytes: &'a [u8],
}

impl<'a> IdsView<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if !bytes.len().is_multiple_of(ID_ENTRY_LEN) {
            return Err(FormatError::invalid(
                "index ids",
                "length not a multiple of 12",
            ));
        }
        Ok(IdsView { bytes })
    }

    fn at(&self, i: usize) -> (u64, u32) {
        let b = &self.bytes[i * ID_ENTRY_LEN..(i + 1) * ID_ENTRY_LEN];
        let mut h = [0u8; 8];
        h.copy_from_slice(&b[..8]);
        (
            u64::from_le_bytes(h),
            u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        )
    }

    pub fn len(&self) -> usize {
        self.bytes.len() / ID_ENTRY_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Ordinals whose id hashes to `hash` (usually zero or one).
    pub fn lookup(&self, hash: u64) -> Vec<u32> {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(mid).0 < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        while lo < n && self.at(lo).0 == hash {
            out.push(self.at(lo).1);
            lo += 1;
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> IndexHeader {
        IndexHeader {
            base_seq: 5,
            record_count: 3,
            block_count: 1,
            segment_len: 500,
            min_ts: 1,
            max_ts: 9,
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = IndexWriter::new(header());
        w.add_section(
            SECTION_BLOCKS,
            encode_block_table(&[BlockEntry {
                offset: 32,
                first_ordinal: 0,
                count: 3,
                min_ts: 1,
                max_ts: 9,
            }]),
        );
        w.add_section(
            SECTION_ENTITIES,
            encode_dict(vec![
                (&b"a"[..], vec![1, 2]),
                (&b"b"[..], vec![]),
                (&b"c"[..], vec![3]),
            ]),
        );
        w.add_section(SECTION_IDS, encode_ids(&mut [(9, 1), (3, 0), (9, 2)]));
        w.finish()
    }

    #[test]
    fn index_round_trips() {
        let bytes = sample();
        let v = IndexView::parse(&bytes).unwrap();
        assert_eq!(v.header, header());
        let blocks = decode_block_table(v.section(SECTION_BLOCKS), &v.header).unwrap();
        assert_eq!(blocks.len(), 1);
        let d = DictView::parse(v.section(SECTION_ENTITIES), v.version).unwrap();
        assert_eq!(d.get(b"a").unwrap(), Some(&[1u8, 2][..]));
        assert_eq!(d.get(b"b").unwrap(), Some(&[][..]));
        assert_eq!(d.get(b"c").unwrap(), Some(&[3u8][..]));
        assert_eq!(d.get(b"d").unwrap(), None);
        assert_eq!(d.get(b"").unwrap(), None);
        let ids = IdsView::parse(v.section(SECTION_IDS)).unwrap();
        assert_eq!(ids.lookup(9), vec![1, 2]);
        assert_eq!(ids.lookup(3), vec![0]);
        assert!(ids.lookup(4).is_empty());
        assert!(v.section(SECTION_TAGS).is_empty());
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let good = sample();
        for i in 0..good.len() * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(IndexView::parse(&b).is_err(), "bit {i}");
        }
        for cut in 0..good.len() {
            assert!(IndexView::parse(&good[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn minute_keys_sort_numerically() {
        let mut v = vec![-120_000i64, -60_000, 0, 60_000, i64::MIN, i64::MAX];
        let mut keys: Vec<_> = v.iter().map(|t| minute_key(*t)).collect();
        keys.sort();
        v.sort();
        let back: Vec<i64> = keys.iter().map(|k| minute_from_key(k).unwrap()).collect();
        assert_eq!(back, v);
    }

    #[test]
    fn hour_counts_round_trip_and_bad_values_are_refused() {
        let h = IndexHeader {
            record_count: 10,
            min_ts: -HOUR_MS,
            max_ts: 3 * HOUR_MS - 1,
            ..header()
        };
        let good = encode_hour_counts(&[(-1, 2), (0, 3), (2, 5)]);
        let v = HourCounts::parse(&good, &h).unwrap();
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![(-1, 2), (0, 3), (2, 5)]);
        assert_eq!(HourCounts::parse(&[], &h).unwrap().iter().count(), 0);
        let bad = [
            good[..good.len() - 1].to_vec(),       // a torn entry
            encode_hour_counts(&[(0, 3), (1, 8)]), // more than record_count
            encode_hour_counts(&[(3, 1)]),         // after max_ts
            encode_hour_counts(&[(-2, 1)]),        // before min_ts
            [encode_hour_counts(&[(1, 1)]), encode_hour_counts(&[(0, 1)])].concat(), // order
            [encode_hour_counts(&[(1, 1)]), encode_hour_counts(&[(1, 1)])].concat(), // repeat
            {
                let mut z = encode_hour_counts(&[(1, 1)]);
                z[8] = 0; // a zero count
                z
            },
        ];
        for (i, b) in bad.iter().enumerate() {
            assert!(HourCounts::parse(b, &h).is_err(), "bad value {i}");
        }
    }
}
