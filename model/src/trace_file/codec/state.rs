//! What encoder and decoder both remember within one chunk, and the predictions they make from
//! it. Both sides update it identically after every event, so a prediction the encoder relies
//! on is always the one the decoder reproduces.

use rustc_hash::FxHashMap;

use crate::event::{Comm, CounterSample, SchedEntity};

/// What the coder remembers about one tid within a chunk.
#[derive(Clone, Copy, Default)]
pub(super) struct TidMemo {
    pub(super) pid: u32,
    pub(super) comm: Comm,
    pub(super) se: SchedEntity,
    pub(super) vcpu_id: u32,
    /// Last port I/O (rw, port, size, val): guests repeat the same OUT.
    pub(super) pio: (u32, u32, u32, u32),
    /// VM and vCPU index of this tid's last guest gap.
    pub(super) gap_owner: (u32, u32),
    /// This tid's last counter sample (the next is coded as deltas from it).
    pub(super) sample: CounterSample,
    /// When it last became runnable off-CPU (preempted or woken), 0 if not waiting.
    queued_at: u64,
    /// Run-queue wait seen in the stream since its last `run_delay` was coded: the kernel adds
    /// just that to `run_delay`, give or take the µs its clock starts before the tracepoint.
    waited: u64,
}

/// State shared (mirrored) by encoder and decoder; reset at every chunk. Maps use the Fx
/// hasher: tids and CPUs are not attacker-chosen keys worth SipHash's cost on every event.
#[derive(Default)]
pub(super) struct CoderState {
    pub(super) prev_ts: u64,
    /// Guest gaps arrive in batches from the VMM, out of step with kernel events: they get
    /// their own time base so they neither pay for nor cause big jumps in `prev_ts`.
    pub(super) prev_gap_end: u64,
    tids: FxHashMap<u32, TidMemo>,
    /// What an unseen tid reads as.
    unseen: TidMemo,
    /// Task last switched in on each CPU.
    pub(super) current: FxHashMap<u32, u32>,
    /// Decoder: comm table by index. Encoder: unused.
    pub(super) comm_list: Vec<Comm>,
    /// Encoder: comm table by value.
    pub(super) comm_index: FxHashMap<Comm, u32>,
    /// Task-group names of the chunk, by first appearance (a name is written once a chunk).
    pub(super) group_list: Vec<String>,
    pub(super) group_index: FxHashMap<String, u32>,
}

impl CoderState {
    pub(super) fn memo(&self, tid: u32) -> &TidMemo {
        self.tids.get(&tid).unwrap_or(&self.unseen)
    }
    pub(super) fn memo_mut(&mut self, tid: u32) -> &mut TidMemo {
        self.tids.entry(tid).or_default()
    }
    pub(super) fn current(&self, cpu: u32) -> u32 {
        self.current.get(&cpu).copied().unwrap_or(0)
    }
    /// After a switch is coded: what it says about waits, for the `run_delay` prediction.
    pub(super) fn note_switch(
        &mut self,
        ts: u64,
        prev_tid: u32,
        prev_runnable: bool,
        next_tid: u32,
    ) {
        self.memo_mut(prev_tid).queued_at = if prev_runnable { ts } else { 0 };
        let m = self.memo_mut(next_tid);
        if m.queued_at != 0 {
            m.waited = m.waited.wrapping_add(ts.wrapping_sub(m.queued_at));
        }
        m.queued_at = 0;
    }
    pub(super) fn note_wakeup(&mut self, ts: u64, tid: u32) {
        let m = self.memo_mut(tid);
        if m.queued_at == 0 {
            m.queued_at = ts;
        }
    }
    /// The `run_delay` a coded sched entity is predicted to carry; the residual is stored.
    pub(super) fn predicted_run_delay(&mut self, tid: u32) -> u64 {
        let m = self.memo_mut(tid);
        let p = m.se.run_delay.unwrap_or(0).wrapping_add(m.waited);
        m.waited = 0;
        p
    }
}

/// The run time a vruntime advance implies: the scheduler advances vruntime by
/// `delta_exec * 1024 / weight`, so for a nice-0 task the two deltas are equal and the
/// residual stored is 0. Wrapping integer arithmetic, identical in encoder and decoder.
pub(super) fn exec_from_vruntime(vr_delta: i64, weight: u32) -> i64 {
    if weight == 1024 || weight == 0 {
        return vr_delta;
    }
    (vr_delta as i128 * weight as i128 / 1024) as i64
}

/// EEVDF sets `deadline = vruntime + slice * 1024 / weight` when it picks a new slice, so
/// the deadline usually costs one flag bit.
pub(super) fn predicted_deadline(vruntime: u64, slice: Option<u64>, weight: u32) -> Option<u64> {
    let slice = slice?;
    let scaled = if weight == 1024 || weight == 0 {
        slice
    } else {
        (slice as u128 * 1024 / weight as u128) as u64
    };
    Some(vruntime.wrapping_add(scaled))
}
