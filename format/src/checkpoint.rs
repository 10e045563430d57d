//! A checkpoint of the active segment's index: `<base>.ckpt`, a sequence of parts, each the
//! postings of the records one stretch of the segment added, so that open loads them instead
//! of decompressing and decoding every record again.
//!
//! The file is derived data. A part covers only segment bytes that were durable when it was
//! written, names the segment (`base_seq`) and the exact stretch it covers (ordinals, blocks,
//! byte offsets), and carries CRC32s of its header and body. A reader uses the parts from the
//! first on while each one checks and continues the one before it; the first that does not
//! (torn by a crash, damaged, of another version) ends the checkpoint, and the segment is
//! scanned from where the last good part ends. A build that does not know the file lists it
//! as unknown and leaves it alone: it has its own version ([`CHECKPOINT_VERSION`]) and no byte
//! of any other file changed when it was added.
//!
//! A key's ordinals ascend within a part (checked here), so a loader appending a part's
//! ordinals to the ones of the parts before keeps every posting list ascending. Keys are in
//! no particular order (the writer takes them as its hash maps hold them: sorting them cost
//! a third of a part's time), so a section could name a key twice; a loader merges the two.

use std::ops::Range;

use crate::cursor::{put_len_prefixed, put_varint, unzigzag, zigzag, Cursor};
use crate::limits::{
    ENTITY_BYTES_MAX, KIND_BYTES_MAX, SEGMENT_RECORDS_MAX, TAGS_COUNT_MAX, TAG_BYTES_MAX,
};
use crate::{crc32, verify_crc32, FormatError};

pub const CHECKPOINT_MAGIC: [u8; 4] = *b"ECKP";
/// Version of this file's layout (independent of [`crate::FORMAT_VERSION`]).
pub const CHECKPOINT_VERSION: u32 = 1;
/// Bytes of a part header, its CRC32 included.
pub const PART_HEADER_LEN: usize = 72;
/// Bytes of one part's body a reader accepts.
pub const PART_BODY_BYTES_MAX: u64 = 1 << 30;
/// Stored size of one segment block a part may name (a block body's bound plus headroom for
/// its header).
const BLOCK_LEN_MAX: u64 = crate::limits::BLOCK_BODY_BYTES_MAX as u64 + 4096;

const WHAT: &str = "checkpoint part";

/// What a part covers: the segment, its records `first_ordinal..first_ordinal +
/// record_count`, its blocks `first_block..first_block + block_count`, the bytes
/// `segment_start..segment_end` of the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartHeader {
    pub base_seq: u64,
    pub first_ordinal: u32,
    pub record_count: u32,
    pub first_block: u32,
    pub block_count: u32,
    pub segment_start: u64,
    pub segment_end: u64,
    /// Decompressed bytes of the part's records.
    pub raw_bytes: u64,
    /// The checksum in the header of the part's last block, as the segment holds it: a reader
    /// checks that block before trusting the part's stretch of the segment.
    pub last_block_crc: u32,
}

/// One block of the segment, as the segment's block table needs it; its offset and first
/// ordinal follow from the blocks before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartBlock {
    pub len: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// A part to write: keys with the ordinals they got within the part's records.
#[derive(Debug, Clone, Default)]
pub struct PartSource<'a> {
    pub blocks: Vec<PartBlock>,
    pub ts: &'a [i64],
    pub entities: Vec<(&'a [u8], &'a [u32])>,
    pub kinds: Vec<(&'a [u8], &'a [u32])>,
    pub tags: Vec<(&'a [u8], &'a [u32])>,
    pub minutes: Vec<(i64, &'a [u32])>,
    /// `(id hash, ordinal)` of every record with an id, by ordinal.
    pub ids: Vec<(u64, u32)>,
}

/// String keys with where their ordinals are in [`Part::ordinals`], keys borrowed from a
/// part's bytes.
pub type Keys<'a> = Vec<(&'a [u8], Range<usize>)>;

/// A part as read: keys borrowed from the file's bytes, ordinals owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub header: PartHeader,
    pub blocks: Vec<PartBlock>,
    pub ts: Vec<i64>,
    pub entities: Keys<'a>,
    pub kinds: Keys<'a>,
    pub tags: Keys<'a>,
    pub minutes: Vec<(i64, Range<usize>)>,
    pub ids: Vec<(u64, u32)>,
    /// The ordinals of every key of every section, one after the other: one allocation per
    /// part rather than one per key.
    pub ordinals: Vec<u32>,
}

