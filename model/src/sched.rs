//! The scheduling model: folds the event stream into per-thread, per-pCPU and per-VM state
//! and hands out [`Snapshot`]s.
//!
//! # Semantics
//! - A thread switched out with `prev_state == 0` was preempted: it waits (runnable) until it
//!   is switched in again. With any other state it sleeps until a `Wakeup`, then waits until
//!   switched in. Run time is wall time between switch-in and switch-out (`run_ns`);
//!   `task_clock_ns` sums `se.sum_exec_runtime` deltas and excludes steal/IRQ time.
//! - Tracked threads are exactly those announced by `TaskInfo`. Threads that show up with
//!   scheduler-entity data but were never announced are counted in `health.unknown_tids` (once
//!   per tid) and otherwise treated like any other untracked task: by comm on the pCPU lanes.
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

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::exit_names::{hw_exit_name, userspace_exit_name};
use crate::latency::Latency;
use crate::reorder::Reorder;
use crate::*;

/// CPUs beyond this are treated as malformed input (keeps per-CPU vectors small and sane).
const MAX_CPUS: u32 = 4096;
/// Distinct comms kept by name; later ones are folded into one bucket.
const MAX_COMMS: usize = 4096;
/// Distinct unknown tids remembered (for counting each once).
const MAX_UNKNOWN_TIDS: usize = 65_536;
/// Distinct culprits remembered per waiting thread; the rest are folded into "(other)".
const MAX_CULPRITS: usize = 32;
/// Distinct exit reasons kept per thread; the last bucket then takes every other reason.
const MAX_EXIT_REASONS: usize = 64;
/// Reason code of that bucket.
const OTHER_REASONS: u32 = u32::MAX;
/// Guest gaps held until the kernel events catch up; past this the oldest is matched early.
const MAX_QUEUED_GAPS: usize = 65_536;
/// Open VMCLEAR cross-calls remembered (queue waiting for its exit).
const MAX_OPEN_CSD: usize = 256;
/// Period of the cumulative-counter checkpoints used for the 1 s / 10 s windows.
const CHECKPOINT_NS: u64 = 100_000_000;

/// Owner code of a pCPU: 0 idle, `slot + 1` a tracked thread, `OTHER | comm id` anything else.
const IDLE: u32 = 0;
const OTHER: u32 = 0x8000_0000;

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
}

impl ModelConfig {
    /// For whole-run reports (`kvmscope report`), which are not interactive and so can afford
    /// a wide reorder window: on a host that is itself a VM, a vCPU stalled (steal) between
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
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TState {
    /// Tracked but no scheduling event yet.
    Unknown,
    Running,
    Waiting,
    Sleeping,
    Exited,
}

/// Cumulative counters of a thread; checkpoints of these give the windowed figures.
#[derive(Clone, Copy, Debug, Default)]
struct Cum {
    run: u64,
    task_clock: u64,
    /// Run-queue wait by the kernel's own counter (`sched_info.run_delay` deltas).
    run_delay: u64,
    wait: u64,
    sleep: u64,
    voluntary: u64,
    involuntary: u64,
    migrate_events: u64,
    pcpu_changes: u64,
    exits: u64,
    gaps: u64,
    gap_ns: u64,
}

impl Cum {
    fn minus(&self, o: &Cum) -> Cum {
        Cum {
            run: self.run.saturating_sub(o.run),
            task_clock: self.task_clock.saturating_sub(o.task_clock),
            run_delay: self.run_delay.saturating_sub(o.run_delay),
            wait: self.wait.saturating_sub(o.wait),
            sleep: self.sleep.saturating_sub(o.sleep),
            voluntary: self.voluntary.saturating_sub(o.voluntary),
            involuntary: self.involuntary.saturating_sub(o.involuntary),
            migrate_events: self.migrate_events.saturating_sub(o.migrate_events),
            pcpu_changes: self.pcpu_changes.saturating_sub(o.pcpu_changes),
            exits: self.exits.saturating_sub(o.exits),
            gaps: self.gaps.saturating_sub(o.gaps),
            gap_ns: self.gap_ns.saturating_sub(o.gap_ns),
        }
    }
}

struct ExitEntry {
    /// `false`: kvm_exit (hardware reason), `true`: userspace exit.
    userspace: bool,
    isa: ExitIsa,
    reason: u32,
    count: u64,
    latency: Latency,
}

#[derive(Clone, Copy)]
struct SwitchIn {
    ts: u64,
    migrated: bool,
    /// The switch-out before this switch-in (0 if none seen).
    prev_out: u64,
}

struct Task {
    tid: u32,
    pid: u32,
    vm: u32,
    vcpu: Option<u32>,
    comm: Comm,
    nice: i32,
    weight: u32,
    first_seen: u64,
    ended_at: Option<u64>,
    exiting: bool,
    state: TState,
    sub: VcpuState,
    since: u64,
    /// pCPU it runs on, or the run queue it waits in, or the pCPU it last ran on.
    cpu: u32,
    last_out_cpu: Option<u32>,
    last_out_ts: u64,
    cum: Cum,
    last_sum_exec: Option<u64>,
    last_run_delay: Option<u64>,
    /// A switch has carried this task's sched entity (its vruntime is known).
    se_seen: bool,
    /// A switch has carried its `run_delay` (a schedstat seed alone says nothing).
    run_delay_seen: bool,
    vruntime: u64,
    cpus_used: u128,
    wait_hist: Latency,
    resume_same: Latency,
    resume_migrated: Latency,
    to_out: Latency,
    vmclear: Latency,
    vmclear_calls: u64,
    resume_from_entry: bool,
    resume_from_gap: bool,
    exits: Vec<ExitEntry>,
    pending_exit: Option<(usize, u64)>,
    pending_resume: Option<(u64, bool)>,
    last_exit_ts: u64,
    last_entry_ts: u64,
    last_in_ts: u64,
    recent_ins: VecDeque<SwitchIn>,
    culprits: Vec<(u32, u64)>,
    series: VecDeque<VruntimePoint>,
    checkpoints: VecDeque<(u64, Cum)>,
}

impl Task {
    fn is_runnable(&self) -> bool {
        matches!(self.state, TState::Running | TState::Waiting)
    }

    /// Counters including the open interval up to `now`.
    fn cum_at(&self, now: u64) -> Cum {
        let mut c = self.cum;
        let open = now.saturating_sub(self.since);
        match self.state {
            TState::Running => c.run = c.run.saturating_add(open),
            TState::Waiting => c.wait = c.wait.saturating_add(open),
            TState::Sleeping => c.sleep = c.sleep.saturating_add(open),
            TState::Unknown | TState::Exited => {}
        }
        c
    }

    fn end_or(&self, now: u64) -> u64 {
        self.ended_at.unwrap_or(now)
    }

