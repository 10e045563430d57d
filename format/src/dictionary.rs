//! Dictionary sections of index files: sorted, unique byte keys, each with an opaque value (a
//! posting value, or a tag's hourly counts).
//!
//! Two layouts, by the index file's version. Versions 1 to 6: a table of u32 offsets, one per
//! entry, and entries of a u16 key length, the key, a u32 value length and the value. From
//! version 7: varint lengths, and keys front-coded against the key before them with a restart
//! (a whole key, and its offset in a table) every `interval` entries, which the section states.
//! A lookup is a binary search over the restarts and a scan of at most `interval - 1` entries.
//! The writer front-codes large dictionaries only ([`DICT_CODED_KEYS_MIN`]): an entity section
//! of 226k keys shrinks by nearly half, while a section of a few hundred tags gains a few
//! bytes a key and would cost its lookups (on every count) a scan per restart.
//! Layout: `docs/format.md`, "Dictionary section".

use crate::cursor::{put_varint, Cursor};
use crate::front_coding::{common_prefix_len, read_shared_suffix, RebuiltKey};
use crate::FormatError;

/// Longest dictionary key, bytes (tags and entities are at most 256).
pub const DICT_KEY_BYTES_MAX: usize = 1024;
/// The restart interval of a front-coded dictionary: every this many entries (from the first),
/// a key is stored whole and has an offset in the table.
pub const DICT_RESTART_INTERVAL: usize = 16;
/// Dictionaries of fewer keys are written with a restart at every entry (no front coding).
pub const DICT_CODED_KEYS_MIN: usize = 4096;
/// The largest restart interval a reader accepts.
pub const DICT_RESTART_INTERVAL_MAX: usize = 64;
/// The first version whose dictionaries are front-coded.
pub const CODED_DICT_VERSION_MIN: u32 = 7;

const WHAT: &str = "index dictionary";

/// Encodes a dictionary in the current layout. Keys must come sorted and unique.
pub fn encode_dict<'k, I>(entries: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'k [u8], Vec<u8>)>,
{
    let entries: Vec<(&[u8], Vec<u8>)> = entries.into_iter().collect();
    let interval = if entries.len() >= DICT_CODED_KEYS_MIN {
        DICT_RESTART_INTERVAL
    } else {
        1
    };
    let restarts = entries.len().div_ceil(interval);
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(interval as u32).to_le_bytes());
    let table_at = out.len();
    out.resize(table_at + 4 * restarts, 0);
    let mut prev: &[u8] = &[];
    for (i, (key, value)) in entries.iter().enumerate() {
        assert!(
            i == 0 || prev < *key,
            "dictionary keys must be sorted and unique"
        );
        assert!(key.len() <= DICT_KEY_BYTES_MAX);
        let shared = if i.is_multiple_of(interval) {
            let off = u32::try_from(out.len()).expect("dictionary section under 4 GiB");
            let at = table_at + 4 * (i / interval);
            out[at..at + 4].copy_from_slice(&off.to_le_bytes());
            0
        } else {
            prev.iter()
                .zip(key.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut out, shared as u64);
        put_varint(&mut out, (key.len() - shared) as u64);
        out.extend_from_slice(&key[shared..]);
        put_varint(&mut out, value.len() as u64);
        out.extend_from_slice(value);
        prev = key;
    }
    out
}

/// Read access to a dictionary section without parsing all of it. Every read is
/// bounds-checked: damaged bytes give an error, never a panic.
#[derive(Debug, Clone, Copy)]
pub struct DictView<'a> {
    bytes: &'a [u8],
    count: usize,
    coded: bool,
    /// Entries per restart (coded layout; 1 in the fixed one, whose table has every entry).
    interval: usize,
    /// Where the offset table starts.
    table_at: usize,
}

/// One coded entry: bytes shared with the key before, the rest of the key, the value.
fn read_coded<'a>(c: &mut Cursor<'a>) -> Result<(usize, &'a [u8], &'a [u8]), FormatError> {
    let (shared, suffix) = read_shared_suffix(c, "index dictionary key", DICT_KEY_BYTES_MAX)?;
    let value_len = c.varint()?;
    let value = c.take(usize::try_from(value_len).unwrap_or(usize::MAX))?;
    Ok((shared, suffix, value))
}

