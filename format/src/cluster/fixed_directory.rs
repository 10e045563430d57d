//! The cluster directory of versions 3 to 6: a block table of 24-byte rows and one 20-byte
//! entry per entity pointing into a blob of names. Read only; this build writes version 7
//! (`coded_directory`). Layout: `docs/format.md`, "Cluster file", "Versions 3 to 6".

use super::{le_u32, le_u64, ClusterBlock, ClusterHeader, EntityRun};
use crate::cursor::Cursor;
#[cfg(test)]
use crate::limits::BLOCK_RECORDS_MAX;
use crate::limits::ENTITY_BYTES_MAX;
use crate::FormatError;

/// Bytes per block-table row: offset u64, length u32, record count u32, first seq u64.
pub const FIXED_BLOCK_ROW_LEN: usize = 24;
/// Bytes per directory entry: name offset u32, name length u16, reserved u16, first block u32,
/// first record in that block u32, record count u32.
pub const FIXED_ENTRY_LEN: usize = 20;
/// Bytes before the block table in the directory: crc u32, entity count u32.
#[cfg(test)]
const DIRECTORY_PREFIX_LEN: usize = 8;

/// A directory of versions 3 to 6, borrowed from the file's bytes; lookups are binary searches
/// over the fixed-size entries.
pub struct FixedDirectoryView<'a> {
    blocks: &'a [u8],
    entries: &'a [u8],
    names: &'a [u8],
    entity_count: u32,
    block_count: u32,
}

impl<'a> FixedDirectoryView<'a> {
    /// Splits the directory's bytes into its tables; lookups stay bounds-checked.
    pub fn slice(bytes: &'a [u8], header: &ClusterHeader) -> Result<Self, FormatError> {
        const WHAT: &str = "cluster directory";
        let mut c = Cursor::new(WHAT, bytes);
        c.u32()?;
        let entity_count = c.u32()?;
        let block_count = header.block_count;
        let blocks = c.take(block_count as usize * FIXED_BLOCK_ROW_LEN)?;
        let entries = c.take(entity_count as usize * FIXED_ENTRY_LEN)?;
        let names = c.take(c.remaining())?;
        Ok(FixedDirectoryView {
            blocks,
            entries,
            names,
            entity_count,
            block_count,
        })
    }

    /// Blocks lie between the header and the directory without overlapping; runs name blocks
    /// that exist, follow each other without gap or overlap, and add up to the record count.
    pub(super) fn check(&self, header: &ClusterHeader) -> Result<(), FormatError> {
        const WHAT: &str = "cluster directory";
        super::check_block_tiling(header, self.block_count, |i| self.block(i), |_| None)?;
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
        let at = i as usize * FIXED_BLOCK_ROW_LEN;
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
        let at = i as usize * FIXED_ENTRY_LEN;
        let e = self
            .entries
            .get(at..at + FIXED_ENTRY_LEN)
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

/// Builds a directory of this layout, for tests of the reader (this build writes version 7).
#[cfg(test)]
#[derive(Default)]
pub struct FixedDirectoryBuilder {
    blocks: Vec<u8>,
    entries: Vec<u8>,
    names: Vec<u8>,
    entity_count: u32,
    block_count: u32,
    last_entity: Vec<u8>,
}

#[cfg(test)]
impl FixedDirectoryBuilder {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::DirectoryView;

    fn header(dir_len: u64, blocks: u32, records: u64, dir_off: u64) -> ClusterHeader {
        ClusterHeader {
            version: 6,
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
    fn directory_finds_every_entity_and_checks_tiling() {
        // Two blocks of 3 and 2 records: a has 2, b has 2 (crossing), c has 1.
        let mut d = FixedDirectoryBuilder::default();
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
}
