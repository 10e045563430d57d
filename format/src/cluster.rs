//! Cluster files (`.clu`): the events of a run of sealed segments rewritten in (entity, seq)
//! order, so that one entity's events in the file are contiguous, in as few blocks as they fill.
//!
//! A file is a 64-byte header, blocks in the segment block format (whose raw body here starts
//! with a column of the records' seqs), and a directory: the block table and one entry per
//! entity, sorted by entity bytes, giving where its records start and how many there are.
//! Layout: `docs/format.md`, "Cluster file".

use crate::cursor::Cursor;
use crate::limits::{BLOCK_RECORDS_MAX, ENTITY_BYTES_MAX};
use crate::{check_version, verify_crc32, FormatError, FORMAT_VERSION};

pub const CLUSTER_MAGIC: [u8; 8] = *b"ECHOCLUS";
pub const CLUSTER_HEADER_LEN: usize = 64;
/// Bytes per block-table row: offset u64, length u32, record count u32, first seq u64.
pub const CLUSTER_BLOCK_ROW_LEN: usize = 24;
/// Bytes per directory entry: name offset u32, name length u16, reserved u16, first block u32,
/// first record in that block u32, record count u32.
pub const CLUSTER_ENTRY_LEN: usize = 20;
/// Bytes before the block table in the directory: crc u32, entity count u32.
const DIRECTORY_PREFIX_LEN: usize = 8;
/// The first version with cluster files.
pub const CLUSTER_VERSION_MIN: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterHeader {
    pub version: u32,
    /// First seq the file covers.
    pub base_seq: u64,
    /// One past the last seq it covers.
    pub end_seq: u64,
    pub record_count: u64,
    /// 0 for a file built from one segment; a merge of files of level L is L + 1.
    pub level: u32,
    pub block_count: u32,
    pub directory_offset: u64,
    pub directory_len: u64,
}

impl ClusterHeader {
    pub fn encode(&self) -> [u8; CLUSTER_HEADER_LEN] {
        let mut b = [0u8; CLUSTER_HEADER_LEN];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(4, &CLUSTER_MAGIC);
        put(12, &FORMAT_VERSION.to_le_bytes());
        put(16, &self.base_seq.to_le_bytes());
        put(24, &self.end_seq.to_le_bytes());
        put(32, &self.record_count.to_le_bytes());
        put(40, &self.level.to_le_bytes());
        put(44, &self.block_count.to_le_bytes());
        put(48, &self.directory_offset.to_le_bytes());
        put(56, &self.directory_len.to_le_bytes());
        let crc = crate::crc32(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header: checksum, magic, version, and that the directory lies
    /// inside a file of `file_len` bytes after the header.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<Self, FormatError> {
        const WHAT: &str = "cluster header";
        let head = bytes
            .get(..CLUSTER_HEADER_LEN)
            .ok_or(FormatError::Truncated {
                what: WHAT,
                needed: CLUSTER_HEADER_LEN as u64,
                available: bytes.len() as u64,
            })?;
        let mut c = Cursor::new(WHAT, head);
        let crc = c.u32()?;
        let magic: [u8; 8] = c.array()?;
        if magic != CLUSTER_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        verify_crc32(WHAT, crc, head.get(4..).unwrap_or_default())?;
        let version = check_version(WHAT, c.u32()?)?;
        if version < CLUSTER_VERSION_MIN {
            return Err(FormatError::invalid(
                WHAT,
                format!("version {version} has no cluster files"),
            ));
        }
        let h = ClusterHeader {
            version,
            base_seq: c.u64()?,
            end_seq: c.u64()?,
            record_count: c.u64()?,
            level: c.u32()?,
            block_count: c.u32()?,
            directory_offset: c.u64()?,
            directory_len: c.u64()?,
        };
        if h.base_seq == 0 || h.end_seq <= h.base_seq {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "seq range {}..{} is empty or starts at 0",
                    h.base_seq, h.end_seq
                ),
            ));
        }
        if h.record_count > h.end_seq - h.base_seq {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "{} records in a range of {} seqs",
                    h.record_count,
                    h.end_seq - h.base_seq
                ),
            ));
        }
        let dir_end = h.directory_offset.checked_add(h.directory_len);
        if h.directory_offset < CLUSTER_HEADER_LEN as u64 || dir_end != Some(file_len) {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "directory at {}+{} does not end the file of {file_len} bytes",
                    h.directory_offset, h.directory_len
                ),
            ));
        }
        Ok(h)
    }
}

