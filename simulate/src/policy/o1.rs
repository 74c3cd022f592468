//! Linux's O(1) scheduler as of 2.6.12 (`kernel/sched.c`): per-pCPU active and expired
//! priority arrays, a dynamic priority of `static_prio − (CURRENT_BONUS − 5)` from `sleep_avg`
//! (sleep credited at wakeup, run time debited at switch-out), time slices from
//! `task_timeslice`, expired threads waiting for the array swap unless interactive and the
//! queue is not starving, wakeup preemption by priority, new-idle and periodic pulls.
//! TIMESLICE_GRANULARITY round-robin of interactive threads is not modelled.

use std::collections::VecDeque;

use crate::engine::{Cx, Policy};
use crate::params::{check_balance_intervals, ParamError, Params};
use crate::policy::{cpus_after, imbalance, next_balance_at, tick_at_or_after, tick_ns, wake_cpu};

const MAX_RT_PRIO: i32 = 100;
const NPRIO: usize = 40;

#[derive(Clone, Debug)]
pub struct O1Params {
    pub tick: u64,
    pub def_timeslice: u64,
    pub min_timeslice: u64,
    pub max_bonus: i64,
    pub max_sleep_avg: u64,
    pub starvation_limit: u64,
    pub interactive_delta: i64,
    pub on_runqueue_weight: u64,
    pub cache_hot_time: u64,
    pub balance_interval: u64,
    /// `rebalance_tick` on an idle pCPU (every tick-ish, 1 ms).
    pub idle_balance_interval: u64,
}

impl O1Params {
    pub fn new(p: &Params) -> Result<O1Params, ParamError> {
        let o = "o1";
        // i386 HZ was 1000 through 2.6.12 (CONFIG_HZ arrived in 2.6.13).
        let tick = tick_ns(o, p, 1000)?;
        let def_timeslice = p.ns(o, "def_timeslice", 100_000_000)?;
        let max_bonus = p.u64(o, "max_bonus", 10)? as i64;
        let op = O1Params {
            tick,
            def_timeslice,
            min_timeslice: p.ns(o, "min_timeslice", 5_000_000u64.max(tick))?,
            max_bonus,
            max_sleep_avg: p.ns(o, "max_sleep_avg", def_timeslice * max_bonus as u64)?,
            starvation_limit: p.ns(o, "starvation_limit", def_timeslice * max_bonus as u64)?,
            interactive_delta: p.u64(o, "interactive_delta", 2)? as i64,
            on_runqueue_weight: p.u64(o, "on_runqueue_weight", 30)?,
            cache_hot_time: p.ns(o, "cache_hot_time", 2_500_000)?,
            balance_interval: p.ns(o, "balance_interval", 200_000_000)?,
            idle_balance_interval: p.ns(o, "idle_balance_interval", 1_000_000)?,
        };
        if op.max_bonus < 2 || op.max_sleep_avg == 0 || op.def_timeslice == 0 {
            return Err(ParamError::Invalid(
                "--param max_bonus must be >= 2, max_sleep_avg and def_timeslice above 0".into(),
            ));
        }
        check_balance_intervals(op.balance_interval, op.idle_balance_interval)?;
        Ok(op)
    }
}

#[derive(Clone, Copy, Default)]
struct Task {
    static_prio: i32,
    prio: i32,
    sleep_avg: u64,
    time_slice: u64,
    /// Switch-in, switch-out or wakeup time (what `p->timestamp` holds).
    timestamp: u64,
    last_ran: u64,
    activated: i32,
    /// Where a runnable thread goes back when it stops running: expired after its slice
    /// ran out (unless interactive), else the head of its active list.
    to_expired: bool,
    expired_slice: bool,
}

#[derive(Default)]
struct Array {
    lists: Vec<VecDeque<u32>>,
    bitmap: u64,
    /// Threads queued over all lists.
    len: usize,
}

/// The indices of the set bits of `bitmap`, lowest first: the non-empty lists, best first.
fn set_bits(mut bitmap: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if bitmap == 0 {
            return None;
        }
        let i = bitmap.trailing_zeros() as usize;
        bitmap &= bitmap - 1;
        Some(i)
    })
}

