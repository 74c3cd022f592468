//! A/B cost comparison of builds of the eBPF object: every build given is loaded at once,
//! beside the bpftrace baseline of `benches/bpf_cost.rs`, so their `sched_switch` programs
//! run on the very same events and host load. Useful where the bench's absolute figures move
//! by tens of percent from one round to the next (a shared 2-CPU machine).
//!
//! ```text
//! clang-19 -O2 -g -target bpf -D__TARGET_ARCH_x86 -I ebpf -c variant.bpf.c -o /tmp/b.o
//! cargo run --release -p probes --example bpf_ab -- /tmp/a.o /tmp/b.o@262144
//! ```
//! Root. Each argument is an object file, optionally `@RING_BYTES`. Environment: `SECS`
//! per round (3), `ROUNDS` (6), `TRACK=all` to track every thread instead of the three spinning
//! vCPUs of the bundled VMM (the bench's workload), `SOLO=1` to load one build per round
//! beside bpftrace (cycling through the builds) instead of all at once: builds share the
//! cold cache lines of the tracepoint path, so the first attached warms them for the others,
//! and only solo rounds show what one build costs on its own, as the bench measures it.
//! `WORKLOAD=wakeups` replaces the vCPUs with the bench's "wakeups" workload (two threads
//! passing a byte over a socket pair), and `PROGRAM=sched:sched_wakeup` (any attached event) compares
//! that program instead of sched_switch; the baseline stays bpftrace's sched_switch counter. Rounds rotate the attach order (the program attached first pays for cold caches);
//! the summary gives each program's median ns/run and median ratio to bpftrace with the
//! spread. The share of runs that emitted a record is that of the first object.

// Shared with the benches: parts of it are theirs only.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod support;

use std::thread;
use std::time::{Duration, Instant};

use aya::sys::{enable_stats, Stats};
use probes::loader::{ProbeOptions, Probes};
use support::{all_tids, median, Bpftrace, PingPong, Vcpus};

/// (run_time_ns, run_count) of the measured program of a build (`PROGRAM`, by default
/// sched_switch's).
fn switch_stats(p: &Probes) -> (u64, u64) {
    let event = std::env::var("PROGRAM").unwrap_or_else(|_| "sched:sched_switch".into());
    p.program_stats()
        .into_iter()
        .find(|s| s.event == event)
        .map_or((0, 0), |s| (s.run_time_ns, s.run_count))
}

struct Build {
    name: String,
    object: Vec<u8>,
    ring_bytes: u32,
}

fn parse_build(arg: &str) -> Result<Build, String> {
    let default_ring = ProbeOptions::default().ring_bytes;
    let (path, ring_bytes) = match arg.split_once('@') {
        Some((p, r)) => (
            p,
            r.parse()
                .map_err(|_| format!("{arg}: ring size {r:?} is not a number"))?,
        ),
        None => (arg, default_ring),
    };
    let object = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut name = std::path::Path::new(path)
        .file_stem()
        .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned());
    if ring_bytes != default_ring {
        name += &format!("@{}k", ring_bytes >> 10);
    }
    Ok(Build {
        name,
        object,
        ring_bytes,
    })
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let builds = std::env::args()
        .skip(1)
        .map(|a| parse_build(&a))
        .collect::<Result<Vec<_>, _>>()?;
    if builds.is_empty() {
        return Err("usage: bpf_ab OBJECT[@RING_BYTES]... (root)".into());
    }
    let secs = env_num("SECS", 3);
    let rounds = env_num("ROUNDS", 6) as usize;
    let track_all = std::env::var("TRACK").is_ok_and(|t| t == "all");
    // Run-time stats stay on only while this fd is open.
    let _stats =
        enable_stats(Stats::RunTime).map_err(|e| format!("cannot enable BPF stats: {e}"))?;

    let solo = std::env::var("SOLO").is_ok_and(|v| v == "1");
    if std::env::var("WORKLOAD").is_ok_and(|w| w == "wakeups") {
        // The bench's "wakeups" phase: two threads passing a byte over a socket pair.
        let pp = PingPong::start()?;
        return measure(&builds, &pp.tids, track_all, solo, secs, rounds);
    }
    // The bench's workload: three spinning vCPUs of the bundled VMM.
    let vcpus = Vcpus::start(3)?;
    let result = measure(&builds, &vcpus.tids, track_all, solo, secs, rounds);
    drop(vcpus);
    result
}

/// Attach order of a round; index `builds` is bpftrace. All builds at once: rotated each
/// round and reversed every other cycle, so each takes each position. Solo: one build per
/// round beside bpftrace, cycling through the builds, each order in turn.
fn attach_order(round: usize, builds: usize, solo: bool) -> Vec<usize> {
    let mut order: Vec<usize> = if solo {
        vec![round % builds, builds]
    } else {
        (0..=builds).collect()
    };
    let cycle = if solo { builds } else { builds + 1 };
    if !solo {
        order.rotate_left(round % cycle);
    }
    if (round / cycle) % 2 == 1 {
        order.reverse();
    }
    order
}

