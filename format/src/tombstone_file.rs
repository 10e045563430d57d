//! The tombstone state file: every delete and restore record of the sealed segments, so that
//! opening a store learns the tombstone state without reading sealed segments.

use crate::cursor::{put_len_prefixed, put_varint, Cursor};
use crate::limits::ENTITY_BYTES_MAX;
use crate::{verify_crc32, FormatError, FORMAT_VERSION};

pub const TOMBSTONE_MAGIC: [u8; 8] = *b"ECHOLTMB";
/// Reason text kept with a tombstone, bytes (the tag `reason:<reason>` is at most 256).
pub const REASON_BYTES_MAX: usize = 249;
/// Seqs named by one seq tombstone.
pub const TOMBSTONE_SEQS_MAX: usize = 10_000;

pub const TYPE_DELETE_ENTITY: u8 = 1;
pub const TYPE_DELETE_SEQS: u8 = 2;
pub const TYPE_RESTORE: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneEntry {
    pub kind: u8,
    pub seq: u64,
    pub entity: String,
    pub reason: String,
    pub seqs: Vec<u64>,
}

pub fn encode_tombstones(covered_until: u64, entries: &[TombstoneEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&TOMBSTONE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&covered_until.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.push(e.kind);
        out.extend_from_slice(&e.seq.to_le_bytes());
        put_len_prefixed(&mut out, e.entity.as_bytes());
        put_len_prefixed(&mut out, e.reason.as_bytes());
        put_varint(&mut out, e.seqs.len() as u64);
        for s in &e.seqs {
            put_varint(&mut out, *s);
        }
    }
    let crc = crate::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_tombstones(bytes: &[u8]) -> Result<(u64, Vec<TombstoneEntry>), FormatError> {
    const WHAT: &str = "tombstone file";
    if bytes.len() < 36 {
        return Err(FormatError::Truncated {
            what: WHAT,
            needed: 36,
            available: bytes.len() as u64,
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let magic_ok = body[..8] == TOMBSTONE_MAGIC;
    if !magic_ok {
        return Err(FormatError::BadMagic { what: WHAT });
    }
    verify_crc32(
        WHAT,
        u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]),
        body,
    )?;
    let mut c = Cursor::new(WHAT, &body[8..]);
    let version = c.u32()?;
    crate::check_version(WHAT, version)?;
    let _reserved = c.u32()?;
    let covered_until = c.u64()?;
    let count = c.u64()?;
    // Each entry takes at least 13 bytes: a corrupt count cannot make us allocate much.
    if count > (c.remaining() / 13) as u64 {
        return Err(FormatError::invalid(
            WHAT,
            "entry count larger than the file",
        ));
    }
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let kind = c.u8()?;
        if !(TYPE_DELETE_ENTITY..=TYPE_RESTORE).contains(&kind) {
            return Err(FormatError::invalid(
                WHAT,
                format!("unknown entry type {kind}"),
            ));
        }
        let seq = c.u64()?;
        let entity = String::from_utf8(
            c.len_prefixed("tombstone entity", ENTITY_BYTES_MAX)?
                .to_vec(),
        )
        .map_err(|_| FormatError::invalid(WHAT, "entity is not UTF-8"))?;
        let reason = String::from_utf8(
            c.len_prefixed("tombstone reason", REASON_BYTES_MAX)?
                .to_vec(),
        )
        .map_err(|_| FormatError::invalid(WHAT, "reason is not UTF-8"))?;
        let n = c.varint()?;
        if n > TOMBSTONE_SEQS_MAX as u64 {
            return Err(FormatError::LimitExceeded {
                what: "tombstone seqs",
                value: n,
                max: TOMBSTONE_SEQS_MAX as u64,
            });
        }
        let mut seqs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            seqs.push(c.varint()?);
        }
        entries.push(TombstoneEntry {
            kind,
            seq,
            entity,
            reason,
            seqs,
        });
    }
    if !c.is_empty() {
        return Err(FormatError::invalid(WHAT, "trailing bytes"));
    }
    Ok((covered_until, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_round_trip_and_detect_damage() {
        let entries = vec![
            TombstoneEntry {
                kind: TYPE_DELETE_ENTITY,
                seq: 9,
                entity: "p:1".into(),
                reason: "gone".into(),
                seqs: vec![],
            },
            TombstoneEntry {
                kind: TYPE_DELETE_SEQS,
                seq: 12,
                entity: String::new(),
                reason: "void".into(),
                seqs: vec![3, 4],
            },
            TombstoneEntry {
                kind: TYPE_RESTORE,
                seq: 15,
                entity: "p:1".into(),
                reason: String::new(),
                seqs: vec![],
            },
        ];
        let bytes = encode_tombstones(20, &entries);
        assert_eq!(decode_tombstones(&bytes).unwrap(), (20, entries));
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode_tombstones(&b).is_err(), "bit {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_tombstones(&bytes[..cut]).is_err());
        }
    }
}
