#![no_main]
use echolog_format::tombstone_file::{decode_tombstones, encode_tombstones};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((covered, entries)) = decode_tombstones(data) {
        assert_eq!(
            decode_tombstones(&encode_tombstones(covered, &entries)),
            Ok((covered, entries))
        );
    }
});
