//! The storage seam: every file operation the engine makes goes through [`Storage`], which
//! wraps one narrow [`StorageBackend`].
//!
//! Production uses [`OsBackend`] (std::fs, `pwrite`, `fdatasync`, mmap). Tests swap in
//! [`sim::SimDisk`], a simulated disk that keeps durable and volatile bytes apart, can lose
//! unsynced pages and directory entries at a simulated power loss, and can fail any call.
//!
//! The failure rule lives here, once: a failed fsync, directory fsync or rename, or a failed
//! write that is not a clean "disk full", makes the store read-only until it is reopened.
//! The data of a failed fsync may already be gone from the page cache, and retrying cannot
//! tell, so nothing is retried.

mod os;
pub mod sim;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{is_disk_full, Error, Result};

pub use os::OsBackend;

/// Bytes of a sealed, immutable file: an mmap in production, a copy in the simulated disk.
pub type Mapped = Box<dyn MappedBytes>;

/// A mapped file's bytes, with hints to the page cache about how they are about to be read.
/// Hints change only speed, never what is read: a backend without a page cache ignores them.
pub trait MappedBytes: AsRef<[u8]> + Send + Sync {
    fn advise(&self, _advice: Advice) {}
}

impl MappedBytes for Vec<u8> {}

/// How a mapped file is about to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advice {
    /// Reads land anywhere: bring in only the pages touched. Without it every page fault on a
    /// cold page reads ahead as far as the device's read-ahead setting, 8 MiB on the disk of
    /// our benchmark machine, so a lookup of a few pages in an index read megabytes.
    Random,
    /// These bytes are read whole next: start reading all of them now, in one request.
    WillNeed(std::ops::Range<usize>),
}

/// An open file. Positional reads and writes only: no shared cursor.
pub trait FileHandle: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the file's bytes and length are durable once this returns Ok.
    fn sync_data(&self) -> io::Result<()>;
    fn size_bytes(&self) -> io::Result<u64>;
}

/// The operations the engine needs from a file system. Narrow on purpose: whatever a test
/// backend implements here is everything the engine can do to a disk.
pub trait StorageBackend: Send + Sync + 'static {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Takes the exclusive lock named by `path` (creating the file). `Ok(None)`: another
    /// process holds it. The lock is held until the returned guard is dropped.
    fn lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>>;
    /// Creates `path` (truncating an existing file), open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens an existing file, for reading and writing when `writable`.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn FileHandle>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// A second name for an existing file (backups of immutable files).
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsync of a directory: makes creations, renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Maps a sealed file read-only.
    fn map(&self, path: &Path) -> io::Result<Mapped>;
}

/// A backend handed to the store through [`crate::Options::backend`].
#[derive(Clone)]
pub struct Backend(pub Arc<dyn StorageBackend>);

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Backend")
    }
}

/// The seam the engine calls: a backend plus the read-only rule.
#[derive(Clone)]
pub(crate) struct Storage {
    backend: Arc<dyn StorageBackend>,
    observer: Option<Arc<dyn crate::observe::Observer>>,
    /// Why the store is read-only, once an I/O failure made it so.
    poisoned: Arc<Mutex<Option<String>>>,
}

impl Storage {
    pub fn new(backend: Option<&Backend>, observer: Option<&crate::observe::ObserverHook>) -> Self {
        Storage {
            backend: backend.map_or_else(|| Arc::new(OsBackend) as _, |b| b.0.clone()),
            observer: observer.map(|o| o.0.clone()),
            poisoned: Arc::new(Mutex::new(None)),
        }
    }