impl Array {
    fn new() -> Array {
        Array {
            lists: (0..NPRIO).map(|_| VecDeque::new()).collect(),
            bitmap: 0,
            len: 0,
        }
    }
    fn push(&mut self, prio: i32, t: u32, front: bool) {
        let i = (prio - MAX_RT_PRIO).clamp(0, NPRIO as i32 - 1) as usize;
        if front {
            self.lists[i].push_front(t);
        } else {
            self.lists[i].push_back(t);
        }
        self.bitmap |= 1 << i;
        self.len += 1;
    }
    /// Takes the first thread of the highest-priority non-empty list.
    fn pop_first(&mut self) -> Option<u32> {
        if self.bitmap == 0 {
            return None;
        }
        let i = self.bitmap.trailing_zeros() as usize;
        let t = self.lists[i].pop_front();
        if self.lists[i].is_empty() {
            self.bitmap &= !(1 << i);
        }
        self.len -= 1;
        t
    }
    fn remove(&mut self, t: u32) -> bool {
        for i in set_bits(self.bitmap) {
            let l = &mut self.lists[i];
            if let Some(k) = l.iter().position(|&u| u == t) {
                l.remove(k);
                if l.is_empty() {
                    self.bitmap &= !(1 << i);
                }
                self.len -= 1;
                return true;
            }
        }
        false
    }
    fn len(&self) -> usize {
        self.len
    }
    /// Queued threads, best priority first (only the non-empty lists are visited).
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        set_bits(self.bitmap).flat_map(|i| self.lists[i].iter().copied())
    }
}

struct Rq {
    active: Array,
    expired: Array,
    curr: Option<u32>,
    expired_timestamp: Option<u64>,
    best_expired_prio: i32,
}

pub struct O1 {
    p: O1Params,
    tasks: Vec<Task>,
    rqs: Vec<Rq>,
    next_balance: u64,
    initialised: bool,
}

impl O1 {
    pub fn new(p: O1Params, nthreads: usize, ncpus: u32) -> O1 {
        O1 {
            next_balance: p.balance_interval,
            tasks: vec![Task::default(); nthreads],
            rqs: (0..ncpus)
                .map(|_| Rq {
                    active: Array::new(),
                    expired: Array::new(),
                    curr: None,
                    expired_timestamp: None,
                    best_expired_prio: 140,
                })
                .collect(),
            p,
            initialised: false,
        }
    }

    fn init(&mut self, cx: &Cx) {
        if self.initialised {
            return;
        }
        self.initialised = true;
        for (t, th) in self.tasks.iter_mut().zip(cx.threads) {
            t.static_prio = 120 + th.nice.clamp(-20, 19);
            t.prio = t.static_prio;
            t.time_slice = 0;
        }
        for i in 0..self.tasks.len() {
            self.tasks[i].time_slice = self.task_timeslice(self.tasks[i].static_prio);
        }
    }

    /// Dynamic priority of a thread (100 best .. 139 worst); tests read it.
    pub fn prio(&self, t: u32) -> i32 {
        self.tasks[t as usize].prio
    }

    pub fn static_prio(&self, t: u32) -> i32 {
        self.tasks[t as usize].static_prio
    }

    fn current_bonus(&self, t: &Task) -> i64 {
        (t.sleep_avg as u128 * self.p.max_bonus as u128 / self.p.max_sleep_avg as u128) as i64
    }

    fn effective_prio(&self, t: &Task) -> i32 {
        let bonus = self.current_bonus(t) - self.p.max_bonus / 2;
        (t.static_prio - bonus as i32).clamp(MAX_RT_PRIO, 139)
    }

    fn task_timeslice(&self, static_prio: i32) -> u64 {
        let x = if static_prio < 120 {
            4 * self.p.def_timeslice
        } else {
            self.p.def_timeslice
        };
        (x * (140 - static_prio) as u64 / 20).max(self.p.min_timeslice)
    }

    fn delta(&self, t: &Task) -> i64 {
        // SCALE(TASK_NICE(p), 40, MAX_BONUS) + INTERACTIVE_DELTA, C division.
        i64::from(t.static_prio - 120) * self.p.max_bonus / 40 + self.p.interactive_delta
    }

    fn interactive(&self, t: &Task) -> bool {
        i64::from(t.prio) <= i64::from(t.static_prio) - self.delta(t)
    }

