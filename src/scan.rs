//! Scanning a segment file from its first byte: recovery of the active segment at open, and
//! rebuilding a sealed segment's missing or corrupt index.

use echolog_format::block::{decode_block, BlockHeader, BLOCK_HEADER_LEN, BLOCK_MAGIC};
use echolog_format::index::BlockEntry;
use echolog_format::limits::SEGMENT_RECORDS_MAX;
use echolog_format::segment_header::{SegmentHeader, SEGMENT_HEADER_LEN};
use echolog_format::FormatError;

use crate::block_cache::DecodedBlock;
use crate::mem_index::{MemBlock, MemIndex};

/// Result of scanning a segment.
pub struct Scan {
    /// Format version of the segment (from its header).
    pub version: u32,
    pub index: MemIndex,
    /// Where the valid, commit-complete prefix ends. Bytes past it are a torn tail (or
    /// corruption, see `corrupt_at`).
    pub valid_len: u64,
    /// First invalid block, when the scan stopped before the end of the file.
    pub stopped: Option<(u64, FormatError)>,
    /// Set when the damage is not a torn tail and truncating could drop durable data: a later
    /// block proves the damaged bytes were durable (version 2: a valid block flagged
    /// PRIOR_DURABLE; version 1: any valid block with later seqs), or the search for such a
    /// block was cut short by its work bound.
    pub corrupt_at: Option<u64>,
}

/// What the search past damaged bytes found.
#[derive(Debug, PartialEq, Eq)]
enum Search {
    Found(usize),
    NotFound,
    /// Gave up after hashing its bound of bytes (a crafted tail of many fake headers).
    CutShort,
}

/// Scans `bytes` (a whole segment file) whose header must name `base_seq`.
pub fn scan_segment(bytes: &[u8], base_seq: u64) -> Result<Scan, FormatError> {
    let version = check_header(bytes, base_seq)?;
    let index = MemIndex::new(base_seq, SEGMENT_HEADER_LEN as u64);
    Ok(scan_blocks(bytes, 0, index, version))
}

/// Decodes a segment header and checks it names `base_seq`; returns its format version.
pub fn check_header(bytes: &[u8], base_seq: u64) -> Result<u32, FormatError> {
    let header = SegmentHeader::decode(bytes)?;
    if header.base_seq != base_seq {
        return Err(FormatError::Invalid {
            what: "segment header",
            reason: format!(
                "base_seq {} does not match the file name ({base_seq})",
                header.base_seq
            ),
        });
    }
    Ok(header.version)
}

/// Scans the blocks of a segment file of format `version` from `index.len` on, adding them
/// to `index`: `bytes` are the file's bytes from offset `at` (at most `index.len`) to its end.
/// Recovery with a checkpoint starts where the checkpoint ends; without one, past the header.
pub fn scan_blocks(bytes: &[u8], at: u64, mut index: MemIndex, version: u32) -> Scan {
    let base_seq = index.base_seq;
    debug_assert!(at <= index.len);
    let mut pos = (index.len - at) as usize;
    // Blocks of a commit unit whose end marker has not been seen yet.
    let mut pending: Vec<(MemBlock, DecodedBlock)> = Vec::new();
    let mut next_seq = index.end_seq();
    let mut stopped = None;
    while pos < bytes.len() {
        match decode_at(bytes, pos, at, base_seq, next_seq) {
            Ok((block, decoded, end)) => {
                // Every record's contents must decode, not just its framing; decode each once.
                let records: Result<Vec<_>, FormatError> = (0..u64::from(decoded.count()))
                    .map(|i| decoded.record(decoded.first_seq + i))
                    .collect();
                let records = match records {
                    Ok(r) => r,
                    Err(e) => {
                        stopped = Some((at + pos as u64, e));
                        break;
                    }
                };
                next_seq += u64::from(decoded.count());
                pos += block.len as usize;
                if end && pending.is_empty() {
                    // The common case: a block that completes its own commit unit.
                    for r in &records {
                        index.add_record(r);
                    }
                    index.raw_bytes += decoded.raw.len() as u64;
                    index.add_block(block);
                    continue;
                }
                drop(records);
                pending.push((block, decoded));
                if end {
                    for (b, d) in pending.drain(..) {
                        for i in 0..d.count() {
                            // Checked above when the block was read: every record decodes.
                            if let Ok(r) = d.record(d.first_seq + u64::from(i)) {
                                index.add_record(&r);
                            }
                        }
                        index.raw_bytes += d.raw.len() as u64;
                        index.add_block(b);
                    }
                }
            }
            Err(e) => {
                stopped = Some((at + pos as u64, e));
                break;
            }
        }
    }
    let valid_len = index.len;
    let corrupt_at = stopped.as_ref().and_then(|(stop, _)| {
        let from = (*stop - at) as usize + 1;
        let search = if version >= 2 {
            // Only a block written after an fdatasync covering the damaged bytes proves them
            // durable: pages of the unsynced last write may reach the disk in any order.
            later_block(bytes, from, next_seq, true)
        } else {
            later_block(bytes, from, index.end_seq(), false)
        };
        (search != Search::NotFound).then_some(*stop)
    });
    Scan {
        version,
        index,
        valid_len,
        stopped,
        corrupt_at,
    }
}

