//! `verify`: an offline check of every checksum of every file in a data directory.
//!
//! Reads each segment from its first byte (header, every block's checksum, every record's
//! framing, dense seqs across segments), each index file (header, section table and every
//! section's checksum, and that it describes its segment), the TOMBSTONES, CURSORS and
//! IDFILTER files. It takes
//! the directory's lock, so it refuses to run beside a live server, and it writes nothing.

use std::path::{Path, PathBuf};

use echolog_format::tombstone_file::decode_tombstones;

use std::sync::Arc;

use crate::cluster::{ClusterCursor, ClusterFile};
use crate::dir::{self, index_name, segment_name};
use crate::error::{Error, Result};
use crate::scan::scan_segment;
use crate::segment::checkpoint;
use crate::segment::SealedSegment;
use crate::storage::Storage;
use crate::tombstones::TOMBSTONES_FILE;

/// Something wrong on disk: the file, the byte offset, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub offset: u64,
    pub what: String,
}

/// What [`verify`] checked and found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub segments: usize,
    pub index_files: usize,
    /// Cluster files read whole (every block's checksum, every record's framing and seq).
    pub cluster_files: usize,
    /// Records of the active segment whose index its checkpoint holds, checked against a
    /// scan of the segment.
    pub checkpoint_records: u64,
    pub records: u64,
    pub bytes_checked: u64,
    /// Corruption: bad checksums, bad framing, seqs that do not line up.
    pub problems: Vec<Problem>,
    /// Worth knowing, not damage: a torn tail that open will cut, leftover temp files, files
    /// that are not the store's, an index that open will rebuild.
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every file of the store in `dir`. Errors only when the directory cannot be read
/// or is locked by a running store; damage is reported in the [`VerifyReport`].
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let storage = Storage::new(None, None);
    let _lock = dir::lock(&storage, dir)?;
    let listing = dir::list(&storage, dir)?;
    let mut r = VerifyReport::default();
    for t in &listing.temp_files {
        r.notes.push(format!(
            "{}: leftover temporary file (removed at the next open)",
            t.display()
        ));
    }
    for u in &listing.unknown {
        r.notes.push(format!(
            "{}: not a file of the store (left alone)",
            u.display()
        ));
    }
    let segs = &listing.segments;
    for (i, base) in segs.iter().enumerate() {
        let next = segs.get(i + 1).copied();
        verify_segment(&storage, dir, *base, next, &mut r);
        if let Some(end) = next {
            verify_index(
                &storage,
                dir,
                *base,
                end,
                listing.indexes.contains(base),
                &mut r,
            );
        } else if listing.indexes.contains(base) {
            r.notes.push(format!(
                "{}: index of the active segment, from a seal that did not finish (removed at the next open)",
                dir.join(index_name(*base)).display()
            ));
        }
    }
    verify_tombstones(&storage, dir, &mut r);
    verify_cursors(&storage, dir, &mut r);
    verify_id_filter(&storage, dir, &mut r);
    for name in &listing.clusters {
        verify_cluster(&storage, dir, name, &mut r);
    }
    for base in &listing.checkpoints {
        verify_checkpoint(&storage, dir, *base, segs.last() == Some(base), &mut r);
    }
    Ok(r)
}

/// The active segment's checkpoint: the index open would build from it (and a scan of the
/// blocks after it) must be the index a scan of the whole segment builds.
fn verify_checkpoint(storage: &Storage, dir: &Path, base: u64, active: bool, r: &mut VerifyReport) {
    let path = dir.join(checkpoint::checkpoint_name(base));
    if !active {
        r.notes.push(format!(
            "{}: checkpoint of a segment that is no longer the active one (removed at the next open)",
            path.display()
        ));
        return;
    }
    let seg = dir.join(segment_name(base));
    let (Ok(recovered), Ok(bytes)) = (
        checkpoint::recover_active(storage, dir, base, &seg),
        storage.read_all(&seg),
    ) else {
        return; // the segment's own check reports why it cannot be read
    };
    let Ok(scan) = scan_segment(&bytes, base) else {
        return;
    };
    if recovered.checkpoint_records == 0 {
        r.notes.push(format!(
            "{}: not used (torn, damaged, or not matching its segment): the next open scans the whole segment",
            path.display()
        ));
    } else if recovered.scan.index != scan.index {
        let what = format!(
            "the index loaded from it ({} records, of them {} from the checkpoint) differs from a scan of its segment ({} records)",
            recovered.scan.index.record_count(),
            recovered.checkpoint_records,
            scan.index.record_count()
        );
        problem(r, &path, 0, what);
    } else {
        r.checkpoint_records += u64::from(recovered.checkpoint_records);
    }
}

