//! One event record inside a decompressed block body.

use crate::cursor::{put_len_prefixed, put_varint, Cursor};
use crate::limits::*;
use crate::FormatError;

/// A record borrowed from a decompressed block body. Its seq is implicit: the block's first seq
/// plus the record's position in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub entity: &'a str,
    pub kind: &'a str,
    pub ts: i64,
    /// Tags, still encoded; iterate with [`RecordRef::tags`].
    tags_raw: &'a [u8],
    pub tags_count: usize,
    pub payload: &'a [u8],
    /// Empty when the record has no idempotency key.
    pub id: &'a str,
}

impl<'a> RecordRef<'a> {
    pub fn tags(&self) -> TagIter<'a> {
        TagIter {
            cursor: Cursor::new("record tags", self.tags_raw),
            left: self.tags_count,
        }
    }

    /// The tags' bytes, in order, without checking their UTF-8 again: decoding the record
    /// checked every tag (for callers that only measure or copy them).
    pub fn tag_bytes(&self) -> TagBytes<'a> {
        TagBytes(self.tags())
    }
}

/// Iterates the bytes of the tags of a record that already decoded successfully.
pub struct TagBytes<'a>(TagIter<'a>);

impl<'a> Iterator for TagBytes<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let it = &mut self.0;
        if it.left == 0 {
            return None;
        }
        it.left -= 1;
        it.cursor.len_prefixed("tag", TAG_BYTES_MAX).ok()
    }
}

/// Iterates the tags of a record that already decoded successfully (so tags are valid UTF-8).
pub struct TagIter<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let bytes = self.cursor.len_prefixed("tag", TAG_BYTES_MAX).ok()?;
        std::str::from_utf8(bytes).ok()
    }
}

/// Appends one encoded record to `out`. The caller has validated the fields against the engine's
/// limits; the format's hard limits are asserted here because violating them would write a record
/// the decoder refuses.
pub fn encode_record<T: AsRef<str>>(
    out: &mut Vec<u8>,
    entity: &str,
    kind: &str,
    ts: i64,
    tags: &[T],
    payload: &[u8],
    id: &str,
) {
    assert!(entity.len() <= ENTITY_BYTES_MAX && kind.len() <= KIND_BYTES_MAX);
    assert!(tags.len() <= TAGS_COUNT_MAX && payload.len() <= PAYLOAD_BYTES_MAX);
    assert!(id.len() <= ID_BYTES_MAX);
    put_len_prefixed(out, entity.as_bytes());
    put_len_prefixed(out, kind.as_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    put_varint(out, tags.len() as u64);
    for t in tags {
        let t = t.as_ref();
        assert!(t.len() <= TAG_BYTES_MAX);
        put_len_prefixed(out, t.as_bytes());
    }
    put_len_prefixed(out, payload);
    put_len_prefixed(out, id.as_bytes());
}

fn utf8<'a>(what: &'static str, b: &'a [u8]) -> Result<&'a str, FormatError> {
    std::str::from_utf8(b).map_err(|_| FormatError::invalid(what, "not valid UTF-8"))
}

fn read_tags_count(c: &mut Cursor<'_>) -> Result<u64, FormatError> {
    let n = c.varint()?;
    if n > TAGS_COUNT_MAX as u64 {
        return Err(FormatError::LimitExceeded {
            what: "record tags count",
            value: n,
            max: TAGS_COUNT_MAX as u64,
        });
    }
    Ok(n)
}

/// Moves the cursor past one record, checking only its framing (lengths against limits and
/// against the input), not its contents: [`decode_record`] checks those when it is read.
pub fn skip_record(c: &mut Cursor<'_>) -> Result<(), FormatError> {
    c.len_prefixed("record entity", ENTITY_BYTES_MAX)?;
    c.len_prefixed("record kind", KIND_BYTES_MAX)?;
    c.i64()?;
    let tags_count = read_tags_count(c)?;
    for _ in 0..tags_count {
        c.len_prefixed("record tag", TAG_BYTES_MAX)?;
    }
    c.len_prefixed("record payload", PAYLOAD_BYTES_MAX)?;
    c.len_prefixed("record id", ID_BYTES_MAX)?;
    Ok(())
}

/// Decodes the record at the cursor's position.
pub fn decode_record<'a>(c: &mut Cursor<'a>) -> Result<RecordRef<'a>, FormatError> {
    let entity = utf8(
        "record entity",
        c.len_prefixed("record entity", ENTITY_BYTES_MAX)?,
    )?;
    let kind = utf8(
        "record kind",
        c.len_prefixed("record kind", KIND_BYTES_MAX)?,
    )?;
    let ts = c.i64()?;
    let tags_count = read_tags_count(c)?;
    let tags_start = c.position();
    let mut probe = c.clone();
    for _ in 0..tags_count {
        utf8(
            "record tag",
            probe.len_prefixed("record tag", TAG_BYTES_MAX)?,
        )?;
    }
    let tags_len = probe.position() - tags_start;
    let tags_raw = c.take(tags_len)?;
    let payload = c.len_prefixed("record payload", PAYLOAD_BYTES_MAX)?;
    let id = utf8("record id", c.len_prefixed("record id", ID_BYTES_MAX)?)?;
    Ok(RecordRef {
        entity,
        kind,
        ts,
        tags_raw,
        tags_count: tags_count as usize,
        payload,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            "product:1",
            "price",
            -5,
            &["a:b", "c"],
            b"{}",
            "id-1",
        );
        encode_record::<&str>(&mut out, "e", "k", i64::MAX, &[], b"", "");
        let mut c = Cursor::new("t", &out);
        let r = decode_record(&mut c).unwrap();
        assert_eq!(
            (r.entity, r.kind, r.ts, r.payload, r.id),
            ("product:1", "price", -5, &b"{}"[..], "id-1")
        );
        assert_eq!(r.tags().collect::<Vec<_>>(), vec!["a:b", "c"]);
        assert_eq!(
            r.tag_bytes().collect::<Vec<_>>(),
            vec![&b"a:b"[..], &b"c"[..]]
        );
        let r = decode_record(&mut c).unwrap();
        assert_eq!((r.entity, r.ts, r.tags().count()), ("e", i64::MAX, 0));
        assert!(c.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut out = Vec::new();
        encode_record(&mut out, "product:1", "price", 1, &["a:b"], b"{}", "id");
        for cut in 0..out.len() {
            assert!(
                decode_record(&mut Cursor::new("t", &out[..cut])).is_err(),
                "cut {cut}"
            );
        }
    }
}
