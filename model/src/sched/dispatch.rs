//! Dispatch: events enter through the reorder window (guest gaps through their own queue),
//! leave it in timestamp order, and go to the handler of their kind.

use super::clocks::CHECKPOINT_NS;
use super::Model;
use crate::{Event, GuestGap};

/// Guest gaps held until the kernel events catch up; past this the oldest is matched early.
const MAX_QUEUED_GAPS: usize = 65_536;

impl Model {
    /// Adds one event. It takes effect once the reorder window has passed it.
    pub fn ingest(&mut self, ev: &Event) {
        self.events = self.events.saturating_add(1);
        self.ingest_one(ev);
    }

    fn ingest_one(&mut self, ev: &Event) {
        if let Event::GuestGap(g) = ev {
            self.queue_gap(*g);
            return;
        }
        if ev.ts() < self.now {
            self.apply_late(ev);
            return;
        }
        self.reorder.push(ev.clone());
        self.release(self.reorder.watermark());
    }

    /// Adds a batch; same result as [`Model::ingest`] on each event in turn. While the batch
    /// is in timestamp order after what is buffered (the usual case), its not-yet-released
    /// events stay in the caller's slice, behind the buffer, instead of being copied through
    /// it; only the batch's newest `reorder_window_ns` is copied at the end.
    pub fn ingest_batch(&mut self, evs: &[Event]) {
        self.events = self.events.saturating_add(evs.len() as u64);
        // evs[pending..k] are in order (guest gaps aside), after everything buffered, and not
        // yet applied; `run_last` is the newest timestamp among them.
        let mut pending = 0;
        let mut run_last = 0u64;
        for (k, ev) in evs.iter().enumerate() {
            prefetch(evs.get(k + PREFETCH_AHEAD));
            if let Event::GuestGap(g) = ev {
                // Queued now, as `ingest` would: the model already holds exactly what `ingest`
                // would have released by this point, and gaps never enter the reorder buffer.
                // The loops below skip it when they reach it in the slice.
                self.queue_gap(*g);
                if pending == k {
                    pending = k + 1;
                }
                continue;
            }
            let ts = ev.ts();
            let in_run = if pending == k {
                ts >= self.now && self.reorder.back_ts().is_none_or(|b| b <= ts)
            } else {
                run_last <= ts
            };
            if in_run {
                run_last = ts;
                self.reorder.note_ts(ts);
                let wm = self.reorder.watermark();
                // Guest gaps are matched only once everything up to the watermark is in,
                // the batch's own pending events included, exactly as `ingest` matches them
                // after a release: draining between the buffer and the slice would match a
                // gap before a same-timestamp event still in the slice (its TaskInfo, say).
                self.release_held(wm);
                if self.reorder.is_empty() {
                    while pending <= k {
                        let e = &evs[pending];
                        if matches!(e, Event::GuestGap(_)) {
                            // Already queued when the loop above met it.
                        } else if e.ts() <= wm {
                            self.apply(e);
                        } else {
                            break;
                        }
                        pending += 1;
                    }
                }
                self.drain_gaps();
                continue;
            }
            for e in &evs[pending..k] {
                self.hold(e);
            }
            pending = k + 1;
            self.ingest_one(ev);
        }
        for e in &evs[pending..] {
            self.hold(e);
        }
    }

    /// Puts a kernel event of the batch in the reorder buffer (its guest gaps were queued
    /// when the batch loop met them).
    fn hold(&mut self, e: &Event) {
        if !matches!(e, Event::GuestGap(_)) {
            self.reorder.push(e.clone());
        }
    }

    /// Guest gaps come from the VMM, not the kernel ring, so they run ahead of or behind the
    /// kernel events by tens of ms. They must not move the reorder watermark; each is matched
    /// once the kernel events up to its end (its switch-in) have been folded in.
    fn queue_gap(&mut self, g: GuestGap) {
        if self.gaps.len() >= MAX_QUEUED_GAPS {
            if let Some(old) = self.gaps.pop_front() {
                self.on_guest_gap(&old);
            }
        }
        self.gaps.push_back(g);
        self.drain_gaps();
    }

    fn drain_gaps(&mut self) {
        while let Some(g) = self.gaps.front() {
            if g.end > self.now {
                break;
            }
            if let Some(g) = self.gaps.pop_front() {
                self.on_guest_gap(&g);
            }
        }
    }

    /// End of stream: folds in everything still held in the reorder window.
    pub fn finish(&mut self) {
        self.release(u64::MAX);
        while let Some(g) = self.gaps.pop_front() {
            self.on_guest_gap(&g);
        }
        self.fold_aggregates(&crate::ExitAggregates::default());
        self.drop_waiting_aggs();
    }

    fn release(&mut self, limit: u64) {
        if self.release_held(limit) && !self.gaps.is_empty() {
            self.drain_gaps();
        }
    }

