//! What a run produced, per vCPU: the VMM's summary (text or one JSON document).

use std::fmt;

use serde::Serialize;

use crate::exit::ExitCounts;
use crate::vm::KvmFlavour;
use crate::Workload;

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The VMM process (all vCPU threads belong to it).
    pub pid: u32,
    /// CLOCK_MONOTONIC ns when the guests were let go and when the run was stopped.
    pub started_ns: u64,
    pub ended_ns: u64,
    pub duration_s: f64,
    pub kvm: KvmFlavour,
    /// `native` (PVM running guest code natively), `emulated` or `hardware` (VT-x/AMD-V).
    pub guest_execution: &'static str,
    pub tsc_hz: f64,
    pub gap_threshold_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate_every_ms: Option<u64>,
    pub vms: u32,
    pub vcpus: Vec<VcpuSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VcpuSummary {
    pub vm: u32,
    pub vm_name: String,
    /// vCPU index within its VM.
    pub index: u32,
    pub thread: String,
    pub tid: u32,
    pub workload: Workload,
    pub nice: i32,
    /// The affinity the scenario pinned it to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<u32>>,
    pub work_units: u64,
    pub units_per_s: f64,
    /// Work units per second of the thread's own on-CPU time: the guest's speed, whatever
    /// the host load.
    pub units_per_cpu_s: f64,
    pub exits: ExitCounts,
    /// Off-CPU gaps the guest recorded, and their total length.
    pub gaps: u64,
    pub gap_ns: u64,
    /// Gap records lost because the guest lapped its ring before the VMM read it.
    pub gap_overruns: u64,
    /// Host schedstat deltas over the run: on-CPU time, run-queue wait, timeslices.
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} VMs, {} vCPUs, pid {}, {:.2} s, KVM {} (guest code {}), TSC {:.3} GHz, gap threshold {} µs",
            self.vms,
            self.vcpus.len(),
            self.pid,
            self.duration_s,
            self.kvm,
            self.guest_execution,
            self.tsc_hz / 1e9,
            self.gap_threshold_us
        )?;
        writeln!(
            f,
            "{:<12} {:>7} {:<8} {:>4} {:>13} {:>9} {:>7} {:>6} {:>9} {:>9} {:>9}",
            "vcpu",
            "tid",
            "workload",
            "nice",
            "units",
            "Munits/s",
            "exits",
            "gaps",
            "gap ms",
            "run ms",
            "wait ms"
        )?;
        for v in &self.vcpus {
            writeln!(
                f,
                "{:<12} {:>7} {:<8} {:>4} {:>13} {:>9.2} {:>7} {:>6} {:>9.1} {:>9.1} {:>9.1}{}",
                v.thread,
                v.tid,
                v.workload.name(),
                v.nice,
                v.work_units,
                v.units_per_s / 1e6,
                v.exits.total(),
                v.gaps,
                v.gap_ns as f64 / 1e6,
                v.run_ns as f64 / 1e6,
                v.wait_ns as f64 / 1e6,
                if v.gap_overruns > 0 {
                    format!("  ({} gap records lost)", v.gap_overruns)
                } else {
                    String::new()
                }
            )?;
        }
        Ok(())
    }
}
