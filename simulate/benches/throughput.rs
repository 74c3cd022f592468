//! Simulated events per second for each policy on one core, beside a baseline from the same
//! run: the model folding the same events (`Model::ingest_batch`). Goal: >= 10 M simulated
//! events/s (an hour of a 16-vCPU host's demand in well under a minute).
//!
//! `cargo bench -p simulate --bench throughput` (SECS=N sets the simulated span, default 60;
//! POLICY=NAME runs one policy, for a profile; DISPATCH_US=N charges each wakeup that gets a
//! pCPU at once N us, default 45, the lab kernels' measured figure, 0 for none; TICK=1 has
//! the sleepers woken by their pCPU's tick, as recorded on the lab's emulated kernels, so
//! each sleep ends on the tick: `tick_phase.rs`). Times are this thread's CPU time (the
//! kernel's `sum_exec_runtime`), the best of REPS runs (default 3): on a shared host wall
//! time measures the other tenants as much as the code.

use model::{Model, ModelConfig};
use simulate::synthetic::{demand, Spec};
use simulate::{build, run, DispatchDelay, Params, PolicyKind, RecordedDefaults, RunStats};

/// The Linux policies' tick without a recorded HZ (250 Hz).
const TICK_NS: u64 = 4_000_000;

fn main() {
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let span = secs * 1_000_000_000;
    let on_tick = std::env::var("TICK").is_ok_and(|v| v == "1");
    // 16 vCPUs in 4 VMs on 8 pCPUs: hogs, interactive sleepers and mixed.
    let mut specs = Vec::new();
    for i in 0..16u32 {
        let vm = i / 4;
        let cpu = i % 8;
        specs.push(match (i % 4, on_tick) {
            (0, _) => Spec::hog(vm, 0, span),
            (1, false) => Spec::periodic(vm, 0, 200_000, 800_000, span),
            (1, true) => Spec::on_tick(vm, &[200_000, 600_000], TICK_NS, 40_000, cpu, span),
            (2, _) => Spec::periodic(vm, 5, 2_000_000, 1_000_000, span),
            (_, false) => Spec::periodic(vm, -2, 50_000, 150_000, span),
            (_, true) => Spec::on_tick(vm, &[50_000, 150_000], TICK_NS, 90_000, cpu, span),
        });
    }
    let d = demand(&specs, 8, span);
    let dispatch_us: u64 = std::env::var("DISPATCH_US")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    // A recording's measured dispatch delay is charged in every real run: so here.
    let params = Params::default().with_recorded(RecordedDefaults {
        hz: None,
        dispatch: DispatchDelay {
            idle_ns: dispatch_us * 1_000,
            preempt_ns: dispatch_us * 1_000,
        },
    });
    let only = std::env::var("POLICY").ok();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "simulate throughput: 16 vCPUs, 8 pCPUs, {secs} s of demand, one core, dispatch delay {dispatch_us} us{}",
        if on_tick { ", sleepers woken by the tick" } else { "" }
    );
    // Rates on a shared host mean little without the load they were measured under.
    println!("load average at start: {}", load_average());
    let mut worst = f64::MAX;
    for kind in PolicyKind::ALL {
        if only.as_deref().is_some_and(|p| p != kind.name()) {
            continue;
        }
        let (mut n, mut stats, mut dt) = (0u64, RunStats::default(), f64::MAX);
        for _ in 0..reps {
            let built = build(kind, &d, 8, &params).expect("policy builds");
            n = 0;
            let t0 = cpu_time();
            stats = run(built, &d, 8, &mut |_| n += 1);
            dt = dt.min(cpu_time() - t0);
        }
        let rate = n as f64 / dt;
        worst = worst.min(rate);
        // Baseline: the model folding the same stream.
        let built = build(kind, &d, 8, &params).expect("policy builds");
        let mut evs = Vec::with_capacity(n as usize);
        run(built, &d, 8, &mut |e| evs.push(e.clone()));
        let mut base_dt = f64::MAX;
        for _ in 0..reps {
            let mut m = Model::new(ModelConfig::report());
            let t1 = cpu_time();
            m.ingest_batch(&evs);
            m.finish();
            base_dt = base_dt.min(cpu_time() - t1);
        }
        let base = evs.len() as f64 / base_dt;
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

/// This thread's CPU time in seconds.
fn cpu_time() -> f64 {
    hostfacts::thread_cpu_ns() as f64 / 1e9
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures, or why not.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |e| format!("unknown ({e})"),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}
