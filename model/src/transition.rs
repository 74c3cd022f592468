//! Transitions: what the model did with each event, in the order it applied them.
//!
//! The model folds reordered events into state; a sink that draws or counts *changes* (the
//! Perfetto and Chrome exporters, a metrics exporter, a scheduler simulation checked against
//! a recording) reads these instead of re-deriving state from raw events, so every sink sees
//! exactly the states, switches and resume latencies that `report` and the dashboard count.
//!
//! Turn them on with [`crate::Model::record_transitions`] and take them with
//! [`crate::Model::take_transitions`] after each batch (they accumulate until taken).
//!
//! Ordering: the transitions of one thread are in time order, and their times add up to the
//! snapshot's figures exactly: a thread's run time (`run_ns`) is the time it spent in the
//! running states (`InGuest`, `Running`, `InVmm`) from each [`Transition::State`] to its next
//! `State` or [`Transition::Exited`], the last one open until the snapshot's `ts`; likewise
//! `wait_ns` for `Waiting` and `sleep_ns` for `Sleeping`. A transition's `ts` can lie before
//! the event that caused it (the model learns some states late, e.g. the run of a thread whose
//! switch-in was never reported), never after it, and never before the thread's previous
//! transition. Across threads, transitions come in the order the model applied events.
//!
//! `thread` is the thread's slot: its index in [`crate::Snapshot::vcpus`]. (A model that
//! retires ended threads, [`crate::ModelConfig::retire_ended_after_ns`], reuses slots: a
//! [`Transition::Thread`] announces the new occupant, and `vcpus` lists occupied slots only.)

use crate::{Comm, ExitIsa, SchedGroup, VcpuState};

/// Who holds a pCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcpuHolder {
    Idle,
    /// A tracked thread, by slot.
    Thread(u32),
    /// Any other task.
    Other {
        tid: u32,
        comm: Comm,
    },
}

/// One change the model applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// A tracked thread was announced (or announced again with a new vCPU index, comm or
    /// nice). Its weight starts as `nice`'s ([`crate::nice_to_weight`]) until a
    /// [`Transition::Weight`] says otherwise.
    Thread {
        ts: u64,
        thread: u32,
        tid: u32,
        pid: u32,
        vm: String,
        vcpu: Option<u32>,
        comm: Comm,
        nice: i32,
    },
    /// From `ts` the thread is in `state` (never `Unknown`); `pcpu` is the pCPU it runs on
    /// or the run queue it waits in (none while it sleeps).
    State {
        ts: u64,
        thread: u32,
        state: VcpuState,
        pcpu: Option<u32>,
    },
    /// The thread left pCPU `pcpu`; `preempted` when it stayed runnable. One per switch the
    /// snapshot counts (`voluntary_switches` + `involuntary_switches`). `task_clock_ns`: what
    /// it ran since its previous sched-entity sample (normally its switch-in) by the kernel's
    /// task clock (`se.sum_exec_runtime` growth, summed in the snapshot's `task_clock_ns`);
    /// `None` unless this switch and that sample both carried it (then only the wall time of
    /// its running states says how long it ran).
    SwitchOut {
        ts: u64,
        thread: u32,
        pcpu: u32,
        preempted: bool,
        task_clock_ns: Option<u64>,
    },
    /// The thread ended at `ts` (its final switch-out, its VM's end, or its tid reused).
    Exited { ts: u64, thread: u32 },
    /// A switch carried the thread's vruntime.
    Vruntime { ts: u64, thread: u32, vruntime: u64 },
    /// From `ts` the thread's scheduler weight is `weight` (a switch carried another weight
    /// than it had: a nice change, or the kernel's weight differing from `nice`'s).
    Weight { ts: u64, thread: u32, weight: u32 },
    /// From `ts` the thread may run only on `cpus` (ascending): its affinity as the source read
    /// it at tracking start, then each change (only changes are logged).
    Affinity {
        ts: u64,
        thread: u32,
        cpus: Vec<u32>,
    },
    /// The guest ran again at `ts`, `latency_ns` after the switch-in; `migrated` when that
    /// switch-in was on another pCPU than the switch-out before it. One per value in the
    /// snapshot's resume `same_pcpu` / `migrated` distributions.
    Resume {
        ts: u64,
        thread: u32,
        latency_ns: u64,
        migrated: bool,
    },
    /// The guest saw itself off the CPU over `[start, end]`; `matched` when a switch-in inside
    /// it made it a resume (then a [`Transition::Resume`] follows).
    GuestGap {
        thread: u32,
        start: u64,
        end: u64,
        matched: bool,
    },
    /// A guest exit (`userspace`: to the VMM, with a `KVM_EXIT_*` reason).
    Exit {
        ts: u64,
        thread: u32,
        userspace: bool,
        isa: ExitIsa,
        reason: u32,
    },
    /// A guest entry.
    Entry { ts: u64, thread: u32 },
    /// VT-x: a VMCLEAR cross-call of this vCPU ended at `ts`. Loading the vCPU on `pcpu`,
    /// KVM queued it at `queued` for `old_pcpu`, where the VMCS was last loaded; the old pCPU
    /// ran `__loaded_vmcs_clear` from `entered` (none when its entry event was not seen) to
    /// `ts`. One per VMCLEAR the snapshot's `vmclear` latency counts.
    Vmclear {
        ts: u64,
        thread: u32,
        queued: u64,
        entered: Option<u64>,
        pcpu: u32,
        old_pcpu: u32,
    },
    /// The source read the task group of task `tid` (tracked or not) when it first saw it
    /// run; `None`: the task had exited first. The first record of a tid holds.
    TaskGroup {
        ts: u64,
        tid: u32,
        group: Option<SchedGroup>,
    },
    /// An untracked task left pCPU `cpu` at a switch the source reported (to a tracked
    /// thread); `preempted` when it stayed runnable. Comes before that switch's `Pcpu`.
    OtherSwitchOut {
        ts: u64,
        cpu: u32,
        tid: u32,
        preempted: bool,
    },
    /// From `ts`, `holder` runs on pCPU `cpu`.
    Pcpu {
        ts: u64,
        cpu: u32,
        holder: PcpuHolder,
    },
}