impl<'a> DictView<'a> {
    /// A view of a dictionary section of an index file of format `version`.
    pub fn parse(bytes: &'a [u8], version: u32) -> Result<Self, FormatError> {
        let coded = version >= CODED_DICT_VERSION_MIN;
        let mut v = DictView {
            bytes,
            count: 0,
            coded,
            interval: 1,
            table_at: 4,
        };
        if bytes.is_empty() {
            return Ok(v);
        }
        let mut c = Cursor::new(WHAT, bytes);
        v.count = c.u32()? as usize;
        if coded {
            v.interval = c.u32()? as usize;
            v.table_at = 8;
            if !(1..=DICT_RESTART_INTERVAL_MAX).contains(&v.interval) {
                return Err(FormatError::LimitExceeded {
                    what: "index dictionary restart interval",
                    value: v.interval as u64,
                    max: DICT_RESTART_INTERVAL_MAX as u64,
                });
            }
        }
        if v.count.div_ceil(v.interval) * 4 > c.remaining() {
            return Err(FormatError::invalid(WHAT, "count larger than the section"));
        }
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `k`th u32 of the offset table (an entry's, or a restart's), checked to lie inside
    /// the section.
    fn table_offset(&self, k: usize) -> Result<usize, FormatError> {
        let at = self.table_at + 4 * k;
        let mut b = [0u8; 4];
        b.copy_from_slice(
            self.bytes
                .get(at..at + 4)
                .ok_or_else(|| FormatError::invalid(WHAT, "offset table"))?,
        );
        let off = u32::from_le_bytes(b) as usize;
        if off > self.bytes.len() {
            return Err(FormatError::invalid(WHAT, "offset past the section"));
        }
        Ok(off)
    }

    /// A cursor at restart `k`'s entry.
    fn restart(&self, k: usize) -> Result<Cursor<'a>, FormatError> {
        let off = self.table_offset(k)?;
        Ok(Cursor::new(WHAT, self.bytes.get(off..).unwrap_or_default()))
    }

    /// Entry `i` of a version 1-6 dictionary.
    fn fixed_entry(&self, i: usize) -> Result<(&'a [u8], &'a [u8]), FormatError> {
        let off = self.table_offset(i)?;
        let mut c = Cursor::new(WHAT, self.bytes.get(off..).unwrap_or_default());
        let klen = c.u16()? as usize;
        if klen > DICT_KEY_BYTES_MAX {
            return Err(FormatError::LimitExceeded {
                what: "index dictionary key",
                value: klen as u64,
                max: DICT_KEY_BYTES_MAX as u64,
            });
        }
        let key = c.take(klen)?;
        let vlen = c.u32()? as usize;
        let value = c.take(vlen)?;
        Ok((key, value))
    }

    /// The `i`th entry (in key order), bounds-checked. To walk them all, [`DictView::cursor`].
    pub fn entry(&self, i: usize) -> Result<(Vec<u8>, &'a [u8]), FormatError> {
        if i >= self.count {
            return Err(FormatError::invalid(WHAT, "index out of range"));
        }
        if !self.coded {
            return self.fixed_entry(i).map(|(k, v)| (k.to_vec(), v));
        }
        let mut cur = self.cursor_from(i / self.interval * self.interval)?;
        for _ in 0..i % self.interval {
            cur.next_entry()?;
        }
        match cur.next_entry()? {
            Some((k, v)) => Ok((k.to_vec(), v)),
            None => Err(FormatError::invalid(WHAT, "index out of range")),
        }
    }

