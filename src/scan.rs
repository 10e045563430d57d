//! Scanning a segment file from its first byte: recovery of the active segment at open, and
//! rebuilding a sealed segment's missing or corrupt index.

use echolog_format::block::{decode_block, BLOCK_MAGIC};
use echolog_format::index::BlockEntry;
use echolog_format::limits::SEGMENT_RECORDS_MAX;
use echolog_format::segment_header::{SegmentHeader, SEGMENT_HEADER_LEN};
use echolog_format::FormatError;

use crate::block_cache::DecodedBlock;
use crate::mem_index::{MemBlock, MemIndex};

/// Result of scanning a segment.
pub struct Scan {
    pub index: MemIndex,
    /// Where the valid, commit-complete prefix ends. Bytes past it are a torn tail (or
    /// corruption, see `corrupt_at`).
    pub valid_len: u64,
    /// First invalid block, when the scan stopped before the end of the file.
    pub stopped: Option<(u64, FormatError)>,
    /// Set when a valid block with later seqs follows the first invalid one: the damage is not
    /// a torn tail, and truncating would drop committed data.
    pub corrupt_at: Option<u64>,
}

/// Scans `bytes` (a whole segment file) whose header must name `base_seq`.
pub fn scan_segment(bytes: &[u8], base_seq: u64) -> Result<Scan, FormatError> {
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
    let mut index = MemIndex::new(base_seq, SEGMENT_HEADER_LEN as u64);
    let mut pos = SEGMENT_HEADER_LEN;
    // Blocks of a commit unit whose end marker has not been seen yet.
    let mut pending: Vec<(MemBlock, DecodedBlock)> = Vec::new();
    let mut next_seq = base_seq;
    let mut stopped = None;
    while pos < bytes.len() {
        match decode_at(bytes, pos, base_seq, next_seq) {
            Ok((block, decoded, end)) => {
                // Every record's contents must decode, not just its framing; decode each once.
                let records: Result<Vec<_>, FormatError> = (0..u64::from(decoded.count()))
                    .map(|i| decoded.record(decoded.first_seq + i))
                    .collect();
                let records = match records {
                    Ok(r) => r,
                    Err(e) => {
                        stopped = Some((pos as u64, e));
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
                stopped = Some((pos as u64, e));
                break;
            }
        }
    }
    let valid_len = index.len;
    let corrupt_at = stopped.as_ref().and_then(|(at, _)| {
        later_valid_block(bytes, *at as usize + 1, index.end_seq()).map(|_| *at)
    });
    Ok(Scan {
        index,
        valid_len,
        stopped,
        corrupt_at,
    })
}

fn decode_at(
    bytes: &[u8],
    pos: usize,
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
            offset: pos as u64,
            first_ordinal,
            count: h.count,
            min_ts: h.min_ts,
            max_ts: h.max_ts,
        },
        len: h.total_len() as u32,
    };
    Ok((block, decoded, h.commit_end()))
}

/// Looks for a checksum-valid block past `from` holding seqs at or after `min_seq`.
fn later_valid_block(bytes: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let mut i = from;
    while i + BLOCK_MAGIC.len() + 4 <= bytes.len() {
        if bytes[i + 4..i + 8] == BLOCK_MAGIC {
            if let Ok((h, _)) = decode_block(&bytes[i..]) {
                if h.first_seq >= min_seq {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}