/// One row of the block table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterBlock {
    pub offset: u64,
    pub len: u32,
    pub count: u32,
    /// Seq of the block's first record (its header says the same).
    pub first_seq: u64,
}

/// Where an entity's records are: `count` records from record `first_record` of block
/// `first_block` on, continuing through the following blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityRun {
    pub first_block: u32,
    pub first_record: u32,
    pub count: u32,
}

/// Builds a directory as entities and blocks are written, in order.
#[derive(Default)]
pub struct DirectoryBuilder {
    blocks: Vec<u8>,
    entries: Vec<u8>,
    names: Vec<u8>,
    entity_count: u32,
    block_count: u32,
    last_entity: Vec<u8>,
}

impl DirectoryBuilder {
    pub fn push_block(&mut self, b: ClusterBlock) {
        assert!(b.count > 0 && b.count <= BLOCK_RECORDS_MAX);
        self.blocks.extend_from_slice(&b.offset.to_le_bytes());
        self.blocks.extend_from_slice(&b.len.to_le_bytes());
        self.blocks.extend_from_slice(&b.count.to_le_bytes());
        self.blocks.extend_from_slice(&b.first_seq.to_le_bytes());
        self.block_count += 1;
    }

    /// Adds the next entity; entities come in strictly ascending byte order.
    pub fn push_entity(&mut self, entity: &[u8], run: EntityRun) {
        assert!(entity.len() <= ENTITY_BYTES_MAX && run.count > 0);
        assert!(
            self.entity_count == 0 || entity > self.last_entity.as_slice(),
            "entities must be pushed in ascending order"
        );
        let name_offset = u32::try_from(self.names.len()).expect("names blob under 4 GiB");
        self.entries.extend_from_slice(&name_offset.to_le_bytes());
        self.entries
            .extend_from_slice(&(entity.len() as u16).to_le_bytes());
        self.entries.extend_from_slice(&0u16.to_le_bytes());
        self.entries
            .extend_from_slice(&run.first_block.to_le_bytes());
        self.entries
            .extend_from_slice(&run.first_record.to_le_bytes());
        self.entries.extend_from_slice(&run.count.to_le_bytes());
        self.names.extend_from_slice(entity);
        self.last_entity.clear();
        self.last_entity.extend_from_slice(entity);
        self.entity_count += 1;
    }

    pub fn block_count(&self) -> u32 {
        self.block_count
    }

