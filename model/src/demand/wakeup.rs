//! The wakeup rule, in one place: when a wakeup opens, what closes it, what cancels it, and
//! how the woken thread got its pCPU. The demand fold applies it to each thread's `State`
//! transitions, and everything kvmscope says of wakeups is what it closed: each thread's
//! wake-to-run latency as served ([`ThreadDemand::wake_to_run`](super::ThreadDemand)) and
//! the run's wakeups by placement ([`Demand::wakeups`](super::Demand), which the simulator's
//! dispatch delay is measured from).
//!
//! - **Opens**: a `Waiting` state straight after a `Sleeping` one (the model's wakeup).
//! - **Closes**: at the thread's next running state, its switch-in. A move to another run
//!   queue on the way (`Waiting` again) does not restart it. A switch-in the kernel never
//!   reported still closes it: the model stamps the inferred `Running` when the thread's task
//!   clock says it began.
//! - **Cancelled** (nothing recorded) by a `Sleeping` or `Unknown` state before the switch-in
//!   and by the thread's end (`Exited`; a tid reused by a new thread ends the old thread, and
//!   the new one has a slot of its own). Why: the latency measures how long a woken thread
//!   took to get a pCPU. A wakeup followed by anything but its own switch-in never got one;
//!   closing it at a later switch-in would charge a sleep, or an unknown stretch, as dispatch
//!   delay. A re-announcement of a live thread (`Thread` for its slot again: a relabel, a
//!   rescan) is the same thread, so its wakeup goes on.

use serde::{Deserialize, Serialize};

use crate::{PcpuHolder, VcpuState};

/// One thread's open wakeup, fed the thread's states in order.
#[derive(Clone, Copy, Debug)]
pub(super) struct OpenWakeup {
    /// The thread's previous state.
    before: VcpuState,
    /// When it was woken, while that wakeup waits for its switch-in.
    woke_at: Option<u64>,
}

impl Default for OpenWakeup {
    fn default() -> Self {
        OpenWakeup {
            before: VcpuState::Unknown,
            woke_at: None,
        }
    }
}

impl OpenWakeup {
    /// The thread is in `state` from `ts`; when that closes a wakeup, its wake-to-run latency
    /// (ns, at least 1: a switch-in in the same nanosecond still waited).
    pub(super) fn state(&mut self, ts: u64, state: VcpuState) -> Option<u64> {
        let before = std::mem::replace(&mut self.before, state);
        match state {
            VcpuState::Waiting => {
                if before == VcpuState::Sleeping {
                    self.woke_at = Some(ts);
                }
                None
            }
            VcpuState::InGuest | VcpuState::Running | VcpuState::InVmm => self
                .woke_at
                .take()
                .map(|woke| ts.saturating_sub(woke).max(1)),
            VcpuState::Sleeping | VcpuState::Unknown => {
                self.woke_at = None;
                None
            }
        }
    }

    /// The thread ended: its wakeup never gets a pCPU (and a new one opens only after a
    /// `Sleeping`, which an ended thread does not have).
    pub(super) fn cancel(&mut self) {
        *self = OpenWakeup::default();
    }
}

/// How a woken thread got its pCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// It preempted: at the instant of its switch-in the tracked thread holding the pCPU was
    /// switched out still runnable (a wakeup preemption, or a tick's).
    Preempted,
    /// The pCPU's holder before the switch-in was the idle task.
    Idle,
    /// Anything else: the holder slept, or was an untracked task, and the woken thread waited
    /// for it (a wait a scheduler policy models itself, not a dispatch cost).
    Waited,
}

/// What [`Placement`] needs to know of the pCPUs: who held each one before a switch-in, and
/// the last switch-out. The model logs a switch as the switch-out, the states, then the
/// pCPU's new holder, so at the woken thread's `Running` this still names the old holder.
#[derive(Default)]
pub(super) struct Holders {
    /// Whether each pCPU's holder is the idle task (index: pCPU; never seen: not idle).
    idle: Vec<bool>,
    /// The last switch-out of a tracked thread: when, where, still runnable.
    last_out: Option<(u64, u32, bool)>,
}

impl Holders {
    pub(super) fn switched_out(&mut self, ts: u64, pcpu: u32, preempted: bool) {
        self.last_out = Some((ts, pcpu, preempted));
    }

    pub(super) fn held(&mut self, pcpu: u32, holder: &PcpuHolder) {
        let i = pcpu as usize;
        if self.idle.len() <= i {
            self.idle.resize(i + 1, false);
        }
        self.idle[i] = *holder == PcpuHolder::Idle;
    }

