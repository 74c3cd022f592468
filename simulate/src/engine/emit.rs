//! What the engine's events say, as a live host's would: each thread announced asleep from
//! its start, the scheduling entity a switch carries (the policy's virtual time), who a
//! switch names, and migrations.

use model::{task_state, Comm, Event, Migrate, SchedEntity, TaskInfo, TaskState, ThreadStart};

use super::{Engine, Policy};

impl<P: Policy> Engine<'_, P> {
    pub(super) fn emit(&mut self, sink: &mut dyn FnMut(&Event), ev: Event) {
        self.stats.events += 1;
        sink(&ev);
    }

    /// Announces every tracked thread at the run's start.
    pub(super) fn announce(&mut self, sink: &mut dyn FnMut(&Event)) {
        for (i, t) in self.demand.threads.iter().enumerate() {
            if t.background {
                continue;
            }
            // Every thread starts asleep until its first wakeup (one with no burst, such as
            // a vCPU the recording saw asleep all along, for good): said, so that the run's
            // views show it asleep, not in no state with a note blaming the source.
            let start = ThreadStart {
                state: TaskState(task_state::bits::TASK_INTERRUPTIBLE),
                cpu: self.view.cpu_of[i],
            };
            let ev = Event::TaskInfo(TaskInfo {
                ts: self.base,
                tid: t.tid,
                pid: t.pid,
                comm: t.comm,
                vm: t.vm.clone(),
                vcpu: t.vcpu,
                nice: t.nice,
                schedstat: None,
                start: Some(start),
            });
            self.emit(sink, ev);
        }
    }

    /// Reports `t` moving to `dest` (a `sched_migrate_task` raised on `cpu`), if it moves.
    pub(super) fn move_to(
        &mut self,
        sink: &mut dyn FnMut(&Event),
        t: u32,
        dest: u32,
        cpu: u32,
        ts: u64,
    ) {
        let i = t as usize;
        let orig = self.view.cpu_of[i];
        if orig == dest {
            return;
        }
        self.view.cpu_of[i] = dest;
        self.stats.migrations += 1;
        if !self.view.threads[i].background {
            let ev = Event::Migrate(Migrate {
                ts,
                cpu,
                tid: self.view.threads[i].tid,
                pid: self.demand.threads[i].pid,
                orig_cpu: orig,
                dest_cpu: dest,
            });
            self.emit(sink, ev);
        }
    }

    pub(super) fn entity(&self, t: u32) -> Option<SchedEntity> {
        let i = t as usize;
        if self.view.threads[i].background {
            return None;
        }
        Some(SchedEntity {
            vruntime: self.policy.vtime(t).unwrap_or_else(|| {
                let (exec, w) = (self.runs[i].exec, u64::from(self.view.threads[i].weight));
                // 64-bit division while it cannot overflow (208 days of CPU); 128 beyond.
                exec.checked_mul(1024).map_or_else(
                    || (u128::from(exec) * 1024 / u128::from(w)) as u64,
                    |x| x / w,
                )
            }),
            weight: self.view.threads[i].weight,
            sum_exec_runtime: self.runs[i].exec,
            deadline: self.policy.deadline(t),
            vlag: None,
            slice: self.policy.slice(t),
            run_delay: Some(self.runs[i].run_delay),
        })
    }

    pub(super) fn comm(&self, t: Option<u32>, cpu: u32) -> (u32, u32, Comm) {
        match t {
            None => (0, 0, self.idle_comms[cpu as usize]),
            Some(t) => {
                let d = &self.demand.threads[t as usize];
                (self.view.threads[t as usize].tid, d.pid, d.comm)
            }
        }
    }
}
