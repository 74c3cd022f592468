//! A thread's clocks: its cumulative counters, the kernel's own run/wait figures carried by
//! switch events, its vruntime series and the checkpoints behind the windowed figures.

use std::collections::VecDeque;

use crate::latency::Latency;
use crate::{SchedEntity, VruntimePoint};

/// Period of the cumulative-counter checkpoints used for the 1 s / 10 s windows.
pub(super) const CHECKPOINT_NS: u64 = 100_000_000;

/// Cumulative counters of a thread; checkpoints of these give the windowed figures.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cum {
    pub(super) run: u64,
    pub(super) task_clock: u64,
    /// Run-queue wait by the kernel's own counter (`sched_info.run_delay` deltas).
    pub(super) run_delay: u64,
    pub(super) wait: u64,
    pub(super) sleep: u64,
    pub(super) voluntary: u64,
    pub(super) involuntary: u64,
    pub(super) migrate_events: u64,
    pub(super) pcpu_changes: u64,
    pub(super) exits: u64,
    pub(super) gaps: u64,
    pub(super) gap_ns: u64,
}

impl Cum {
    pub(super) fn minus(&self, o: &Cum) -> Cum {
        Cum {
            run: self.run.saturating_sub(o.run),
            task_clock: self.task_clock.saturating_sub(o.task_clock),
            run_delay: self.run_delay.saturating_sub(o.run_delay),
            wait: self.wait.saturating_sub(o.wait),
            sleep: self.sleep.saturating_sub(o.sleep),
            voluntary: self.voluntary.saturating_sub(o.voluntary),
            involuntary: self.involuntary.saturating_sub(o.involuntary),
            migrate_events: self.migrate_events.saturating_sub(o.migrate_events),
            pcpu_changes: self.pcpu_changes.saturating_sub(o.pcpu_changes),
            exits: self.exits.saturating_sub(o.exits),
            gaps: self.gaps.saturating_sub(o.gaps),
            gap_ns: self.gap_ns.saturating_sub(o.gap_ns),
        }
    }
}

/// The clocks of one thread.
#[derive(Clone, Default)]
pub(super) struct Clocks {
    pub(super) cum: Cum,
    pub(super) last_sum_exec: Option<u64>,
    pub(super) last_run_delay: Option<u64>,
    /// A switch has carried this task's sched entity (its vruntime is known).
    pub(super) se_seen: bool,
    /// A switch has carried its `run_delay` (a schedstat seed alone says nothing).
    pub(super) run_delay_seen: bool,
    pub(super) vruntime: u64,
    /// The pCPU whose run queue `vruntime` was read on. Each queue has its own scale (on one
    /// host two pCPUs' were 8 s apart) and a migrated thread is re-placed on its new one,
    /// so until its next switch there, its vruntime says nothing against that queue.
    pub(super) vruntime_cpu: u32,
    pub(super) wait_hist: Latency,
    pub(super) series: VecDeque<VruntimePoint>,
    /// Time of `series`' newest point, kept here so that the many samples that add no point
    /// do not touch the series' buffer (a cache miss per switch at 512 vCPUs).
    last_point_ts: Option<u64>,
    pub(super) checkpoints: VecDeque<(u64, Cum)>,
}

impl Clocks {
    /// Starts the clocks of a thread whose kernel figures the source read when tracking
    /// began (`seed`: run and wait ns), so deltas count from tracking start.
    pub(super) fn seeded(seed: Option<(u64, u64)>) -> Self {
        Clocks {
            last_sum_exec: seed.map(|s| s.0),
            last_run_delay: seed.map(|s| s.1),
            ..Clocks::default()
        }
    }

    /// Folds in the sched entity a switch carried at `ts` (the vruntime series keeps points
    /// spaced `spacing` apart, trimmed to `history`). Returns the task clock's growth since
    /// the previous sample, when there was one to grow from.
    pub(super) fn sample(
        &mut self,
        se: &SchedEntity,
        ts: u64,
        spacing: u64,
        history: u64,
    ) -> Option<u64> {
        self.vruntime = se.vruntime;
        self.se_seen = true;
        let ran = self.count(se);
        let due = self
            .last_point_ts
            .is_none_or(|last| ts.saturating_sub(last) >= spacing);
        if due {
            self.last_point_ts = Some(ts);
            self.series.push_back(VruntimePoint {
                ts,
                vruntime: se.vruntime,
            });
            let cap = (history / spacing.max(1)).clamp(16, 100_000) as usize + 16;
            let horizon = ts.saturating_sub(history);
            while self.series.len() > cap || self.series.front().is_some_and(|p| p.ts < horizon) {
                self.series.pop_front();
            }
        }
        ran
    }

    /// Folds in only the kernel's counters a switch carried (task clock, run delay), not its
    /// vruntime. Returns the task clock's growth since the previous sample.
    pub(super) fn count(&mut self, se: &SchedEntity) -> Option<u64> {
        let ran = self
            .last_sum_exec
            .and_then(|prev| se.sum_exec_runtime.checked_sub(prev));
        if let Some(ran) = ran {
            self.cum.task_clock = self.cum.task_clock.saturating_add(ran);
        }
        self.last_sum_exec = Some(se.sum_exec_runtime);
        if let Some(now) = se.run_delay {
            if let Some(prev) = self.last_run_delay.filter(|p| now >= *p) {
                self.cum.run_delay = self.cum.run_delay.saturating_add(now - prev);
            }
            self.last_run_delay = Some(now);
            self.run_delay_seen = true;
        }
        ran
    }

    /// Keeps the counters as of boundary `ts`, at most `keep` of them.
    pub(super) fn checkpoint(&mut self, ts: u64, cum: Cum, keep: usize) {
        self.checkpoints.push_back((ts, cum));
        while self.checkpoints.len() > keep {
            self.checkpoints.pop_front();
        }
    }
}
