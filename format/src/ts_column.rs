//! The ts column of a version 6 index (section 2): every record's ts, by ordinal, packed in
//! frames of [`TS_FRAME_RECORDS`] records as the frame's smallest ts plus a fixed-width offset
//! (frame of reference). Events arrive roughly in time order, so a frame's offsets take a few
//! bits instead of 64, and any ordinal is still read in O(1): its frame's entry, then its bits.
//!
//! Layout: `ceil(record_count / TS_FRAME_RECORDS)` frame entries of [`TS_FRAME_ENTRY_LEN`] bytes,
//! then the packed area. An entry is i64 base, u32 offset of the frame's bits from the start of
//! the packed area, u8 width (0..=64), three zero bytes. A frame of `n` records holds
//! `ceil(n * width / 8)` bytes: record `i`'s offset from the base is the `width` bits starting at
//! bit `i * width`, least significant bit first. Frames are contiguous and fill the area.

use crate::cursor::Cursor;
use crate::FormatError;

/// Records per frame.
pub const TS_FRAME_RECORDS: usize = 128;
/// Bytes of one frame entry.
pub const TS_FRAME_ENTRY_LEN: usize = 16;
/// Widest offset, bits.
const WIDTH_BITS_MAX: u8 = 64;

fn frame_count(record_count: usize) -> usize {
    record_count.div_ceil(TS_FRAME_RECORDS)
}

fn packed_len(records: usize, width: u8) -> usize {
    (records * usize::from(width)).div_ceil(8)
}

/// Encodes `ts` (one per ordinal) as a packed ts column.
pub fn encode_ts_column(ts: &[i64]) -> Vec<u8> {
    let frames = frame_count(ts.len());
    let mut entries = Vec::with_capacity(frames * TS_FRAME_ENTRY_LEN);
    let mut packed: Vec<u8> = Vec::new();
    for frame in ts.chunks(TS_FRAME_RECORDS) {
        let base = frame.iter().copied().min().unwrap_or(0);
        let max = frame.iter().copied().max().unwrap_or(0);
        let spread = max.wrapping_sub(base) as u64;
        let width = (64 - spread.leading_zeros()) as u8;
        let offset = u32::try_from(packed.len()).unwrap_or(u32::MAX);
        entries.extend_from_slice(&base.to_le_bytes());
        entries.extend_from_slice(&offset.to_le_bytes());
        entries.extend_from_slice(&[width, 0, 0, 0]);
        let start = packed.len();
        packed.resize(start + packed_len(frame.len(), width), 0);
        let bits = &mut packed[start..];
        for (i, t) in frame.iter().enumerate() {
            put_bits(
                bits,
                i * usize::from(width),
                width,
                t.wrapping_sub(base) as u64,
            );
        }
    }
    debug_assert_eq!(entries.len(), frames * TS_FRAME_ENTRY_LEN);
    entries.extend_from_slice(&packed);
    entries
}

/// ORs `value` (which fits in `width` bits) into `bits` at bit `at` (the bytes exist).
fn put_bits(bits: &mut [u8], at: usize, width: u8, value: u64) {
    let shift = at % 8;
    let word = u128::from(value) << shift;
    let bytes = (shift + usize::from(width)).div_ceil(8);
    for (k, byte) in bits.iter_mut().skip(at / 8).take(bytes).enumerate() {
        *byte |= (word >> (8 * k)) as u8;
    }
}

/// A checked view of a packed ts column.
#[derive(Debug, Clone, Copy)]
pub struct TsColumn<'a> {
    entries: &'a [u8],
    packed: &'a [u8],
    record_count: u32,
}