/// Decodes the block at `pos` of `bytes`, which start at file offset `at`.
fn decode_at(
    bytes: &[u8],
    pos: usize,
    at: u64,
    base_seq: u64,
    expect_seq: u64,
) -> Result<(MemBlock, DecodedBlock, bool), FormatError> {
    let (h, _) = decode_block(&bytes[pos..])?;
    if h.first_seq != expect_seq {
        return Err(FormatError::Invalid {
            what: "block header",
            reason: format!("first_seq {} where {expect_seq} was expected", h.first_seq),
        });
    }
    let first_ordinal = u32::try_from(expect_seq - base_seq)
        .ok()
        .filter(|o| {
            o.checked_add(h.count)
                .is_some_and(|e| e <= SEGMENT_RECORDS_MAX)
        })
        .ok_or(FormatError::LimitExceeded {
            what: "segment records",
            value: expect_seq - base_seq + u64::from(h.count),
            max: u64::from(SEGMENT_RECORDS_MAX),
        })?;
    let decoded = DecodedBlock::decode(&bytes[pos..], h.first_seq, h.count)?;
    let block = MemBlock {
        entry: BlockEntry {
            offset: at + pos as u64,
            first_ordinal,
            count: h.count,
            min_ts: h.min_ts,
            max_ts: h.max_ts,
        },
        len: h.total_len() as u32,
    };
    Ok((block, decoded, h.commit_end()))
}

/// Looks for a checksum-valid block past `from` holding seqs at or after `min_seq` (and, with
/// `prior_durable`, carrying that flag). Headers are checked before any checksum, and at most
/// `2 * bytes.len() + 1 MiB` bytes are hashed in all, so a crafted tail of overlapping fake
/// headers costs linear time, not quadratic.
fn later_block(bytes: &[u8], from: usize, min_seq: u64, prior_durable: bool) -> Search {
    let mut budget = 2 * bytes.len() as u64 + (1 << 20);
    let mut i = from;
    while i + BLOCK_HEADER_LEN <= bytes.len() {
        let candidate = bytes[i + 4..i + 8] == BLOCK_MAGIC;
        let header = candidate
            .then(|| BlockHeader::decode(&bytes[i..i + BLOCK_HEADER_LEN]).ok())
            .flatten()
            .filter(|h| h.first_seq >= min_seq && (!prior_durable || h.prior_durable()))
            .filter(|h| h.total_len() <= (bytes.len() - i) as u64);
        if let Some(h) = header {
            let Some(left) = budget.checked_sub(h.total_len()) else {
                return Search::CutShort;
            };
            budget = left;
            if decode_block(&bytes[i..]).is_ok() {
                return Search::Found(i);
            }
        }
        i += 1;
    }
    Search::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;
    use echolog_format::block::{encode_block, BlockMeta, FLAG_PRIOR_DURABLE};

    fn block(first_seq: u64, flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let meta = BlockMeta {
            first_seq,
            count: 1,
            min_ts: 1,
            max_ts: 1,
            flags,
        };
        encode_block(&mut out, meta, &[0u8; 100], None);
        out
    }

    #[test]
    fn only_a_prior_durable_block_proves_damage_in_version_2() {
        let mut bytes = vec![0u8; 10];
        bytes.extend(block(5, 0));
        assert_eq!(later_block(&bytes, 0, 5, true), Search::NotFound);
        assert_eq!(later_block(&bytes, 0, 5, false), Search::Found(10));
        bytes.extend(block(6, FLAG_PRIOR_DURABLE));
        assert!(matches!(later_block(&bytes, 0, 5, true), Search::Found(_)));
        assert_eq!(
            later_block(&bytes, 0, 7, true),
            Search::NotFound,
            "older seqs"
        );
    }

    #[test]
    fn a_crafted_tail_of_fake_headers_is_searched_in_bounded_work() {
        // Fake headers every 48 bytes over 4 MiB, each claiming a body that reaches the end of
        // the file, with a wrong checksum: unbounded, the search hashes ~87k * 2 MiB = 170 GiB.
        let len = 4 << 20;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() + BLOCK_HEADER_LEN <= len {
            let body = (len - bytes.len() - BLOCK_HEADER_LEN) as u32;
            let mut h = [0u8; BLOCK_HEADER_LEN];
            h[4..8].copy_from_slice(&BLOCK_MAGIC);
            h[8..12].copy_from_slice(&body.to_le_bytes());
            h[12..16].copy_from_slice(&body.to_le_bytes());
            h[16..24].copy_from_slice(&5u64.to_le_bytes());
            h[24..28].copy_from_slice(&1u32.to_le_bytes());
            h[29] = FLAG_PRIOR_DURABLE;
            bytes.extend_from_slice(&h);
        }
        bytes.resize(len, 0);
        assert_eq!(later_block(&bytes, 0, 1, true), Search::CutShort);
        assert_eq!(later_block(&bytes, 0, 1, false), Search::CutShort);
    }
}
