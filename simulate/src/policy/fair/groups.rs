//! Task groups in the fair policies, as autogroups and cgroups make them: with
//! `--param groups=auto` (the default) the groups the recording names (each task's autogroup
//! or cgroup, read by the recorder: the tracked threads' and each per-pCPU stand-in of other
//! tasks' load, with the group's weight); with `groups=true` the tracked threads of each
//! process (a VMM's session) in a group, the untracked background in another. Each group has an entity on each pCPU's root queue and a queue of its own
//! threads there; the root picks among the group entities first, then the group among its
//! threads (`pick_next_entity` per level), and a wakeup is judged at the level where the
//! wakee and the running thread meet (`find_matching_se`): a woken vCPU preempts another
//! group's thread only if its group's entity would be picked at the root, so its own lag
//! credit does not run it at once.
//!
//! A group entity's weight is the group's share (1024, `tg->shares`) split by load across
//! the pCPUs, as `calc_group_shares` does: 1024 x this pCPU's load / the group's load over
//! all pCPUs, where a pCPU's load is the PELT load of the group's threads last there (at
//! least the weight queued there now), clamped to 2..=1024. It is updated where the kernel
//! calls `update_cfs_group`: at enqueue, dequeue and tick on that pCPU; an entity on its
//! queue is reweighted keeping its lag and relative deadline (`reweight_entity`).
//!
//! A group that stands for the root task group (kernel threads) weighs what is queued in it
//! (its tasks are each an entity at the root in the kernel). Without groups (`groups=false`,
//! or `auto` on a recording without task-group records) every thread is on its pCPU's root
//! queue directly (the flat model).

use super::params::GroupMode;
use super::{scale_lag, Fair, FairParams, Flavour, NICE_0};
use crate::engine::Cx;
use crate::sim_thread::SimThread;

/// `MIN_SHARES`: a group entity's smallest weight.
const MIN_SHARES: f64 = 2.0;

pub(super) struct Groups {
    /// Each thread's group; empty without groups.
    of: Vec<u32>,
    count: usize,
    ncpus: usize,
    /// Each group's `tg->shares`.
    shares: Vec<f64>,
    /// Groups that stand for the root task group: their tasks weigh on the root queue each by
    /// its own weight, so their entity takes the weight queued under it, not a share.
    root: Vec<bool>,
}

impl Groups {
    pub(super) fn new(p: &FairParams, threads: &[SimThread], ncpus: u32) -> Groups {
        let recorded = threads
            .iter()
            .any(|t| t.sched_group.is_some() || t.group_unread);
        match p.groups {
            GroupMode::PerProcess => Groups::per_process(p, threads, ncpus),
            GroupMode::Recorded if recorded => Groups::recorded(threads, ncpus),
            GroupMode::Off | GroupMode::Recorded => Groups {
                of: Vec::new(),
                count: 0,
                ncpus: ncpus as usize,
                shares: Vec::new(),
                root: Vec::new(),
            },
        }
    }

    /// `groups=true`: one group per process of tracked threads (its session: a VMM
    /// daemonizes into its own, the demo's VMs share the recorder's), in order of
    /// appearance, then the background's.
    fn per_process(p: &FairParams, threads: &[SimThread], ncpus: u32) -> Groups {
        let mut pids: Vec<u32> = Vec::new();
        for t in threads.iter().filter(|t| !t.background) {
            if !pids.contains(&t.pid) {
                pids.push(t.pid);
            }
        }
        let background = pids.len() as u32;
        let of: Vec<u32> = threads
            .iter()
            .map(|t| match pids.iter().position(|&p| p == t.pid) {
                Some(g) if !t.background => g as u32,
                _ => background,
            })
            .collect();
        let count = pids.len() + usize::from(threads.iter().any(|t| t.background));
        let mut shares = vec![NICE_0 as f64; count];
        if count > pids.len() {
            shares[count - 1] = p.background_shares as f64;
        }
        Groups {
            of,
            count,
            ncpus: ncpus as usize,
            shares,
            root: vec![false; count],
        }
    }

