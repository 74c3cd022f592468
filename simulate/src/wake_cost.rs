//! What a wakeup costs before the woken vCPU runs, measured from a recording, so the engine
//! can charge it (its dispatch delay) instead of running a woken thread the instant its
//! policy gives it a pCPU.
//!
//! A host does not switch to a woken thread at the wakeup's timestamp: the waker sets
//! `need_resched`, sends an IPI when the target is another pCPU, an idle target leaves its
//! idle state (HLT under PVM or an emulator, a C-state on metal) and only then switches.
//! Without that cost a sleepy vCPU's run-queue wait comes out as 0 in every replay.
//!
//! Measured from the model's own transitions (never from raw events): a tracked thread that
//! goes from sleeping to waiting was woken; its next running state is its switch-in. How it
//! got the pCPU sorts the wakeup:
//! - **preempt**: at that instant the tracked thread holding the pCPU was switched out still
//!   runnable (a wakeup preemption, or a tick's);
//! - **idle**: the pCPU's holder before the switch-in was the idle task;
//! - anything else (the holder slept, or was an untracked task) waited for the holder and is
//!   not a dispatch cost: the policy models that wait itself.
//!
//! The engine charges the median of the idle kind to a simulated wakeup that finds its pCPU
//! idle, and the median of the preempt kind to one that preempts. A recording that rarely
//! shows an idle pCPU (an overcommitted one: the kernel records only switches of tracked
//! threads, so idle is seen only when a vCPU's pCPU goes idle) charges idle wakeups the
//! preempt figure too, and says so.

use model::{Event, Model, ModelConfig, PcpuHolder, Transition, VcpuState};
use serde::Serialize;

use crate::PolicyKind;

/// Fewest idle wakeups whose median is charged; below it the preempt median stands in.
pub const MIN_IDLE_WAKEUPS: usize = 20;

/// The delays the engine charges between a wakeup and the switch it causes, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchDelay {
    /// A wakeup that finds its pCPU idle.
    pub idle_ns: u64,
    /// A wakeup that preempts the running thread.
    pub preempt_ns: u64,
}

/// The recording's wake-to-run latencies (ns, ascending) by how the woken thread got its
/// pCPU. Kept whole: a recording has thousands of wakeups, and exact quantiles keep the
/// charged delay independent of histogram bucketing.
#[derive(Clone, Debug, Default)]
pub struct WakeCost {
    /// Switched in on an idle pCPU.
    pub idle: Vec<u64>,
    /// Switched in by preempting a tracked thread.
    pub preempt: Vec<u64>,
    /// Switched in once the holder slept, or after an untracked holder: not charged.
    pub waited: u64,
}

/// The figures of a [`WakeCost`] and what was charged, for `simulate --json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WakeCostSummary {
    pub idle_wakeups: u64,
    pub idle_p50_us: f64,
    pub preempt_wakeups: u64,
    pub preempt_p50_us: f64,
    pub waited_wakeups: u64,
    /// Charged at each simulated wakeup onto an idle pCPU.
    pub charged_idle_us: f64,
    /// Charged at each simulated wakeup that preempts.
    pub charged_preempt_us: f64,
}

impl WakeCost {
    /// Folds `events` (a recording) through the model and sorts its wakeups.
    pub fn measure(events: &[Event]) -> WakeCost {
        let mut model = Model::new(ModelConfig::report());
        model.record_transitions(true);
        let mut fold = Fold::default();
        let mut buf = Vec::new();
        for batch in events.chunks(4096) {
            model.ingest_batch(batch);
            model.take_transitions(&mut buf);
            fold.apply(&buf);
            buf.clear();
        }
        model.finish();
        model.take_transitions(&mut buf);
        fold.apply(&buf);
        let mut cost = fold.cost;
        cost.idle.sort_unstable();
        cost.preempt.sort_unstable();
        cost
    }

    /// The delays to charge (see the module's note). No wakeups of either kind: nothing.
    pub fn dispatch_delay(&self) -> DispatchDelay {
        let preempt_ns = median(&self.preempt);
        DispatchDelay {
            idle_ns: if self.idle.len() >= MIN_IDLE_WAKEUPS {
                median(&self.idle)
            } else {
                preempt_ns
            },
            preempt_ns,
        }
    }

