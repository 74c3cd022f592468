//! Each thread's progress through its recorded demand: which burst it is in, the CPU time
//! left in it, and what follows when it ends (a sleep as long as the recording's, or the end
//! of its demand).

use std::cmp::Reverse;

use super::{Engine, Policy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunState {
    Sleeping,
    Runnable,
    Running,
    Done,
}

pub(super) struct Run {
    pub(super) state: RunState,
    pub(super) burst: usize,
    /// CPU time left in the current burst.
    pub(super) remaining: u64,
    pub(super) exec: u64,
    pub(super) run_delay: u64,
    pub(super) wait_since: u64,
}

impl<P: Policy> Engine<'_, P> {
    /// Brings the running thread's burst up to `now`; true when the burst is over.
    pub(super) fn account(&mut self, cpu: u32, now: u64) -> bool {
        let c = cpu as usize;
        let Some(t) = self.view.curr[c] else {
            return false;
        };
        let ran = now - self.since[c];
        self.since[c] = now;
        let r = &mut self.runs[t as usize];
        r.exec += ran;
        r.remaining = r.remaining.saturating_sub(ran);
        r.remaining == 0
    }

    /// The thread's burst ended at `now`: it sleeps as long as it did in the recording, or
    /// until its pCPU's tick (see [`run_charged`](super::run_charged)).
    pub(super) fn end_burst(&mut self, t: u32, now: u64) {
        let i = t as usize;
        let bursts = &self.demand.threads[i].bursts;
        let r = &mut self.runs[i];
        let ended = bursts.get(r.burst);
        r.burst += 1;
        match (ended.and_then(|b| b.sleep_ns), bursts.get(r.burst)) {
            (Some(s), Some(next)) => {
                r.state = RunState::Sleeping;
                r.remaining = next.run_ns.max(1);
                let cpu = self.view.cpu_of[i];
                let on_tick = self
                    .tick_wake
                    .zip(ended.and_then(|b| b.woke))
                    .and_then(|(ticks, woke)| ticks.sleep_end(now, s, woke, cpu));
                self.wakes.push(Reverse((on_tick.unwrap_or(now + s), t)));
            }
            _ => r.state = RunState::Done,
        }
    }
}
