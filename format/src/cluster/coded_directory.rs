//! The cluster directory from version 7 on: a block table whose rows also say how many records
//! come before the block, then entities front-coded against the entity before them, with a
//! restart (a whole name, and where in the records that entity starts) every
//! [`RESTART_INTERVAL`] entities. A lookup is a binary search over the restarts, a scan of at
//! most that many entries, and a binary search over the block table.
//! Layout: `docs/format.md`, "Cluster file".

use super::{le_u64, ClusterBlock, ClusterHeader, EntityRun};
use crate::cursor::{put_varint, Cursor};
use crate::front_coding::{common_prefix_len, read_shared_suffix, RebuiltKey};
use crate::limits::{BLOCK_RECORDS_MAX, ENTITY_BYTES_MAX};
use crate::FormatError;

/// Bytes per block-table row: offset u64, length u32, record count u32, first seq u64, records
/// in the blocks before it u64.
pub const CODED_BLOCK_ROW_LEN: usize = 32;
/// Bytes per restart row: offset of its entry in the entry stream u64, records of the entities
/// before it u64.
pub const RESTART_ROW_LEN: usize = 16;
/// Every this many entities (from the first), an entry holds its whole name and has a restart
/// row. A lookup scans at most this many entries.
pub const RESTART_INTERVAL: u32 = 16;
/// Bytes before the block table: crc u32, entity count u32, entry-stream length u64.
const PREFIX_LEN: usize = 16;
const WHAT: &str = "cluster directory";

/// Builds a directory as blocks and entities are written, in order.
#[derive(Default)]
pub struct DirectoryBuilder {
    blocks: Vec<u8>,
    restarts: Vec<u8>,
    entries: Vec<u8>,
    entity_count: u32,
    block_count: u32,
    /// Records in the blocks pushed so far.
    block_records: u64,
    /// Records of the entities pushed so far.
    entity_records: u64,
    last_entity: Vec<u8>,
}

impl DirectoryBuilder {
    pub fn push_block(&mut self, b: ClusterBlock) {
        assert!(b.count > 0 && b.count <= BLOCK_RECORDS_MAX);
        self.blocks.extend_from_slice(&b.offset.to_le_bytes());
        self.blocks.extend_from_slice(&b.len.to_le_bytes());
        self.blocks.extend_from_slice(&b.count.to_le_bytes());
        self.blocks.extend_from_slice(&b.first_seq.to_le_bytes());
        self.blocks
            .extend_from_slice(&self.block_records.to_le_bytes());
        self.block_records += u64::from(b.count);
        self.block_count += 1;
    }

    /// Adds the next entity and how many records it has; entities come in strictly ascending
    /// byte order, their records in the order the blocks hold them.
    pub fn push_entity(&mut self, entity: &[u8], count: u32) {
        assert!(entity.len() <= ENTITY_BYTES_MAX && count > 0);
        assert!(
            self.entity_count == 0 || entity > self.last_entity.as_slice(),
            "entities must be pushed in ascending order"
        );
        let shared = if self.entity_count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts
                .extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
            self.restarts
                .extend_from_slice(&self.entity_records.to_le_bytes());
            0
        } else {
            common_prefix_len(&self.last_entity, entity)
        };
        put_varint(&mut self.entries, shared as u64);
        put_varint(&mut self.entries, (entity.len() - shared) as u64);
        self.entries.extend_from_slice(&entity[shared..]);
        put_varint(&mut self.entries, u64::from(count));
        self.last_entity.clear();
        self.last_entity.extend_from_slice(entity);
        self.entity_records += u64::from(count);
        self.entity_count += 1;
    }

    pub fn block_count(&self) -> u32 {
        self.block_count
    }

    /// The encoded directory.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            PREFIX_LEN + self.blocks.len() + self.restarts.len() + self.entries.len(),
        );
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&self.entity_count.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.blocks);
        out.extend_from_slice(&self.restarts);
        out.extend_from_slice(&self.entries);
        let crc = crate::crc32(out.get(4..).unwrap_or_default());
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// One entry of the stream, still relative to the name before it.
struct Entry<'a> {
    shared: usize,
    suffix: &'a [u8],
    count: u32,
}

fn read_entry<'a>(c: &mut Cursor<'a>) -> Result<Entry<'a>, FormatError> {
    let (shared, suffix) = read_shared_suffix(c, "cluster entity name", ENTITY_BYTES_MAX)?;
    let count = c.varint()?;
    let count = u32::try_from(count)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| FormatError::invalid(WHAT, format!("an entity of {count} records")))?;
    Ok(Entry {
        shared,
        suffix,
        count,
    })
}