    pub fn summary(&self, charged: DispatchDelay) -> WakeCostSummary {
        WakeCostSummary {
            idle_wakeups: self.idle.len() as u64,
            idle_p50_us: round_us(median(&self.idle)),
            preempt_wakeups: self.preempt.len() as u64,
            preempt_p50_us: round_us(median(&self.preempt)),
            waited_wakeups: self.waited,
            charged_idle_us: round_us(charged.idle_ns),
            charged_preempt_us: round_us(charged.preempt_ns),
        }
    }
}

/// What `simulate` says of the dispatch delay: how much each policy is charged and from
/// which recorded wakeups (`--param dispatch_idle=`/`dispatch_preempt=` override it).
pub fn dispatch_note(cost: &WakeCost, charged: &[(PolicyKind, DispatchDelay)]) -> String {
    let mut s = format!(
        "dispatch delay charged at each simulated wakeup that gets a pCPU at once (recorded \
         wake-to-run p50: {} us over {} wakeups onto an idle pCPU, {} us over {} that \
         preempted",
        round_us(median(&cost.idle)),
        cost.idle.len(),
        round_us(median(&cost.preempt)),
        cost.preempt.len(),
    );
    if cost.idle.len() < MIN_IDLE_WAKEUPS {
        s.push_str(&format!(
            "; fewer than {MIN_IDLE_WAKEUPS} idle ones: the preempt figure stands for them"
        ));
    }
    s.push(')');
    let mut groups: Vec<(DispatchDelay, Vec<&str>)> = Vec::new();
    for &(kind, d) in charged {
        match groups.iter_mut().find(|g| g.0 == d) {
            Some(g) => g.1.push(kind.name()),
            None => groups.push((d, vec![kind.name()])),
        }
    }
    for (d, kinds) in &groups {
        let who = if groups.len() == 1 {
            String::new()
        } else {
            format!("{}: ", kinds.join(", "))
        };
        s.push_str(&format!(
            ": {who}{} us onto an idle pCPU, {} us when it preempts",
            round_us(d.idle_ns),
            round_us(d.preempt_ns)
        ));
    }
    s
}

