//! Switch storms: does the reader keep up, and at what CPU cost? Issue #15, goal 1: 0 lost
//! records at 500 k tracked switches/s host-wide for 30 s, the reader under 10% of one core.
//!
//! `cargo bench -p probes --bench switch_storm` (root). Two workloads, each with two tracked
//! threads pinned to every online CPU, so that nearly every switch on the host is a tracked
//! one: "ping-pong", the threads pass a byte over a socket pair (`support::PingPong`: every
//! switch follows a wakeup, whose record goes to the shared ring), and "yield", they hand the
//! CPU to each other with `sched_yield` (`support::Yielders`: switches with no wakeup
//! records, as when busy vCPUs preempt each other). One thread reads the probes as
//! `kvmscope` does (`Probes::poll` with a 100 ms timeout) for `KVMSCOPE_BENCH_STORM_SECS`
//! (default 30) per round, twice per workload: with the switch rings waking the reader (the
//! default), and as the baseline without (`ProbeOptions::switch_wakeups = false`: switch
//! records are read only when the shared ring's `wakeup_bytes` or the timeout wakes the
//! reader). For each it
//! prints the switch rate (the kernel's `nr_switches` of the threads over the round, the
//! oracle: each is one record), the records received and lost, the reader thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) as a share of one core, and how often the switch rings woke it.

// Shared with bpf_cost, which uses the rest of it.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use model::Event;
use probes::loader::{ProbeOptions, Probes};
use support::{online_cpus, PingPong, Yielders};

/// The kernel's count of `tid`'s switches (`nr_switches` in its sched file).
fn nr_switches(tid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "nr_switches").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

struct Storm {
    switches_per_s: f64,
    received: u64,
    lost: u64,
    reader_core_share: f64,
    switch_wakeups: u64,
}

#[derive(Clone, Copy)]
enum Workload {
    PingPong,
    Yield,
}

/// The workload's threads on every online CPU (kept running until dropped).
enum Running {
    PingPong(Vec<PingPong>),
    Yield(Vec<Yielders>),
}

impl Running {
    fn start(workload: Workload) -> Result<Running, String> {
        let cpus = online_cpus()?.into_iter();
        Ok(match workload {
            Workload::PingPong => {
                Running::PingPong(cpus.map(PingPong::start_on).collect::<Result<_, _>>()?)
            }
            Workload::Yield => {
                Running::Yield(cpus.map(Yielders::start_on).collect::<Result<_, _>>()?)
            }
        })
    }

    fn tids(&self) -> Vec<u32> {
        match self {
            Running::PingPong(p) => p.iter().flat_map(|p| p.tids.clone()).collect(),
            Running::Yield(y) => y.iter().flat_map(|y| y.tids.clone()).collect(),
        }
    }
}

fn storm(workload: Workload, switch_wakeups: bool, secs: u64) -> Result<Storm, String> {
    let opts = ProbeOptions {
        switch_wakeups,
        ..ProbeOptions::default()
    };
    let mut probes = Probes::load(opts).map_err(|e| e.to_string())?;
    let running = Running::start(workload)?;
    let tids = running.tids();
    for &tid in &tids {
        probes.track(tid).map_err(|e| e.to_string())?;
    }
    let mut events = Vec::new();
    probes
        .poll(&mut events, Duration::ZERO)
        .map_err(|e| e.to_string())?;
    events.clear();
    let (lost0, wakeups0) = (probes.lost_total(), probes.switch_wakeups());
    let kernel0: u64 = tids.iter().map(|&t| nr_switches(t)).sum();
    let (cpu0, t0) = (hostfacts::thread_cpu_ns(), Instant::now());
    let mut received = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        probes
            .poll(&mut events, Duration::from_millis(100))
            .map_err(|e| e.to_string())?;
        received += events
            .iter()
            .filter(|e| matches!(e, Event::SchedSwitch(_)))
            .count() as u64;
        events.clear();
    }
    let kernel = tids.iter().map(|&t| nr_switches(t)).sum::<u64>() - kernel0;
    let (cpu, wall) = (hostfacts::thread_cpu_ns() - cpu0, t0.elapsed());
    drop(running);
    Ok(Storm {
        switches_per_s: kernel as f64 / wall.as_secs_f64(),
        received,
        lost: probes.lost_total() - lost0,
        reader_core_share: cpu as f64 / wall.as_nanos() as f64,
        switch_wakeups: probes.switch_wakeups() - wakeups0,
    })
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: only bench for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if hostfacts::euid() != 0 {
        eprintln!("skipped: the switch storm bench needs root");
        return;
    }
    let secs = std::env::var("KVMSCOPE_BENCH_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut results = Vec::new();
    let rounds = [
        ("ping-pong, rings wake the reader", Workload::PingPong, true),
        (
            "ping-pong, baseline (no wakeups)",
            Workload::PingPong,
            false,
        ),
        ("yield, rings wake the reader", Workload::Yield, true),
        ("yield, baseline (no wakeups)", Workload::Yield, false),
    ];
    for (name, workload, wake) in rounds {
        match storm(workload, wake, secs) {
            Ok(s) => results.push((name, s)),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("switch storms: a pair of tracked threads per CPU, {secs} s per round, reader polls every 100 ms");
    println!(
        "{:<34} {:>12} {:>12} {:>10} {:>12} {:>10}",
        "round", "switches/s", "received", "lost", "reader core", "wakeups"
    );
    for (name, s) in &results {
        println!(
            "{:<34} {:>12.0} {:>12} {:>10} {:>11.1}% {:>10}",
            name,
            s.switches_per_s,
            s.received,
            s.lost,
            s.reader_core_share * 100.0,
            s.switch_wakeups
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    for (name, s) in results.iter().step_by(2) {
        println!(
            "goal 1, {name} (0 lost at >= 500 k switches/s, reader < 10% of a core): {} lost at {:.0} k/s ({}), reader {:.1}% ({})",
            s.lost,
            s.switches_per_s / 1e3,
            verdict(s.lost == 0 && s.switches_per_s >= 500e3),
            s.reader_core_share * 100.0,
            verdict(s.reader_core_share < 0.10),
        );
    }
}
