//! The kernel side of tracking as one trait: the few things [`super::tracking::Tracking`]
//! asks of the host (the clock, the probes' `tracked` map, a thread's nice, schedstat, state
//! and allowed CPUs, the target's threads, QEMU's vCPU numbering). The live session passes
//! [`super::kernel_side::KernelSide`] (probes, counters and `hostfacts`); unit tests pass a
//! scripted host, so the whole tracking flow runs without root or real threads.

use std::collections::BTreeSet;

use model::CounterSample;
use probes::qemu::QemuVm;
use probes::targets::{TargetSpec, TrackedThread};

/// What one scan of the targets found.
#[derive(Debug, Default)]
pub(super) struct TargetScan {
    /// The targets' threads now.
    pub(super) found: Vec<TrackedThread>,
    /// Processes that exist but could not be read this time: their threads stay tracked.
    pub(super) unreadable: BTreeSet<u32>,
    /// QEMU VMs left out because their vCPUs cannot be mapped.
    pub(super) unmapped: Vec<QemuVm>,
}

pub(super) trait TrackingHost {
    /// CLOCK_MONOTONIC now, ns: the stamp of announcements, affinity changes and VM ends.
    fn now_ns(&self) -> u64;

    /// Starts observing thread `t`: its events pass the probes' `tracked` map or, in counters
    /// mode, it is sampled, and its first sample (the baseline) is returned. Problems that do
    /// not stop the observation go to `warnings`.
    fn track(
        &mut self,
        t: &TrackedThread,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Option<CounterSample>>;

    /// Stops observing thread `tid` (it is gone or no longer a target; a failure costs
    /// nothing).
    fn untrack(&mut self, tid: u32);

    /// Thread `tid`'s nice value, `None` if it cannot be read.
    fn nice(&self, pid: u32, tid: u32) -> Option<i32>;

    /// Thread `tid`'s run and wait so far (`/proc` schedstat), `None` if it cannot be read.
    fn schedstat(&self, pid: u32, tid: u32) -> Option<model::Schedstat>;

    /// Thread `tid`'s state and pCPU now (`/proc` stat), `None` if it cannot be read.
    fn thread_start(&self, pid: u32, tid: u32) -> Option<model::ThreadStart>;

    /// The CPUs thread `tid` may run on, `None` if they cannot be read (it is going).
    fn allowed_cpus(&self, tid: u32) -> Option<Vec<u32>>;

    /// Whether thread `tid` of process `pid` still exists.
    fn thread_exists(&self, pid: u32, tid: u32) -> bool;

    /// The threads `spec` names now; `known_pids` are the processes tracked so far (`--all-kvm`
    /// looks at them again; with `--qemu`, those that still exist are kept when discovery
    /// fails). `kvm_entry_ids`: QEMU VMs nothing else maps are watched whole.
    fn scan(
        &mut self,
        spec: &TargetSpec,
        known_pids: &BTreeSet<u32>,
        kvm_entry_ids: bool,
    ) -> TargetScan;

    /// Whether process `pid` is QEMU.
    fn is_qemu(&self, pid: u32) -> bool;

    /// QEMU's cpu-index of the vCPU KVM numbers `vcpu_id` (its APIC ID) in process `pid`.
    fn qemu_cpu_index(&self, pid: u32, vcpu_id: u32) -> u32;

    /// Tells the QEMU mapping cache the vCPU ids `kvm_entry` showed for process `pid`'s
    /// threads (`(tid, vcpu_id)`); true once that maps every vCPU of the VM.
    fn note_kvm_entry_ids(&mut self, pid: u32, seen: &[(u32, u32)]) -> bool;
}
