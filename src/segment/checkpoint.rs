//! The checkpoint of the active segment's index (`<base>.ckpt`): the commit thread appends a
//! part each time the durable segment has grown by `checkpoint_bytes` since the last one, and
//! open loads the parts into the in-memory index and scans only the blocks after them.
//!
//! Rebuilding the index from the segment costs a decompression and a decode of every record
//! and about five hash-map postings each (0.76-1.3 s for a full 32 MiB segment); a part hands
//! back each key once with its ordinals, so loading costs a map lookup per key.
//!
//! Crash safety rests on three rules, so that the file never needs an fdatasync or a rename:
//! - a part covers only segment bytes already durable when it is written;
//! - a part is used only when it checks (CRC32s, version) and continues the part before it
//!   exactly (segment, first ordinal, first block, first byte), so a torn or stale part ends
//!   the checkpoint where the last good one ends;
//! - the last block a checkpoint covers is read from the segment and must be the block it
//!   names (checksum, seqs, length); otherwise the checkpoint is ignored and the whole
//!   segment scanned.
//!
//! Any failure to write a part stops checkpoints for that segment (logged): open then scans
//! more, and nothing else changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use echolog_format::block::decode_block;
use echolog_format::checkpoint::{
    check_part, decode_part, encode_part, Keys, Part, PartBlock, PartHeader, PartSource,
};
use echolog_format::index::BlockEntry;
use echolog_format::segment_header::SEGMENT_HEADER_LEN;

use crate::error::{Error, Result};
use crate::key_map::KeyMap;
use crate::mem_index::{Key, MemBlock, MemIndex};
use crate::scan::{check_header, scan_blocks, Scan};
use crate::storage::{FileHandle, Storage};

pub const CHECKPOINT_EXT: &str = "ckpt";

pub fn checkpoint_name(base_seq: u64) -> String {
    format!("{base_seq:020}.{CHECKPOINT_EXT}")
}

/// How far a checkpoint reaches into its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    pub records: u32,
    pub blocks: u32,
    /// Bytes of the segment file covered, its header included.
    pub segment_len: u64,
    pub raw_bytes: u64,
    /// Bytes of the checkpoint file holding the parts that cover them.
    pub file_len: u64,
}

impl Covered {
    /// Nothing but the segment header.
    pub fn start() -> Self {
        Covered {
            records: 0,
            blocks: 0,
            segment_len: SEGMENT_HEADER_LEN as u64,
            raw_bytes: 0,
            file_len: 0,
        }
    }
}

/// The commit thread's checkpoint of the active segment.
pub(crate) struct Checkpointer {
    base_seq: u64,
    path: PathBuf,
    file: Option<Arc<dyn FileHandle>>,
    covered: Covered,
    /// A write failed: no more parts for this segment.
    failed: bool,
}

impl Checkpointer {
    /// The checkpoint of the segment at `base_seq`, continuing after `covered`.
    pub fn new(dir: &Path, base_seq: u64, covered: Covered) -> Self {
        Checkpointer {
            base_seq,
            path: dir.join(checkpoint_name(base_seq)),
            file: None,
            covered,
            failed: false,
        }
    }

    /// No more parts for this segment.
    pub fn stop(&mut self) {
        self.failed = true;
    }

    /// Whether a part is due over a segment of `len` bytes (the caller then checks that they
    /// are durable).
    pub fn due(&self, len: u64, every_bytes: u64) -> bool {
        !self.failed && len >= self.covered.segment_len.saturating_add(every_bytes)
    }

    /// Appends a part covering everything `idx` holds past the last part. Every block of
    /// `idx` must be durable in `segment`. Returns the part's length in bytes.
    pub fn write(
        &mut self,
        storage: &Storage,
        idx: &MemIndex,
        segment: &dyn FileHandle,
        segment_path: &Path,
    ) -> Result<u64> {
        debug_assert_eq!(idx.base_seq, self.base_seq);
        let r = last_block_crc(storage, idx, segment, segment_path).and_then(|crc| {
            let (header, bytes) = encode_from(idx, &self.covered, crc);
            self.append(storage, &bytes)?;
            Ok((header, bytes))
        });
        if r.is_err() {
            self.failed = true;
        }
        let (header, bytes) = r?;
        self.covered = Covered {
            records: header.first_ordinal + header.record_count,
            blocks: header.first_block + header.block_count,
            segment_len: header.segment_end,
            raw_bytes: self.covered.raw_bytes + header.raw_bytes,
            file_len: self.covered.file_len + bytes.len() as u64,
        };
        Ok(bytes.len() as u64)
    }

