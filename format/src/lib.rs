//! Byte layout of echolog's files: segment headers, blocks, records and index files.
//!
//! This crate only encodes and decodes bytes and checks checksums: it opens no files and starts
//! no threads. Every decoder treats its input as untrusted: arbitrary bytes produce an error,
//! never a panic, and never an allocation larger than the named limits in [`limits`].
//!
//! The layout itself is documented in `docs/format.md` (and only there, so that comments in code
//! cannot drift from it).

pub mod block;
pub mod checkpoint;
pub mod cluster;
pub mod cursor;
pub mod cursors_file;
pub mod dictionary;
pub mod error;
pub mod front_coding;
pub mod id_filter_file;
pub mod index;
pub mod limits;
pub mod postings;
pub mod record;
pub mod segment_header;
pub mod tombstone_file;
pub mod ts_column;

pub use error::FormatError;

/// Version of every file format in this crate, written into every new file. Bumped on any
/// layout change; files older than [`FORMAT_VERSION_READ_MIN`] or newer than this are rejected
/// with [`FormatError::UnsupportedVersion`].
///
/// Version 2 added the block flag `PRIOR_DURABLE` (see `block`); every other byte is as in
/// version 1, so version 1 files are read as they are. Version 3 added cluster files
/// (`cluster`); segment, index, tombstone and cursor files are as in version 2. Version 4 added
/// purge: a segment may hold `$purged` records (empty entity, no tags or payload) where purge
/// erased an event; every byte layout is as in version 3, and a version 3 reader would show
/// such records as events, so it must refuse these files. Version 5 added the index section
/// `SECTION_TAG_HOURS` (per-tag hourly counts); an index without it (versions 1 to 4) is
/// counted from its bitmaps and timestamps as before. Version 6 made index files compact: the
/// ts column (section 2) is packed in frames (`ts_column`), and every dictionary value of the
/// entities, kinds, tags and minutes sections starts with a tag byte saying whether a roaring
/// bitmap or a varint list follows (`postings`); indexes of versions 1 to 5 are read as they
/// are. Segment, cluster, tombstone and cursor files are as in version 5. Version 7 made
/// cluster files and index dictionaries smaller: a cluster block's seq column is delta-coded
/// (`cluster::split_cluster_body`), the cluster directory front-codes the entities with a
/// restart every 16 (`cluster`), and so does every large dictionary section of an index
/// (`dictionary`); older cluster files and dictionaries are read as they are. Every other byte
/// is as in version 6.
pub const FORMAT_VERSION: u32 = 7;

/// Oldest version this build reads.
pub const FORMAT_VERSION_READ_MIN: u32 = 1;

/// Checks a version read from a file header.
pub fn check_version(what: &'static str, found: u32) -> Result<u32, FormatError> {
    if (FORMAT_VERSION_READ_MIN..=FORMAT_VERSION).contains(&found) {
        Ok(found)
    } else {
        Err(FormatError::UnsupportedVersion {
            what,
            found,
            supported: FORMAT_VERSION,
        })
    }
}

/// CRC32 (IEEE, as computed by crc32fast) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Checks `bytes` against `expected`, returning the typed mismatch error.
pub fn verify_crc32(what: &'static str, expected: u32, bytes: &[u8]) -> Result<(), FormatError> {
    let got = crc32(bytes);
    if got == expected {
        Ok(())
    } else {
        Err(FormatError::ChecksumMismatch {
            what,
            expected,
            got,
        })
    }
}
