//! The real file system: std::fs, positional I/O, fdatasync, flock and mmap.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::{Advice, FileHandle, Mapped, MappedBytes, StorageBackend};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsBackend;

struct OsFile(File);

impl FileHandle for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }
}

impl StorageBackend for OsBackend {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Arc::new(OsFile(f)))
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FileHandle>> {
        let f = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Arc::new(OsFile(f)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let f = File::open(path)?;
        // SAFETY: the engine maps only sealed segment files, index files, cluster files and the
        // IDFILTER file. Each was fsynced and renamed into place before being mapped, and the
        // store never writes to or truncates a file under that name again (IDFILTER is only
        // replaced by a rename, which leaves a live map on the old inode); an unlink leaves a
        // live map valid. The directory lock keeps other echolog processes out. Every byte read through the map is still
        // bounds-checked and checksummed, so outside tampering yields errors, not wrong answers.
        let m = unsafe { Mmap::map(&f) }?;
        Ok(Box::new(OsMap(m)))
    }
}

/// A file mapped by the OS backend.
struct OsMap(Mmap);

impl AsRef<[u8]> for OsMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl MappedBytes for OsMap {
    fn advise(&self, advice: Advice) {
        // A hint: when the kernel refuses it, reads are as fast as without it, and as correct.
        let _ = match advice {
            Advice::Random => self.0.advise(memmap2::Advice::Random),
            Advice::WillNeed(r) => {
                let end = r.end.min(self.0.len());
                let mut at = r.start.min(end);
                // Linux reads at most one read-ahead window per WILLNEED call (the device's
                // read_ahead_kb, or its largest request): a longer range is asked for in
                // pieces no window is smaller than, all queued before any is waited for.
                let mut r = Ok(());
                while at < end && r.is_ok() {
                    let len = (end - at).min(WILLNEED_PIECE_BYTES);
                    r = self.0.advise_range(memmap2::Advice::WillNeed, at, len);
                    at += len;
                }
                r
            }
        };
    }
}

/// The piece of a `WillNeed` range asked for per call: the kernel's default read-ahead
/// window, so no device caps a piece short.
const WILLNEED_PIECE_BYTES: usize = 128 << 10;
