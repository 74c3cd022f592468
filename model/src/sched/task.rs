//! Tracked threads: their identity and scheduling state, the VMs they belong to, and their
//! lifecycle (announced by `TaskInfo`, ended by `TaskExit`, `VmEnded` or tid reuse).

use super::clocks::{Clocks, Cum};
use super::cpu_set::CpuSet;
use super::exits::ExitTracker;
use super::owner::Owner;
use super::resume::ResumeTracker;
use super::retire::RetiredTotals;
use super::Model;
use crate::{nice_to_weight, Affinity, Comm, SwitchOut, TaskExit, TaskInfo, TaskState};
use crate::{TaskGroup, Transition, VcpuState, VmEnded};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TState {
    /// Tracked but no scheduling event yet.
    Unknown,
    Running,
    Waiting,
    Sleeping,
    Exited,
}

/// One tracked thread.
///
/// Its hot state (what switches, wakeups, exits and guest gaps touch) was tried in a dense
/// array of ~290-byte records, everything else (identity, histograms, series, checkpoints,
/// exits by reason, culprits) behind a box (#15): slower in a same-run A/B of `render_cpu`
/// at 512 vCPUs and 1 M events/s (fold with caches flushed 96-122 ns/event against 86-106,
/// warm 61-72 against 57-66), as most events still reach the boxed part (an exit its
/// reason's count, a switch-in its wait histogram and recent switch-ins, a guest gap its
/// resume histograms): one more dependent load each, for fewer lines elsewhere.
#[derive(Clone)]
pub(super) struct Task {
    pub(super) tid: u32,
    pub(super) pid: u32,
    pub(super) vm: u32,
    pub(super) vcpu: Option<u32>,
    pub(super) comm: Comm,
    pub(super) nice: i32,
    pub(super) weight: u32,
    pub(super) first_seen: u64,
    pub(super) ended_at: Option<u64>,
    /// Its exit was reported while it ran: it ends at its final switch-out.
    pub(super) exiting: bool,
    pub(super) state: TState,
    /// What a running thread does (in the guest, in the host kernel, in the VMM).
    pub(super) sub: VcpuState,
    /// Start of the current state.
    pub(super) since: u64,
    /// pCPU it runs on, or the run queue it waits in, or the pCPU it last ran on.
    pub(super) cpu: u32,
    pub(super) last_out_cpu: Option<u32>,
    pub(super) last_out_ts: u64,
    pub(super) cpus_used: CpuSet,
    /// Where it may run (ascending), as its latest `Affinity` event said; empty when unknown.
    pub(super) affinity: Vec<u32>,
    pub(super) clock: Clocks,
    pub(super) resume: ResumeTracker,
    pub(super) exits: ExitTracker,
    /// Who kept it waiting, and for how long.
    pub(super) culprits: Vec<(Owner, u64)>,
    /// Its previous counter sample (counters mode), `None` until the first.
    pub(super) sampled: Option<super::counters::SampleMemo>,
    /// The slot is free: its thread was retired (see `retire`) and no other took it yet.
    pub(super) vacant: bool,
    /// Its state when tracking began, where the source read it (see `TaskInfo::start`).
    pub(super) start_state: Option<TaskState>,
}

impl Task {
    pub(super) fn is_runnable(&self) -> bool {
        matches!(self.state, TState::Running | TState::Waiting)
    }

    /// Counters including the open interval up to `now`.
    pub(super) fn cum_at(&self, now: u64) -> Cum {
        let mut c = self.clock.cum;
        let open = now.saturating_sub(self.since);
        match self.state {
            TState::Running => c.run = c.run.saturating_add(open),
            TState::Waiting => c.wait = c.wait.saturating_add(open),
            TState::Sleeping => c.sleep = c.sleep.saturating_add(open),
            TState::Unknown | TState::Exited => {}
        }
        c
    }

    fn new(ti: &TaskInfo, vm: u32) -> Self {
        Task {
            tid: ti.tid,
            pid: ti.pid,
            vm,
            vcpu: ti.vcpu,
            comm: ti.comm,
            nice: ti.nice,
            weight: nice_to_weight(ti.nice),
            first_seen: ti.ts,
            ended_at: None,
            state: TState::Unknown,
            since: ti.ts,
            // Counted from tracking start where the source read the kernel's figures then.
            clock: Clocks::seeded(ti.schedstat.map(|s| (s.run_ns, s.wait_ns))),
            vacant: false,
            start_state: ti.start.map(|s| s.state),
            ..Task::vacant()
        }
    }

