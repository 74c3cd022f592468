//! What every view reads: a plain, serde-able picture of the model at one instant.
//!
//! The TUI renders these, `report` prints them (text or JSON) and exporters walk them.
//! Architecture invariant: views never reach into the model's internals; if a view needs
//! a figure, it is added here and computed in the model.

use serde::{Deserialize, Serialize};

use crate::Health;

/// Which time range a set of figures covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    LastSecond,
    LastTenSeconds,
    #[default]
    WholeRun,
}

/// Where a vCPU thread is right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VcpuState {
    /// Running guest code (between kvm_entry and kvm_exit, or inferred from guest gaps).
    InGuest,
    /// On a CPU in the host kernel (exit handling, or when entry/exit are not observable).
    Running,
    /// On a CPU in the VMM's user space (after a userspace exit).
    InVmm,
    /// Runnable, waiting in a run queue.
    Waiting,
    /// Blocked (voluntary switch-out).
    Sleeping,
    /// Exited, or not seen yet.
    Unknown,
}

/// The one label of a tracked thread: `vm0/vcpu1` for a vCPU, `vm0/COMM` for another thread
/// of the VM's process.
pub fn thread_label(vm: &str, vcpu: Option<u32>, comm: &dyn std::fmt::Display) -> String {
    match vcpu {
        Some(i) => format!("{vm}/vcpu{i}"),
        None => format!("{vm}/{comm}"),
    }
}

impl VcpuState {
    /// The one table of state names: (long, as the exporters label slices; short, for a
    /// table column in the dashboard and the text report).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            VcpuState::InGuest => ("in guest", "guest"),
            VcpuState::Running => ("running (host)", "host"),
            VcpuState::InVmm => ("in VMM", "vmm"),
            VcpuState::Waiting => ("waiting (runnable)", "wait"),
            VcpuState::Sleeping => ("sleeping", "sleep"),
            VcpuState::Unknown => ("exited", "?"),
        }
    }

    /// The state's name as the exporters label slices.
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// The state's name in a table column; `?` when it is not known.
    pub fn short_name(state: Option<VcpuState>) -> &'static str {
        state.unwrap_or(VcpuState::Unknown).names().1
    }

    /// On a pCPU: the states whose time is `run_ns`.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            VcpuState::InGuest | VcpuState::Running | VcpuState::InVmm
        )
    }
}

/// Latency percentiles of one histogram, ns.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// Upper bounds of the latency buckets that histogram sinks (the Prometheus exporter) share,
/// ns. A 1-2.5-5 series from 5 µs to 25 ms, 12 bounds: resume latency sits at 1-10 µs on
/// VT-x/AMD-V and 40-80 µs on PVM, run-queue waits at 0.1-10 ms (EEVDF's base slice is 3 ms,
/// a few waiters make tens of ms), so each of those ranges gets three to four buckets; past
/// 25 ms only the count and sum matter. Twelve bounds keep a classic histogram at 15 series
/// per vCPU (with `+Inf`, sum and count).
pub const LATENCY_BUCKET_BOUNDS_NS: [u64; 12] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 25_000_000,
];

/// One latency distribution as counts per bucket of [`LATENCY_BUCKET_BOUNDS_NS`]: what a
/// Prometheus histogram carries. Values are binned at the HDR histogram's resolution (1%), so
/// a value within 1% of a bound may land in the neighbouring bucket.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyBuckets {
    /// `counts[i]`: values in (bound[i-1], bound[i]]; the last entry: above the largest bound.
    pub counts: [u64; LATENCY_BUCKET_BOUNDS_NS.len() + 1],
    /// Sum of the values, ns.
    pub sum_ns: u64,
}

impl LatencyBuckets {
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }
}

/// A vCPU's latency distributions as buckets (whole run), for histogram sinks.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct VcpuLatencyBuckets {
    /// Run-queue waits (the same waits as `VcpuSnapshot::wait`).
    pub wait: LatencyBuckets,
    /// Switch-in → guest running, same pCPU as last time.
    pub resume_same_pcpu: LatencyBuckets,
    /// Switch-in → guest running, on another pCPU.
    pub resume_migrated: LatencyBuckets,
}

