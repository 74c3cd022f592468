//! Demand: what each tracked thread asked of the CPUs, independent of how it was served.
//!
//! For a scheduler simulation the recorded schedule itself is the answer to be replaced; what
//! carries over is the demand behind it. Per thread: its CPU bursts (task-clock time from
//! becoming runnable until it sleeps by itself — a preemption splits a burst but does not
//! end it), the sleeps between them (voluntary switch-out to wakeup), its weight and nice, the
//! pCPUs it may use (its affinity over time where the recording has it, else the pCPUs it
//! was seen on) and its VM. Per pCPU: the stretches untracked tasks ran, as
//! background load. The same fold also times each wake-to-run latency, so the recorded and a
//! simulated run are measured by one rule.
//!
//! The fold walks each thread through the same states as [`crate::Model`] (unknown, running,
//! waiting, sleeping, exited) from the same events in timestamp order (its own reorder window
//! of the model's width); when the model exposes its transitions as an API, this becomes a
//! consumer of them instead of a second walk.

use serde::{Deserialize, Serialize};

use crate::latency::Latency;
use crate::reorder::Reorder;
use crate::{nice_to_weight, Comm, Event, ModelConfig, Percentiles, SchedSwitch, Wakeup};

/// One CPU burst and the sleep that followed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    /// CPU time wanted, ns (task clock where switches carry it, else wall time on CPU).
    pub run_ns: u64,
    /// Sleep after the burst, ns; `None` when the thread did not wake again before the
    /// observation ended (or the burst was cut by the end).
    pub sleep_ns: Option<u64>,
}

/// What one thread asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadDemand {
    pub tid: u32,
    pub pid: u32,
    pub comm: Comm,
    /// VM name; empty for background load.
    pub vm: String,
    pub vcpu: Option<u32>,
    pub nice: i32,
    /// Scheduler weight (textbook scale, nice 0 = 1024): the kernel's, where switches carry it.
    pub weight: u32,
    /// pCPUs the thread ran or queued on, ascending: where the recording has no affinity
    /// for it (older files, other sources), this stands for it (a pinned thread is seen on
    /// its pCPU only).
    pub allowed: Vec<u32>,
    /// Its affinity over time, from the recording's `Affinity` events, oldest first: each
    /// entry holds from its time (ns since the demand's start) to the next. Empty when the
    /// recording has none; `allowed` then stands for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinity: Vec<AffinitySpan>,
    /// pCPU of its first appearance.
    pub first_cpu: u32,
    /// When its first burst became runnable, ns since the demand's start.
    pub first_wake_ns: u64,
    pub bursts: Vec<Burst>,
    /// True for the per-pCPU stand-in of untracked tasks.
    pub background: bool,
    /// Wake-to-run latency as served (wakeup to the next switch-in), ns.
    pub wake_to_run: Percentiles,
}

/// The pCPUs a thread may use from `at_ns` (since the demand's start) on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinitySpan {
    pub at_ns: u64,
    /// Ascending.
    pub cpus: Vec<u32>,
}

impl ThreadDemand {
    /// Total CPU time wanted, ns.
    pub fn run_ns(&self) -> u64 {
        self.bursts.iter().map(|b| b.run_ns).sum()
    }
}

/// Everything a simulation replays.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Demand {
    /// First and last event timestamps, ns.
    pub start: u64,
    pub end: u64,
    /// pCPUs seen (highest CPU number + 1), at least the host's count when known.
    pub pcpus: u32,
    /// Tracked threads by tid, then the background stand-ins by pCPU.
    pub threads: Vec<ThreadDemand>,
    /// Events the recording says were lost: the demand around them is uncertain.
    pub lost_events: u64,
    /// Events older than the reorder window, folded in at the time of the newest one.
    pub out_of_order: u64,
}

