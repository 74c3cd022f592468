//! The bundled VMM's own records joining the live stream: guest gaps, affinity changes, and
//! the gap records it lost (as `Lost`), plus a guest crash as the session's error.

use model::{Event, Lost};

use super::{monotonic_ns, LiveSource};

impl LiveSource {
    /// Move the VMM's new guest gaps into `out`; fail on a guest crash.
    pub(super) fn drain_vmm(&mut self, out: &mut Vec<Event>) -> anyhow::Result<()> {
        let Some(vmm) = self.vmm.take() else {
            return Ok(());
        };
        vmm.drain_gaps(&mut self.gaps);
        out.extend(self.gaps.drain(..).map(Event::GuestGap));
        self.drain_affinity_changes(&vmm, out);
        self.note_gaps_lost(&vmm, out);
        if let Some(failure) = vmm.failure() {
            // Stop the other vCPUs now (the VMM already has); the summary is of no use.
            self.finished = true;
            drop(vmm);
            return Err(anyhow::Error::new(failure).context("the bundled VMM failed"));
        }
        self.vmm = Some(vmm);
        Ok(())
    }

    /// The bundled VMM's affinity rotation, as `Affinity` events of the threads tracked.
    pub(super) fn drain_affinity_changes(&mut self, vmm: &vmm::RunningVmm, out: &mut Vec<Event>) {
        let mut changes = Vec::new();
        vmm.drain_affinity_changes(&mut changes);
        out.extend(
            changes
                .into_iter()
                .filter(|a| self.tracking.is_tracked(a.tid))
                .map(Event::Affinity),
        );
        let dropped = vmm.affinity_changes_dropped();
        if dropped > 0 && !self.warnings.iter().any(|w| w.contains("affinity changes")) {
            self.warnings.push(format!(
                "at least {dropped} affinity changes of the bundled VMM were left out (drained too \
                 late): a replay of this recording places those vCPUs by older affinities"
            ));
        }
    }
    /// Guest-gap records the VMM could not keep (ring overruns) become `Lost` events, so a
    /// gap count is never silently short.
    pub(super) fn note_gaps_lost(&mut self, vmm: &vmm::RunningVmm, out: &mut Vec<Event>) {
        let total = vmm.gaps_lost();
        if total > self.gaps_lost {
            out.push(Event::Lost(Lost {
                ts: monotonic_ns(),
                cpu: u32::MAX,
                count: total - self.gaps_lost,
            }));
            self.gaps_lost = total;
        }
    }
}
