//! Who else used the CPUs while a test measured scheduling, by autogroup.
//!
//! With `CONFIG_SCHED_AUTOGROUP=y` and `kernel.sched_autogroup_enabled=1` every session is a
//! task group: the kernel first shares each pCPU among the groups' entities, then among the
//! tasks of a group. A test that compares the recorded host with a model without task
//! groups has to know how much CPU time tasks outside its own group took meanwhile.
//!
//! A thread reads every process every [`PERIOD`]: its CPU time, the time of the children it
//! reaped, its parent and its autogroup. Between two reads a process's own growth counts for
//! its group; a child that ended meanwhile lands in its reaper's reaped time, of which only
//! the part not seen before counts (for the reaper's group: a short-lived compiler run is
//! its build's). Whatever `/proc/stat`'s busy time has beyond the groups' sum is
//! "unattributed" (a reaper that does not wait, rounding to ticks).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hostfacts::process::{self, ProcessCpu};

/// How often every process is read: a child's CPU time since the last read is all that can
/// land in another group's figure (when its reaper is there).
const PERIOD: Duration = Duration::from_millis(100);

/// The root task group (kernel threads, init): `/proc/<pid>/autogroup` is empty there.
const ROOT_GROUP: &str = "(root)";

struct Proc {
    group: String,
    cpu: ProcessCpu,
}

/// Every process at one instant, by (pid, start time).
struct Sample {
    procs: BTreeMap<(u32, u64), Proc>,
    by_pid: BTreeMap<u32, (u32, u64)>,
    busy_ticks: u64,
}

impl Sample {
    fn take() -> Sample {
        let mut procs = BTreeMap::new();
        let mut by_pid = BTreeMap::new();
        for pid in process::pids().unwrap_or_default() {
            let (Some(group), Some(cpu)) = (process::autogroup(pid), ProcessCpu::read(pid)) else {
                continue;
            };
            let group = if group.is_empty() {
                ROOT_GROUP.to_string()
            } else {
                group
            };
            let key = (pid, cpu.start_ticks);
            by_pid.insert(pid, key);
            procs.insert(key, Proc { group, cpu });
        }
        Sample {
            procs,
            by_pid,
            busy_ticks: hostfacts::system::task_busy_ticks().unwrap_or(0),
        }
    }
}

/// CPU ticks per group, and per group its busiest process's name.
#[derive(Default)]
struct Tally {
    ticks: BTreeMap<String, i64>,
    per_proc: BTreeMap<(u32, u64), (String, String, i64)>,
}

impl Tally {
    fn add(&mut self, group: &str, ticks: i64) {
        *self.ticks.entry(group.to_string()).or_default() += ticks;
    }

    /// What happened between `prev` and `now`.
    fn interval(&mut self, prev: &Sample, now: &Sample) {
        for (key, p) in &now.procs {
            let (own, reaped) = match prev.procs.get(key) {
                Some(q) => (
                    p.cpu.own_ticks as i64 - q.cpu.own_ticks as i64,
                    p.cpu.reaped_ticks as i64 - q.cpu.reaped_ticks as i64,
                ),
                // Started since: all its time is in the window.
                None => (p.cpu.own_ticks as i64, p.cpu.reaped_ticks as i64),
            };
            self.add(&p.group, own + reaped);
            let e = self
                .per_proc
                .entry(*key)
                .or_insert_with(|| (p.group.clone(), p.cpu.comm.clone(), 0));
            e.2 += own;
        }
        // A process that ended: its whole time landed in its reaper's reaped time (counted
        // above), of which what it had at the last read was counted before.
        for (key, q) in &prev.procs {
            if now.procs.contains_key(key) {
                continue;
            }
            let seen = (q.cpu.own_ticks + q.cpu.reaped_ticks) as i64;
            let reaper = reaper(prev, now, q.cpu.ppid);
            let group = reaper.map_or(ROOT_GROUP, |p| p.group.as_str());
            self.add(group, -seen);
        }
    }
}

