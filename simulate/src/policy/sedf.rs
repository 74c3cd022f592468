//! Xen's SEDF (`xen/common/sched_sedf.c`, removed in 2015): each vCPU has a period and a
//! slice and sits on one fixed pCPU (`vcpu_id mod |affinity|`, no migration); per pCPU the
//! runnable vCPUs with slice left are run earliest deadline first, the others wait for their
//! next period; time no one reserved goes in 500 µs extra quanta to extra-aware vCPUs (those
//! that lost time to a short block first). Defaults are best effort: period 100 ms, slice 0,
//! extratime on. Set reservations per VM: `--param sedf.slice.vm1=5ms --param
//! sedf.period.vm1=20ms`.

use crate::engine::{Cx, Policy, SimThread};
use crate::params::{format_ns, ParamError, Params};

#[derive(Clone, Debug)]
pub struct SedfParams {
    pub period: u64,
    pub slice: u64,
    pub extratime: bool,
    pub extra_quantum: u64,
    pub periods: Vec<(String, u64)>,
    pub slices: Vec<(String, u64)>,
    pub extras: Vec<(String, u64)>,
}

const PERIOD_MIN: u64 = 10_000;
const PERIOD_MAX: u64 = 10_000_000_000;
const SLICE_MIN: u64 = 5_000;

