//! Blocks: a checksummed header followed by a (usually zstd-compressed) body of records.

use crate::cursor::Cursor;
use crate::limits::*;
use crate::record::{decode_record, skip_record, RecordRef};
use crate::{verify_crc32, FormatError};

pub const BLOCK_MAGIC: [u8; 4] = *b"EBLK";
pub const BLOCK_HEADER_LEN: usize = 48;

/// Body stored as is.
pub const CODEC_NONE: u8 = 0;
/// Body compressed with zstd (one frame).
pub const CODEC_ZSTD: u8 = 1;

/// Flag: this block ends a commit unit (one or more whole append batches). Recovery keeps a
/// block only if it, or a later valid block, carries this flag.
pub const FLAG_COMMIT_END: u8 = 0b0000_0001;
/// Flag (format version 2): every byte of the segment before this block was durable
/// (fdatasynced) when this block was written. Set on the first block of a group commit that
/// follows a completed fdatasync. Recovery uses it to tell a torn last write (pages of one
/// unsynced write reach the disk in any order) from damage to data that was already durable.
pub const FLAG_PRIOR_DURABLE: u8 = 0b0000_0010;
const FLAGS_KNOWN: u8 = FLAG_COMMIT_END | FLAG_PRIOR_DURABLE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub crc: u32,
    pub body_len: u32,
    pub raw_len: u32,
    pub first_seq: u64,
    pub count: u32,
    pub codec: u8,
    pub flags: u8,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl BlockHeader {
    /// Total bytes of the block on disk, header included.
    pub fn total_len(&self) -> u64 {
        BLOCK_HEADER_LEN as u64 + u64::from(self.body_len)
    }

    pub fn commit_end(&self) -> bool {
        self.flags & FLAG_COMMIT_END != 0
    }

    pub fn prior_durable(&self) -> bool {
        self.flags & FLAG_PRIOR_DURABLE != 0
    }

    /// Parses and bounds-checks a header. Does not verify the checksum (that needs the body):
    /// use [`decode_block`] for that.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        const WHAT: &str = "block header";
        let mut c = Cursor::new(WHAT, bytes);
        let crc = c.u32()?;
        let magic: [u8; 4] = c.array()?;
        if magic != BLOCK_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let body_len = c.u32()?;
        let raw_len = c.u32()?;
        let first_seq = c.u64()?;
        let count = c.u32()?;
        let codec = c.u8()?;
        let flags = c.u8()?;
        let reserved = c.u16()?;
        let min_ts = c.i64()?;
        let max_ts = c.i64()?;
        let h = BlockHeader {
            crc,
            body_len,
            raw_len,
            first_seq,
            count,
            codec,
            flags,
            min_ts,
            max_ts,
        };
        check_limit(
            "block body_len",
            u64::from(body_len),
            BLOCK_BODY_BYTES_MAX as u64,
        )?;
        check_limit(
            "block raw_len",
            u64::from(raw_len),
            BLOCK_RAW_BYTES_MAX as u64,
        )?;
        check_limit(
            "block count",
            u64::from(count),
            u64::from(BLOCK_RECORDS_MAX),
        )?;
        if count == 0 {
            return Err(FormatError::invalid(WHAT, "block holds no records"));
        }
        if first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none() {
            return Err(FormatError::invalid(
                WHAT,
                format!("first_seq {first_seq} out of range"),
            ));
        }
        if codec != CODEC_NONE && codec != CODEC_ZSTD {
            return Err(FormatError::invalid(WHAT, format!("unknown codec {codec}")));
        }
        if codec == CODEC_NONE && body_len != raw_len {
            return Err(FormatError::invalid(
                WHAT,
                "uncompressed body with body_len != raw_len",
            ));
        }
        if flags & !FLAGS_KNOWN != 0 || reserved != 0 {
            return Err(FormatError::invalid(
                WHAT,
                "unknown flags or reserved bits set",
            ));
        }
        if min_ts > max_ts {
            return Err(FormatError::invalid(WHAT, "min_ts > max_ts"));
        }
        Ok(h)
    }

    fn encode_into(&self, out: &mut [u8; BLOCK_HEADER_LEN]) {
        out[0..4].copy_from_slice(&self.crc.to_le_bytes());
        out[4..8].copy_from_slice(&BLOCK_MAGIC);
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.count.to_le_bytes());
        out[28] = self.codec;
        out[29] = self.flags;
        out[30..32].copy_from_slice(&[0, 0]);
        out[32..40].copy_from_slice(&self.min_ts.to_le_bytes());
        out[40..48].copy_from_slice(&self.max_ts.to_le_bytes());
    }
}

fn check_limit(what: &'static str, value: u64, max: u64) -> Result<(), FormatError> {
    if value > max {
        Err(FormatError::LimitExceeded { what, value, max })
    } else {
        Ok(())
    }
}

