//! pCPU lanes: who holds each pCPU over time, who waits in its run queue, the occupancy
//! that follows, and the attribution of every tracked thread's wait to whoever ran.

use std::collections::VecDeque;

use super::owner::{Owner, OwnerTime};
use super::Model;

/// Distinct culprits remembered per waiting thread; the rest are folded into one bucket.
const MAX_CULPRITS: usize = 32;

/// One stretch of a pCPU's lane: one owner, a constant run-queue length.
#[derive(Clone, Copy)]
pub(super) struct Seg {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) owner: Owner,
    pub(super) waiting: u32,
}

/// One pCPU.
#[derive(Clone, Default)]
pub(super) struct Cpu {
    /// A switch has been seen here (owner and `since` are known).
    pub(super) seen: bool,
    pub(super) first_ts: u64,
    /// Start of the open segment.
    pub(super) since: u64,
    pub(super) owner: Owner,
    pub(super) cur_tid: u32,
    /// Last event from this pCPU (where lost events start).
    pub(super) last_event_ts: u64,
    /// Slots of the tracked threads waiting in its run queue.
    pub(super) waiting: Vec<u32>,
    /// Closed time per owner (the open segment excluded).
    pub(super) time: OwnerTime,
    pub(super) lane: VecDeque<Seg>,
}

impl Model {
    /// Closes the running segment of `cpu` at `ts`: occupancy, lane, wait attribution.
    pub(super) fn close_segment(&mut self, cpu: u32, ts: u64) {
        let Some(c) = self.cpus.get_mut(cpu as usize) else {
            return;
        };
        if !c.seen {
            return;
        }
        let start = c.since;
        let dur = ts.saturating_sub(start);
        let owner = c.owner;
        if dur > 0 {
            c.time.add(owner, dur, &self.tasks);
            let waiting = c.waiting.len() as u32;
            match c.lane.back_mut() {
                Some(last)
                    if last.owner == owner && last.waiting == waiting && last.end == start =>
                {
                    last.end = ts;
                }
                _ => c.lane.push_back(Seg {
                    start,
                    end: ts,
                    owner,
                    waiting,
                }),
            }
            let horizon = ts.saturating_sub(self.cfg.history_ns);
            while c.lane.len() > self.cfg.max_lane_segments
                || c.lane.front().is_some_and(|s| s.end < horizon)
            {
                c.lane.pop_front();
            }
            // Everyone waiting in this run queue was kept waiting by `owner`.
            for &w in &c.waiting {
                let Some(t) = self.tasks.get_mut(w as usize) else {
                    continue;
                };
                let from = start.max(t.since);
                let d = ts.saturating_sub(from);
                if d == 0 {
                    continue;
                }
                add_culprit(&mut t.culprits, owner, d);
            }
        }
        c.since = ts;
    }

    pub(super) fn remove_waiting(&mut self, slot: usize) {
        let Some(t) = self.tasks.get(slot) else {
            return;
        };
        if let Some(c) = self.cpus.get_mut(t.cpu as usize) {
            if let Some(p) = c.waiting.iter().position(|&w| w as usize == slot) {
                c.waiting.swap_remove(p);
                return;
            }
        }
        // Not where we thought (lost events): search every queue.
        for c in &mut self.cpus {
            if let Some(p) = c.waiting.iter().position(|&w| w as usize == slot) {
                c.waiting.swap_remove(p);
                return;
            }
        }
    }

    pub(super) fn add_waiting(&mut self, slot: usize, cpu: u32) {
        if let Some(c) = self.cpu_mut(cpu) {
            c.waiting.push(slot as u32);
        }
    }

    /// Fraction of pCPU `cpu`'s observed time not taken by untracked tasks: what tracked
    /// threads could have shared.
    pub(super) fn tracked_capacity(&self, cpu: u32) -> f64 {
        let Some(c) = self.cpus.get(cpu as usize).filter(|c| c.seen) else {
            return 1.0;
        };
        let mut others = c.time.others();
        let open = self.now.saturating_sub(c.since);
        let total = c.time.total().saturating_add(open);
        if matches!(c.owner, Owner::Other(_)) {
            others = others.saturating_add(open);
        }
        if total == 0 {
            1.0
        } else {
            1.0 - others as f64 / total as f64
        }
    }
}

fn add_culprit(list: &mut Vec<(Owner, u64)>, owner: Owner, d: u64) {
    if let Some(e) = list.iter_mut().find(|e| e.0 == owner) {
        e.1 = e.1.saturating_add(d);
    } else if list.len() < MAX_CULPRITS {
        list.push((owner, d));
    } else if let Some(e) = list.last_mut() {
        // Past the cap the smallest bucket absorbs the rest; totals stay right.
        e.1 = e.1.saturating_add(d);
    }
}