/// The name an entry stands for, rebuilt from the one before it.
type Name = RebuiltKey<ENTITY_BYTES_MAX>;

/// Applies `e` to the name before it; `Greater` when the new name sorts after the old one, as
/// entities must. The new name equals the old one up to `shared`: the rest decides.
fn apply(name: &mut Name, e: &Entry<'_>) -> Result<std::cmp::Ordering, FormatError> {
    let order = e.suffix.cmp(name.get().get(e.shared..).unwrap_or_default());
    name.set(WHAT, e.shared, e.suffix)?;
    Ok(order)
}

/// A version 7 directory borrowed from the file's bytes.
pub struct CodedDirectoryView<'a> {
    blocks: &'a [u8],
    restarts: &'a [u8],
    entries: &'a [u8],
    entity_count: u32,
    block_count: u32,
    restart_count: u32,
}

impl<'a> CodedDirectoryView<'a> {
    /// Splits the directory's bytes into its tables; lookups stay bounds-checked.
    pub fn slice(bytes: &'a [u8], header: &ClusterHeader) -> Result<Self, FormatError> {
        let mut c = Cursor::new(WHAT, bytes);
        c.u32()?;
        let entity_count = c.u32()?;
        let entries_len = c.u64()?;
        let restart_count = entity_count.div_ceil(RESTART_INTERVAL);
        let blocks = c.take(header.block_count as usize * CODED_BLOCK_ROW_LEN)?;
        let restarts = c.take(restart_count as usize * RESTART_ROW_LEN)?;
        let entries = c.take(usize::try_from(entries_len).unwrap_or(usize::MAX))?;
        if !c.is_empty() {
            return Err(FormatError::invalid(
                WHAT,
                format!("{} bytes after the entries", c.remaining()),
            ));
        }
        Ok(CodedDirectoryView {
            blocks,
            restarts,
            entries,
            entity_count,
            block_count: header.block_count,
            restart_count,
        })
    }