    /// The encoded directory.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            DIRECTORY_PREFIX_LEN + self.blocks.len() + self.entries.len() + self.names.len(),
        );
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&self.entity_count.to_le_bytes());
        out.extend_from_slice(&self.blocks);
        out.extend_from_slice(&self.entries);
        out.extend_from_slice(&self.names);
        let crc = crate::crc32(out.get(4..).unwrap_or_default());
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A checked directory borrowed from the file's bytes. Construction verifies the checksum,
/// every bound, entity order and that the runs tile the records; lookups are then binary
/// searches that cannot go out of bounds.
pub struct DirectoryView<'a> {
    blocks: &'a [u8],
    entries: &'a [u8],
    names: &'a [u8],
    entity_count: u32,
    block_count: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl<'a> DirectoryView<'a> {
    /// Checks the directory fully (checksum, bounds, order, tiling): once per file.
    pub fn parse(bytes: &'a [u8], header: &ClusterHeader) -> Result<Self, FormatError> {
        let crc = Cursor::new("cluster directory", bytes).u32()?;
        verify_crc32("cluster directory", crc, bytes.get(4..).unwrap_or_default())?;
        let v = Self::slice(bytes, header)?;
        v.check(header)?;
        Ok(v)
    }

    /// Splits a directory that [`DirectoryView::parse`] already accepted (the bytes are
    /// immutable); lookups stay bounds-checked.
    pub fn slice(bytes: &'a [u8], header: &ClusterHeader) -> Result<Self, FormatError> {
        const WHAT: &str = "cluster directory";
        let mut c = Cursor::new(WHAT, bytes);
        c.u32()?;
        let entity_count = c.u32()?;
        let block_count = header.block_count;
        let blocks = c.take(block_count as usize * CLUSTER_BLOCK_ROW_LEN)?;
        let entries = c.take(entity_count as usize * CLUSTER_ENTRY_LEN)?;
        let names = c.take(c.remaining())?;
        Ok(DirectoryView {
            blocks,
            entries,
            names,
            entity_count,
            block_count,
        })
    }

    /// Blocks lie between the header and the directory without overlapping; runs name blocks
    /// that exist, follow each other without gap or overlap, and add up to the record count.
    fn check(&self, header: &ClusterHeader) -> Result<(), FormatError> {
        const WHAT: &str = "cluster directory";
        let mut at = crate::cluster::CLUSTER_HEADER_LEN as u64;
        let mut records = 0u64;
        for i in 0..self.block_count {
            let b = self
                .block(i)
                .ok_or(FormatError::invalid(WHAT, "block table"))?;
            if b.offset != at || b.count == 0 || b.count > BLOCK_RECORDS_MAX {
                return Err(FormatError::invalid(
                    WHAT,
                    format!(
                        "block {i} at {} of {} records, expected at {at}",
                        b.offset, b.count
                    ),
                ));
            }
            at += u64::from(b.len);
            records += u64::from(b.count);
        }
        if at != header.directory_offset || records != header.record_count {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "blocks end at {at} holding {records} records; the header says {} and {}",
                    header.directory_offset, header.record_count
                ),
            ));
        }
        // The runs, in entity order, tile the records in file order.
        let (mut block, mut record, mut prev): (u32, u32, Option<&[u8]>) = (0, 0, None);
        for i in 0..self.entity_count {
            let (name, run) = self.entry(i)?;
            if prev.is_some_and(|p| p >= name) {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("entity {i} is out of order"),
                ));
            }
            prev = Some(name);
            if run.first_block != block || run.first_record != record || run.count == 0 {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("entity {i}'s records do not follow the previous entity's"),
                ));
            }
            let mut left = run.count;
            while left > 0 {
                let b = self.block(block).ok_or(FormatError::invalid(
                    WHAT,
                    format!("entity {i} runs past the last block"),
                ))?;
                let here = (b.count - record).min(left);
                left -= here;
                record += here;
                if record == b.count {
                    block += 1;
                    record = 0;
                }
            }
        }
        if block != self.block_count {
            return Err(FormatError::invalid(WHAT, "records without an entity"));
        }
        Ok(())
    }

    pub fn entity_count(&self) -> u32 {
        self.entity_count
    }

    pub fn block_count(&self) -> u32 {
        self.block_count
    }

    pub fn block(&self, i: u32) -> Option<ClusterBlock> {
        if i >= self.block_count {
            return None;
        }
        let at = i as usize * CLUSTER_BLOCK_ROW_LEN;
        Some(ClusterBlock {
            offset: le_u64(self.blocks, at),
            len: le_u32(self.blocks, at + 8),
            count: le_u32(self.blocks, at + 12),
            first_seq: le_u64(self.blocks, at + 16),
        })
    }

    /// The name and run of entity `i` (in entity order).
    pub fn entry(&self, i: u32) -> Result<(&'a [u8], EntityRun), FormatError> {
        const WHAT: &str = "cluster directory entry";
        if i >= self.entity_count {
            return Err(FormatError::invalid(
                WHAT,
                format!("entity {i} out of range"),
            ));
        }
        let at = i as usize * CLUSTER_ENTRY_LEN;
        let e = self
            .entries
            .get(at..at + CLUSTER_ENTRY_LEN)
            .ok_or(FormatError::invalid(WHAT, "entries"))?;
        let off = le_u32(e, 0) as usize;
        // The name length is the u16 at byte 4 (the u16 after it is reserved).
        let len = (le_u32(e, 4) & 0xffff) as usize;
        if len > ENTITY_BYTES_MAX {
            return Err(FormatError::LimitExceeded {
                what: "cluster entity name",
                value: len as u64,
                max: ENTITY_BYTES_MAX as u64,
            });
        }
        let name = self
            .names
            .get(off..off.saturating_add(len))
            .ok_or(FormatError::invalid(
                WHAT,
                format!("entity {i}'s name is outside the names"),
            ))?;
        let run = EntityRun {
            first_block: le_u32(e, 8),
            first_record: le_u32(e, 12),
            count: le_u32(e, 16),
        };
        Ok((name, run))
    }

    /// The entity's run, by binary search over the sorted entries.
    pub fn find(&self, entity: &[u8]) -> Result<Option<EntityRun>, FormatError> {
        let (mut lo, mut hi) = (0u32, self.entity_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (name, run) = self.entry(mid)?;
            match name.cmp(entity) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(run)),
            }
        }
        Ok(None)
    }
}

