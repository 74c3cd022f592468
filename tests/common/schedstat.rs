//! Reading the kernel's own per-thread scheduling figures (`/proc/<pid>/task/<tid>/schedstat`
//! and `sched`) for the tests that compare kvmscope against them over the same interval.

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use hostfacts::monotonic_ns;

/// CLOCK_REALTIME now, ns: the clock of Prometheus' sample timestamps.
pub fn realtime_ns() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as u64
}

/// One reading of a thread's kernel counters (`ts` on the clock the reader chose).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub ts: u64,
    pub run: u64,
    pub wait: u64,
    pub migrations: u64,
}

/// schedstat (run, run-queue wait) and `se.nr_migrations` of a thread, stamped CLOCK_MONOTONIC.
pub fn read_sample(pid: u32, tid: u32) -> Option<Sample> {
    read_sample_at(pid, tid, monotonic_ns())
}

/// The same, stamped `ts`.
pub fn read_sample_at(pid: u32, tid: u32, ts: u64) -> Option<Sample> {
    let ss = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let mut it = ss.split_whitespace().map(|v| v.parse::<u64>().ok());
    let run = it.next()??;
    let wait = it.next()??;
    let sched = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/sched")).ok()?;
    let migrations = sched
        .lines()
        .find(|l| l.trim_start().starts_with("se.nr_migrations"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse().ok())?;
    Some(Sample {
        ts,
        run,
        wait,
        migrations,
    })
}

/// Reads every thread of `tids` every `period`, stamped by `clock`, until `stop` is set;
/// the join handle gives the readings per thread, in `tids` order.
pub fn sample_threads(
    pid: u32,
    tids: Vec<u32>,
    stop: Arc<AtomicBool>,
    period: Duration,
    clock: fn() -> u64,
) -> JoinHandle<Vec<Vec<Sample>>> {
    thread::spawn(move || {
        let mut per: Vec<Vec<Sample>> = vec![Vec::new(); tids.len()];
        while !stop.load(Ordering::Relaxed) {
            for (i, &tid) in tids.iter().enumerate() {
                if let Some(s) = read_sample_at(pid, tid, clock()) {
                    per[i].push(s);
                }
            }
            thread::sleep(period);
        }
        per
    })
}

/// Linear interpolation of the kernel counters at `at`.
pub fn at(samples: &[Sample], at: u64) -> (f64, f64) {
    let i = samples.partition_point(|s| s.ts <= at);
    let (a, b) = match (
        i.checked_sub(1).and_then(|j| samples.get(j)),
        samples.get(i),
    ) {
        (Some(a), Some(b)) => (*a, *b),
        (Some(a), None) => (*a, *a),
        (None, Some(b)) => (*b, *b),
        (None, None) => panic!("no samples"),
    };
    let f = if b.ts > a.ts {
        (at - a.ts) as f64 / (b.ts - a.ts) as f64
    } else {
        0.0
    };
    let lerp = |x: u64, y: u64| x as f64 + (y as f64 - x as f64) * f.clamp(0.0, 1.0);
    (lerp(a.run, b.run), lerp(a.wait, b.wait))
}

/// The largest run-queue wait one thread's samples grew by between two samples that touch
/// `[at - around, at + around]`: at an edge of a compared interval one wait can be in one
/// side's figure and not the other's (the kernel adds a whole wait at the switch-in that ends
/// it, and the samples are interpolated), so it is the slack an edge may cost.
pub fn edge_wait_step(samples: &[Sample], at: u64, around: u64) -> f64 {
    samples
        .windows(2)
        .filter(|w| w[1].ts >= at.saturating_sub(around) && w[0].ts <= at + around)
        .map(|w| w[1].wait.saturating_sub(w[0].wait))
        .max()
        .unwrap_or(0) as f64
}

/// The bundled VMM's vCPU threads of `pid` (named `vm<V>-vcpu<C>`), sorted.
pub fn vcpu_tids(pid: u32) -> Vec<u32> {
    let mut tids = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            if comm.trim().contains("-vcpu") {
                tids.push(tid);
            }
        }
    }
    tids.sort();
    tids
}

/// Kills and reaps a child process when dropped (also when a test panics).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
