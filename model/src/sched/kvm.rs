//! KVM events: guest entries and exits (what a running vCPU does, its exits by reason, the
//! resume latency `kvm_entry` closes) and the VMCLEAR cross-calls a migrated vCPU costs.

use super::task::TState;
use super::Model;
use crate::{
    CrossCall, CrossCallPhase, ExitAggregate, ExitAggregates, ExitIsa, KvmEntry, KvmExit,
    PortIoAggregate, Transition, UserspaceExit, VcpuState,
};

/// Open VMCLEAR cross-calls remembered (queue waiting for its exit).
const MAX_OPEN_CSD: usize = 256;

/// A VMCLEAR cross-call queued and not yet finished.
#[derive(Clone, Copy)]
pub(super) struct OpenCsd {
    csd: u64,
    ts: u64,
    /// When the old pCPU entered `__loaded_vmcs_clear` (the IPI arrived).
    entry_ts: Option<u64>,
    pub(super) slot: u32,
    /// Queued on this pCPU (the vCPU's new one) for `target_cpu` (its old one).
    cpu: u32,
    target_cpu: u32,
}

impl Model {
    pub(super) fn on_kvm_entry(&mut self, e: &KvmEntry) {
        self.health.saw_entry_exit = true;
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_event_ts = e.ts;
        }
        let Some(n) = self.slot(e.tid) else { return };
        let t = &mut self.tasks[n];
        let (ts, thread) = (e.ts, n as u32);
        if t.state == TState::Running && t.sub != VcpuState::InGuest {
            t.sub = VcpuState::InGuest;
            self.log.state(ts, n, VcpuState::InGuest, Some(t.cpu));
        }
        self.log.push(|| Transition::Entry { ts, thread });
        if let Some((latency_ns, migrated)) = t.resume.entered(ts) {
            self.log.push(|| Transition::Resume {
                ts,
                thread,
                latency_ns,
                migrated,
            });
        }
        t.exits.entered(ts);
    }

    pub(super) fn on_kvm_exit(&mut self, e: &KvmExit) {
        self.health.saw_entry_exit = true;
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_event_ts = e.ts;
        }
        let Some(n) = self.slot(e.tid) else { return };
        let t = &mut self.tasks[n];
        t.exits.exited(false, e.isa, e.reason, e.ts);
        t.clock.cum.exits = t.clock.cum.exits.saturating_add(1);
        t.resume.last_exit_ts = e.ts;
        self.log.push(|| Transition::Exit {
            ts: e.ts,
            thread: n as u32,
            userspace: false,
            isa: e.isa,
            reason: e.reason,
        });
        if t.state == TState::Running && t.sub != VcpuState::Running {
            t.sub = VcpuState::Running;
            self.log.state(e.ts, n, VcpuState::Running, Some(t.cpu));
        }
    }

    /// Everything a live source's [`crate::Source::take_exit_aggregates`] read from the
    /// kernel's aggregation maps: exits, then port I/O.
    pub fn fold_aggregates(&mut self, aggs: &ExitAggregates) {
        self.fold_exit_aggregates(&aggs.exits);
        self.fold_port_io_aggregates(&aggs.port_io);
    }

    /// Exits aggregated in the kernel since the last call (a live source's
    /// [`crate::Source::take_exit_aggregates`]): folded like that many `kvm_exit` events of
    /// their reason. Aggregates of a thread not announced yet (its `TaskInfo` still in the
    /// reorder buffer) wait for it; [`Model::finish`] counts those never announced as unknown.
    pub fn fold_exit_aggregates(&mut self, aggs: &[ExitAggregate]) {
        self.waiting_aggs.extend_from_slice(aggs);
        let waiting = std::mem::take(&mut self.waiting_aggs);
        for a in waiting {
            let Some(n) = self.slot(a.tid) else {
                self.waiting_aggs.push(a);
                continue;
            };
            self.health.saw_entry_exit = true;
            self.health.aggregated_exits = self.health.aggregated_exits.saturating_add(a.count);
            let t = &mut self.tasks[n];
            t.exits.aggregated(&a);
            t.clock.cum.exits = t.clock.cum.exits.saturating_add(a.count);
        }
    }

    /// Port I/O exits aggregated in the kernel since the last call: counted (no figure reads
    /// a port I/O exit but as a count). Those of a thread not announced yet wait for it, as
    /// exit aggregates do.
    pub fn fold_port_io_aggregates(&mut self, aggs: &[PortIoAggregate]) {
        self.waiting_port_io.extend_from_slice(aggs);
        let waiting = std::mem::take(&mut self.waiting_port_io);
        for a in waiting {
            if self.slot(a.tid).is_none() {
                self.waiting_port_io.push(a);
                continue;
            }
            self.health.aggregated_port_io = self.health.aggregated_port_io.saturating_add(a.count);
        }
    }

    /// At the end: aggregates whose thread never showed up are unknown input.
    pub(super) fn drop_waiting_aggs(&mut self) {
        let tids: Vec<u32> = std::mem::take(&mut self.waiting_aggs)
            .iter()
            .map(|a| a.tid)
            .chain(
                std::mem::take(&mut self.waiting_port_io)
                    .iter()
                    .map(|a| a.tid),
            )
            .collect();
        for tid in tids {
            self.note_unknown(tid);
        }
    }

    pub(super) fn on_userspace_exit(&mut self, e: &UserspaceExit) {
        if let Some(c) = self.cpu_mut(e.cpu) {
            c.last_event_ts = e.ts;
        }
        let Some(n) = self.slot(e.tid) else { return };
        let t = &mut self.tasks[n];
        t.exits.exited(true, ExitIsa::Unknown, e.reason, e.ts);
        // A kvm_exit already counted this exit when the host emits both.
        if !t.resume.from_entry {
            t.clock.cum.exits = t.clock.cum.exits.saturating_add(1);
        }
        self.log.push(|| Transition::Exit {
            ts: e.ts,
            thread: n as u32,
            userspace: true,
            isa: ExitIsa::Unknown,
            reason: e.reason,
        });
        if t.state == TState::Running && t.sub != VcpuState::InVmm {
            t.sub = VcpuState::InVmm;
            self.log.state(e.ts, n, VcpuState::InVmm, Some(t.cpu));
        }
    }

    #[inline(never)]
    pub(super) fn on_cross_call(&mut self, x: &CrossCall) {
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
                t.resume.vmclear_calls = t.resume.vmclear_calls.saturating_add(1);
                if self.open_csd.len() >= MAX_OPEN_CSD {
                    self.open_csd.remove(0);
                }
                self.open_csd.push(OpenCsd {
                    csd: x.csd,
                    ts: x.ts,
                    entry_ts: None,
                    slot: n as u32,
                    cpu: x.cpu,
                    target_cpu: x.target_cpu,
                });
            }
            CrossCallPhase::Entry => {
                if let Some(o) = self.open_csd.iter_mut().find(|o| o.csd == x.csd) {
                    o.entry_ts = Some(x.ts);
                }
            }
            CrossCallPhase::Exit => {
                if let Some(p) = self.open_csd.iter().position(|o| o.csd == x.csd) {
                    let o = self.open_csd.swap_remove(p);
                    if let Some(t) = self.tasks.get_mut(o.slot as usize) {
                        t.resume.vmclear_done(o.ts, o.entry_ts, x.ts);
                        self.log.push(|| Transition::Vmclear {
                            ts: x.ts,
                            thread: o.slot,
                            queued: o.ts,
                            entered: o.entry_ts,
                            pcpu: o.cpu,
                            old_pcpu: o.target_cpu,
                        });
                    }
                }
            }
        }
    }
}
