//! The tracked-thread filter: [`Probes::track`] / [`Probes::untrack`] over the kernel's
//! bitmap of tids (`tracked` in kvmscope.bpf.c), of which this process is the only writer.

use aya::maps::{Array, MapData};
use aya::Ebpf;

use super::object::take_map;
use super::options::{load_error, ProbeError};
use super::Probes;

/// One bit per possible tid.
pub(super) struct TrackedSet {
    bitmap: Array<MapData, u64>,
}

impl TrackedSet {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<TrackedSet, ProbeError> {
        let bitmap = Array::try_from(take_map(ebpf, "tracked")?)
            .map_err(|e| load_error(format!("tracked map: {e}")))?;
        Ok(TrackedSet { bitmap })
    }

    fn set(&mut self, tid: u32, on: bool) -> Result<(), ProbeError> {
        let (slot, bit) = (tid / 64, 1u64 << (tid % 64));
        let fail = |reason: String| ProbeError::Track { tid, reason };
        let bits = self.bitmap.get(&slot, 0).map_err(|e| fail(e.to_string()))?;
        let new = if on { bits | bit } else { bits & !bit };
        if new != bits {
            self.bitmap
                .set(slot, new, 0)
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    fn covers(&self, tid: u32) -> Result<(), ProbeError> {
        if tid / 64 >= self.bitmap.len() {
            return Err(ProbeError::Track {
                tid,
                reason: format!("tid is above kernel.pid_max ({})", self.bitmap.len() * 64),
            });
        }
        Ok(())
    }
}

impl Probes {
    /// Report events of thread `tid` from now on.
    pub fn track(&mut self, tid: u32) -> Result<(), ProbeError> {
        if tid == 0 {
            return Err(ProbeError::Track {
                tid,
                reason: "tid 0 is the idle task".into(),
            });
        }
        self.set_tracked(tid, true)
    }

    /// Stop reporting events of `tid`. Untracking a thread that is not tracked is fine.
    /// Call it once the thread has ended (tids are reused): with exit aggregation the next
    /// poll reads its last counts and then deletes its keys from the kernel's maps.
    pub fn untrack(&mut self, tid: u32) -> Result<(), ProbeError> {
        self.set_tracked(tid, false)
    }

    fn set_tracked(&mut self, tid: u32, on: bool) -> Result<(), ProbeError> {
        self.tracked.covers(tid)?;
        // Like the drain's reads: a bpf() map call raises bpf_prog_active on this CPU, and a
        // traced thread that preempted it here would have its kvm tracepoint runs skipped.
        // The exit aggregates' per-thread entry is deleted under it too (a hash map delete,
        // made while the thread's VM may still run other vCPUs), and a reused tid's old keys
        // read and deleted.
        let _guard = self.raise_priority();
        if on {
            // Before its bit is set: the kernel counts nothing for the tid meanwhile.
            if let Some(a) = &mut self.exit_aggs {
                a.before_track(tid, &mut self.exit_aggs_read)
                    .map_err(ProbeError::ExitAggs)?;
            }
            return self.tracked.set(tid, true);
        }
        let cleared = self.tracked.set(tid, false);
        // After its bit is cleared: the kernel starts no new count for the thread.
        if let Some(a) = &mut self.exit_aggs {
            a.forget(tid);
        }
        cleared
    }
}
