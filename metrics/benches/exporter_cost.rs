//! What the always-on exporter costs, each figure beside a baseline from the same run:
//!
//! 1. CPU at 64 vCPUs: fold a simulated host (64 spinning or sleepy vCPUs on 16 pCPUs) into
//!    the model and serve a scrape every 15 s of event time, against folding alone; reported
//!    as the share of one core per second of event time (target: the scrapes add <= 1%).
//! 2. Scrape time at 512 vCPUs (snapshot + OpenMetrics encoding; target < 50 ms), beside
//!    the snapshot alone.
//! 3. Memory over 24 h of event time with churn: 8 VMs of 2 vCPUs alive at any time, all
//!    replaced every 10 minutes (1,152 VMs in all), scraped every 15 s; the model's
//!    resident-memory growth hour by hour against the first hour.
//!
//! `cargo bench -p metrics --bench exporter_cost` (QUICK=1: 2 h instead of 24; ONLY=memory,
//! cost or scrape: that phase alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{openmetrics_text, registry, take_snapshot, Board, SourceFacts};
use model::synth::{stream, Behaviour, SimConfig, SimTask};
use model::{Event, Model};

// The binary's allocator (jemalloc with huge pages), so that memory and CPU are what the
// exporter pays, not what glibc's malloc would.
#[path = "../../src/allocator.rs"]
mod allocator;

const SCRAPE_EVERY_NS: u64 = 15_000_000_000;

/// "Flat" memory over 24 h of churn: RSS at hour 24 within 1 MiB of hour 1 (about 1% of the
/// process), with no more thread slots than at hour 1: ended threads and VMs are retired.
const FLAT_BOUND_KIB: i64 = 1024;

fn vcpu(tid: u32, pid: u32, vm: &str, index: u32, behaviour: Behaviour) -> SimTask {
    SimTask {
        tid,
        pid,
        vm: vm.to_string(),
        vcpu: Some(index),
        tracked: true,
        nice: 0,
        cpus: Vec::new(),
        behaviour,
    }
}

/// `vms` VMs of `vcpus_per_vm`; with `mixed`, every second vCPU is sleepy (runs 2 ms, sleeps
/// 6 ms), else all spin.
fn host(
    cpus: u32,
    vms: u32,
    vcpus_per_vm: u32,
    slice_ns: u64,
    first_tid: u32,
    start_ts: u64,
    mixed: bool,
) -> SimConfig {
    let mut tasks = Vec::new();
    for v in 0..vms {
        let pid = first_tid + v * 100;
        for c in 0..vcpus_per_vm {
            let behaviour = if !mixed || c % 2 == 0 {
                Behaviour::Spin
            } else {
                Behaviour::Sleepy {
                    run_ns: 2_000_000,
                    sleep_ns: 6_000_000,
                }
            };
            tasks.push(vcpu(pid + 1 + c, pid, &format!("vm{}", pid), c, behaviour));
        }
    }
    // The demo's timings (resume costs, balancing), with this host's size and VMs.
    SimConfig {
        cpus,
        slice_ns,
        start_ts,
        tasks,
        ..model::synth::demo_config()
    }
}

fn facts() -> SourceFacts {
    SourceFacts {
        version: env!("CARGO_PKG_VERSION").into(),
        probes_attached: true,
    }
}

/// Folds `events` in batches of 4096; with `scrape`, takes a snapshot and encodes it every
/// 15 s of event time. Returns the CPU time spent (this thread).
fn fold(events: &[Event], scrape: bool) -> (Duration, usize, Model) {
    let board = Arc::new(Board::new());
    let reg = registry(Arc::clone(&board), facts());
    let mut model = Model::new(metrics::exporter_model_config());
    let mut next = events.first().map_or(0, Event::ts) + SCRAPE_EVERY_NS;
    let mut scrapes = 0;
    let began = thread_cpu();
    for batch in events.chunks(4096) {
        model.ingest_batch(batch);
        if scrape && batch.last().is_some_and(|e| e.ts() >= next) {
            board.publish(take_snapshot(&model));
            let text = openmetrics_text(&reg).expect("encode");
            std::hint::black_box(text.len());
            scrapes += 1;
            next += SCRAPE_EVERY_NS;
        }
    }
    (thread_cpu() - began, scrapes, model)
}

