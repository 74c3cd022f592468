//! Each thread's progress through its recorded demand: which burst it is in, the CPU time
//! left in it, and what follows when it ends (a sleep as long as the recording's, or the end
//! of its demand).
//!
//! A burst wants its recorded CPU time. With `--param open_bursts=true`, an open one (no
//! sleep ended it in the recording, [`model::demand::OpenBurst`]) wants the CPU for as long
//! as the thread was runnable in it, to the recording's end or its exit: a vCPU that never
//! slept wants the CPU from its first wakeup to the end of the replay, however much of it the
//! recorded host gave it. Not until the replay's end whatever it did before: a sleepy vCPU
//! caught runnable at the end is served sooner in the replay than it was (its recorded waits
//! are not replayed), and would then spin for the rest of the run (an interactive vCPU of a
//! recording cut at 12 s went from 9.5% to 21.4%).

use model::demand::Burst;

use super::{Engine, Policy};

/// The CPU time `burst` wants in the replay, at least 1 ns: all its runnable time when it is
/// open and `open_bursts` holds, else its recorded CPU time.
pub(super) fn cpu_wanted(burst: &Burst, open_bursts: bool) -> u64 {
    if open_bursts {
        burst.wanted_ns().max(1)
    } else {
        burst.run_ns.max(1)
    }
}

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
    /// until its pCPU's tick (see [`ReplayRules`](super::ReplayRules)).
    pub(super) fn end_burst(&mut self, t: u32, now: u64) {
        let i = t as usize;
        let bursts = &self.demand.threads[i].bursts;
        let r = &mut self.runs[i];
        let ended = bursts.get(r.burst);
        r.burst += 1;
        match (ended.and_then(|b| b.sleep_ns), bursts.get(r.burst)) {
            (Some(s), Some(next)) => {
                r.state = RunState::Sleeping;
                r.remaining = cpu_wanted(next, self.open_bursts);
                let cpu = self.view.cpu_of[i];
                let background = self.demand.threads[i].background;
                let on_tick =
                    self.tick_wake
                        .zip(ended.and_then(|b| b.woke))
                        .and_then(|(ticks, woke)| {
                            if background {
                                ticks.stand_in_sleep_end(now, s, woke)
                            } else {
                                ticks.sleep_end(now, s, woke, cpu)
                            }
                        });
                // The wakeup that ran this burst was taken: none is pending.
                debug_assert_eq!(self.wakes.at(t), u64::MAX);
                self.wakes.set(t, on_tick.unwrap_or(now + s));
            }
            _ => r.state = RunState::Done,
        }
    }
}
