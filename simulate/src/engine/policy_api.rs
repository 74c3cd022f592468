//! The contract between the engine and a policy: the [`Policy`] trait, and [`Cx`], what the
//! engine lends a policy on each call (its threads, who runs where) and how the policy asks
//! for a reschedule or a new timer.

use super::{PcpuSet, SimThread};

/// What the engine shows a policy, and how the policy asks for a reschedule.
pub struct Cx<'a> {
    pub threads: &'a [SimThread],
    pub ncpus: u32,
    /// Thread running on each pCPU.
    pub curr: &'a [Option<u32>],
    /// The pCPU each thread last ran or was queued on.
    pub cpu_of: &'a [u32],
    resched: &'a mut PcpuSet,
    touched: &'a mut PcpuSet,
}

impl Cx<'_> {
    /// Ask the engine to run the policy's pick on `cpu` now.
    pub fn resched(&mut self, cpu: u32) {
        self.resched.insert(cpu);
        self.touched.insert(cpu);
    }

    /// `cpu`'s queue changed: the engine asks for its timer again.
    pub fn touch(&mut self, cpu: u32) {
        self.touched.insert(cpu);
    }

    /// A queued thread moved from `src`'s queue to `dst`'s (balancing, an affinity change):
    /// both timers are asked for again, and an idle `dst` runs its pick now.
    pub fn queue_moved(&mut self, src: u32, dst: u32) {
        self.touch(src);
        if self.is_running(dst) {
            self.touch(dst);
        } else {
            self.resched(dst);
        }
    }

    pub fn is_running(&self, cpu: u32) -> bool {
        self.curr[cpu as usize].is_some()
    }
}

/// A scheduling policy as a deterministic state machine. Thread ids are indices into
/// `Cx::threads`. The engine calls, for a pCPU: `put_prev` for the thread leaving it (still
/// runnable or going to sleep), then `pick`; `timer`/`tick` for the running thread's next
/// decision point; `wake` when a thread becomes runnable.
pub trait Policy {
    /// A thread becomes runnable at `now`: queue it and return the pCPU it is queued on.
    fn wake(&mut self, cx: &mut Cx, t: u32, now: u64) -> u32;
    /// `t` stops running on `cpu` at `now`; `runnable` is false when it goes to sleep.
    fn put_prev(&mut self, cx: &mut Cx, cpu: u32, t: u32, now: u64, runnable: bool);
    /// The thread to run next on `cpu` (taken off its queue), or None to idle. It may come
    /// from another pCPU's queue (balancing); the engine then reports a migration.
    fn pick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> Option<u32>;
    /// When the running thread on `cpu` must next be looked at (`u64::MAX`: never).
    fn timer(&self, cx: &Cx, cpu: u32, now: u64) -> u64;
    /// The timer of `cpu` fired; true to preempt the running thread.
    fn tick(&mut self, cx: &mut Cx, cpu: u32, now: u64) -> bool;
    /// `t` is runnable, not running, and its affinity changed: if the pCPU whose queue holds
    /// it is no longer allowed, move it to one that is (as `set_cpus_allowed` does) and
    /// return that pCPU. `None`: it stays where it is (still allowed there, or the policy
    /// has one global queue whose pick checks the affinity).
    fn reaffine(&mut self, _cx: &mut Cx, _t: u32, _now: u64) -> Option<u32> {
        None
    }
    /// Policy-wide periodic work (accounting, balancing), if any.
    fn global_timer(&self) -> u64 {
        u64::MAX
    }
    fn global(&mut self, _cx: &mut Cx, _now: u64) {}
    /// The thread's virtual time for switch events, where the policy has one (the engine
    /// reports weighted CPU time, `exec * 1024 / weight`, for those that do not).
    fn vtime(&self, _t: u32) -> Option<u64> {
        None
    }
    fn deadline(&self, _t: u32) -> Option<u64> {
        None
    }
    fn slice(&self, _t: u32) -> Option<u64> {
        None
    }
}

/// The engine's state that policies read, lent to them as a [`Cx`].
pub(super) struct View {
    pub(super) threads: Vec<SimThread>,
    /// Thread running on each pCPU.
    pub(super) curr: Vec<Option<u32>>,
    /// The pCPU each thread last ran or was queued on.
    pub(super) cpu_of: Vec<u32>,
}

impl View {
    pub(super) fn cx<'a>(&'a self, resched: &'a mut PcpuSet, touched: &'a mut PcpuSet) -> Cx<'a> {
        Cx {
            threads: &self.threads,
            ncpus: self.curr.len() as u32,
            curr: &self.curr,
            cpu_of: &self.cpu_of,
            resched,
            touched,
        }
    }
}
