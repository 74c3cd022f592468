//! Trace-file write and read cost on the synthetic demo stream (no root): bytes per event,
//! encode+compress ns per event, read+decode ns per event. Chunks are cut every two seconds of
//! event time, as `kvmscope record` does. `cargo bench -p model --bench trace_file`.
//! The synthetic stream has regular, round timestamps, so its bytes/event is far below a real
//! recording's (about 7.5 on the demo); the CPU figures are the point here.
//! The comparison against `perf record` on the real demo is export/benches/record_vs_perf.sh.
//!
//! Decode goal (issue #15, goal 5): read+decode at 20 M events/s or more on one core, printed
//! beside the model's fold (`Model::ingest_batch`) of the same events measured in the same
//! run; times are the thread's CPU time (best of 7). Reading decodes chunk by chunk into one reused buffer, as `report FILE` and `replay`
//! consume a file, so the figure is the decoder's and not the page faults of a growing Vec.

use std::hint::black_box;

use model::trace_file::{TraceHeader, TraceReader, TraceWriter, WriterOptions};
use model::{Event, Model, ModelConfig};

/// Best of this many runs for each timed figure.
const RUNS: usize = 7;
const DECODE_GOAL_PER_S: f64 = 20e6;

/// This thread's CPU time, s: on a shared machine, wall time counts other processes' turns on
/// the core.
fn cpu_s() -> f64 {
    hostfacts::thread_cpu_ns() as f64 / 1e9
}

/// Best CPU time of [`RUNS`] runs of `f`, s.
fn best_of(mut f: impl FnMut()) -> f64 {
    (0..RUNS)
        .map(|_| {
            let began = cpu_s();
            f();
            cpu_s() - began
        })
        .fold(f64::MAX, f64::min)
}

fn write(events: &[Event], opts: WriterOptions) -> Vec<u8> {
    let mut w = TraceWriter::with_options(Vec::new(), &TraceHeader::default(), opts).unwrap();
    let mut chunk_start = events[0].ts();
    for e in events {
        if e.ts() >= chunk_start + 2_000_000_000 {
            w.end_chunk().unwrap();
            chunk_start = e.ts();
        }
        w.write(e).unwrap();
    }
    w.finish().unwrap().0
}

/// Reads every event of `bytes`, one chunk at a time into a reused buffer.
fn read(bytes: &[u8], buf: &mut Vec<Event>) -> u64 {
    let mut r = TraceReader::new(bytes, "bench").unwrap();
    let mut n = 0;
    loop {
        buf.clear();
        if !r.next_chunk(buf).unwrap() {
            return n;
        }
        n += buf.len() as u64;
        black_box(&buf);
    }
}

fn main() {
    let events = model::synth::demo_stream(60.0);
    let n = events.len() as f64;
    // Baseline from this run: the model folding the same events.
    let fold = best_of(|| {
        let mut m = Model::new(ModelConfig::default());
        for batch in events.chunks(4096) {
            m.ingest_batch(batch);
        }
        m.finish();
        black_box(m.events());
    });
    println!(
        "fold (Model::ingest_batch, baseline): {:.0} ns/event, {:.1} M events/s",
        fold / n * 1e9,
        n / fold / 1e6
    );
    let mut buf = Vec::new();
    for level in [3, 6, 9] {
        let opts = WriterOptions {
            zstd_level: level,
            ..WriterOptions::default()
        };
        let mut bytes = Vec::new();
        let write_s = best_of(|| bytes = write(&events, opts));
        assert_eq!(read(&bytes, &mut buf), events.len() as u64);
        let read_s = best_of(|| {
            black_box(read(&bytes, &mut buf));
        });
        let rate = n / read_s;
        println!(
            "zstd level {level}: {} events, {:.2} bytes/event, write {:.0} ns/event ({:.0} ms CPU per million), read {:.0} ns/event = {:.1} M events/s ({:.2}x the fold's time), goal >= {:.0} M/s: {}",
            events.len(),
            bytes.len() as f64 / n,
            write_s / n * 1e9,
            write_s / n * 1e9,
            read_s / n * 1e9,
            rate / 1e6,
            read_s / fold,
            DECODE_GOAL_PER_S / 1e6,
            if rate >= DECODE_GOAL_PER_S { "met" } else { "missed" },
        );
    }
}