    /// Blocks tile the bytes between the header and the directory, each row counting the
    /// records before it; entries decode, ascend strictly, restart where the restart rows say,
    /// and their records add up to the header's count.
    pub(super) fn check(&self, header: &ClusterHeader) -> Result<(), FormatError> {
        let before = |i: u32| Some(self.records_before_block(i));
        super::check_block_tiling(header, self.block_count, |i| self.block(i), before)?;
        let mut c = Cursor::new(WHAT, self.entries);
        let (mut name, mut records) = (Name::default(), 0u64);
        for i in 0..self.entity_count {
            if i.is_multiple_of(RESTART_INTERVAL) {
                let (at, before) = self.restart(i / RESTART_INTERVAL);
                if at != c.position() as u64 || before != records {
                    return Err(FormatError::invalid(
                        WHAT,
                        format!("restart of entity {i} does not match its entry"),
                    ));
                }
            }
            let e = read_entry(&mut c)?;
            if i.is_multiple_of(RESTART_INTERVAL) && e.shared != 0 {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("entity {i} starts a restart but shares bytes"),
                ));
            }
            if apply(&mut name, &e)? != std::cmp::Ordering::Greater && i > 0 {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("entity {i} is out of order"),
                ));
            }
            records += u64::from(e.count);
        }
        if !c.is_empty() || records != header.record_count {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "entities hold {records} records and leave {} bytes; the header says {}",
                    c.remaining(),
                    header.record_count
                ),
            ));
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
        let at = i as usize * CODED_BLOCK_ROW_LEN;
        let row = self.blocks.get(at..at + CODED_BLOCK_ROW_LEN)?;
        Some(ClusterBlock {
            offset: le_u64(row, 0),
            len: super::le_u32(row, 8),
            count: super::le_u32(row, 12),
            first_seq: le_u64(row, 16),
        })
    }

    fn records_before_block(&self, i: u32) -> u64 {
        le_u64(self.blocks, i as usize * CODED_BLOCK_ROW_LEN + 24)
    }

    /// Restart `k`: where its entry starts in the stream, and the records before its entity.
    fn restart(&self, k: u32) -> (u64, u64) {
        let at = k as usize * RESTART_ROW_LEN;
        (le_u64(self.restarts, at), le_u64(self.restarts, at + 8))
    }

    /// A cursor at restart `k`'s entry.
    fn cursor_at(&self, k: u32) -> Result<Cursor<'a>, FormatError> {
        let (at, _) = self.restart(k);
        let rest = usize::try_from(at)
            .ok()
            .and_then(|at| self.entries.get(at..))
            .ok_or_else(|| {
                FormatError::invalid(WHAT, format!("restart {k} outside the entries"))
            })?;
        Ok(Cursor::new(WHAT, rest))
    }

    /// Where a run of `count` records starts that has `before` records ahead of it in the file.
    fn run_at(&self, before: u64, count: u32) -> Result<EntityRun, FormatError> {
        // The last block with no more than `before` records ahead of it.
        let (mut lo, mut hi) = (0u32, self.block_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.records_before_block(mid) <= before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let block = lo
            .checked_sub(1)
            .ok_or_else(|| FormatError::invalid(WHAT, "a run before the first block"))?;
        let within = before - self.records_before_block(block);
        let first_record = u32::try_from(within)
            .ok()
            .filter(|r| self.block(block).is_some_and(|b| *r < b.count))
            .ok_or_else(|| FormatError::invalid(WHAT, "a run past its block"))?;
        Ok(EntityRun {
            first_block: block,
            first_record,
            count,
        })
    }

    /// The name and run of entity `i` (in entity order).
    pub fn entry(&self, i: u32) -> Result<(Vec<u8>, EntityRun), FormatError> {
        if i >= self.entity_count {
            return Err(FormatError::invalid(
                WHAT,
                format!("entity {i} out of range"),
            ));
        }
        let k = i / RESTART_INTERVAL;
        let mut c = self.cursor_at(k)?;
        let (mut name, mut before) = (Name::default(), self.restart(k).1);
        for _ in k * RESTART_INTERVAL..i {
            let e = read_entry(&mut c)?;
            apply(&mut name, &e)?;
            before = before.saturating_add(u64::from(e.count));
        }
        let e = read_entry(&mut c)?;
        apply(&mut name, &e)?;
        Ok((name.get().to_vec(), self.run_at(before, e.count)?))
    }

    /// The whole name at restart `k`.
    fn restart_name(&self, k: u32) -> Result<&'a [u8], FormatError> {
        let e = read_entry(&mut self.cursor_at(k)?)?;
        if e.shared != 0 {
            return Err(FormatError::invalid(
                WHAT,
                format!("restart {k} shares bytes"),
            ));
        }
        Ok(e.suffix)
    }

    /// The entity's run: the last restart at or before it, then the entries after that one.
    pub fn find(&self, entity: &[u8]) -> Result<Option<EntityRun>, FormatError> {
        let (mut lo, mut hi) = (0u32, self.restart_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.restart_name(mid)? <= entity {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(k) = lo.checked_sub(1) else {
            return Ok(None);
        };
        let mut c = self.cursor_at(k)?;
        let (mut name, mut before) = (Name::default(), self.restart(k).1);
        let first = k * RESTART_INTERVAL;
        let last = first
            .saturating_add(RESTART_INTERVAL)
            .min(self.entity_count);
        for _ in first..last {
            let e = read_entry(&mut c)?;
            apply(&mut name, &e)?;
            match name.get().cmp(entity) {
                std::cmp::Ordering::Less => before = before.saturating_add(u64::from(e.count)),
                std::cmp::Ordering::Equal => return self.run_at(before, e.count).map(Some),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::DirectoryView;
    use crate::FORMAT_VERSION;

    fn header(dir_len: u64, blocks: u32, records: u64, dir_off: u64) -> ClusterHeader {
        ClusterHeader {
            version: FORMAT_VERSION,
            base_seq: 1,
            end_seq: 1 << 40,
            record_count: records,
            level: 0,
            block_count: blocks,
            directory_offset: dir_off,
            directory_len: dir_len,
        }
    }

    /// A directory of `entities` (name, records) over blocks of `block_records` records each;
    /// its header.
    fn build(entities: &[(Vec<u8>, u32)], block_records: u32) -> (Vec<u8>, ClusterHeader) {
        let total: u64 = entities.iter().map(|(_, n)| u64::from(*n)).sum();
        let mut d = DirectoryBuilder::default();
        let (mut at, mut left) = (64u64, total);
        while left > 0 {
            let count = (block_records as u64).min(left) as u32;
            d.push_block(ClusterBlock {
                offset: at,
                len: 100,
                count,
                first_seq: 1 + total - left,
            });
            at += 100;
            left -= u64::from(count);
        }
        let blocks = d.block_count();
        for (name, n) in entities {
            d.push_entity(name, *n);
        }
        let bytes = d.finish();
        let h = header(bytes.len() as u64, blocks, total, at);
        (bytes, h)
    }

    fn names(n: u32) -> Vec<(Vec<u8>, u32)> {
        // Shared prefixes of every length, a name that is a prefix of the next, an empty name.
        let mut v: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("product:{}", i * 7919 % 100_003).into_bytes())
            .collect();
        v.push(Vec::new());
        v.push(b"product:1".to_vec());
        v.push(b"product:1x".to_vec());
        v.push(vec![0xff; ENTITY_BYTES_MAX]);
        v.sort();
        v.dedup();
        v.into_iter()
            .enumerate()
            .map(|(i, name)| (name, (i % 5) as u32 * 40 + 1))
            .collect()
    }

    #[test]
    fn every_entity_is_found_where_its_records_are() {
        let entities = names(500);
        let (bytes, h) = build(&entities, 37);
        let v = DirectoryView::parse(&bytes, &h).unwrap();
        assert_eq!(v.entity_count() as usize, entities.len());
        let mut before = 0u64;
        for (i, (name, n)) in entities.iter().enumerate() {
            let run = v.find(name).unwrap().expect("found");
            let at = u64::from(run.first_block) * 37 + u64::from(run.first_record);
            assert_eq!((at, run.count), (before, *n), "entity {i}");
            assert_eq!(v.entry(i as u32).unwrap(), (name.clone(), run));
            before += u64::from(*n);
            // Names between two entities are not there.
            let mut between = name.clone();
            between.push(0);
            if entities.get(i + 1).is_none_or(|(next, _)| *next != between) {
                assert_eq!(v.find(&between).unwrap(), None);
            }
        }
        assert!(v.entry(entities.len() as u32).is_err());
        assert_eq!(v.find(&[0xff; ENTITY_BYTES_MAX + 1]).unwrap(), None);
    }

    #[test]
    fn front_coding_takes_a_fraction_of_fixed_entries() {
        let entities = names(2000);
        let (bytes, h) = build(&entities, 1000);
        let entries: usize = entities.iter().map(|(n, _)| 20 + n.len()).sum();
        let fixed = 8 + h.block_count as usize * 24 + entries;
        assert!(bytes.len() * 2 < fixed, "{} against {fixed}", bytes.len());
    }

    /// Re-seals `bytes` after a change, so the checks past the CRC are what refuse it.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        let crc = crate::crc32(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn damage_with_a_good_checksum_is_refused_or_read_without_panic() {
        let (bytes, h) = build(&names(100), 1000);
        assert!(DirectoryView::parse(&bytes, &h).is_ok());
        let mut refused = 0;
        for at in 4..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[at] ^= bit;
                let b = reseal(b);
                match DirectoryView::parse(&b, &h) {
                    Err(_) => refused += 1,
                    // Some bytes (a suffix byte that keeps the order) may change a name: the
                    // file then reads as that name, within bounds.
                    Ok(v) => {
                        for i in 0..v.entity_count() {
                            let (name, _) = v.entry(i).unwrap();
                            assert!(v.find(&name).unwrap().is_some());
                        }
                    }
                }
            }
        }
        assert!(refused > bytes.len(), "{refused} of {}", 2 * bytes.len());
        let mut b = bytes.clone();
        b.push(0);
        assert!(
            DirectoryView::parse(&reseal(b), &h).is_err(),
            "trailing byte"
        );
        let other = header(h.directory_len, h.block_count, h.record_count + 1, 0);
        assert!(
            DirectoryView::parse(&bytes, &other).is_err(),
            "record count"
        );
    }

    #[test]
    fn arbitrary_bytes_after_the_checksum_never_panic() {
        for seed in 0u64..3000 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let len = 16 + (seed % 300) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            // Plausible counts, so the tables are split and walked.
            bytes[4..8].copy_from_slice(&((seed % 40) as u32).to_le_bytes());
            bytes[8..16].copy_from_slice(&(seed % 64).to_le_bytes());
            let hh = header(len as u64, (seed % 4) as u32, seed % 50, 64);
            if let Ok(v) = DirectoryView::parse(&reseal(bytes.clone()), &hh) {
                let _ = v.find(b"product:1");
            }
            if let Ok(v) = DirectoryView::slice(&bytes, &hh) {
                let _ = v.find(b"x");
                let _ = v.entry(0);
            }
        }
    }
}
