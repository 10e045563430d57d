#![no_main]
//! The CURSORS file from arbitrary bytes: decodes without panicking, and what decodes
//! re-encodes to bytes that decode the same.
use echolog_format::cursors_file::{decode_cursors, encode_cursors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode_cursors(data) {
        assert_eq!(decode_cursors(&encode_cursors(&c)), Ok(c));
    }
});
