//! A small weighted-fair scheduler simulator ([`Sim`]) that produces realistic streams
//! (switches with vruntime, wakeups, migrations, exits, guest gaps) from a [`SimConfig`].
//!
//! The simulator is deliberately simple (pick the lowest vruntime, fixed slices, idle pull
//! balancing); it is a generator of plausible input, not a model of the kernel.

use std::collections::VecDeque;

use super::events::*;
use crate::*;

#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Always runnable.
    Spin,
    /// Runs `run_ns`, then sleeps `sleep_ns`, forever.
    Sleepy { run_ns: u64, sleep_ns: u64 },
    /// Always runnable, with a userspace exit (port I/O) every `every_ns` of run time.
    Exits { every_ns: u64 },
}

/// One simulated thread.
#[derive(Clone, Debug)]
pub struct SimTask {
    pub tid: u32,
    pub pid: u32,
    pub vm: String,
    /// `None` for an untracked host task (no `TaskInfo`, shown by comm).
    pub vcpu: Option<u32>,
    pub tracked: bool,
    pub nice: i32,
    /// pCPUs it may run on (empty = all).
    pub cpus: Vec<u32>,
    pub behaviour: Behaviour,
}

impl SimTask {
    /// A tracked vCPU thread `vm-vcpu<i>` of VM process `pid`, allowed on every pCPU.
    pub fn vcpu(tid: u32, pid: u32, vm: &str, i: u32, nice: i32, behaviour: Behaviour) -> SimTask {
        SimTask {
            tid,
            pid,
            vm: vm.to_string(),
            vcpu: Some(i),
            tracked: true,
            nice,
            cpus: vec![],
            behaviour,
        }
    }
}

/// What the simulated host emits.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub cpus: u32,
    pub slice_ns: u64,
    pub start_ts: u64,
    /// Emit `GuestGap` records for vCPUs (the bundled VMM's view).
    pub guest_gaps: bool,
    /// Emit `kvm_entry`/`kvm_exit` (a VT-x host); PVM hosts do not.
    pub entry_exit: bool,
    /// Switch-in → guest running, same pCPU / after a migration, ns.
    pub resume_same_ns: u64,
    pub resume_migrated_ns: u64,
    /// Guest's last instruction → switch-out, ns.
    pub to_switch_out_ns: u64,
    /// Let idle pCPUs pull waiting threads (emits `Migrate`).
    pub balance: bool,
    /// Every this many ns, move one waiting thread to the next pCPU's queue (emits `Migrate`).
    pub rebalance_every_ns: Option<u64>,
    /// A VT-x host with `csd:*` tracepoints: every migrated vCPU's switch-in queues a VMCLEAR
    /// cross-call to the pCPU it left (`None`: AMD-V, PVM or a kernel without them).
    pub vmclear: Option<VmclearTiming>,
    pub tasks: Vec<SimTask>,
}

/// The VMCLEAR IPI of a migrated vCPU, as `csd:*` shows it: queued on the new pCPU at the
/// switch-in, entered on the old pCPU `delivery_ns` later, done `run_ns` after that (before
/// the vCPU's first guest entry when `resume_migrated_ns` leaves room).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VmclearTiming {
    pub delivery_ns: u64,
    pub run_ns: u64,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum SimState {
    Running,
    Waiting,
    Sleeping { until: u64 },
}

struct SimThread {
    t: SimTask,
    weight: u32,
    state: SimState,
    cpu: u32,
    vruntime: u64,
    sum_exec: u64,
    burst_left: u64,
    exit_credit: u64,
    last_out: u64,
    last_out_cpu: Option<u32>,
}

struct SimCpu {
    cur: Option<usize>,
    /// When the current slice (or idle period) ends.
    slice_end: u64,
    run_from: u64,
    min_vruntime: u64,
}

