use std::path::PathBuf;

use echolog_format::FormatError;
use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the engine returns. The server maps these to status codes in one place.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad input: names the event (when in a batch), the field and the limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request is larger than a configured limit (batch size, batch bytes).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The disk is full: nothing of the failed append is visible; appends work again once
    /// space is freed.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// An earlier write or fsync failed, so the store refuses writes until it is reopened
    /// (the failed data may be gone, and retrying an fsync cannot tell).
    #[error("store is read-only after an I/O failure: {0}")]
    ReadOnly(String),
    /// Another process holds the data directory's lock.
    #[error("data directory {dir} is locked by another echolog process (lock file {lock})")]
    Locked { dir: PathBuf, lock: PathBuf },
    /// Bad bytes on disk, outside the active segment's tail.
    #[error("corruption in {file} at offset {offset}: {source}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        #[source]
        source: FormatError,
    },
    /// A file in the data directory that does not fit the store's layout.
    #[error("inconsistent data directory: {0}")]
    Inconsistent(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error kept by a sealed segment that failed to load, returned to every later reader.
    #[error(transparent)]
    Shared(#[from] crate::segment::SharedError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// True when the OS error says the disk (or quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    // ENOSPC = 28, EDQUOT = 122 on Linux.
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == std::io::ErrorKind::StorageFull
}
