//! Xen's credit scheduler (credit1, `xen/common/sched/credit.c`): credits handed out every
//! 30 ms accounting period in proportion to domain weight (capped domains are parked past
//! their cap), burnt at 10 credits per ms of CPU, per-pCPU run queues ordered BOOST, UNDER,
//! OVER, BOOST for a unit that wakes while UNDER, a 10 ms tick, 30 ms slices, a 1 ms
//! context-switch rate limit, tickling of idle pCPUs and stealing of higher-priority work.
//! A domain is a VM; each untracked pCPU's background is a domain of its own. Nice maps to
//! Xen weight by the kernel's weight ratio (nice 0 = 256).
//!
//! Like credit.c, this is not weight-proportional for every mix of always-runnable units on
//! one pCPU: `csched_acct` takes a unit whose credit passes one tslice's worth (300) off the
//! active list and halves its credit, and round robin in whole 30 ms slices lets a unit of
//! share f earn 300f per period while it runs about once per n-1 periods. Past f = 1/(n-1)
//! the heaviest unit loses credit (nices [0, 3, 6, 9, -3]: the nice -3 unit gets 37%, not
//! 50.4%; without that rule 49.7%). Figures and the test of the proportional range in
//! `simulate/tests/properties.rs` (`credit_weights`).

use crate::engine::{Cx, Policy};
use crate::params::{ParamError, Params};
use crate::policy::tick_at_or_after;

const BOOST: i8 = 0;
const UNDER: i8 = -1;
const OVER: i8 = -2;
const IDLE: i8 = -64;

/// Ceiling division of non-negative credits (as `(a + b - 1) / b` in credit.c).
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

#[derive(Clone, Debug)]
pub struct CreditParams {
    pub tslice: u64,
    pub ticks_per_tslice: u64,
    pub credits_per_msec: i64,
    pub ratelimit: u64,
    pub load_balance_ratelimit: u64,
    pub boost: bool,
    pub default_weight: u64,
    /// Per VM: weight and cap (% of one pCPU; 0 = none).
    pub weights: Vec<(String, u64)>,
    pub caps: Vec<(String, u64)>,
}

impl CreditParams {
    pub fn new(p: &Params) -> Result<CreditParams, ParamError> {
        let c = "credit";
        let cp = CreditParams {
            tslice: p.ns(c, "tslice", 30_000_000)?,
            ticks_per_tslice: p.u64(c, "ticks_per_tslice", 3)?,
            credits_per_msec: p.u64(c, "credits_per_msec", 10)? as i64,
            ratelimit: p.ns(c, "ratelimit", 1_000_000)?,
            load_balance_ratelimit: p.ns(c, "load_balance_ratelimit", 1_000_000)?,
            boost: p.bool(c, "boost", true)?,
            default_weight: p.u64(c, "weight", 256)?,
            weights: p.per_vm(c, "weight", |p, _, k| p.u64_of(k))?,
            caps: p.per_vm(c, "cap", |p, _, k| p.u64_of(k))?,
        };
        if !(1_000_000..=1_000_000_000).contains(&cp.tslice) {
            return Err(ParamError::Invalid(
                "--param tslice must be 1ms..=1s (XEN_SYSCTL_CSCHED_TSLICE_MIN/MAX)".into(),
            ));
        }
        if cp.ticks_per_tslice == 0 || cp.credits_per_msec <= 0 || cp.default_weight == 0 {
            return Err(ParamError::Invalid(
                "--param ticks_per_tslice, credits_per_msec and weight must be above 0".into(),
            ));
        }
        if cp.ratelimit > cp.tslice {
            return Err(ParamError::Invalid(
                "--param ratelimit must not exceed tslice".into(),
            ));
        }
        Ok(cp)
    }
}

#[derive(Clone, Copy, Default)]
struct Unit {
    pri: i8,
    credit: i64,
    residual: i64,
    start: u64,
    active: bool,
    parked: bool,
    /// Runnable but held off the queue while parked.
    parked_runnable: bool,
    queued: bool,
}

struct Domain {
    weight: i64,
    cap: i64,
}

#[derive(Default)]
struct Pcpu {
    runq: Vec<u32>,
    curr: Option<u32>,
    slice_end: u64,
    picked_at: u64,
    keep: Option<u32>,
    last_balance: u64,
}