/// Resume latency split by whether the vCPU came back on the pCPU it last ran on.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ResumeLatency {
    /// Switch-in → guest running again, vCPU stayed on its pCPU.
    pub same_pcpu: Percentiles,
    /// Switch-in → guest running again, vCPU came back on another pCPU (VMCS reload).
    pub migrated: Percentiles,
    /// Guest's last instruction → switch-out (same split does not apply).
    pub to_switch_out: Percentiles,
    /// VMCLEAR cross-calls (VT-x: the old pCPU clears the VMCS) seen for these switch-ins.
    #[serde(default)]
    pub vmclear_calls: u64,
    /// Cross-call queue → function exit on the old pCPU, ns: the wait of the vCPU's load.
    #[serde(default)]
    pub vmclear: Percentiles,
    /// Of that, queue → function entry on the old pCPU (the IPI's delivery), ns.
    #[serde(default)]
    pub vmclear_delivery: Percentiles,
    /// Of that, function entry → exit (the VMCLEAR itself), ns.
    #[serde(default)]
    pub vmclear_run: Percentiles,
    /// The part of `migrated.mean - same_pcpu.mean` the VMCLEARs' time accounts for (1.0 =
    /// all of it; more than 1 when the rest of a migrated resume is faster than a same-pCPU
    /// one). `None` without VMCLEARs or without a positive difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmclear_explains: Option<f64>,
    /// `migrated.p50 - same_pcpu.p50`, ns (negative if migration was not slower).
    pub migration_cost_p50: i64,
    pub migration_cost_p99: i64,
    /// Where the latency comes from: "kvm_entry", "guest_gap" or "none".
    pub source: String,
}

/// Exit counts and exit→entry latency for one exit reason.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ExitStats {
    /// Human name ("IO", "EPT_VIOLATION", "userspace:IO", ...).
    pub reason: String,
    pub count: u64,
    pub per_second: f64,
    /// Exit → next entry, ns (empty when the host emits no kvm_entry).
    pub latency: Percentiles,
}

/// One vCPU thread.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct VcpuSnapshot {
    pub vm: String,
    pub pid: u32,
    pub vcpu: Option<u32>,
    pub tid: u32,
    pub comm: String,
    pub state: Option<VcpuState>,
    /// pCPU it is on now (or last ran on).
    pub pcpu: Option<u32>,
    pub vruntime: u64,
    /// A switch (or a counters-mode sample) has told its vruntime: until one does, `vruntime`
    /// and `lag` are 0 and the views show `-` (a vCPU asleep since tracking began, such as a
    /// guest's idle AP, read "0.000s").
    #[serde(default)]
    pub vruntime_seen: bool,
    /// vruntime minus the smallest vruntime among tracked tasks on its run queue, ns.
    pub lag: i64,
    pub weight: u32,
    pub nice: i32,
    /// Wall time on CPU from switch timestamps, ns.
    pub run_ns: u64,
    /// Task-clock run time from `se.sum_exec_runtime` deltas, ns (excludes steal).
    pub task_clock_ns: u64,
    /// Run-queue wait by the kernel's own counter, ns: `sched_info.run_delay` deltas between
    /// switches, the figure `/proc/<pid>/task/<tid>/schedstat` reports. `wait_ns` times the
    /// same waits from tracepoints, which fire a few µs after the kernel starts a wait's
    /// clock. `None` where the kernel lacks CONFIG_SCHED_INFO or the source predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_delay_ns: Option<u64>,
    /// Run-queue wait from switch and wakeup timestamps, ns.
    pub wait_ns: u64,
    pub sleep_ns: u64,
    /// Fraction of elapsed time on CPU (0..=1) and what its weight entitles it to.
    pub cpu_share: f64,
    pub entitled_share: f64,
    pub switches: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    /// Switch-ins on a different pCPU than the previous switch-out (what costs a VMCS reload).
    #[serde(default)]
    pub pcpu_changes: u64,
    pub migrations_per_second: f64,
    pub exits_per_second: f64,
    pub wait: Percentiles,
    pub resume: ResumeLatency,
    pub exits: Vec<ExitStats>,
    /// Guest-reported off-CPU gaps (bundled VMM only).
    pub guest_gaps: u64,
    pub guest_gap_ns: u64,
    /// Time this thread was tracked (first seen → exit or now), ns: the denominator of the
    /// shares.
    #[serde(default)]
    pub elapsed_ns: u64,
    /// The thread has exited or its VM has ended: its figures are final.
    #[serde(default)]
    pub ended: bool,
    /// Counters mode: the time of the sample its figures end at (they cover
    /// `[sampled_at - elapsed_ns, sampled_at]`); `None` where switch events placed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_at: Option<u64>,
    /// Latency distributions as buckets (histogram sinks); JSON reports leave them out.
    #[serde(default, skip_serializing)]
    pub latency_buckets: VcpuLatencyBuckets,
}

