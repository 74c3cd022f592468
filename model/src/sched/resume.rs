//! Resume latency: from a vCPU thread's switch-in to the guest running again, split by
//! whether it came back on the pCPU it left, and the guest gap matching behind it where the
//! host emits no `kvm_entry`.

use std::collections::VecDeque;

use super::Model;
use crate::latency::Latency;
use crate::{GuestGap, Percentiles, ResumeLatency, Transition};

#[derive(Clone, Copy)]
struct SwitchIn {
    ts: u64,
    migrated: bool,
    /// The switch-out before this switch-in (0 if none seen).
    prev_out: u64,
}

/// The resume figures of one thread (or, merged, of all of them).
#[derive(Clone, Default)]
pub(super) struct ResumeTracker {
    pub(super) same: Latency,
    pub(super) migrated: Latency,
    pub(super) to_out: Latency,
    /// VMCLEAR cross-calls: queue → function exit on the old pCPU, and its two parts.
    pub(super) vmclear: Latency,
    pub(super) vmclear_delivery: Latency,
    pub(super) vmclear_run: Latency,
    pub(super) vmclear_calls: u64,
    /// Resume latency came from `kvm_entry` events.
    pub(super) from_entry: bool,
    /// Resume latency came from guest gap records.
    pub(super) from_gap: bool,
    /// The switch-in waiting for its `kvm_entry`: its time and whether it migrated.
    pending: Option<(u64, bool)>,
    pub(super) last_exit_ts: u64,
    last_entry_ts: u64,
    pub(super) last_in_ts: u64,
    recent_ins: VecDeque<SwitchIn>,
}

impl ResumeTracker {
    /// The thread was switched in at `ts`; `prev_out` is its previous switch-out. Up to
    /// `recent` switch-ins are remembered for late guest gaps.
    pub(super) fn switched_in(&mut self, ts: u64, migrated: bool, prev_out: u64, recent: usize) {
        self.last_in_ts = ts;
        self.pending = Some((ts, migrated));
        if self.recent_ins.len() >= recent.max(1) {
            self.recent_ins.pop_front();
        }
        self.recent_ins.push_back(SwitchIn {
            ts,
            migrated,
            prev_out,
        });
    }

    /// The thread was switched out at `ts`: the guest's last exit to here is "to switch-out".
    pub(super) fn switched_out(&mut self, ts: u64) {
        if self.from_entry
            && self.last_exit_ts > self.last_entry_ts
            && self.last_exit_ts >= self.last_in_ts
        {
            self.to_out.record(ts - self.last_exit_ts);
        }
        self.pending = None;
    }

    /// A `kvm_entry` at `ts`: closes the pending switch-in, if any. Returns the resume
    /// latency and whether that switch-in migrated.
    pub(super) fn entered(&mut self, ts: u64) -> Option<(u64, bool)> {
        self.from_entry = true;
        self.last_entry_ts = ts;
        let (from, migrated) = self.pending.take()?;
        let d = ts.saturating_sub(from);
        self.record(d, migrated);
        Some((d, migrated))
    }

    /// A VMCLEAR cross-call of this vCPU ended: queued at `queue`, entered on the old pCPU at
    /// `entry` (if that event was seen), returned at `exit`.
    pub(super) fn vmclear_done(&mut self, queue: u64, entry: Option<u64>, exit: u64) {
        self.vmclear.record(exit.saturating_sub(queue));
        if let Some(entry) = entry.filter(|&e| e >= queue && e <= exit) {
            self.vmclear_delivery.record(entry - queue);
            self.vmclear_run.record(exit - entry);
        }
    }

    fn record(&mut self, d: u64, migrated: bool) {
        if migrated {
            self.migrated.record(d);
        } else {
            self.same.record(d);
        }
    }

    /// Matches a guest gap: the last switch-in inside the gap, with its switch-out also
    /// inside, means the gap was the scheduler's doing, not an exit to the VMM. Returns the
    /// switch-in's time, the resume latency and whether it migrated.
    fn gap(&mut self, g: &GuestGap) -> Option<(u64, u64, bool)> {
        let s = self
            .recent_ins
            .iter()
            .rev()
            .find(|s| s.ts <= g.end && s.ts > g.start)
            .copied()?;
        if s.prev_out < g.start || s.prev_out > s.ts {
            return None;
        }
        self.from_gap = true;
        let d = g.end - s.ts;
        self.record(d, s.migrated);
        self.to_out.record(s.prev_out - g.start);
        Some((s.ts, d, s.migrated))
    }

