//! The decompressed body of a cluster block: the records' seqs, then the records.
//!
//! Versions 3 to 6 hold each seq as a u64. From version 7 each seq is a varint of the zigzag
//! of its difference to the seq before it (the first one's to the block's first seq, so 0):
//! within an entity's run the seqs ascend and the differences are small; where the next
//! entity starts, the difference may be negative. The arithmetic wraps in both directions, so
//! every u64 list round-trips.

use super::CLUSTER_CODED_VERSION_MIN;
use crate::cursor::{put_varint, unzigzag, zigzag, Cursor};
use crate::limits::BLOCK_RECORDS_MAX;
use crate::FormatError;

const WHAT: &str = "cluster block seqs";

/// Appends the raw body of a block of the current version: `seqs` delta-coded, then `records`.
pub fn encode_cluster_body(out: &mut Vec<u8>, seqs: &[u64], records: &[u8]) {
    let mut prev = seqs.first().copied().unwrap_or(0);
    for &s in seqs {
        put_varint(out, zigzag(s.wrapping_sub(prev) as i64));
        prev = s;
    }
    out.extend_from_slice(records);
}

/// Splits a decompressed body of `count` records, written in format `version`, into its seqs
/// and its records. The first seq must be the block's `first_seq` (its header's).
pub fn split_cluster_body(
    raw: &[u8],
    count: u32,
    first_seq: u64,
    version: u32,
) -> Result<(Vec<u64>, &[u8]), FormatError> {
    if count > BLOCK_RECORDS_MAX {
        return Err(FormatError::LimitExceeded {
            what: "cluster block records",
            value: u64::from(count),
            max: u64::from(BLOCK_RECORDS_MAX),
        });
    }
    let mut c = Cursor::new(WHAT, raw);
    // Every seq takes at least one byte: a count beyond the body is refused before allocating.
    let mut seqs = Vec::with_capacity((count as usize).min(raw.len()));
    if version >= CLUSTER_CODED_VERSION_MIN {
        let mut prev = first_seq;
        for _ in 0..count {
            prev = prev.wrapping_add(unzigzag(c.varint()?) as u64);
            seqs.push(prev);
        }
    } else {
        for _ in 0..count {
            seqs.push(c.u64()?);
        }
    }
    if let Some(&s) = seqs.first() {
        if s != first_seq {
            return Err(FormatError::invalid(
                WHAT,
                format!("first seq {s}, the block's header says {first_seq}"),
            ));
        }
    }
    Ok((seqs, c.take(c.remaining())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FORMAT_VERSION;

    #[test]
    fn zigzag_round_trips_the_extremes() {
        for d in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert_eq!((zigzag(0), zigzag(-1), zigzag(1)), (0, 1, 2));
    }

    #[test]
    fn delta_coded_seqs_round_trip_and_take_less_than_u64s() {
        // Two entities' runs: ascending within each, a jump back where the second starts.
        let seqs = [1_000_007u64, 1_000_020, 1_003_000, 12, 999, u64::MAX, 1];
        let mut raw = Vec::new();
        encode_cluster_body(&mut raw, &seqs, b"recs");
        assert!(raw.len() < seqs.len() * 8 + 4);
        let (got, rest) = split_cluster_body(&raw, 7, 1_000_007, FORMAT_VERSION).unwrap();
        assert_eq!((got.as_slice(), rest), (&seqs[..], &b"recs"[..]));
        // The first seq is the header's by construction (its difference to it is 0).
        let (shifted, _) = split_cluster_body(&raw, 7, 1_000_008, FORMAT_VERSION).unwrap();
        assert_eq!(shifted.first(), Some(&1_000_008));
        assert!(split_cluster_body(&raw[..3], 7, 1_000_007, FORMAT_VERSION).is_err());
        assert!(split_cluster_body(&raw, BLOCK_RECORDS_MAX + 1, 1, FORMAT_VERSION).is_err());
    }

    #[test]
    fn version_6_bodies_hold_u64_seqs() {
        let mut raw = Vec::new();
        for s in [7u64, 3] {
            raw.extend_from_slice(&s.to_le_bytes());
        }
        raw.extend_from_slice(b"recs");
        let (seqs, rest) = split_cluster_body(&raw, 2, 7, 6).unwrap();
        assert_eq!((seqs, rest), (vec![7, 3], &b"recs"[..]));
        assert!(split_cluster_body(&raw, 5, 7, 6).is_err());
    }
}
