//! Fuzz the event decoder behind the checksums: any bytes decode to events or a clean
//! refusal, and whatever decodes re-encodes to a chunk that decodes to the same events.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run chunk_decoder corpus/chunk_decoder`
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::trace_file::fuzzing::{decode_raw_chunk, encode_raw_chunk};

fuzz_target!(|data: &[u8]| {
    if let Some(events) = decode_raw_chunk(data) {
        let again = decode_raw_chunk(&encode_raw_chunk(&events)).expect("re-encoded chunk decodes");
        assert_eq!(again, events);
    }
});
