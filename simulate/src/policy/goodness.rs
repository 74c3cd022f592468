//! Linux 2.4's `schedule()` with `goodness()` ("O(N)"): one global run queue scanned in full
//! at every pick; a thread's goodness is its tick counter plus a bonus for the pCPU it last
//! ran on (PROC_CHANGE_PENALTY) and for sharing the previous thread's address space (a vCPU
//! of the same VM), plus 20 − nice; when every runnable counter is 0, all counters (sleepers
//! too) are refilled to `counter / 2 + NICE_TO_TICKS(nice)`. Wakeups prefer an idle pCPU,
//! else preempt where `goodness(new) − goodness(curr)` is largest and positive.

use crate::engine::{Cx, Policy, SimThread};
use crate::params::{ParamError, Params};
use crate::policy::{tick_ns, ticks_between};

#[derive(Clone, Debug)]
pub struct GoodnessParams {
    pub tick: u64,
    pub hz: u64,
    pub proc_change_penalty: i64,
}

impl GoodnessParams {
    pub fn new(p: &Params) -> Result<GoodnessParams, ParamError> {
        let tick = tick_ns("on", p, 100)?;
        Ok(GoodnessParams {
            tick,
            hz: 1_000_000_000 / tick,
            // include/asm-i386/smp.h
            proc_change_penalty: p.u64("on", "proc_change_penalty", 15)? as i64,
        })
    }
}

/// `NICE_TO_TICKS`: (20 − nice) scaled by HZ (`TICK_SCALE`), plus one.
pub fn nice_to_ticks(nice: i32, hz: u64) -> i64 {
    let x = i64::from(20 - nice.clamp(-20, 19));
    let scaled = if hz < 200 {
        x >> 2
    } else if hz < 400 {
        x >> 1
    } else if hz < 800 {
        x
    } else if hz < 1600 {
        x << 1
    } else {
        x << 2
    };
    scaled + 1
}

pub struct Goodness {
    p: GoodnessParams,
    /// Ticks left, at the last pick for a running thread.
    counter: Vec<i64>,
    picked_at: Vec<u64>,
    /// Runnable threads not running, most recently queued first.
    runq: Vec<u32>,
    curr: Vec<Option<u32>>,
    /// Recalculations done, and the largest counter a runnable thread held at any of them
    /// (the textbook rule says 0).
    pub recalculations: u64,
    pub max_runnable_counter_at_recalc: i64,
}

impl Goodness {
    pub fn new(p: GoodnessParams, threads: &[SimThread]) -> Goodness {
        let counter = threads
            .iter()
            .map(|t| nice_to_ticks(t.nice, p.hz))
            .collect();
        Goodness {
            counter,
            picked_at: vec![0; threads.len()],
            runq: Vec::new(),
            curr: Vec::new(),
            p,
            recalculations: 0,
            max_runnable_counter_at_recalc: 0,
        }
    }

    fn curr_mut(&mut self, ncpus: u32) -> &mut Vec<Option<u32>> {
        if self.curr.len() < ncpus as usize {
            self.curr.resize(ncpus as usize, None);
        }
        &mut self.curr
    }

    /// Counter of `t` at `now` (a running thread loses one per tick since its pick).
    fn counter_at(&self, t: u32, now: u64, running: bool) -> i64 {
        let c = self.counter[t as usize];
        if running {
            (c - ticks_between(self.picked_at[t as usize], now, self.p.tick) as i64).max(0)
        } else {
            c
        }
    }

    fn goodness(&self, cx: &Cx, t: u32, cpu: u32, prev_group: Option<u32>, counter: i64) -> i64 {
        if counter == 0 {
            return 0;
        }
        let th = &cx.threads[t as usize];
        let mut g = counter + 20 - i64::from(th.nice);
        if cx.cpu_of[t as usize] == cpu {
            g += self.p.proc_change_penalty;
        }
        if prev_group == Some(th.group) {
            g += 1;
        }
        g
    }

    pub fn counter(&self, t: u32) -> i64 {
        self.counter[t as usize]
    }
}