impl Part<'_> {
    /// The ordinals at `r` (a range this part's decoder handed out).
    pub fn ordinals(&self, r: &Range<usize>) -> &[u32] {
        self.ordinals.get(r.clone()).unwrap_or_default()
    }
}

/// Encodes one part. `header.record_count`, `block_count` and `segment_end` must agree with
/// `src` (asserted): the writer builds both from the same index.
pub fn encode_part(header: &PartHeader, src: &PartSource<'_>) -> Vec<u8> {
    assert_eq!(src.ts.len(), header.record_count as usize);
    assert_eq!(src.blocks.len(), header.block_count as usize);
    let mut body = Vec::new();
    let mut covered = 0u64;
    for b in &src.blocks {
        put_varint(&mut body, u64::from(b.len));
        put_varint(&mut body, u64::from(b.count));
        put_varint(&mut body, zigzag(b.min_ts));
        put_varint(&mut body, b.max_ts.wrapping_sub(b.min_ts) as u64);
        covered += u64::from(b.len);
    }
    assert_eq!(header.segment_start + covered, header.segment_end);
    let mut prev = 0i64;
    for &t in src.ts {
        put_varint(&mut body, zigzag(t.wrapping_sub(prev)));
        prev = t;
    }
    for section in [&src.entities, &src.kinds, &src.tags] {
        put_varint(&mut body, section.len() as u64);
        for (key, ords) in section {
            put_len_prefixed(&mut body, key);
            put_ordinals(&mut body, header.first_ordinal, ords);
        }
    }
    put_varint(&mut body, src.minutes.len() as u64);
    for (minute, ords) in &src.minutes {
        put_varint(&mut body, zigzag(*minute));
        put_ordinals(&mut body, header.first_ordinal, ords);
    }
    put_varint(&mut body, src.ids.len() as u64);
    let mut prev = header.first_ordinal;
    for &(hash, ord) in &src.ids {
        body.extend_from_slice(&hash.to_le_bytes());
        put_varint(&mut body, u64::from(ord - prev));
        prev = ord;
    }
    let mut out = Vec::with_capacity(PART_HEADER_LEN + body.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out.extend_from_slice(&header.base_seq.to_le_bytes());
    out.extend_from_slice(&header.first_ordinal.to_le_bytes());
    out.extend_from_slice(&header.record_count.to_le_bytes());
    out.extend_from_slice(&header.first_block.to_le_bytes());
    out.extend_from_slice(&header.block_count.to_le_bytes());
    out.extend_from_slice(&header.segment_start.to_le_bytes());
    out.extend_from_slice(&header.segment_end.to_le_bytes());
    out.extend_from_slice(&header.raw_bytes.to_le_bytes());
    out.extend_from_slice(&header.last_block_crc.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    let header_crc = crc32(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(out.len(), PART_HEADER_LEN);
    out.extend_from_slice(&body);
    out
}

/// The ordinals of one key: their count, then each one's distance to the one before (the
/// first one's to the part's first ordinal).
fn put_ordinals(out: &mut Vec<u8>, first_ordinal: u32, ords: &[u32]) {
    put_varint(out, ords.len() as u64);
    let mut prev = first_ordinal;
    for &o in ords {
        put_varint(out, u64::from(o - prev));
        prev = o;
    }
}

/// Decodes the part at the start of `bytes`; returns it and its length in bytes.
pub fn decode_part(bytes: &[u8]) -> Result<(Part<'_>, usize), FormatError> {
    let (header, body, end) = checked(bytes)?;
    Ok((decode_body(header, body)?, end))
}

/// The header of the part at the start of `bytes` and the part's length in bytes, with both
/// CRC32s checked: where a checkpoint's intact parts end, without decoding their bodies.
pub fn check_part(bytes: &[u8]) -> Result<(PartHeader, usize), FormatError> {
    checked(bytes).map(|(header, _, end)| (header, end))
}

/// The header, the body (its CRC32 checked) and the part's length.
fn checked(bytes: &[u8]) -> Result<(PartHeader, &[u8], usize), FormatError> {
    let (header, body_len, body_crc) = decode_part_header(bytes)?;
    let end = PART_HEADER_LEN + body_len as usize;
    let body = bytes
        .get(PART_HEADER_LEN..end)
        .ok_or(FormatError::Truncated {
            what: WHAT,
            needed: end as u64,
            available: bytes.len() as u64,
        })?;
    verify_crc32("checkpoint part body", body_crc, body)?;
    Ok((header, body, end))
}

/// The header, the body's length and the body's CRC32.
fn decode_part_header(bytes: &[u8]) -> Result<(PartHeader, u32, u32), FormatError> {
    let mut c = Cursor::new(WHAT, bytes);
    let head = c.take(PART_HEADER_LEN - 4)?;
    let stored = c.u32()?;
    let mut h = Cursor::new(WHAT, head);
    if h.array::<4>()? != CHECKPOINT_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    verify_crc32("checkpoint part header", stored, head)?;
    let version = h.u32()?;
    if version != CHECKPOINT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: version,
            supported: CHECKPOINT_VERSION,
        });
    }
    let header = PartHeader {
        base_seq: h.u64()?,
        first_ordinal: h.u32()?,
        record_count: h.u32()?,
        first_block: h.u32()?,
        block_count: h.u32()?,
        segment_start: h.u64()?,
        segment_end: h.u64()?,
        raw_bytes: h.u64()?,
        last_block_crc: h.u32()?,
    };
    let body_len = h.u32()?;
    let body_crc = h.u32()?;
    let ordinals_end = u64::from(header.first_ordinal) + u64::from(header.record_count);
    limit(
        "checkpoint ordinals",
        ordinals_end,
        u64::from(SEGMENT_RECORDS_MAX),
    )?;
    limit(
        "checkpoint block_count",
        u64::from(header.block_count),
        u64::from(header.record_count),
    )?;
    limit(
        "checkpoint body_len",
        u64::from(body_len),
        PART_BODY_BYTES_MAX,
    )?;
    if header.segment_end < header.segment_start {
        return Err(FormatError::invalid(
            WHAT,
            "segment_end before segment_start",
        ));
    }
    Ok((header, body_len, body_crc))
}