pub struct Credit {
    p: CreditParams,
    tick: u64,
    units: Vec<Unit>,
    group: Vec<u32>,
    domains: Vec<Domain>,
    pcpus: Vec<Pcpu>,
    next_acct: u64,
    /// `credit_balance`: the active units' credits summed at the last accounting, after
    /// the bounds. When negative the next period hands out that much more (the units
    /// overspent, say all OVER and round-robined), so debts are not forgiven by the floor.
    balance: i64,
    /// Accounting periods run (tests read it).
    pub periods: u64,
}

impl Credit {
    /// `vm_of(group)` names the VM of each group index ("" for background).
    pub fn new(
        p: CreditParams,
        cx_threads: &[crate::engine::SimThread],
        vm_names: &[String],
        ncpus: u32,
    ) -> Credit {
        let ngroups = cx_threads.iter().map(|t| t.group + 1).max().unwrap_or(0) as usize;
        let mut domains: Vec<Domain> = (0..ngroups)
            .map(|_| Domain {
                weight: p.default_weight as i64,
                cap: 0,
            })
            .collect();
        for t in cx_threads {
            let d = &mut domains[t.group as usize];
            // Nice maps to Xen weight by the kernel's weight ratio.
            d.weight = (p.default_weight as i64 * i64::from(t.weight) / 1024).max(1);
        }
        for (g, name) in vm_names.iter().enumerate().take(ngroups) {
            if let Some((_, w)) = p.weights.iter().find(|(vm, _)| vm == name) {
                domains[g].weight = (*w as i64).max(1);
            }
            if let Some((_, c)) = p.caps.iter().find(|(vm, _)| vm == name) {
                domains[g].cap = *c as i64;
            }
        }
        let tick = p.tslice / p.ticks_per_tslice;
        Credit {
            next_acct: p.tslice,
            balance: 0,
            tick,
            units: vec![
                Unit {
                    pri: UNDER,
                    ..Unit::default()
                };
                cx_threads.len()
            ],
            group: cx_threads.iter().map(|t| t.group).collect(),
            domains,
            pcpus: (0..ncpus).map(|_| Pcpu::default()).collect(),
            p,
            periods: 0,
        }
    }

    fn credits_per_tslice(&self) -> i64 {
        self.p.credits_per_msec * (self.p.tslice / 1_000_000) as i64
    }

    fn burn(&mut self, t: u32, now: u64) {
        let u = &mut self.units[t as usize];
        let d = now.saturating_sub(u.start) as i64;
        let val = d * self.p.credits_per_msec + u.residual;
        u.residual = val % 1_000_000;
        u.credit -= val / 1_000_000;
        u.start = now;
    }

    fn runq_insert(&mut self, cpu: u32, t: u32) {
        let pri = self.units[t as usize].pri;
        let q = &mut self.pcpus[cpu as usize].runq;
        let at = q
            .iter()
            .position(|&u| self.units[u as usize].pri < pri)
            .unwrap_or(q.len());
        q.insert(at, t);
        self.units[t as usize].queued = true;
    }

    fn runq_remove(&mut self, cpu: u32, t: u32) {
        let q = &mut self.pcpus[cpu as usize].runq;
        if let Some(i) = q.iter().position(|&u| u == t) {
            q.remove(i);
        }
        self.units[t as usize].queued = false;
    }

    fn home(cx: &Cx, t: u32) -> u32 {
        let c = cx.cpu_of[t as usize];
        let th = &cx.threads[t as usize];
        if th.may_run_on(c) {
            c
        } else {
            (0..cx.ncpus).find(|&c| th.may_run_on(c)).unwrap_or(c)
        }
    }

    /// `__runq_tickle`: who should look at the newly queued `t` on `cpu`.
    fn tickle(&mut self, cx: &mut Cx, cpu: u32, t: u32) {
        let new_pri = self.units[t as usize].pri;
        let cur_pri = self.pcpus[cpu as usize]
            .curr
            .map_or(IDLE, |c| self.units[c as usize].pri);
        if self.pcpus[cpu as usize].curr.is_none() {
            cx.resched(cpu);
            return;
        }
        let th = &cx.threads[t as usize];
        let n = cx.ncpus;
        let idler = (1..n)
            .map(|k| (cpu + k) % n)
            .find(|&c| th.may_run_on(c) && self.pcpus[c as usize].curr.is_none());
        match idler {
            Some(c) => cx.resched(c),
            None if new_pri > cur_pri => cx.resched(cpu),
            None => {}
        }
    }

