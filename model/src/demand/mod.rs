//! Demand: what each tracked thread asked of the CPUs, independent of how it was served.
//!
//! For a scheduler simulation the recorded schedule itself is the answer to be replaced; what
//! carries over is the demand behind it. Per thread: its CPU bursts (task-clock time from
//! becoming runnable until it sleeps by itself — a preemption splits a burst but does not
//! end it), the sleeps between them (voluntary switch-out to wakeup), its weight and nice, the
//! pCPUs it may use (its affinity over time where the recording has it, else the pCPUs it
//! was seen on) and its VM. Per pCPU: the stretches untracked tasks ran, as
//! background load. The same fold also times each wake-to-run latency, so the recorded and a
//! simulated run are measured by one rule, and sorts the wakeups by how the woken thread got
//! its pCPU (preempting, onto an idle pCPU, or after waiting), which the simulator's dispatch
//! delay is measured from: the recording is folded once for both.
//!
//! [`DemandFold`] is a transition sink: it reads the [`Transition`](crate::Transition)s the model applied and
//! re-derives no state. What a thread did is the model's account of it: its states and their
//! times (`State`), the task clock of each stint on a pCPU (`SwitchOut`), its nice and weight
//! (`Thread`, `Weight`), its affinity changes (`Affinity`), its end (`Exited`) and who held
//! each pCPU (`Pcpu`). [`fold_events`] runs events through a [`Model`] into both.
//!
//! Rules of the fold (each on the model's transitions): a burst is the task-clock time of the
//! stints from a thread becoming runnable until a state change to `Sleeping` (a stint's wall
//! time where its switch-out carries no task clock, and for a stint cut by the thread's end or
//! the observation's); a burst the thread's end or the observation's cut while it was runnable
//! (running or waiting) is open, and wanted the CPU from becoming runnable to that end; the
//! sleep after it runs from that `Sleeping` to the next runnable
//! state; a wakeup and its wake-to-run latency follow the wakeup rule (`wakeup.rs`: it opens
//! at `Sleeping` -> `Waiting`, closes at the next running state, is cancelled by a sleep or
//! the thread's end); a thread's first burst starts at its first runnable state; its pCPUs
//! are those its states and switch-outs name; a pCPU's background load is each stretch an
//! untracked task held it, split by the task group of the task that began the stretch where
//! the recording has task-group records (`Transition::TaskGroup`; of a reused tid, the newest
//! record at the stretch's start, and a tracked thread's the newest since its announcement: each
//! task's own), one stand-in per pCPU and
//! group, whose burst a stretch ends only when its group's task left it asleep
//! (`Transition::OtherSwitchOut` not preempted): a preempted one still wanted the pCPU.

mod fold;
#[cfg(test)]
mod tests;
mod wakeup;

use serde::{Deserialize, Serialize};

use crate::{Comm, Event, Model, ModelConfig, Percentiles, SchedGroup, SnapshotOptions};
pub use fold::DemandFold;
pub use wakeup::Wakeups;

/// One CPU burst and the sleep that followed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    /// CPU time wanted, ns (task clock where switches carry it, else wall time on CPU).
    pub run_ns: u64,
    /// Sleep after the burst, ns: until the thread was woken, or until the observation ended
    /// if it was still asleep then (`woke` is `None`: no burst follows). `None` when the
    /// burst was cut by the end (running or waiting then) or by the thread's exit.
    pub sleep_ns: Option<u64>,
    /// How that sleep ended in the recording: when it was woken and on which pCPU's run
    /// queue, which tells a wakeup by a tick-driven timer (its time, modulo the tick, is its
    /// pCPU's tick phase) from others. A background stand-in's is when its next stretch
    /// began (the untracked tasks' wakeups are not recorded). `None` without a sleep, and
    /// for hand-made demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub woke: Option<Woke>,
    /// Set when no sleep ended the burst: the thread was still runnable when it ended, at the
    /// recording's end or at its exit. It wanted the CPU for all of that time, not only the
    /// `run_ns` it got. `None` for a burst a sleep ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenBurst>,
}

