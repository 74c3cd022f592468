//! Fuzz the trace-file reader: any bytes must give either a clear error or events plus
//! damage counts, never a panic, a hang or an allocation blow-up.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run trace_reader corpus/trace_reader -- -max_len=65536`
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::trace_file::TraceReader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = TraceReader::new(data, "fuzz") else {
        return;
    };
    let mut events = Vec::new();
    while let Ok(true) = reader.next_chunk(&mut events) {
        events.clear();
    }
    let stats = reader.stats();
    let _ = stats.problems();
});
