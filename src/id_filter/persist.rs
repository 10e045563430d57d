//! The id filter across restarts: saved to the IDFILTER file at close, mapped back by the first
//! id lookup after open, so a reopened store does not read every sealed segment's ids section
//! to answer "is this id new". Only the file's heads are checked then; each 4 KiB page of
//! filter blocks is checked against its CRC32 when a lookup first touches it (`bloom.rs`), so
//! the first lookup reads a few pages, not the whole filter, and the saved parts stay in the
//! page cache rather than on the heap (the last one is copied to the heap when the next
//! sealed segment is added to it).
//!
//! The file is derived data, so every doubt drops it: a damaged or unreadable file, or a part
//! whose segments are not exactly the store's, ends what is taken from it, and the segments
//! from there on are added from their ids sections as if there had been no file. A part is
//! taken only if every sealed segment in its seq range is one it recorded, with the same end
//! and the same ids section (length and CRC32 from the index's checked section table; a purge
//! that rewrote the section, or a file copied in from elsewhere, does not match). Segments it
//! recorded that are gone were removed by retention: their ids are nowhere, so the part
//! answering "maybe" for them costs a search, never a wrong "new". A damaged page found later
//! answers "maybe" for every id it holds, and the next save leaves out its part and those after
//! it, so the open after rebuilds them.
//!
//! Crash analysis of a save (temp file, fdatasync, rename, directory fsync): before the rename
//! the old file (or none) is in place and the temp file is removed at the next open; after it
//! the new one is, whole. Either one is checked as above before use.

use std::path::Path;
use std::sync::{Arc, Mutex};

use echolog_format::id_filter_file::{decode_id_filter, SavedPart};

use super::IdFilterState;
use crate::error::{Error, Result};
use crate::segment::SealedSegment;
use crate::storage::{temp_path, Mapped, Storage};

pub const ID_FILTER_FILE: &str = "IDFILTER";

/// The mapped file and the saved parts that describe `sealed` (the store's sealed segments, in
/// seq order): the longest run from the file's start whose every part matches. Their blocks
/// are not read here: each page is checked when a lookup first touches it. `None` without a
/// usable file.
pub fn load(
    storage: &Storage,
    dir: &Path,
    sealed: &[Arc<SealedSegment>],
) -> Option<(Arc<Mapped>, Vec<SavedPart>)> {
    let path = dir.join(ID_FILTER_FILE);
    let started = std::time::Instant::now();
    // Mapped rather than read: no copy of the file on the heap beside the decoded parts.
    let bytes = match storage.map(&path) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the saved id filter; rebuilding it from the segments");
            return None;
        }
    };
    let file = Arc::new(bytes);
    let parts = match decode_id_filter((**file).as_ref()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "the saved id filter is damaged; rebuilding it from the segments");
            return None;
        }
    };
    let saved = parts.len();
    let mut taken = Vec::with_capacity(saved);
    for p in parts {
        match describes(&p, sealed) {
            Ok(true) => taken.push(p),
            Ok(false) => {
                tracing::warn!(
                    base_seq = p.base_seq,
                    end_seq = p.end_seq,
                    "a saved id filter part does not match the segments; rebuilding from there"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(base_seq = p.base_seq, error = %e, "cannot check a saved id filter part; rebuilding from there");
                break;
            }
        }
    }
    tracing::info!(
        parts = taken.len(),
        of = saved,
        bytes = (**file).as_ref().len(),
        ms = started.elapsed().as_millis() as u64,
        "saved id filter read"
    );
    Some((file, taken))
}

/// Whether `p` holds the ids of every sealed segment in its seq range (see the module doc).
fn describes(p: &SavedPart, sealed: &[Arc<SealedSegment>]) -> Result<bool> {
    // A part reaching past the sealed segments would claim seqs a later seal fills.
    let sealed_end = sealed.last().map_or(0, |s| s.end_seq);
    if p.end_seq > sealed_end {
        return Ok(false);
    }
    let first = sealed.partition_point(|s| s.end_seq <= p.base_seq);
    for seg in sealed.get(first..).unwrap_or_default() {
        if seg.base_seq >= p.end_seq {
            break;
        }
        let Ok(at) = p
            .segments
            .binary_search_by_key(&seg.base_seq, |s| s.base_seq)
        else {
            return Ok(false);
        };
        let rec = p.segments.get(at).copied();
        let (ids_len, ids_crc) = seg.ids_signature()?;
        if rec.is_none_or(|r| {
            r.end_seq != seg.end_seq || r.ids_len != ids_len || r.ids_crc != ids_crc
        }) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Saves the filter if it covers more than the file on disk says (at close, once nothing
/// else writes). A failure costs only the file: the next open rebuilds what it lacks.
pub fn save(storage: &Storage, dir: &Path, state: &Mutex<IdFilterState>) {
    let started = std::time::Instant::now();
    let Some((bytes, covered_end)) = state.lock().unwrap_or_else(|p| p.into_inner()).to_save()
    else {
        return;
    };
    let path = dir.join(ID_FILTER_FILE);
    match write_derived_file(storage, dir, &path, &bytes) {
        Ok(()) => {
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .saved(covered_end);
            tracing::info!(
                bytes = bytes.len(),
                covered_end,
                ms = started.elapsed().as_millis() as u64,
                "id filter saved"
            );
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not save the id filter; the next open rebuilds it from the segments");
        }
    }
}

/// Temp file, write, fdatasync, rename, directory fsync; before the rename a failure removes
/// the temp file and leaves `path` as it was.
fn write_derived_file(storage: &Storage, dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let staged = (|| {
        let f = storage.create(&tmp)?;
        storage.write_derived(&*f, &tmp, bytes, 0)?;
        storage.sync_derived(&*f, &tmp)?;
        storage.rename_derived(&tmp, path)
    })();
    if let Err(e) = staged {
        let _ = storage.remove(&tmp);
        return Err(e);
    }
    // The directory holds the store's own files too: a failed fsync of it makes the store
    // read-only, as everywhere else.
    storage.sync_dir(dir)
}