/// The nearest ancestor still alive in `now` (init, which reaps orphans, when none is).
fn reaper<'a>(prev: &Sample, now: &'a Sample, mut ppid: u32) -> Option<&'a Proc> {
    for _ in 0..64 {
        if let Some(p) = now.by_pid.get(&ppid).and_then(|k| now.procs.get(k)) {
            return Some(p);
        }
        ppid = prev
            .by_pid
            .get(&ppid)
            .and_then(|k| prev.procs.get(k))
            .map(|p| p.cpu.ppid)?;
    }
    None
}

/// A window being measured: [`AutogroupLoad::start`] before, [`AutogroupLoad::finish`] after.
pub struct AutogroupLoad {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<(Tally, u64)>,
    started: Instant,
}

/// CPU time by autogroup over the window.
#[derive(Debug)]
pub struct LoadReport {
    pub seconds: f64,
    pub pcpus: usize,
    /// The autogroup of this process (and the children it starts).
    pub own_group: String,
    pub own_s: f64,
    /// Other groups with CPU time in the window, most first: (group, its busiest process's
    /// name, seconds).
    pub others: Vec<(String, String, f64)>,
    /// `/proc/stat`'s busy time beyond the groups' sum, seconds (may be slightly negative).
    pub unattributed_s: f64,
}

impl AutogroupLoad {
    pub fn start() -> AutogroupLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let first = Sample::take();
        let sampler = std::thread::spawn(move || {
            let mut tally = Tally::default();
            let busy_from = first.busy_ticks;
            let mut prev = first;
            loop {
                let last = stopping.load(Ordering::Relaxed);
                if !last {
                    std::thread::sleep(PERIOD);
                }
                let now = Sample::take();
                tally.interval(&prev, &now);
                prev = now;
                if last {
                    return (tally, prev.busy_ticks.saturating_sub(busy_from));
                }
            }
        });
        AutogroupLoad {
            stop,
            sampler,
            started: Instant::now(),
        }
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let (tally, busy) = self.sampler.join().expect("the load sampler panicked");
        let seconds = self.started.elapsed().as_secs_f64();
        let hz = hostfacts::clock_ticks_per_second() as f64;
        let own_group = process::autogroup(std::process::id())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| ROOT_GROUP.to_string());
        let mut busiest: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
        for (group, comm, ticks) in tally.per_proc.values() {
            let b = busiest.entry(group).or_insert((i64::MIN, ""));
            if *ticks > b.0 {
                *b = (*ticks, comm);
            }
        }
        let mut others: Vec<(String, String, f64)> = tally
            .ticks
            .iter()
            .filter(|(g, t)| **g != own_group && **t > 0)
            .map(|(g, t)| {
                let name = busiest.get(g.as_str()).map_or("", |b| b.1).to_string();
                (g.clone(), name, *t as f64 / hz)
            })
            .collect();
        others.sort_by(|a, b| b.2.total_cmp(&a.2));
        let sum: i64 = tally.ticks.values().sum();
        LoadReport {
            seconds,
            pcpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            own_s: tally.ticks.get(&own_group).copied().unwrap_or(0) as f64 / hz,
            own_group,
            others,
            unattributed_s: (busy as i64 - sum) as f64 / hz,
        }
    }
}

impl LoadReport {
    /// CPU time of other autogroups, seconds.
    pub fn others_s(&self) -> f64 {
        self.others.iter().map(|o| o.2).sum()
    }

    /// `s` as a share of the window's pCPU time.
    pub fn of_capacity(&self, s: f64) -> f64 {
        s / (self.seconds * self.pcpus as f64)
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU time in the {:.1} s window on {} pCPUs: own autogroup {} {:.2} s; other autogroups {:.2} s ({:.1}% of the pCPUs)",
            self.seconds,
            self.pcpus,
            self.own_group,
            self.own_s,
            self.others_s(),
            100.0 * self.of_capacity(self.others_s()),
        )?;
        for (g, name, s) in self.others.iter().take(5) {
            write!(f, ", {g} ({name}) {s:.2} s")?;
        }
        write!(
            f,
            "; unattributed {:.2} s ({:.1}%)",
            self.unattributed_s,
            100.0 * self.of_capacity(self.unattributed_s)
        )
    }
}