    fn append(&mut self, storage: &Storage, bytes: &[u8]) -> Result<()> {
        let file = match &self.file {
            Some(f) => f.clone(),
            // A file without a valid part (or none) is started over.
            None if self.covered.file_len == 0 => storage.create(&self.path)?,
            None => storage.open(&self.path, true)?,
        };
        self.file = Some(file.clone());
        storage.write_derived(&*file, &self.path, bytes, self.covered.file_len)
    }

    /// The segment is sealed (its index file is durable): the checkpoint is no longer needed.
    /// A file left by a failure here is removed at the next open.
    pub fn remove(self, storage: &Storage) {
        drop(self.file);
        match storage.remove(&self.path) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "could not remove the checkpoint of a sealed segment; the next open removes it")
            }
        }
    }
}

/// The checksum field of the last block of `idx`, read from the segment.
fn last_block_crc(
    storage: &Storage,
    idx: &MemIndex,
    segment: &dyn FileHandle,
    segment_path: &Path,
) -> Result<u32> {
    let last = idx
        .blocks
        .last()
        .ok_or_else(|| Error::Inconsistent("a checkpoint of an empty segment".into()))?;
    let mut crc = [0u8; 4];
    storage.read_at(segment, segment_path, &mut crc, last.entry.offset)?;
    Ok(u32::from_le_bytes(crc))
}

/// The part covering everything `idx` holds past `from`, whose last block's checksum is
/// `last_block_crc`.
fn encode_from(idx: &MemIndex, from: &Covered, last_block_crc: u32) -> (PartHeader, Vec<u8>) {
    // A part runs to the index's end: only where it starts bounds the ordinals it takes.
    let (k0, k1) = (from.records, idx.record_count());
    let blocks = idx.blocks.get(from.blocks as usize..).unwrap_or_default();
    let header = PartHeader {
        base_seq: idx.base_seq,
        first_ordinal: k0,
        record_count: k1 - k0,
        first_block: from.blocks,
        block_count: blocks.len() as u32,
        segment_start: from.segment_len,
        segment_end: idx.len,
        raw_bytes: idx.raw_bytes - from.raw_bytes,
        last_block_crc,
    };
    let minutes: Vec<(i64, &[u32])> = idx
        .minutes
        .iter()
        .filter_map(|(m, ords)| Some((*m, since(ords, k0)?)))
        .collect();
    let mut ids: Vec<(u64, u32)> = idx
        .ids
        .iter()
        .map(|(h, o)| (*h, *o))
        .chain(idx.id_collisions.iter().copied())
        .filter(|(_, o)| *o >= k0)
        .collect();
    ids.sort_unstable_by_key(|(_, o)| *o);
    let src = PartSource {
        blocks: blocks
            .iter()
            .map(|b| PartBlock {
                len: b.len,
                count: b.entry.count,
                min_ts: b.entry.min_ts,
                max_ts: b.entry.max_ts,
            })
            .collect(),
        ts: idx.ts.get(k0 as usize..).unwrap_or_default(),
        entities: keys_since(&idx.entities, k0),
        kinds: keys_since(&idx.kinds, k0),
        tags: keys_since(&idx.tags, k0),
        minutes,
        ids,
    };
    (header, encode_part(&header, &src))
}

/// The keys of `map` with ordinals from `k0` on, and those ordinals, in the map's order.
fn keys_since(map: &KeyMap<Key, Vec<u32>>, k0: u32) -> Vec<(&[u8], &[u32])> {
    map.iter()
        .filter_map(|(k, ords)| Some((k.as_bytes(), since(ords, k0)?)))
        .collect()
}

/// The ordinals of `ords` (ascending) from `k0` on, if any.
fn since(ords: &[u32], k0: u32) -> Option<&[u32]> {
    ords.get(ords.partition_point(|&o| o < k0)..)
        .filter(|s| !s.is_empty())
}

/// What open took from a checkpoint file.
pub(crate) struct Loaded {
    pub index: MemIndex,
    pub covered: Covered,
    pub parts: usize,
    /// The checksum the last part gives its last block.
    pub last_block_crc: u32,
    /// Why the parts ended before the file did, if they did.
    pub stopped: Option<String>,
}

