//! Linux's periodic balancing by load (`load_balance` with `migrate_load`), which the fair
//! policies run beside the pull by runnable count that an idle pCPU makes.
//!
//! Why by load: the kernel's balancer compares each pCPU's PELT load (weight x the decayed
//! fraction of time each thread was runnable, sleeping threads' load still counted where
//! they last ran), not how many threads it holds. On the kernel matrix's demo recordings
//! (2 pCPUs: 3 spinning vCPUs, 2 sleepy ones at ~15%, a nice-10 one, and the recorder's own
//! ~40% of a pCPU) the kernel kept both spinning vCPUs of one pCPU beside a sleepy one, and
//! the third beside the other sleepy one and the recorder; by count alone (move only past a
//! difference of two) the model settled on other pairings, and the sleepy vCPUs' waits
//! (which are the other threads on their pCPU) came out 4-16x off.
//!
//! Which pCPU pulls what: `busiest_pair` is the host-wide rule (the busiest pCPU to the
//! least loaded past [`IMBALANCE_PCT`]); `find_imbalance` is the kernel's per-pCPU one
//! (`find_busiest_group` and `calculate_imbalance` as 6.1 runs them over one domain of
//! one-pCPU groups, by group type: a fully busy pCPU pulls any load difference, an
//! overloaded one only past the imbalance_pct, one with spare room by count),
//! `--param balance_per_pcpu=true`.

/// PELT's half-life: `LOAD_AVG_PERIOD` (32) periods of 1024 us.
const HALF_LIFE_NS: f64 = 32.0 * 1024.0 * 1000.0;
/// `imbalance_pct` of the MC sched domain: busiest must carry 17% more than the local pCPU.
pub const IMBALANCE_PCT: f64 = 117.0;
/// `cache_nice_tries` of the MC domain: failed balances after which a cache-hot thread may
/// move.
pub const CACHE_NICE_TRIES: u32 = 1;

/// Each thread's runnable average (0..=1, PELT's `load_avg` / weight): decays with a 32 ms
/// half-life, grows while the thread is queued or running.
#[derive(Clone, Default)]
pub struct LoadTrack {
    avg: Vec<f64>,
    at: Vec<u64>,
    on_rq: Vec<bool>,
    /// The running average (PELT's `util_avg` / capacity): grows only while running.
    util: Vec<f64>,
    util_at: Vec<u64>,
    running: Vec<bool>,
}

impl LoadTrack {
    /// Every thread's average starts at 1 (`full`: a new task's in the kernel, which the
    /// replay's threads are) or at 0.
    pub fn new(nthreads: usize, full: bool) -> LoadTrack {
        LoadTrack {
            avg: vec![if full { 1.0 } else { 0.0 }; nthreads],
            at: vec![0; nthreads],
            on_rq: vec![false; nthreads],
            util: vec![0.0; nthreads],
            util_at: vec![0; nthreads],
            running: vec![false; nthreads],
        }
    }

    fn decayed(&self, t: u32, now: u64) -> f64 {
        let i = t as usize;
        pelt(self.avg[i], self.at[i], self.on_rq[i], now)
    }

    fn util_decayed(&self, t: u32, now: u64) -> f64 {
        let i = t as usize;
        pelt(self.util[i], self.util_at[i], self.running[i], now)
    }

    /// `t` starts (`true`) or stops running at `now`.
    pub fn set_running(&mut self, t: u32, now: u64, running: bool) {
        let i = t as usize;
        self.util[i] = self.util_decayed(t, now);
        self.util_at[i] = now;
        self.running[i] = running;
    }

    /// Runnable average of `t` at `now` (0..=1, PELT's `runnable_avg` / 1024).
    pub fn runnable_avg(&self, t: u32, now: u64) -> f64 {
        self.decayed(t, now)
    }

    /// Running average of `t` at `now` (0..=1, PELT's `util_avg` / 1024).
    pub fn util_avg(&self, t: u32, now: u64) -> f64 {
        self.util_decayed(t, now)
    }

    /// `t` becomes runnable (`true`) or goes to sleep (`false`) at `now`.
    pub fn set_runnable(&mut self, t: u32, now: u64, runnable: bool) {
        let i = t as usize;
        self.avg[i] = self.decayed(t, now);
        self.at[i] = now;
        self.on_rq[i] = runnable;
    }

    pub fn runnable(&self, t: u32) -> bool {
        self.on_rq[t as usize]
    }

    /// PELT load of `t` at `now` with weight `w`.
    pub fn load(&self, t: u32, now: u64, w: u32) -> f64 {
        self.decayed(t, now) * f64::from(w)
    }
}

