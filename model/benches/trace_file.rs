//! Trace-file write and read cost on the synthetic demo stream (no root): bytes per event,
//! encode+compress ns per event, read+decode ns per event. Chunks are cut every two seconds of
//! event time, as `kvmscope record` does. `cargo bench -p model --bench trace_file`.
//! The synthetic stream has regular, round timestamps, so its bytes/event is far below a real
//! recording's (about 7.5 on the demo); the CPU figures are the point here.
//! The comparison against `perf record` on the real demo is export/benches/record_vs_perf.sh.

use std::time::Instant;

use model::trace_file::{TraceHeader, TraceReader, TraceWriter, WriterOptions};

fn main() {
    let events = model::synth::demo_stream(30.0);
    let n = events.len() as f64;
    for level in [3, 6, 9] {
        let opts = WriterOptions {
            zstd_level: level,
            ..WriterOptions::default()
        };
        let mut best = f64::MAX;
        let mut bytes = Vec::new();
        for _ in 0..5 {
            let began = Instant::now();
            let mut w =
                TraceWriter::with_options(Vec::new(), &TraceHeader::default(), opts).unwrap();
            let mut chunk_start = events[0].ts();
            for e in &events {
                if e.ts() >= chunk_start + 2_000_000_000 {
                    w.end_chunk().unwrap();
                    chunk_start = e.ts();
                }
                w.write(e).unwrap();
            }
            bytes = w.finish().unwrap().0;
            best = best.min(began.elapsed().as_secs_f64());
        }
        let began = Instant::now();
        let mut r = TraceReader::new(&bytes[..], "bench").unwrap();
        let mut out = Vec::with_capacity(events.len());
        while r.next_chunk(&mut out).unwrap() {}
        let read = began.elapsed().as_secs_f64();
        assert_eq!(out.len(), events.len());
        println!(
            "zstd level {level}: {} events, {:.2} bytes/event, write {:.0} ns/event ({:.0} ms CPU per million), read {:.0} ns/event",
            events.len(),
            bytes.len() as f64 / n,
            best / n * 1e9,
            best / n * 1e9,
            read / n * 1e9,
        );
    }
}
