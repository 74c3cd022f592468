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
//! per round (3), `ROUNDS` (6), `TRACK=all` to track every thread instead of the three busy
//! ones. Rounds rotate the attach order (the program attached first pays for cold caches);
//! the summary gives each program's median ns/run and median ratio to bpftrace with the
//! spread. The share of runs that emitted a record is that of the first object.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats};
use probes::loader::{ProbeOptions, Probes};

const BASELINE: &str = "tracepoint:sched:sched_switch { @[pid] = count(); }";

/// The bpftrace child; stopped (by its pid) when dropped.
struct Bpftrace {
    child: Child,
    prog_ids: Vec<u32>,
}

impl Bpftrace {
    fn start() -> Result<Bpftrace, String> {
        let before = program_ids();
        let child = Command::new("bpftrace")
            .args(["-e", BASELINE])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run bpftrace: {e} (apt-get install bpftrace)"))?;
        let mut bt = Bpftrace {
            child,
            prog_ids: Vec::new(),
        };
        let stdout = bt.child.stdout.take().ok_or("bpftrace has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with("Attaching") {
            return Err(format!("bpftrace did not attach: {line:?}"));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while bt.prog_ids.is_empty() {
            if Instant::now() > deadline {
                return Err("cannot find bpftrace's program".into());
            }
            thread::sleep(Duration::from_millis(50));
            bt.prog_ids = program_ids()
                .into_iter()
                .filter(|id| !before.contains(id))
                .collect();
        }
        Ok(bt)
    }

    /// (run_time_ns, run_count) summed over bpftrace's programs.
    fn stats(&self) -> (u64, u64) {
        loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| self.prog_ids.contains(&p.id()))
            .fold((0, 0), |(t, n), p| {
                (t + p.run_time().as_nanos() as u64, n + p.run_count())
            })
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

fn program_ids() -> Vec<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

fn all_tids() -> Vec<u32> {
    let mut tids = Vec::new();
    for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(tasks) = std::fs::read_dir(proc.path().join("task")) else {
            continue;
        };
        tids.extend(
            tasks
                .flatten()
                .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok()),
        );
    }
    tids
}

/// (run_time_ns, run_count) of a build's sched_switch program.
fn switch_stats(p: &Probes) -> (u64, u64) {
    p.program_stats()
        .into_iter()
        .find(|s| s.event == "sched:sched_switch")
        .map_or((0, 0), |s| (s.run_time_ns, s.run_count))
}

/// Median of a non-empty slice (sorts it).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
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

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let (stop, tx) = (stop.clone(), tx.clone());
            thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tx.send(unsafe { libc::gettid() } as u32);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let spin_tids: Vec<u32> = rx.iter().take(3).collect();
    let result = measure(&builds, &spin_tids, track_all, secs, rounds);
    stop.store(true, Ordering::Relaxed);
    for h in spinners {
        let _ = h.join();
    }
    result
}

fn measure(
    builds: &[Build],
    spin_tids: &[u32],
    track_all: bool,
    secs: u64,
    rounds: usize,
) -> Result<(), String> {
    // Slot builds.len() is bpftrace.
    let n = builds.len() + 1;
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut shares = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..n).collect();
        order.rotate_left(round % n);
        if (round / n) % 2 == 1 {
            order.reverse();
        }
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
                spin_tids.to_vec()
            };
            for t in tids {
                // Threads may exit between the listing and here.
                let _ = p.track(t);
            }
            loaded[i] = Some(p);
        }
        let baseline = baseline.ok_or("bpftrace not started")?;
        let mut loaded: Vec<Probes> = loaded.into_iter().flatten().collect();
        let mut events = Vec::new();
        for p in &mut loaded {
            p.poll(&mut events, Duration::ZERO)
                .map_err(|e| e.to_string())?;
        }
        events.clear();
        let ours0: Vec<(u64, u64)> = loaded.iter().map(switch_stats).collect();
        let base0 = baseline.stats();
        let until = Instant::now() + Duration::from_secs(secs);
        let mut records = 0u64;
        while Instant::now() < until {
            thread::sleep(Duration::from_millis(50));
            for (k, p) in loaded.iter_mut().enumerate() {
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
        let ours1: Vec<(u64, u64)> = loaded.iter().map(switch_stats).collect();
        let base1 = baseline.stats();
        drop(baseline);
        let lost: Vec<u64> = loaded.iter().map(Probes::lost_total).collect();
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
        for (i, b) in builds.iter().enumerate() {
            let dn = ours1[i].1.saturating_sub(ours0[i].1).max(1);
            let v = ours1[i].0.saturating_sub(ours0[i].0) as f64 / dn as f64;
            ns[i].push(v);
            ratio[i].push(v / base_ns);
            line += &format!(" | {} {v:.0} ({:.2})", b.name, v / base_ns);
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
    }
    Ok(())
}