/// What a block holds, given to [`encode_block`].
#[derive(Debug, Clone, Copy)]
pub struct BlockMeta {
    pub first_seq: u64,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub flags: u8,
}

/// A block whose body is compressed and checksummed but whose seqs are not assigned yet, so
/// that appending threads can do the expensive part before the commit leader numbers it.
pub struct PreparedBlock {
    header: BlockHeader,
    body: Vec<u8>,
    body_crc: crc32fast::Hasher,
}

impl PreparedBlock {
    /// Prepares a block of `count` encoded records in `raw`. With a compressor the body is
    /// zstd-compressed, unless that does not make it smaller.
    pub fn new(
        count: u32,
        min_ts: i64,
        max_ts: i64,
        flags: u8,
        raw: &[u8],
        compressor: Option<&mut zstd::bulk::Compressor<'_>>,
    ) -> Self {
        assert!(count > 0 && count <= BLOCK_RECORDS_MAX);
        assert!(raw.len() <= BLOCK_RAW_BYTES_MAX);
        assert!(min_ts <= max_ts && flags & !FLAGS_KNOWN == 0);
        let mut codec = CODEC_NONE;
        let mut body = Vec::new();
        if let Some(z) = compressor {
            // A compression failure (out of memory) falls back to storing the body as is.
            if let Ok(compressed) = z.compress(raw) {
                if compressed.len() < raw.len() {
                    body = compressed;
                    codec = CODEC_ZSTD;
                }
            }
        }
        if codec == CODEC_NONE {
            body = raw.to_vec();
        }
        let mut body_crc = crc32fast::Hasher::new();
        body_crc.update(&body);
        let header = BlockHeader {
            crc: 0,
            body_len: body.len() as u32,
            raw_len: raw.len() as u32,
            first_seq: 0,
            count,
            codec,
            flags,
            min_ts,
            max_ts,
        };
        PreparedBlock {
            header,
            body,
            body_crc,
        }
    }

    pub fn count(&self) -> u32 {
        self.header.count
    }
    pub fn min_ts(&self) -> i64 {
        self.header.min_ts
    }
    pub fn max_ts(&self) -> i64 {
        self.header.max_ts
    }
    pub fn raw_len(&self) -> u32 {
        self.header.raw_len
    }
    pub fn total_len(&self) -> u64 {
        self.header.total_len()
    }

    /// Appends the finished block, numbered from `first_seq` and with `extra_flags` added to
    /// its own, to `out`. Returns its length.
    pub fn write_to(&self, out: &mut Vec<u8>, first_seq: u64, extra_flags: u8) -> usize {
        assert!(
            first_seq > 0
                && first_seq
                    .checked_add(u64::from(self.header.count))
                    .is_some()
        );
        assert!(extra_flags & !FLAGS_KNOWN == 0);
        let mut header = self.header;
        header.first_seq = first_seq;
        header.flags |= extra_flags;
        let mut hb = [0u8; BLOCK_HEADER_LEN];
        header.encode_into(&mut hb);
        // CRC over header[4..] followed by the body, the body's part computed beforehand.
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&hb[4..]);
        hasher.combine(&self.body_crc);
        header.crc = hasher.finalize();
        header.encode_into(&mut hb);
        out.extend_from_slice(&hb);
        out.extend_from_slice(&self.body);
        BLOCK_HEADER_LEN + self.body.len()
    }
}

/// Appends one block (header + body) to `out`. `raw` is the concatenation of `meta.count`
/// encoded records. Returns the number of bytes appended.
pub fn encode_block(
    out: &mut Vec<u8>,
    meta: BlockMeta,
    raw: &[u8],
    compressor: Option<&mut zstd::bulk::Compressor<'_>>,
) -> usize {
    PreparedBlock::new(
        meta.count,
        meta.min_ts,
        meta.max_ts,
        meta.flags,
        raw,
        compressor,
    )
    .write_to(out, meta.first_seq, 0)
}

/// Decodes and checksums the block at the start of `bytes` (which may extend past it).
/// Returns the header and the stored body.
pub fn decode_block(bytes: &[u8]) -> Result<(BlockHeader, &[u8]), FormatError> {
    if bytes.len() < BLOCK_HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "block header",
            needed: BLOCK_HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    let header = BlockHeader::decode(&bytes[..BLOCK_HEADER_LEN])?;
    let total = header.total_len();
    if total > bytes.len() as u64 {
        return Err(FormatError::Truncated {
            what: "block body",
            needed: total,
            available: bytes.len() as u64,
        });
    }
    let covered = &bytes[4..total as usize];
    verify_crc32("block", header.crc, covered)?;
    Ok((header, &bytes[BLOCK_HEADER_LEN..total as usize]))
}

