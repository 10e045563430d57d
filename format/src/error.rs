use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{what}: checksum mismatch (expected {expected:#010x}, got {got:#010x})")]
    ChecksumMismatch {
        what: &'static str,
        expected: u32,
        got: u32,
    },
    #[error("{what}: bad magic bytes")]
    BadMagic { what: &'static str },
    #[error("{what}: unsupported format version {found} (this build reads versions 1 to {supported}); files from another version are never guessed at")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what}: truncated: needs {needed} bytes, {available} available")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("{what}: {value} exceeds the limit {max}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("block body: zstd decompression failed: {0}")]
    Decompress(String),
}

impl FormatError {
    pub fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        FormatError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