fn limit(what: &'static str, value: u64, max: u64) -> Result<(), FormatError> {
    if value > max {
        return Err(FormatError::LimitExceeded { what, value, max });
    }
    Ok(())
}

fn decode_body(header: PartHeader, body: &[u8]) -> Result<Part<'_>, FormatError> {
    let mut c = Cursor::new(WHAT, body);
    let records = header.record_count;
    let blocks = decode_blocks(&header, &mut c)?;
    // Every value below takes at least one byte: counts beyond the body are refused before
    // anything is allocated for them.
    let mut ts = Vec::with_capacity((records as usize).min(c.remaining()));
    let mut prev = 0i64;
    for _ in 0..records {
        prev = prev.wrapping_add(unzigzag(c.varint()?));
        ts.push(prev);
    }
    let total = u64::from(records);
    let mut ords = Vec::with_capacity((3 * records as usize).min(c.remaining()));
    let o = &mut ords;
    let entities = decode_keys(&mut c, &header, o, ENTITIES, ENTITY_BYTES_MAX, total)?;
    let kinds = decode_keys(&mut c, &header, o, KINDS, KIND_BYTES_MAX, total)?;
    let tags_max = total * TAGS_COUNT_MAX as u64;
    let tags = decode_keys(&mut c, &header, o, TAGS, TAG_BYTES_MAX, tags_max)?;
    let minutes = decode_minutes(&mut c, &header, o)?;
    let ids = decode_ids(&mut c, &header)?;
    if !c.is_empty() {
        return Err(FormatError::invalid(
            WHAT,
            format!("{} bytes after the ids", c.remaining()),
        ));
    }
    Ok(Part {
        header,
        blocks,
        ts,
        entities,
        kinds,
        tags,
        minutes,
        ids,
        ordinals: ords,
    })
}

const ENTITIES: &str = "checkpoint entities";
const KINDS: &str = "checkpoint kinds";
const TAGS: &str = "checkpoint tags";

fn decode_blocks(header: &PartHeader, c: &mut Cursor<'_>) -> Result<Vec<PartBlock>, FormatError> {
    let mut blocks = Vec::with_capacity((header.block_count as usize).min(c.remaining()));
    let (mut bytes, mut records) = (0u64, 0u64);
    for _ in 0..header.block_count {
        let len = c.varint()?;
        let count = c.varint()?;
        let min_ts = unzigzag(c.varint()?);
        let max_ts = min_ts.wrapping_add(c.varint()? as i64);
        limit("checkpoint block len", len, BLOCK_LEN_MAX)?;
        limit(
            "checkpoint block count",
            count,
            u64::from(header.record_count),
        )?;
        if count == 0 || max_ts < min_ts {
            return Err(FormatError::invalid(
                WHAT,
                format!("block of {count} records with ts {min_ts}..={max_ts}"),
            ));
        }
        bytes += len;
        records += count;
        blocks.push(PartBlock {
            len: len as u32,
            count: count as u32,
            min_ts,
            max_ts,
        });
    }
    if records != u64::from(header.record_count)
        || header.segment_start.checked_add(bytes) != Some(header.segment_end)
    {
        return Err(FormatError::invalid(
            WHAT,
            format!(
                "blocks hold {records} records in {bytes} bytes; the header says {} records in {}",
                header.record_count,
                header.segment_end - header.segment_start
            ),
        ));
    }
    Ok(blocks)
}