fn thread_cpu() -> Duration {
    Duration::from_nanos(hostfacts::thread_cpu_ns())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cost_at_64_vcpus() {
    let seconds = 60.0;
    let events = stream(
        host(16, 32, 2, 3_000_000, 10_000, 1_000_000_000, true),
        seconds,
    );
    let (base, _, _) = fold(&events, false);
    let (with, scrapes, _) = fold(&events, true);
    let per_s = |d: Duration| d.as_secs_f64() / seconds;
    println!(
        "cost @ 64 vCPUs / 16 pCPUs, {seconds} s of events ({} events, {:.0}/s):",
        events.len(),
        events.len() as f64 / seconds
    );
    println!(
        "  baseline (model ingest only): {:.3}% of one core",
        per_s(base) * 100.0
    );
    println!(
        "  exporter (ingest + {scrapes} scrapes every 15 s): {:.3}% of one core; the scrapes add {:.4}% (ratio {:.3})",
        per_s(with) * 100.0,
        per_s(with.saturating_sub(base)) * 100.0,
        with.as_secs_f64() / base.as_secs_f64()
    );
}

/// Median and max of `d`, in ms.
fn median_max(d: &mut [Duration]) -> (f64, f64) {
    d.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(d[d.len() / 2]), ms(d[d.len() - 1]))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Scrape target: snapshot + encoding within 50 ms at 512 vCPUs.
const SCRAPE_TARGET_MS: f64 = 50.0;

fn scrape_at_512_vcpus() {
    let events = stream(
        host(64, 256, 2, 3_000_000, 10_000, 1_000_000_000, true),
        3.0,
    );
    let mut model = Model::new(metrics::exporter_model_config());
    model.ingest_batch(&events);
    let board = Arc::new(Board::new());
    let reg = registry(Arc::clone(&board), facts());
    // CPU time of this thread, and wall time: on a shared, loaded host wall time mostly
    // measures the others, so both are shown, with the load average.
    let (mut figures_cpu, mut figures_wall) = (Vec::new(), Vec::new());
    let (mut snap_cpu, mut snap_wall) = (Vec::new(), Vec::new());
    let (mut full_cpu, mut full_wall) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let load_before = load_average();
    for _ in 0..20 {
        // Baseline: the snapshot a report takes (all summaries), as the exporter did before.
        let (t, w) = (thread_cpu(), Instant::now());
        std::hint::black_box(model.snapshot_with(model::SnapshotOptions::figures()));
        figures_cpu.push(thread_cpu() - t);
        figures_wall.push(w.elapsed());
        let (t, w) = (thread_cpu(), Instant::now());
        std::hint::black_box(take_snapshot(&model));
        snap_cpu.push(thread_cpu() - t);
        snap_wall.push(w.elapsed());
        let (t, w) = (thread_cpu(), Instant::now());
        board.publish(take_snapshot(&model));
        let text = openmetrics_text(&reg).expect("encode");
        full_cpu.push(thread_cpu() - t);
        full_wall.push(w.elapsed());
        bytes = text.len();
    }
    let vcpus = take_snapshot(&model).vcpus.len();
    println!(
        "scrape @ {vcpus} vCPUs / 64 pCPUs ({} KiB of OpenMetrics), 20 rounds, load average {load_before} -> {}:",
        bytes / 1024,
        load_average()
    );
    let line = |what: &str, cpu: &mut Vec<Duration>, wall: &mut Vec<Duration>| {
        let ((cm, cx), (wm, wx)) = (median_max(cpu), median_max(wall));
        println!(
            "  {what}: CPU median {cm:.2} ms, max {cx:.2}; wall median {wm:.2} ms, max {wx:.2}"
        );
        (cm, wm)
    };
    let (base, _) = line(
        "baseline, report snapshot (with summaries)",
        &mut figures_cpu,
        &mut figures_wall,
    );
    let (snap, _) = line(
        "exporter snapshot (counters, no summaries)",
        &mut snap_cpu,
        &mut snap_wall,
    );
    let (full, full_wall_median) = line(
        "scrape (exporter snapshot + encode)",
        &mut full_cpu,
        &mut full_wall,
    );
    println!(
        "  exporter snapshot / baseline {:.2}; scrape / baseline {:.2}; target < {SCRAPE_TARGET_MS} ms: CPU {}, wall {} (median)",
        snap / base,
        full / base,
        if full < SCRAPE_TARGET_MS { "met" } else { "missed" },
        if full_wall_median < SCRAPE_TARGET_MS { "met" } else { "missed" },
    );
}

fn memory_with_churn() {
    let hours: u64 = if std::env::var("QUICK").is_ok() {
        2
    } else {
        24
    };
    let segment_ns: u64 = 600_000_000_000;
    let board = Arc::new(Board::new());
    let reg = registry(Arc::clone(&board), facts());
    let mut model = Model::new(metrics::exporter_model_config());
    let mut ts = 1_000_000_000u64;
    let mut next_scrape = ts + SCRAPE_EVERY_NS;
    let mut first_hour_kib = 0;
    let mut first_hour_slots = 0;
    println!("memory over {hours} h of events, 8 VMs x 2 vCPUs replaced every 10 min, 4 pCPUs:");
    for segment in 0..hours * 6 {
        // Long slices keep the event count manageable; churn is what is measured.
        let first_tid = 100_000 + (segment as u32) * 1_000;
        let cfg = host(4, 8, 2, 50_000_000, first_tid, ts, false);
        let pids: Vec<(u32, String)> = (0..8)
            .map(|v| {
                let pid = first_tid + v * 100;
                (pid, format!("vm{pid}"))
            })
            .collect();
        let mut events = stream(cfg, segment_ns as f64 / 1e9);
        ts += segment_ns;
        for (pid, vm) in &pids {
            events.push(model::synth::vm_ended(ts, *pid, vm));
        }
        for batch in events.chunks(4096) {
            model.ingest_batch(batch);
            if batch.last().is_some_and(|e| e.ts() >= next_scrape) {
                board.publish(take_snapshot(&model));
                std::hint::black_box(openmetrics_text(&reg).expect("encode").len());
                next_scrape += SCRAPE_EVERY_NS;
            }
        }
        if (segment + 1) % 6 == 0 {
            let hour = (segment + 1) / 6;
            let kib = rss_kib();
            let slots = model.thread_slots();
            if hour == 1 {
                first_hour_kib = kib;
                first_hour_slots = slots;
            }
            let snap = take_snapshot(&model);
            println!(
                "  hour {hour:>2}: RSS {kib} KiB ({:+} KiB since hour 1), {} threads in the snapshot, {slots} thread slots, {} VM entries, {} threads retired",
                kib as i64 - first_hour_kib as i64,
                snap.vcpus.len(),
                model.vm_entries(),
                snap.health.retired_threads,
            );
            if hour == hours {
                let growth = kib as i64 - first_hour_kib as i64;
                let flat = growth <= FLAT_BOUND_KIB && slots <= first_hour_slots;
                println!(
                    "  hour 1 vs hour {hour}: RSS {first_hour_kib} KiB vs {kib} KiB ({growth:+} KiB; {} threads ended since hour 1), thread slots {first_hour_slots} vs {slots}; flat (growth <= {FLAT_BOUND_KIB} KiB, slots not growing): {}",
                    (hour - 1) * 6 * 16,
                    if flat { "met" } else { "missed" }
                );
            }
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken. ONLY=memory|cost|scrape runs one
    // phase.
    let only = std::env::var("ONLY").ok();
    let run = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    // Memory first, so the other phases' freed heap does not hide its growth in RSS.
    if run("memory") {
        memory_with_churn();
    }
    if run("cost") {
        cost_at_64_vcpus();
    }
    if run("scrape") {
        scrape_at_512_vcpus();
    }
}
