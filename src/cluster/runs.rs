//! Reading a cluster file run by run, for merges: each entity's records in directory order,
//! the blocks that hold nothing but part of one run handed over as they are on disk (no
//! decompression, no recompression), the other records one by one.
//!
//! Why: in a merge most records belong to entities with many records per file, so most
//! blocks hold one entity's records only; copying them leaves zstd only the blocks where runs
//! meet. Block boundaries of the output then follow the inputs' around those blocks.

use std::sync::Arc;

use echolog_format::block::decode_block;
use echolog_format::cluster::{ClusterBlock, EntityRun};

use super::{cluster_record, corrupt, record_span, ClusterFile, Loaded};
use crate::block_cache::DecodedBlock;
use crate::error::Result;

/// Where a merge puts what a [`RunCursor`] hands out.
pub trait RunSink {
    /// One record: its entity, seq, ts and encoded bytes.
    fn record(&mut self, entity: &[u8], seq: u64, ts: i64, bytes: &[u8]) -> Result<()>;
    /// A whole block of `entity`'s records as it is on disk (header and body, checksum
    /// checked), with its row of the input's block table.
    fn block(&mut self, entity: &[u8], bytes: &[u8], row: ClusterBlock) -> Result<()>;
}

/// A cluster file read entity by entity, in directory (bytewise) order.
pub struct RunCursor {
    file: Arc<ClusterFile>,
    loaded: Arc<Loaded>,
    entity_count: u32,
    next_entity: u32,
    /// The current entity's name and run.
    current: Option<(Vec<u8>, EntityRun)>,
    /// The last block decoded, by index: the runs that share a block decode it once.
    decoded: Option<(u32, DecodedBlock)>,
    /// Whether whole blocks go out as they are: only when the file's blocks are in the layout
    /// this build writes (older versions code their seq columns differently).
    copy_blocks: bool,
}

impl RunCursor {
    /// Opens `file` at its first entity; `copy_blocks` allows handing over whole blocks.
    pub fn open(file: Arc<ClusterFile>, copy_blocks: bool) -> Result<Self> {
        let loaded = file.load()?;
        let entity_count = loaded
            .directory()
            .map_err(|e| corrupt(&file.path, loaded.header.directory_offset, e))?
            .entity_count();
        let copy_blocks = copy_blocks && loaded.header.version == echolog_format::FORMAT_VERSION;
        let mut c = RunCursor {
            file,
            loaded,
            entity_count,
            next_entity: 0,
            current: None,
            decoded: None,
            copy_blocks,
        };
        c.move_to_next()?;
        Ok(c)
    }

    /// The current entity; None past the last one.
    pub fn entity(&self) -> Option<&[u8]> {
        self.current.as_ref().map(|(name, _)| name.as_slice())
    }

    /// Hands the current entity's run to `sink` in seq order, then moves to the next entity.
    pub fn emit_run(&mut self, sink: &mut impl RunSink) -> Result<()> {
        let Some((name, run)) = self.current.take() else {
            return Ok(());
        };
        let (mut block, mut first, mut left) = (run.first_block, run.first_record, run.count);
        while left > 0 {
            let row = self.row(block)?;
            let in_block = row.count.saturating_sub(first).min(left);
            if in_block == 0 {
                return Err(self.inconsistent(&row, "a run that does not reach into its block"));
            }
            if first == 0 && in_block == row.count && self.copy_blocks {
                let bytes = self.checked_block(&row)?;
                sink.block(&name, bytes, row)?;
            } else {
                self.emit_records(&name, block, &row, first..first + in_block, sink)?;
            }
            left -= in_block;
            block += 1;
            first = 0;
        }
        self.move_to_next()
    }

    fn move_to_next(&mut self) -> Result<()> {
        if self.next_entity >= self.entity_count {
            self.current = None;
            return Ok(());
        }
        let at = self.loaded.header.directory_offset;
        let entry = self
            .loaded
            .directory()
            .and_then(|d| d.entry(self.next_entity))
            .map_err(|e| corrupt(&self.file.path, at, e))?;
        self.next_entity += 1;
        self.current = Some(entry);
        Ok(())
    }

    fn row(&self, block: u32) -> Result<ClusterBlock> {
        let at = self.loaded.header.directory_offset;
        self.loaded
            .directory()
            .map_err(|e| corrupt(&self.file.path, at, e))?
            .block(block)
            .ok_or_else(|| {
                crate::error::Error::Inconsistent(format!(
                    "{}: a run past the last block ({block})",
                    self.file.path.display()
                ))
            })
    }

    /// The block of `row` as it is on disk, after checking its checksum and that its header
    /// says what the row says: a damaged block is an error here, never copied on.
    fn checked_block(&self, row: &ClusterBlock) -> Result<&[u8]> {
        let at = row.offset as usize;
        let bytes = at
            .checked_add(row.len as usize)
            .and_then(|end| self.loaded.bytes().get(at..end))
            .ok_or_else(|| self.inconsistent(row, "a block outside the file"))?;
        let (h, _) = decode_block(bytes).map_err(|e| corrupt(&self.file.path, row.offset, e))?;
        if h.first_seq != row.first_seq || h.count != row.count || h.total_len() != row.len.into() {
            return Err(self.inconsistent(row, "a block whose header disagrees with its row"));
        }
        Ok(bytes)
    }

