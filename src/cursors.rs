//! Consumer cursors: a name and the seq a consumer resumes from, kept in the CURSORS file
//! (rewritten whole, atomically, on every commit: temp file, fdatasync, rename, directory
//! fsync), so a committed cursor is as durable as an acknowledged event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use echolog_format::cursors_file::{
    decode_cursors, encode_cursors, CURSORS_COUNT_MAX, CURSOR_NAME_BYTES_MAX,
};

use crate::error::{Error, Result};
use crate::storage::Storage;

pub const CURSORS_FILE: &str = "CURSORS";

/// Checks a cursor name: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub fn check_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if name.is_empty() || name.len() > CURSOR_NAME_BYTES_MAX || !name.chars().all(ok_char) {
        return Err(Error::invalid(format!(
            "name: a cursor name is 1..={CURSOR_NAME_BYTES_MAX} bytes of [A-Za-z0-9._:-], got {name:?}"
        )));
    }
    Ok(())
}

/// The cursors in force. A CURSORS file that fails its checksum is kept as an error: cursor
/// calls report it (with the file) instead of silently starting consumers over.
pub(crate) struct Cursors {
    path: PathBuf,
    state: std::result::Result<BTreeMap<String, u64>, String>,
}

impl Cursors {
    /// Loads `dir/CURSORS` (absent: no cursors).
    pub fn load(storage: &Storage, dir: &Path) -> Result<Cursors> {
        let path = dir.join(CURSORS_FILE);
        let state = match storage.read_all(&path) {
            Ok(bytes) => match decode_cursors(&bytes) {
                Ok(v) => Ok(v.into_iter().collect()),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cursors file is corrupt; cursor calls fail until it is restored or removed");
                    Err(format!("corruption in {} at offset 0: {e}", path.display()))
                }
            },
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(BTreeMap::new())
            }
            Err(e) => return Err(e),
        };
        Ok(Cursors { path, state })
    }

    fn map(&self) -> Result<&BTreeMap<String, u64>> {
        self.state
            .as_ref()
            .map_err(|m| Error::Inconsistent(m.clone()))
    }

    pub fn get(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.map()?.get(name).copied())
    }

    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        Ok(self.map()?.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    /// Sets `name` to `seq` durably; on failure nothing changes.
    pub fn commit(&mut self, storage: &Storage, name: &str, seq: u64) -> Result<()> {
        let map = self.map()?;
        if !map.contains_key(name) && map.len() >= CURSORS_COUNT_MAX {
            return Err(Error::TooLarge(format!(
                "cursors: a store holds at most {CURSORS_COUNT_MAX} cursors"
            )));
        }
        let mut next = map.clone();
        next.insert(name.to_owned(), seq);
        let entries: Vec<(String, u64)> = next.iter().map(|(k, v)| (k.clone(), *v)).collect();
        storage.write_new_file(&self.path, &encode_cursors(&entries))?;
        self.state = Ok(next);
        Ok(())
    }
}
