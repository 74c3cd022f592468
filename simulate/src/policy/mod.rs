//! The six policies, each a plain deterministic state machine behind [`crate::engine::Policy`],
//! built from [`Params`] with its source's defaults (see `/work/shared/SCHEDULERS.md` for the
//! rules and citations), and the wake placement the Linux ones share.

use crate::engine::Cx;
use crate::params::{ParamError, Params};

pub mod credit;
pub mod fair;
pub mod goodness;
pub mod load_balance;
pub mod o1;
pub mod sedf;

/// `factor` of the Linux tunables: `1 + ilog2(min(ncpus, 8))` (SCHED_TUNABLESCALING_LOG).
pub fn linux_factor(ncpus: u32) -> u64 {
    1 + u64::from(ncpus.clamp(1, 8).ilog2())
}

/// Tick length of `hz`, refusing 0. The recording's HZ, where it has one, stands in for the
/// source's `default_hz`: the tick is the host's, whichever policy replays its demand.
pub fn tick_ns(policy: &str, p: &Params, default_hz: u64) -> Result<u64, ParamError> {
    let hz = p.u64(policy, "hz", p.recorded().hz.unwrap_or(default_hz))?;
    if hz == 0 || hz > 10_000 {
        return Err(ParamError::Invalid(format!(
            "--param hz={hz}: the tick rate must be 1..=10000"
        )));
    }
    Ok(1_000_000_000 / hz)
}

/// The first tick boundary at or after `t`.
pub fn tick_at_or_after(t: u64, tick: u64) -> u64 {
    t.div_ceil(tick).saturating_mul(tick)
}

/// Tick boundaries in (from, to].
pub fn ticks_between(from: u64, to: u64, tick: u64) -> u64 {
    (to / tick).saturating_sub(from / tick)
}

/// Linux wake placement (`select_task_rq` reduced to what a flat topology keeps): the
/// previous pCPU if it is idle, else the first idle allowed pCPU after it, else the previous
/// pCPU if allowed, else the allowed pCPU with the fewest runnable threads. `queued(cpu)`
/// counts the threads waiting in its queue.
pub fn wake_cpu(cx: &Cx, t: u32, queued: impl Fn(u32) -> usize) -> u32 {
    let th = &cx.threads[t as usize];
    let prev = cx.cpu_of[t as usize];
    let idle = |c: u32| th.may_run_on(c) && !cx.is_running(c) && queued(c) == 0;
    if idle(prev) {
        return prev;
    }
    let n = cx.ncpus;
    if let Some(c) = cpus_after(prev, n).find(|&c| idle(c)) {
        return c;
    }
    if th.may_run_on(prev) {
        return prev;
    }
    (0..n)
        .filter(|&c| th.may_run_on(c))
        .min_by_key(|&c| queued(c) + usize::from(cx.is_running(c)))
        .unwrap_or(prev)
}

/// When the next periodic balance is due, from `now`: after `idle_interval` while some pCPU
/// idles (it is to get work soon), else after `busy_interval`.
pub fn next_balance_at(cx: &Cx, now: u64, idle_interval: u64, busy_interval: u64) -> u64 {
    let any_idle = (0..cx.ncpus).any(|c| !cx.is_running(c));
    now + if any_idle {
        idle_interval
    } else {
        busy_interval
    }
}

/// The pCPUs after `cpu` (< `n`) in order, wrapping round: `cpu + 1 .. n`, then `0 .. cpu`
/// (what `(cpu + k) % n` for k in 1..n gives, without a division per step on a hot path).
pub fn cpus_after(cpu: u32, n: u32) -> impl Iterator<Item = u32> {
    (cpu + 1..n).chain(0..cpu.min(n))
}

/// Periodic balancing's choice: the busiest and the least busy pCPU by runnable count
/// (running + queued), when they differ by at least two; with `only_onto_idle`, only when
/// the least busy one idles (see `FairParams::balance_count_busy`).
pub fn imbalance(
    cx: &Cx,
    queued: impl Fn(u32) -> usize,
    only_onto_idle: bool,
) -> Option<(u32, u32)> {
    let nr = |c: u32| queued(c) + usize::from(cx.is_running(c));
    let busiest = (0..cx.ncpus).max_by_key(|&c| (nr(c), std::cmp::Reverse(c)))?;
    let idlest = (0..cx.ncpus).min_by_key(|&c| (nr(c), c))?;
    let onto = !only_onto_idle || nr(idlest) == 0;
    (onto && nr(busiest) >= nr(idlest) + 2).then_some((busiest, idlest))
}
