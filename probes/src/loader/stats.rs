//! What the attached programs cost and miss, as the kernel counts them per program: run time
//! and run count (with `kernel.bpf_stats_enabled=1`), and runs skipped.

use std::os::fd::{AsFd, AsRawFd};

use super::Probes;
use crate::programs::{CSD, KVM, SCHED};
use crate::reader_guard::recursion_misses;

/// Cost counters of one attached program (non-zero only while `kernel.bpf_stats_enabled=1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// `category:event` the program is attached to.
    pub event: &'static str,
    /// Kernel program id (as `bpftool prog show` lists it).
    pub id: u32,
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl Probes {
    /// Run-time counters of every attached program (for the cost benchmark).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let specs = SCHED.iter().chain(KVM.iter()).chain(CSD.iter());
        specs
            .filter(|s| self.attached.contains(&s.event))
            .filter_map(|s| {
                let info = self.ebpf.program(s.program)?.info().ok()?;
                Some(ProgramStats {
                    event: s.event,
                    id: info.id(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }

    /// Runs of each attached program the kernel skipped, by event (see `reader_guard`:
    /// kernels from 6.7 on count them). Only programs that missed runs are listed; their sum,
    /// but for the programs whose skipped runs cost no record (`csd:csd_queue_cpu`), is part
    /// of [`Probes::lost_total`].
    pub fn missed_runs(&self) -> Vec<(&'static str, u64)> {
        let specs = SCHED.iter().chain(KVM.iter()).chain(CSD.iter());
        specs
            .filter(|s| self.attached.contains(&s.event))
            .filter_map(|s| {
                let fd = self.ebpf.program(s.program)?.fd().ok()?;
                let misses = recursion_misses(fd.as_fd().as_raw_fd())?;
                (misses > 0).then_some((s.event, misses))
            })
            .collect()
    }
}