/// Ordinals of one key (ascending, within the part's records), appended to `out`; returns
/// where they are in it.
fn decode_ordinals(
    c: &mut Cursor<'_>,
    header: &PartHeader,
    out: &mut Vec<u32>,
) -> Result<Range<usize>, FormatError> {
    let n = c.varint()?;
    limit("checkpoint postings", n, u64::from(header.record_count))?;
    if n == 0 {
        return Err(FormatError::invalid(WHAT, "a key without ordinals"));
    }
    let end = u64::from(header.first_ordinal) + u64::from(header.record_count);
    let start = out.len();
    out.reserve((n as usize).min(c.remaining()));
    let mut prev = u64::from(header.first_ordinal);
    for i in 0..n {
        prev = next_ordinal(WHAT, prev, c.varint()?, i == 0, end)?;
        out.push(prev as u32);
    }
    Ok(start..out.len())
}

/// The ordinal `d` after `prev`, checked: above it (the `first` one may equal the part's first
/// ordinal) and before the part's `end`.
fn next_ordinal(
    what: &'static str,
    prev: u64,
    d: u64,
    first: bool,
    end: u64,
) -> Result<u64, FormatError> {
    if !first && d == 0 {
        return Err(FormatError::invalid(what, "ordinals not ascending"));
    }
    let next = prev.saturating_add(d);
    if next >= end {
        return Err(FormatError::invalid(
            what,
            format!("ordinal {next} outside the part (ends at {end})"),
        ));
    }
    Ok(next)
}

/// A section of string keys with at most `postings_max` ordinals in all.
fn decode_keys<'a>(
    c: &mut Cursor<'a>,
    header: &PartHeader,
    ords: &mut Vec<u32>,
    what: &'static str,
    key_bytes_max: usize,
    postings_max: u64,
) -> Result<Keys<'a>, FormatError> {
    let n = c.varint()?;
    limit(what, n, postings_max)?;
    let mut out: Keys<'a> = Vec::with_capacity((n as usize).min(c.remaining()));
    let mut postings = 0u64;
    for _ in 0..n {
        let key = c.len_prefixed(what, key_bytes_max)?;
        let r = decode_ordinals(c, header, ords)?;
        postings += r.len() as u64;
        limit(what, postings, postings_max)?;
        out.push((key, r));
    }
    Ok(out)
}

fn decode_minutes(
    c: &mut Cursor<'_>,
    header: &PartHeader,
    ords: &mut Vec<u32>,
) -> Result<Vec<(i64, Range<usize>)>, FormatError> {
    const WHAT_MINUTES: &str = "checkpoint minutes";
    let n = c.varint()?;
    limit(WHAT_MINUTES, n, u64::from(header.record_count))?;
    let mut out: Vec<(i64, Range<usize>)> = Vec::with_capacity((n as usize).min(c.remaining()));
    for _ in 0..n {
        let minute = unzigzag(c.varint()?);
        out.push((minute, decode_ordinals(c, header, ords)?));
    }
    Ok(out)
}