/// Loads the parts of a checkpoint file's `bytes` into an index of the segment at `base_seq`,
/// whose file is `segment_len` bytes long, while each part checks and continues the last.
pub(crate) fn load(bytes: &[u8], base_seq: u64, segment_len: u64) -> Loaded {
    let mut index = MemIndex::new(base_seq, SEGMENT_HEADER_LEN as u64);
    let mut covered = Covered::start();
    let mut parts = 0;
    let mut last_block_crc = 0;
    let mut stopped = None;
    while let Some(rest) = bytes
        .get(covered.file_len as usize..)
        .filter(|r| !r.is_empty())
    {
        let (part, len) = match decode_part(rest) {
            Ok(p) => p,
            Err(e) => {
                stopped = Some(e.to_string());
                break;
            }
        };
        let crc = part.header.last_block_crc;
        if let Err(why) = apply(&mut index, part, segment_len) {
            stopped = Some(why);
            break;
        }
        parts += 1;
        last_block_crc = crc;
        covered = Covered {
            records: index.record_count(),
            blocks: index.blocks.len() as u32,
            segment_len: index.len,
            raw_bytes: index.raw_bytes,
            file_len: covered.file_len + len as u64,
        };
    }
    Loaded {
        index,
        covered,
        parts,
        last_block_crc,
        stopped,
    }
}

/// A part's string keys, checked, with where their ordinals are.
type StrKeys<'a> = Vec<(&'a str, std::ops::Range<usize>)>;

fn str_keys(keys: Keys<'_>) -> std::result::Result<StrKeys<'_>, String> {
    keys.into_iter()
        .map(|(k, v)| {
            std::str::from_utf8(k)
                .map(|k| (k, v))
                .map_err(|_| "a key that is not UTF-8".to_string())
        })
        .collect()
}

/// Adds `part` to `index` when it continues it; leaves `index` unchanged when it does not.
fn apply(
    index: &mut MemIndex,
    mut part: Part<'_>,
    segment_len: u64,
) -> std::result::Result<(), String> {
    let h = part.header;
    let expected = (
        index.base_seq,
        index.record_count(),
        index.blocks.len() as u32,
        index.len,
    );
    let found = (h.base_seq, h.first_ordinal, h.first_block, h.segment_start);
    if found != expected {
        return Err(format!(
            "part starts at (base seq, ordinal, block, offset) {found:?} where {expected:?} was expected"
        ));
    }
    if h.segment_end > segment_len {
        return Err(format!(
            "part covers the segment up to byte {} of {segment_len}",
            h.segment_end
        ));
    }
    let entities = str_keys(std::mem::take(&mut part.entities))?;
    let kinds = str_keys(std::mem::take(&mut part.kinds))?;
    let tags = str_keys(std::mem::take(&mut part.tags))?;
    // Checked: from here on nothing fails.
    let mut ordinal = h.first_ordinal;
    for b in &part.blocks {
        index.add_block(MemBlock {
            entry: BlockEntry {
                offset: index.len,
                first_ordinal: ordinal,
                count: b.count,
                min_ts: b.min_ts,
                max_ts: b.max_ts,
            },
            len: b.len,
        });
        ordinal += b.count;
    }
    index.raw_bytes += h.raw_bytes;
    for &t in &part.ts {
        index.min_ts = index.min_ts.min(t);
        index.max_ts = index.max_ts.max(t);
    }
    index.ts.extend_from_slice(&part.ts);
    let k0 = h.first_ordinal;
    for (map, keys) in [
        (&mut index.entities, entities),
        (&mut index.kinds, kinds),
        (&mut index.tags, tags),
    ] {
        for (k, r) in keys {
            let ords = part.ordinals(&r);
            match map.get_mut(k) {
                Some(v) => extend_postings(v, ords, k0),
                None => {
                    map.insert(Key::from(k), ords.to_vec());
                }
            }
        }
    }
    for (m, r) in &part.minutes {
        let ords = part.ordinals(r);
        extend_postings(index.minutes.entry(*m).or_default(), ords, k0);
    }
    for &(hash, ord) in &part.ids {
        match index.ids.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => index.id_collisions.push((hash, ord)),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(ord);
            }
        }
    }
    Ok(())
}

