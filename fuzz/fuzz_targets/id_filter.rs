#![no_main]
use echolog_format::id_filter_file::{decode_id_filter, encode_id_filter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = decode_id_filter(data) {
        let again = encode_id_filter(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>());
        assert_eq!(decode_id_filter(&again), Ok(parts));
    }
});