    pub fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes the store read-only (the first reason is kept) and returns the error to answer.
    pub fn poison(&self, msg: String) -> Error {
        tracing::error!(
            error = %msg,
            "I/O failure: the store is now read-only until restarted"
        );
        let mut p = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        p.get_or_insert_with(|| msg.clone());
        Error::ReadOnly(msg)
    }

    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        self.backend
            .create_dir_all(dir)
            .map_err(|e| Error::io(dir, e))
    }

    pub fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.backend.list_dir(dir).map_err(|e| Error::io(dir, e))
    }

    pub fn lock(&self, path: &Path) -> Result<Option<Box<dyn Any + Send + Sync>>> {
        self.backend.lock(path).map_err(|e| Error::io(path, e))
    }

    /// Creating or opening a file fails cleanly (nothing changed on disk): no poisoning, so
    /// a passing EMFILE is answered and forgotten.
    pub fn create(&self, path: &Path) -> Result<Arc<dyn FileHandle>> {
        self.backend.create(path).map_err(|e| Error::io(path, e))
    }

    pub fn open(&self, path: &Path, writable: bool) -> Result<Arc<dyn FileHandle>> {
        self.backend
            .open(path, writable)
            .map_err(|e| Error::io(path, e))
    }

    pub fn map(&self, path: &Path) -> Result<Mapped> {
        self.backend.map(path).map_err(|e| Error::io(path, e))
    }

    /// Links `from` as `to`, or, where the file system cannot (another device), copies it and
    /// fdatasyncs the copy. For immutable files only.
    pub fn link_or_copy(&self, from: &Path, to: &Path) -> Result<bool> {
        if self.backend.hard_link(from, to).is_ok() {
            return Ok(true);
        }
        let bytes = self.read_all(from)?;
        let f = self.create(to)?;
        self.write_at(&*f, to, &bytes, 0)?;
        self.sync(&*f, to)?;
        Ok(false)
    }

    /// Removing fails cleanly: the file stays, and open deals with leftovers.
    pub fn remove(&self, path: &Path) -> Result<()> {
        self.backend.remove(path).map_err(|e| Error::io(path, e))
    }

    pub fn read_all(&self, path: &Path) -> Result<Vec<u8>> {
        let f = self.open(path, false)?;
        let len = f.size_bytes().map_err(|e| Error::io(path, e))?;
        let len = usize::try_from(len)
            .map_err(|_| Error::Inconsistent(format!("{} is too large to read", path.display())))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0)
            .map_err(|e| Error::io(path, e))?;
        Ok(buf)
    }

    pub fn read_at(&self, f: &dyn FileHandle, path: &Path, buf: &mut [u8], at: u64) -> Result<()> {
        f.read_exact_at(buf, at).map_err(|e| Error::io(path, e))
    }

    /// Writes `buf` at `at`. A failed write is cut back to `at` (and that cut synced) so that
    /// nothing half-written stays: a full disk then answers [`Error::DiskFull`] and the store
    /// carries on; any other failure, or a cut that fails, makes the store read-only.
    pub fn write_at(&self, f: &dyn FileHandle, path: &Path, buf: &[u8], at: u64) -> Result<()> {
        let Err(e) = f.write_all_at(buf, at) else {
            return Ok(());
        };
        let cut = f.set_len(at).and_then(|()| f.sync_data());
        match cut {
            Ok(()) if is_disk_full(&e) => {
                Err(Error::DiskFull(format!("writing {}: {e}", path.display())))
            }
            Ok(()) => Err(self.poison(format!("write to {} failed: {e}", path.display()))),
            Err(e2) => Err(self.poison(format!(
                "write to {} failed ({e}) and could not be undone ({e2})",
                path.display()
            ))),
        }
    }

    /// Truncates `f` to `len` and syncs it (recovery cutting a torn tail).
    pub fn truncate(&self, f: &dyn FileHandle, path: &Path, len: u64) -> Result<()> {
        f.set_len(len)
            .map_err(|e| self.poison(format!("truncating {} failed: {e}", path.display())))?;
        self.sync(f, path)
    }

    /// fdatasync; a failure makes the store read-only.
    pub fn sync(&self, f: &dyn FileHandle, path: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let r = f.sync_data();
        if let Some(o) = &self.observer {
            o.fsync(started.elapsed());
        }
        r.map_err(|e| self.poison(format!("fdatasync of {} failed: {e}", path.display())))
    }

    pub fn observer(&self) -> Option<&Arc<dyn crate::observe::Observer>> {
        self.observer.as_ref()
    }

    /// fsync of a directory; a failure makes the store read-only (what it should have made
    /// durable may never be).
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.backend
            .sync_dir(dir)
            .map_err(|e| self.poison(format!("fsync of directory {} failed: {e}", dir.display())))
    }

    /// A failed rename may or may not have happened: the store turns read-only.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.backend.rename(from, to).map_err(|e| {
            self.poison(format!(
                "renaming {} to {} failed: {e}",
                from.display(),
                to.display()
            ))
        })
    }

    /// Writes to a file of derived data (a cluster file being built). Its failures cost only
    /// that file, which the caller abandons: they never make the store read-only.
    pub fn write_derived(
        &self,
        f: &dyn FileHandle,
        path: &Path,
        buf: &[u8],
        at: u64,
    ) -> Result<()> {
        f.write_all_at(buf, at).map_err(|e| {
            if is_disk_full(&e) {
                Error::DiskFull(format!("writing {}: {e}", path.display()))
            } else {
                Error::io(path, e)
            }
        })
    }

    /// fdatasync of a derived file; a failure fails only that file.
    pub fn sync_derived(&self, f: &dyn FileHandle, path: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let r = f.sync_data();
        if let Some(o) = &self.observer {
            o.fsync(started.elapsed());
        }
        r.map_err(|e| Error::io(path, e))
    }

    /// Renames a derived file into place. Whether a failed rename happened or not, the store's
    /// own data is untouched and open accepts either outcome.
    pub fn rename_derived(&self, from: &Path, to: &Path) -> Result<()> {
        self.backend.rename(from, to).map_err(|e| Error::io(to, e))
    }

    /// Writes a new file at `path` durably: temp file (`path` + `.tmp`), write, fdatasync,
    /// rename, directory fsync. Before the rename a failure leaves `path` untouched and the temp
    /// file removed; from the rename on, a failure makes the store read-only.
    pub fn write_new_file(&self, path: &Path, bytes: &[u8]) -> Result<Arc<dyn FileHandle>> {
        let tmp = temp_path(path);
        let dir = path.parent().unwrap_or(Path::new("."));
        let staged = (|| {
            let f = self.create(&tmp)?;
            self.write_at(&*f, &tmp, bytes, 0)?;
            self.sync(&*f, &tmp)?;
            Ok(f)
        })();
        let f = match staged {
            Ok(f) => f,
            Err(e) => {
                let _ = self.backend.remove(&tmp);
                return Err(e);
            }
        };
        self.rename(&tmp, path)?;
        self.sync_dir(dir)?;
        Ok(f)
    }
}

/// The temp name `write_new_file` uses for `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(crate::dir::TEMP_EXT);
    PathBuf::from(s)
}