    /// `csched_runq_steal` over the peers: the first queued unit of higher priority than
    /// `than` that may run on `cpu`.
    fn steal(&mut self, cx: &Cx, cpu: u32, than: i8) -> Option<u32> {
        let n = cx.ncpus;
        for k in 1..n {
            let peer = (cpu + k) % n;
            let pc = &self.pcpus[peer as usize];
            if pc.curr.is_none() && pc.runq.is_empty() {
                continue;
            }
            if pc.runq.len() + usize::from(pc.curr.is_some()) <= 1 {
                continue;
            }
            let found = pc.runq.iter().copied().find(|&u| {
                self.units[u as usize].pri > than && cx.threads[u as usize].may_run_on(cpu)
            });
            if let Some(u) = found {
                self.runq_remove(peer, u);
                return Some(u);
            }
        }
        None
    }

    /// `csched_acct`: hand out a period's credits by weight, cap and park, mark UNDER/OVER.
    fn acct(&mut self, cx: &mut Cx, now: u64) {
        // Running units are charged up to now first.
        for c in 0..self.pcpus.len() {
            if let Some(t) = self.pcpus[c].curr {
                self.burn(t, now);
            }
        }
        let per_tslice = self.credits_per_tslice();
        let mut credit_total = per_tslice * i64::from(cx.ncpus);
        // Converge the balance towards 0 when it went negative.
        if self.balance < 0 {
            credit_total -= self.balance;
        }
        let ng = self.domains.len();
        let mut active = vec![0i64; ng];
        for (i, u) in self.units.iter().enumerate() {
            if u.active {
                active[self.group[i] as usize] += 1;
            }
        }
        let weight_total: i64 = (0..ng).map(|g| self.domains[g].weight * active[g]).sum();
        if weight_total == 0 {
            self.balance = 0;
            return;
        }
        let mut weight_left = weight_total;
        let mut unit_fair = vec![0i64; ng];
        let mut unit_cap = vec![0i64; ng];
        for g in 0..ng {
            let n = active[g];
            if n == 0 {
                continue;
            }
            let d = &self.domains[g];
            weight_left -= d.weight * n;
            let mut peak = n * per_tslice;
            if self.balance < 0 {
                peak += ceil_div(-self.balance * d.weight * n, weight_total);
            }
            if d.cap > 0 {
                let cap = ceil_div(d.cap * per_tslice, 100);
                peak = peak.min(cap);
                unit_cap[g] = ceil_div(cap, n);
            }
            let mut fair = ceil_div(credit_total * d.weight * n, weight_total);
            if fair >= peak {
                if weight_left != 0 {
                    credit_total +=
                        ((fair - peak) * weight_total + (weight_left - 1)) / weight_left;
                }
                fair = peak;
            }
            unit_fair[g] = ceil_div(fair, n);
        }
        let mut balance = 0;
        for i in 0..self.units.len() {
            if !self.units[i].active {
                continue;
            }
            let g = self.group[i] as usize;
            let t = i as u32;
            let u = &mut self.units[i];
            u.credit += unit_fair[g];
            if u.credit < 0 {
                u.pri = OVER;
                if unit_cap[g] > 0 && u.credit < -unit_cap[g] && !u.parked {
                    u.parked = true;
                    self.park(cx, t);
                }
                let u = &mut self.units[i];
                u.credit = u.credit.max(-per_tslice);
            } else {
                u.pri = UNDER;
                if u.parked {
                    u.parked = false;
                    self.unpark(cx, t);
                }
                let u = &mut self.units[i];
                if u.credit > per_tslice {
                    u.active = false;
                    u.credit /= 2;
                }
            }
            balance += self.units[i].credit;
        }
        self.balance = balance;
        // csched_runq_sort: UNDER/BOOST ahead of OVER, order kept.
        for c in 0..self.pcpus.len() {
            let q = std::mem::take(&mut self.pcpus[c].runq);
            let (mut hi, lo): (Vec<u32>, Vec<u32>) = q
                .into_iter()
                .partition(|&u| self.units[u as usize].pri > OVER);
            hi.extend(lo);
            self.pcpus[c].runq = hi;
            cx.touch(c as u32);
        }
        self.periods += 1;
    }

    fn park(&mut self, cx: &mut Cx, t: u32) {
        for c in 0..self.pcpus.len() {
            if self.pcpus[c].curr == Some(t) {
                cx.resched(c as u32);
                return;
            }
        }
        if self.units[t as usize].queued {
            let c = Self::home(cx, t);
            let cpu = (0..self.pcpus.len())
                .find(|&c| self.pcpus[c].runq.contains(&t))
                .map_or(c, |c| c as u32);
            self.runq_remove(cpu, t);
            self.units[t as usize].parked_runnable = true;
        }
    }