impl VcpuSnapshot {
    /// The order rows are listed in where nothing else sorts them (the dashboard's vCPU
    /// table, the text report): by VM (its name, then its process), then vCPU number, a VM's
    /// other tracked threads after its vCPUs, then tid. Not the model's order, which is the
    /// order threads were announced in (a /proc scan puts vm1/0 between vm0/0 and vm0/1).
    pub fn listing_key(&self) -> (&str, u32, bool, Option<u32>, u32) {
        (
            self.vm.as_str(),
            self.pid,
            self.vcpu.is_none(),
            self.vcpu,
            self.tid,
        )
    }

    /// The state column's text (dashboard, text report): `ended` once the thread has exited
    /// or its VM ended, else [`VcpuState::short_name`]. An ended thread's state is not known
    /// (`?`), which read as a thread kvmscope failed to follow.
    pub fn state_name(&self) -> &'static str {
        if self.ended {
            "ended"
        } else {
            VcpuState::short_name(self.state)
        }
    }
}

/// What ran on a pCPU during one slice of a lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaneOwner {
    Idle,
    /// A tracked vCPU thread.
    Vcpu {
        vm: String,
        vcpu: Option<u32>,
        tid: u32,
    },
    /// Any other task, by comm.
    Other {
        comm: String,
    },
}

/// One stretch of time on a pCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneSegment {
    pub start: u64,
    pub end: u64,
    pub owner: LaneOwner,
    /// Tracked tasks waiting in this pCPU's run queue during the segment.
    pub waiting: u32,
}

/// Occupancy shares of a pCPU over a window (fractions summing to 1).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Occupancy {
    pub idle: f64,
    /// Share per VM name.
    pub vms: Vec<(String, f64)>,
    /// Share of untracked tasks, largest first, by comm.
    pub others: Vec<(String, f64)>,
}

/// Whole-run time of a pCPU by who ran, ns (the occupancy shares as times).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PcpuTime {
    pub idle_ns: u64,
    /// Tracked vCPU threads.
    pub vcpu_ns: u64,
    /// Any other task.
    pub other_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct PcpuSnapshot {
    pub cpu: u32,
    /// Tracked tid running now, if any.
    pub current_tid: Option<u32>,
    pub waiting: u32,
    pub occupancy_1s: Occupancy,
    pub occupancy_10s: Occupancy,
    pub occupancy_run: Occupancy,
    /// Whole-run time by owner kind since the pCPU was first seen.
    #[serde(default)]
    pub time: PcpuTime,
    /// Recent history, oldest first, covering at least the last 10 s.
    pub lane: Vec<LaneSegment>,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct VmSnapshot {
    pub name: String,
    pub pid: u32,
    pub vcpus: u32,
    pub run_ns: u64,
    pub wait_ns: u64,
    pub cpu_share: f64,
    pub entitled_share: f64,
    /// Jain's fairness index over weight-normalised shares of its vCPUs (1 = perfectly fair).
    pub fairness: f64,
    pub ended: bool,
    /// Exits by reason, summed over this process's threads (retired ones included), in
    /// reason order.
    #[serde(default)]
    pub exits: Vec<(String, u64)>,
}

/// Who ran while a vCPU waited ("CPU ready" with the culprit).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct WaitCulprit {
    /// The waiting vCPU's tid.
    pub tid: u32,
    /// Culprit: vCPU label (`vm1/vcpu0`) or comm of another task, or "idle".
    pub culprit: String,
    pub ns: u64,
}

/// A vruntime sample for the chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VruntimePoint {
    pub ts: u64,
    pub vruntime: u64,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct VruntimeSeries {
    pub tid: u32,
    pub label: String,
    /// Oldest first, covering at least the last 10 s.
    pub points: Vec<VruntimePoint>,
}

/// The whole picture at `ts`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// First and latest event timestamps, ns.
    pub start: u64,
    pub ts: u64,
    /// Range the per-vCPU, per-VM and culprit figures cover (pCPU occupancy carries all three).
    #[serde(default)]
    pub window: Window,
    pub events_per_second: f64,
    pub vcpus: Vec<VcpuSnapshot>,
    pub pcpus: Vec<PcpuSnapshot>,
    pub vms: Vec<VmSnapshot>,
    pub vruntime: Vec<VruntimeSeries>,
    pub wait_culprits: Vec<WaitCulprit>,
    /// Resume latency over all vCPUs (the migration/VMCS panel's headline).
    pub resume: ResumeLatency,
    /// Fairness across VMs (Jain's index over weight-normalised VM shares).
    pub fairness: f64,
    pub health: Health,
}