/// Appends a part's `ords` (ascending, from `k0` on) to a posting list whose ordinals before
/// `k0` come from earlier parts. A key the part names twice (which a writer never does) has
/// ordinals from `k0` on already: the two are merged, so the list stays ascending.
fn extend_postings(v: &mut Vec<u32>, ords: &[u32], k0: u32) {
    let merge = v
        .last()
        .is_some_and(|&l| ords.first().is_some_and(|&f| f <= l));
    v.extend_from_slice(ords);
    if merge {
        let from = v.partition_point(|&o| o < k0);
        if let Some(tail) = v.get_mut(from..) {
            tail.sort_unstable();
        }
        v.dedup();
    }
}

/// What recovery of the active segment read and found.
pub(crate) struct Recovered {
    pub scan: Scan,
    pub checkpointer: Checkpointer,
    /// Bytes read from the segment and the checkpoint file.
    pub bytes_read: u64,
    /// Records whose postings came from the checkpoint rather than from a scan.
    pub checkpoint_records: u32,
    /// Time spent reading and loading the checkpoint, and reading and scanning the rest.
    pub load_time: std::time::Duration,
    pub scan_time: std::time::Duration,
}

/// Reads the active segment at `base_seq` for recovery: its index from the checkpoint as far
/// as that reaches, the blocks after it by a scan (`scan_blocks`: torn tails, damage). The
/// parts' headers and checksums say where the checkpoint ends, so the scan of the blocks
/// after it runs on a second thread while the parts load; should the parts not hold after all
/// (a body that does not decode, a last block the segment does not hold), the whole segment
/// is scanned instead.
pub(crate) fn recover_active(
    storage: &Storage,
    dir: &Path,
    base_seq: u64,
    path: &Path,
) -> Result<Recovered> {
    let started = std::time::Instant::now();
    let file = storage.open(path, false)?;
    let file_len = file.size_bytes().map_err(|e| Error::io(path, e))?;
    let mut head = vec![0u8; (SEGMENT_HEADER_LEN as u64).min(file_len) as usize];
    storage.read_at(&*file, path, &mut head, 0)?;
    let version = check_header(&head, base_seq).map_err(|source| Error::Corruption {
        file: path.to_path_buf(),
        offset: 0,
        source,
    })?;
    let ckpt_path = dir.join(checkpoint_name(base_seq));
    let ckpt = read_checkpoint(storage, &ckpt_path);
    let mut bytes_read = ckpt.as_ref().map_or(0, |b| b.len() as u64);
    let plan = ckpt
        .as_deref()
        .map_or_else(Covered::start, |b| plan(b, base_seq, file_len));
    let read_from = |at: u64| -> Result<Vec<u8>> {
        let len = usize::try_from(file_len - at)
            .map_err(|_| Error::Inconsistent(format!("{} is too large to read", path.display())))?;
        let mut buf = vec![0u8; len];
        storage.read_at(&*file, path, &mut buf, at)?;
        Ok(buf)
    };
    let whole_scan = |bytes_read: &mut u64| -> Result<Scan> {
        let all = read_from(0)?;
        *bytes_read += all.len() as u64;
        let index = MemIndex::new(base_seq, SEGMENT_HEADER_LEN as u64);
        Ok(scan_blocks(&all, 0, index, version))
    };
    let fresh = |scan: Scan, bytes_read: u64, load_time| Recovered {
        scan,
        checkpointer: Checkpointer::new(dir, base_seq, Covered::start()),
        bytes_read,
        checkpoint_records: 0,
        load_time,
        scan_time: started.elapsed() - load_time,
    };
    let Some(ckpt) = ckpt.filter(|_| plan.records > 0) else {
        let scan = whole_scan(&mut bytes_read)?;
        return Ok(fresh(scan, bytes_read, std::time::Duration::ZERO));
    };
    let tail = read_from(plan.segment_len)?;
    bytes_read += tail.len() as u64;
    let tail_index = MemIndex::new(base_seq + u64::from(plan.records), plan.segment_len);
    let (loaded, tail_scan, load_time) = std::thread::scope(|s| {
        // The tail index is moved into the thread; the inline fallback (the system refuses a
        // thread) builds its own.
        let scanner = std::thread::Builder::new()
            .name("echolog-recover".into())
            .spawn_scoped(s, || {
                scan_blocks(&tail, plan.segment_len, tail_index, version)
            });
        let loaded = load(
            ckpt.get(..plan.file_len as usize).unwrap_or_default(),
            base_seq,
            file_len,
        );
        let loaded = verify_last_block(storage, &*file, path, &ckpt_path, loaded);
        let load_time = started.elapsed();
        let tail_scan = match scanner {
            Ok(h) => h
                .join()
                .map_err(|_| Error::Inconsistent("the scan of the active segment panicked".into())),
            Err(e) => {
                tracing::warn!(error = %e, "no second thread for recovery; the blocks after the checkpoint are scanned after it loads");
                let index = MemIndex::new(base_seq + u64::from(plan.records), plan.segment_len);
                Ok(scan_blocks(&tail, plan.segment_len, index, version))
            }
        };
        (loaded, tail_scan, load_time)
    });
    let tail_scan = tail_scan?;
    bytes_read += loaded
        .as_ref()
        .map_or(0, |l| l.index.blocks.last().map_or(0, |b| u64::from(b.len)));
    let Some(mut loaded) = loaded.filter(|l| l.covered == plan && l.stopped.is_none()) else {
        tracing::warn!(file = %ckpt_path.display(), "the checkpoint's parts do not hold (a body that does not decode, or a last block the segment does not hold); scanning the whole active segment");
        let scan = whole_scan(&mut bytes_read)?;
        return Ok(fresh(scan, bytes_read, load_time));
    };
    // Parts go on after the last one only when every byte of the file was a good part.
    // Otherwise the next part starts the file over and covers the whole segment: bytes past
    // the good parts (a torn part, or parts of a segment since cut shorter) never stay
    // behind a new part, where one could pass for its continuation.
    let whole = plan.file_len == ckpt.len() as u64;
    if !whole {
        tracing::warn!(file = %ckpt_path.display(), parts = loaded.parts, "the checkpoint ends in bytes that are not a part continuing the others (one torn by a crash, or of a segment since cut shorter); the blocks after its good parts are scanned");
    }
    let covered = if whole { plan } else { Covered::start() };
    loaded.index.append(tail_scan.index);
    Ok(Recovered {
        scan: Scan {
            index: loaded.index,
            ..tail_scan
        },
        checkpointer: Checkpointer::new(dir, base_seq, covered),
        bytes_read,
        checkpoint_records: plan.records,
        load_time,
        scan_time: started.elapsed() - load_time,
    })
}