    fn unpark(&mut self, cx: &mut Cx, t: u32) {
        if std::mem::take(&mut self.units[t as usize].parked_runnable) {
            let cpu = Self::home(cx, t);
            self.runq_insert(cpu, t);
            self.tickle(cx, cpu, t);
        }
    }

    /// Domain weight and cap of a thread (tests read them).
    pub fn is_parked(&self, t: u32) -> bool {
        self.units[t as usize].parked
    }
}

impl Policy for Credit {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        let cpu = Self::home(cx, t);
        let u = &mut self.units[t as usize];
        u.start = now;
        if u.parked {
            u.parked_runnable = true;
            return cpu;
        }
        if self.p.boost && u.pri == UNDER {
            u.pri = BOOST;
        }
        self.runq_insert(cpu, t);
        self.tickle(cx, cpu, t);
        cpu
    }

    fn reaffine(&mut self, cx: &mut Cx, t: u32, _now: u64) -> Option<u32> {
        // A parked unit is off every queue; `unpark` places it by its affinity then. One
        // the rate limit keeps on its pCPU is off the queue too, and must not stay there.
        let kept = (0..cx.ncpus).find(|&c| self.pcpus[c as usize].keep == Some(t));
        let src =
            kept.or_else(|| (0..cx.ncpus).find(|&c| self.pcpus[c as usize].runq.contains(&t)))?;
        if cx.threads[t as usize].may_run_on(src) {
            return None;
        }
        if kept.is_some() {
            self.pcpus[src as usize].keep = None;
        } else {
            self.runq_remove(src, t);
        }
        let dst = Self::home(cx, t);
        self.runq_insert(dst, t);
        cx.touch(src);
        self.tickle(cx, dst, t);
        cx.touch(dst);
        Some(dst)
    }

    fn put_prev(&mut self, _cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool) {
        self.burn(t, now);
        let pc = &mut self.pcpus[cpu as usize];
        pc.curr = None;
        let ran = now.saturating_sub(pc.picked_at);
        if !runnable {
            return;
        }
        if self.units[t as usize].parked {
            self.units[t as usize].parked_runnable = true;
            return;
        }
        if ran < self.p.ratelimit && self.p.ratelimit > 0 {
            self.pcpus[cpu as usize].keep = Some(t);
            return;
        }
        self.runq_insert(cpu, t);
    }

    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        let c = cpu as usize;
        if let Some(t) = self.pcpus[c].keep.take() {
            // Rate limit: the unit keeps the CPU for the rest of it (at least 100 us).
            let left = self
                .p
                .ratelimit
                .saturating_sub(now - self.pcpus[c].picked_at)
                .max(100_000);
            self.pcpus[c].curr = Some(t);
            self.pcpus[c].slice_end = now + left;
            self.units[t as usize].start = now;
            return Some(t);
        }
        let head = self.pcpus[c].runq.first().copied();
        let head_pri = head.map_or(IDLE, |h| self.units[h as usize].pri);
        let mut next = None;
        if head_pri <= OVER
            && (head.is_none()
                || now.saturating_sub(self.pcpus[c].last_balance) > self.p.load_balance_ratelimit)
        {
            self.pcpus[c].last_balance = now;
            next = self.steal(cx, cpu, head_pri);
        }
        let next = match next {
            Some(t) => t,
            None => {
                let h = head?;
                self.runq_remove(cpu, h);
                h
            }
        };
        let pc = &mut self.pcpus[c];
        pc.curr = Some(next);
        pc.picked_at = now;
        pc.slice_end = now + self.p.tslice;
        self.units[next as usize].start = now;
        Some(next)
    }

    fn timer(&self, _cx: &Cx, cpu: u32, now: u64) -> u64 {
        let pc = &self.pcpus[cpu as usize];
        if pc.curr.is_none() {
            return u64::MAX;
        }
        pc.slice_end.min(tick_at_or_after(now + 1, self.tick))
    }

    fn tick(&mut self, _cx: &mut Cx, cpu: u32, now: u64) -> bool {
        let c = cpu as usize;
        let Some(t) = self.pcpus[c].curr else {
            return false;
        };
        if now % self.tick == 0 {
            // csched_tick -> csched_unit_acct.
            let u = &mut self.units[t as usize];
            if u.pri == BOOST {
                u.pri = UNDER;
            }
            self.burn(t, now);
            self.units[t as usize].active = true;
        }
        now >= self.pcpus[c].slice_end
    }

    fn global_timer(&self) -> u64 {
        self.next_acct
    }

    fn global(&mut self, cx: &mut Cx, now: u64) {
        self.next_acct = now + self.p.tslice;
        self.acct(cx, now);
    }
}