    fn label(&self, vms: &[VmEntry]) -> String {
        let vm = vms.get(self.vm as usize).map_or("?", |v| v.name.as_str());
        match self.vcpu {
            Some(i) => format!("{vm}/vcpu{i}"),
            None => format!("{vm}/{}", self.comm),
        }
    }
}

struct VmEntry {
    name: String,
    pid: u32,
    ended: bool,
}

#[derive(Clone, Copy)]
struct Seg {
    start: u64,
    end: u64,
    owner: u32,
    waiting: u32,
}

#[derive(Default)]
struct Cpu {
    seen: bool,
    first_ts: u64,
    since: u64,
    owner: u32,
    cur_tid: u32,
    last_event_ts: u64,
    waiting: Vec<u32>,
    idle_ns: u64,
    vm_ns: Vec<u64>,
    comm_ns: Vec<u64>,
    lane: VecDeque<Seg>,
}

#[derive(Clone, Copy)]
struct OpenCsd {
    csd: u64,
    ts: u64,
    slot: u32,
}

/// The pure scheduling model. Feed it events with [`Model::ingest`] /
/// [`Model::ingest_batch`], call [`Model::finish`] at the end of a stream, read it with
/// [`Model::snapshot`].
pub struct Model {
    cfg: ModelConfig,
    reorder: Reorder,
    /// Time of the last event applied (the model's "now").
    now: u64,
    start: Option<u64>,
    events: u64,
    tasks: Vec<Task>,
    tid_slot: FxHashMap<u32, u32>,
    vms: Vec<VmEntry>,
    cpus: Vec<Cpu>,
    comms: Vec<Comm>,
    comm_id: FxHashMap<Comm, u32>,
    unknown_tids: FxHashSet<u32>,
    unknown_count: u64,
    open_csd: Vec<OpenCsd>,
    /// Guest gaps waiting for the kernel events up to their end.
    gaps: VecDeque<GuestGap>,
    /// Kinds of the events that came too late (for the health note).
    late_kinds: Vec<&'static str>,
    lost: u64,
    uncertain_ns: u64,
    out_of_order: u64,
    tid_reuse: u64,
    malformed: u64,
    saw_entry_exit: bool,
    saw_migrate: bool,
    saw_gap: bool,
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
            vms: Vec::new(),
            cpus: Vec::new(),
            comms: Vec::new(),
            comm_id: FxHashMap::default(),
            unknown_tids: FxHashSet::default(),
            unknown_count: 0,
            open_csd: Vec::new(),
            gaps: VecDeque::new(),
            late_kinds: Vec::new(),
            lost: 0,
            uncertain_ns: 0,
            out_of_order: 0,
            tid_reuse: 0,
            malformed: 0,
            saw_entry_exit: false,
            saw_migrate: false,
            saw_gap: false,
            next_checkpoint: 0,
        }
    }

    /// Timestamp of the last event folded in (events still in the reorder window excluded).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Events ingested so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Adds one event. It takes effect once the reorder window has passed it.
    pub fn ingest(&mut self, ev: &Event) {
        self.events = self.events.saturating_add(1);
        self.ingest_one(ev);
    }

    fn ingest_one(&mut self, ev: &Event) {
        if let Event::GuestGap(g) = ev {
            self.queue_gap(*g);
            return;
        }
        if ev.ts() < self.now {
            self.apply_late(ev);
            return;
        }
        self.reorder.push(ev.clone());
        self.release(self.reorder.watermark());
    }

    /// Adds a batch; same result as [`Model::ingest`] on each event in turn. While the batch
    /// is in timestamp order after what is buffered (the usual case), its not-yet-released
    /// events stay in the caller's slice, behind the buffer, instead of being copied through
    /// it; only the batch's newest `reorder_window_ns` is copied at the end.
    pub fn ingest_batch(&mut self, evs: &[Event]) {
        self.events = self.events.saturating_add(evs.len() as u64);
        // evs[pending..k] are in order (guest gaps aside), after everything buffered, and not
        // yet applied; `run_last` is the newest timestamp among them.
        let mut pending = 0;
        let mut run_last = 0u64;
        for (k, ev) in evs.iter().enumerate() {
            prefetch(evs.get(k + PREFETCH_AHEAD));
            if let Event::GuestGap(g) = ev {
                // Queued now, as `ingest` would: the model already holds exactly what `ingest`
                // would have released by this point, and gaps never enter the reorder buffer.
                // The loops below skip it when they reach it in the slice.
                self.queue_gap(*g);
                if pending == k {
                    pending = k + 1;
                }
                continue;
            }
            let ts = ev.ts();
            let in_run = if pending == k {
                ts >= self.now && self.reorder.back_ts().is_none_or(|b| b <= ts)
            } else {
                run_last <= ts
            };
            if in_run {
                run_last = ts;
                self.reorder.note_ts(ts);
                let wm = self.reorder.watermark();
                self.release(wm);
                if self.reorder.is_empty() {
                    while pending <= k {
                        let e = &evs[pending];
                        if matches!(e, Event::GuestGap(_)) {
                            // Already queued when the loop above met it.
                        } else if e.ts() <= wm {
                            self.apply(e);
                        } else {
                            break;
                        }
                        pending += 1;
                    }
                    self.drain_gaps();
                }
                continue;
            }
            for e in &evs[pending..k] {
                self.hold(e);
            }
            pending = k + 1;
            self.ingest_one(ev);
        }
        for e in &evs[pending..] {
            self.hold(e);
        }
    }

    /// Puts a kernel event of the batch in the reorder buffer (its guest gaps were queued
    /// when the batch loop met them).
    fn hold(&mut self, e: &Event) {
        if !matches!(e, Event::GuestGap(_)) {
            self.reorder.push(e.clone());
        }
    }

    /// Guest gaps come from the VMM, not the kernel ring, so they run ahead of or behind the
    /// kernel events by tens of ms. They must not move the reorder watermark; each is matched
    /// once the kernel events up to its end (its switch-in) have been folded in.
    fn queue_gap(&mut self, g: GuestGap) {
        if self.gaps.len() >= MAX_QUEUED_GAPS {
            if let Some(old) = self.gaps.pop_front() {
                self.on_guest_gap(&old);
            }
        }
        self.gaps.push_back(g);
        self.drain_gaps();
    }

    fn drain_gaps(&mut self) {
        while let Some(g) = self.gaps.front() {
            if g.end > self.now {
                break;
            }
            if let Some(g) = self.gaps.pop_front() {
                self.on_guest_gap(&g);
            }
        }
    }

    /// End of stream: folds in everything still held in the reorder window.
    pub fn finish(&mut self) {
        self.release(u64::MAX);
        while let Some(g) = self.gaps.pop_front() {
            self.on_guest_gap(&g);
        }
    }

    fn release(&mut self, limit: u64) {
        let mut any = false;
        while let Some(ev) = self.reorder.pop_upto(limit) {
            self.apply(&ev);
            any = true;
        }
        if any && !self.gaps.is_empty() {
            self.drain_gaps();
        }
    }

    /// An event older than what was already folded in: count it and fold it in at "now" so
    /// that state transitions are not lost. (Guest gaps never come here: see `queue_gap`.)
    #[inline(never)]
    fn apply_late(&mut self, ev: &Event) {
        self.out_of_order = self.out_of_order.saturating_add(1);
        if !self.late_kinds.contains(&ev.kind()) {
            self.late_kinds.push(ev.kind());
        }
        let now = self.now;
        let mut e = ev.clone();
        match &mut e {
            Event::SchedSwitch(x) => x.ts = now,
            Event::Wakeup(x) => x.ts = now,
            Event::Migrate(x) => x.ts = now,
            Event::TaskExit(x) => x.ts = now,
            Event::KvmEntry(x) => x.ts = now,
            Event::KvmExit(x) => x.ts = now,
            Event::UserspaceExit(x) => x.ts = now,
            Event::Pio(x) => x.ts = now,
            Event::CrossCall(x) => x.ts = now,
            Event::GuestGap(_) => {}
            Event::Lost(x) => x.ts = now,
            Event::TaskInfo(x) => x.ts = now,
            Event::VmEnded(x) => x.ts = now,
            Event::ObservationEnd(x) => x.ts = now,
        }
        self.apply(&e);
    }

    /// Folds one event in. Most events are small (exits, port I/O); the large, rarer
    /// handlers are `#[inline(never)]` so this stays a small function on the hot path.
    fn apply(&mut self, ev: &Event) {
        let ts = ev.ts();
        if self.start.is_none() {
            self.start = Some(ts);
            self.next_checkpoint = ts.saturating_add(CHECKPOINT_NS);
        }
        if ts >= self.next_checkpoint {
            self.checkpoints_upto(ts);
        }
        if ts > self.now {
            self.now = ts;
        }
        match ev {
            Event::SchedSwitch(s) => self.on_switch(s),
            Event::Wakeup(w) => self.on_wakeup(w),
            Event::Migrate(m) => self.on_migrate(m),
            Event::TaskExit(x) => self.on_task_exit(x),
            Event::KvmEntry(e) => self.on_kvm_entry(e),
            Event::KvmExit(e) => self.on_kvm_exit(e),
            Event::UserspaceExit(e) => self.on_userspace_exit(e),
            Event::Pio(p) => {
                if let Some(c) = self.cpu_mut(p.cpu) {
                    c.last_event_ts = p.ts;
                }
            }
            Event::CrossCall(c) => self.on_cross_call(c),
            Event::GuestGap(g) => self.on_guest_gap(g),
            Event::Lost(l) => self.on_lost(l),
            Event::TaskInfo(t) => self.on_task_info(t),
            Event::VmEnded(v) => self.on_vm_ended(v),
            // Moving `now` up to it (above) is all it does.
            Event::ObservationEnd(_) => {}
        }
    }

    /// Records every thread's cumulative counters at each 100 ms boundary of event time up to
    /// `ts`. Called before the event at `ts` is applied, so every thread's state is constant
    /// since its last event and the counters at each boundary are exact.
    #[inline(never)]
    fn checkpoints_upto(&mut self, ts: u64) {
        let keep = (self.cfg.history_ns / CHECKPOINT_NS).clamp(11, 1000) as usize + 1;
        let span = CHECKPOINT_NS * keep as u64;
        // Only the newest `keep` boundaries can matter; jump over long silences.
        let behind = ts.saturating_sub(self.next_checkpoint);
        if behind > span {
            let skip = (behind - span) / CHECKPOINT_NS;
            self.next_checkpoint = self
                .next_checkpoint
                .saturating_add(skip.saturating_mul(CHECKPOINT_NS));
        }
        while self.next_checkpoint <= ts {
            let b = self.next_checkpoint;
            for t in &mut self.tasks {
                if t.first_seen > b || t.ended_at.is_some_and(|e| e < b.saturating_sub(span)) {
                    continue;
                }
                let c = t.cum_at(b);
                t.checkpoints.push_back((b, c));
                while t.checkpoints.len() > keep {
                    t.checkpoints.pop_front();
                }
            }
            self.next_checkpoint = b.saturating_add(CHECKPOINT_NS);
            if self.next_checkpoint == u64::MAX {
                break;
            }
        }
    }

    // ----- helpers -----

    fn cpu_mut(&mut self, cpu: u32) -> Option<&mut Cpu> {
        if cpu >= MAX_CPUS {
            self.malformed = self.malformed.saturating_add(1);
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

    fn note_unknown(&mut self, tid: u32) {
        if tid != 0 && self.unknown_tids.len() < MAX_UNKNOWN_TIDS && self.unknown_tids.insert(tid) {
            self.unknown_count = self.unknown_count.saturating_add(1);
        }
    }

    fn intern_comm(&mut self, comm: Comm) -> u32 {
        if let Some(&id) = self.comm_id.get(&comm) {
            return id;
        }
        if self.comms.len() >= MAX_COMMS {
            // The last slot stands for every comm past the cap.
            return (MAX_COMMS - 1) as u32;
        }
        let id = self.comms.len() as u32;
        let stored = if self.comms.len() == MAX_COMMS - 1 {
            Comm::new("(many others)")
        } else {
            comm
        };
        self.comms.push(stored);
        self.comm_id.insert(comm, id);
        id
    }

    fn intern_vm(&mut self, name: &str, pid: u32) -> u32 {
        if let Some(i) = self.vms.iter().position(|v| v.name == name) {
            let v = &mut self.vms[i];
            if v.ended && v.pid != pid {
                // A new process under an old name: the VM is back.
                v.ended = false;
                v.pid = pid;
            }
            return i as u32;
        }
        self.vms.push(VmEntry {
            name: name.to_string(),
            pid,
            ended: false,
        });
        (self.vms.len() - 1) as u32
    }

    /// Closes the running segment of `cpu` at `ts`: occupancy, lane, wait attribution.
    fn close_segment(&mut self, cpu: u32, ts: u64) {
        let Some(c) = self.cpus.get_mut(cpu as usize) else {
            return;
        };
        if !c.seen {
            return;
        }
        let start = c.since;
        let dur = ts.saturating_sub(start);
        let owner = c.owner;
        if dur > 0 {
            if owner == IDLE {
                c.idle_ns = c.idle_ns.saturating_add(dur);
            } else if owner & OTHER != 0 {
                let id = (owner & !OTHER) as usize;
                if c.comm_ns.len() <= id {
                    c.comm_ns.resize(id + 1, 0);
                }
                c.comm_ns[id] = c.comm_ns[id].saturating_add(dur);
            } else if let Some(t) = self.tasks.get((owner - 1) as usize) {
                let vm = t.vm as usize;
                if c.vm_ns.len() <= vm {
                    c.vm_ns.resize(vm + 1, 0);
                }
                c.vm_ns[vm] = c.vm_ns[vm].saturating_add(dur);
            }
            let waiting = c.waiting.len() as u32;
            match c.lane.back_mut() {
                Some(last)
                    if last.owner == owner && last.waiting == waiting && last.end == start =>
                {
                    last.end = ts;
                }
                _ => c.lane.push_back(Seg {
                    start,
                    end: ts,
                    owner,
                    waiting,
                }),
            }
            let horizon = ts.saturating_sub(self.cfg.history_ns);
            while c.lane.len() > self.cfg.max_lane_segments
                || c.lane.front().is_some_and(|s| s.end < horizon)
            {
                c.lane.pop_front();
            }
            // Everyone waiting in this run queue was kept waiting by `owner`.
            for &w in &c.waiting {
                let Some(t) = self.tasks.get_mut(w as usize) else {
                    continue;
                };
                let from = start.max(t.since);
                let d = ts.saturating_sub(from);
                if d == 0 {
                    continue;
                }
                add_culprit(&mut t.culprits, owner, d);
            }
        }
        c.since = ts;
    }

    fn remove_waiting(&mut self, slot: usize) {
        let Some(t) = self.tasks.get(slot) else {
            return;
        };
        if let Some(c) = self.cpus.get_mut(t.cpu as usize) {
            if let Some(p) = c.waiting.iter().position(|&w| w as usize == slot) {
                c.waiting.swap_remove(p);
                return;
            }
        }
        // Not where we thought (lost events): search every queue.
        for c in &mut self.cpus {
            if let Some(p) = c.waiting.iter().position(|&w| w as usize == slot) {
                c.waiting.swap_remove(p);
                return;
            }
        }
    }

    fn add_waiting(&mut self, slot: usize, cpu: u32) {
        if let Some(c) = self.cpu_mut(cpu) {
            c.waiting.push(slot as u32);
        }
    }

    /// Ends the thread's current state at `ts`, adding the interval to its counters.
    fn account(&mut self, slot: usize, ts: u64) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        let d = ts.saturating_sub(t.since);
        match t.state {
            TState::Running => t.cum.run = t.cum.run.saturating_add(d),
            TState::Waiting => {
                t.cum.wait = t.cum.wait.saturating_add(d);
                t.wait_hist.record(d);
            }
            TState::Sleeping => t.cum.sleep = t.cum.sleep.saturating_add(d),
            TState::Unknown | TState::Exited => {}
        }
        t.since = ts;
    }

    fn update_se(t: &mut Task, se: &SchedEntity, ts: u64, spacing: u64, history: u64) {
        if se.weight != 0 {
            t.weight = se.weight;
        }
        t.vruntime = se.vruntime;
        t.se_seen = true;
        if let Some(prev) = t.last_sum_exec {
            if se.sum_exec_runtime >= prev {
                t.cum.task_clock = t.cum.task_clock.saturating_add(se.sum_exec_runtime - prev);
            }
        }
        t.last_sum_exec = Some(se.sum_exec_runtime);
        if let Some(now) = se.run_delay {
            if let Some(prev) = t.last_run_delay.filter(|p| now >= *p) {
                t.cum.run_delay = t.cum.run_delay.saturating_add(now - prev);
            }
            t.last_run_delay = Some(now);
            t.run_delay_seen = true;
        }
        let due = t
            .series
            .back()
            .is_none_or(|p| ts.saturating_sub(p.ts) >= spacing);
        if due {
            t.series.push_back(VruntimePoint {
                ts,
                vruntime: se.vruntime,
            });
            let cap = (history / spacing.max(1)).clamp(16, 100_000) as usize + 16;
            let horizon = ts.saturating_sub(history);
            while t.series.len() > cap || t.series.front().is_some_and(|p| p.ts < horizon) {
                t.series.pop_front();
            }
        }
    }

    // ----- event handlers -----

    #[inline(never)]
    fn on_switch(&mut self, s: &SchedSwitch) {
        let cpu = s.cpu;
        let ts = s.ts;
        let Some(c) = self.cpu_mut(cpu) else { return };
        c.last_event_ts = ts;
        let cpu_seen = c.seen;
        let cpu_since = c.since;
        let cached = (c.cur_tid == s.prev_tid && c.owner != IDLE && c.owner & OTHER == 0)
            .then(|| (c.owner - 1) as usize);
        self.close_segment(cpu, ts);

        // prev leaves the CPU.
        let prev = match cached {
            Some(slot) if self.tasks.get(slot).is_some_and(|t| t.tid == s.prev_tid) => Some(slot),
            _ => self.slot(s.prev_tid),
        };
        if let Some(p) = prev {
            let spacing = self.cfg.vruntime_spacing_ns;
            let history = self.cfg.history_ns;
            let state = self.tasks[p].state;
            match state {
                TState::Running => self.account(p, ts),
                TState::Unknown => {
                    // It was on this CPU since the last switch here, or since tracking began.
                    let t = &mut self.tasks[p];
                    let from = if cpu_seen {
                        cpu_since.max(t.first_seen)
                    } else {
                        t.first_seen
                    };
                    t.cum.run = t.cum.run.saturating_add(ts.saturating_sub(from));
                    t.since = ts;
                }
                TState::Waiting => {
                    // Missed its switch-in: lost events, or a switch the tracepoint never
                    // reported (seen on some hosts when prev is one of a few system threads).
                    // The task clock it gained since it was last seen is run time, so the
                    // switch-in was at the latest that long before now; the rest was wait.
                    let ran = match (&s.prev_se, self.tasks[p].last_sum_exec) {
                        (Some(se), Some(last)) => se.sum_exec_runtime.saturating_sub(last),
                        _ => 0,
                    };
                    let switched_in = ts.saturating_sub(ran).max(self.tasks[p].since);
                    self.account(p, switched_in);
                    self.remove_waiting(p);
                    self.tasks[p].state = TState::Running;
                    self.account(p, ts);
                }
                TState::Sleeping => self.account(p, ts),
                TState::Exited => {}
            }
            let t = &mut self.tasks[p];
            if t.state != TState::Exited {
                if let Some(se) = &s.prev_se {
                    Self::update_se(t, se, ts, spacing, history);
                }
                if t.resume_from_entry
                    && t.last_exit_ts > t.last_entry_ts
                    && t.last_exit_ts >= t.last_in_ts
                {
                    t.to_out.record(ts - t.last_exit_ts);
                }
                t.cpu = cpu;
                t.last_out_cpu = Some(cpu);
                t.last_out_ts = ts;
                t.pending_resume = None;
                t.since = ts;
                if t.exiting {
                    t.state = TState::Exited;
                    t.ended_at = Some(ts);
                } else if s.prev_preempted() {
                    t.cum.involuntary = t.cum.involuntary.saturating_add(1);
                    t.state = TState::Waiting;
                    t.sub = VcpuState::Waiting;
                    self.add_waiting(p, cpu);
                } else {
                    t.cum.voluntary = t.cum.voluntary.saturating_add(1);
                    t.state = TState::Sleeping;
                    t.sub = VcpuState::Sleeping;
                }
            }
        } else if s.prev_se.is_some() {
            self.note_unknown(s.prev_tid);
        }

        // next takes the CPU.
        let next = self.slot(s.next_tid);
        let owner = match next {
            Some(n) if self.tasks[n].state != TState::Exited => {
                match self.tasks[n].state {
                    TState::Waiting => {
                        self.remove_waiting(n);
                        self.account(n, ts);
                    }
                    TState::Sleeping => self.account(n, ts),
                    TState::Unknown => {
                        // Runnable since tracking began, else we would have seen its wakeup.
                        let t = &mut self.tasks[n];
                        let d = ts.saturating_sub(t.first_seen);
                        t.cum.wait = t.cum.wait.saturating_add(d);
                        if d > 0 {
                            t.wait_hist.record(d);
                        }
                    }
                    TState::Running => {
                        // Still marked running elsewhere (lost switch-out): close that run.
                        self.account(n, ts);
                    }
                    TState::Exited => {}
                }
                let spacing = self.cfg.vruntime_spacing_ns;
                let history = self.cfg.history_ns;
                let t = &mut self.tasks[n];
                if let Some(se) = &s.next_se {
                    Self::update_se(t, se, ts, spacing, history);
                }
                let migrated = t.last_out_cpu.is_some_and(|o| o != cpu);
                if migrated {
                    t.cum.pcpu_changes = t.cum.pcpu_changes.saturating_add(1);
                }
                if cpu < 128 {
                    t.cpus_used |= 1u128 << cpu;
                } else {
                    t.cpus_used |= 1u128 << 127;
                }
                t.state = TState::Running;
                t.sub = VcpuState::Running;
                t.since = ts;
                t.cpu = cpu;
                t.last_in_ts = ts;
                t.pending_resume = Some((ts, migrated));
                if t.recent_ins.len() >= self.cfg.recent_switch_ins.max(1) {
                    t.recent_ins.pop_front();
                }
                t.recent_ins.push_back(SwitchIn {
                    ts,
                    migrated,
                    prev_out: t.last_out_ts,
                });
                (n + 1) as u32
            }
            Some(_) => IDLE,
            None => {
                if s.next_se.is_some() {
                    self.note_unknown(s.next_tid);
                }
                if s.next_tid == 0 {
                    IDLE
                } else {
                    OTHER | self.intern_comm(s.next_comm)
                }
            }
        };
        if let Some(c) = self.cpus.get_mut(cpu as usize) {
            if !c.seen {
                c.seen = true;
                c.first_ts = ts;
            }
            c.since = ts;
            c.owner = owner;
            c.cur_tid = s.next_tid;
        }
    }

    #[inline(never)]
    fn on_wakeup(&mut self, w: &Wakeup) {
        if let Some(c) = self.cpu_mut(w.cpu) {
            c.last_event_ts = w.ts;
        }
        let Some(n) = self.slot(w.tid) else { return };
        let target = if w.target_cpu < MAX_CPUS {
            w.target_cpu
        } else {
            w.cpu
        };
        match self.tasks[n].state {
            TState::Sleeping => self.account(n, w.ts),
            TState::Unknown => {
                let t = &mut self.tasks[n];
                t.cum.sleep = t
                    .cum
                    .sleep
                    .saturating_add(w.ts.saturating_sub(t.first_seen));
                t.since = w.ts;
            }
            // Already runnable (a waking that raced with the switch-out) or gone.
            TState::Running | TState::Waiting | TState::Exited => return,
        }
        let t = &mut self.tasks[n];
        t.state = TState::Waiting;
        t.sub = VcpuState::Waiting;
        t.cpu = target;
        self.add_waiting(n, target);
    }

    #[inline(never)]
    fn on_migrate(&mut self, m: &Migrate) {
        if let Some(c) = self.cpu_mut(m.cpu) {
            c.last_event_ts = m.ts;
        }
        let Some(n) = self.slot(m.tid) else { return };
        self.saw_migrate = true;
        if m.orig_cpu == m.dest_cpu {
            // set_task_cpu() fires the tracepoint even when the CPU does not change, but only
            // bumps se.nr_migrations when it does.
            return;
        }
        let dest = if m.dest_cpu < MAX_CPUS {
            m.dest_cpu
        } else {
            return;
        };
        if self.tasks[n].state == TState::Exited {
            return;
        }
        if self.tasks[n].state == TState::Waiting {
            // Its wait continues in the new queue; attribution up to now goes to the old one.
            self.close_segment(self.tasks[n].cpu, m.ts);
            self.remove_waiting(n);
            self.add_waiting(n, dest);
        }
        let t = &mut self.tasks[n];
        t.cum.migrate_events = t.cum.migrate_events.saturating_add(1);
        if t.state != TState::Running {
            t.cpu = dest;
        }
    }

    #[inline(never)]
    fn on_task_exit(&mut self, x: &TaskExit) {
        let Some(n) = self.slot(x.tid) else { return };
        self.end_task(n, x.ts);
    }

    /// A running thread finishes at its final switch-out; anything else ends now.
    fn end_task(&mut self, n: usize, ts: u64) {
        match self.tasks[n].state {
            TState::Running => self.tasks[n].exiting = true,
            TState::Exited => {}
            TState::Waiting => {
                self.account(n, ts);
                self.remove_waiting(n);
                self.mark_exited(n, ts);
            }
            TState::Sleeping | TState::Unknown => {
                self.account(n, ts);
                self.mark_exited(n, ts);
            }
        }
    }

    fn mark_exited(&mut self, n: usize, ts: u64) {
        let t = &mut self.tasks[n];
        t.state = TState::Exited;
        t.sub = VcpuState::Unknown;
        t.ended_at = Some(ts);
        t.since = ts;
    }

    fn on_kvm_entry(&mut self, e: &KvmEntry) {
        self.saw_entry_exit = true;
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_event_ts = e.ts;
        }
        let Some(n) = self.slot(e.tid) else { return };
        let t = &mut self.tasks[n];
        t.resume_from_entry = true;
        t.last_entry_ts = e.ts;
        if t.state == TState::Running {
            t.sub = VcpuState::InGuest;
        }
        if let Some((ts, migrated)) = t.pending_resume.take() {
            let d = e.ts.saturating_sub(ts);
            if migrated {
                t.resume_migrated.record(d);
            } else {
                t.resume_same.record(d);
            }
        }
        if let Some((i, ts)) = t.pending_exit.take() {
            if let Some(x) = t.exits.get_mut(i) {
                x.latency.record(e.ts.saturating_sub(ts));
            }
        }
    }

    fn exit_index(t: &mut Task, userspace: bool, isa: ExitIsa, reason: u32) -> usize {
        if let Some(i) = t
            .exits
            .iter()
            .position(|x| x.userspace == userspace && x.isa == isa && x.reason == reason)
        {
            return i;
        }
        if t.exits.len() >= MAX_EXIT_REASONS {
            // Garbage or exotic reason codes must not grow memory: one bucket takes the rest.
            if let Some(i) = t.exits.iter().position(|x| x.reason == OTHER_REASONS) {
                return i;
            }
            if let Some(last) = t.exits.last_mut() {
                last.reason = OTHER_REASONS;
                last.isa = ExitIsa::Unknown;
            }
            return t.exits.len() - 1;
        }
        t.exits.push(ExitEntry {
            userspace,
            isa,
            reason,
            count: 0,
            latency: Latency::default(),
        });
        t.exits.len() - 1
    }

    fn on_kvm_exit(&mut self, e: &KvmExit) {
        self.saw_entry_exit = true;
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_event_ts = e.ts;
        }
        let Some(n) = self.slot(e.tid) else { return };
        let t = &mut self.tasks[n];
        let i = Self::exit_index(t, false, e.isa, e.reason);
        t.exits[i].count = t.exits[i].count.saturating_add(1);
        t.cum.exits = t.cum.exits.saturating_add(1);
        t.pending_exit = Some((i, e.ts));
        t.last_exit_ts = e.ts;
        if t.state == TState::Running {
            t.sub = VcpuState::Running;
        }
    }

    fn on_userspace_exit(&mut self, e: &UserspaceExit) {
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_event_ts = e.ts;
        }
        let Some(n) = self.slot(e.tid) else { return };
        let t = &mut self.tasks[n];
        let i = Self::exit_index(t, true, ExitIsa::Unknown, e.reason);
        t.exits[i].count = t.exits[i].count.saturating_add(1);
        // A kvm_exit already counted this exit when the host emits both.
        if !t.resume_from_entry {
            t.cum.exits = t.cum.exits.saturating_add(1);
        }
        t.pending_exit = Some((i, e.ts));
        if t.state == TState::Running {
            t.sub = VcpuState::InVmm;
        }
    }

    #[inline(never)]
    fn on_cross_call(&mut self, x: &CrossCall) {
        if let Some(c) = self.cpu_mut(x.cpu) {
            c.last_event_ts = x.ts;
        }
        if !x.is_vmclear {
            return;
        }
        match x.phase {
            CrossCallPhase::Queue => {
                // Queued from the pCPU loading the vCPU: the current thread there is it.
                let Some(n) = self.slot(x.tid) else { return };
                let t = &mut self.tasks[n];
                t.vmclear_calls = t.vmclear_calls.saturating_add(1);
                if self.open_csd.len() >= MAX_OPEN_CSD {
                    self.open_csd.remove(0);
                }
                self.open_csd.push(OpenCsd {
                    csd: x.csd,
                    ts: x.ts,
                    slot: n as u32,
                });
            }
            CrossCallPhase::Entry => {}
            CrossCallPhase::Exit => {
                if let Some(p) = self.open_csd.iter().position(|o| o.csd == x.csd) {
                    let o = self.open_csd.swap_remove(p);
                    if let Some(t) = self.tasks.get_mut(o.slot as usize) {
                        t.vmclear.record(x.ts.saturating_sub(o.ts));
                    }
                }
            }
        }
    }

    #[inline(never)]
    fn on_guest_gap(&mut self, g: &GuestGap) {
        let Some(n) = self.slot(g.tid) else { return };
        if g.end < g.start {
            self.malformed = self.malformed.saturating_add(1);
            return;
        }
        self.saw_gap = true;
        let t = &mut self.tasks[n];
        t.cum.gaps = t.cum.gaps.saturating_add(1);
        t.cum.gap_ns = t.cum.gap_ns.saturating_add(g.end - g.start);
        if t.resume_from_entry {
            return;
        }
        // The last switch-in inside the gap, with its switch-out also inside: the gap was
        // the scheduler's doing, not an exit to the VMM.
        let hit = t
            .recent_ins
            .iter()
            .rev()
            .find(|s| s.ts <= g.end && s.ts > g.start)
            .copied();
        if let Some(s) = hit {
            if s.prev_out >= g.start && s.prev_out <= s.ts {
                t.resume_from_gap = true;
                let d = g.end - s.ts;
                if s.migrated {
                    t.resume_migrated.record(d);
                } else {
                    t.resume_same.record(d);
                }
                t.to_out.record(s.prev_out - g.start);
            }
        }
    }

    #[inline(never)]
    fn on_lost(&mut self, l: &Lost) {
        self.lost = self.lost.saturating_add(l.count);
        // The loss happened somewhere since the last event we saw from that CPU.
        let from = if l.cpu == u32::MAX {
            self.cpus
                .iter()
                .map(|c| c.last_event_ts)
                .max()
                .unwrap_or(l.ts)
        } else {
            self.cpus
                .get(l.cpu as usize)
                .map_or(l.ts, |c| c.last_event_ts)
        };
        let from = if from == 0 {
            self.start.unwrap_or(l.ts)
        } else {
            from
        };
        self.uncertain_ns = self.uncertain_ns.saturating_add(l.ts.saturating_sub(from));
    }

    #[inline(never)]
    fn on_task_info(&mut self, ti: &TaskInfo) {
        let vm = self.intern_vm(&ti.vm, ti.pid);
        if let Some(n) = self.slot(ti.tid) {
            let t = &mut self.tasks[n];
            if t.pid == ti.pid && t.vm == vm && t.state != TState::Exited {
                t.vcpu = ti.vcpu;
                t.comm = ti.comm;
                t.nice = ti.nice;
                return;
            }
            // The tid now names another thread: retire the old one.
            self.tid_reuse = self.tid_reuse.saturating_add(1);
            self.end_task(n, ti.ts);
            if self.tasks[n].state == TState::Running {
                self.account(n, ti.ts);
                self.mark_exited(n, ti.ts);
            }
        }
        let weight = nice_to_weight(ti.nice);
        let slot = self.tasks.len();
        self.tasks.push(Task {
            tid: ti.tid,
            pid: ti.pid,
            vm,
            vcpu: ti.vcpu,
            comm: ti.comm,
            nice: ti.nice,
            weight,
            first_seen: ti.ts,
            ended_at: None,
            exiting: false,
            state: TState::Unknown,
            sub: VcpuState::Unknown,
            since: ti.ts,
            cpu: 0,
            last_out_cpu: None,
            last_out_ts: 0,
            cum: Cum::default(),
            // Counted from tracking start where the source read the kernel's figures then.
            last_sum_exec: ti.schedstat.map(|s| s.run_ns),
            last_run_delay: ti.schedstat.map(|s| s.wait_ns),
            se_seen: false,
            run_delay_seen: false,
            vruntime: 0,
            cpus_used: 0,
            wait_hist: Latency::default(),
            resume_same: Latency::default(),
            resume_migrated: Latency::default(),
            to_out: Latency::default(),
            vmclear: Latency::default(),
            vmclear_calls: 0,
            resume_from_entry: false,
            resume_from_gap: false,
            exits: Vec::new(),
            pending_exit: None,
            pending_resume: None,
            last_exit_ts: 0,
            last_entry_ts: 0,
            last_in_ts: 0,
            recent_ins: VecDeque::new(),
            culprits: Vec::new(),
            series: VecDeque::new(),
            checkpoints: VecDeque::new(),
        });
        self.tid_slot.insert(ti.tid, slot as u32);
        self.unknown_tids.remove(&ti.tid);
        // If this thread is on a CPU right now, that CPU's owner becomes it from here on.
        let now = ti.ts;
        for cpu in 0..self.cpus.len() {
            if self.cpus[cpu].seen && self.cpus[cpu].cur_tid == ti.tid {
                self.close_segment(cpu as u32, now);
                self.cpus[cpu].owner = (slot + 1) as u32;
                let t = &mut self.tasks[slot];
                t.state = TState::Running;
                t.sub = VcpuState::Running;
                t.cpu = cpu as u32;
                t.since = now;
                t.last_in_ts = now;
            }
        }
    }

    #[inline(never)]
    fn on_vm_ended(&mut self, v: &VmEnded) {
        for vm in &mut self.vms {
            if vm.name == v.vm || (v.pid != 0 && vm.pid == v.pid) {
                vm.ended = true;
            }
        }
        for n in 0..self.tasks.len() {
            if self.tasks[n].pid == v.pid && self.tasks[n].state != TState::Exited {
                if self.tasks[n].state == TState::Running {
                    self.account(n, v.ts);
                    let cpu = self.tasks[n].cpu;
                    self.close_segment(cpu, v.ts);
                    if let Some(c) = self.cpus.get_mut(cpu as usize) {
                        if c.owner == (n + 1) as u32 {
                            // We no longer know who runs there; count it as the old comm.
                            c.owner = IDLE;
                        }
                    }
                    self.mark_exited(n, v.ts);
                } else {
                    self.end_task(n, v.ts);
                }
            }
        }
    }

    // ----- snapshots -----

    /// Everything over the whole run.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_window(Window::WholeRun)
    }

    /// Per-vCPU, per-VM and fairness figures over `window` (pCPU occupancy always carries all
    /// three windows). Latency percentiles and culprits always cover the whole run.
    pub fn snapshot_window(&self, window: Window) -> Snapshot {
        let now = self.now;
        let start = self.start.unwrap_or(0);
        let win_ns = match window {
            Window::LastSecond => Some(1_000_000_000u64),
            Window::LastTenSeconds => Some(10_000_000_000u64),
            Window::WholeRun => None,
        };
        // Per task: counters over the window and its elapsed time in it.
        let figures: Vec<(Cum, u64)> = self
            .tasks
            .iter()
            .map(|t| {
                let end = t.end_or(now);
                let total = t.cum_at(end);
                match win_ns {
                    None => (total, end.saturating_sub(t.first_seen)),
                    Some(w) => {
                        let from = now.saturating_sub(w);
                        // The newest checkpoint at or before the window start.
                        match t.checkpoints.iter().rev().find(|(ts, _)| *ts <= from) {
                            Some((ts, c)) if *ts >= t.first_seen => {
                                (total.minus(c), end.saturating_sub(*ts))
                            }
                            _ => (total, end.saturating_sub(t.first_seen)),
                        }
                    }
                }
            })
            .collect();

        let entitled = self.entitled_shares(&figures);

        let mut vcpus = Vec::with_capacity(self.tasks.len());
        let mut all_same = Latency::default();
        let mut all_mig = Latency::default();
        let mut all_out = Latency::default();
        let mut all_vmclear = Latency::default();
        let mut all_vmclear_calls = 0u64;
        let mut sources = (false, false);
        for (i, t) in self.tasks.iter().enumerate() {
            let (c, elapsed) = figures[i];
            let secs = elapsed as f64 / 1e9;
            let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
            let migrations = if self.saw_migrate {
                c.migrate_events
            } else {
                c.pcpu_changes
            };
            let lag = if t.is_runnable() || t.state == TState::Sleeping {
                let min = self
                    .tasks
                    .iter()
                    .filter(|o| o.is_runnable() && o.cpu == t.cpu && o.se_seen)
                    .map(|o| o.vruntime)
                    .min();
                min.map_or(0, |m| {
                    (t.vruntime as i128 - m as i128).clamp(i64::MIN as i128, i64::MAX as i128)
                        as i64
                })
            } else {
                0
            };
            let mut exits: Vec<ExitStats> = t
                .exits
                .iter()
                .map(|x| ExitStats {
                    reason: if x.reason == OTHER_REASONS {
                        "(other reasons)".to_string()
                    } else if x.userspace {
                        userspace_exit_name(x.reason)
                    } else {
                        hw_exit_name(x.isa, x.reason)
                    },
                    count: x.count,
                    per_second: {
                        let s = t.end_or(now).saturating_sub(t.first_seen) as f64 / 1e9;
                        if s > 0.0 {
                            x.count as f64 / s
                        } else {
                            0.0
                        }
                    },
                    latency: x.latency.percentiles(),
                })
                .collect();
            exits.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
            let resume = resume_latency(
                &t.resume_same,
                &t.resume_migrated,
                &t.to_out,
                &t.vmclear,
                t.vmclear_calls,
                resume_source(t.resume_from_entry, t.resume_from_gap),
            );
            all_same.merge(&t.resume_same);
            all_mig.merge(&t.resume_migrated);
            all_out.merge(&t.to_out);
            all_vmclear.merge(&t.vmclear);
            all_vmclear_calls = all_vmclear_calls.saturating_add(t.vmclear_calls);
            sources.0 |= t.resume_from_entry;
            sources.1 |= t.resume_from_gap;
            let state = match t.state {
                TState::Unknown | TState::Exited => VcpuState::Unknown,
                TState::Waiting => VcpuState::Waiting,
                TState::Sleeping => VcpuState::Sleeping,
                TState::Running => t.sub,
            };
            vcpus.push(VcpuSnapshot {
                vm: self
                    .vms
                    .get(t.vm as usize)
                    .map_or_else(String::new, |v| v.name.clone()),
                pid: t.pid,
                vcpu: t.vcpu,
                tid: t.tid,
                comm: t.comm.to_string(),
                state: Some(state),
                pcpu: (t.state != TState::Unknown).then_some(t.cpu),
                vruntime: t.vruntime,
                lag,
                weight: t.weight,
                nice: t.nice,
                run_ns: c.run,
                task_clock_ns: c.task_clock,
                run_delay_ns: t.run_delay_seen.then_some(c.run_delay),
                wait_ns: c.wait,
                sleep_ns: c.sleep,
                cpu_share: if elapsed > 0 {
                    c.run as f64 / elapsed as f64
                } else {
                    0.0
                },
                entitled_share: entitled[i],
                switches: c.voluntary.saturating_add(c.involuntary),
                voluntary_switches: c.voluntary,
                involuntary_switches: c.involuntary,
                migrations,
                pcpu_changes: c.pcpu_changes,
                migrations_per_second: per_s(migrations),
                exits_per_second: per_s(c.exits),
                wait: t.wait_hist.percentiles(),
                resume,
                exits,
                guest_gaps: c.gaps,
                guest_gap_ns: c.gap_ns,
                elapsed_ns: elapsed,
                ended: t.state == TState::Exited || t.exiting,
                latency_buckets: VcpuLatencyBuckets {
                    wait: t.wait_hist.buckets(),
                    resume_same_pcpu: t.resume_same.buckets(),
                    resume_migrated: t.resume_migrated.buckets(),
                },
            });
        }

        // Per VM.
        let mut vms = Vec::with_capacity(self.vms.len());
        let mut vm_ratios = Vec::new();
        for (vi, v) in self.vms.iter().enumerate() {
            let members: Vec<usize> = (0..self.tasks.len())
                .filter(|&i| self.tasks[i].vm as usize == vi)
                .collect();
            let vcpu_members: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| self.tasks[i].vcpu.is_some())
                .collect();
            let set = if vcpu_members.is_empty() {
                &members
            } else {
                &vcpu_members
            };
            let run_ns = set
                .iter()
                .fold(0u64, |a, &i| a.saturating_add(vcpus[i].run_ns));
            let wait_ns = set
                .iter()
                .fold(0u64, |a, &i| a.saturating_add(vcpus[i].wait_ns));
            let cpu_share: f64 = set.iter().map(|&i| vcpus[i].cpu_share).sum();
            let entitled_share: f64 = set.iter().map(|&i| vcpus[i].entitled_share).sum();
            let ratios: Vec<f64> = set
                .iter()
                .filter(|&&i| vcpus[i].entitled_share > 0.0)
                .map(|&i| vcpus[i].cpu_share / vcpus[i].entitled_share)
                .collect();
            if entitled_share > 0.0 {
                vm_ratios.push(cpu_share / entitled_share);
            }
            vms.push(VmSnapshot {
                name: v.name.clone(),
                pid: v.pid,
                vcpus: vcpu_members.len() as u32,
                run_ns,
                wait_ns,
                cpu_share,
                entitled_share,
                fairness: jain(&ratios),
                ended: v.ended,
            });
        }

        // Per pCPU.
        let mut pcpus = Vec::new();
        for (ci, c) in self.cpus.iter().enumerate() {
            if !c.seen {
                continue;
            }
            let mut idle = c.idle_ns;
            let mut vm_ns = c.vm_ns.clone();
            let mut comm_ns = c.comm_ns.clone();
            let open = now.saturating_sub(c.since);
            self.add_owner(c.owner, open, &mut idle, &mut vm_ns, &mut comm_ns);
            let occupancy_run = self.occupancy(idle, &vm_ns, &comm_ns);
            let time = PcpuTime {
                idle_ns: idle,
                vcpu_ns: vm_ns.iter().fold(0u64, |a, &b| a.saturating_add(b)),
                other_ns: comm_ns.iter().fold(0u64, |a, &b| a.saturating_add(b)),
            };
            let occ_window = |w: u64| {
                let from = now.saturating_sub(w);
                let (mut idle, mut vm_ns, mut comm_ns) = (0u64, Vec::new(), Vec::new());
                for s in c.lane.iter().rev() {
                    if s.end <= from {
                        break;
                    }
                    let d = s.end.saturating_sub(s.start.max(from));
                    self.add_owner(s.owner, d, &mut idle, &mut vm_ns, &mut comm_ns);
                }
                let d = now.saturating_sub(c.since.max(from));
                self.add_owner(c.owner, d, &mut idle, &mut vm_ns, &mut comm_ns);
                self.occupancy(idle, &vm_ns, &comm_ns)
            };
            let mut lane: Vec<LaneSegment> = c.lane.iter().map(|s| self.lane_segment(s)).collect();
            if now > c.since {
                lane.push(self.lane_segment(&Seg {
                    start: c.since,
                    end: now,
                    owner: c.owner,
                    waiting: c.waiting.len() as u32,
                }));
            }
            pcpus.push(PcpuSnapshot {
                cpu: ci as u32,
                current_tid: (c.owner != IDLE && c.owner & OTHER == 0)
                    .then(|| self.tasks.get((c.owner - 1) as usize).map(|t| t.tid))
                    .flatten(),
                waiting: c.waiting.len() as u32,
                occupancy_1s: occ_window(1_000_000_000),
                occupancy_10s: occ_window(10_000_000_000),
                occupancy_run,
                time,
                lane,
            });
        }

        // Wait culprits, largest first, at most 8 per waiting thread.
        let mut wait_culprits = Vec::new();
        for t in &self.tasks {
            let mut cs: Vec<(u32, u64)> = t.culprits.clone();
            cs.sort_by_key(|c| std::cmp::Reverse(c.1));
            for (owner, ns) in cs.into_iter().take(8) {
                wait_culprits.push(WaitCulprit {
                    tid: t.tid,
                    culprit: self.owner_label(owner),
                    ns,
                });
            }
        }

        let vruntime = self
            .tasks
            .iter()
            .filter(|t| !t.series.is_empty())
            .map(|t| VruntimeSeries {
                tid: t.tid,
                label: t.label(&self.vms),
                points: t.series.iter().copied().collect(),
            })
            .collect();

        let resume = resume_latency(
            &all_same,
            &all_mig,
            &all_out,
            &all_vmclear,
            all_vmclear_calls,
            resume_source(sources.0, sources.1),
        );

        let span = now.saturating_sub(start);
        Snapshot {
            start,
            ts: now,
            window,
            events_per_second: if span > 0 {
                self.events as f64 / (span as f64 / 1e9)
            } else {
                0.0
            },
            vcpus,
            pcpus,
            vms,
            vruntime,
            wait_culprits,
            resume,
            fairness: jain(&vm_ratios),
            health: self.health(),
        }
    }

    fn health(&self) -> Health {
        let mut notes = Vec::new();
        let has_vcpus = self.tasks.iter().any(|t| t.vcpu.is_some());
        if has_vcpus && !self.saw_entry_exit {
            notes.push("no guest entry/exit events seen on this host".to_string());
        }
        if has_vcpus && !self.saw_entry_exit && !self.saw_gap {
            notes.push(
                "no guest gap records either: resume latency cannot be measured for these vCPUs"
                    .to_string(),
            );
        }
        if self.saw_migrate {
            notes.push(
                "migrations counted from sched_migrate_task (= se.nr_migrations)".to_string(),
            );
        } else if !self.tasks.is_empty() {
            notes.push(
                "no sched_migrate_task events: migrations are switch-ins on another pCPU"
                    .to_string(),
            );
        }
        if self.lost > 0 {
            notes.push(format!(
                "{} events lost: figures over {:.1} ms of the run are uncertain",
                self.lost,
                self.uncertain_ns as f64 / 1e6
            ));
        }
        if self.out_of_order > 0 {
            notes.push(format!(
                "{} events arrived later than the {:.1} ms reorder window and were folded in late ({})",
                self.out_of_order,
                self.cfg.reorder_window_ns as f64 / 1e6,
                self.late_kinds.join(", ")
            ));
        }
        Health {
            events: self.events,
            lost_events: self.lost,
            out_of_order: self.out_of_order,
            unknown_tids: self.unknown_count,
            tid_reuse: self.tid_reuse,
            uncertain_ns: self.uncertain_ns,
            malformed: self.malformed,
            notes,
        }
    }

    fn add_owner(
        &self,
        owner: u32,
        d: u64,
        idle: &mut u64,
        vm_ns: &mut Vec<u64>,
        comm_ns: &mut Vec<u64>,
    ) {
        if d == 0 {
            return;
        }
        if owner == IDLE {
            *idle = idle.saturating_add(d);
        } else if owner & OTHER != 0 {
            let id = (owner & !OTHER) as usize;
            if comm_ns.len() <= id {
                comm_ns.resize(id + 1, 0);
            }
            comm_ns[id] = comm_ns[id].saturating_add(d);
        } else if let Some(t) = self.tasks.get((owner - 1) as usize) {
            let vm = t.vm as usize;
            if vm_ns.len() <= vm {
                vm_ns.resize(vm + 1, 0);
            }
            vm_ns[vm] = vm_ns[vm].saturating_add(d);
        }
    }

    fn occupancy(&self, idle: u64, vm_ns: &[u64], comm_ns: &[u64]) -> Occupancy {
        let total = vm_ns
            .iter()
            .chain(comm_ns.iter())
            .fold(idle, |a, &b| a.saturating_add(b));
        if total == 0 {
            return Occupancy::default();
        }
        let f = |x: u64| x as f64 / total as f64;
        let mut vms: Vec<(String, f64)> = vm_ns
            .iter()
            .enumerate()
            .filter(|(_, &ns)| ns > 0)
            .map(|(i, &ns)| {
                (
                    self.vms
                        .get(i)
                        .map_or_else(|| "?".into(), |v| v.name.clone()),
                    f(ns),
                )
            })
            .collect();
        vms.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut others: Vec<(String, f64)> = comm_ns
            .iter()
            .enumerate()
            .filter(|(_, &ns)| ns > 0)
            .map(|(i, &ns)| {
                (
                    self.comms
                        .get(i)
                        .map_or_else(|| "?".into(), |c| c.to_string()),
                    f(ns),
                )
            })
            .collect();
        others.sort_by(|a, b| b.1.total_cmp(&a.1));
        Occupancy {
            idle: f(idle),
            vms,
            others,
        }
    }

    fn owner_label(&self, owner: u32) -> String {
        if owner == IDLE {
            "idle".to_string()
        } else if owner & OTHER != 0 {
            self.comms
                .get((owner & !OTHER) as usize)
                .map_or_else(|| "(other)".into(), |c| c.to_string())
        } else {
            self.tasks
                .get((owner - 1) as usize)
                .map_or_else(|| "?".into(), |t| t.label(&self.vms))
        }
    }

    fn lane_segment(&self, s: &Seg) -> LaneSegment {
        let owner = if s.owner == IDLE {
            LaneOwner::Idle
        } else if s.owner & OTHER != 0 {
            LaneOwner::Other {
                comm: self.owner_label(s.owner),
            }
        } else {
            match self.tasks.get((s.owner - 1) as usize) {
                Some(t) => LaneOwner::Vcpu {
                    vm: self
                        .vms
                        .get(t.vm as usize)
                        .map_or_else(String::new, |v| v.name.clone()),
                    vcpu: t.vcpu,
                    tid: t.tid,
                },
                None => LaneOwner::Idle,
            }
        };
        LaneSegment {
            start: s.start,
            end: s.end,
            owner,
            waiting: s.waiting,
        }
    }

    /// Fraction of pCPU `cpu`'s observed time not taken by untracked tasks: what tracked
    /// threads could have shared.
    fn tracked_capacity(&self, cpu: u32) -> f64 {
        let Some(c) = self.cpus.get(cpu as usize).filter(|c| c.seen) else {
            return 1.0;
        };
        let mut others = c.comm_ns.iter().fold(0u64, |a, &b| a.saturating_add(b));
        let mut total = c
            .vm_ns
            .iter()
            .fold(c.idle_ns.saturating_add(others), |a, &b| {
                a.saturating_add(b)
            });
        let open = self.now.saturating_sub(c.since);
        total = total.saturating_add(open);
        if c.owner & OTHER != 0 {
            others = others.saturating_add(open);
        }
        if total == 0 {
            1.0
        } else {
            1.0 - others as f64 / total as f64
        }
    }

    /// Weighted max-min fair share per thread (see the module docs).
    fn entitled_shares(&self, figures: &[(Cum, u64)]) -> Vec<f64> {
        let n = self.tasks.len();
        let mut out = vec![0.0; n];
        // Group threads whose used pCPU sets overlap (transitively).
        let mut group: Vec<usize> = (0..n).collect();
        fn find(g: &mut [usize], mut i: usize) -> usize {
            while g[i] != i {
                g[i] = g[g[i]];
                i = g[i];
            }
            i
        }
        for i in 0..n {
            for j in (i + 1)..n {
                if self.tasks[i].cpus_used & self.tasks[j].cpus_used != 0 {
                    let (a, b) = (find(&mut group, i), find(&mut group, j));
                    if a != b {
                        group[a] = b;
                    }
                }
            }
        }
        let mut roots: Vec<usize> = (0..n).map(|i| find(&mut group, i)).collect();
        let members_of = |r: usize, roots: &[usize]| -> Vec<usize> {
            (0..n)
                .filter(|&i| roots[i] == r && self.tasks[i].cpus_used != 0)
                .collect()
        };
        let mut done = vec![false; n];
        for r in 0..n {
            if done[r] {
                continue;
            }
            let members = members_of(roots[r], &roots);
            for &m in &members {
                done[m] = true;
            }
            done[r] = true;
            if members.is_empty() {
                continue;
            }
            let mask = members
                .iter()
                .fold(0u128, |a, &m| a | self.tasks[m].cpus_used);
            let cpus: f64 = (0..128u32)
                .filter(|b| mask & (1u128 << b) != 0)
                .map(|b| self.tracked_capacity(b))
                .sum();
            let demand: Vec<f64> = members
                .iter()
                .map(|&m| {
                    let (c, el) = figures[m];
                    if el == 0 {
                        0.0
                    } else {
                        (c.run.saturating_add(c.wait) as f64 / el as f64).min(1.0)
                    }
                })
                .collect();
            // Water-filling: share capacity by weight, cap at demand, redistribute the rest.
            let mut open: Vec<usize> = (0..members.len()).collect();
            let mut capacity = cpus;
            let mut alloc = vec![0.0f64; members.len()];
            while !open.is_empty() && capacity > 1e-12 {
                let wsum: f64 = open
                    .iter()
                    .map(|&k| self.tasks[members[k]].weight.max(1) as f64)
                    .sum();
                let mut capped = Vec::new();
                for &k in &open {
                    let fair = capacity * self.tasks[members[k]].weight.max(1) as f64 / wsum;
                    if fair >= demand[k] {
                        capped.push(k);
                    }
                }
                if capped.is_empty() {
                    for &k in &open {
                        alloc[k] = capacity * self.tasks[members[k]].weight.max(1) as f64 / wsum;
                    }
                    break;
                }
                for &k in &capped {
                    alloc[k] = demand[k];
                    capacity -= demand[k];
                }
                open.retain(|k| !capped.contains(k));
            }
            for (k, &m) in members.iter().enumerate() {
                out[m] = alloc[k];
            }
        }
        roots.clear();
        out
    }
}

