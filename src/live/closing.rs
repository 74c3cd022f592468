//! How a live session closes: the closing counter sample, the VMM stopped, the ring drained
//! to the end, the probes detached, and one closing event whose timestamp is the newest, with
//! every event left out after it counted.

use std::time::{Duration, Instant};

use anyhow::Context;
use model::{Event, GuestGap, ObservationEnd, VmEnded};

use super::{monotonic_ns, LiveSource};

impl LiveSource {
    /// Stop the VMM, drain what is left, detach the probes and report the end of every VM.
    pub(super) fn finish(&mut self, out: &mut Vec<Event>) -> anyhow::Result<()> {
        self.finished = true;
        self.tracking.take_events(out);
        // In counters mode observation ends with the closing sample, taken while the threads
        // still run (their /proc files go with them): the figures cover up to it exactly.
        let counters_close = self.kernel.counters.as_mut().map(|c| {
            c.tick(out, true);
            monotonic_ns()
        });
        let mut vmm_error = None;
        let bundled = self.vmm.is_some();
        if let Some(vmm) = self.vmm.take() {
            // Stop the guests first, so every exit they make is still seen by the probes.
            vmm.drain_gaps(&mut self.gaps);
            self.drain_affinity_changes(&vmm, out);
            self.note_gaps_lost(&vmm, out);
            match vmm.stop() {
                Ok(summary) => self.vmm_summary = Some(summary),
                Err(e) => vmm_error = Some(e),
            }
        }
        // Gaps that ended after a counters-mode close are after the observation: left out.
        let (gaps, late_gaps): (Vec<GuestGap>, Vec<GuestGap>) = self
            .gaps
            .drain(..)
            .partition(|g| counters_close.is_none_or(|c| g.end <= c));
        out.extend(gaps.into_iter().map(Event::GuestGap));
        self.dropped_after_close = late_gaps.len() as u64;
        if self.dropped_after_close > 0 {
            self.warnings.push(format!(
                "{} events stamped after the session's closing timestamp were left out \
                 (the final drain runs after it)",
                self.dropped_after_close
            ));
        }
        // Observation ends here: the model counts every tracked thread up to the closing
        // event's timestamp, which must be the newest so that it never arrives late.
        let stopped = monotonic_ns();
        let before = out.len();
        if let Some(p) = &mut self.kernel.probes {
            // The ring may still hold the last events (the VMM's final switches and exits).
            // One read is not enough: it stops at a record another CPU has reserved and not
            // yet committed, leaving the records behind it unread (sid under TCG: a vCPU's
            // last 3 exits missing from trace, 5742 against the VMM's 5745). Read until the
            // rings have caught up with the stop (`drain_done`).
            let began = Instant::now();
            loop {
                let before_read = out.len();
                p.poll(out, Duration::from_millis(20))
                    .context("cannot read the probes' ring buffer")?;
                if drain_done(&out[before_read..], stopped, began.elapsed()) {
                    break;
                }
            }
            if let Some(groups) = &mut self.task_groups {
                groups.note(out, before, hostfacts::task_group::task_group);
            }
            // Each read is in time order; the reads together are put back in order too.
            out[before..].sort_by_key(Event::ts);
        }
        let ts = counters_close.unwrap_or_else(|| closing_ts(stopped, &out[before..]));
        // Detach now, not at drop: the summary's lost count must be final.
        if let Some(mut p) = self.kernel.probes.take() {
            self.final_lost = p.lost_by_cause();
            p.take_exit_aggregates(&mut self.exit_aggregates);
            self.final_program_stats = p.program_stats();
            // Warnings raised while running (undecodable records, ...) belong in the summary.
            for w in p.warnings() {
                if !self.warnings.contains(w) {
                    self.warnings.push(w.clone());
                }
            }
            if p.undecodable() > 0 {
                self.warnings
                    .push(format!("{} records could not be decoded", p.undecodable()));
            }
            drop(p);
        }
        // The bundled VMM's guests were stopped above: they ended. Processes of others run
        // on; only our observation of them ends.
        let processes = self.tracking.take_processes();
        if bundled {
            for (pid, vm) in processes {
                out.push(Event::VmEnded(VmEnded { ts, pid, vm }));
            }
        } else {
            out.push(Event::ObservationEnd(ObservationEnd { ts }));
        }
        match vmm_error {
            Some(e) => Err(anyhow::Error::new(e).context("the bundled VMM failed")),
            None => Ok(()),
        }
    }
}

/// How long the final drain may keep reading a ring that is still being written.
const FINAL_DRAIN_MAX: Duration = Duration::from_secs(1);

/// Whether the final drain is done after a read brought `read`: it found nothing, or only
/// events stamped after the stop (the rings have caught up with it), or the bound has passed.
/// A target that keeps running (`--pid`, `--all-kvm`, `--qemu`) never leaves the rings empty:
/// reading until it did made every such session last the whole bound past `--duration`
/// (`report --pid P --duration 3` covered 4.1 s).
fn drain_done(read: &[Event], stopped: u64, elapsed: Duration) -> bool {
    read.iter().all(|e| e.ts() > stopped) || elapsed >= FINAL_DRAIN_MAX
}

/// The closing event's timestamp: when the source stopped, or the newest event of the final
/// drain if that is later. Every drained event is kept: those stamped after the stop used to
/// be dropped, uncounted: the final `Lost` records (stamped when read), and any event whose
/// CPU's clock ran ahead of the stopping thread's (the likely cause of `report`'s IOIO count
/// one short of the VMM's per vCPU, seen once on sid under multi-threaded TCG).
fn closing_ts(stopped: u64, final_drain: &[Event]) -> u64 {
    final_drain.iter().map(Event::ts).fold(stopped, u64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Lost;

    #[test]
    fn the_closing_event_is_the_newest_and_nothing_drained_is_dropped() {
        let lost = |ts| {
            Event::Lost(Lost {
                ts,
                cpu: 0,
                count: 1,
            })
        };
        assert_eq!(closing_ts(100, &[]), 100);
        assert_eq!(closing_ts(100, &[lost(40), lost(90)]), 100);
        // Stamped after the stop (read later, or another CPU's clock ahead): kept, and the
        // closing event moves after it so that it never arrives late.
        assert_eq!(closing_ts(100, &[lost(40), lost(130), lost(120)]), 130);
    }

    #[test]
    fn the_final_drain_ends_once_the_rings_have_caught_up_with_the_stop() {
        let lost = |ts| {
            Event::Lost(Lost {
                ts,
                cpu: 0,
                count: 1,
            })
        };
        let soon = Duration::from_millis(40);
        assert!(drain_done(&[], 100, soon), "nothing left");
        assert!(
            !drain_done(&[lost(130), lost(90)], 100, soon),
            "events from before the stop: read on"
        );
        // A running target's events of after the stop: the rings are past it.
        assert!(drain_done(&[lost(101), lost(130)], 100, soon));
        assert!(drain_done(&[lost(90)], 100, FINAL_DRAIN_MAX), "bounded");
    }
}