    /// How a wakeup switched in on `pcpu` at `ts` got it.
    pub(super) fn placement(&self, ts: u64, pcpu: u32) -> Placement {
        if self.last_out == Some((ts, pcpu, true)) {
            Placement::Preempted
        } else if self.idle.get(pcpu as usize).copied().unwrap_or(false) {
            Placement::Idle
        } else {
            Placement::Waited
        }
    }
}

/// Every wakeup the rule closed, by how the woken thread got its pCPU: wake-to-run
/// latencies, ns, ascending. Kept whole: a recording has thousands of wakeups, and exact
/// quantiles keep the simulator's charged delay independent of histogram bucketing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wakeups {
    pub preempted: Vec<u64>,
    pub idle: Vec<u64>,
    pub waited: Vec<u64>,
}

impl Wakeups {
    pub(super) fn record(&mut self, placement: Placement, ns: u64) {
        match placement {
            Placement::Preempted => self.preempted.push(ns),
            Placement::Idle => self.idle.push(ns),
            Placement::Waited => self.waited.push(ns),
        }
    }

    pub(super) fn sort(&mut self) {
        self.preempted.sort_unstable();
        self.idle.sort_unstable();
        self.waited.sort_unstable();
    }

    /// All of them.
    pub fn count(&self) -> usize {
        self.preempted.len() + self.idle.len() + self.waited.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VcpuState::{InGuest, Running, Sleeping, Unknown, Waiting};

    /// The latencies `states` close, fed in order to one thread's rule.
    fn closed(states: &[(u64, VcpuState)]) -> Vec<u64> {
        let mut w = OpenWakeup::default();
        states
            .iter()
            .filter_map(|&(ts, s)| w.state(ts, s))
            .collect()
    }

    #[test]
    fn a_wakeup_opens_after_a_sleep_and_closes_at_the_next_running_state() {
        assert_eq!(
            closed(&[(0, Sleeping), (10, Waiting), (25, Running), (30, InGuest)]),
            vec![15]
        );
        // A move to another run queue while waiting does not restart it.
        assert_eq!(
            closed(&[(0, Sleeping), (10, Waiting), (20, Waiting), (40, InGuest)]),
            vec![30]
        );
        // A switch-in in the same nanosecond still counts, as 1 ns.
        assert_eq!(
            closed(&[(0, Sleeping), (10, Waiting), (10, Running)]),
            vec![1]
        );
    }

    #[test]
    fn only_a_wakeup_from_sleep_opens() {
        // Preempted and back: a wait, not a wakeup.
        assert_eq!(
            closed(&[(0, Running), (10, Waiting), (20, Running)]),
            Vec::<u64>::new()
        );
        // First seen waiting: the model cannot say when it was woken.
        assert_eq!(closed(&[(0, Waiting), (20, Running)]), Vec::<u64>::new());
    }

    #[test]
    fn a_re_sleep_or_an_unknown_state_cancels_it() {
        assert_eq!(
            closed(&[(0, Sleeping), (10, Waiting), (15, Sleeping), (40, Running)]),
            Vec::<u64>::new()
        );
        assert_eq!(
            closed(&[(0, Sleeping), (10, Waiting), (15, Unknown), (40, Running)]),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn an_end_cancels_it_and_opens_none_after() {
        let mut w = OpenWakeup::default();
        assert_eq!(w.state(0, Sleeping), None);
        assert_eq!(w.state(10, Waiting), None);
        w.cancel();
        assert_eq!(w.state(20, Running), None);
        assert_eq!(w.state(30, Waiting), None);
        assert_eq!(w.state(40, Running), None);
    }

    #[test]
    fn placement_reads_the_holder_before_the_switch_in() {
        let mut h = Holders::default();
        // Never seen: not idle.
        assert_eq!(h.placement(5, 0), Placement::Waited);
        h.held(0, &PcpuHolder::Idle);
        assert_eq!(h.placement(10, 0), Placement::Idle);
        // A preempted switch-out on this pCPU at this instant: preempted, idle or not.
        h.switched_out(10, 0, true);
        assert_eq!(h.placement(10, 0), Placement::Preempted);
        // ... only at that instant and on that pCPU.
        assert_eq!(h.placement(11, 0), Placement::Idle);
        assert_eq!(h.placement(10, 1), Placement::Waited);
        // The holder slept: the woken thread waited for it.
        h.held(0, &PcpuHolder::Thread(3));
        h.switched_out(20, 0, false);
        assert_eq!(h.placement(20, 0), Placement::Waited);
    }
}
