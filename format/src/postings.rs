//! How a version 6 index stores one posting list (a dictionary value of the entities, kinds,
//! tags and minutes sections): a tag byte, then either a roaring bitmap or the ordinals as
//! varints. A roaring bitmap costs at least 16 bytes plus 8 per 65,536-ordinal chunk it touches
//! and 2 per ordinal, so the entity of a handful of events, the common case, is several times
//! smaller as a list: the first ordinal, then the gaps, each a LEB128 varint.
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
}

impl TryFrom<u8> for PostingsEncoding {
    type Error = FormatError;
    fn try_from(tag: u8) -> Result<Self, FormatError> {
        match tag {
            0 => Ok(PostingsEncoding::Roaring),
            1 => Ok(PostingsEncoding::Varints),
            other => Err(FormatError::invalid(
                "posting list",
                format!("encoding tag {other} is neither 0 (roaring) nor 1 (varints)"),
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

/// The roaring form: the tag, then `roaring` (a serialized bitmap).
pub fn encode_roaring(roaring: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + roaring.len());
    out.push(PostingsEncoding::Roaring as u8);
    out.extend_from_slice(roaring);
    out
}

/// Decodes a version 6 posting value of an index with `record_count` records. A varint list
/// must be non-empty, strictly increasing and below `record_count`; it holds at most one
/// ordinal per byte, so its allocation is bounded by the value's length.
pub fn decode_postings(value: &[u8], record_count: u32) -> Result<Postings<'_>, FormatError> {
    const WHAT: &str = "posting list";
    let (&tag, rest) = value.split_first().ok_or(FormatError::Truncated {
        what: WHAT,
        needed: 1,
        available: 0,
    })?;
    match PostingsEncoding::try_from(tag)? {
        PostingsEncoding::Roaring => Ok(Postings::Roaring(rest)),
        PostingsEncoding::Varints => {
            if rest.is_empty() {
                return Err(FormatError::invalid(WHAT, "an empty list"));
            }
            let mut c = Cursor::new(WHAT, rest);
            let mut out = Vec::with_capacity(rest.len().min(record_count as usize));
            let mut next: u64 = 0;
            while !c.is_empty() {
                let ord = next.saturating_add(c.varint()?);
                if ord >= u64::from(record_count) {
                    return Err(FormatError::LimitExceeded {
                        what: "posting list ordinal",
                        value: ord,
                        max: u64::from(record_count).saturating_sub(1),
                    });
                }
                out.push(ord as u32);
                next = ord + 1;
            }
            Ok(Postings::Ordinals(out))
        }
    }
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
                decode_postings(&v, 1_500_000).unwrap(),
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
            decode_postings(&v, 10).unwrap(),
            Postings::Roaring(&[1, 2, 3])
        );
    }

    #[test]
    fn bad_values_are_errors_naming_what_is_wrong() {
        assert!(decode_postings(&[], 10).is_err());
        let e = decode_postings(&[2, 0], 10).unwrap_err();
        assert!(e.to_string().contains("encoding tag 2"), "{e}");
        assert!(decode_postings(&[1], 10).is_err());
        // Ordinal 10 of a 10-record index.
        let e = decode_postings(&encode_varints(&[3, 10]), 10).unwrap_err();
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
        assert!(decode_postings(&[1, 0x80], 10).is_err());
    }

    proptest! {
        #[test]
        fn any_sorted_set_round_trips(set in proptest::collection::btree_set(0u32..u32::MAX, 1..200)) {
            let ords: Vec<u32> = set.into_iter().collect();
            let v = encode_varints(&ords);
            prop_assert_eq!(decode_postings(&v, u32::MAX).unwrap(), Postings::Ordinals(ords));
        }

        #[test]
        fn arbitrary_values_never_panic(v in proptest::collection::vec(any::<u8>(), 0..64), n in 0u32..1000) {
            if let Ok(Postings::Ordinals(o)) = decode_postings(&v, n) {
                prop_assert!(o.windows(2).all(|w| w[0] < w[1]) && o.iter().all(|x| *x < n));
            }
        }
    }
}
