//! Scheduler events: `sched_switch` (state changes and switch counts), wakeups, and
//! migrations between run queues.

use super::owner::Owner;
use super::task::{TState, Task};
use super::transitions::TransitionLog;
use super::{Model, MAX_CPUS};
use crate::{Migrate, PcpuHolder, SchedEntity, SchedSwitch, Transition, VcpuState, Wakeup};

impl Model {
    #[inline(never)]
    pub(super) fn on_switch(&mut self, s: &SchedSwitch) {
        let cpu = s.cpu;
        let ts = s.ts;
        let Some(c) = self.cpu_mut(cpu) else { return };
        c.last_event_ts = ts;
        let cpu_seen = c.seen;
        let cpu_since = c.since;
        let cached = match c.owner {
            Owner::Task(slot) if c.cur_tid == s.prev_tid => Some(slot as usize),
            _ => None,
        };
        self.close_segment(cpu, ts);

        // prev leaves the CPU.
        let prev = match cached {
            Some(slot) if self.tasks.get(slot).is_some_and(|t| t.tid == s.prev_tid) => Some(slot),
            _ => self.slot(s.prev_tid),
        };
        if let Some(p) = prev {
            let spacing = self.cfg.vruntime_spacing_ns;
            let history = self.cfg.history_ns;
            let state = self.tasks[p].state;
            match state {
                TState::Running => self.account(p, ts),
                TState::Unknown => {
                    // It was on this CPU since the last switch here, or since tracking began.
                    let t = &mut self.tasks[p];
                    let from = if cpu_seen {
                        cpu_since.max(t.first_seen)
                    } else {
                        t.first_seen
                    };
                    t.clock.cum.run = t.clock.cum.run.saturating_add(ts.saturating_sub(from));
                    t.since = ts;
                    self.log.state(from, p, VcpuState::Running, Some(cpu));
                }
                TState::Waiting | TState::Sleeping => {
                    // Missed its switch-in (and, sleeping, its wakeup): lost events, or a
                    // switch the tracepoint never reported (seen on some hosts when prev is one
                    // of a few system threads, and on PVM with nothing lost). The task clock it
                    // gained since it was last seen is run time, so the switch-in was at the
                    // latest that long before now; the rest was wait (or sleep).
                    let ran = match (&s.prev_se, self.tasks[p].clock.last_sum_exec) {
                        (Some(se), Some(last)) => se.sum_exec_runtime.saturating_sub(last),
                        _ => 0,
                    };
                    let switched_in = ts.saturating_sub(ran).max(self.tasks[p].since);
                    self.health.unpaired_switch_outs += 1;
                    self.account(p, switched_in);
                    if state == TState::Waiting {
                        self.remove_waiting(p);
                    }
                    self.tasks[p].state = TState::Running;
                    self.tasks[p].sub = VcpuState::Running;
                    self.log
                        .state(switched_in, p, VcpuState::Running, Some(cpu));
                    self.account(p, ts);
                }
                TState::Exited => {}
            }
            let t = &mut self.tasks[p];
            if t.state != TState::Exited {
                let mut task_clock_ns = None;
                let dying = t.exiting || s.prev_task_state().is_dead();
                match &s.prev_se {
                    Some(se) if dying => {
                        // The kernel takes a dying task out of its session's autogroup before
                        // its last switch (`sched_autogroup_exit_task`), so that switch carries a
                        // vruntime on the root run queue's scale, hours from the thread's own:
                        // only its clocks count; its vruntime stays the last one it ran with.
                        task_clock_ns = t.clock.count(se);
                    }
                    Some(se) => {
                        task_clock_ns = sample_se(t, &mut self.log, p, se, ts, spacing, history);
                        t.clock.vruntime_cpu = cpu;
                    }
                    None => {}
                }
                t.resume.switched_out(ts);
                t.cpu = cpu;
                t.last_out_cpu = Some(cpu);
                t.last_out_ts = ts;
                t.since = ts;
                let thread = p as u32;
                if t.exiting {
                    t.state = TState::Exited;
                    t.ended_at = Some(ts);
                    self.log.push(|| Transition::Exited { ts, thread });
                } else if s.prev_preempted() {
                    t.clock.cum.involuntary = t.clock.cum.involuntary.saturating_add(1);
                    t.state = TState::Waiting;
                    t.sub = VcpuState::Waiting;
                    self.log.push(|| Transition::SwitchOut {
                        ts,
                        thread,
                        pcpu: cpu,
                        preempted: true,
                        task_clock_ns,
                    });
                    self.log.state(ts, p, VcpuState::Waiting, Some(cpu));
                    self.add_waiting(p, cpu);
                } else {
                    t.clock.cum.voluntary = t.clock.cum.voluntary.saturating_add(1);
                    t.state = TState::Sleeping;
                    t.sub = VcpuState::Sleeping;
                    self.log.push(|| Transition::SwitchOut {
                        ts,
                        thread,
                        pcpu: cpu,
                        preempted: false,
                        task_clock_ns,
                    });
                    self.log.state(ts, p, VcpuState::Sleeping, None);
                }
            }
        } else {
            if s.prev_se.is_some() {
                self.note_unknown(s.prev_tid);
            }
            if s.prev_tid != 0 {
                let (tid, preempted) = (s.prev_tid, s.prev_preempted());
                self.log.push(|| Transition::OtherSwitchOut {
                    ts,
                    cpu,
                    tid,
                    preempted,
                });
            }
        }

        // next takes the CPU.
        let next = self.slot(s.next_tid);
        let owner = match next {
            Some(n) if self.tasks[n].state != TState::Exited => {
                match self.tasks[n].state {
                    TState::Waiting => {
                        self.remove_waiting(n);
                        self.account(n, ts);
                    }
                    TState::Sleeping => self.account(n, ts),
                    TState::Unknown => {
                        // Runnable since tracking began, else we would have seen its wakeup.
                        let t = &mut self.tasks[n];
                        let d = ts.saturating_sub(t.first_seen);
                        t.clock.cum.wait = t.clock.cum.wait.saturating_add(d);
                        if d > 0 {
                            t.clock.wait_hist.record(d);
                        }
                        self.log
                            .state(t.first_seen, n, VcpuState::Waiting, Some(cpu));
                    }
                    TState::Running => {
                        // Still marked running elsewhere (lost switch-out): close that run.
                        self.account(n, ts);
                    }
                    TState::Exited => {}
                }
                let spacing = self.cfg.vruntime_spacing_ns;
                let history = self.cfg.history_ns;
                let t = &mut self.tasks[n];
                if let Some(se) = &s.next_se {
                    sample_se(t, &mut self.log, n, se, ts, spacing, history);
                    t.clock.vruntime_cpu = cpu;
                }
                let migrated = t.last_out_cpu.is_some_and(|o| o != cpu);
                if migrated {
                    t.clock.cum.pcpu_changes = t.clock.cum.pcpu_changes.saturating_add(1);
                }
                t.cpus_used.insert(cpu);
                t.state = TState::Running;
                t.sub = VcpuState::Running;
                t.since = ts;
                t.cpu = cpu;
                t.resume
                    .switched_in(ts, migrated, t.last_out_ts, self.cfg.recent_switch_ins);
                self.log.state(ts, n, VcpuState::Running, Some(cpu));
                Owner::Task(n as u32)
            }
            Some(_) => Owner::Idle,
            None => {
                if s.next_se.is_some() {
                    self.note_unknown(s.next_tid);
                }
                if s.next_tid == 0 {
                    Owner::Idle
                } else {
                    Owner::Other(self.intern_comm(s.next_comm))
                }
            }
        };
        self.log.push(|| Transition::Pcpu {
            ts,
            cpu,
            holder: match owner {
                Owner::Task(slot) => PcpuHolder::Thread(slot),
                Owner::Idle => PcpuHolder::Idle,
                // (A switch-in never names a retired thread; the arm is for completeness.)
                Owner::Other(_) | Owner::Ended(_) | Owner::EndedVm => PcpuHolder::Other {
                    tid: s.next_tid,
                    comm: s.next_comm,
                },
            },
        });
        if let Some(c) = self.cpus.get_mut(cpu as usize) {
            if !c.seen {
                c.seen = true;
                c.first_ts = ts;
            }
            c.since = ts;
            c.owner = owner;
            c.cur_tid = s.next_tid;
        }
    }

