//! The CURSORS file: every consumer cursor (a name and the seq to resume from), rewritten
//! whole and atomically on each commit.

use crate::cursor::{put_len_prefixed, Cursor};
use crate::{verify_crc32, FormatError, FORMAT_VERSION};

pub const CURSORS_MAGIC: [u8; 8] = *b"ECHOLCUR";
/// Length of a cursor name, bytes.
pub const CURSOR_NAME_BYTES_MAX: usize = 128;
/// Cursors in one store.
pub const CURSORS_COUNT_MAX: usize = 100_000;

/// Header: magic, version, reserved, count.
const HEADER_LEN: usize = 24;

pub fn encode_cursors(cursors: &[(String, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + cursors.len() * 24 + 4);
    out.extend_from_slice(&CURSORS_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(cursors.len() as u64).to_le_bytes());
    for (name, seq) in cursors {
        put_len_prefixed(&mut out, name.as_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    let crc = crate::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_cursors(bytes: &[u8]) -> Result<Vec<(String, u64)>, FormatError> {
    const WHAT: &str = "cursors file";
    if bytes.len() < HEADER_LEN + 4 {
        return Err(FormatError::Truncated {
            what: WHAT,
            needed: (HEADER_LEN + 4) as u64,
            available: bytes.len() as u64,
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if body[..8] != CURSORS_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    verify_crc32(
        WHAT,
        u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]),
        body,
    )?;
    let mut c = Cursor::new(WHAT, &body[8..]);
    crate::check_version(WHAT, c.u32()?)?;
    let _reserved = c.u32()?;
    let count = c.u64()?;
    if count > CURSORS_COUNT_MAX as u64 {
        return Err(FormatError::LimitExceeded {
            what: "cursors count",
            value: count,
            max: CURSORS_COUNT_MAX as u64,
        });
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let name = c.len_prefixed("cursor name", CURSOR_NAME_BYTES_MAX)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| FormatError::invalid(WHAT, "cursor name is not UTF-8"))?;
        let seq = c.u64()?;
        out.push((name.to_owned(), seq));
    }
    if !c.is_empty() {
        return Err(FormatError::invalid(
            WHAT,
            "trailing bytes after the last cursor",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_every_flipped_bit_is_caught() {
        let c = vec![("billing-sync".to_string(), 42u64), ("a.b:c-1".into(), 1)];
        let bytes = encode_cursors(&c);
        assert_eq!(decode_cursors(&bytes).unwrap(), c);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode_cursors(&b).is_err(), "bit {i}");
        }
        assert!(decode_cursors(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(decode_cursors(&encode_cursors(&[])).unwrap(), vec![]);
    }
}