/// Events are ~200 bytes: fetching a few ahead hides the memory latency the per-event work
/// would otherwise wait on (the stream is read once, front to back).
const PREFETCH_AHEAD: usize = 16;

#[inline(always)]
fn prefetch(ev: Option<&Event>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(ev) = ev {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (ev as *const Event).cast::<i8>();
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is only a hint: it never
        // faults or reads into the program, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ev;
}

fn add_culprit(list: &mut Vec<(u32, u64)>, owner: u32, d: u64) {
    if let Some(e) = list.iter_mut().find(|e| e.0 == owner) {
        e.1 = e.1.saturating_add(d);
    } else if list.len() < MAX_CULPRITS {
        list.push((owner, d));
    } else if let Some(e) = list.last_mut() {
        // Past the cap the smallest bucket absorbs the rest; totals stay right.
        e.1 = e.1.saturating_add(d);
    }
}

fn resume_source(entry: bool, gap: bool) -> &'static str {
    if entry {
        "kvm_entry"
    } else if gap {
        "guest_gap"
    } else {
        "none"
    }
}

fn resume_latency(
    same: &Latency,
    migrated: &Latency,
    to_out: &Latency,
    vmclear: &Latency,
    vmclear_calls: u64,
    source: &str,
) -> ResumeLatency {
    let same_pcpu = same.percentiles();
    let migrated = migrated.percentiles();
    let (cost50, cost99) = if same_pcpu.count > 0 && migrated.count > 0 {
        (
            migrated.p50 as i64 - same_pcpu.p50 as i64,
            migrated.p99 as i64 - same_pcpu.p99 as i64,
        )
    } else {
        (0, 0)
    };
    ResumeLatency {
        same_pcpu,
        migrated,
        to_switch_out: to_out.percentiles(),
        vmclear_calls,
        vmclear: vmclear.percentiles(),
        migration_cost_p50: cost50,
        migration_cost_p99: cost99,
        source: source.to_string(),
    }
}

/// Jain's fairness index: (Σx)² / (n·Σx²); 1 when all equal, 1/n when one takes everything.
pub fn jain(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || sq <= 0.0 {
        1.0
    } else {
        (sum * sum) / (n * sq)
    }
}

/// The kernel's `sched_prio_to_weight` table (nice -20..=19), textbook scale (nice 0 = 1024).
pub const NICE_TO_WEIGHT: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// Scheduler weight of a nice value (clamped to -20..=19).
pub fn nice_to_weight(nice: i32) -> u32 {
    NICE_TO_WEIGHT[(nice.clamp(-20, 19) + 20) as usize]
}