/// A small deterministic scheduler simulator that emits kvmscope events.
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    threads: Vec<SimThread>,
    cpus: Vec<SimCpu>,
    /// Per pCPU, the threads that may wait in its queue: every waiting thread is listed under
    /// its pCPU (entries gone stale are dropped by `pick`), so a pick scans a few threads
    /// instead of all of them (at 512 vCPUs on 128 pCPUs, generating was mostly that scan).
    queued: Vec<Vec<usize>>,
    pending: VecDeque<Event>,
    rng: u64,
    started: bool,
    next_rebalance: u64,
    rebalance_turn: usize,
    /// Cross-calls issued: each VMCLEAR gets its own `csd` address.
    cross_calls: u64,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let cpus: Vec<SimCpu> = (0..cfg.cpus.max(1))
            .map(|_| SimCpu {
                cur: None,
                slice_end: cfg.start_ts,
                run_from: cfg.start_ts,
                min_vruntime: 0,
            })
            .collect();
        let threads = cfg
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| SimThread {
                weight: nice_to_weight(t.nice),
                state: SimState::Sleeping {
                    until: cfg.start_ts + 1000 * (i as u64 + 1),
                },
                cpu: t
                    .cpus
                    .first()
                    .copied()
                    .unwrap_or(i as u32 % cfg.cpus.max(1)),
                vruntime: 0,
                sum_exec: 0,
                burst_left: 0,
                exit_credit: 0,
                last_out: 0,
                last_out_cpu: None,
                t: t.clone(),
            })
            .collect();
        Sim {
            now: cfg.start_ts,
            threads,
            queued: vec![Vec::new(); cpus.len()],
            cpus,
            pending: VecDeque::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
            started: false,
            next_rebalance: 0,
            rebalance_turn: 0,
            cross_calls: 0,
            cfg,
        }
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*: deterministic jitter, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn allowed(&self, i: usize, cpu: u32) -> bool {
        let c = &self.threads[i].t.cpus;
        c.is_empty() || c.contains(&cpu)
    }

    fn se_of(&self, i: usize) -> Option<SchedEntity> {
        let th = &self.threads[i];
        th.t.tracked
            .then(|| se(th.vruntime, th.weight, th.sum_exec))
    }

    fn comm_of(&self, i: Option<usize>) -> Comm {
        match i {
            None => Comm::new("swapper/0"),
            Some(i) => {
                let t = &self.threads[i].t;
                match t.vcpu {
                    Some(v) => Comm::new(&format!("{}-vcpu{v}", t.vm)),
                    None => Comm::new(&t.vm),
                }
            }
        }
    }

    /// Lowest-vruntime waiting thread queued on `cpu` (the lowest index among equals).
    fn pick(&mut self, cpu: u32) -> Option<usize> {
        let threads = &self.threads;
        let queue = &mut self.queued[cpu as usize];
        queue.retain(|&i| threads[i].state == SimState::Waiting && threads[i].cpu == cpu);
        queue
            .iter()
            .copied()
            .min_by_key(|&i| (threads[i].vruntime, i))
    }

    /// Thread `i` now waits, or waits on another pCPU: list it under its pCPU.
    fn enqueue(&mut self, i: usize) {
        let queue = &mut self.queued[self.threads[i].cpu as usize];
        if !queue.contains(&i) {
            queue.push(i);
        }
    }

    /// Charges the current thread of `cpu` for its run up to `now`.
    fn charge(&mut self, cpu: usize) {
        let now = self.now;
        if let Some(i) = self.cpus[cpu].cur {
            let ran = now.saturating_sub(self.cpus[cpu].run_from);
            let th = &mut self.threads[i];
            th.vruntime += ran * 1024 / th.weight.max(1) as u64;
            th.sum_exec += ran;
            th.burst_left = th.burst_left.saturating_sub(ran);
            if let Behaviour::Exits { every_ns } = th.t.behaviour {
                th.exit_credit += ran;
                let n = th.exit_credit / every_ns.max(1);
                th.exit_credit %= every_ns.max(1);
                let tid = th.t.tid;
                let tracked = th.t.tracked;
                for k in 0..n {
                    let ts = self.cpus[cpu].run_from + (k + 1) * (ran / (n + 1)).max(1);
                    if tracked {
                        self.pending
                            .push_back(userspace_exit(ts, cpu as u32, tid, 2));
                        self.pending.push_back(Event::Pio(Pio {
                            ts,
                            cpu: cpu as u32,
                            tid,
                            rw: 1,
                            port: 0x3f8,
                            size: 1,
                            val: 0,
                        }));
                        if self.cfg.entry_exit {
                            self.pending
                                .push_back(kvm_exit(ts, cpu as u32, tid, ExitIsa::Vmx, 30));
                            self.pending
                                .push_back(kvm_entry(ts + 2_000, cpu as u32, tid));
                        }
                    }
                }
            }
        }
        self.cpus[cpu].run_from = now;
    }

    /// Each queue's `min_vruntime`, as the kernel keeps it: the lowest vruntime among the
    /// running and the waiting threads of the pCPU, never moving back. (Following the running
    /// thread alone let a light thread's fast vruntime drag it up, and whatever was queued
    /// behind another pCPU's spinner started so far ahead of it that it never ran.) Read by
    /// the next step's wake-ups and rebalancing.
    fn advance_min_vruntimes(&mut self) {
        let mut lowest: Vec<Option<u64>> = vec![None; self.cpus.len()];
        for (cpu, c) in self.cpus.iter().enumerate() {
            lowest[cpu] = c.cur.map(|i| self.threads[i].vruntime);
        }
        for th in &self.threads {
            if th.state == SimState::Waiting {
                let low = &mut lowest[th.cpu as usize];
                *low = Some(low.map_or(th.vruntime, |v| v.min(th.vruntime)));
            }
        }
        for (c, low) in self.cpus.iter_mut().zip(lowest) {
            if let Some(v) = low {
                c.min_vruntime = c.min_vruntime.max(v);
            }
        }
    }

    /// Puts `next` (or idle) on `cpu`; `prev_sleeps` says how the current thread leaves.
    fn switch_to(&mut self, cpu: usize, next: Option<usize>, prev_sleeps: bool) {
        let now = self.now;
        let prev = self.cpus[cpu].cur;
        if prev == next && prev.is_some() {
            return;
        }
        let mut sw = SchedSwitch {
            ts: now,
            cpu: cpu as u32,
            prev_tid: prev.map_or(0, |i| self.threads[i].t.tid),
            prev_pid: prev.map_or(0, |i| self.threads[i].t.pid),
            prev_comm: self.comm_of(prev),
            prev_state: if prev_sleeps { 1 } else { 0 },
            next_tid: next.map_or(0, |i| self.threads[i].t.tid),
            next_pid: next.map_or(0, |i| self.threads[i].t.pid),
            next_comm: self.comm_of(next),
            prev_se: prev.and_then(|i| self.se_of(i)),
            next_se: next.and_then(|i| self.se_of(i)),
        };
        if prev.is_none() && next.is_none() {
            return;
        }
        if let Some(p) = prev {
            let to_out = self.cfg.to_switch_out_ns;
            let th = &mut self.threads[p];
            th.last_out = now.saturating_sub(to_out.min(now));
            th.last_out_cpu = Some(cpu as u32);
            if !prev_sleeps {
                th.state = SimState::Waiting;
                self.enqueue(p);
            }
        }
        if let Some(n) = next {
            let jitter = self.rand() % 4_000;
            let th = &mut self.threads[n];
            th.state = SimState::Running;
            let migrated = th.last_out_cpu.is_some_and(|c| c != cpu as u32);
            if th.t.tracked && th.t.vcpu.is_some() && th.last_out_cpu.is_some() {
                let resume = if migrated {
                    self.cfg.resume_migrated_ns
                } else {
                    self.cfg.resume_same_ns
                } + jitter;
                let first = now + resume;
                if self.cfg.guest_gaps {
                    self.pending.push_back(guest_gap(
                        th.last_out,
                        first,
                        th.t.tid,
                        0,
                        th.t.vcpu.unwrap_or(0),
                    ));
                }
                if let (true, Some(v), Some(old)) = (migrated, self.cfg.vmclear, th.last_out_cpu) {
                    self.cross_calls += 1;
                    let (tid, csd) = (th.t.tid, 0xffff_8880_0000_0000 | self.cross_calls << 6);
                    let (queued, entered) = (now + 1_000, now + 1_000 + v.delivery_ns);
                    let done = entered + v.run_ns;
                    for (ts, on, phase) in [
                        (queued, cpu as u32, CrossCallPhase::Queue),
                        (entered, old, CrossCallPhase::Entry),
                        (done, old, CrossCallPhase::Exit),
                    ] {
                        self.pending
                            .push_back(vmclear(ts, on, phase, csd, old, tid));
                    }
                }
                if self.cfg.entry_exit {
                    self.pending
                        .push_back(kvm_entry(first, cpu as u32, th.t.tid));
                }
            }
            th.cpu = cpu as u32;
        }
        sw.prev_state = if prev_sleeps { 1 } else { 0 };
        self.pending.push_back(Event::SchedSwitch(sw));
        self.cpus[cpu].cur = next;
        self.cpus[cpu].run_from = now;
        self.cpus[cpu].slice_end = now + self.cfg.slice_ns;
    }

    fn start(&mut self) {
        self.started = true;
        for i in 0..self.threads.len() {
            let t = &self.threads[i].t;
            if t.tracked {
                let ev = task_info(self.now, t.tid, t.pid, &t.vm, t.vcpu, t.nice);
                self.pending.push_back(ev);
            }
        }
    }

    /// Simulates until `until` (event time) and appends the events, in timestamp order within
    /// the batch, to `out`.
    pub fn run_until(&mut self, until: u64, out: &mut Vec<Event>) {
        if !self.started {
            self.start();
        }
        while self.now < until {
            // Next decision: a slice end or a wake-up, whichever is first.
            let mut next = until;
            for c in &self.cpus {
                if c.cur.is_some() {
                    next = next.min(c.slice_end);
                }
            }
            for th in &self.threads {
                if let SimState::Sleeping { until: w } = th.state {
                    next = next.min(w.max(self.now));
                }
                if th.state == SimState::Running {
                    if let Behaviour::Sleepy { .. } = th.t.behaviour {
                        let c = &self.cpus[th.cpu as usize];
                        next = next.min(c.run_from + th.burst_left);
                    }
                }
            }
            self.now = next.max(self.now + 1).min(until.max(self.now + 1));
            self.step();
        }
        let mut evs: Vec<Event> = self.pending.drain(..).collect();
        evs.sort_by_key(Event::ts);
        out.extend(evs);
    }

    fn step(&mut self) {
        let now = self.now;
        if let Some(every) = self.cfg.rebalance_every_ns {
            if now >= self.next_rebalance {
                self.next_rebalance = now + every.max(1);
                self.rebalance(now);
            }
        }
        // Wake-ups: queue on an allowed pCPU, preferring an idle one, else its last one.
        for i in 0..self.threads.len() {
            if let SimState::Sleeping { until } = self.threads[i].state {
                if until > now {
                    continue;
                }
                let ncpu = self.cpus.len() as u32;
                let idle =
                    (0..ncpu).find(|&c| self.allowed(i, c) && self.cpus[c as usize].cur.is_none());
                let target = idle.unwrap_or(self.threads[i].cpu);
                let target = if self.allowed(i, target) {
                    target
                } else {
                    self.threads[i].t.cpus.first().copied().unwrap_or(0)
                };
                let minv = self.cpus[target as usize].min_vruntime;
                let th = &mut self.threads[i];
                // Sleeper credit: at most half a slice behind the queue.
                th.vruntime = th.vruntime.max(minv.saturating_sub(self.cfg.slice_ns / 2));
                if th.cpu != target {
                    let from = th.cpu;
                    th.cpu = target;
                    if th.t.tracked {
                        self.pending.push_back(migrate(now, th.t.tid, from, target));
                    }
                }
                self.threads[i].state = SimState::Waiting;
                self.enqueue(i);
                let th = &mut self.threads[i];
                if let Behaviour::Sleepy { run_ns, .. } = th.t.behaviour {
                    th.burst_left = run_ns;
                }
                if th.t.tracked {
                    self.pending
                        .push_back(wakeup(now, target, th.t.tid, target));
                }
            }
        }
        for cpu in 0..self.cpus.len() {
            self.charge(cpu);
            let cur = self.cpus[cpu].cur;
            // Sleepy thread done with its burst: it sleeps.
            if let Some(i) = cur {
                if let Behaviour::Sleepy { sleep_ns, .. } = self.threads[i].t.behaviour {
                    if self.threads[i].burst_left == 0 {
                        self.threads[i].state = SimState::Sleeping {
                            until: now + sleep_ns,
                        };
                        let next = self.pick(cpu as u32);
                        self.switch_to(cpu, next, true);
                        continue;
                    }
                }
            }
            match cur {
                Some(i) if now >= self.cpus[cpu].slice_end => {
                    let next = self.pick(cpu as u32);
                    match next {
                        Some(n) if self.threads[n].vruntime < self.threads[i].vruntime => {
                            self.switch_to(cpu, Some(n), false)
                        }
                        _ => self.cpus[cpu].slice_end = now + self.cfg.slice_ns,
                    }
                }
                Some(i) => {
                    // Wake-up preemption: a waiting thread far behind takes the CPU.
                    if let Some(n) = self.pick(cpu as u32) {
                        if self.threads[n].vruntime + self.cfg.slice_ns < self.threads[i].vruntime {
                            self.switch_to(cpu, Some(n), false);
                        }
                    }
                }
                None => {
                    let mut next = self.pick(cpu as u32);
                    if next.is_none() && self.cfg.balance {
                        // Pull the longest-waiting allowed thread from another queue.
                        let cand = (0..self.threads.len()).find(|&i| {
                            self.threads[i].state == SimState::Waiting
                                && self.allowed(i, cpu as u32)
                        });
                        if let Some(i) = cand {
                            let from = self.threads[i].cpu;
                            self.threads[i].cpu = cpu as u32;
                            if self.threads[i].t.tracked {
                                self.pending.push_back(migrate(
                                    now,
                                    self.threads[i].t.tid,
                                    from,
                                    cpu as u32,
                                ));
                            }
                            next = Some(i);
                        }
                    }
                    if next.is_some() {
                        self.switch_to(cpu, next, false);
                    }
                }
            }
        }
        self.advance_min_vruntimes();
    }
}