    /// Applies the buffered events up to `limit`; true when there were any.
    fn release_held(&mut self, limit: u64) -> bool {
        let mut any = false;
        while let Some(ev) = self.reorder.pop_upto(limit) {
            self.apply(&ev);
            any = true;
        }
        any
    }

    /// An event older than what was already folded in: count it and fold it in at "now" so
    /// that state transitions are not lost. (Guest gaps never come here: see `queue_gap`.)
    #[inline(never)]
    fn apply_late(&mut self, ev: &Event) {
        self.health.out_of_order = self.health.out_of_order.saturating_add(1);
        if !self.health.late_kinds.contains(&ev.kind()) {
            self.health.late_kinds.push(ev.kind());
        }
        let mut e = ev.clone();
        e.restamp(self.now);
        self.apply(&e);
    }

    /// Folds one event in. Most events are small (exits, port I/O); the large, rarer
    /// handlers are `#[inline(never)]` so this stays a small function on the hot path.
    fn apply(&mut self, ev: &Event) {
        let ts = ev.ts();
        if self.start.is_none() {
            self.start = Some(ts);
            self.next_checkpoint = ts.saturating_add(CHECKPOINT_NS);
        }
        if ts >= self.next_checkpoint {
            self.checkpoints_upto(ts);
        }
        if ts > self.now {
            self.now = ts;
        }
        match ev {
            Event::SchedSwitch(s) => self.on_switch(s),
            Event::Wakeup(w) => self.on_wakeup(w),
            Event::Migrate(m) => self.on_migrate(m),
            Event::TaskExit(x) => self.on_task_exit(x),
            Event::KvmEntry(e) => self.on_kvm_entry(e),
            Event::KvmExit(e) => self.on_kvm_exit(e),
            Event::UserspaceExit(e) => self.on_userspace_exit(e),
            Event::Pio(p) => {
                if let Some(c) = self.cpu_mut(p.cpu) {
                    c.last_event_ts = p.ts;
                }
            }
            Event::CrossCall(c) => self.on_cross_call(c),
            Event::GuestGap(g) => self.on_guest_gap(g),
            Event::Lost(l) => self.on_lost(l),
            Event::Unobserved(u) => self.on_unobserved(u),
            Event::TaskInfo(t) => self.on_task_info(t),
            Event::VmEnded(v) => self.on_vm_ended(v),
            // Moving `now` up to it (above) is all it does.
            Event::ObservationEnd(_) => {}
            Event::CounterSample(s) => self.on_counter_sample(s),
            Event::Affinity(a) => self.on_affinity(a),
            Event::TaskGroup(g) => self.on_task_group(g),
        }
    }

    /// Records every thread's cumulative counters at each 100 ms boundary of event time up to
    /// `ts`. Called before the event at `ts` is applied, so every thread's state is constant
    /// since its last event and the counters at each boundary are exact.
    #[inline(never)]
    fn checkpoints_upto(&mut self, ts: u64) {
        let keep = (self.cfg.history_ns / CHECKPOINT_NS).clamp(11, 1000) as usize + 1;
        let span = CHECKPOINT_NS * keep as u64;
        // Only the newest `keep` boundaries can matter; jump over long silences.
        let behind = ts.saturating_sub(self.next_checkpoint);
        if behind > span {
            let skip = (behind - span) / CHECKPOINT_NS;
            self.next_checkpoint = self
                .next_checkpoint
                .saturating_add(skip.saturating_mul(CHECKPOINT_NS));
        }
        while self.next_checkpoint <= ts {
            let b = self.next_checkpoint;
            for t in &mut self.tasks {
                if t.vacant
                    || t.first_seen > b
                    || t.ended_at.is_some_and(|e| e < b.saturating_sub(span))
                {
                    continue;
                }
                let c = t.cum_at(b);
                t.clock.checkpoint(b, c, keep);
            }
            self.next_checkpoint = b.saturating_add(CHECKPOINT_NS);
            if self.next_checkpoint == u64::MAX {
                break;
            }
        }
        if let Some(after) = self.cfg.retire_ended_after_ns {
            self.retire_ended_before(ts.saturating_sub(after));
        }
    }
}

/// Events are ~200 bytes: fetching a few ahead hides the memory latency the per-event work
/// would otherwise wait on (the stream is read once, front to back). Fetching the whole state
/// of the threads an event 8 ahead touches (~1 KiB each) was tried at 512 vCPUs (#15): 10%
/// slower, warm and cold. Prefetching also the event the apply loop reaches next (a reorder
/// window behind the scan, which read its first line last) gained nothing either (#15).
const PREFETCH_AHEAD: usize = 16;

#[inline(always)]
fn prefetch(ev: Option<&Event>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(ev) = ev {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (ev as *const Event).cast::<i8>();
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is only a hint: it never
        // faults or reads into the program, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ev;
}