    #[inline(never)]
    pub(super) fn on_wakeup(&mut self, w: &Wakeup) {
        if let Some(c) = self.cpu_mut(w.cpu) {
            c.last_event_ts = w.ts;
        }
        let Some(n) = self.slot(w.tid) else { return };
        let target = if w.target_cpu < MAX_CPUS {
            w.target_cpu
        } else {
            w.cpu
        };
        match self.tasks[n].state {
            TState::Sleeping => self.account(n, w.ts),
            TState::Unknown => {
                let t = &mut self.tasks[n];
                t.clock.cum.sleep = t
                    .clock
                    .cum
                    .sleep
                    .saturating_add(w.ts.saturating_sub(t.first_seen));
                t.since = w.ts;
                self.log.state(t.first_seen, n, VcpuState::Sleeping, None);
            }
            // Already runnable (a waking that raced with the switch-out) or gone.
            TState::Running | TState::Waiting | TState::Exited => return,
        }
        let t = &mut self.tasks[n];
        t.state = TState::Waiting;
        t.sub = VcpuState::Waiting;
        t.cpu = target;
        self.log.state(w.ts, n, VcpuState::Waiting, Some(target));
        self.add_waiting(n, target);
    }

    #[inline(never)]
    pub(super) fn on_migrate(&mut self, m: &Migrate) {
        if let Some(c) = self.cpu_mut(m.cpu) {
            c.last_event_ts = m.ts;
        }
        let Some(n) = self.slot(m.tid) else { return };
        self.health.saw_migrate = true;
        if m.orig_cpu == m.dest_cpu {
            // set_task_cpu() fires the tracepoint even when the CPU does not change, but only
            // bumps se.nr_migrations when it does.
            return;
        }
        let dest = if m.dest_cpu < MAX_CPUS {
            m.dest_cpu
        } else {
            return;
        };
        if self.tasks[n].state == TState::Exited {
            return;
        }
        if self.tasks[n].state == TState::Waiting {
            // Its wait continues in the new queue; attribution up to now goes to the old one.
            self.close_segment(self.tasks[n].cpu, m.ts);
            self.remove_waiting(n);
            self.add_waiting(n, dest);
            self.log.state(m.ts, n, VcpuState::Waiting, Some(dest));
        }
        let t = &mut self.tasks[n];
        t.clock.cum.migrate_events = t.clock.cum.migrate_events.saturating_add(1);
        if t.state != TState::Running {
            t.cpu = dest;
        }
    }
}

/// Folds in the sched entity a switch carried for thread `slot` (`t`) and logs what it
/// changed: its vruntime, and its weight when that changed. Returns the task clock's growth
/// since the thread's previous sample.
fn sample_se(
    t: &mut Task,
    log: &mut TransitionLog,
    slot: usize,
    se: &SchedEntity,
    ts: u64,
    spacing: u64,
    history: u64,
) -> Option<u64> {
    let thread = slot as u32;
    let reweighted = se.weight != 0 && se.weight != t.weight;
    if reweighted {
        t.weight = se.weight;
    }
    let ran = t.clock.sample(se, ts, spacing, history);
    log.push(|| Transition::Vruntime {
        ts,
        thread,
        vruntime: se.vruntime,
    });
    if reweighted {
        log.push(|| Transition::Weight {
            ts,
            thread,
            weight: se.weight,
        });
    }
    ran
}