/// A burst no sleep ended (the last of its thread's): how long the thread wanted the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenBurst {
    /// Wall time from becoming runnable to the burst's end, by the thread's states: the CPU
    /// it wanted (at least `run_ns`, what it got).
    pub runnable_ns: u64,
    /// Still runnable at the recording's end (else it exited while running): it wanted the
    /// CPU until the end, so a replay gives it the CPU until the replay's end.
    pub at_recording_end: bool,
}

impl Burst {
    /// CPU time the burst wanted: its CPU time, or all of an open burst's runnable time.
    pub fn wanted_ns(&self) -> u64 {
        self.open
            .map_or(self.run_ns, |o| o.runnable_ns.max(self.run_ns))
    }
}

/// When and where a recorded sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Woke {
    /// The wakeup's time, ns since the demand's start.
    pub at_ns: u64,
    /// The pCPU whose run queue it was woken onto (the wakeup's target).
    pub cpu: u32,
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
    /// True for a per-pCPU stand-in of untracked tasks: one per pCPU, or with task-group
    /// records one per pCPU and group.
    pub background: bool,
    /// The task group its load ran in, from the recording's task-group records: a tracked
    /// thread's own, a stand-in's tasks'. `None` without a record (or one that could not be
    /// read: `group_unread`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<SchedGroup>,
    /// A stand-in of tasks that had exited before their group could be read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group_unread: bool,
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
    /// Total CPU time it got in the recording, ns.
    pub fn run_ns(&self) -> u64 {
        self.bursts.iter().map(|b| b.run_ns).sum()
    }

    /// Total CPU time it wanted, ns: what it got, and all the runnable time of an open burst
    /// ([`Burst::open`]).
    pub fn wanted_ns(&self) -> u64 {
        self.bursts.iter().map(Burst::wanted_ns).sum()
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
    /// Every wakeup of a tracked thread that got its pCPU, by how it got it (the same
    /// wakeups as the threads' `wake_to_run`).
    #[serde(default)]
    pub wakeups: Wakeups,
    /// Events the recording says were lost: the demand around them is uncertain.
    pub lost_events: u64,
    /// Events older than the reorder window, folded in at the time of the newest one.
    pub out_of_order: u64,
    /// The recording's task-group records (format 4 on; none before).
    #[serde(default, skip_serializing_if = "GroupRecords::is_empty")]
    pub group_records: GroupRecords,
}

/// How many task-group records the recording holds (one per task, and one more for each task
/// a reused tid named), and how many of them say the task had exited before its group could
/// be read (their load is a stand-in of its own, `group_unread`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupRecords {
    pub read: u64,
    pub unread: u64,
}

impl GroupRecords {
    pub fn is_empty(&self) -> bool {
        self.read == 0 && self.unread == 0
    }
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

/// Events folded by the model per transition batch (keeps the transition buffer small).
const BATCH: usize = 4096;

/// Runs `events` through a [`Model`] with [`ModelConfig::report`] (transitions on) and folds
/// its transitions into the demand; `pcpus` is the host's CPU count where known (0 if not).
/// Returns the finished model too, for the caller's snapshot of the same run.
pub fn fold_events(events: &[Event], pcpus: u32) -> (Model, Demand) {
    let mut model = Model::new(ModelConfig::report());
    model.record_transitions(true);
    let mut fold = DemandFold::default().with_pcpus(pcpus);
    let mut transitions = Vec::new();
    for chunk in events.chunks(BATCH) {
        model.ingest_batch(chunk);
        model.take_transitions(&mut transitions);
        fold.fold(&transitions);
        transitions.clear();
    }
    model.finish();
    model.take_transitions(&mut transitions);
    fold.fold(&transitions);
    model.record_transitions(false);
    let demand = fold.finish(&model.snapshot_with(SnapshotOptions::counters()));
    (model, demand)
}
