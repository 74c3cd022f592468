//! Simulated events per second for each policy on one core, beside a baseline from the same
//! run: the model folding the same events (`Model::ingest_batch`). Goal: >= 10 M simulated
//! events/s (an hour of a 16-vCPU host's demand in well under a minute).
//!
//! `cargo bench -p simulate --bench throughput` (SECS=N sets the simulated span, default 60).

use std::time::Instant;

use model::{Model, ModelConfig};
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, Params, PolicyKind};

fn main() {
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let span = secs * 1_000_000_000;
    // 16 vCPUs in 4 VMs on 8 pCPUs: hogs, interactive sleepers and mixed.
    let mut specs = Vec::new();
    for i in 0..16u32 {
        let vm = i / 4;
        specs.push(match i % 4 {
            0 => Spec::hog(vm, 0, span),
            1 => Spec::periodic(vm, 0, 200_000, 800_000, span),
            2 => Spec::periodic(vm, 5, 2_000_000, 1_000_000, span),
            _ => Spec::periodic(vm, -2, 50_000, 150_000, span),
        });
    }
    let d = demand(&specs, 8, span);
    let params = Params::default();
    println!("simulate throughput: 16 vCPUs, 8 pCPUs, {secs} s of demand, one core");
    // Rates on a shared host mean little without the load they were measured under.
    println!("load average at start: {}", load_average());
    let mut worst = f64::MAX;
    for kind in PolicyKind::ALL {
        let built = build(kind, &d, 8, &params).expect("policy builds");
        let mut n = 0u64;
        let t0 = Instant::now();
        let stats = run(built, &d, 8, &mut |_| n += 1);
        let dt = t0.elapsed().as_secs_f64();
        let rate = n as f64 / dt;
        worst = worst.min(rate);
        // Baseline: the model folding the same stream.
        let built = build(kind, &d, 8, &params).expect("policy builds");
        let mut evs = Vec::with_capacity(n as usize);
        run(built, &d, 8, &mut |e| evs.push(e.clone()));
        let mut m = Model::new(ModelConfig::report());
        let t1 = Instant::now();
        m.ingest_batch(&evs);
        m.finish();
        let base = evs.len() as f64 / t1.elapsed().as_secs_f64();
        println!(
            "  {:<7} {:>10} events ({} switches) in {:>6.3} s: {:>6.2} M events/s; model ingest {:>6.2} M events/s; ratio {:.2}",
            kind.name(),
            n,
            stats.switches,
            dt,
            rate / 1e6,
            base / 1e6,
            rate / base
        );
    }
    println!("load average at end: {}", load_average());
    println!(
        "slowest policy {:.2} M simulated events/s (goal >= 10): {}",
        worst / 1e6,
        if worst >= 10e6 { "met" } else { "NOT MET" }
    );
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures, or why not.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |e| format!("unknown ({e})"),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}