    /// A cursor over the entries in key order, from the first.
    pub fn cursor(&self) -> DictCursor<'a> {
        DictCursor {
            view: *self,
            next: 0,
            c: Cursor::new(WHAT, &[]),
            key: RebuiltKey::default(),
        }
    }

    /// A cursor from entry `first`, which is 0 or a restart.
    fn cursor_from(&self, first: usize) -> Result<DictCursor<'a>, FormatError> {
        let mut cur = self.cursor();
        if self.coded && first < self.count {
            cur.c = self.restart(first / self.interval)?;
        }
        cur.next = first;
        Ok(cur)
    }

    /// The value under `key`: a binary search (over the restarts, then a scan of at most
    /// `interval - 1` entries, in the coded layout).
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>, FormatError> {
        if !self.coded {
            return self.fixed_get(key);
        }
        // The last restart whose key is at or before `key`.
        let (mut lo, mut hi) = (0usize, self.count.div_ceil(self.interval));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let mut c = self.restart(mid)?;
            let (shared, k, value) = read_coded(&mut c)?;
            if shared != 0 {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("restart {mid} shares bytes"),
                ));
            }
            match k.cmp(key) {
                std::cmp::Ordering::Equal => return Ok(Some(value)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        let Some(k) = lo.checked_sub(1) else {
            return Ok(None);
        };
        self.scan_group(k, key)
    }

    /// Looks for `key` among the entries after restart `k`, whose key is below it. The
    /// entries are not rebuilt: `matched` is how many leading bytes the current entry's key
    /// shares with `key`. An entry that keeps more of the previous key than that differs from
    /// `key` where the previous one did, so it is still below; one that keeps at most that
    /// many decides by its suffix alone.
    fn scan_group(&self, k: usize, key: &[u8]) -> Result<Option<&'a [u8]>, FormatError> {
        let mut c = self.restart(k)?;
        let (_, first, _) = read_coded(&mut c)?;
        let mut matched = common_prefix_len(first, key);
        let mut len = first.len();
        let first_i = k * self.interval;
        let last_i = (first_i + self.interval).min(self.count);
        for _ in first_i + 1..last_i {
            let (shared, suffix, value) = read_coded(&mut c)?;
            if shared > len {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("{shared} bytes shared with a key of {len}"),
                ));
            }
            len = shared + suffix.len();
            if shared > matched {
                continue;
            }
            let rest = key.get(shared..).unwrap_or_default();
            match suffix.cmp(rest) {
                std::cmp::Ordering::Equal => return Ok(Some(value)),
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => matched = shared + common_prefix_len(suffix, rest),
            }
        }
        Ok(None)
    }

    /// Binary search over the entries of a version 1-6 dictionary.
    fn fixed_get(&self, key: &[u8]) -> Result<Option<&'a [u8]>, FormatError> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, v) = self.fixed_entry(mid)?;
            match k.cmp(key) {
                std::cmp::Ordering::Equal => return Ok(Some(v)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }
}

/// One entry on a cursor: its key (borrowed from the cursor until its next step) and value.
pub type DictEntry<'k, 'a> = (&'k [u8], &'a [u8]);

/// Walks a dictionary's entries in key order; each key is borrowed until the next step.
pub struct DictCursor<'a> {
    view: DictView<'a>,
    /// Index of the entry the next step reads.
    next: usize,
    c: Cursor<'a>,
    key: RebuiltKey<DICT_KEY_BYTES_MAX>,
}

impl<'a> DictCursor<'a> {
    /// The next entry, or None past the last.
    pub fn next_entry(&mut self) -> Result<Option<DictEntry<'_, 'a>>, FormatError> {
        let i = self.next;
        if i >= self.view.count {
            return Ok(None);
        }
        self.next += 1;
        if !self.view.coded {
            let (k, v) = self.view.fixed_entry(i)?;
            self.key.set(WHAT, 0, k)?;
            return Ok(Some((self.key.get(), v)));
        }
        if i == 0 {
            self.c = self.view.restart(0)?;
        }
        let (shared, suffix, value) = read_coded(&mut self.c)?;
        if i.is_multiple_of(self.view.interval) && shared != 0 {
            return Err(FormatError::invalid(
                WHAT,
                format!("entry {i} starts a restart but shares bytes"),
            ));
        }
        self.key.set(WHAT, shared, suffix)?;
        Ok(Some((self.key.get(), value)))
    }
}

