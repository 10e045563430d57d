//! The data directory: file names, the lock file, listing, atomic writes.

use std::any::Any;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::segment::checkpoint::CHECKPOINT_EXT;
use crate::storage::Storage;

pub const LOCK_FILE: &str = "LOCK";
pub const SEGMENT_EXT: &str = "seg";
pub const INDEX_EXT: &str = "idx";
pub const TEMP_EXT: &str = "tmp";
/// Files the store writes besides segments and indexes.
pub const STATE_FILES: &[&str] = &[
    LOCK_FILE,
    crate::tombstones::TOMBSTONES_FILE,
    crate::cursors::CURSORS_FILE,
    crate::id_filter::persist::ID_FILTER_FILE,
];

pub fn segment_name(base_seq: u64) -> String {
    format!("{base_seq:020}.{SEGMENT_EXT}")
}

pub fn index_name(base_seq: u64) -> String {
    format!("{base_seq:020}.{INDEX_EXT}")
}

/// Holds the exclusive lock on the data directory for the store's lifetime.
pub struct DirLock {
    _guard: Box<dyn Any + Send + Sync>,
}

/// How long `lock` keeps trying a lock held elsewhere before answering `Locked`.
///
/// Why wait at all: the lock is an flock on an open file, and a process that forks (any
/// `Command::spawn` in the same process, such as a server's test harness) holds a copy of
/// every open file until its child execs. A store dropped and reopened at that moment finds
/// its own lock still held for a few milliseconds. A lock another process really holds is
/// still refused, only this much later.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

pub fn lock(storage: &Storage, dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let started = std::time::Instant::now();
    loop {
        if let Some(g) = storage.lock(&path)? {
            return Ok(DirLock { _guard: g });
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                lock: path,
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What a directory listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Base seqs of segment files, sorted.
    pub segments: Vec<u64>,
    /// Base seqs of index files, sorted.
    pub indexes: Vec<u64>,
    /// Temp files the store itself writes (`<segment or index or state file>.tmp`): leftovers
    /// of an atomic write that did not finish.
    pub temp_files: Vec<PathBuf>,
    /// Anything else, reported and left alone (a `.tmp` the store did not write included).
    pub unknown: Vec<PathBuf>,
    /// Names of cluster files (`<base>-<end>.clu`), for compaction to choose from.
    pub clusters: Vec<String>,
    /// Base seqs of checkpoint files (`<base>.ckpt`), sorted.
    pub checkpoints: Vec<u64>,
}

fn parse_base(stem: &str) -> Option<u64> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok().filter(|b| *b > 0)
    } else {
        None
    }
}

/// What a file name is in the store's layout.
enum Name {
    Segment(u64),
    Index(u64),
    Checkpoint(u64),
    Cluster,
    State,
    Unknown,
}

fn classify(name: &str) -> Name {
    if STATE_FILES.contains(&name) {
        return Name::State;
    }
    if crate::cluster::parse_cluster_name(name).is_some() {
        return Name::Cluster;
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    match (parse_base(stem), ext) {
        (Some(b), SEGMENT_EXT) => Name::Segment(b),
        (Some(b), INDEX_EXT) => Name::Index(b),
        (Some(b), CHECKPOINT_EXT) => Name::Checkpoint(b),
        _ => Name::Unknown,
    }
}

pub fn list(storage: &Storage, dir: &Path) -> Result<Listing> {
    let mut out = Listing::default();
    for name in storage.list_dir(dir)? {
        let path = dir.join(&name);
        if let Some(target) = name.strip_suffix(&format!(".{TEMP_EXT}")) {
            match classify(target) {
                Name::Unknown => out.unknown.push(path),
                _ => out.temp_files.push(path),
            }
            continue;
        }
        match classify(&name) {
            Name::Segment(b) => out.segments.push(b),
            Name::Index(b) => out.indexes.push(b),
            Name::Checkpoint(b) => out.checkpoints.push(b),
            Name::Cluster => out.clusters.push(name),
            Name::State => {}
            Name::Unknown => out.unknown.push(path),
        }
    }
    out.segments.sort_unstable();
    out.indexes.sort_unstable();
    out.checkpoints.sort_unstable();
    out.temp_files.sort();
    out.unknown.sort();
    Ok(out)
}

/// Writes `bytes` to `dir/name` atomically (temp file, fdatasync, rename, directory fsync).
pub fn write_atomic(storage: &Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    storage.write_new_file(&dir.join(name), bytes).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;
    use crate::storage::StorageBackend;

    fn sim() -> (Storage, SimDisk, PathBuf) {
        let disk = SimDisk::new();
        let dir = PathBuf::from("/data");
        disk.create_dir_all(&dir).unwrap();
        (Storage::new(Some(&disk.backend()), None), disk, dir)
    }

    #[test]
    fn second_lock_on_a_directory_is_refused() {
        let (s, _disk, dir) = sim();
        let _a = lock(&s, &dir).unwrap();
        let err = lock(&s, &dir).err().unwrap();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("locked"));
    }

    #[test]
    fn listing_sorts_and_separates_files_and_only_claims_its_own_temp_files() {
        let (s, disk, dir) = sim();
        for n in [
            segment_name(10),
            segment_name(2),
            index_name(2),
            format!("{:020}.ckpt", 10),
            format!("{}.tmp", index_name(3)),
            "TOMBSTONES.tmp".into(),
            "x.tmp".into(),
            "junk".into(),
        ] {
            disk.write_file(&dir.join(n), b"");
        }
        let l = list(&s, &dir).unwrap();
        assert_eq!(l.segments, vec![2, 10]);
        assert_eq!(l.indexes, vec![2]);
        assert_eq!(l.checkpoints, vec![10]);
        assert_eq!(
            l.temp_files,
            vec![
                dir.join(format!("{}.tmp", index_name(3))),
                dir.join("TOMBSTONES.tmp")
            ]
        );
        assert_eq!(l.unknown, vec![dir.join("junk"), dir.join("x.tmp")]);
    }
}