/// A cluster file: header, directory (every rule), then every block and record, each seq
/// inside the file's range. Damage is a problem: history of the entities in a damaged block
/// fails until the file is removed (compaction then rebuilds it from the segments).
fn verify_cluster(storage: &Storage, dir: &Path, name: &str, r: &mut VerifyReport) {
    let path = dir.join(name);
    r.cluster_files += 1;
    let (h, len) = match ClusterFile::read_header(storage, &path) {
        Ok(x) => x,
        Err(e) => return problem(r, &path, 0, e.to_string()),
    };
    let file = Arc::new(ClusterFile::new(dir, storage, &h, len));
    let mut cursor = match ClusterCursor::open(file) {
        Ok(c) => c,
        Err(e) => return problem(r, &path, h.directory_offset, e.to_string()),
    };
    let mut records = 0u64;
    loop {
        match cursor.advance() {
            Ok(true) => {
                records += 1;
                if let Some((_, seq, _, _)) = cursor.current() {
                    if !(h.base_seq..h.end_seq).contains(&seq) {
                        let what = format!(
                            "seq {seq} outside the file's range {}..{}",
                            h.base_seq, h.end_seq
                        );
                        return problem(r, &path, 0, what);
                    }
                }
            }
            Ok(false) => break,
            Err(e) => return problem(r, &path, 0, e.to_string()),
        }
    }
    r.bytes_checked += len;
    if records != h.record_count {
        problem(
            r,
            &path,
            0,
            format!("{records} records read, the header says {}", h.record_count),
        );
    }
}

fn verify_segment(
    storage: &Storage,
    dir: &Path,
    base: u64,
    next: Option<u64>,
    r: &mut VerifyReport,
) {
    let path = dir.join(segment_name(base));
    r.segments += 1;
    let bytes = match storage.read_all(&path) {
        Ok(b) => b,
        Err(e) => return problem(r, &path, 0, e.to_string()),
    };
    r.bytes_checked += bytes.len() as u64;
    let scan = match scan_segment(&bytes, base) {
        Ok(s) => s,
        Err(e) => return problem(r, &path, 0, e.to_string()),
    };
    r.records += u64::from(scan.index.record_count());
    if let Some((at, e)) = &scan.stopped {
        let torn_tail = next.is_none() && scan.corrupt_at.is_none();
        if torn_tail {
            r.notes.push(format!(
                "{}: torn tail of {} bytes at offset {} ({e}); the next open cuts it",
                path.display(),
                bytes.len() as u64 - scan.valid_len,
                scan.valid_len
            ));
        } else {
            problem(r, &path, *at, e.to_string());
        }
    } else if scan.valid_len < bytes.len() as u64 && next.is_some() {
        let what = "blocks after the last complete commit in a sealed segment";
        problem(r, &path, scan.valid_len, what.into());
    }
    if let Some(end) = next {
        if scan.stopped.is_none() && scan.index.end_seq() != end {
            let what = format!(
                "holds seqs {base}..{}, but the next segment starts at {end}",
                scan.index.end_seq()
            );
            problem(r, &path, 0, what);
        }
    }
}

fn verify_index(
    storage: &Storage,
    dir: &Path,
    base: u64,
    end: u64,
    present: bool,
    r: &mut VerifyReport,
) {
    let path = dir.join(index_name(base));
    if !present {
        r.notes.push(format!(
            "{}: missing (rebuilt from its segment at the next open)",
            path.display()
        ));
        return;
    }
    r.index_files += 1;
    let seg_len = match storage.open(&dir.join(segment_name(base)), false) {
        Ok(f) => f.size_bytes().unwrap_or(0),
        Err(_) => 0,
    };
    match storage.read_all(&path) {
        Ok(bytes) => {
            r.bytes_checked += bytes.len() as u64;
            let seg = SealedSegment::new(dir, storage, base, end);
            if let Err(e) = seg.check_index_bytes(&bytes, seg_len) {
                problem(r, &path, 0, e.to_string());
            }
        }
        Err(e) => problem(r, &path, 0, e.to_string()),
    }
}