    fn interactive_sleep(&self, t: &Task) -> u64 {
        let mb = self.p.max_bonus;
        let v = self.p.max_sleep_avg as i128 * i128::from(mb / 2 + self.delta(t) + 1)
            / i128::from(mb)
            - i128::from(self.p.tick);
        v.max(0) as u64
    }

    fn recalc_task_prio(&mut self, t: usize, now: u64) {
        let mut task = self.tasks[t];
        let sleep = now.saturating_sub(task.timestamp).min(self.p.max_sleep_avg);
        if sleep > 0 {
            if task.activated != -1 && sleep > self.interactive_sleep(&task) {
                task.sleep_avg =
                    self.p.max_sleep_avg - self.p.def_timeslice.min(self.p.max_sleep_avg);
            } else {
                let mult = (self.p.max_bonus - self.current_bonus(&task)).max(1) as u64;
                task.sleep_avg = (task.sleep_avg + sleep * mult).min(self.p.max_sleep_avg);
            }
        }
        task.prio = self.effective_prio(&task);
        self.tasks[t] = task;
    }

    fn expired_starving(&self, cpu: usize, now: u64, curr: &Task) -> bool {
        let rq = &self.rqs[cpu];
        let nr = (rq.active.len() + rq.expired.len() + usize::from(rq.curr.is_some())) as u64;
        rq.expired_timestamp
            .is_some_and(|ts| now.saturating_sub(ts) >= self.p.starvation_limit * nr + self.p.tick)
            || curr.static_prio > rq.best_expired_prio
    }

    fn queued(&self, cpu: u32) -> usize {
        let rq = &self.rqs[cpu as usize];
        rq.active.len() + rq.expired.len()
    }

    fn enqueue(&mut self, cpu: u32, t: u32, front: bool) {
        let task = self.tasks[t as usize];
        let rq = &mut self.rqs[cpu as usize];
        if task.to_expired {
            rq.expired.push(task.prio, t, false);
            rq.best_expired_prio = rq.best_expired_prio.min(task.static_prio);
        } else {
            rq.active.push(task.prio, t, front);
        }
    }

    fn movable(&self, cx: &Cx, src: u32, dst: u32, now: u64) -> Option<u32> {
        let rq = &self.rqs[src as usize];
        // Expired threads first: they are the cache-coldest.
        rq.expired.iter().chain(rq.active.iter()).find(|&t| {
            cx.threads[t as usize].may_run_on(dst)
                && now.saturating_sub(self.tasks[t as usize].last_ran) >= self.p.cache_hot_time
        })
    }

    fn pull(&mut self, t: u32, src: u32, dst: u32) {
        let rq = &mut self.rqs[src as usize];
        if !rq.active.remove(t) {
            rq.expired.remove(t);
        }
        self.tasks[t as usize].to_expired = false;
        let prio = self.tasks[t as usize].prio;
        self.rqs[dst as usize].active.push(prio, t, false);
    }
}