fn decode_ids(c: &mut Cursor<'_>, header: &PartHeader) -> Result<Vec<(u64, u32)>, FormatError> {
    const WHAT_IDS: &str = "checkpoint ids";
    let n = c.varint()?;
    limit(WHAT_IDS, n, u64::from(header.record_count))?;
    // An id takes 9 bytes at least.
    let mut out = Vec::with_capacity((n as usize).min(c.remaining() / 9));
    let end = u64::from(header.first_ordinal) + u64::from(header.record_count);
    let mut prev = u64::from(header.first_ordinal);
    for i in 0..n {
        let hash = c.u64()?;
        // Ascending: one id a record at most.
        prev = next_ordinal(WHAT_IDS, prev, c.varint()?, i == 0, end)?;
        out.push((hash, prev as u32));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (PartHeader, Vec<u8>) {
        let ts = [1_700_000_000_000i64, 1_700_000_000_005, 1_699_999_999_000];
        let src = PartSource {
            blocks: vec![
                PartBlock {
                    len: 100,
                    count: 2,
                    min_ts: ts[0],
                    max_ts: ts[1],
                },
                PartBlock {
                    len: 50,
                    count: 1,
                    min_ts: ts[2],
                    max_ts: ts[2],
                },
            ],
            ts: &ts,
            entities: vec![(b"a", &[10, 12]), (b"b", &[11])],
            kinds: vec![(b"k", &[10, 11, 12])],
            tags: vec![(b"tenant:1", &[10]), (b"x", &[10, 11])],
            minutes: vec![(-5, &[12]), (28_333_333, &[10, 11])],
            ids: vec![(7, 10), (u64::MAX, 12)],
        };
        let header = PartHeader {
            base_seq: 1,
            first_ordinal: 10,
            record_count: 3,
            first_block: 4,
            block_count: 2,
            segment_start: 1000,
            segment_end: 1150,
            raw_bytes: 999,
            last_block_crc: 0xdead_beef,
        };
        (header, encode_part(&header, &src))
    }

    #[test]
    fn a_part_round_trips() {
        let (header, bytes) = sample();
        let (part, len) = decode_part(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(part.header, header);
        assert_eq!(
            part.ts,
            vec![1_700_000_000_000, 1_700_000_000_005, 1_699_999_999_000]
        );
        assert_eq!(part.blocks[1].len, 50);
        let ords = |r| part.ordinals(r).to_vec();
        let entities: Vec<_> = part.entities.iter().map(|(k, r)| (*k, ords(r))).collect();
        assert_eq!(
            entities,
            vec![(&b"a"[..], vec![10, 12]), (&b"b"[..], vec![11])]
        );
        assert_eq!(part.minutes[0].0, -5);
        assert_eq!(ords(&part.minutes[0].1), vec![12]);
        assert_eq!(part.ids, vec![(7, 10), (u64::MAX, 12)]);
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_refused() {
        let (_, bytes) = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode_part(&b).is_err(), "byte {i} bit {bit}");
            }
        }
        for cut in 0..bytes.len() {
            assert!(decode_part(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// A body with a valid CRC but contents that break a rule (a writer bug, or crafted).
    fn with_body(body: &[u8], header: PartHeader) -> Result<(Part<'static>, usize), FormatError> {
        let mut out = Vec::new();
        out.extend_from_slice(&CHECKPOINT_MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&header.base_seq.to_le_bytes());
        for v in [
            header.first_ordinal,
            header.record_count,
            header.first_block,
            header.block_count,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [header.segment_start, header.segment_end, header.raw_bytes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&header.last_block_crc.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(body).to_le_bytes());
        let c = crc32(&out);
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(body);
        let leaked: &'static [u8] = Box::leak(out.into_boxed_slice());
        decode_part(leaked)
    }

    #[test]
    fn ordinals_out_of_order_or_outside_the_part_are_refused() {
        let header = PartHeader {
            base_seq: 1,
            first_ordinal: 0,
            record_count: 2,
            first_block: 0,
            block_count: 1,
            segment_start: 32,
            segment_end: 132,
            raw_bytes: 0,
            last_block_crc: 0,
        };
        let good_blocks_and_ts = |body: &mut Vec<u8>| {
            for v in [100u64, 2, zigzag(5), 0] {
                put_varint(body, v);
            }
            put_varint(body, zigzag(5));
            put_varint(body, 0);
        };
        // Ordinals 1 then 1 again.
        let mut body = Vec::new();
        good_blocks_and_ts(&mut body);
        put_varint(&mut body, 1);
        put_len_prefixed(&mut body, b"a");
        put_varint(&mut body, 2);
        put_varint(&mut body, 1);
        put_varint(&mut body, 0);
        let e = with_body(&body, header).unwrap_err();
        assert!(e.to_string().contains("ascending"), "{e}");
        // An ordinal at the part's end.
        let mut body = Vec::new();
        good_blocks_and_ts(&mut body);
        put_varint(&mut body, 1);
        put_len_prefixed(&mut body, b"a");
        put_varint(&mut body, 1);
        put_varint(&mut body, 2);
        let e = with_body(&body, header).unwrap_err();
        assert!(e.to_string().contains("outside the part"), "{e}");
        // Blocks that do not add up to the header's byte range.
        let mut body = Vec::new();
        for v in [99u64, 2, zigzag(5), 0] {
            put_varint(&mut body, v);
        }
        let e = with_body(&body, header).unwrap_err();
        assert!(e.to_string().contains("blocks hold"), "{e}");
    }
}