fn verify_tombstones(storage: &Storage, dir: &Path, r: &mut VerifyReport) {
    let path = dir.join(TOMBSTONES_FILE);
    match storage.read_all(&path) {
        Ok(bytes) => {
            r.bytes_checked += bytes.len() as u64;
            if let Err(e) = decode_tombstones(&bytes) {
                problem(r, &path, 0, e.to_string());
            }
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problem(r, &path, 0, e.to_string()),
    }
}

fn verify_cursors(storage: &Storage, dir: &Path, r: &mut VerifyReport) {
    let path = dir.join(crate::cursors::CURSORS_FILE);
    match storage.read_all(&path) {
        Ok(bytes) => {
            r.bytes_checked += bytes.len() as u64;
            if let Err(e) = echolog_format::cursors_file::decode_cursors(&bytes) {
                problem(r, &path, 0, e.to_string());
            }
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problem(r, &path, 0, e.to_string()),
    }
}

/// The saved id filter, every page checked. Derived data: damage is reported, and the next open
/// drops what is damaged and rebuilds it from the ids sections.
fn verify_id_filter(storage: &Storage, dir: &Path, r: &mut VerifyReport) {
    let path = dir.join(crate::id_filter::persist::ID_FILTER_FILE);
    match storage.read_all(&path) {
        Ok(bytes) => {
            r.bytes_checked += bytes.len() as u64;
            if let Err(e) = echolog_format::id_filter_file::decode_id_filter_whole(&bytes) {
                problem(
                    r,
                    &path,
                    0,
                    format!("{e} (derived data: the next open drops it and rebuilds it from the ids sections)"),
                );
            }
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problem(r, &path, 0, e.to_string()),
    }
}

fn problem(r: &mut VerifyReport, file: &Path, offset: u64, what: String) {
    r.problems.push(Problem {
        file: file.to_path_buf(),
        offset,
        what,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Options, Store};

    fn store_with_segments(dir: &Path) {
        let opts = Options {
            segment_size_bytes_max: 4096,
            block_raw_bytes_target: 512,
            ..Options::default()
        };
        let s = Store::open(dir, opts).unwrap();
        for i in 0..200 {
            let e = Event {
                entity: format!("e{}", i % 5),
                kind: "k".into(),
                ts: 1 + i,
                payload: format!("{{\"i\":{i},\"pad\":\"abcdefghijklmnop\"}}").into_bytes(),
                ..Default::default()
            };
            s.append(vec![e]).unwrap();
        }
        s.delete("e1", &[], "x").unwrap();
        s.seal_active().unwrap();
        s.append(vec![Event {
            entity: "t".into(),
            kind: "k".into(),
            ts: 5,
            ..Default::default()
        }])
        .unwrap();
    }

    fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_healthy_store_verifies_clean() {
        let d = tempfile::tempdir().unwrap();
        store_with_segments(d.path());
        let r = verify(d.path()).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert!(r.segments > 3 && r.index_files == r.segments - 1, "{r:?}");
        assert_eq!(r.records, 202);
    }

    #[test]
    fn every_flipped_byte_of_a_sealed_segment_or_index_is_reported_with_file_and_offset() {
        let d = tempfile::tempdir().unwrap();
        store_with_segments(d.path());
        let seg = files(d.path(), "seg")[1].clone();
        let idx = files(d.path(), "idx")[0].clone();
        for (path, step) in [(seg, 97), (idx, 89)] {
            let good = std::fs::read(&path).unwrap();
            for at in (0..good.len()).step_by(step) {
                let mut bad = good.clone();
                bad[at] ^= 0x10;
                std::fs::write(&path, &bad).unwrap();
                let r = verify(d.path()).unwrap();
                assert!(
                    r.problems
                        .iter()
                        .any(|p| p.file == path && p.offset <= at as u64),
                    "byte {at} of {}: {:?}",
                    path.display(),
                    r.problems
                );
            }
            std::fs::write(&path, &good).unwrap();
        }
        assert!(verify(d.path()).unwrap().ok());
    }

    #[test]
    fn a_running_store_is_not_verified_under_it() {
        let d = tempfile::tempdir().unwrap();
        let _s = Store::open(d.path(), Options::default()).unwrap();
        assert!(matches!(verify(d.path()), Err(Error::Locked { .. })));
    }
}
