//! How a version 6 index stores one posting list (a dictionary value of the entities, kinds,
//! tags and minutes sections): a tag byte, then either a roaring bitmap or the ordinals as
//! varints. A roaring bitmap costs at least 16 bytes plus 8 per 65,536-ordinal chunk it touches
//! and 2 per ordinal, so the entity of a handful of events, the common case, is several times
//! smaller as a list: the first ordinal, then the gaps, each a LEB128 varint.
//!
//! Version 7 adds runs, for the postings whose ordinals are mostly contiguous: a minute's
//! records, in a store whose events arrive in time order, are one run and a few late ones.
//!
//! Versions 1 to 5 store every value as a bare roaring bitmap.

use crate::cursor::{put_varint, Cursor};
use crate::FormatError;

/// The tag byte at the start of a version 6 posting value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PostingsEncoding {
    /// The portable roaring serialization follows.
    Roaring = 0,
    /// Varints follow: the first ordinal, then each gap to the next (at least 1).
    Varints = 1,
    /// Varint pairs follow, one per run of consecutive ordinals: the run's start minus the end
    /// of the run before (0 for the first), then its length minus 1. Version 7 on.
    Runs = 2,
}

/// The first version whose posting values may be runs.
pub const RUNS_VERSION_MIN: u32 = 7;

impl TryFrom<u8> for PostingsEncoding {
    type Error = FormatError;
    fn try_from(tag: u8) -> Result<Self, FormatError> {
        match tag {
            0 => Ok(PostingsEncoding::Roaring),
            1 => Ok(PostingsEncoding::Varints),
            2 => Ok(PostingsEncoding::Runs),
            other => Err(FormatError::invalid(
                "posting list",
                format!("encoding tag {other} is not 0 (roaring), 1 (varints) or 2 (runs)"),
            )),
        }
    }
}

/// A decoded posting value.
#[derive(Debug, PartialEq, Eq)]
pub enum Postings<'a> {
    /// Roaring bytes, for the caller's roaring library to deserialize.
    Roaring(&'a [u8]),
    /// Ordinals, strictly increasing, each below the index's record count.
    Ordinals(Vec<u32>),
    /// Runs of consecutive ordinals as (first, last), ascending, apart, below the record count.
    Runs(Vec<(u32, u32)>),
}

/// The varint form of `ords` (ascending, unique), tag included.
pub fn encode_varints(ords: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + ords.len() * 3);
    out.push(PostingsEncoding::Varints as u8);
    let mut prev: Option<u32> = None;
    for &o in ords {
        debug_assert!(prev.is_none_or(|p| o > p), "ordinals ascending and unique");
        put_varint(&mut out, u64::from(o - prev.map_or(0, |p| p + 1)));
        prev = Some(o);
    }
    out
}

/// The runs form of `ords` (ascending, unique), tag included.
pub fn encode_runs(ords: &[u32]) -> Vec<u8> {
    let mut out = vec![PostingsEncoding::Runs as u8];
    let mut end = 0u32; // one past the previous run
    let mut i = 0;
    while let Some(&start) = ords.get(i) {
        let mut last = start;
        i += 1;
        while ords.get(i) == Some(&(last.wrapping_add(1))) && last != u32::MAX {
            last += 1;
            i += 1;
        }
        put_varint(&mut out, u64::from(start - end));
        put_varint(&mut out, u64::from(last - start));
        end = last.saturating_add(1);
    }
    out
}

/// The roaring form: the tag, then `roaring` (a serialized bitmap).
pub fn encode_roaring(roaring: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + roaring.len());
    out.push(PostingsEncoding::Roaring as u8);
    out.extend_from_slice(roaring);
    out
}

/// Decodes a posting value of an index of format `version` (6 or later) with `record_count`
/// records. A varint list must be non-empty, strictly increasing and below `record_count`; it
/// holds at most one ordinal per byte, so its allocation is bounded by the value's length. Runs
/// (version 7 on) likewise: non-empty, each below `record_count`, two bytes at least each.
pub fn decode_postings(
    value: &[u8],
    record_count: u32,
    version: u32,
) -> Result<Postings<'_>, FormatError> {
    let (&tag, rest) = value.split_first().ok_or(FormatError::Truncated {
        what: WHAT,
        needed: 1,
        available: 0,
    })?;
    match PostingsEncoding::try_from(tag)? {
        PostingsEncoding::Roaring => Ok(Postings::Roaring(rest)),
        PostingsEncoding::Varints => decode_varints(rest, record_count),
        PostingsEncoding::Runs if version >= RUNS_VERSION_MIN => decode_runs(rest, record_count),
        PostingsEncoding::Runs => Err(FormatError::invalid(
            WHAT,
            format!("runs in a version {version} index (runs are version {RUNS_VERSION_MIN} on)"),
        )),
    }
}

const WHAT: &str = "posting list";

fn past_the_records(ord: u64, record_count: u32) -> FormatError {
    FormatError::LimitExceeded {
        what: "posting list ordinal",
        value: ord,
        max: u64::from(record_count).saturating_sub(1),
    }
}