/// The checkpoint file's bytes, if it has any. Never an error: a checkpoint is derived data.
fn read_checkpoint(storage: &Storage, path: &Path) -> Option<Vec<u8>> {
    match storage.read_all(path) {
        Ok(b) => Some(b),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not read the checkpoint; scanning the whole active segment");
            None
        }
    }
}

/// Where the intact parts of a checkpoint's `bytes` end, without decoding their bodies: as far
/// as each one's checksums hold and its header continues the one before, within a segment of
/// `segment_len` bytes.
fn plan(bytes: &[u8], base_seq: u64, segment_len: u64) -> Covered {
    let mut c = Covered::start();
    while let Some(rest) = bytes.get(c.file_len as usize..).filter(|r| !r.is_empty()) {
        let Ok((h, len)) = check_part(rest) else {
            break;
        };
        let continues = (h.base_seq, h.first_ordinal, h.first_block, h.segment_start)
            == (base_seq, c.records, c.blocks, c.segment_len);
        if !continues || h.segment_end > segment_len {
            break;
        }
        c = Covered {
            records: c.records + h.record_count,
            blocks: c.blocks + h.block_count,
            segment_len: h.segment_end,
            raw_bytes: c.raw_bytes + h.raw_bytes,
            file_len: c.file_len + len as u64,
        };
    }
    c
}

