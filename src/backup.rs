//! Online backup: a consistent snapshot of the store while appends continue.
//!
//! Under the writer lock (held for the links only, not for copying data) the snapshot is fixed:
//! the sealed segments and their index files, which are immutable, are hard-linked into the
//! destination (copied where the file system cannot link), and so is the TOMBSTONES file of
//! that moment; the seq and the committed length of the active segment are noted. Then, with
//! appends running again, that prefix of the active segment is copied (appends only ever write
//! past it), and the CURSORS file as it stands. Every copied file and the directory are
//! fsynced. The destination opens as a store holding every event up to the reported seq.

use std::path::Path;

use crate::dir::{index_name, segment_name};
use crate::error::{Error, Result};
use crate::store::Store;

/// What a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Every event up to this seq is in the backup.
    pub last_seq: u64,
    pub files_linked: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
}

impl Store {
    /// Writes a consistent snapshot of the store into `dest`, which must be absent or empty.
    pub fn backup(&self, dest: &Path) -> Result<BackupReport> {
        let inner = &self.inner;
        let st = &inner.storage;
        if let Ok(names) = st.list_dir(dest) {
            if !names.is_empty() {
                return Err(Error::invalid(format!(
                    "dest: {} must be empty or absent",
                    dest.display()
                )));
            }
        }
        st.create_dir_all(dest)?;
        let mut r = BackupReport::default();
        let count = |linked: bool, r: &mut BackupReport| {
            if linked {
                r.files_linked += 1;
            } else {
                r.files_copied += 1;
            }
        };
        let (active_path, active_base, active_len) = {
            let w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(msg) = inner.poisoned() {
                return Err(Error::ReadOnly(msg));
            }
            let _files = inner.sealed_files.lock().unwrap_or_else(|p| p.into_inner());
            let view = inner.view.read().unwrap_or_else(|p| p.into_inner()).clone();
            for seg in view.sealed.iter() {
                let name = segment_name(seg.base_seq);
                count(
                    st.link_or_copy(&inner.dir.join(&name), &dest.join(&name))?,
                    &mut r,
                );
                let idx = index_name(seg.base_seq);
                // A missing index is rebuilt by the backup's first open.
                if st.open(&inner.dir.join(&idx), false).is_ok() {
                    count(
                        st.link_or_copy(&inner.dir.join(&idx), &dest.join(&idx))?,
                        &mut r,
                    );
                }
            }
            let tomb = inner.dir.join(crate::tombstones::TOMBSTONES_FILE);
            if st.open(&tomb, false).is_ok() {
                let to = dest.join(crate::tombstones::TOMBSTONES_FILE);
                count(st.link_or_copy(&tomb, &to)?, &mut r);
            }
            r.last_seq = w.next_seq - 1;
            (w.active.path.clone(), w.active.base_seq, w.len)
        };
        // Appends run again: they only write past `active_len`.
        let mut prefix = vec![0u8; usize::try_from(active_len).unwrap_or(usize::MAX)];
        let src = st.open(&active_path, false)?;
        st.read_at(&*src, &active_path, &mut prefix, 0)?;
        let to = dest.join(segment_name(active_base));
        let f = st.create(&to)?;
        st.write_at(&*f, &to, &prefix, 0)?;
        st.sync(&*f, &to)?;
        r.files_copied += 1;
        r.bytes_copied += active_len;
        let cursors = self.cursors()?;
        if !cursors.is_empty() {
            let bytes = echolog_format::cursors_file::encode_cursors(&cursors);
            let to = dest.join(crate::cursors::CURSORS_FILE);
            let f = st.create(&to)?;
            st.write_at(&*f, &to, &bytes, 0)?;
            st.sync(&*f, &to)?;
            r.files_copied += 1;
            r.bytes_copied += bytes.len() as u64;
        }
        st.sync_dir(dest)?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            st.sync_dir(parent)?;
        }
        tracing::info!(dest = %dest.display(), last_seq = r.last_seq, linked = r.files_linked, copied = r.files_copied, "backup written");
        Ok(r)
    }
}
