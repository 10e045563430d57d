//! The data directory: file names, the lock file, listing, atomic writes and directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = "LOCK";
pub const SEGMENT_EXT: &str = "seg";
pub const INDEX_EXT: &str = "idx";
pub const TEMP_EXT: &str = "tmp";
/// Files the store writes besides segments and indexes.
pub const STATE_FILES: &[&str] = &[LOCK_FILE, crate::tombstones::TOMBSTONES_FILE];

pub fn segment_name(base_seq: u64) -> String {
    format!("{base_seq:020}.{SEGMENT_EXT}")
}

pub fn index_name(base_seq: u64) -> String {
    format!("{base_seq:020}.{INDEX_EXT}")
}

/// Holds the exclusive lock on the data directory for the store's lifetime.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

pub fn lock(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// What a directory listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Base seqs of segment files, sorted.
    pub segments: Vec<u64>,
    /// Base seqs of index files, sorted.
    pub indexes: Vec<u64>,
    pub temp_files: Vec<PathBuf>,
    pub unknown: Vec<PathBuf>,
}

fn parse_base(stem: &str) -> Option<u64> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok().filter(|b| *b > 0)
    } else {
        None
    }
}

pub fn list(dir: &Path) -> Result<Listing> {
    let mut out = Listing::default();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if STATE_FILES.contains(&name.as_str()) {
            continue;
        }
        if name.ends_with(&format!(".{TEMP_EXT}")) {
            out.temp_files.push(path);
            continue;
        }
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name.as_str(), ""));
        match (parse_base(stem), ext) {
            (Some(b), SEGMENT_EXT) => out.segments.push(b),
            (Some(b), INDEX_EXT) => out.indexes.push(b),
            _ => out.unknown.push(path),
        }
    }
    out.segments.sort_unstable();
    out.indexes.sort_unstable();
    Ok(out)
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io(dir, e))?;
    d.sync_all().map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, directory fsync. On
/// failure the temp file is removed and the old file (if any) is untouched.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.{TEMP_EXT}"));
    let dst = dir.join(name);
    let res = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        fsync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let _a = lock(d.path()).unwrap();
        let err = lock(d.path()).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("locked"));
    }

    #[test]
    fn listing_sorts_and_separates_files() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            segment_name(10),
            segment_name(2),
            index_name(2),
            "x.tmp".into(),
            "junk".into(),
        ] {
            fs::write(d.path().join(n), b"").unwrap();
        }
        let l = list(d.path()).unwrap();
        assert_eq!(l.segments, vec![2, 10]);
        assert_eq!(l.indexes, vec![2]);
        assert_eq!(l.temp_files.len(), 1);
        assert_eq!(l.unknown.len(), 1);
    }
}