/// A PELT average `avg` taken at `at`, at `now`: decayed with a 32 ms half-life, grown
/// toward 1 while `active`.
fn pelt(avg: f64, at: u64, active: bool, now: u64) -> f64 {
    let dt = now.saturating_sub(at);
    if dt == 0 {
        return avg;
    }
    let keep = (-(dt as f64) / HALF_LIFE_NS).exp2();
    avg * keep + if active { 1.0 - keep } else { 0.0 }
}

/// One pCPU's figures as `update_sg_lb_stats` sums them (each pCPU its own group, of
/// capacity 1024): runnable threads, PELT load, runnable and util sums (in units of one
/// pCPU: 1.0 is 1024).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuStats {
    pub nr: u32,
    pub load: f64,
    pub runnable: f64,
    pub util: f64,
}

/// `group_type`, in the kernel's order (a later one is busier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupType {
    HasSpare,
    FullyBusy,
    Overloaded,
}

impl CpuStats {
    /// `group_classify` for a one-pCPU group: overloaded when more than one thread is
    /// runnable and util or runnable passes the capacity by [`IMBALANCE_PCT`]; spare while
    /// none is, or util and runnable stay under it.
    pub fn group_type(&self) -> GroupType {
        let pct = IMBALANCE_PCT / 100.0;
        if self.nr > 1 && (self.util * pct > 1.0 || self.runnable > pct) {
            return GroupType::Overloaded;
        }
        if self.nr < 1 || (self.runnable <= pct && self.util * pct < 1.0) {
            return GroupType::HasSpare;
        }
        GroupType::FullyBusy
    }
}

/// What `calculate_imbalance` asks `detach_tasks` to move onto the balancing pCPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Imbalance {
    /// `migrate_load`: this much PELT load.
    Load(f64),
    /// `migrate_task`: this many threads.
    Tasks(u32),
}

/// `find_busiest_group` and `calculate_imbalance` as pCPU `this` runs them over one domain
/// of one-pCPU groups: the busiest other pCPU and what to pull from it, or None (balanced).
/// `this_idle`: it runs nothing (`CPU_IDLE`); `count_busy`: a busy pCPU with spare capacity
/// may pull by count too (6.6+'s `sibling_imbalance` returns 0 for `CPU_NOT_IDLE`).
pub fn find_imbalance(
    stats: &[CpuStats],
    this: u32,
    this_idle: bool,
    count_busy: bool,
) -> Option<(u32, Imbalance)> {
    let key = |c: usize| {
        let s = &stats[c];
        let t = s.group_type();
        // update_sd_pick_busiest: the busier type, then the heavier load (overloaded, fully
        // busy) or the more threads (spare).
        let by = if t == GroupType::HasSpare {
            f64::from(s.nr)
        } else {
            s.load
        };
        (t, by)
    };
    let busiest = (0..stats.len())
        .filter(|&c| c != this as usize && stats[c].nr > 0)
        .max_by(|&a, &b| {
            let (ta, la) = key(a);
            let (tb, lb) = key(b);
            ta.cmp(&tb).then(la.total_cmp(&lb)).then(b.cmp(&a))
        })?;
    let (l, b) = (&stats[this as usize], &stats[busiest]);
    let (lt, bt) = (l.group_type(), b.group_type());
    let avg = stats.iter().map(|s| s.load).sum::<f64>() / stats.len() as f64;
    if lt > bt {
        return None;
    }
    if lt == GroupType::Overloaded
        && (l.load >= b.load || l.load >= avg || b.load * 100.0 <= IMBALANCE_PCT * l.load)
    {
        return None;
    }
    if bt != GroupType::Overloaded && (!this_idle || b.nr <= 1) {
        return None;
    }
    if lt == GroupType::HasSpare {
        let n = b.nr.saturating_sub(l.nr) >> 1;
        let may = this_idle || count_busy;
        return (may && n > 0).then_some((busiest as u32, Imbalance::Tasks(n)));
    }
    if l.load >= b.load || l.load >= avg {
        return None;
    }
    let imbalance = (b.load - avg).min(avg - l.load);
    (imbalance > 0.0).then_some((busiest as u32, Imbalance::Load(imbalance)))
}

/// `find_busiest_group`'s verdict between the most and the least loaded pCPU (`loads`
/// indexed by pCPU): `(busiest, local, imbalance)` when busiest carries more than
/// [`IMBALANCE_PCT`] of local's load; the imbalance is half the difference (two pCPUs of
/// equal capacity meet at the mean).
pub fn busiest_pair(loads: &[f64]) -> Option<(u32, u32, f64)> {
    let busiest =
        (0..loads.len()).max_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(b.cmp(&a)))?;
    let local = (0..loads.len()).min_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(a.cmp(&b)))?;
    let (lb, ll) = (loads[busiest], loads[local]);
    (busiest != local && lb * 100.0 > ll * IMBALANCE_PCT).then_some((
        busiest as u32,
        local as u32,
        (lb - ll) / 2.0,
    ))
}

