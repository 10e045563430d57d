use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::block_cache::DecodedBlock;
use crate::error::{Error, Result};
use crate::mem_index::MemIndex;
use crate::storage::{FileHandle, Storage};

/// The segment currently appended to.
pub struct ActiveSegment {
    pub base_seq: u64,
    pub path: PathBuf,
    /// The same handle the writer appends through (reads see what it wrote).
    file: Arc<dyn FileHandle>,
    storage: Storage,
    pub index: RwLock<MemIndex>,
}

impl ActiveSegment {
    pub fn new(
        base_seq: u64,
        path: PathBuf,
        file: Arc<dyn FileHandle>,
        storage: Storage,
        index: MemIndex,
    ) -> Self {
        ActiveSegment {
            base_seq,
            path,
            file,
            storage,
            index: RwLock::new(index),
        }
    }

    /// The committed index. A poisoned lock means a writer panicked mid-update; the index is
    /// append-only, so what it holds is still a committed prefix.
    pub fn index(&self) -> RwLockReadGuard<'_, MemIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read_block(&self, block: usize) -> Result<DecodedBlock> {
        let b = self
            .index()
            .blocks
            .get(block)
            .copied()
            .ok_or_else(|| Error::Inconsistent(format!("active block {block} out of range")))?;
        let mut buf = vec![0u8; b.len as usize];
        self.storage
            .read_at(&*self.file, &self.path, &mut buf, b.entry.offset)?;
        DecodedBlock::decode(
            &buf,
            self.base_seq + u64::from(b.entry.first_ordinal),
            b.entry.count,
        )
        .map_err(|source| Error::Corruption {
            file: self.path.clone(),
            offset: b.entry.offset,
            source,
        })
    }
}