impl Goodness {
    /// `reschedule_idle`: a pCPU `t` may use looks at it: its last one if idle, else any
    /// idle one, else the one whose current thread it beats by the most goodness.
    fn reschedule_idle(&mut self, cx: &mut Cx, t: u32, now: u64) {
        let th = &cx.threads[t as usize];
        let last = cx.cpu_of[t as usize];
        let idle = |c: u32| th.may_run_on(c) && self.curr[c as usize].is_none();
        let n = cx.ncpus;
        if let Some(c) = (0..n).map(|k| (last + k) % n).find(|&c| idle(c)) {
            cx.resched(c);
            return;
        }
        let mut best: Option<(i64, u32)> = None;
        for c in (0..n).filter(|&c| th.may_run_on(c)) {
            let Some(cur) = self.curr[c as usize] else {
                continue;
            };
            let grp = Some(cx.threads[cur as usize].group);
            let mine = self.goodness(cx, t, c, grp, self.counter[t as usize]);
            let theirs = self.goodness(cx, cur, c, grp, self.counter_at(cur, now, true));
            let d = mine - theirs;
            if d > 0 && best.is_none_or(|(b, _)| d > b) {
                best = Some((d, c));
            }
        }
        if let Some((_, c)) = best {
            cx.resched(c);
        }
    }
}

impl Policy for Goodness {
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32 {
        self.curr_mut(cx.ncpus);
        self.runq.insert(0, t);
        self.reschedule_idle(cx, t, now);
        cx.cpu_of[t as usize]
    }

    fn reaffine(&mut self, cx: &mut Cx, t: u32, now: u64) -> Option<u32> {
        // One global queue: the thread stays in it; a pCPU it may now use looks at it.
        if self.runq.contains(&t) {
            self.reschedule_idle(cx, t, now);
        }
        None
    }

    fn put_prev(&mut self, cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool) {
        self.counter[t as usize] = self.counter_at(t, now, true);
        self.picked_at[t as usize] = now;
        self.curr_mut(cx.ncpus)[cpu as usize] = None;
        if runnable {
            self.runq.push(t);
        }
    }

    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32> {
        self.curr_mut(cx.ncpus);
        let prev_group = cx.curr[cpu as usize].map(|p| cx.threads[p as usize].group);
        loop {
            let mut best: Option<(i64, usize)> = None;
            for (i, &t) in self.runq.iter().enumerate() {
                if !cx.threads[t as usize].may_run_on(cpu) {
                    continue;
                }
                let g = self.goodness(cx, t, cpu, prev_group, self.counter[t as usize]);
                if best.is_none_or(|(b, _)| g > b) {
                    best = Some((g, i));
                }
            }
            let (g, i) = best?;
            if g == 0 {
                // Every runnable counter is spent: refill all, sleepers included.
                let max_runnable = self
                    .runq
                    .iter()
                    .filter(|&&t| cx.threads[t as usize].may_run_on(cpu))
                    .map(|&t| self.counter[t as usize])
                    .max()
                    .unwrap_or(0);
                self.max_runnable_counter_at_recalc =
                    self.max_runnable_counter_at_recalc.max(max_runnable);
                self.recalculations += 1;
                for (k, th) in cx.threads.iter().enumerate() {
                    let running = self.curr.contains(&Some(k as u32));
                    let c = self.counter_at(k as u32, now, running);
                    self.counter[k] = (c >> 1) + nice_to_ticks(th.nice, self.p.hz);
                    if running {
                        self.picked_at[k] = now;
                    }
                }
                continue;
            }
            let t = self.runq.remove(i);
            self.picked_at[t as usize] = now;
            self.curr[cpu as usize] = Some(t);
            return Some(t);
        }
    }

    fn timer(&self, _cx: &Cx, cpu: u32, now: u64) -> u64 {
        let Some(t) = self.curr.get(cpu as usize).copied().flatten() else {
            return u64::MAX;
        };
        let left = self.counter_at(t, now, true);
        if left == 0 {
            return now;
        }
        // The tick that takes the counter to 0.
        (now / self.p.tick + left as u64) * self.p.tick
    }

    fn tick(&mut self, _cx: &mut Cx, cpu: u32, now: u64) -> bool {
        let Some(t) = self.curr.get(cpu as usize).copied().flatten() else {
            return false;
        };
        self.counter_at(t, now, true) == 0
    }
}
