#![no_main]
use echolog_format::id_filter_file::{
    check_page, decode_id_filter, decode_id_filter_whole, encode_id_filter,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Located parts: any page and any block can be asked for without a panic.
    if let Ok(parts) = decode_id_filter(data) {
        for p in &parts {
            for page in 0..p.page_crcs.len() + 1 {
                let _ = check_page(data, p, page);
            }
            let _ = p.block(data, p.block_count);
        }
    }
    // A file that checks out whole encodes back to the same parts.
    if let Ok(parts) = decode_id_filter_whole(data) {
        let again = encode_id_filter(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>());
        assert_eq!(decode_id_filter_whole(&again), Ok(parts));
    }
});
