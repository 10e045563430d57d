//! The fixed header at the start of every segment file.

use crate::cursor::Cursor;
use crate::{verify_crc32, FormatError, FORMAT_VERSION};

pub const SEGMENT_MAGIC: [u8; 8] = *b"ECHOLSEG";
pub const SEGMENT_HEADER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version the segment was written with (its blocks follow that version's rules).
    pub version: u32,
    /// Seq of the segment's first record (its records are dense from here).
    pub base_seq: u64,
}

impl SegmentHeader {
    /// The header of a new segment, written with this build's format version.
    pub fn new(base_seq: u64) -> Self {
        SegmentHeader {
            version: FORMAT_VERSION,
            base_seq,
        }
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16 reserved, zero
        out[16..24].copy_from_slice(&self.base_seq.to_le_bytes());
        // 24..28 reserved, zero
        let crc = crate::crc32(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "segment header";
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(FormatError::Truncated {
                what: WHAT,
                needed: SEGMENT_HEADER_LEN as u64,
                available: bytes.len() as u64,
            });
        }
        let h = &bytes[..SEGMENT_HEADER_LEN];
        let mut c = Cursor::new(WHAT, h);
        let magic: [u8; 8] = c.array()?;
        if magic != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let stored_crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
        verify_crc32(WHAT, stored_crc, &h[0..28])?;
        let version = crate::check_version(WHAT, c.u32()?)?;
        let _reserved = c.u32()?;
        let base_seq = c.u64()?;
        if base_seq == 0 {
            return Err(FormatError::invalid(
                WHAT,
                "base_seq is 0 (seqs start at 1)",
            ));
        }
        Ok(SegmentHeader { version, base_seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = SegmentHeader::new(42);
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let good = SegmentHeader::new(7).encode();
        for i in 0..SEGMENT_HEADER_LEN * 8 {
            let mut b = good;
            b[i / 8] ^= 1 << (i % 8);
            assert!(SegmentHeader::decode(&b).is_err(), "bit {i}");
        }
    }

    #[test]
    fn version_1_headers_still_decode() {
        let h = SegmentHeader {
            version: 1,
            base_seq: 9,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap().version, 1);
    }

    #[test]
    fn other_version_is_rejected_clearly() {
        let mut b = SegmentHeader::new(7).encode();
        b[8..12].copy_from_slice(&99u32.to_le_bytes());
        let crc = crate::crc32(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(FormatError::UnsupportedVersion { found: 99, .. })
        ));
    }
}