    /// `groups=auto` on a recording with task-group records: each group it names, with its
    /// weight, holding the tracked threads and background stand-ins of that group, in order
    /// of appearance. A tracked thread without a record is in its process's group; the
    /// stand-ins of tasks without one (or whose group could not be read) are a group each.
    fn recorded(threads: &[SimThread], ncpus: u32) -> Groups {
        let mut keys: Vec<String> = Vec::new();
        let (mut shares, mut root) = (Vec::new(), Vec::new());
        let of = threads
            .iter()
            .map(|t| {
                let (key, weight, is_root) = match &t.sched_group {
                    Some(g) => (format!("group {}", g.name), g.weight, g.is_root()),
                    None if !t.background => (format!("pid {}", t.pid), NICE_0 as u32, false),
                    None if t.group_unread => ("unread".to_string(), NICE_0 as u32, false),
                    None => ("unrecorded".to_string(), NICE_0 as u32, false),
                };
                match keys.iter().position(|k| *k == key) {
                    Some(g) => g as u32,
                    None => {
                        keys.push(key);
                        shares.push(f64::from(weight.max(MIN_SHARES as u32)));
                        root.push(is_root);
                        keys.len() as u32 - 1
                    }
                }
            })
            .collect();
        Groups {
            of,
            count: keys.len(),
            ncpus: ncpus as usize,
            shares,
            root,
        }
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn entities(&self) -> usize {
        self.count * self.ncpus
    }

    /// Thread `t`'s group, with groups.
    pub(super) fn of(&self, t: u32) -> Option<u32> {
        self.of.get(t as usize).copied()
    }
}

impl Fair {
    /// The queue thread `t` joins on `cpu`: its group's there, or the root's without groups.
    pub(super) fn home(&self, t: u32, cpu: u32) -> usize {
        let n = self.ncpus as usize;
        match self.groups.of(t) {
            None => cpu as usize,
            Some(g) => n * (1 + g as usize) + cpu as usize,
        }
    }

    /// The queue group entity `e` stands for; `None` for a thread.
    pub(super) fn group_rq(&self, e: u32) -> Option<usize> {
        (e as usize)
            .checked_sub(self.nthreads)
            .map(|i| self.ncpus as usize + i)
    }

    /// Group `g`'s entity on `cpu`.
    fn group_entity(&self, g: u32, cpu: u32) -> u32 {
        (self.nthreads + g as usize * self.ncpus as usize + cpu as usize) as u32
    }

    /// The queues of `cpu` that hold threads.
    fn leaf_rqs(&self, cpu: u32) -> impl Iterator<Item = usize> {
        let n = self.ncpus as usize;
        let (count, base) = match self.groups.count() {
            0 => (1, 0),
            c => (c, n),
        };
        (0..count).map(move |g| base + g * n + cpu as usize)
    }

    /// Threads waiting on `cpu`.
    pub(super) fn nr_queued(&self, cpu: u32) -> usize {
        if self.groups.count() == 0 {
            return self.rqs[cpu as usize].queue.len();
        }
        self.leaf_rqs(cpu).map(|r| self.rqs[r].queue.len()).sum()
    }

    /// The threads waiting on `cpu`, in queue order.
    pub(super) fn queued(&self, cpu: u32) -> impl Iterator<Item = u32> + '_ {
        self.leaf_rqs(cpu)
            .flat_map(move |r| self.rqs[r].queue.iter().copied())
    }

    /// The thread running on `cpu`.
    pub(super) fn running(&self, cpu: u32) -> Option<u32> {
        let mut e = self.rqs[cpu as usize].curr?;
        while let Some(r) = self.group_rq(e) {
            e = self.rqs[r].curr?;
        }
        Some(e)
    }

    /// Queues thread `t` on `cpu` (it comes from `from`), and its group's entity on the
    /// root if the group had nothing there.
    pub(super) fn enqueue(&mut self, cx: &Cx, t: u32, cpu: u32, from: u32, now: u64) {
        let r = self.home(t, cpu);
        let empty = self.rqs[r].queue.is_empty() && self.rqs[r].curr.is_none();
        self.place(cx, r, t, self.home(t, from));
        let Some(g) = self.groups.of(t) else { return };
        let ge = self.group_entity(g, cpu);
        if empty {
            let w = self.share(cx, g, cpu, now);
            self.weight[ge as usize] = w;
            self.place(cx, cpu as usize, ge, cpu as usize);
        } else {
            self.update_shares(cx, g, cpu, now);
        }
    }

    /// Takes queued thread `t` off `cpu`, and its group's entity off the root if the group
    /// has nothing left there.
    pub(super) fn dequeue_queued(&mut self, cx: &Cx, t: u32, cpu: u32, now: u64) {
        let r = self.home(t, cpu);
        self.store_lag(cx, r, t);
        self.remove(cx, r, t);
        let Some(g) = self.groups.of(t) else { return };
        if self.rqs[r].queue.is_empty() && self.rqs[r].curr.is_none() {
            let ge = self.group_entity(g, cpu);
            self.store_lag(cx, cpu as usize, ge);
            self.remove(cx, cpu as usize, ge);
        } else {
            self.update_shares(cx, g, cpu, now);
        }
    }

    /// Entity `e` stops running on queue `r`: back in the queue if it `stays` runnable,
    /// else off it with its lag kept.
    pub(super) fn put_prev_entity(&mut self, cx: &Cx, r: usize, e: u32, stays: bool) {
        if !stays {
            self.store_lag(cx, r, e);
        }
        let w = i128::from(self.w(cx, e));
        let rq = &mut self.rqs[r];
        rq.curr = None;
        if stays {
            rq.queue.push(e);
        } else {
            rq.load -= w;
        }
    }

