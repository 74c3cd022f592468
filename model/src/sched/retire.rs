//! Retirement of ended threads ([`ModelConfig::retire_ended_after_ns`]): a thread that ended
//! long enough ago leaves the model. What must outlive it (its VM's run and wait time, its
//! exits by reason) is folded into its VM's [`RetiredTotals`]; references to its slot (pCPU
//! lanes, other threads' wait culprits, run queues, open VMCLEAR calls) become
//! [`Owner::Ended`] of its VM or are dropped; and the slot is freed for the next thread, so
//! an always-on model holds only the threads alive now plus those that ended within the delay.
//! A VM that has ended retires with its last thread: its column of pCPU time moves to
//! `OwnerTime::ended_vms`, references to it become [`Owner::EndedVm`], and its entry is reused.
//!
//! [`ModelConfig::retire_ended_after_ns`]: super::ModelConfig::retire_ended_after_ns

use super::owner::Owner;
use super::task::{TState, Task, VmEntry};
use super::Model;

/// What a VM's retired threads leave behind: the counters its per-VM figures sum.
#[derive(Clone, Debug, Default)]
pub(super) struct RetiredTotals {
    /// Threads retired, and how many of those were vCPU threads.
    pub(super) threads: u64,
    pub(super) vcpu_threads: u64,
    /// Run and wait time of all retired threads, ns.
    pub(super) run_ns: u64,
    pub(super) wait_ns: u64,
    /// Run and wait time of the retired vCPU threads, ns.
    pub(super) vcpu_run_ns: u64,
    pub(super) vcpu_wait_ns: u64,
    /// Exits by reason name, summed.
    pub(super) exits: Vec<(String, u64)>,
}

impl RetiredTotals {
    fn add(&mut self, t: &Task) {
        let c = t.clock.cum;
        self.threads = self.threads.saturating_add(1);
        self.run_ns = self.run_ns.saturating_add(c.run);
        self.wait_ns = self.wait_ns.saturating_add(c.wait);
        if t.vcpu.is_some() {
            self.vcpu_threads = self.vcpu_threads.saturating_add(1);
            self.vcpu_run_ns = self.vcpu_run_ns.saturating_add(c.run);
            self.vcpu_wait_ns = self.vcpu_wait_ns.saturating_add(c.wait);
        }
        for x in t.exits.stats(0, false) {
            match self.exits.iter_mut().find(|e| e.0 == x.reason) {
                Some(e) => e.1 = e.1.saturating_add(x.count),
                None => self.exits.push((x.reason, x.count)),
            }
        }
    }
}

impl Model {
    /// Retires every thread that ended before `before` (see the module docs).
    pub(super) fn retire_ended_before(&mut self, before: u64) {
        let retiring: Vec<u32> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                !t.vacant && t.state == TState::Exited && t.ended_at.is_some_and(|e| e < before)
            })
            .map(|(n, _)| n as u32)
            .collect();
        if retiring.is_empty() {
            return;
        }
        for &n in &retiring {
            let t = &self.tasks[n as usize];
            if let Some(vm) = self.vms.get_mut(t.vm as usize) {
                // A VM entry taken over by a new process under the same name reports that
                // process alone (as its per-VM figures always did): the old one's threads
                // leave nothing there.
                if vm.pid == t.pid {
                    vm.retired.add(t);
                }
            }
            self.health.retired = self.health.retired.saturating_add(1);
        }
        // Ended VMs left with no thread.
        let mut vms: Vec<u32> = retiring
            .iter()
            .map(|&n| self.tasks[n as usize].vm)
            .collect();
        vms.sort_unstable();
        vms.dedup();
        vms.retain(|&vm| {
            self.vms
                .get(vm as usize)
                .is_some_and(|v| v.ended && !v.vacant)
                && !self
                    .tasks
                    .iter()
                    .enumerate()
                    .any(|(n, t)| !t.vacant && t.vm == vm && !retiring.contains(&(n as u32)))
        });
        self.remap_retired(&retiring, &vms);
        for &vm in &vms {
            for c in &mut self.cpus {
                c.time.retire_vm(vm);
            }
            self.vms[vm as usize] = VmEntry::vacant();
            self.free_vms.push(vm);
        }
        for &n in &retiring {
            let tid = self.tasks[n as usize].tid;
            if self.tid_slot.get(&tid) == Some(&n) {
                self.tid_slot.remove(&tid);
            }
            self.tasks[n as usize] = Task::vacant();
            self.free_slots.push(n);
        }
    }

    /// Points every reference to a retiring slot at its VM instead (or drops it), and every
    /// reference to a retiring VM at `EndedVm`.
    fn remap_retired(&mut self, retiring: &[u32], vms: &[u32]) {
        let tasks = &self.tasks;
        let ended = |o: Owner| match o {
            Owner::Task(n) if retiring.contains(&n) => match tasks[n as usize].vm {
                vm if vms.contains(&vm) => Owner::EndedVm,
                vm => Owner::Ended(vm),
            },
            Owner::Ended(vm) if vms.contains(&vm) => Owner::EndedVm,
            o => o,
        };
        for c in &mut self.cpus {
            c.owner = ended(c.owner);
            for s in &mut c.lane {
                s.owner = ended(s.owner);
            }
            c.waiting.retain(|w| !retiring.contains(w));
        }
        let culprit_lists: Vec<Vec<(Owner, u64)>> = self
            .tasks
            .iter()
            .map(|t| t.culprits.iter().map(|&(o, ns)| (ended(o), ns)).collect())
            .collect();
        for (t, culprits) in self.tasks.iter_mut().zip(culprit_lists) {
            merge_culprits(&mut t.culprits, culprits);
        }
        self.open_csd.retain(|o| !retiring.contains(&o.slot));
    }
}

/// Replaces `list` with `remapped`, adding up entries that now name the same owner (two
/// retired threads of one VM become one `Ended` culprit).
fn merge_culprits(list: &mut Vec<(Owner, u64)>, remapped: Vec<(Owner, u64)>) {
    list.clear();
    for (o, ns) in remapped {
        match list.iter_mut().find(|e| e.0 == o) {
            Some(e) => e.1 = e.1.saturating_add(ns),
            None => list.push((o, ns)),
        }
    }
}
