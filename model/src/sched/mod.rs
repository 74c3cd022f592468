//! The scheduling model: folds the event stream into per-thread, per-pCPU and per-VM state
//! and hands out [`Snapshot`]s.
//!
//! # Semantics
//! - A thread switched out with `prev_state == 0` was preempted: it waits (runnable) until it
//!   is switched in again. With any other state it sleeps until a `Wakeup`, then waits until
//!   switched in. Run time is wall time between switch-in and switch-out (`run_ns`);
//!   `task_clock_ns` sums `se.sum_exec_runtime` deltas and excludes steal/IRQ time.
//! - Tracked threads are exactly those announced by `TaskInfo`. Threads that show up with
//!   scheduler-entity data, exit aggregates, counter samples or an affinity record but were never
//!   announced are counted in `health.unknown_tids` (once per tid) and otherwise treated like
//!   any other untracked task: by comm on the pCPU lanes.
//!   Guessing a VM for them would put numbers under a name nobody asked about.
//! - `migrations` counts `sched_migrate_task` events when the source delivers them: the
//!   kernel bumps `se.nr_migrations` in `set_task_cpu()`, the same place that tracepoint
//!   fires, so the two agree exactly (including moves of a waiting thread between run queues
//!   and wake-up placements) once events with `orig_cpu == dest_cpu` are skipped: the
//!   tracepoint fires for those too, the counter does not move. Without those events it
//!   falls back to `pcpu_changes`, switch-ins on a different pCPU than the previous
//!   switch-out, which is what matters for the VMCS reload and is always reported beside it.
//!   A health note says which was used.
//! - Resume latency: for each switch-in, the time until the guest runs again — the next
//!   `kvm_entry` where the host emits it, else the end of the guest's own gap record (bundled
//!   VMM) — split by whether the thread came back on the pCPU it left. "To switch-out" is the
//!   guest's last instruction (last `kvm_exit`, or gap start) to the switch-out.
//! - Entitled share: weighted max-min fair share of the pCPUs a group of threads used, where
//!   a group is threads whose used pCPU sets overlap, each capped at its demand
//!   ((run + wait) / elapsed). The capacity shared is the pCPU time untracked tasks left
//!   (their weights are unknown). Two always-runnable threads of weight 335 and 1024 alone on
//!   one pCPU are entitled to 335/1359 and 1024/1359.
//! - Lag: vruntime (as of the thread's last switch) minus the smallest vruntime among tracked
//!   runnable threads on the same run queue. vruntimes of different run queues are not
//!   comparable, so no cross-queue lag is given.
//! - Wait attribution: while a tracked thread waits in a pCPU's run queue, whoever runs on that
//!   pCPU is its culprit for that time (the queue it waits in is the pCPU it may use next).
//!
//! # Bounds
//! Memory is bounded by the number of tracked threads, pCPUs and distinct comms (capped), and
//! the history window — never by the number of events: lanes and vruntime series are rings
//! trimmed to `history_ns` and a segment cap, histograms have fixed size.
//!
//! Time comes only from event timestamps. Nothing here panics on odd input: arithmetic
//! saturates, unknown CPUs and tids are counted in [`Health`].
//!
//! # Rooms
//! `dispatch` (reorder window, guest-gap queue, handler per kind), `switch` (sched_switch,
//! wakeups, migrations), `kvm` (entries, exits, VMCLEAR cross-calls), `task` (tracked
//! threads and their lifecycle), the per-thread trackers `clocks`, `resume` and `exits`,
//! `retire` (ended threads leaving an always-on model), `owner` and `lanes` (who holds each
//! pCPU, run queues, wait attribution), `cpu_set`, `fairness` (entitled share), `counters`
//! (counter samples from the no-BPF source), `health` (odd input, counted), `view` (snapshots) and
//! `transitions` (the log of applied changes that transition sinks read).

mod clocks;
mod counters;
mod cpu_set;
mod dispatch;
mod exits;
mod fairness;
mod health;
mod kvm;
mod lanes;
mod owner;
mod resume;
mod retire;
mod switch;
mod task;
mod transitions;
mod view;

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

pub use fairness::{jain, nice_to_weight, NICE_TO_WEIGHT};
pub use view::SnapshotOptions;

use crate::reorder::Reorder;
use crate::{Comm, GuestGap};
use health::HealthCounters;
use kvm::OpenCsd;
use lanes::Cpu;
use task::{Task, VmEntry};
use transitions::TransitionLog;

/// CPUs at or past this are malformed input (keeps per-CPU vectors small and sane): the one
/// bound on CPU numbers, which the demand fold, the trace reader and `simulate` share.
pub const MAX_CPUS: u32 = 4096;

/// How long a fold that may run for hours (the live dashboard, a replay, the exporter) keeps
/// a thread after it ended ([`ModelConfig::retire_ended_after_ns`]): long enough to read its
/// row after its VM stops, short enough that VMs coming and going leave the model, the
/// vCPU table and the VM filter with the threads alive now and those of the last minute.
pub const RETIRE_ENDED_AFTER_NS: u64 = 60_000_000_000;

