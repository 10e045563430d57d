#![no_main]
//! Checkpoint parts over arbitrary bytes: decoding answers an error or a part whose every
//! count agrees with its header, and the checksum-only check agrees with the full decode on
//! where the part ends. Neither panics.

use echolog_format::checkpoint::{check_part, decode_part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checked = check_part(data);
    let Ok((part, len)) = decode_part(data) else {
        return;
    };
    assert_eq!(checked.map(|(_, l)| l).ok(), Some(len));
    let h = part.header;
    assert_eq!(part.ts.len(), h.record_count as usize);
    assert_eq!(part.blocks.len(), h.block_count as usize);
    let end = h.first_ordinal + h.record_count;
    for (_, r) in part.entities.iter().chain(&part.kinds).chain(&part.tags) {
        let ords = part.ordinals(r);
        assert!(!ords.is_empty() && ords.windows(2).all(|w| w[0] < w[1]));
        assert!(ords.iter().all(|o| (h.first_ordinal..end).contains(o)));
    }
    assert!(part.ids.iter().all(|(_, o)| (h.first_ordinal..end).contains(o)));
});