    /// A free slot: ended, in no VM, on no pCPU, holding nothing.
    pub(super) fn vacant() -> Self {
        Task {
            tid: 0,
            pid: 0,
            vm: u32::MAX,
            vcpu: None,
            comm: Comm::default(),
            nice: 0,
            weight: nice_to_weight(0),
            first_seen: 0,
            ended_at: Some(0),
            exiting: false,
            state: TState::Exited,
            sub: VcpuState::Unknown,
            since: 0,
            cpu: 0,
            last_out_cpu: None,
            last_out_ts: 0,
            cpus_used: CpuSet::default(),
            affinity: Vec::new(),
            clock: Clocks::default(),
            resume: ResumeTracker::default(),
            exits: ExitTracker::default(),
            culprits: Vec::new(),
            sampled: None,
            vacant: true,
            start_state: None,
        }
    }

    pub(super) fn end_or(&self, now: u64) -> u64 {
        self.ended_at.unwrap_or(now)
    }

    pub(super) fn label(&self, vms: &[VmEntry]) -> String {
        let vm = vms.get(self.vm as usize).map_or("?", |v| v.name.as_str());
        crate::thread_label(vm, self.vcpu, &self.comm)
    }
}

#[derive(Clone)]
pub(super) struct VmEntry {
    pub(super) name: String,
    pub(super) pid: u32,
    pub(super) ended: bool,
    /// What its retired threads left (their own process's only).
    pub(super) retired: RetiredTotals,
    /// The entry is free: the VM ended and was retired with its last thread.
    pub(super) vacant: bool,
}

impl VmEntry {
    /// A free entry: no name, no process.
    pub(super) fn vacant() -> Self {
        VmEntry {
            name: String::new(),
            pid: 0,
            ended: true,
            retired: RetiredTotals::default(),
            vacant: true,
        }
    }
}

impl Model {
    pub(super) fn vm_name(&self, vm: u32) -> String {
        self.vms
            .get(vm as usize)
            .map_or_else(String::new, |v| v.name.clone())
    }

    fn intern_vm(&mut self, name: &str, pid: u32) -> u32 {
        if let Some(i) = self.vms.iter().position(|v| !v.vacant && v.name == name) {
            let v = &mut self.vms[i];
            if v.ended && v.pid != pid {
                // A new process under an old name: the VM is back, its figures its own.
                v.ended = false;
                v.pid = pid;
                v.retired = RetiredTotals::default();
            }
            return i as u32;
        }
        let entry = VmEntry {
            name: name.to_string(),
            pid,
            ended: false,
            retired: RetiredTotals::default(),
            vacant: false,
        };
        // A retired VM's index is reused (its pCPU time column was folded away then).
        if let Some(free) = self.free_vms.pop() {
            self.vms[free as usize] = entry;
            return free;
        }
        self.vms.push(entry);
        (self.vms.len() - 1) as u32
    }

    /// Ends the thread's current state at `ts`, adding the interval to its counters.
    pub(super) fn account(&mut self, slot: usize, ts: u64) {
        let Some(t) = self.tasks.get_mut(slot) else {
            return;
        };
        let d = ts.saturating_sub(t.since);
        let cum = &mut t.clock.cum;
        match t.state {
            TState::Running => cum.run = cum.run.saturating_add(d),
            TState::Waiting => {
                cum.wait = cum.wait.saturating_add(d);
                t.clock.wait_hist.record(d);
            }
            TState::Sleeping => cum.sleep = cum.sleep.saturating_add(d),
            TState::Unknown | TState::Exited => {}
        }
        t.since = ts;
    }

    #[inline(never)]
    pub(super) fn on_task_exit(&mut self, x: &TaskExit) {
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
        self.log.push(|| Transition::Exited {
            ts,
            thread: n as u32,
        });
    }

