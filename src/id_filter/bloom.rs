//! One split-block Bloom filter: 256-bit blocks of eight 32-bit words, one bit set in each word
//! (Parquet's shape), `BITS_PER_ID` bits per id. Its blocks live in memory, or in the mapped
//! IDFILTER file, where each 4 KiB page is checked against its CRC32 the first time a lookup
//! touches it.

use std::sync::Arc;

use echolog_format::id_filter_file::{check_page, BlocksRef, SavedPart};

use crate::storage::Mapped;

/// Bits of filter per id: 0.14% false "maybe"s at full capacity (the unit test below: 276 of
/// 200,000 ids never added).
pub const BITS_PER_ID: u64 = 16;

/// The odd multipliers that pick one bit in each word of a block (Parquet's).
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// Blocks of a filter made for `ids` ids.
pub fn block_count_for(ids: u64) -> usize {
    let blocks = (ids.max(1).saturating_mul(BITS_PER_ID)).div_ceil(256);
    usize::try_from(blocks).unwrap_or(usize::MAX).max(1)
}

#[derive(Debug)]
pub struct BlockBloom {
    block_count: usize,
    blocks: Blocks,
}

#[derive(Debug)]
enum Blocks {
    /// In memory: empty until the first insert (a part over segments without ids costs
    /// nothing), then `block_count` blocks.
    Owned(Vec<[u32; 8]>),
    /// In the saved file.
    Saved(SavedBlocks),
}

/// What a page of saved blocks is known to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Unchecked,
    Good,
    Damaged,
}

struct SavedBlocks {
    file: Arc<Mapped>,
    part: SavedPart,
    pages: Vec<Page>,
}

impl std::fmt::Debug for SavedBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedBlocks")
            .field("part", &self.part)
            .finish_non_exhaustive()
    }
}

impl SavedBlocks {
    fn bytes(&self) -> &[u8] {
        (**self.file).as_ref()
    }

    /// Whether page `page` holds the bytes its CRC32 says (checked once, then remembered).
    fn page_good(&mut self, page: usize) -> bool {
        let state = self.pages.get(page).copied().unwrap_or(Page::Damaged);
        if state != Page::Unchecked {
            return state == Page::Good;
        }
        let checked = check_page(self.bytes(), &self.part, page);
        if let Err(e) = &checked {
            tracing::warn!(base_seq = self.part.base_seq, page, error = %e, "a page of the saved id filter is damaged; ids it would answer for are searched in their segments");
        }
        let state = if checked.is_ok() {
            Page::Good
        } else {
            Page::Damaged
        };
        if let Some(p) = self.pages.get_mut(page) {
            *p = state;
        }
        state == Page::Good
    }
}

impl BlockBloom {
    /// A filter for up to `ids` ids at about 0.14% false positives.
    pub fn with_capacity(ids: u64) -> Self {
        BlockBloom {
            block_count: block_count_for(ids),
            blocks: Blocks::Owned(Vec::new()),
        }
    }

    /// The blocks of a saved part made for `capacity` ids, read from `file` as lookups need
    /// them: `None` unless the part has no blocks (nothing inserted) or exactly as many as
    /// such a filter has.
    pub fn saved(capacity: u64, file: Arc<Mapped>, part: SavedPart) -> Option<Self> {
        let block_count = block_count_for(capacity);
        if part.block_count == 0 {
            return Some(BlockBloom::with_capacity(capacity));
        }
        (part.block_count == block_count).then(|| BlockBloom {
            block_count,
            blocks: Blocks::Saved(SavedBlocks {
                pages: vec![Page::Unchecked; part.page_crcs.len()],
                file,
                part,
            }),
        })
    }

    /// The blocks as the IDFILTER file stores them.
    pub fn blocks_ref(&self) -> BlocksRef<'_> {
        match &self.blocks {
            Blocks::Owned(v) => BlocksRef::Words(v),
            Blocks::Saved(s) => BlocksRef::Saved {
                bytes: s.bytes().get(s.part.blocks_at.clone()).unwrap_or_default(),
                page_crcs: &s.part.page_crcs,
            },
        }
    }

    /// The block of `hash` (its high half, scaled to the block count) and the bit of each
    /// word (its low half, through the salts).
    fn place(&self, hash: u64) -> (usize, [u32; 8]) {
        let block = (((hash >> 32) * self.block_count as u64) >> 32) as usize;
        let key = hash as u32;
        let mut mask = [0u32; 8];
        for (m, salt) in mask.iter_mut().zip(SALT) {
            *m = 1 << (key.wrapping_mul(salt) >> 27);
        }
        (block, mask)
    }

    /// Makes saved blocks writable: copies them into memory, every page checked. False, with
    /// the blocks left where they are, if a page is damaged (the caller starts a new part).
    pub fn make_writable(&mut self) -> bool {
        let Blocks::Saved(s) = &mut self.blocks else {
            return true;
        };
        if !(0..s.pages.len()).all(|page| s.page_good(page)) {
            return false;
        }
        let words: Vec<[u32; 8]> = (0..self.block_count)
            .map_while(|b| s.part.block(s.bytes(), b))
            .collect();
        if words.len() != self.block_count {
            return false;
        }
        self.blocks = Blocks::Owned(words);
        true
    }

    /// Adds `hash`. Saved blocks must have been made writable first; into them nothing is
    /// added and false is returned.
    pub fn insert(&mut self, hash: u64) -> bool {
        let (b, mask) = self.place(hash);
        let Blocks::Owned(blocks) = &mut self.blocks else {
            return false;
        };
        if blocks.is_empty() {
            *blocks = vec![[0u32; 8]; self.block_count];
        }
        if let Some(block) = blocks.get_mut(b) {
            for (w, m) in block.iter_mut().zip(mask) {
                *w |= m;
            }
        }
        true
    }

    /// Whether a lookup found a saved page damaged.
    pub fn damaged(&self) -> bool {
        matches!(&self.blocks, Blocks::Saved(s) if s.pages.contains(&Page::Damaged))
    }

    /// Bytes of blocks, in memory or mapped.
    pub fn size_bytes(&self) -> usize {
        match &self.blocks {
            Blocks::Owned(v) => v.len() * 32,
            Blocks::Saved(s) => s.part.block_count * 32,
        }
    }

    /// Whether `hash` may have been added. A damaged saved page answers "maybe": its ids are
    /// then searched for in their segments, never taken as new.
    pub fn may_contain(&mut self, hash: u64) -> bool {
        let (b, mask) = self.place(hash);
        let block = match &mut self.blocks {
            Blocks::Owned(v) if v.is_empty() => return false,
            Blocks::Owned(v) => v.get(b).copied(),
            Blocks::Saved(s) => {
                if !s.page_good(SavedPart::page_of(b)) {
                    return true;
                }
                s.part.block(s.bytes(), b)
            }
        };
        block.is_none_or(|block| block.iter().zip(mask).all(|(w, m)| w & m == m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> u64 {
        crate::mem_index::id_hash(&format!("req-{i}"))
    }

    #[test]
    fn false_maybes_stay_near_the_target_at_full_capacity() {
        let n = 200_000u64;
        let mut b = BlockBloom::with_capacity(n);
        (0..n).for_each(|i| assert!(b.insert(h(i))));
        let probes = 200_000u64;
        let false_maybes = (n..n + probes).filter(|i| b.may_contain(h(*i))).count();
        eprintln!("false maybes at capacity: {false_maybes} of {probes}");
        // 16 bits an id gives about 0.14%; 0.5% would mean the blocks are badly spread.
        assert!(false_maybes < (probes / 200) as usize, "{false_maybes}");
    }
}