fn measure(
    builds: &[Build],
    workload_tids: &[u32],
    track_all: bool,
    solo: bool,
    secs: u64,
    rounds: usize,
) -> Result<(), String> {
    // Slot builds.len() is bpftrace.
    let n = builds.len() + 1;
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Per build: ratios of the rounds it was attached before bpftrace, and after.
    let mut by_order: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; n];
    let mut shares = Vec::new();
    for round in 0..rounds {
        let order = attach_order(round, builds.len(), solo);
        let mut loaded: Vec<Option<Probes>> = builds.iter().map(|_| None).collect();
        let mut baseline = None;
        for &i in &order {
            if i == builds.len() {
                baseline = Some(Bpftrace::start()?);
                continue;
            }
            let opts = ProbeOptions {
                kvm: false,
                cross_calls: false,
                ring_bytes: builds[i].ring_bytes,
                ..ProbeOptions::default()
            };
            let mut p = Probes::load_object(opts, &builds[i].object)
                .map_err(|e| format!("{}: {e}", builds[i].name))?;
            let tids = if track_all {
                all_tids()
            } else {
                workload_tids.to_vec()
            };
            for t in tids {
                // Threads may exit between the listing and here.
                let _ = p.track(t);
            }
            loaded[i] = Some(p);
        }
        let baseline = baseline.ok_or("bpftrace not started")?;
        // (build index, probes) of the builds loaded this round.
        let mut loaded: Vec<(usize, Probes)> = loaded
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p?)))
            .collect();
        let mut events = Vec::new();
        for (_, p) in &mut loaded {
            p.poll(&mut events, Duration::ZERO)
                .map_err(|e| e.to_string())?;
        }
        events.clear();
        let ours0: Vec<(u64, u64)> = loaded.iter().map(|(_, p)| switch_stats(p)).collect();
        let base0 = baseline.stats();
        let until = Instant::now() + Duration::from_secs(secs);
        let mut records = 0u64;
        while Instant::now() < until {
            // Often enough for the per-CPU switch rings (9 216 records) at ~200k switches/s.
            thread::sleep(Duration::from_millis(10));
            for (k, (_, p)) in loaded.iter_mut().enumerate() {
                p.poll(&mut events, Duration::ZERO)
                    .map_err(|e| e.to_string())?;
                if k == 0 {
                    records += events
                        .iter()
                        .filter(|e| matches!(e, model::Event::SchedSwitch(_)))
                        .count() as u64;
                }
                events.clear();
            }
        }
        let ours1: Vec<(u64, u64)> = loaded.iter().map(|(_, p)| switch_stats(p)).collect();
        let base1 = baseline.stats();
        drop(baseline);
        let lost: Vec<u64> = loaded.iter().map(|(_, p)| p.lost_total()).collect();
        let measured: Vec<usize> = loaded.iter().map(|(i, _)| *i).collect();
        drop(loaded);

        let runs = base1.1.saturating_sub(base0.1);
        if runs == 0 {
            println!("round {round}: bpftrace saw no runs, skipped");
            continue;
        }
        let base_ns = base1.0.saturating_sub(base0.0) as f64 / runs as f64;
        let share = records as f64 / runs as f64;
        shares.push(share);
        ns[n - 1].push(base_ns);
        ratio[n - 1].push(1.0);
        let mut line = format!(
            "round {round} order {order:?}: {runs} runs, {:.0}% with a record; bpftrace {base_ns:.0} ns",
            share * 100.0
        );
        for (k, &i) in measured.iter().enumerate() {
            let dn = ours1[k].1.saturating_sub(ours0[k].1).max(1);
            let v = ours1[k].0.saturating_sub(ours0[k].0) as f64 / dn as f64;
            ns[i].push(v);
            ratio[i].push(v / base_ns);
            let pos = |x: usize| order.iter().position(|&o| o == x);
            let after = usize::from(pos(i) > pos(builds.len()));
            by_order[i][after].push(v / base_ns);
            line += &format!(" | {} {v:.0} ({:.2})", builds[i].name, v / base_ns);
        }
        println!("{line}; lost {lost:?}");
    }
    if shares.is_empty() {
        return Err("no round measured anything".into());
    }
    println!(
        "median share of runs with a record: {:.0}%",
        median(&mut shares) * 100.0
    );
    for i in 0..n {
        if ns[i].is_empty() {
            continue;
        }
        let name = builds.get(i).map_or("bpftrace", |b| b.name.as_str());
        let (lo, hi) = ratio[i]
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &r| {
                (l.min(r), h.max(r))
            });
        println!(
            "{name:<24} median {:>6.0} ns/run, ratio to bpftrace: median {:.2} [{lo:.2}..{hi:.2}]",
            median(&mut ns[i]),
            median(&mut ratio[i])
        );
        for (half, when) in by_order[i].iter_mut().zip(["before", "after"]) {
            if !half.is_empty() {
                println!(
                    "{:<24} attached {when} bpftrace: median ratio {:.2} ({} rounds)",
                    "",
                    median(half),
                    half.len()
                );
            }
        }
    }
    Ok(())
}