/// `detach_tasks`' test of one candidate of load `load` against what is left of the
/// imbalance: a thread heavier than the imbalance is skipped, less so after each failed
/// balance (`shr_bound(load, nr_balance_failed)`).
pub fn fits(load: f64, imbalance: f64, failed: u32) -> bool {
    load / f64::from(1u32 << failed.min(31)) <= imbalance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_runnable_for_one_half_life_reaches_half_load() {
        let mut l = LoadTrack::new(1, false);
        l.set_runnable(0, 0, true);
        let half = l.load(0, HALF_LIFE_NS as u64, 1024);
        assert!((half - 512.0).abs() < 1.0, "{half}");
        l.set_runnable(0, HALF_LIFE_NS as u64, false);
        let quarter = l.load(0, 2 * HALF_LIFE_NS as u64, 1024);
        assert!((quarter - 256.0).abs() < 1.0, "{quarter}");
    }

    #[test]
    fn a_new_thread_starts_at_full_load_and_decays_while_asleep() {
        let mut l = LoadTrack::new(1, true);
        assert_eq!(l.load(0, 0, 1024), 1024.0);
        l.set_runnable(0, 0, false);
        let half = l.load(0, HALF_LIFE_NS as u64, 1024);
        assert!((half - 512.0).abs() < 1.0, "{half}");
    }

    #[test]
    fn balanced_within_the_imbalance_pct() {
        assert_eq!(busiest_pair(&[1100.0, 1000.0]), None);
        assert_eq!(busiest_pair(&[2048.0, 1024.0]), Some((0, 1, 512.0)));
        assert_eq!(busiest_pair(&[0.0, 300.0]), Some((1, 0, 150.0)));
    }

    fn cpu(nr: u32, load: f64, util: f64) -> CpuStats {
        CpuStats {
            nr,
            load,
            runnable: load / 1024.0,
            util,
        }
    }

    #[test]
    fn group_types_follow_runnable_count_and_use() {
        assert_eq!(cpu(0, 0.0, 0.0).group_type(), GroupType::HasSpare);
        assert_eq!(cpu(1, 200.0, 0.2).group_type(), GroupType::HasSpare);
        assert_eq!(cpu(1, 1024.0, 1.0).group_type(), GroupType::FullyBusy);
        assert_eq!(cpu(2, 2048.0, 1.0).group_type(), GroupType::Overloaded);
        // Two light threads on a pCPU with room to spare.
        assert_eq!(cpu(2, 400.0, 0.4).group_type(), GroupType::HasSpare);
    }

    #[test]
    fn what_each_pcpu_pulls() {
        let (near, far) = (
            [cpu(2, 2200.0, 1.0), cpu(2, 2000.0, 1.0)],
            [cpu(3, 3072.0, 1.0), cpu(2, 2048.0, 1.0)],
        );
        let one_busy = [cpu(2, 1096.0, 1.0), cpu(1, 1024.0, 1.0)];
        let (idle, light) = (
            [cpu(3, 3072.0, 1.0), cpu(0, 0.0, 0.0)],
            [cpu(3, 3072.0, 1.0), cpu(1, 100.0, 0.1)],
        );
        // (pCPUs, the balancing one, it idles, count_busy, what it pulls)
        type Case<'a> = (&'a [CpuStats], u32, bool, bool, Option<(u32, Imbalance)>);
        let cases: [Case; 7] = [
            // Two overloaded pCPUs within the imbalance_pct: balanced.
            (&near, 1, false, false, None),
            // Past it: half the difference, and only onto the lighter one.
            (&far, 1, false, false, Some((0, Imbalance::Load(512.0)))),
            (&far, 0, false, false, None),
            // A fully busy pCPU pulls any difference (no imbalance_pct test).
            (&one_busy, 1, false, false, Some((0, Imbalance::Load(36.0)))),
            // A pCPU with room to spare pulls by count while it idles...
            (&idle, 1, true, false, Some((0, Imbalance::Tasks(1)))),
            // ... and while busy only with count_busy.
            (&light, 1, false, false, None),
            (&light, 1, false, true, Some((0, Imbalance::Tasks(1)))),
        ];
        for (i, (stats, this, this_idle, count_busy, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                find_imbalance(stats, this, this_idle, count_busy),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn heavy_threads_fit_after_failures() {
        assert!(!fits(1024.0, 557.0, 0));
        assert!(fits(1024.0, 557.0, 1));
        assert!(fits(150.0, 557.0, 0));
    }
}