    pub(super) fn merge(&mut self, o: &ResumeTracker) {
        self.same.merge(&o.same);
        self.migrated.merge(&o.migrated);
        self.to_out.merge(&o.to_out);
        self.vmclear.merge(&o.vmclear);
        self.vmclear_delivery.merge(&o.vmclear_delivery);
        self.vmclear_run.merge(&o.vmclear_run);
        self.vmclear_calls = self.vmclear_calls.saturating_add(o.vmclear_calls);
        self.from_entry |= o.from_entry;
        self.from_gap |= o.from_gap;
    }

    pub(super) fn view(&self) -> ResumeLatency {
        let same_pcpu = self.same.percentiles();
        let migrated = self.migrated.percentiles();
        let (cost50, cost99) = if same_pcpu.count > 0 && migrated.count > 0 {
            (
                migrated.p50 as i64 - same_pcpu.p50 as i64,
                migrated.p99 as i64 - same_pcpu.p99 as i64,
            )
        } else {
            (0, 0)
        };
        let source = if self.from_entry {
            "kvm_entry"
        } else if self.from_gap {
            "guest_gap"
        } else {
            "none"
        };
        ResumeLatency {
            same_pcpu,
            migrated,
            to_switch_out: self.to_out.percentiles(),
            vmclear_calls: self.vmclear_calls,
            vmclear_explains: vmclear_share(
                &migrated,
                &same_pcpu,
                &self.vmclear,
                self.vmclear_calls,
            ),
            vmclear: self.vmclear.percentiles(),
            vmclear_delivery: self.vmclear_delivery.percentiles(),
            vmclear_run: self.vmclear_run.percentiles(),
            migration_cost_p50: cost50,
            migration_cost_p99: cost99,
            source: source.to_string(),
        }
    }
}

/// The part of the migrated-vs-same mean resume latency that VMCLEAR IPIs account for: the
/// time they took, spread over the migrated switch-ins, over the difference of the means. A
/// VT-x vCPU loaded on a new pCPU waits for its old pCPU's VMCLEAR before it can VMPTRLD, so
/// that wait sits inside its resume latency. Means, not percentiles: only means add up.
/// `None` without migrated and same-pCPU switch-ins, VMCLEARs, or a positive difference.
fn vmclear_share(
    migrated: &Percentiles,
    same: &Percentiles,
    vmclear: &Latency,
    calls: u64,
) -> Option<f64> {
    let clears = vmclear.percentiles();
    let difference = migrated.mean - same.mean;
    if migrated.count == 0 || same.count == 0 || clears.count == 0 || calls == 0 {
        return None;
    }
    if difference.is_nan() || difference <= 0.0 {
        return None;
    }
    // Calls whose exit was not seen still cost about the mean of those seen.
    let per_migration = clears.mean * calls as f64 / migrated.count as f64;
    Some(per_migration / difference)
}

impl Model {
    #[inline(never)]
    pub(super) fn on_guest_gap(&mut self, g: &GuestGap) {
        let Some(n) = self.slot(g.tid) else { return };
        if g.end < g.start {
            self.health.malformed = self.health.malformed.saturating_add(1);
            return;
        }
        self.health.saw_gap = true;
        let t = &mut self.tasks[n];
        t.clock.cum.gaps = t.clock.cum.gaps.saturating_add(1);
        t.clock.cum.gap_ns = t.clock.cum.gap_ns.saturating_add(g.end - g.start);
        let hit = if t.resume.from_entry {
            None
        } else {
            t.resume.gap(g)
        };
        let thread = n as u32;
        self.log.push(|| Transition::GuestGap {
            thread,
            start: g.start,
            end: g.end,
            matched: hit.is_some(),
        });
        if let Some((_, latency_ns, migrated)) = hit {
            self.log.push(|| Transition::Resume {
                ts: g.end,
                thread,
                latency_ns,
                migrated,
            });
        }
    }
}
