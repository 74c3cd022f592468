//! The threads a policy sees ([`SimThread`]): each demand thread's weight, VM, vCPU index and
//! the pCPUs it may use on the simulated host, made once per run by [`sim_threads`].

use model::demand::Demand;

pub use crate::pcpu_set::PcpuSet;

/// Largest pCPU count: the model's bound on CPU numbers, as every simulated run is measured
/// through a model. The engine's per-event work grows with the pCPU count.
pub const MAX_PCPUS: u32 = model::MAX_CPUS;
/// Background stand-ins get tids from here up (plus the pCPU, plus [`MAX_PCPUS`] for each
/// stand-in of the same pCPU before it: one per group), far from real tids.
pub const BACKGROUND_TID: u32 = 0x7000_0000;

/// What a policy may know of a thread.
#[derive(Clone, Debug)]
pub struct SimThread {
    pub tid: u32,
    /// Its process (0 for background stand-ins): with task groups, a process's threads
    /// share its session's group.
    pub pid: u32,
    pub weight: u32,
    pub nice: i32,
    /// pCPUs it may run on.
    pub allowed: PcpuSet,
    /// Index of its VM (background stand-ins each have their own group).
    pub group: u32,
    /// Index inside its VM (vCPU number where known), for static placement.
    pub index: u32,
    pub background: bool,
    /// The task group the recording names for it (`ThreadDemand::group`).
    pub sched_group: Option<model::SchedGroup>,
    /// A background stand-in of tasks whose group could not be read.
    pub group_unread: bool,
}

impl SimThread {
    pub fn may_run_on(&self, cpu: u32) -> bool {
        self.allowed.contains(cpu)
    }
}

/// The threads a policy sees, in demand order (tracked first, then background).
pub fn sim_threads(demand: &Demand, ncpus: u32) -> Vec<SimThread> {
    let all = PcpuSet::all(ncpus);
    let mut vms: Vec<&str> = Vec::new();
    let mut per_vm: Vec<u32> = Vec::new();
    let mut stand_ins_on: Vec<u32> = Vec::new();
    demand
        .threads
        .iter()
        .map(|t| {
            let group = if t.background {
                vms.push("");
                per_vm.push(0);
                vms.len() - 1
            } else {
                match vms.iter().position(|v| *v == t.vm) {
                    Some(i) => i,
                    None => {
                        vms.push(&t.vm);
                        per_vm.push(0);
                        vms.len() - 1
                    }
                }
            };
            let seq = per_vm[group];
            per_vm[group] += 1;
            let mut allowed = PcpuSet::of(&t.allowed, ncpus);
            // A thread seen on every recorded pCPU may use all of the simulated ones.
            if allowed.is_empty() || t.allowed.len() as u32 >= demand.pcpus {
                allowed = all.clone();
            }
            if let Some(first) = t.affinity.first() {
                // The recorded affinity, where there is one, rather than where it was seen.
                allowed = cpu_mask(&first.cpus, demand.pcpus, ncpus);
            }
            if t.background {
                // Untracked tasks of a pCPU stay on it (and vanish with it under --pcpus).
                allowed = PcpuSet::of(t.allowed.first(), ncpus);
            }
            let tid = if t.background {
                let cpu = t.first_cpu as usize;
                if stand_ins_on.len() <= cpu {
                    stand_ins_on.resize(cpu + 1, 0);
                }
                stand_ins_on[cpu] += 1;
                BACKGROUND_TID + t.first_cpu + (stand_ins_on[cpu] - 1) * MAX_PCPUS
            } else {
                t.tid
            };
            SimThread {
                tid,
                pid: if t.background { 0 } else { t.pid },
                weight: t.weight.max(1),
                nice: t.nice,
                allowed,
                group: group as u32,
                index: t.vcpu.unwrap_or(seq),
                background: t.background,
                sched_group: t.group.clone(),
                group_unread: t.group_unread,
            }
        })
        .collect()
}

/// The simulated pCPUs among a recorded affinity `cpus`; all of them when it allowed every
/// recorded pCPU (`--pcpus` may add more) or when none is left (a thread pinned to a pCPU
/// that `--pcpus` took away runs anywhere rather than nowhere).
pub fn cpu_mask(cpus: &[u32], recorded_pcpus: u32, ncpus: u32) -> PcpuSet {
    let m = PcpuSet::of(cpus, ncpus);
    let every_recorded = (0..recorded_pcpus).all(|c| cpus.binary_search(&c).is_ok());
    if !m.is_empty() && !every_recorded {
        m
    } else {
        PcpuSet::all(ncpus)
    }
}
