//! Cluster files (`.clu`): the events of a run of sealed segments rewritten in (entity, seq)
//! order, so that one entity's events in the file are contiguous, in as few blocks as they fill.
//!
//! A file is a 64-byte header, blocks in the segment block format (whose raw body here starts
//! with a column of the records' seqs), and a directory: the block table and one entry per
//! entity, sorted by entity bytes, giving where its records start and how many there are.
//! Layout: `docs/format.md`, "Cluster file".
//!
//! Two layouts of the seq column and the directory exist. Versions 3 to 6 hold each seq as a
//! u64 and each entity as a fixed 20-byte entry (`fixed_directory`). Version 7 on
//! delta-codes the seqs (`body`) and front-codes the entities (`coded_directory`). Readers go
//! by the version in the file's header; writers write the current one.

mod body;
mod coded_directory;
mod fixed_directory;

pub use body::{encode_cluster_body, split_cluster_body};
pub use coded_directory::{CodedDirectoryView, DirectoryBuilder, RESTART_INTERVAL};
pub use fixed_directory::FixedDirectoryView;

use crate::cursor::Cursor;
use crate::limits::BLOCK_RECORDS_MAX;
use crate::{check_version, verify_crc32, FormatError, FORMAT_VERSION};

pub const CLUSTER_MAGIC: [u8; 8] = *b"ECHOCLUS";
pub const CLUSTER_HEADER_LEN: usize = 64;
/// The first version with cluster files.
pub const CLUSTER_VERSION_MIN: u32 = 3;
/// The first version whose seq column is delta-coded and whose directory is front-coded.
pub const CLUSTER_CODED_VERSION_MIN: u32 = 7;

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

/// A checked directory borrowed from the file's bytes, in the layout its header's version
/// names. Construction verifies the checksum, every bound, entity order and that the runs tile
/// the records; lookups then cannot go out of bounds.
pub enum DirectoryView<'a> {
    Fixed(FixedDirectoryView<'a>),
    Coded(CodedDirectoryView<'a>),
}

impl<'a> DirectoryView<'a> {
    /// Checks the directory fully (checksum, bounds, order, tiling): once per file.
    pub fn parse(bytes: &'a [u8], header: &ClusterHeader) -> Result<Self, FormatError> {
        let crc = Cursor::new("cluster directory", bytes).u32()?;
        verify_crc32("cluster directory", crc, bytes.get(4..).unwrap_or_default())?;
        let v = Self::slice(bytes, header)?;
        match &v {
            DirectoryView::Fixed(d) => d.check(header)?,
            DirectoryView::Coded(d) => d.check(header)?,
        }
        Ok(v)
    }

    /// Splits a directory that [`DirectoryView::parse`] already accepted (the bytes are
    /// immutable); lookups stay bounds-checked.
    pub fn slice(bytes: &'a [u8], header: &ClusterHeader) -> Result<Self, FormatError> {
        Ok(if header.version >= CLUSTER_CODED_VERSION_MIN {
            DirectoryView::Coded(CodedDirectoryView::slice(bytes, header)?)
        } else {
            DirectoryView::Fixed(FixedDirectoryView::slice(bytes, header)?)
        })
    }

    pub fn entity_count(&self) -> u32 {
        match self {
            DirectoryView::Fixed(d) => d.entity_count(),
            DirectoryView::Coded(d) => d.entity_count(),
        }
    }

    pub fn block_count(&self) -> u32 {
        match self {
            DirectoryView::Fixed(d) => d.block_count(),
            DirectoryView::Coded(d) => d.block_count(),
        }
    }

    pub fn block(&self, i: u32) -> Option<ClusterBlock> {
        match self {
            DirectoryView::Fixed(d) => d.block(i),
            DirectoryView::Coded(d) => d.block(i),
        }
    }

    /// The name and run of entity `i` (in entity order).
    pub fn entry(&self, i: u32) -> Result<(Vec<u8>, EntityRun), FormatError> {
        match self {
            DirectoryView::Fixed(d) => d.entry(i).map(|(n, r)| (n.to_vec(), r)),
            DirectoryView::Coded(d) => d.entry(i),
        }
    }

    /// The entity's run, if the file holds it.
    pub fn find(&self, entity: &[u8]) -> Result<Option<EntityRun>, FormatError> {
        match self {
            DirectoryView::Fixed(d) => d.find(entity),
            DirectoryView::Coded(d) => d.find(entity),
        }
    }
}

/// Blocks lie back to back from the end of the header to the directory, each of 1 to
/// `BLOCK_RECORDS_MAX` records, and their counts add up to the header's. `before(i)`, in a
/// layout that stores it, must be the records of the blocks before block `i`.
fn check_block_tiling(
    header: &ClusterHeader,
    block_count: u32,
    block: impl Fn(u32) -> Option<ClusterBlock>,
    before: impl Fn(u32) -> Option<u64>,
) -> Result<(), FormatError> {
    const WHAT: &str = "cluster directory";
    let (mut at, mut records) = (CLUSTER_HEADER_LEN as u64, 0u64);
    for i in 0..block_count {
        let b = block(i).ok_or(FormatError::invalid(WHAT, "block table"))?;
        let counted = before(i).unwrap_or(records);
        if b.offset != at || b.count == 0 || b.count > BLOCK_RECORDS_MAX || counted != records {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "block {i} at {} of {} records after {counted}, expected at {at} after {records}",
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
    Ok(())
}

/// A little-endian u32 at `at`, 0 past the end (callers index checked tables).
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// A little-endian u64 at `at`, 0 past the end.
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = ClusterHeader {
            version: FORMAT_VERSION,
            base_seq: 1,
            end_seq: 101,
            record_count: 10,
            level: 0,
            block_count: 2,
            directory_offset: 500,
            directory_len: 100,
        };
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
}