/// The median of ascending `v` (the lower middle value); 0 when empty.
fn median(v: &[u64]) -> u64 {
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// ns as µs to one decimal: stable text and JSON.
fn round_us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// A wakeup seen, not yet followed by its switch-in: when.
type Pending = Option<u64>;

#[derive(Default)]
struct Fold {
    cost: WakeCost,
    /// Whether each pCPU's holder is the idle task (index: pCPU; unknown: not idle).
    idle: Vec<bool>,
    /// The last switch-out of a tracked thread: when, where, still runnable.
    last_out: Option<(u64, u32, bool)>,
    /// Each thread's (by slot) last state and its open wakeup.
    state: Vec<VcpuState>,
    pending: Vec<Pending>,
}

impl Fold {
    fn apply(&mut self, transitions: &[Transition]) {
        for t in transitions {
            match *t {
                Transition::SwitchOut {
                    ts,
                    pcpu,
                    preempted,
                    ..
                } => self.last_out = Some((ts, pcpu, preempted)),
                Transition::Pcpu { cpu, holder, .. } => {
                    let c = cpu as usize;
                    if self.idle.len() <= c {
                        self.idle.resize(c + 1, false);
                    }
                    self.idle[c] = holder == PcpuHolder::Idle;
                }
                Transition::State {
                    ts,
                    thread,
                    state,
                    pcpu,
                } => self.on_state(ts, thread as usize, state, pcpu),
                Transition::Thread { thread, .. } | Transition::Exited { thread, .. } => {
                    // A new occupant of the slot, or an end: no wakeup carries over.
                    if let Some(p) = self.pending.get_mut(thread as usize) {
                        *p = None;
                    }
                }
                _ => {}
            }
        }
    }

    fn on_state(&mut self, ts: u64, slot: usize, state: VcpuState, pcpu: Option<u32>) {
        if self.state.len() <= slot {
            self.state.resize(slot + 1, VcpuState::Unknown);
            self.pending.resize(slot + 1, None);
        }
        let before = std::mem::replace(&mut self.state[slot], state);
        match state {
            VcpuState::Waiting if before == VcpuState::Sleeping => self.pending[slot] = Some(ts),
            VcpuState::Waiting => {}
            VcpuState::InGuest | VcpuState::Running | VcpuState::InVmm => {
                let (Some(woke), Some(cpu)) = (self.pending[slot].take(), pcpu) else {
                    return;
                };
                // The switch-in's transitions come before the pCPU's new holder: `idle`
                // still says who held it.
                let ns = ts.saturating_sub(woke).max(1);
                if self.last_out == Some((ts, cpu, true)) {
                    self.cost.preempt.push(ns);
                } else if self.idle.get(cpu as usize).copied().unwrap_or(false) {
                    self.cost.idle.push(ns);
                } else {
                    self.cost.waited += 1;
                }
            }
            VcpuState::Sleeping | VcpuState::Unknown => self.pending[slot] = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synth::{switch, switch_sleep, task_info, wakeup};

    const US: u64 = 1_000;

    /// Thread 10 is woken onto idle pCPU 0 twice (30 and 50 µs to run); thread 11 is woken
    /// onto pCPU 1 while 12 runs there, and preempts it 20 µs later; then once more, and
    /// waits until 12 sleeps.
    fn stream() -> Vec<Event> {
        vec![
            task_info(0, 10, 1, "vm0", Some(0), 0),
            task_info(0, 11, 1, "vm0", Some(1), 0),
            task_info(0, 12, 1, "vm0", Some(2), 0),
            switch(US, 0, 0, 10),
            switch_sleep(100 * US, 0, 10, 0),
            wakeup(1_000 * US, 0, 10, 0),
            switch(1_030 * US, 0, 0, 10),
            switch_sleep(1_100 * US, 0, 10, 0),
            wakeup(2_000 * US, 0, 10, 0),
            switch(2_050 * US, 0, 0, 10),
            switch_sleep(2_060 * US, 0, 10, 0),
            switch(2_100 * US, 1, 0, 11),
            switch_sleep(2_200 * US, 1, 11, 12),
            wakeup(3_000 * US, 1, 11, 1),
            switch(3_020 * US, 1, 12, 11),
            switch_sleep(3_100 * US, 1, 11, 12),
            wakeup(4_000 * US, 1, 11, 1),
            switch_sleep(6_000 * US, 1, 12, 11),
            switch_sleep(6_100 * US, 1, 11, 0),
        ]
    }

    #[test]
    fn wakeups_are_sorted_by_how_they_got_their_pcpu() {
        let cost = WakeCost::measure(&stream());
        assert_eq!(cost.idle, vec![30 * US, 50 * US]);
        assert_eq!(cost.preempt, vec![20 * US]);
        assert_eq!(cost.waited, 1);
        // Too few idle wakeups: the preempt figure is charged for them too.
        let d = cost.dispatch_delay();
        assert_eq!(d.preempt_ns, 20 * US);
        assert_eq!(d.idle_ns, 20 * US);
        let note = dispatch_note(&cost, &[(PolicyKind::Cfs, d), (PolicyKind::Eevdf, d)]);
        assert!(
            note.contains("20 us onto an idle pCPU, 20 us when it preempts"),
            "{note}"
        );
        assert!(note.contains("fewer than 20 idle ones"), "{note}");
    }

    #[test]
    fn enough_idle_wakeups_charge_their_own_median() {
        let cost = WakeCost {
            idle: (1..=MIN_IDLE_WAKEUPS as u64).map(|i| i * US).collect(),
            preempt: vec![7 * US],
            waited: 0,
        };
        let d = cost.dispatch_delay();
        assert_eq!(d.idle_ns, 10 * US);
        assert_eq!(d.preempt_ns, 7 * US);
        assert_eq!(
            WakeCost::default().dispatch_delay(),
            DispatchDelay::default()
        );
    }
}