impl<'a> TsColumn<'a> {
    /// Checks every frame entry against the column's length and the index header's ts range:
    /// widths at most 64, zero reserved bytes, frames contiguous and filling the packed area,
    /// every base inside `[min_ts, max_ts]`. O(frames); no record is decoded.
    pub fn parse(
        bytes: &'a [u8],
        record_count: u32,
        min_ts: i64,
        max_ts: i64,
    ) -> Result<Self, FormatError> {
        const WHAT: &str = "index ts column";
        let records = record_count as usize;
        let mut c = Cursor::new(WHAT, bytes);
        let entries = c.take(frame_count(records) * TS_FRAME_ENTRY_LEN)?;
        let packed = c.take(c.remaining())?;
        let mut e = Cursor::new(WHAT, entries);
        let mut expect_offset = 0usize;
        for f in 0..frame_count(records) {
            let base = e.i64()?;
            let offset = e.u32()? as usize;
            let width = e.u8()?;
            let reserved: [u8; 3] = e.array()?;
            if width > WIDTH_BITS_MAX || reserved != [0; 3] {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("frame {f}: width {width} (at most {WIDTH_BITS_MAX}) or reserved bytes {reserved:?}"),
                ));
            }
            if offset != expect_offset {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("frame {f} starts at {offset}, expected {expect_offset}"),
                ));
            }
            if records > 0 && !(min_ts..=max_ts).contains(&base) {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("frame {f}: base {base} outside the header's [{min_ts}, {max_ts}]"),
                ));
            }
            let n = (records - f * TS_FRAME_RECORDS).min(TS_FRAME_RECORDS);
            expect_offset += packed_len(n, width);
        }
        if expect_offset != packed.len() {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "frames hold {expect_offset} packed bytes, the column {}",
                    packed.len()
                ),
            ));
        }
        Ok(TsColumn {
            entries,
            packed,
            record_count,
        })
    }

    /// A view of a column [`TsColumn::parse`] accepted before (a mapped index checked at load),
    /// without checking it again: O(1). Reading unchecked bytes this way gives wrong
    /// timestamps or None, never a panic.
    pub fn split(bytes: &'a [u8], record_count: u32) -> Self {
        let entries_len = frame_count(record_count as usize) * TS_FRAME_ENTRY_LEN;
        let (entries, packed) = bytes.split_at(entries_len.min(bytes.len()));
        TsColumn {
            entries,
            packed,
            record_count,
        }
    }

    /// The ts of `ord`; None past the last record.
    pub fn get(&self, ord: u32) -> Option<i64> {
        if ord >= self.record_count {
            return None;
        }
        let f = ord as usize / TS_FRAME_RECORDS;
        let i = ord as usize % TS_FRAME_RECORDS;
        let e = self
            .entries
            .get(f * TS_FRAME_ENTRY_LEN..(f + 1) * TS_FRAME_ENTRY_LEN)?;
        let base = i64::from_le_bytes(e.get(0..8)?.try_into().ok()?);
        let offset = u32::from_le_bytes(e.get(8..12)?.try_into().ok()?) as usize;
        let width = *e.get(12)?;
        if width == 0 {
            return Some(base);
        }
        let bit = i * usize::from(width);
        let start = offset + bit / 8;
        // At most 7 + 64 bits: 9 bytes. One 16-byte load where the area has them (the bytes
        // past this record's bits are masked off), else byte by byte near the end.
        let word = match self.packed.get(start..start + 16) {
            Some(b) => u128::from_le_bytes(b.try_into().ok()?),
            None => {
                let mut word: u128 = 0;
                for (k, b) in self.packed.get(start..)?.iter().take(9).enumerate() {
                    word |= u128::from(*b) << (8 * k);
                }
                word
            }
        };
        // Over 64 only in bytes `parse` refused (through `split`): garbage, but no panic.
        let mask = if width >= WIDTH_BITS_MAX {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let delta = (word >> (bit % 8)) as u64 & mask;
        Some(base.wrapping_add(delta as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(ts: &[i64]) {
        let (min, max) = (
            ts.iter().copied().min().unwrap_or(0),
            ts.iter().copied().max().unwrap_or(0),
        );
        let bytes = encode_ts_column(ts);
        let col = TsColumn::parse(&bytes, ts.len() as u32, min, max).unwrap();
        for (o, t) in ts.iter().enumerate() {
            assert_eq!(col.get(o as u32), Some(*t), "ordinal {o}");
        }
        assert_eq!(col.get(ts.len() as u32), None);
    }

    #[test]
    fn extremes_and_frame_edges_round_trip() {
        round_trip(&[]);
        round_trip(&[5]);
        round_trip(&[i64::MIN, i64::MAX, 0]);
        round_trip(&vec![7; 300]);
        let rising: Vec<i64> = (0..1000).map(|i| 1_763_769_600_000 + i * 61_000).collect();
        round_trip(&rising);
        let jitter: Vec<i64> = (0..257).map(|i| 1_000 + (i * 7919) % 600_000).collect();
        round_trip(&jitter);
    }

    #[test]
    fn time_ordered_events_take_a_few_bytes_each() {
        let ts: Vec<i64> = (0..100_000).map(|i| 1_763_769_600_000 + i * 37).collect();
        let bytes = encode_ts_column(&ts);
        // 37 ms apart, 128 a frame: spreads under 2^13, 13 bits a record plus 16 bytes a frame.
        assert!(bytes.len() < ts.len() * 2, "{} bytes", bytes.len());
    }

    #[test]
    fn damaged_entries_are_errors() {
        let ts: Vec<i64> = (0..300).map(|i| 10_000 + i * 3).collect();
        let good = encode_ts_column(&ts);
        let check = |b: &[u8]| TsColumn::parse(b, 300, 10_000, 10_897).map(drop);
        assert!(check(&good).is_ok());
        let mut wide = good.clone();
        wide[12] = 65;
        assert!(check(&wide).is_err());
        let mut moved = good.clone();
        moved[TS_FRAME_ENTRY_LEN + 8] ^= 1;
        assert!(check(&moved).is_err());
        let mut reserved = good.clone();
        reserved[13] = 1;
        assert!(check(&reserved).is_err());
        assert!(check(&good[..good.len() - 1]).is_err());
        assert!(check(&[good.as_slice(), &[0]].concat()).is_err());
        // What parse refuses still reads through `split` without a panic.
        for w in [64u8, 65, 200, 255] {
            wide[12] = w;
            let col = TsColumn::split(&wide, 300);
            for ord in 0..301 {
                let _ = col.get(ord);
            }
        }
        // A base outside the header's range.
        assert!(TsColumn::parse(&good, 300, 10_001, 10_897).is_err());
        assert!(TsColumn::parse(&good, 301, 10_000, 10_897).is_err());
    }

    proptest! {
        #[test]
        fn any_column_round_trips(ts in proptest::collection::vec(any::<i64>(), 0..600)) {
            round_trip(&ts);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                       count in 0u32..400, ord in 0u32..500) {
            if let Ok(c) = TsColumn::parse(&bytes, count, i64::MIN, i64::MAX) {
                let _ = c.get(ord);
            }
            // Unchecked bytes through `split` (widths over 64 included) never panic either.
            let _ = TsColumn::split(&bytes, count).get(ord);
        }
    }
}