/// The raw body of a cluster block: the records' seqs (u64 each), then the records.
pub fn encode_cluster_body(out: &mut Vec<u8>, seqs: &[u64], records: &[u8]) {
    for s in seqs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(records);
}

/// Splits a decompressed cluster block body of `count` records into its seqs and its records.
pub fn split_cluster_body(raw: &[u8], count: u32) -> Result<(Vec<u64>, &[u8]), FormatError> {
    let mut c = Cursor::new("cluster block seqs", raw);
    let mut seqs = Vec::with_capacity(count.min(BLOCK_RECORDS_MAX) as usize);
    for _ in 0..count {
        seqs.push(c.u64()?);
    }
    Ok((seqs, c.take(c.remaining())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dir_len: u64, blocks: u32, records: u64, dir_off: u64) -> ClusterHeader {
        ClusterHeader {
            version: FORMAT_VERSION,
            base_seq: 1,
            end_seq: 101,
            record_count: records,
            level: 0,
            block_count: blocks,
            directory_offset: dir_off,
            directory_len: dir_len,
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = header(100, 2, 10, 500);
        let b = h.encode();
        assert_eq!(ClusterHeader::decode(&b, 600), Ok(h));
        let mut bad = b;
        bad[20] ^= 1;
        assert!(matches!(
            ClusterHeader::decode(&bad, 600),
            Err(FormatError::ChecksumMismatch { .. })
        ));
        assert!(
            ClusterHeader::decode(&b, 601).is_err(),
            "directory must end the file"
        );
        assert!(ClusterHeader::decode(&b[..10], 600).is_err());
    }

    #[test]
    fn directory_finds_every_entity_and_checks_tiling() {
        // Two blocks of 3 and 2 records: a has 2, b has 2 (crossing), c has 1.
        let mut d = DirectoryBuilder::default();
        d.push_block(ClusterBlock {
            offset: 64,
            len: 100,
            count: 3,
            first_seq: 1,
        });
        d.push_block(ClusterBlock {
            offset: 164,
            len: 50,
            count: 2,
            first_seq: 4,
        });
        d.push_entity(
            b"a",
            EntityRun {
                first_block: 0,
                first_record: 0,
                count: 2,
            },
        );
        d.push_entity(
            b"b",
            EntityRun {
                first_block: 0,
                first_record: 2,
                count: 2,
            },
        );
        d.push_entity(
            b"c",
            EntityRun {
                first_block: 1,
                first_record: 1,
                count: 1,
            },
        );
        let bytes = d.finish();
        let h = header(bytes.len() as u64, 2, 5, 214);
        let v = DirectoryView::parse(&bytes, &h).unwrap();
        assert_eq!(
            v.find(b"b").unwrap(),
            Some(EntityRun {
                first_block: 0,
                first_record: 2,
                count: 2
            })
        );
        assert_eq!(v.find(b"c").unwrap().map(|r| r.first_block), Some(1));
        assert_eq!(v.find(b"bb").unwrap(), None);
        assert_eq!(v.find(b"").unwrap(), None);
        // A header with another record count does not match the tiling.
        assert!(DirectoryView::parse(&bytes, &header(bytes.len() as u64, 2, 6, 214)).is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(DirectoryView::parse(&bad, &h).is_err());
    }

    #[test]
    fn arbitrary_directory_bytes_never_panic() {
        let h = header(64, 3, 7, 300);
        for seed in 0u64..2000 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let len = (seed % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Ok(v) = DirectoryView::parse(&bytes, &h) {
                let _ = v.find(b"x");
            }
        }
    }

    #[test]
    fn body_splits_into_seqs_and_records() {
        let mut raw = Vec::new();
        encode_cluster_body(&mut raw, &[7, 3], b"recs");
        let (seqs, rest) = split_cluster_body(&raw, 2).unwrap();
        assert_eq!((seqs, rest), (vec![7, 3], &b"recs"[..]));
        assert!(split_cluster_body(&raw, 5).is_err());
    }
}