/// `loaded` if the segment holds the last block it covers (its checksum, seqs and length).
fn verify_last_block(
    storage: &Storage,
    segment: &dyn FileHandle,
    segment_path: &Path,
    ckpt_path: &Path,
    loaded: Loaded,
) -> Option<Loaded> {
    let last = loaded.index.blocks.last().copied()?;
    let mut block = vec![0u8; last.len as usize];
    let same = storage
        .read_at(segment, segment_path, &mut block, last.entry.offset)
        .is_ok()
        && decode_block(&block).is_ok_and(|(h, _)| {
            h.crc == loaded.last_block_crc
                && h.first_seq == loaded.index.base_seq + u64::from(last.entry.first_ordinal)
                && h.count == last.entry.count
                && h.total_len() == u64::from(last.len)
        });
    if !same {
        tracing::warn!(file = %ckpt_path.display(), offset = last.entry.offset, "the checkpoint's last block is not in the segment; ignoring the checkpoint");
        return None;
    }
    Some(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index as a comparable value: every field, maps sorted.
    pub(crate) fn canonical(idx: &MemIndex) -> String {
        let sorted = |m: &KeyMap<Key, Vec<u32>>| {
            let mut v: Vec<_> = m.iter().map(|(k, o)| (k.to_string(), o.clone())).collect();
            v.sort();
            v
        };
        let mut minutes: Vec<_> = idx.minutes.iter().map(|(k, v)| (*k, v.clone())).collect();
        minutes.sort();
        let mut ids: Vec<_> = idx.ids.iter().map(|(h, o)| (*h, *o)).collect();
        ids.sort();
        let mut collisions = idx.id_collisions.clone();
        collisions.sort();
        let blocks: Vec<_> = idx.blocks.iter().map(|b| (b.entry, b.len)).collect();
        format!(
            "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {} {} {}",
            idx.base_seq,
            blocks,
            idx.ts,
            sorted(&idx.entities),
            sorted(&idx.kinds),
            sorted(&idx.tags),
            minutes,
            ids,
            collisions,
            idx.min_ts,
            idx.max_ts,
            idx.len,
            idx.raw_bytes
        )
    }

    /// An index of `n` records in blocks of 3, with ids (one hash repeated: a collision).
    fn index(n: u32) -> MemIndex {
        let mut idx = MemIndex::new(7, SEGMENT_HEADER_LEN as u64);
        for i in 0..n {
            let tags = [format!("tenant:{}", i % 4), "all".to_string()];
            let id = match i % 5 {
                0 => String::new(),
                1 => "same".to_string(),
                _ => format!("id-{i}"),
            };
            idx.add(
                &format!("e{}", i % 7),
                if i % 2 == 0 { "a" } else { "b" },
                1_700_000_000_000 + i64::from(i) * 7_000 - i64::from(i % 3) * 90_000,
                tags.iter().map(String::as_str),
                &id,
            );
            if i % 3 == 2 || i + 1 == n {
                let first = idx
                    .blocks
                    .last()
                    .map_or(0, |b| b.entry.first_ordinal + b.entry.count);
                idx.add_block(MemBlock {
                    entry: BlockEntry {
                        offset: idx.len,
                        first_ordinal: first,
                        count: i + 1 - first,
                        min_ts: 0,
                        max_ts: 1,
                    },
                    len: 100 + i,
                });
                idx.raw_bytes += 10;
            }
        }
        idx
    }

    /// A checkpoint written in parts as the index grows: the parts of its first `n` records.
    fn parts(stops: &[u32]) -> (MemIndex, Vec<u8>) {
        let full = index(*stops.last().unwrap());
        let mut covered = Covered::start();
        let mut file = Vec::new();
        for &n in stops {
            let idx = index(n);
            let (h, bytes) = encode_from(&idx, &covered, 0);
            covered = Covered {
                records: h.first_ordinal + h.record_count,
                blocks: h.first_block + h.block_count,
                segment_len: h.segment_end,
                raw_bytes: covered.raw_bytes + h.raw_bytes,
                file_len: covered.file_len + bytes.len() as u64,
            };
            file.extend(bytes);
        }
        (full, file)
    }

    #[test]
    fn parts_load_into_the_index_they_were_written_from() {
        let (full, file) = parts(&[6, 9, 30, 31]);
        let l = load(&file, 7, u64::MAX);
        assert_eq!((l.parts, l.stopped), (4, None));
        assert_eq!(canonical(&l.index), canonical(&full));
        assert_eq!(l.covered.file_len, file.len() as u64);
    }

    #[test]
    fn a_key_named_twice_in_a_part_keeps_its_postings_ascending_and_unique() {
        let mut v = vec![1, 4, 10, 12];
        extend_postings(&mut v, &[11, 13], 10);
        assert_eq!(v, vec![1, 4, 10, 11, 12, 13]);
        extend_postings(&mut v, &[20], 10);
        assert_eq!(v, vec![1, 4, 10, 11, 12, 13, 20]);
        extend_postings(&mut v, &[12, 20, 21], 10);
        assert_eq!(v, vec![1, 4, 10, 11, 12, 13, 20, 21]);
    }

    #[test]
    fn a_torn_or_stale_part_ends_the_checkpoint_at_the_last_good_one() {
        let (_, file) = parts(&[6, 9, 30]);
        let (upto9, first_two) = parts(&[6, 9]);
        // Torn in the third part.
        let l = load(&file[..file.len() - 1], 7, u64::MAX);
        assert_eq!(l.parts, 2);
        assert_eq!(canonical(&l.index), canonical(&upto9));
        assert_eq!(l.covered.file_len, first_two.len() as u64);
        // The first part twice: the second copy does not continue the first.
        let (_, one) = parts(&[6]);
        let twice = [one.clone(), one].concat();
        let l = load(&twice, 7, u64::MAX);
        assert_eq!(l.parts, 1);
        assert!(l.stopped.unwrap().contains("expected"));
        // Another segment's checkpoint.
        assert_eq!(load(&file, 8, u64::MAX).parts, 0);
        // A segment shorter than the parts claim.
        let short = index(9).len - 1;
        assert_eq!(load(&file, 7, short).parts, 1);
    }

    mod store {
        use super::canonical;
        use crate::scan::scan_segment;
        use crate::storage::sim::SimDisk;
        use crate::{Event, Options, Store, SyncPolicy};
        use std::path::{Path, PathBuf};

        fn opts(disk: &SimDisk, sync: SyncPolicy) -> Options {
            Options {
                backend: Some(disk.backend()),
                sync,
                segment_size_bytes_max: 1 << 20,
                seal_at_close_bytes_min: None,
                checkpoint_bytes: Some(4096),
                block_raw_bytes_target: 1024,
                compaction: false,
                ..Options::default()
            }
        }

        fn batch(from: u64, n: u64) -> Vec<Event> {
            (from..from + n)
                .map(|i| Event {
                    entity: format!("product:{}", i % 37),
                    kind: format!("k{}", i % 3),
                    ts: 1_700_000_000_000 + i as i64 * 1_000 - (i % 5) as i64 * 120_000,
                    tags: vec![format!("tenant:{}", i % 4)],
                    payload: format!("{{\"i\":{i}}}").into_bytes(),
                    id: (i % 2 == 0).then(|| format!("id-{i}")),
                })
                .collect()
        }

        fn fill(dir: &Path, o: &Options, events: u64) {
            let s = Store::open(dir, o.clone()).unwrap();
            let mut i = 0;
            while i < events {
                s.append(batch(i, 25)).unwrap();
                i += 25;
            }
        }

        /// The active index of the store at `dir`, and the one a scan of its segment builds.
        fn both(disk: &SimDisk, s: &Store, dir: &Path) -> (String, String) {
            let view = s.inner.current_view();
            let got = canonical(&view.active.index());
            let seg = disk.read_file(&view.active.path).unwrap();
            let want = canonical(&scan_segment(&seg, view.active.base_seq).unwrap().index);
            assert!(disk.read_file(&dir.join("x")).is_none());
            (got, want)
        }

        #[test]
        fn open_after_a_crash_loads_the_checkpoint_and_builds_the_index_a_full_scan_builds() {
            let interval = SyncPolicy::Interval(std::time::Duration::from_millis(1));
            for sync in [SyncPolicy::Always, SyncPolicy::Never, interval] {
                let disk = SimDisk::new();
                let dir = PathBuf::from("/data");
                let o = opts(&disk, sync);
                fill(&dir, &o, 2000);
                disk.crash();
                let s = Store::open(&dir, o.clone()).unwrap();
                let r = s.open_report();
                assert!(r.checkpoint_records > 1000, "{sync:?}: {r:?}");
                assert_eq!(r.checkpoint_records + r.scanned_records, 2000);
                let (got, want) = both(&disk, &s, &dir);
                assert_eq!(got, want, "{sync:?}");
                // Ids from the checkpoint are still recognised.
                let again = s.append(batch(0, 25)).unwrap();
                assert_eq!(again.duplicates, 13, "{sync:?}");
            }
        }

        #[test]
        fn a_failed_part_write_stops_parts_for_the_segment_and_nothing_else() {
            use crate::storage::sim::{Errno, FaultOp, FaultRule};
            let disk = SimDisk::new();
            let dir = PathBuf::from("/data");
            let o = opts(&disk, SyncPolicy::Always);
            let ckpt = dir.join(super::super::checkpoint_name(1));
            let s = Store::open(&dir, o.clone()).unwrap();
            let mut i = 0;
            while disk.read_file(&ckpt).is_none() {
                s.append(batch(i, 25)).unwrap();
                i += 25;
            }
            let written = disk.read_file(&ckpt).unwrap().len();
            disk.add_rule(FaultRule::new(FaultOp::Write, Errno::Eio).path(".ckpt"));
            // Appends go on (the store stays writable) and no part follows the failed one.
            for _ in 0..80 {
                s.append(batch(i, 25)).unwrap();
                i += 25;
            }
            assert_eq!(disk.injected(), 1);
            assert!(s.inner.poisoned().is_none());
            assert_eq!(disk.read_file(&ckpt).unwrap().len(), written);
            drop(s);
            disk.crash();
            let s = Store::open(&dir, o).unwrap();
            assert_eq!(s.last_seq(), i);
            assert!(s.open_report().checkpoint_records > 0);
            let (got, want) = both(&disk, &s, &dir);
            assert_eq!(got, want);
        }

        #[test]
        fn a_power_loss_leaves_a_checkpoint_that_is_used_only_where_it_holds() {
            for seed in 0..12 {
                let disk = SimDisk::new();
                let dir = PathBuf::from("/data");
                let o = opts(&disk, SyncPolicy::Always);
                fill(&dir, &o, 1500);
                disk.power_loss(seed);
                let s = Store::open(&dir, o.clone()).unwrap();
                assert_eq!(s.last_seq(), 1500, "seed {seed}");
                let (got, want) = both(&disk, &s, &dir);
                assert_eq!(got, want, "seed {seed}");
                // And the checkpoint goes on from there.
                s.append(batch(1500, 500)).unwrap();
                drop(s);
                disk.crash();
                let s = Store::open(&dir, o.clone()).unwrap();
                assert!(s.open_report().checkpoint_records > 0, "seed {seed}");
                let (got, want) = both(&disk, &s, &dir);
                assert_eq!(got, want, "seed {seed}");
            }
        }

        #[test]
        fn parts_past_a_shorter_segment_or_a_last_block_it_does_not_hold_are_not_used() {
            let disk = SimDisk::new();
            let dir = PathBuf::from("/data");
            let o = opts(&disk, SyncPolicy::Always);
            fill(&dir, &o, 1000);
            disk.crash();
            let seg = dir.join(crate::dir::segment_name(1));
            let ckpt = dir.join(super::super::checkpoint_name(1));
            let bytes = disk.read_file(&seg).unwrap();
            // The segment swapped for a shorter copy of itself (an operator's restore, say):
            // the parts it still holds are used, the rest scanned.
            disk.write_file(&seg, &bytes[..bytes.len() / 2]);
            let s = Store::open(&dir, o.clone()).unwrap();
            let r = s.open_report().clone();
            let kept = s.last_seq();
            assert!(
                r.checkpoint_records > 0 && r.checkpoint_records < kept,
                "{r:?}"
            );
            let (got, want) = both(&disk, &s, &dir);
            assert_eq!(got, want);
            drop(s);
            disk.crash();
            // The checkpoint's last block damaged in the segment (and last in it): the
            // checkpoint is not used at all, and the scan cuts the block's commit (a batch of
            // 25) as a torn tail.
            let seg_len = disk.read_file(&seg).unwrap().len() as u64;
            let l = super::super::load(&disk.read_file(&ckpt).unwrap(), 1, seg_len);
            let last = *l.index.blocks.last().unwrap();
            let end = (last.entry.offset + u64::from(last.len)) as usize;
            let mut cut = disk.read_file(&seg).unwrap()[..end].to_vec();
            cut[end - 1] ^= 1;
            disk.write_file(&seg, &cut);
            let s = Store::open(&dir, o.clone()).unwrap();
            assert_eq!(s.open_report().checkpoint_records, 0);
            let first = u64::from(last.entry.first_ordinal);
            assert_eq!(s.last_seq(), first - first % 25);
            let (got, want) = both(&disk, &s, &dir);
            assert_eq!(got, want);
            // Sealed: the checkpoint goes; a leftover one is removed at open.
            let kept = s.last_seq();
            s.seal_active().unwrap();
            assert!(disk.read_file(&ckpt).is_none());
            drop(s);
            disk.write_file(&ckpt, b"left by a seal cut short");
            let s = Store::open(&dir, o).unwrap();
            assert_eq!(s.open_report().checkpoints_removed, 1);
            assert!(disk.read_file(&ckpt).is_none());
            assert_eq!(s.last_seq(), kept);
        }
    }
}