/// Encodes a dictionary in the layout of versions 1 to 6, for tests of its reader.
#[cfg(test)]
pub fn encode_fixed_dict(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let offsets_at = out.len();
    out.resize(offsets_at + 4 * entries.len(), 0);
    for (i, (key, value)) in entries.iter().enumerate() {
        let off = out.len() as u32;
        out[offsets_at + 4 * i..offsets_at + 4 * i + 4].copy_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FORMAT_VERSION;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        // Shared prefixes of every length, a key that is a prefix of the next, the empty key,
        // the longest key.
        let mut v: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("product:{}", i * 7919 % 100_003).into_bytes())
            .collect();
        v.extend([
            Vec::new(),
            b"product:1".to_vec(),
            b"product:1x".to_vec(),
            vec![0xff; DICT_KEY_BYTES_MAX],
        ]);
        v.sort();
        v.dedup();
        v
    }

    /// A short value that differs between neighbouring keys (a posting value of an entity
    /// with one event is about this long).
    fn value(k: &[u8]) -> Vec<u8> {
        vec![k.len() as u8, k.last().copied().unwrap_or(0), 7]
    }

    /// Both layouts answer the same for every key, absent keys, every index and a walk.
    #[test]
    fn both_layouts_read_back_every_entry() {
        // A small dictionary (a restart at every entry) and a front-coded one.
        for n in [300, DICT_CODED_KEYS_MIN + 100] {
            read_back(n);
        }
    }

    fn read_back(n: usize) {
        let ks = keys(n);
        let entries: Vec<(&[u8], Vec<u8>)> = ks.iter().map(|k| (&k[..], value(k))).collect();
        let coded = encode_dict(entries.clone());
        let fixed = encode_fixed_dict(&entries);
        let interval = u32::from_le_bytes(coded[4..8].try_into().unwrap()) as usize;
        if n >= DICT_CODED_KEYS_MIN {
            assert_eq!(interval, DICT_RESTART_INTERVAL);
            assert!(
                coded.len() * 2 < fixed.len(),
                "{} against {}",
                coded.len(),
                fixed.len()
            );
        } else {
            assert_eq!(interval, 1);
            assert!(coded.len() < fixed.len());
        }
        for (bytes, version) in [(&coded, FORMAT_VERSION), (&fixed, 6)] {
            let d = DictView::parse(bytes, version).unwrap();
            assert_eq!(d.len(), ks.len());
            let mut cur = d.cursor();
            for (i, k) in ks.iter().enumerate() {
                assert_eq!(d.get(k).unwrap(), Some(&value(k)[..]), "{version} {i}");
                assert_eq!(d.entry(i).unwrap(), (k.clone(), &value(k)[..]));
                assert_eq!(cur.next_entry().unwrap(), Some((&k[..], &value(k)[..])));
                // Neighbours of the key: with a byte more, a byte less, the last byte raised.
                let mut longer = k.clone();
                longer.push(0);
                let shorter = k[..k.len().saturating_sub(1)].to_vec();
                let mut raised = k.clone();
                if let Some(b) = raised.last_mut() {
                    *b = b.wrapping_add(1);
                }
                for probe in [longer, shorter, raised] {
                    let want = ks.contains(&probe).then(|| value(&probe));
                    assert_eq!(
                        d.get(&probe).unwrap(),
                        want.as_deref(),
                        "{version} {probe:?}"
                    );
                }
            }
            assert_eq!(cur.next_entry().unwrap(), None);
            assert!(d.entry(ks.len()).is_err());
            assert_eq!(d.get(&[0xff; DICT_KEY_BYTES_MAX + 1]).unwrap(), None);
        }
        let empty = encode_dict(Vec::<(&[u8], Vec<u8>)>::new());
        let d = DictView::parse(&empty, FORMAT_VERSION).unwrap();
        assert_eq!((d.len(), d.get(b"x").unwrap()), (0, None));
        assert!(DictView::parse(&[], FORMAT_VERSION).unwrap().is_empty());
    }

    #[test]
    fn damaged_bytes_are_errors_or_reads_within_bounds() {
        let ks = keys(40);
        let coded = encode_dict(ks.iter().map(|k| (&k[..], value(k))));
        assert!(DictView::parse(&coded[..coded.len() - 1], FORMAT_VERSION).is_ok());
        assert!(DictView::parse(&[200, 0, 0, 0], FORMAT_VERSION).is_err());
        for at in 0..coded.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut b = coded.clone();
                b[at] ^= bit;
                let Ok(d) = DictView::parse(&b, FORMAT_VERSION) else {
                    continue;
                };
                for k in &ks {
                    let _ = d.get(k);
                }
                let mut cur = d.cursor();
                while let Ok(Some(_)) = cur.next_entry() {}
                for i in 0..d.len().min(64) {
                    let _ = d.entry(i);
                }
            }
        }
        // A front-coded one, a byte in every 11 damaged in turn.
        let ks = keys(DICT_CODED_KEYS_MIN);
        let coded = encode_dict(ks.iter().map(|k| (&k[..], value(k))));
        for at in (0..coded.len()).step_by(11) {
            let mut b = coded.clone();
            b[at] ^= 0x41;
            let Ok(d) = DictView::parse(&b, FORMAT_VERSION) else {
                continue;
            };
            for k in ks.iter().step_by(97) {
                let _ = d.get(k);
            }
            let mut cur = d.cursor();
            while let Ok(Some(_)) = cur.next_entry() {}
        }
        let ks = keys(40);
        let coded = encode_dict(ks.iter().map(|k| (&k[..], value(k))));
        // A truncated section reads up to the damage and then fails.
        let d = DictView::parse(&coded[..coded.len() / 2], FORMAT_VERSION).unwrap();
        let mut cur = d.cursor();
        let mut read = 0;
        let failed = loop {
            match cur.next_entry() {
                Ok(Some(_)) => read += 1,
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert!(failed && read > 0 && read < ks.len());
    }
}
