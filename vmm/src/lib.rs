//! kvmscope's minimal VMM: VMs whose vCPU threads compete for the host's CPUs, with guests
//! that record from the inside every interval they were kept off the CPU.
//!
//! [`start`] creates one KVM VM (with its own memory) per [`VmSpec`] and one host thread per
//! vCPU, named `vm<V>-vcpu<C>`, looping on `KVM_RUN`. Each guest runs our own 64-bit program
//! ([`guest::PROGRAM`]) that counts work units and appends every TSC gap above a threshold to
//! a ring in its memory. A collector thread reads those rings from shared memory (no exits),
//! converts the TSC stamps to CLOCK_MONOTONIC ([`clock::TscClock`]) and queues them as
//! [`model::GuestGap`]s for [`RunningVmm::drain_gaps`]; it also rotates affinities for
//! `migrate_every_ms`. [`RunningVmm::stop`] kicks every vCPU out of `KVM_RUN`, joins the
//! threads with a timeout and returns a [`Summary`].
//!
//! Architecture invariant: the VMM knows nothing about probes or views. It hands out thread
//! ids and guest gaps; whoever watches the host scheduler joins them by tid and time.

mod affinity_log;
mod affinity_rotation;
pub mod clock;
pub mod error;
pub mod exit;
mod gap_collector;
pub mod guest;
mod lifecycle;
pub mod memory;
pub mod scenario;
pub mod sched;
mod summary;
mod vcpu;
pub mod vm;
pub mod vm_names;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use error::VmmError;
pub use exit::{ExitAction, ExitCounts, ExitFault, ExitHandler};
pub use lifecycle::{start, start_with, RunningVmm};
pub use scenario::{CpuList, Scenario, ScenarioError, VcpuPlan, VmSpec, Workload};
pub use summary::{Summary, VcpuSummary};
pub use vm::KvmFlavour;

use affinity_log::AffinityLog;
use gap_collector::GapCollector;
use guest::block;
use memory::GuestMemory;
use sched::SchedStat;
use vcpu::{VcpuOutcome, VcpuThread};

/// How long [`RunningVmm::stop`] waits for kicked vCPU threads.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// One vCPU as callers see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VcpuInfo {
    pub vm_index: u32,
    pub vm_name: String,
    /// vCPU index within its VM.
    pub vcpu: u32,
    /// Host thread id of the vCPU thread.
    pub tid: u32,
    /// Thread name, `vm<V>-vcpu<C>`.
    pub thread: String,
    /// Nice value of the thread (0 unless the scenario set one).
    pub nice: i32,
    pub workload: Workload,
}

/// Per-vCPU state shared between the vCPU thread, the collector and the caller.
pub(crate) struct VcpuSlot {
    plan: VcpuPlan,
    thread: String,
    tid: AtomicU32,
    mem: Arc<GuestMemory>,
    block: u64,
    tsc_offset: i64,
    /// CPUs the migration rotation cycles through.
    rotate_over: Vec<u32>,
    sched_start: Mutex<Option<SchedStat>>,
}

impl VcpuSlot {
    fn tid(&self) -> u32 {
        self.tid.load(Ordering::Acquire)
    }

    fn work_units(&self) -> u64 {
        self.mem.read_u64(self.block + block::WORK_UNITS)
    }
}

struct FaultRecord {
    global: usize,
    fault: ExitFault,
}

pub(crate) struct Shared {
    pid: u32,
    stop: AtomicBool,
    fault: Mutex<Option<FaultRecord>>,
    /// pthread of every vCPU thread that has not returned yet.
    kick_list: Mutex<Vec<Option<libc::pthread_t>>>,
    vcpus: Vec<VcpuSlot>,
    gaps: Mutex<GapCollector>,
    /// Affinity changes the rotation made, not yet drained (a replay needs the affinity in
    /// force at each instant, which no kernel event of the recording carries).
    affinity_changes: Mutex<AffinityLog>,
}

impl Shared {
    /// Keeps the first fault and stops every vCPU: one crashed guest ends the run cleanly.
    fn record_fault(&self, global: usize, fault: ExitFault) {
        {
            let mut f = lock(&self.fault);
            if f.is_none() {
                *f = Some(FaultRecord { global, fault });
            }
        }
        self.stop.store(true, Ordering::Release);
        self.kick_all();
    }

    fn vcpu_infos(&self) -> Vec<VcpuInfo> {
        self.vcpus
            .iter()
            .map(|s| VcpuInfo {
                vm_index: s.plan.vm_index,
                vm_name: s.plan.vm_name.clone(),
                vcpu: s.plan.index,
                tid: s.tid(),
                thread: s.thread.clone(),
                nice: s.plan.nice.unwrap_or(0),
                workload: s.plan.workload,
            })
            .collect()
    }

    fn kick_all(&self) {
        for t in lock(&self.kick_list).iter().flatten() {
            vcpu::kick(*t);
        }
    }

    fn fault_error(&self) -> Option<VmmError> {
        let f = lock(&self.fault);
        let rec = f.as_ref()?;
        let slot = &self.vcpus[rec.global];
        Some(VmmError::Guest {
            vm: vm_label(&slot.plan),
            vcpu: slot.plan.index,
            thread: slot.thread.clone(),
            fault: rec.fault.clone(),
        })
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn every later call into a panic too.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `vm1`, or `vm1 (batch)` when the VM has its own name.
fn vm_label(plan: &VcpuPlan) -> String {
    let idx = format!("vm{}", plan.vm_index);
    if plan.vm_name == idx {
        idx
    } else {
        format!("{idx} ({})", plan.vm_name)
    }
}