    /// Hands records `range` of block `block` to `sink`, checking each names `entity`.
    fn emit_records(
        &mut self,
        entity: &[u8],
        block: u32,
        row: &ClusterBlock,
        range: std::ops::Range<u32>,
        sink: &mut impl RunSink,
    ) -> Result<()> {
        if self.decoded.as_ref().is_none_or(|(b, _)| *b != block) {
            let d = self.file.read_block(&self.loaded, row)?;
            self.decoded = Some((block, d));
        }
        let Some((_, d)) = self.decoded.as_ref() else {
            return Ok(());
        };
        for i in range {
            let (seq, r) =
                cluster_record(d, i).map_err(|e| corrupt(&self.file.path, row.offset, e))?;
            if r.entity.as_bytes() != entity {
                return Err(self.inconsistent(row, "a record outside its entity's run"));
            }
            let bytes = d
                .raw
                .get(record_span(d, i))
                .ok_or_else(|| self.inconsistent(row, "a record outside its block"))?;
            sink.record(entity, seq, r.ts, bytes)?;
        }
        Ok(())
    }

    fn inconsistent(&self, row: &ClusterBlock, what: &str) -> crate::error::Error {
        crate::error::Error::Inconsistent(format!(
            "{}: {what} (block at {})",
            self.file.path.display(),
            row.offset
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::cluster::{ClusterWriter, Storage};
    use crate::storage::sim::SimDisk;
    use crate::storage::StorageBackend;

    /// What a cursor handed out: (entity, seq or first seq, copied whole).
    #[derive(Default)]
    struct Log(Vec<(String, u64, bool)>);

    impl RunSink for Log {
        fn record(&mut self, entity: &[u8], seq: u64, _: i64, _: &[u8]) -> Result<()> {
            self.0
                .push((String::from_utf8_lossy(entity).into(), seq, false));
            Ok(())
        }
        fn block(&mut self, entity: &[u8], _: &[u8], row: ClusterBlock) -> Result<()> {
            self.0
                .push((String::from_utf8_lossy(entity).into(), row.first_seq, true));
            Ok(())
        }
    }

    /// A file where entity "b" fills whole blocks between "a" and "c", one record each.
    fn file(disk: &SimDisk) -> Arc<ClusterFile> {
        let dir = PathBuf::from("/d");
        disk.create_dir_all(&dir).unwrap();
        let storage = Storage::new(Some(&disk.backend()), None);
        // Blocks of about 256 bytes: a few records each.
        let mut w = ClusterWriter::create(&storage, &dir, 1, 1000, 0, 256, 1).unwrap();
        let mut rec = |e: &str, seq: u64| {
            let mut out = Vec::new();
            let payload = vec![b'x'; 60];
            echolog_format::record::encode_record::<&str>(&mut out, e, "k", 1, &[], &payload, "");
            w.push(e.as_bytes(), seq, 1, &out).unwrap();
        };
        rec("a", 1);
        for seq in 2..40 {
            rec("b", seq);
        }
        rec("c", 40);
        let (h, len) = w.finish().unwrap();
        Arc::new(ClusterFile::new(&dir, &storage, &h, len))
    }

    fn runs(f: &Arc<ClusterFile>, copy: bool) -> Result<Log> {
        let mut c = RunCursor::open(f.clone(), copy)?;
        let mut log = Log::default();
        while c.entity().is_some() {
            c.emit_run(&mut log)?;
        }
        Ok(log)
    }

    #[test]
    fn blocks_of_one_run_go_whole_and_the_rest_record_by_record_in_seq_order() {
        let disk = SimDisk::new();
        let f = file(&disk);
        let whole = runs(&f, true).unwrap().0;
        let copied: Vec<_> = whole.iter().filter(|r| r.2).collect();
        assert!(
            !copied.is_empty() && copied.iter().all(|r| r.0 == "b"),
            "{whole:?}"
        );
        assert!(
            whole.iter().any(|r| r.0 == "b" && !r.2),
            "b's edges share blocks"
        );
        assert_eq!(whole.first().map(|r| r.0.as_str()), Some("a"));
        assert_eq!(whole.last().map(|r| r.0.as_str()), Some("c"));
        let first_seqs: Vec<u64> = whole.iter().map(|r| r.1).collect();
        assert!(first_seqs.windows(2).all(|w| w[0] < w[1]), "{first_seqs:?}");
        // Without copying, every record one by one: 40 of them, seqs 1..=40.
        let each = runs(&f, false).unwrap().0;
        assert!(each.iter().all(|r| !r.2));
        assert_eq!(
            each.iter().map(|r| r.1).collect::<Vec<_>>(),
            (1..=40).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_damaged_block_is_an_error_not_copied_on() {
        let disk = SimDisk::new();
        let f = file(&disk);
        let whole = runs(&f, true).unwrap().0;
        let seq = whole.iter().find(|r| r.2).map(|r| r.1).unwrap();
        // Flip a byte in the body of the first block copied whole.
        let row = {
            let loaded = f.load().unwrap();
            let dir = loaded.directory().unwrap();
            (0..dir.block_count())
                .filter_map(|i| dir.block(i))
                .find(|b| b.first_seq == seq)
                .unwrap()
        };
        let path = Path::new("/d").join(crate::cluster::cluster_name(1, 1000));
        let mut bytes = disk.read_file(&path).unwrap();
        bytes[row.offset as usize + row.len as usize - 1] ^= 0x40;
        disk.write_file(&path, &bytes);
        let storage = Storage::new(Some(&disk.backend()), None);
        let h = ClusterFile::read_header(&storage, &path).unwrap().0;
        let f = Arc::new(ClusterFile::new(
            Path::new("/d"),
            &storage,
            &h,
            bytes.len() as u64,
        ));
        let err = runs(&f, true).err().expect("the damage is found");
        match err {
            crate::error::Error::Corruption { offset, .. } => assert_eq!(offset, row.offset),
            e => panic!("{e:?}"),
        }
    }
}
