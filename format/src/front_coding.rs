//! Front coding, shared by the cluster directory and the index dictionaries: a key is stored as
//! the number of bytes it shares with the key before it and the rest of it.

use crate::cursor::Cursor;
use crate::FormatError;

/// Reads the front of an entry: a varint of the bytes shared with the key before, a varint of
/// the suffix's length, and the suffix. The key they make must be at most `max` bytes (an
/// error naming `what` otherwise).
pub fn read_shared_suffix<'a>(
    c: &mut Cursor<'a>,
    what: &'static str,
    max: usize,
) -> Result<(usize, &'a [u8]), FormatError> {
    let shared = c.varint()?;
    let suffix_len = c.varint()?;
    let len = shared.saturating_add(suffix_len);
    if len > max as u64 {
        return Err(FormatError::LimitExceeded {
            what,
            value: len,
            max: max as u64,
        });
    }
    Ok((shared as usize, c.take(suffix_len as usize)?))
}

/// How many leading bytes `a` and `b` share.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A key rebuilt entry by entry from (shared, suffix) pairs, at most `N` bytes, without
/// allocating.
pub struct RebuiltKey<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for RebuiltKey<N> {
    fn default() -> Self {
        RebuiltKey {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> RebuiltKey<N> {
    pub fn get(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// Keeps the first `shared` bytes of the key and appends `suffix`: an error (naming `what`)
    /// when the key has fewer bytes to share or the result would be longer than `N`.
    pub fn set(
        &mut self,
        what: &'static str,
        shared: usize,
        suffix: &[u8],
    ) -> Result<(), FormatError> {
        if shared > self.len {
            return Err(FormatError::invalid(
                what,
                format!("{shared} bytes shared with a key of {}", self.len),
            ));
        }
        let end = shared + suffix.len();
        self.bytes
            .get_mut(shared..end)
            .ok_or_else(|| FormatError::invalid(what, format!("a key of {end} bytes")))?
            .copy_from_slice(suffix);
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rebuild_from_shared_bytes_and_refuse_what_does_not_fit() {
        let mut k = RebuiltKey::<4>::default();
        k.set("t", 0, b"abc").unwrap();
        k.set("t", 2, b"d").unwrap();
        assert_eq!(k.get(), b"abd");
        assert!(k.set("t", 4, b"").is_err(), "more shared than the key has");
        assert!(k.set("t", 3, b"xy").is_err(), "longer than 4");
        assert_eq!(k.get(), b"abd");
        assert_eq!(common_prefix_len(b"abd", b"abx"), 2);
    }
}