impl Policy for O1 {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        self.init(cx);
        let cpu = wake_cpu(cx, t, |c| self.queued(c));
        self.recalc_task_prio(t as usize, now);
        let task = &mut self.tasks[t as usize];
        task.activated = 1;
        task.timestamp = now;
        task.to_expired = false;
        self.enqueue(cpu, t, false);
        cx.touch(cpu);
        match self.rqs[cpu as usize].curr {
            None => cx.resched(cpu),
            Some(c) if self.tasks[t as usize].prio < self.tasks[c as usize].prio => cx.resched(cpu),
            Some(_) => {}
        }
        cpu
    }

    fn reaffine(&mut self, cx: &mut Cx, t: u32, _now: u64) -> Option<u32> {
        let src = (0..cx.ncpus).find(|&c| {
            let rq = &self.rqs[c as usize];
            rq.active.iter().chain(rq.expired.iter()).any(|u| u == t)
        })?;
        if cx.threads[t as usize].may_run_on(src) {
            return None;
        }
        let dst = wake_cpu(cx, t, |c| self.queued(c));
        self.pull(t, src, dst);
        cx.queue_moved(src, dst);
        Some(dst)
    }

    fn put_prev(&mut self, _cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool) {
        let c = cpu as usize;
        self.rqs[c].curr = None;
        let mut task = self.tasks[t as usize];
        let run = now.saturating_sub(task.timestamp).min(self.p.max_sleep_avg);
        task.time_slice = task.time_slice.saturating_sub(run);
        let bonus = self.current_bonus(&task).max(1) as u64;
        task.sleep_avg = task.sleep_avg.saturating_sub(run / bonus);
        task.timestamp = now;
        task.last_ran = now;
        let expired = std::mem::take(&mut task.expired_slice);
        self.tasks[t as usize] = task;
        if runnable {
            // A preempted thread keeps its place at the head of its list.
            self.enqueue(cpu, t, !expired);
        }
    }

    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        self.init(cx);
        let c = cpu as usize;
        if self.queued(cpu) == 0 {
            let n = cx.ncpus;
            // Each candidate's movable thread found once.
            let pull = cpus_after(cpu, n)
                .filter(|&s| self.queued(s) != 0)
                .filter_map(|s| Some((s, self.movable(cx, s, cpu, now)?)))
                .max_by_key(|&(s, _)| (self.queued(s), std::cmp::Reverse(s)));
            if let Some((src, t)) = pull {
                self.pull(t, src, cpu);
                cx.touch(src);
            }
        }
        let rq = &mut self.rqs[c];
        if rq.active.bitmap == 0 {
            std::mem::swap(&mut rq.active, &mut rq.expired);
            rq.expired_timestamp = None;
            rq.best_expired_prio = 140;
            for t in rq.active.iter() {
                self.tasks[t as usize].to_expired = false;
            }
        }
        let rq = &mut self.rqs[c];
        let Some(t) = rq.active.pop_first() else {
            self.next_balance = self.next_balance.min(now + self.p.idle_balance_interval);
            return None;
        };
        rq.curr = Some(t);
        let task = self.tasks[t as usize];
        if task.activated > 0 {
            let mut delta = now.saturating_sub(task.timestamp);
            if task.activated == 1 {
                delta = delta * self.p.on_runqueue_weight / 100;
            }
            self.recalc_task_prio(t as usize, task.timestamp + delta);
        }
        let task = &mut self.tasks[t as usize];
        task.activated = 0;
        task.timestamp = now;
        Some(t)
    }

    fn timer(&self, _cx: &Cx, cpu: u32, now: u64) -> u64 {
        let Some(t) = self.rqs[cpu as usize].curr else {
            return u64::MAX;
        };
        let task = &self.tasks[t as usize];
        let used = now.saturating_sub(task.timestamp);
        tick_at_or_after(now + task.time_slice.saturating_sub(used), self.p.tick)
    }

    fn tick(&mut self, _cx: &mut Cx, cpu: u32, now: u64) -> bool {
        let c = cpu as usize;
        let Some(t) = self.rqs[c].curr else {
            return false;
        };
        let mut task = self.tasks[t as usize];
        let used = now.saturating_sub(task.timestamp);
        if used < task.time_slice {
            return false;
        }
        // The slice ran out: new priority and slice; expired unless interactive.
        task.prio = self.effective_prio(&task);
        let starving = self.expired_starving(c, now, &task);
        let interactive = self.interactive(&task);
        // put_prev charges what ran; the fresh slice starts at the switch-out.
        task.time_slice = self.task_timeslice(task.static_prio) + used;
        task.to_expired = !interactive || starving;
        task.expired_slice = true;
        self.tasks[t as usize] = task;
        let rq = &mut self.rqs[c];
        if rq.expired_timestamp.is_none() {
            rq.expired_timestamp = Some(now);
        }
        true
    }

    fn global_timer(&self) -> u64 {
        self.next_balance
    }

    fn global(&mut self, cx: &mut Cx, now: u64) {
        self.next_balance = next_balance_at(
            cx,
            now,
            self.p.idle_balance_interval,
            self.p.balance_interval,
        );
        let Some((src, dst)) = imbalance(cx, |c| self.queued(c), false) else {
            return;
        };
        if let Some(t) = self.movable(cx, src, dst, now) {
            self.pull(t, src, dst);
            cx.queue_moved(src, dst);
        }
    }

    fn slice(&self, t: u32) -> Option<u64> {
        Some(self.tasks[t as usize].time_slice)
    }
}