fn decode_varints(rest: &[u8], record_count: u32) -> Result<Postings<'_>, FormatError> {
    if rest.is_empty() {
        return Err(FormatError::invalid(WHAT, "an empty list"));
    }
    let mut c = Cursor::new(WHAT, rest);
    let mut out = Vec::with_capacity(rest.len().min(record_count as usize));
    let mut next: u64 = 0;
    while !c.is_empty() {
        let ord = next.saturating_add(c.varint()?);
        if ord >= u64::from(record_count) {
            return Err(past_the_records(ord, record_count));
        }
        out.push(ord as u32);
        next = ord + 1;
    }
    Ok(Postings::Ordinals(out))
}

fn decode_runs(rest: &[u8], record_count: u32) -> Result<Postings<'_>, FormatError> {
    if rest.is_empty() {
        return Err(FormatError::invalid(WHAT, "no runs"));
    }
    let mut c = Cursor::new(WHAT, rest);
    let mut out = Vec::with_capacity((rest.len() / 2).min(record_count as usize));
    let mut end: u64 = 0;
    while !c.is_empty() {
        let first = end.saturating_add(c.varint()?);
        let last = first.saturating_add(c.varint()?);
        if last >= u64::from(record_count) {
            return Err(past_the_records(last, record_count));
        }
        out.push((first as u32, last as u32));
        end = last + 1;
    }
    Ok(Postings::Runs(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lists_round_trip_and_small_ones_are_small() {
        for ords in [
            vec![0u32],
            vec![5],
            vec![0, 1, 2, 3],
            vec![7, 100_000, 1_400_000],
        ] {
            let v = encode_varints(&ords);
            assert_eq!(
                decode_postings(&v, 1_500_000, 6).unwrap(),
                Postings::Ordinals(ords.clone())
            );
        }
        // One event of a 1.4M-record segment: tag plus a 3-byte varint.
        assert_eq!(encode_varints(&[1_000_000]).len(), 4);
    }

    #[test]
    fn roaring_values_pass_through() {
        let v = encode_roaring(&[1, 2, 3]);
        assert_eq!(
            decode_postings(&v, 10, 6).unwrap(),
            Postings::Roaring(&[1, 2, 3])
        );
    }

    #[test]
    fn bad_values_are_errors_naming_what_is_wrong() {
        assert!(decode_postings(&[], 10, 7).is_err());
        let e = decode_postings(&[3, 0], 10, 7).unwrap_err();
        assert!(e.to_string().contains("encoding tag 3"), "{e}");
        let e = decode_postings(&[2, 0, 0], 10, 6).unwrap_err();
        assert!(e.to_string().contains("version 6"), "{e}");
        assert!(decode_postings(&[1], 10, 7).is_err());
        assert!(decode_postings(&[2], 10, 7).is_err());
        // A run ending at ordinal 10 of a 10-record index.
        assert!(decode_postings(&encode_runs(&[8, 9, 10]), 10, 7).is_err());
        // Ordinal 10 of a 10-record index.
        let e = decode_postings(&encode_varints(&[3, 10]), 10, 7).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::LimitExceeded {
                    value: 10,
                    max: 9,
                    ..
                }
            ),
            "{e}"
        );
        // A varint cut short.
        assert!(decode_postings(&[1, 0x80], 10, 7).is_err());
        assert!(decode_postings(&[2, 0x80], 10, 7).is_err());
    }

    #[test]
    fn runs_round_trip_and_a_minute_of_late_events_is_small() {
        let runs = |ords: &[u32]| match decode_postings(&encode_runs(ords), u32::MAX, 7) {
            Ok(Postings::Runs(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(runs(&[0]), vec![(0, 0)]);
        assert_eq!(runs(&[3, 4, 5, 9, 11, 12]), vec![(3, 5), (9, 9), (11, 12)]);
        assert_eq!(
            runs(&[u32::MAX - 2, u32::MAX - 1]),
            vec![(u32::MAX - 2, u32::MAX - 1)]
        );
        // 6000 consecutive records and 60 late ones after them.
        let mut ords: Vec<u32> = (100_000..106_000).collect();
        ords.extend((0..60).map(|i| 200_000 + i * 5_000));
        assert!(encode_runs(&ords).len() < 300);
    }

    proptest! {
        #[test]
        fn any_sorted_set_round_trips(set in proptest::collection::btree_set(0u32..u32::MAX, 1..200)) {
            let ords: Vec<u32> = set.into_iter().collect();
            let v = encode_varints(&ords);
            prop_assert_eq!(decode_postings(&v, u32::MAX, 7).unwrap(), Postings::Ordinals(ords.clone()));
            let runs = match decode_postings(&encode_runs(&ords), u32::MAX, 7).unwrap() {
                Postings::Runs(r) => r,
                other => panic!("{other:?}"),
            };
            let back: Vec<u32> = runs.iter().flat_map(|&(a, b)| a..=b).collect();
            prop_assert_eq!(back, ords);
            prop_assert!(runs.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        }

        #[test]
        fn arbitrary_values_never_panic(v in proptest::collection::vec(any::<u8>(), 0..64), n in 0u32..1000) {
            match decode_postings(&v, n, 7) {
                Ok(Postings::Ordinals(o)) => {
                    prop_assert!(o.windows(2).all(|w| w[0] < w[1]) && o.iter().all(|x| *x < n));
                }
                Ok(Postings::Runs(r)) => {
                    prop_assert!(r.iter().all(|&(a, b)| a <= b && b < n));
                    prop_assert!(r.windows(2).all(|w| w[0].1 < w[1].0));
                }
                _ => {}
            }
        }
    }
}