impl SedfParams {
    pub fn new(p: &Params) -> Result<SedfParams, ParamError> {
        let s = "sedf";
        Ok(SedfParams {
            period: p.ns(s, "period", 100_000_000)?,
            slice: p.ns(s, "slice", 0)?,
            extratime: p.bool(s, "extratime", true)?,
            extra_quantum: p.ns(s, "extra_quantum", 500_000)?.max(1),
            periods: p.per_vm(s, "period", |p, _, k| p.ns_of(k))?,
            slices: p.per_vm(s, "slice", |p, _, k| p.ns_of(k))?,
            extras: p.per_vm(s, "extratime", |p, _, k| p.u64_of(k))?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Edf,
    Extra,
}

#[derive(Clone, Copy, Default)]
struct Unit {
    period: u64,
    slice: u64,
    extra: bool,
    home: u32,
    deadl_abs: u64,
    cputime: u64,
    lost: u64,
    runnable: bool,
    /// Woken at least once (the first wake starts a fresh period).
    started: bool,
    /// In `runq` (slice left this period) rather than waiting for the next period.
    in_runq: bool,
}

#[derive(Default)]
struct Pcpu {
    curr: Option<(u32, Mode)>,
    started: u64,
    run_until: u64,
    /// Extra-aware runnable units, penalty (lost time) first, FIFO within each.
    extra_pen: Vec<u32>,
    extra_util: Vec<u32>,
    /// Runnable units with slices on this pCPU.
    members: Vec<u32>,
    /// When an idle pCPU must look again (a period begins).
    idle_wake: u64,
}

pub struct Sedf {
    p: SedfParams,
    units: Vec<Unit>,
    pcpus: Vec<Pcpu>,
}

/// `sedf_pick_cpu`: the vCPU id modulo its allowed pCPUs, kept until its affinity changes.
fn pick_cpu(th: &SimThread, ncpus: u32) -> u32 {
    let allowed: Vec<u32> = (0..ncpus).filter(|&c| th.may_run_on(c)).collect();
    if allowed.is_empty() {
        0
    } else {
        allowed[th.index as usize % allowed.len()]
    }
}

impl Sedf {
    pub fn new(
        p: SedfParams,
        threads: &[SimThread],
        vm_names: &[String],
        ncpus: u32,
    ) -> Result<Sedf, ParamError> {
        let mut units = Vec::with_capacity(threads.len());
        for th in threads {
            let vm = vm_names.get(th.group as usize).map_or("", String::as_str);
            let find = |list: &[(String, u64)]| {
                list.iter()
                    .find(|(v, _)| !vm.is_empty() && v == vm)
                    .map(|(_, x)| *x)
            };
            let period = find(&p.periods).unwrap_or(p.period);
            let mut slice = find(&p.slices).unwrap_or(p.slice);
            let extra = find(&p.extras).map_or(p.extratime, |x| x != 0);
            if th.background {
                // Untracked tasks: best effort.
                slice = 0;
            }
            // Every message names the same thing: the VM, or the tasks outside every VM.
            let whose = if vm.is_empty() { "background" } else { vm };
            if !(PERIOD_MIN..=PERIOD_MAX).contains(&period) {
                return Err(ParamError::Invalid(format!(
                    "sedf: the period of {whose} ({}) is outside {}..={}",
                    format_ns(period),
                    format_ns(PERIOD_MIN),
                    format_ns(PERIOD_MAX)
                )));
            }
            if slice > period {
                return Err(ParamError::Invalid(format!(
                    "sedf: the slice of {whose} ({}) is longer than its period ({})",
                    format_ns(slice),
                    format_ns(period)
                )));
            }
            if slice != 0 && slice < SLICE_MIN {
                return Err(ParamError::Invalid(format!(
                    "sedf: the slice of {whose} ({}) is below {}",
                    format_ns(slice),
                    format_ns(SLICE_MIN)
                )));
            }
            let home = pick_cpu(th, ncpus);
            units.push(Unit {
                period,
                slice,
                extra,
                home,
                deadl_abs: period,
                ..Unit::default()
            });
        }
        Ok(Sedf {
            p,
            units,
            pcpus: (0..ncpus)
                .map(|_| Pcpu {
                    idle_wake: u64::MAX,
                    ..Pcpu::default()
                })
                .collect(),
        })
    }

    fn period_start(u: &Unit) -> u64 {
        u.deadl_abs.saturating_sub(u.period)
    }

    /// `update_queues`: periods that began move to the run queue; missed deadlines get a
    /// fresh slice on the period grid.
    fn update_queues(&mut self, cpu: u32, now: u64) {
        for &t in &self.pcpus[cpu as usize].members {
            let u = &mut self.units[t as usize];
            if u.deadl_abs <= now {
                let k = (now - u.deadl_abs) / u.period + 1;
                u.deadl_abs += k * u.period;
                u.cputime = 0;
                u.in_runq = true;
            } else if !u.in_runq && Self::period_start(u) <= now {
                u.cputime = 0;
                u.in_runq = true;
            }
        }
    }

    fn next_release(&self, cpu: u32, now: u64) -> u64 {
        self.pcpus[cpu as usize]
            .members
            .iter()
            .map(|&t| &self.units[t as usize])
            .map(|u| {
                if u.in_runq {
                    u.deadl_abs
                } else {
                    Self::period_start(u)
                }
            })
            .filter(|&r| r > now)
            .min()
            .unwrap_or(u64::MAX)
    }

    fn edf_head(&self, cpu: u32) -> Option<u32> {
        self.pcpus[cpu as usize]
            .members
            .iter()
            .copied()
            .filter(|&t| self.units[t as usize].in_runq)
            .min_by_key(|&t| (self.units[t as usize].deadl_abs, t))
    }

    fn extra_push(&mut self, t: u32) {
        let u = self.units[t as usize];
        if !u.extra {
            return;
        }
        let pc = &mut self.pcpus[u.home as usize];
        pc.extra_pen.retain(|&x| x != t);
        pc.extra_util.retain(|&x| x != t);
        if u.lost > 0 {
            pc.extra_pen.push(t);
        } else {
            pc.extra_util.push(t);
        }
    }

    /// CPU time a unit has had in its current period (tests read it).
    pub fn cputime(&self, t: u32) -> u64 {
        self.units[t as usize].cputime
    }
}

impl Policy for Sedf {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        let th = &cx.threads[t as usize];
        if !th.may_run_on(self.units[t as usize].home) {
            // Its affinity changed while it slept.
            self.units[t as usize].home = pick_cpu(th, cx.ncpus);
        }
        let u = &mut self.units[t as usize];
        u.runnable = true;
        let home = u.home;
        let first = !std::mem::replace(&mut u.started, true);
        if u.slice > 0 {
            if first {
                u.deadl_abs = now + u.period;
                u.cputime = 0;
                u.in_runq = true;
            } else if now < Self::period_start(u) {
                // Woke before its period began: just requeue.
            } else if now < u.deadl_abs {
                // Short block: the rest of this period is forfeited, the loss is owed in
                // extra time.
                u.lost = u.slice.saturating_sub(u.cputime);
                u.deadl_abs += u.period;
                u.cputime = 0;
                u.in_runq = false;
            } else {
                // Long block: a fresh period from now.
                u.deadl_abs = now + u.period;
                u.cputime = 0;
                u.in_runq = true;
            }
            self.pcpus[home as usize].members.push(t);
        }
        self.extra_push(t);
        let pc = &mut self.pcpus[home as usize];
        cx.touch(home);
        match pc.curr {
            None => cx.resched(home),
            Some((_, Mode::Extra)) if self.units[t as usize].in_runq => cx.resched(home),
            Some((_, Mode::Edf)) => {
                if Self::period_start(&self.units[t as usize]) < pc.run_until
                    && self.units[t as usize].slice > 0
                {
                    cx.resched(home);
                }
            }
            Some(_) => {}
        }
        home
    }

    fn reaffine(&mut self, cx: &mut Cx, t: u32, _now: u64) -> Option<u32> {
        let u = self.units[t as usize];
        let th = &cx.threads[t as usize];
        if !u.runnable || th.may_run_on(u.home) {
            return None;
        }
        let pc = &mut self.pcpus[u.home as usize];
        pc.members.retain(|&x| x != t);
        pc.extra_pen.retain(|&x| x != t);
        pc.extra_util.retain(|&x| x != t);
        cx.touch(u.home);
        let home = pick_cpu(th, cx.ncpus);
        self.units[t as usize].home = home;
        if u.slice > 0 {
            self.pcpus[home as usize].members.push(t);
        }
        self.extra_push(t);
        if self.pcpus[home as usize].curr.is_none() {
            cx.resched(home);
        } else {
            cx.touch(home);
        }
        Some(home)
    }

    fn put_prev(&mut self, _cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool) {
        let c = cpu as usize;
        let Some((_, mode)) = self.pcpus[c].curr.take() else {
            return;
        };
        let ran = now.saturating_sub(self.pcpus[c].started);
        let u = &mut self.units[t as usize];
        match mode {
            Mode::Edf => {
                // desched_edf_dom: a used-up slice waits for the next period.
                u.cputime += ran;
                if u.cputime >= u.slice {
                    u.cputime -= u.slice;
                    u.deadl_abs += u.period;
                    u.in_runq = false;
                }
            }
            // One penalty quantum clears the debt (the lost-time decrement is compiled out).
            Mode::Extra => u.lost = 0,
        }
        if runnable {
            self.extra_push(t);
        } else {
            let u = &mut self.units[t as usize];
            u.runnable = false;
            let pc = &mut self.pcpus[c];
            pc.members.retain(|&x| x != t);
            pc.extra_pen.retain(|&x| x != t);
            pc.extra_util.retain(|&x| x != t);
        }
    }

    fn pick(&mut self, _cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        let c = cpu as usize;
        self.update_queues(cpu, now);
        let release = self.next_release(cpu, now);
        self.pcpus[c].idle_wake = u64::MAX;
        if let Some(t) = self.edf_head(cpu) {
            let u = &self.units[t as usize];
            let left = u.slice.saturating_sub(u.cputime).max(1);
            let until = (now + left).min(release);
            let pc = &mut self.pcpus[c];
            pc.curr = Some((t, Mode::Edf));
            pc.run_until = until;
            pc.started = now;
            return Some(t);
        }
        let room = release.saturating_sub(now);
        let pc = &self.pcpus[c];
        let candidate = pc.extra_pen.first().or(pc.extra_util.first()).copied();
        match candidate {
            Some(t) if room >= self.p.extra_quantum => {
                let pc = &mut self.pcpus[c];
                pc.extra_pen.retain(|&x| x != t);
                pc.extra_util.retain(|&x| x != t);
                pc.curr = Some((t, Mode::Extra));
                pc.run_until = (now + self.p.extra_quantum).min(release);
                pc.started = now;
                Some(t)
            }
            _ => {
                // Idle until the next period begins (or for good).
                self.pcpus[c].idle_wake = release;
                None
            }
        }
    }

    fn timer(&self, _cx: &Cx, cpu: u32, now: u64) -> u64 {
        let pc = &self.pcpus[cpu as usize];
        match pc.curr {
            None => u64::MAX,
            Some(_) => pc.run_until.min(self.next_release(cpu, now)),
        }
    }

    fn tick(&mut self, _cx: &mut Cx, _cpu: u32, _now: u64) -> bool {
        true
    }

    fn global_timer(&self) -> u64 {
        self.pcpus
            .iter()
            .filter(|p| p.curr.is_none())
            .map(|p| p.idle_wake)
            .min()
            .unwrap_or(u64::MAX)
    }

    fn global(&mut self, cx: &mut Cx, now: u64) {
        for c in 0..self.pcpus.len() {
            if self.pcpus[c].curr.is_none() && self.pcpus[c].idle_wake <= now {
                self.pcpus[c].idle_wake = u64::MAX;
                cx.resched(c as u32);
            }
        }
    }

    fn deadline(&self, t: u32) -> Option<u64> {
        Some(self.units[t as usize].deadl_abs)
    }

    fn slice(&self, t: u32) -> Option<u64> {
        Some(self.units[t as usize].slice)
    }
}
