//! The dispatch delay: the picks a wakeup asks for happen only after the recording's
//! wake-to-run time (see `wake_cost.rs`), and whatever else would switch the pCPU meanwhile
//! joins that pending pick.

use super::{Engine, PcpuSet, Policy};

impl<P: Policy> Engine<'_, P> {
    /// The picks a wakeup just asked for (`resched`) happen after the dispatch delay: an
    /// idle pCPU's after the next of the idle kind's delays, a preempted one's after the
    /// next of the preempt kind's (`wake_cost.rs`: the recorded ones with their spread, or
    /// `idle_ns`/`preempt_ns` as given).
    pub(super) fn defer_dispatch(
        &mut self,
        now: u64,
        resched: &mut PcpuSet,
        touched: &mut PcpuSet,
    ) {
        let mut next = resched.first();
        while let Some(c) = next {
            next = resched.next_from(c + 1);
            let preempts = self.view.curr[c as usize].is_some();
            let figure = if preempts {
                self.delay.preempt_ns
            } else {
                self.delay.idle_ns
            };
            let k = &mut self.charged[usize::from(preempts)];
            let d = self.spread.nth(preempts, *k, figure);
            *k += 1;
            if d == 0 {
                continue;
            }
            resched.remove(c);
            touched.insert(c);
            let at = &mut self.dispatch_at[c as usize];
            *at = (*at).min(now + d);
            self.dispatch_preempts[c as usize] |= preempts;
        }
    }

    /// A charged wakeup's pick on `cpu` is due at `now`: true when it was (and it is handled).
    pub(super) fn dispatch_due(&mut self, cpu: u32, now: u64, resched: &mut PcpuSet) -> bool {
        let c = cpu as usize;
        if self.dispatch_at[c] > now {
            return false;
        }
        // One for an idle pCPU that found work since (a balancing pull) has nothing left
        // to do.
        self.dispatch_at[c] = u64::MAX;
        let preempts = std::mem::take(&mut self.dispatch_preempts[c]);
        if preempts || self.view.curr[c].is_none() {
            resched.insert(cpu);
        }
        true
    }
}