    /// The running thread `t` left `cpu` (`runnable`: it stays queued): its group's entity
    /// leaves the root with it if the group has nothing left there.
    pub(super) fn put_prev_group(&mut self, cx: &Cx, cpu: u32, t: u32, runnable: bool, now: u64) {
        let Some(g) = self.groups.of(t) else { return };
        let ge = self.group_entity(g, cpu);
        let stays = runnable || !self.rqs[self.home(t, cpu)].queue.is_empty();
        self.put_prev_entity(cx, cpu as usize, ge, stays);
        if stays {
            self.update_shares(cx, g, cpu, now);
        }
    }

    /// `find_matching_se`: the queue and the two entities a wakeup of `t` on `cpu` is
    /// judged by, `root_curr` running there: the threads themselves in a shared group (or
    /// without groups), else their groups' entities at the root.
    pub(super) fn matching_entities(&self, cpu: u32, root_curr: u32, t: u32) -> (usize, u32, u32) {
        let Some(g) = self.groups.of(t) else {
            return (cpu as usize, root_curr, t);
        };
        if let Some(gr) = self.group_rq(root_curr) {
            if let Some(c) = self.rqs[gr].curr.filter(|&c| self.groups.of(c) == Some(g)) {
                return (gr, c, t);
            }
        }
        (cpu as usize, root_curr, self.group_entity(g, cpu))
    }

    /// At a tick: the running group's entity takes its current share.
    pub(super) fn tick_shares(&mut self, cx: &Cx, cpu: u32, now: u64) {
        let Some(t) = self.running(cpu) else { return };
        if let Some(g) = self.groups.of(t) {
            self.update_shares(cx, g, cpu, now);
        }
    }

    /// `calc_group_shares` for group `g` on `cpu`.
    fn share(&self, cx: &Cx, g: u32, cpu: u32, now: u64) -> u32 {
        let (mut here, mut total) = (0.0f64, 0.0f64);
        for (t, &tg) in self.groups.of.iter().enumerate() {
            if tg != g {
                continue;
            }
            let t = t as u32;
            let load = self.load.load(t, now, cx.threads[t as usize].weight);
            total += load;
            if cx.cpu_of[t as usize] == cpu {
                here += load;
            }
        }
        let queued = self.rqs[self.home_of_group(g, cpu)].load as f64;
        if self.groups.root[g as usize] {
            return queued.max(MIN_SHARES) as u32;
        }
        let load = here.max(queued);
        let total = total - here + load;
        let shares = self.groups.shares[g as usize];
        if total <= 0.0 {
            return shares as u32;
        }
        (shares * load / total).clamp(MIN_SHARES, shares) as u32
    }

    fn home_of_group(&self, g: u32, cpu: u32) -> usize {
        self.ncpus as usize * (1 + g as usize) + cpu as usize
    }

    /// `update_cfs_group`: group `g`'s entity on `cpu` takes its share now.
    fn update_shares(&mut self, cx: &Cx, g: u32, cpu: u32, now: u64) {
        let w = self.share(cx, g, cpu, now);
        self.reweight(cx, cpu, self.group_entity(g, cpu), w);
    }

    /// `reweight_entity`: on its queue, an entity keeps its lag (`vlag` scales by old/new
    /// weight, as lag = w x (V - v)) and its relative deadline, and is placed again.
    fn reweight(&mut self, cx: &Cx, cpu: u32, ge: u32, w_new: u32) {
        let i = ge as usize;
        let w_old = self.weight[i];
        if w_old == w_new {
            return;
        }
        let r = cpu as usize;
        let is_curr = self.rqs[r].curr == Some(ge);
        if !is_curr && !self.rqs[r].queue.contains(&ge) {
            self.weight[i] = w_new;
            return;
        }
        if self.flavour == Flavour::Cfs {
            self.rqs[r].load += i128::from(w_new) - i128::from(w_old);
            self.weight[i] = w_new;
            return;
        }
        self.store_lag(cx, r, ge);
        let (old, new) = (i128::from(w_old), i128::from(w_new));
        let ent = &mut self.ents[ge as usize];
        ent.vlag = scale_lag(ent.vlag, old, new);
        let rel_deadline = scale_lag(ent.deadline - ent.v, old, new);
        let seq = ent.seq;
        if is_curr {
            let rq = &mut self.rqs[r];
            rq.curr = None;
            rq.load -= old;
        } else {
            self.remove(cx, r, ge);
        }
        self.weight[i] = w_new;
        self.place(cx, r, ge, r);
        let ent = &mut self.ents[ge as usize];
        ent.deadline = ent.v + rel_deadline;
        ent.seq = seq;
        if is_curr {
            let rq = &mut self.rqs[r];
            rq.queue.pop();
            rq.curr = Some(ge);
        }
    }
}