/// Tuning of the model. The defaults suit live use and the dashboard.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// How long events are held to merge per-CPU streams by timestamp, ns.
    pub reorder_window_ns: u64,
    /// History kept for lanes and vruntime series, ns (at least 10 s for the views).
    pub history_ns: u64,
    /// Hard cap on lane segments per pCPU (very busy pCPUs keep less than `history_ns`).
    pub max_lane_segments: usize,
    /// Minimum spacing of vruntime chart points per thread, ns.
    pub vruntime_spacing_ns: u64,
    /// Recent switch-ins remembered per thread to match late guest-gap records.
    pub recent_switch_ins: usize,
    /// Retire a thread this long after it ended, ns: it leaves the snapshot, its counters
    /// that per-VM figures sum (run, wait, exits by reason) are kept in its VM's totals, and
    /// its slot is reused by the next thread announced. `None` (reports, the transition
    /// sinks): keep every thread, so slot `n` is always `Snapshot::vcpus[n]`. A fold that may
    /// run for hours (the live dashboard, a replay, the exporter) sets
    /// [`RETIRE_ENDED_AFTER_NS`], so VMs coming and going for days leave the model no larger
    /// than the threads alive at once.
    pub retire_ended_after_ns: Option<u64>,
}

impl ModelConfig {
    /// For whole-run reports (`kvmscope report`) and every other fold of a recording (export,
    /// `simulate`'s demand, replay), which wait on no kernel and so can afford a wide reorder
    /// window: on a host that is itself a VM, a vCPU stalled (steal) between
    /// reserving a record and stamping it can invert events by milliseconds.
    pub fn report() -> Self {
        ModelConfig {
            reorder_window_ns: 50_000_000,
            ..ModelConfig::default()
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            reorder_window_ns: 2_000_000,
            history_ns: 12_000_000_000,
            max_lane_segments: 50_000,
            vruntime_spacing_ns: 5_000_000,
            recent_switch_ins: 256,
            retire_ended_after_ns: None,
        }
    }
}

/// The pure scheduling model. Feed it events with [`Model::ingest`] /
/// [`Model::ingest_batch`], call [`Model::finish`] at the end of a stream, read it with
/// [`Model::snapshot`]. Cloning it is how replay keeps checkpoints to seek back to.
#[derive(Clone)]
pub struct Model {
    cfg: ModelConfig,
    reorder: Reorder,
    /// Time of the last event applied (the model's "now").
    now: u64,
    start: Option<u64>,
    events: u64,
    tasks: Vec<Task>,
    tid_slot: FxHashMap<u32, u32>,
    /// Slots of retired threads, reused before the table grows.
    free_slots: Vec<u32>,
    vms: Vec<VmEntry>,
    /// Entries of retired VMs, reused before the list grows.
    free_vms: Vec<u32>,
    cpus: Vec<Cpu>,
    comms: Vec<Comm>,
    comm_id: FxHashMap<Comm, u32>,
    open_csd: Vec<OpenCsd>,
    /// Guest gaps waiting for the kernel events up to their end.
    gaps: VecDeque<GuestGap>,
    health: HealthCounters,
    /// Kernel exit aggregates whose thread is not announced yet.
    waiting_aggs: Vec<crate::ExitAggregate>,
    waiting_port_io: Vec<crate::PortIoAggregate>,
    log: TransitionLog,
    next_checkpoint: u64,
}

impl Default for Model {
    fn default() -> Self {
        Model::new(ModelConfig::default())
    }
}

impl Model {
    pub fn new(cfg: ModelConfig) -> Self {
        Model {
            reorder: Reorder::new(cfg.reorder_window_ns),
            cfg,
            now: 0,
            start: None,
            events: 0,
            tasks: Vec::new(),
            tid_slot: FxHashMap::default(),
            free_slots: Vec::new(),
            vms: Vec::new(),
            free_vms: Vec::new(),
            cpus: Vec::new(),
            comms: Vec::new(),
            comm_id: FxHashMap::default(),
            open_csd: Vec::new(),
            gaps: VecDeque::new(),
            health: HealthCounters::default(),
            waiting_aggs: Vec::new(),
            waiting_port_io: Vec::new(),
            log: TransitionLog::default(),
            next_checkpoint: 0,
        }
    }

    /// Timestamp of the last event folded in (events still in the reorder window excluded).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Thread slots allocated, in use or free: what the model's per-thread memory grows with.
    /// Without retirement, every thread ever announced; with it, the most alive at once
    /// (ended ones included until they retire).
    pub fn thread_slots(&self) -> usize {
        self.tasks.len()
    }

    /// VM entries allocated, in use or free (with retirement: the most VMs alive at once).
    pub fn vm_entries(&self) -> usize {
        self.vms.len()
    }

    /// pCPUs a switch has been seen on: the rows a snapshot's `pcpus` will have.
    pub fn pcpus_seen(&self) -> usize {
        self.cpus.iter().filter(|c| c.seen).count()
    }

    /// Events ingested so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn cpu_mut(&mut self, cpu: u32) -> Option<&mut Cpu> {
        if cpu >= MAX_CPUS {
            self.health.malformed = self.health.malformed.saturating_add(1);
            return None;
        }
        let i = cpu as usize;
        if self.cpus.len() <= i {
            self.cpus.resize_with(i + 1, Cpu::default);
        }
        self.cpus.get_mut(i)
    }

    fn slot(&self, tid: u32) -> Option<usize> {
        if tid == 0 {
            return None;
        }
        self.tid_slot.get(&tid).map(|&s| s as usize)
    }
}
