//! Decompressed blocks and the bounded cache that keeps them.

use std::sync::Arc;

use echolog_format::block::{decode_block, decompress_body, record_at, record_offsets};
use echolog_format::record::RecordRef;
use echolog_format::FormatError;

/// A checksummed, decompressed block with the offset of each record.
#[derive(Debug)]
pub struct DecodedBlock {
    pub first_seq: u64,
    pub raw: Vec<u8>,
    pub offsets: Vec<u32>,
    /// A cluster block's seqs, one per record (decoded from its seq column); empty for a
    /// segment block, whose seqs follow from `first_seq`.
    pub seqs: Vec<u64>,
}

impl DecodedBlock {
    /// Decodes the block at the start of `bytes`, checking that it holds `count` records from
    /// `first_seq` (what the index says it holds).
    pub fn decode(bytes: &[u8], first_seq: u64, count: u32) -> Result<Self, FormatError> {
        let (h, body) = decode_block(bytes)?;
        if h.first_seq != first_seq || h.count != count {
            return Err(FormatError::Invalid {
                what: "block header",
                reason: format!(
                    "holds seqs {}+{}, the index expects {}+{}",
                    h.first_seq, h.count, first_seq, count
                ),
            });
        }
        let raw = decompress_body(&h, body)?;
        let offsets = record_offsets(&raw, h.count)?;
        Ok(DecodedBlock {
            first_seq,
            raw,
            offsets,
            seqs: Vec::new(),
        })
    }

    pub fn count(&self) -> u32 {
        self.offsets.len() as u32
    }

    /// The record with `seq`, which the caller knows is in this block.
    pub fn record(&self, seq: u64) -> Result<RecordRef<'_>, FormatError> {
        let i = seq
            .checked_sub(self.first_seq)
            .filter(|i| *i < self.offsets.len() as u64)
            .ok_or_else(|| FormatError::Invalid {
                what: "block",
                reason: format!("seq {seq} is not in this block"),
            })?;
        record_at(&self.raw, self.offsets[i as usize])
    }
}

/// Cache key: (file key, block number in the file). A segment as first written is keyed by
/// its base seq; any other file (a cluster file, a segment purge rewrote) by a key from
/// [`unique_file_key`], so blocks of a replaced file are never served for its successor.
pub type BlockKey = (u64, u32);

/// Keys of files other than segments as first written: above every base seq.
const UNIQUE_KEY_BIT: u64 = 1 << 63;
static NEXT_FILE_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A cache key no other file of this process has.
pub fn unique_file_key() -> u64 {
    UNIQUE_KEY_BIT | NEXT_FILE_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<BlockKey, Arc<DecodedBlock>> for Weight {
    fn weight(&self, _key: &BlockKey, val: &Arc<DecodedBlock>) -> u64 {
        (val.raw.len() + val.offsets.len() * 4 + val.seqs.len() * 8 + 64) as u64
    }
}

/// Bounded cache of decompressed blocks, shared by all readers.
pub struct BlockCache {
    cache: quick_cache::sync::Cache<BlockKey, Arc<DecodedBlock>, Weight>,
}

impl BlockCache {
    pub fn new(bytes_max: u64) -> Self {
        // Estimated item count for the cache's sizing: blocks are ~64 KiB decompressed.
        let items = (bytes_max / (64 * 1024)).clamp(16, 1 << 20) as usize;
        BlockCache {
            cache: quick_cache::sync::Cache::with_weighter(items, bytes_max.max(1), Weight),
        }
    }

    pub fn get_or_load<E>(
        &self,
        key: BlockKey,
        load: impl FnOnce() -> Result<DecodedBlock, E>,
    ) -> Result<Arc<DecodedBlock>, E> {
        if let Some(b) = self.cache.get(&key) {
            return Ok(b);
        }
        let b = Arc::new(load()?);
        self.cache.insert(key, b.clone());
        Ok(b)
    }

    /// Whether `key` is cached (without counting as a use).
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.cache.contains_key(key)
    }

    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}