    #[inline(never)]
    pub(super) fn on_task_info(&mut self, ti: &TaskInfo) {
        let vm = self.intern_vm(&ti.vm, ti.pid);
        if let Some(n) = self.slot(ti.tid) {
            let t = &mut self.tasks[n];
            if t.pid == ti.pid && t.vm == vm && t.state != TState::Exited {
                t.vcpu = ti.vcpu;
                t.comm = ti.comm;
                t.nice = ti.nice;
                self.log_thread(n, ti);
                return;
            }
            // The tid now names another thread: retire the old one.
            self.health.tid_reuse = self.health.tid_reuse.saturating_add(1);
            self.end_task(n, ti.ts);
            if self.tasks[n].state == TState::Running {
                self.account(n, ti.ts);
                self.mark_exited(n, ti.ts);
            }
        }
        // A retired thread's slot is reused (its references were remapped when it retired).
        let slot = match self.free_slots.pop() {
            Some(free) => {
                self.tasks[free as usize] = Task::new(ti, vm);
                free as usize
            }
            None => {
                self.tasks.push(Task::new(ti, vm));
                self.tasks.len() - 1
            }
        };
        self.log_thread(slot, ti);
        self.tid_slot.insert(ti.tid, slot as u32);
        self.health.unknown_tids.remove(&ti.tid);
        // Asleep when tracking began (a halted vCPU): asleep from here, not in no state until
        // an event of its own, which may never come.
        if let Some(start) = ti
            .start
            .filter(|s| s.state.switch_out() == SwitchOut::Sleeping)
        {
            let t = &mut self.tasks[slot];
            t.state = TState::Sleeping;
            t.sub = VcpuState::Sleeping;
            if start.cpu < super::MAX_CPUS {
                t.cpu = start.cpu;
            }
            self.log.state(ti.ts, slot, VcpuState::Sleeping, None);
        }
        // If this thread is on a CPU right now, that CPU's owner becomes it from here on.
        let now = ti.ts;
        for cpu in 0..self.cpus.len() {
            if self.cpus[cpu].seen && self.cpus[cpu].cur_tid == ti.tid {
                self.close_segment(cpu as u32, now);
                self.cpus[cpu].owner = Owner::Task(slot as u32);
                let t = &mut self.tasks[slot];
                t.state = TState::Running;
                t.sub = VcpuState::Running;
                t.cpu = cpu as u32;
                t.since = now;
                t.resume.last_in_ts = now;
                self.log
                    .state(now, slot, VcpuState::Running, Some(cpu as u32));
            }
        }
    }

    fn log_thread(&mut self, slot: usize, ti: &TaskInfo) {
        self.log.push(|| Transition::Thread {
            ts: ti.ts,
            thread: slot as u32,
            tid: ti.tid,
            pid: ti.pid,
            vm: ti.vm.clone(),
            vcpu: ti.vcpu,
            comm: ti.comm,
            nice: ti.nice,
        });
    }

    /// Where a thread may run does not change what it did (the figures come from where it
    /// ran); it is kept so that only changes are logged, for the demand fold to replay. Of a
    /// thread never announced it is unknown input, counted like that thread's other events.
    #[inline(never)]
    pub(super) fn on_affinity(&mut self, a: &Affinity) {
        let Some(n) = self.slot(a.tid) else {
            self.note_unknown(a.tid);
            return;
        };
        let t = &mut self.tasks[n];
        if t.affinity == a.cpus {
            return;
        }
        t.affinity.clone_from(&a.cpus);
        self.log.push(|| Transition::Affinity {
            ts: a.ts,
            thread: n as u32,
            cpus: a.cpus.clone(),
        });
    }

    /// Nothing of the model's own depends on a task's group: it is passed on for the demand
    /// fold, which splits other tasks' load by group.
    pub(super) fn on_task_group(&mut self, g: &TaskGroup) {
        self.log.push(|| Transition::TaskGroup {
            ts: g.ts,
            tid: g.tid,
            group: g.group.clone(),
        });
    }

    #[inline(never)]
    pub(super) fn on_vm_ended(&mut self, v: &VmEnded) {
        for vm in self.vms.iter_mut().filter(|vm| !vm.vacant) {
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
                        if c.owner == Owner::Task(n as u32) {
                            // We no longer know who runs there; count it as idle.
                            c.owner = Owner::Idle;
                        }
                    }
                    self.mark_exited(n, v.ts);
                } else {
                    self.end_task(n, v.ts);
                }
            }
        }
    }
}