/// Decompresses a checksummed body. Output is capped at the header's `raw_len` (itself capped
/// at [`BLOCK_RAW_BYTES_MAX`]) and must match it exactly.
pub fn decompress_body(header: &BlockHeader, body: &[u8]) -> Result<Vec<u8>, FormatError> {
    match header.codec {
        CODEC_NONE => Ok(body.to_vec()),
        CODEC_ZSTD => {
            // One decompression context per thread: creating one costs more than
            // decompressing a 64 KiB block.
            thread_local! {
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            let raw = DCTX
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = zstd::bulk::Decompressor::new().ok();
                    }
                    match slot.as_mut() {
                        Some(d) => d.decompress(body, header.raw_len as usize),
                        None => zstd::bulk::decompress(body, header.raw_len as usize),
                    }
                })
                .map_err(|e| FormatError::Decompress(e.to_string()))?;
            if raw.len() != header.raw_len as usize {
                return Err(FormatError::invalid(
                    "block body",
                    format!(
                        "decompressed to {} bytes, header says {}",
                        raw.len(),
                        header.raw_len
                    ),
                ));
            }
            Ok(raw)
        }
        other => Err(FormatError::invalid(
            "block header",
            format!("unknown codec {other}"),
        )),
    }
}

/// Checks that `raw` holds exactly `count` records (their framing: every length within its
/// limit and the input) and returns each record's offset. Contents are checked by
/// [`record_at`] when a record is read.
pub fn record_offsets(raw: &[u8], count: u32) -> Result<Vec<u32>, FormatError> {
    let mut offsets = Vec::with_capacity(count.min(BLOCK_RECORDS_MAX) as usize);
    let mut c = Cursor::new("block records", raw);
    for _ in 0..count {
        offsets.push(c.position() as u32);
        skip_record(&mut c)?;
    }
    if !c.is_empty() {
        return Err(FormatError::invalid(
            "block records",
            format!("{} trailing bytes after {count} records", c.remaining()),
        ));
    }
    Ok(offsets)
}

/// Decodes the record at `offset` of a body whose offsets came from [`record_offsets`].
pub fn record_at(raw: &[u8], offset: u32) -> Result<RecordRef<'_>, FormatError> {
    let start = offset as usize;
    if start > raw.len() {
        return Err(FormatError::invalid(
            "record offset",
            "past the end of the block",
        ));
    }
    decode_record(&mut Cursor::new("record", &raw[start..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_record;

    fn sample(n: u32) -> Vec<u8> {
        let mut raw = Vec::new();
        for i in 0..n {
            encode_record(
                &mut raw,
                &format!("e:{i}"),
                "k",
                i as i64,
                &["t:1"],
                b"{\"a\":1,\"a\":1,\"a\":1}",
                "",
            );
        }
        raw
    }

    fn meta(n: u32) -> BlockMeta {
        BlockMeta {
            first_seq: 10,
            count: n,
            min_ts: 0,
            max_ts: n as i64,
            flags: FLAG_COMMIT_END,
        }
    }

    #[test]
    fn block_round_trips_compressed_and_plain() {
        let raw = sample(50);
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        for comp in [true, false] {
            let mut out = Vec::new();
            let n = encode_block(
                &mut out,
                meta(50),
                &raw,
                if comp { Some(&mut z) } else { None },
            );
            assert_eq!(n, out.len());
            let (h, body) = decode_block(&out).unwrap();
            assert_eq!(h.codec, if comp { CODEC_ZSTD } else { CODEC_NONE });
            assert!(h.commit_end());
            let back = decompress_body(&h, body).unwrap();
            assert_eq!(back, raw);
            let offs = record_offsets(&back, 50).unwrap();
            assert_eq!(record_at(&back, offs[7]).unwrap().entity, "e:7");
        }
    }

    #[test]
    fn flipped_bits_and_truncations_are_detected() {
        let raw = sample(5);
        let mut out = Vec::new();
        encode_block(&mut out, meta(5), &raw, None);
        for i in 0..out.len() * 8 {
            let mut b = out.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode_block(&b).is_err(), "bit {i}");
        }
        for cut in 0..out.len() {
            assert!(decode_block(&out[..cut]).is_err());
        }
    }

    #[test]
    fn bad_utf8_passes_framing_but_not_decoding() {
        let mut raw = vec![2u8, 0xff, 0xfe, 1, b'k'];
        raw.extend_from_slice(&0i64.to_le_bytes());
        raw.extend_from_slice(&[0, 0, 0]);
        let offs = record_offsets(&raw, 1).unwrap();
        assert!(record_at(&raw, offs[0]).is_err());
    }

    #[test]
    fn wrong_record_count_is_an_error() {
        let raw = sample(3);
        assert!(record_offsets(&raw, 2).is_err());
        assert!(record_offsets(&raw, 4).is_err());
    }
}
