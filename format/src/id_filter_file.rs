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
//! It has its own version ([`ID_FILTER_VERSION`]): no byte of the other files changed when it
//! was added, and a build that does not know the file lists it as unknown and leaves it alone.

use crate::cursor::Cursor;
use crate::{verify_crc32, FormatError};

pub const ID_FILTER_MAGIC: [u8; 8] = *b"ECHOLIDF";
/// Version of this file's layout (independent of [`crate::FORMAT_VERSION`]).
pub const ID_FILTER_VERSION: u32 = 1;
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

/// A part to encode, borrowed from wherever it lives.
#[derive(Debug, Clone, Copy)]
pub struct PartRef<'a> {
    pub base_seq: u64,
    pub end_seq: u64,
    pub ids: u64,
    pub capacity: u64,
    pub segments: &'a [SegmentIds],
    pub blocks: &'a [[u32; 8]],
}

impl FilterPart {
    pub fn as_ref(&self) -> PartRef<'_> {
        PartRef {
            base_seq: self.base_seq,
            end_seq: self.end_seq,
            ids: self.ids,
            capacity: self.capacity,
            segments: &self.segments,
            blocks: &self.blocks,
        }
    }
}

/// The file's bytes for `parts` (oldest first).
pub fn encode_id_filter(parts: &[PartRef<'_>]) -> Vec<u8> {
    let bytes: usize = parts
        .iter()
        .map(|p| {
            PART_HEAD_LEN
                + 4
                + p.segments.len() * SEGMENT_ENTRY_LEN
                + 4
                + p.blocks.len() * ID_FILTER_BLOCK_LEN
                + 4
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER_LEN + bytes);
    out.extend_from_slice(&ID_FILTER_MAGIC);
    out.extend_from_slice(&ID_FILTER_VERSION.to_le_bytes());
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    let crc = crate::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for p in parts {
        let start = out.len();
        for v in [
            p.base_seq,
            p.end_seq,
            p.ids,
            p.capacity,
            p.blocks.len() as u64,
        ] {
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
        let start = out.len();
        for block in p.blocks {
            for w in block {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        let crc = crate::crc32(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Decodes a whole file, every checksum verified. Arbitrary bytes give an error, and no
/// allocation is larger than the bytes given (every count is checked against what is left).
pub fn decode_id_filter(bytes: &[u8]) -> Result<Vec<FilterPart>, FormatError> {
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
    let parts = (0..count)
        .map(|_| decode_part(bytes, &mut c))
        .collect::<Result<Vec<_>, _>>()?;
    if !c.is_empty() {
        return Err(FormatError::invalid(
            WHAT,
            format!("{} bytes after the last part", c.remaining()),
        ));
    }
    check_chain(&parts)?;
    Ok(parts)
}

fn decode_part(bytes: &[u8], c: &mut Cursor<'_>) -> Result<FilterPart, FormatError> {
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
    let body = c.take(block_count as usize * ID_FILTER_BLOCK_LEN)?;
    verify_crc32("id filter part blocks", c.u32()?, body)?;
    let blocks = body
        .chunks_exact(ID_FILTER_BLOCK_LEN)
        .map(|b| {
            let mut block = [0u32; 8];
            for (w, bytes) in block.iter_mut().zip(b.chunks_exact(4)) {
                let mut le = [0u8; 4];
                le.copy_from_slice(bytes);
                *w = u32::from_le_bytes(le);
            }
            block
        })
        .collect();
    Ok(FilterPart {
        base_seq,
        end_seq,
        ids,
        capacity,
        segments,
        blocks,
    })
}

/// Parts follow each other without gap or overlap, and each one's segments lie inside it, in
/// order: what the engine relies on when it adopts them.
fn check_chain(parts: &[FilterPart]) -> Result<(), FormatError> {
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

    #[test]
    fn parts_round_trip() {
        let parts = vec![part(1, 10, 3), part(10, 30, 5), part(30, 31, 0)];
        let bytes = encode_id_filter(&parts.iter().map(FilterPart::as_ref).collect::<Vec<_>>());
        assert_eq!(decode_id_filter(&bytes).unwrap(), parts);
        let empty = encode_id_filter(&[]);
        assert_eq!(decode_id_filter(&empty).unwrap(), vec![]);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_an_error() {
        let parts = [part(1, 10, 2)];
        let bytes = encode_id_filter(&parts.iter().map(FilterPart::as_ref).collect::<Vec<_>>());
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                decode_id_filter(&b).is_err(),
                "bit {i} flipped was accepted"
            );
        }
        for n in 0..bytes.len() {
            assert!(decode_id_filter(&bytes[..n]).is_err(), "{n} bytes accepted");
        }
    }

    #[test]
    fn parts_with_a_gap_are_refused() {
        let parts = [part(1, 10, 1), part(11, 30, 1)];
        let bytes = encode_id_filter(&parts.iter().map(FilterPart::as_ref).collect::<Vec<_>>());
        let err = decode_id_filter(&bytes).unwrap_err();
        assert!(matches!(err, FormatError::Invalid { .. }), "{err}");
    }

    #[test]
    fn a_part_count_over_the_limit_names_the_field() {
        let mut bytes = encode_id_filter(&[]);
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