impl Sim {
    /// Moves the next waiting thread (round robin) to the following pCPU's queue.
    fn rebalance(&mut self, now: u64) {
        let n = self.threads.len();
        let ncpu = self.cpus.len() as u32;
        for k in 0..n {
            let i = (self.rebalance_turn + k) % n;
            if self.threads[i].state != SimState::Waiting {
                continue;
            }
            let from = self.threads[i].cpu;
            let dest = (from + 1) % ncpu;
            if dest == from || !self.allowed(i, dest) {
                continue;
            }
            self.threads[i].cpu = dest;
            self.enqueue(i);
            let minv = self.cpus[dest as usize].min_vruntime;
            self.threads[i].vruntime = self.threads[i].vruntime.max(minv);
            if self.threads[i].t.tracked {
                self.pending
                    .push_back(migrate(now, self.threads[i].t.tid, from, dest));
            }
            self.rebalance_turn = i + 1;
            return;
        }
    }
}

/// `seconds` of any scenario as one time-ordered vector.
pub fn stream(cfg: SimConfig, seconds: f64) -> Vec<Event> {
    let until = cfg.start_ts + (seconds.max(0.0) * 1e9) as u64;
    let mut sim = Sim::new(cfg);
    let mut out = Vec::new();
    sim.run_until(until, &mut out);
    out.sort_by_key(Event::ts);
    out
}
