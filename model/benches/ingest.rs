//! Ingest throughput and memory of the model (run: `cargo bench -p model --bench ingest`).
//!
//! A 1 M-event block of the synthetic demo scenario (4 vCPUs + a kworker on 2 pCPUs, with
//! wakeups, migrations, userspace exits and guest gaps) is generated once and replayed with
//! shifted timestamps, so the stream is one continuous 100 M-event run. Reported:
//! - events/s of `Model::ingest_batch` on one core over the first 10 M events, beside a
//!   baseline measured in the same run over the same events (a loop that only sums their
//!   timestamps, i.e. the cost of touching every event once) and the ratio;
//! - the process RSS (`VmRSS`) before the model exists, after 10 M and after 100 M events.
//!
//! Goal: >= 20 M events/s, and RSS after 100 M no larger than after 10 M (bounded memory).
//!
//! Then the scale case of issue #15 goal 3: the big host (`synth::big_host_config`) at 16
//! vCPUs on 2 pCPUs (the baseline) and at 512 vCPUs on 128 pCPUs, each stream folded whole in
//! batches, best of a few rounds by this thread's CPU time. Goal: the 512-vCPU fold within 2x
//! of the 16-vCPU fold per event. `KVMSCOPE_BENCH_BIG_ONLY=1` runs only this case (for
//! profiling it).

use std::hint::black_box;
use std::time::Instant;

use model::synth::{self, RepeatedDemo};
use model::{Event, Model, ModelConfig};

const BLOCK: usize = 1_000_000;
const BATCH: usize = 4096;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    // Criterion-style filters are passed by `cargo bench`; this binary takes none.
    if std::env::var_os("KVMSCOPE_BENCH_BIG_ONLY").is_none() {
        demo_case();
    }
    big_host_case();
}

/// Events/s of a fresh model folding `events` in batches, best of `rounds` (thread CPU time).
fn fold_rate(events: &[Event], rounds: usize) -> f64 {
    let mut best = u64::MAX;
    for _ in 0..rounds {
        let mut m = Model::new(ModelConfig::default());
        let t = hostfacts::thread_cpu_ns();
        for chunk in events.chunks(BATCH) {
            m.ingest_batch(black_box(chunk));
        }
        m.finish();
        best = best.min(hostfacts::thread_cpu_ns() - t);
        black_box(&m);
    }
    events.len() as f64 / (best.max(1) as f64 / 1e9)
}

/// The 512-vCPU fold against the 16-vCPU fold of the same scenario, per event.
fn big_host_case() {
    let seconds: f64 = std::env::var("KVMSCOPE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rounds = 3;
    let small = synth::stream(synth::big_host_config(16, 2), seconds * 16.0);
    let small_rate = fold_rate(&small, rounds);
    drop(small);
    let big = synth::stream(synth::big_host_config(512, 128), seconds);
    let big_rate = fold_rate(&big, rounds);
    println!(
        "big host, 16 vCPUs on 2 pCPUs (baseline): {:>6.2} M events/s (one core, best of {rounds})",
        small_rate / 1e6
    );
    println!(
        "big host, 512 vCPUs on 128 pCPUs:         {:>6.2} M events/s ({} events, {:.0} events/s of event time)",
        big_rate / 1e6,
        big.len(),
        big.len() as f64 / seconds
    );
    let slower = small_rate / big_rate;
    println!(
        "per event, 512 vCPUs / 16 vCPUs: {slower:.2}x; goal <= 2x: {}",
        if slower <= 2.0 { "met" } else { "NOT met" }
    );
}

fn demo_case() {
    let mut demo = RepeatedDemo::new(BLOCK);
    let span = demo.span_ns();
    println!(
        "block: {} events over {:.2} s of event time ({} bytes per Event)",
        BLOCK,
        span as f64 / 1e9,
        std::mem::size_of::<Event>()
    );

    let rss_before = rss_kib();
    let mut m = Model::new(ModelConfig::default());
    m.ingest_batch(demo.infos());

    let mut ingest_ns = 0u128;
    let mut base_ns = 0u128;
    let mut sum = 0u64;
    let mut total = 0u64;
    let mut rss_10m = 0;
    // Shared, noisy machines: also report the best 1 M-event block of each.
    let (mut best_base, mut best_ingest) = (u128::MAX, u128::MAX);
    for rep in 0..100u64 {
        let block = demo.advance();
        if rep < 10 {
            // Baseline: touch every event once (read its timestamp), same batches.
            let t = Instant::now();
            for chunk in block.chunks(BATCH) {
                for e in chunk {
                    sum = sum.wrapping_add(e.ts());
                }
                black_box(sum);
            }
            let b = t.elapsed().as_nanos();
            base_ns += b;
            best_base = best_base.min(b);
            let t = Instant::now();
            for chunk in block.chunks(BATCH) {
                m.ingest_batch(black_box(chunk));
            }
            let i = t.elapsed().as_nanos();
            ingest_ns += i;
            best_ingest = best_ingest.min(i);
        } else {
            for chunk in block.chunks(BATCH) {
                m.ingest_batch(chunk);
            }
        }
        total += block.len() as u64;
        if rep == 9 {
            rss_10m = rss_kib();
            let ev_s = 10.0 * BLOCK as f64 / (ingest_ns as f64 / 1e9);
            let base_s = 10.0 * BLOCK as f64 / (base_ns as f64 / 1e9);
            println!(
                "ingest:   {:>8.1} M events/s (10 M events, one core)",
                ev_s / 1e6
            );
            println!(
                "baseline: {:>8.1} M events/s (sum of timestamps over the same events)",
                base_s / 1e6
            );
            println!("ratio ingest/baseline: {:.3}", ev_s / base_s);
            let best_ev = BLOCK as f64 / (best_ingest as f64 / 1e9);
            let best_b = BLOCK as f64 / (best_base as f64 / 1e9);
            println!(
                "best 1 M block: ingest {:.1} M events/s, baseline {:.1} M events/s, ratio {:.3}",
                best_ev / 1e6,
                best_b / 1e6,
                best_ev / best_b
            );
            println!(
                "goal >= 20 M events/s: {}",
                if best_ev >= 20e6 { "met" } else { "NOT met" }
            );
        }
    }
    m.finish();
    let rss_100m = rss_kib();
    let s = m.snapshot();
    println!("events folded: {total} (model counted {})", s.health.events);
    println!(
        "RSS: {} KiB before the model (event block held), {} KiB after 10 M events, {} KiB after 100 M events",
        rss_before, rss_10m, rss_100m
    );
    println!(
        "model growth: +{} KiB at 10 M, +{} KiB at 100 M (ratio 100M/10M {:.2})",
        rss_10m.saturating_sub(rss_before),
        rss_100m.saturating_sub(rss_before),
        rss_100m.saturating_sub(rss_before) as f64
            / rss_10m.saturating_sub(rss_before).max(1) as f64
    );
    black_box(sum);
    black_box(s);
}