impl Demand {
    pub fn span_ns(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Tracked (non-background) threads.
    pub fn tracked(&self) -> impl Iterator<Item = &ThreadDemand> {
        self.threads.iter().filter(|t| !t.background)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unknown,
    Running,
    Waiting,
    Sleeping,
    Exited,
}

struct Thread {
    demand: ThreadDemand,
    state: State,
    since: u64,
    first_seen: u64,
    woke: bool,
    run_acc: u64,
    in_sum_exec: Option<u64>,
    /// `sum_exec_runtime` at its last switch-out: what it ran across a missed switch-in.
    out_sum_exec: Option<u64>,
    cpus: u128,
    wake_hist: Latency,
}

/// Background stand-in of one pCPU: stretches of untracked tasks on it.
#[derive(Default)]
struct Background {
    since: Option<u64>,
    first: Option<u64>,
    bursts: Vec<Burst>,
    last_end: u64,
}

impl Background {
    /// The untracked stretch open on this pCPU (if any) ends at `ts`.
    fn close(&mut self, ts: u64) {
        let Some(from) = self.since.take() else {
            return;
        };
        if ts <= from {
            return;
        }
        match self.bursts.last_mut() {
            Some(last) => last.sleep_ns = Some(from.saturating_sub(self.last_end)),
            None => self.first = Some(from),
        }
        self.bursts.push(Burst {
            run_ns: ts - from,
            sleep_ns: None,
        });
        self.last_end = ts;
    }
}

/// Folds events into [`Demand`]. Feed it with [`DemandFold::ingest`], then [`DemandFold::finish`].
pub struct DemandFold {
    reorder: Reorder,
    now: u64,
    start: Option<u64>,
    threads: Vec<Thread>,
    by_tid: rustc_hash::FxHashMap<u32, usize>,
    cpus: Vec<Background>,
    min_pcpus: u32,
    lost: u64,
    out_of_order: u64,
}

impl Default for DemandFold {
    fn default() -> Self {
        DemandFold::new(ModelConfig::report().reorder_window_ns)
    }
}

/// CPU numbers above this are malformed (the model's bound too).
const MAX_CPUS: u32 = 4096;

impl DemandFold {
    pub fn new(reorder_window_ns: u64) -> Self {
        DemandFold {
            reorder: Reorder::new(reorder_window_ns),
            now: 0,
            start: None,
            threads: Vec::new(),
            by_tid: Default::default(),
            cpus: Vec::new(),
            min_pcpus: 0,
            lost: 0,
            out_of_order: 0,
        }
    }

    /// The host's CPU count, so idle pCPUs that never show up in events still count.
    pub fn with_pcpus(mut self, n: u32) -> Self {
        self.min_pcpus = n.min(MAX_CPUS);
        self
    }

    pub fn ingest(&mut self, ev: &Event) {
        if matches!(ev, Event::GuestGap(_)) {
            return;
        }
        if ev.ts() < self.now {
            self.out_of_order += 1;
            let mut e = ev.clone();
            e.restamp(self.now);
            self.apply(&e);
            return;
        }
        self.reorder.push(ev.clone());
        let wm = self.reorder.watermark();
        while let Some(e) = self.reorder.pop_upto(wm) {
            self.apply(&e);
        }
    }

    pub fn ingest_batch(&mut self, evs: &[Event]) {
        for e in evs {
            self.ingest(e);
        }
    }

    fn apply(&mut self, ev: &Event) {
        let ts = ev.ts();
        self.now = self.now.max(ts);
        if self.start.is_none() {
            self.start = Some(ts);
        }
        match ev {
            Event::TaskInfo(ti) => {
                if self.by_tid.contains_key(&ti.tid) {
                    return;
                }
                let weight = nice_to_weight(ti.nice);
                self.by_tid.insert(ti.tid, self.threads.len());
                self.threads.push(Thread {
                    demand: ThreadDemand {
                        tid: ti.tid,
                        pid: ti.pid,
                        comm: ti.comm,
                        vm: ti.vm.clone(),
                        vcpu: ti.vcpu,
                        nice: ti.nice,
                        weight,
                        allowed: Vec::new(),
                        affinity: Vec::new(),
                        first_cpu: u32::MAX,
                        first_wake_ns: 0,
                        bursts: Vec::new(),
                        background: false,
                        wake_to_run: Percentiles::default(),
                    },
                    state: State::Unknown,
                    since: ts,
                    first_seen: ts,
                    woke: false,
                    run_acc: 0,
                    in_sum_exec: None,
                    out_sum_exec: None,
                    cpus: 0,
                    wake_hist: Latency::default(),
                });
            }
            Event::SchedSwitch(s) => self.on_switch(s),
            Event::Wakeup(w) => self.on_wakeup(w),
            Event::Migrate(m) => {
                if let Some(&n) = self.by_tid.get(&m.tid) {
                    note_cpu(&mut self.threads[n], m.dest_cpu);
                }
            }
            Event::TaskExit(x) => {
                if let Some(&n) = self.by_tid.get(&x.tid) {
                    self.end_thread(n, x.ts);
                }
            }
            Event::Affinity(a) => {
                if let Some(&n) = self.by_tid.get(&a.tid) {
                    let spans = &mut self.threads[n].demand.affinity;
                    if spans.last().is_none_or(|s| s.cpus != a.cpus) {
                        spans.push(AffinitySpan {
                            at_ns: a.ts,
                            cpus: a.cpus.clone(),
                        });
                    }
                }
            }
            Event::Lost(l) => self.lost = self.lost.saturating_add(l.count),
            _ => {}
        }
    }

    fn cpu(&mut self, cpu: u32) -> Option<&mut Background> {
        if cpu >= MAX_CPUS {
            return None;
        }
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize_with(i + 1, Background::default);
        }
        Some(&mut self.cpus[i])
    }

    fn on_switch(&mut self, s: &SchedSwitch) {
        let ts = s.ts;
        let prev = self.by_tid.get(&s.prev_tid).copied();
        let next = self.by_tid.get(&s.next_tid).copied();
        if let Some(bg) = self.cpu(s.cpu) {
            // Whatever ran here until now: an untracked stretch ends.
            bg.close(ts);
            if next.is_none() && s.next_tid != 0 {
                bg.since = Some(ts);
            }
        }
        if let Some(p) = prev {
            let t = &mut self.threads[p];
            note_cpu(t, s.cpu);
            if let Some(se) = &s.prev_se {
                t.demand.weight = se.weight.max(1);
            }
            let ran = match t.state {
                State::Running => match (s.prev_se.map(|e| e.sum_exec_runtime), t.in_sum_exec) {
                    (Some(out), Some(inn)) if out >= inn => out - inn,
                    _ => ts.saturating_sub(t.since),
                },
                State::Unknown => {
                    // On CPU since tracking began.
                    t.demand.first_wake_ns = t.first_seen;
                    ts.saturating_sub(t.first_seen)
                }
                // A missed switch-in (a lost or unrecorded event): the task clock still
                // says how long it ran since its last switch-out. A sleep ends by then, or
                // the burst before it would never be followed by another in a replay.
                State::Waiting | State::Sleeping => {
                    let ran = match (s.prev_se.map(|e| e.sum_exec_runtime), t.out_sum_exec) {
                        (Some(out), Some(last)) if out >= last => (out - last).min(ts - t.since),
                        _ => 0,
                    };
                    if t.state == State::Sleeping {
                        close_sleep(t, ts - ran);
                    }
                    ran
                }
                State::Exited => return self.on_next(s, next),
            };
            t.run_acc = t.run_acc.saturating_add(ran);
            t.since = ts;
            t.in_sum_exec = None;
            t.out_sum_exec = s.prev_se.map(|e| e.sum_exec_runtime);
            if s.prev_preempted() {
                t.state = State::Waiting;
                t.woke = false;
            } else {
                t.demand.bursts.push(Burst {
                    run_ns: t.run_acc,
                    sleep_ns: None,
                });
                t.run_acc = 0;
                t.state = State::Sleeping;
            }
        }
        self.on_next(s, next);
    }

    fn on_next(&mut self, s: &SchedSwitch, next: Option<usize>) {
        let Some(n) = next else { return };
        let ts = s.ts;
        let t = &mut self.threads[n];
        note_cpu(t, s.cpu);
        match t.state {
            State::Exited => return,
            State::Unknown => t.demand.first_wake_ns = t.first_seen,
            State::Sleeping => {
                // Its wakeup was not seen: the sleep ends here.
                close_sleep(t, ts);
            }
            State::Waiting if t.woke => t.wake_hist.record(ts.saturating_sub(t.since).max(1)),
            State::Waiting | State::Running => {}
        }
        if let Some(se) = &s.next_se {
            t.demand.weight = se.weight.max(1);
            t.in_sum_exec = Some(se.sum_exec_runtime);
        }
        t.state = State::Running;
        t.since = ts;
        t.woke = false;
    }

    fn on_wakeup(&mut self, w: &Wakeup) {
        let Some(&n) = self.by_tid.get(&w.tid) else {
            return;
        };
        let t = &mut self.threads[n];
        match t.state {
            State::Sleeping => close_sleep(t, w.ts),
            State::Unknown => t.demand.first_wake_ns = w.ts,
            State::Running | State::Waiting | State::Exited => return,
        }
        if w.target_cpu < MAX_CPUS {
            note_cpu(t, w.target_cpu);
        }
        t.state = State::Waiting;
        t.since = w.ts;
        t.woke = true;
    }

    fn end_thread(&mut self, n: usize, ts: u64) {
        let t = &mut self.threads[n];
        if matches!(t.state, State::Running | State::Waiting) {
            if t.state == State::Running {
                t.run_acc = t.run_acc.saturating_add(ts.saturating_sub(t.since));
            }
            let run = std::mem::take(&mut t.run_acc);
            t.demand.bursts.push(Burst {
                run_ns: run,
                sleep_ns: None,
            });
        }
        t.state = State::Exited;
    }

    /// Folds what the reorder window still holds and closes every open burst at the last
    /// event.
    pub fn finish(mut self) -> Demand {
        while let Some(e) = self.reorder.pop_upto(u64::MAX) {
            self.apply(&e);
        }
        let start = self.start.unwrap_or(0);
        let end = self.now;
        for n in 0..self.threads.len() {
            self.end_thread(n, end);
        }
        let mut threads: Vec<ThreadDemand> = Vec::with_capacity(self.threads.len());
        for mut t in self.threads {
            if t.cpus == 0 {
                // Never scheduled while observed: nothing to replay.
                continue;
            }
            t.demand.allowed = (0..128u32).filter(|c| t.cpus & (1u128 << c) != 0).collect();
            t.demand.first_wake_ns = t.demand.first_wake_ns.saturating_sub(start);
            for span in &mut t.demand.affinity {
                span.at_ns = span.at_ns.saturating_sub(start);
            }
            t.demand.wake_to_run = t.wake_hist.percentiles();
            // A thread seen only sleeping has a burst-less demand; keep it (it is a vCPU).
            threads.push(t.demand);
        }
        threads.sort_by_key(|t| t.tid);
        let seen_cpus = self.cpus.len() as u32;
        let pcpus = seen_cpus.max(self.min_pcpus).max(
            threads
                .iter()
                .flat_map(|t| t.allowed.last().copied())
                .max()
                .map_or(0, |c| c + 1),
        );
        for (cpu, mut bg) in self.cpus.into_iter().enumerate() {
            bg.close(end);
            let Some(first) = bg.first else { continue };
            let cpu = cpu as u32;
            threads.push(ThreadDemand {
                tid: 0,
                pid: 0,
                comm: Comm::new(&format!("background/{cpu}")),
                vm: String::new(),
                vcpu: None,
                nice: 0,
                weight: nice_to_weight(0),
                allowed: vec![cpu],
                affinity: Vec::new(),
                first_cpu: cpu,
                first_wake_ns: first.saturating_sub(start),
                bursts: bg.bursts,
                background: true,
                wake_to_run: Percentiles::default(),
            });
        }
        Demand {
            start,
            end,
            pcpus,
            threads,
            lost_events: self.lost,
            out_of_order: self.out_of_order,
        }
    }
}

fn note_cpu(t: &mut Thread, cpu: u32) {
    if cpu < 128 {
        t.cpus |= 1u128 << cpu;
        if t.demand.first_cpu == u32::MAX {
            t.demand.first_cpu = cpu;
        }
    }
}

fn close_sleep(t: &mut Thread, ts: u64) {
    let slept = ts.saturating_sub(t.since);
    if let Some(last) = t.demand.bursts.last_mut() {
        last.sleep_ns = Some(slept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{switch, switch_sleep, task_info, wakeup};

    #[test]
    fn preemption_splits_a_burst_and_a_voluntary_switch_ends_it() {
        let mut f = DemandFold::new(0);
        let evs = vec![
            task_info(0, 10, 1, "vm0", Some(0), 0),
            wakeup(100, 0, 10, 0),
            switch(200, 0, 0, 10),
            // Preempted by an untracked task after 300 ns, back 100 ns later.
            switch(500, 0, 10, 77),
            switch(600, 0, 77, 10),
            // Sleeps by itself after 400 more.
            switch_sleep(1000, 0, 10, 0),
            wakeup(3000, 0, 10, 0),
            switch(3050, 0, 0, 10),
            switch_sleep(3100, 0, 10, 0),
        ];
        f.ingest_batch(&evs);
        let d = f.finish();
        let t = d.tracked().next().unwrap();
        assert_eq!(
            t.bursts,
            vec![
                Burst {
                    run_ns: 700,
                    sleep_ns: Some(2000)
                },
                Burst {
                    run_ns: 50,
                    sleep_ns: None
                }
            ]
        );
        assert_eq!(t.first_wake_ns, 100);
        assert_eq!(t.wake_to_run.count, 2);
        let bg: Vec<_> = d.threads.iter().filter(|t| t.background).collect();
        assert_eq!(bg.len(), 1);
        assert_eq!(bg[0].bursts[0].run_ns, 100);
    }

    /// A switch-in the recording missed (seen on PVM hosts with nothing lost) must not end
    /// the thread's replay: the sleep before it is closed by the switch-out that follows,
    /// and the task clock says how long the thread ran in between.
    #[test]
    fn a_missed_switch_in_closes_the_sleep_and_keeps_the_run() {
        use crate::synth::Switch;
        use crate::SchedEntity;
        let se = |sum| SchedEntity {
            sum_exec_runtime: sum,
            weight: 1024,
            ..SchedEntity::default()
        };
        let out = |ts, sum| {
            Switch::new(ts, 0, 10, 0)
                .sleeping()
                .prev_se(se(sum))
                .build()
        };
        let into = |ts, sum| Switch::new(ts, 0, 0, 10).next_se(se(sum)).build();
        let mut f = DemandFold::new(0);
        let evs = vec![
            task_info(0, 10, 1, "vm0", Some(0), 0),
            wakeup(100, 0, 10, 0),
            into(200, 5_000),
            out(500, 5_300),
            // Woken and switched in at about 2_000 and 2_100: neither was recorded. It ran
            // 200 ns of task clock before sleeping again at 2_300.
            out(2_300, 5_500),
            wakeup(4_000, 0, 10, 0),
            into(4_100, 5_500),
            out(4_150, 5_550),
        ];
        f.ingest_batch(&evs);
        let d = f.finish();
        let t = d.tracked().next().unwrap();
        assert_eq!(
            t.bursts,
            vec![
                Burst {
                    run_ns: 300,
                    sleep_ns: Some(1_600)
                },
                Burst {
                    run_ns: 200,
                    sleep_ns: Some(1_700)
                },
                Burst {
                    run_ns: 50,
                    sleep_ns: None
                }
            ]
        );
    }
}
