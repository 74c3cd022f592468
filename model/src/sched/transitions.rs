//! The transition log: what the model applied, for sinks that read changes rather than
//! snapshots (see [`crate::transition`]). Off unless a sink asks for it, so the dashboard and
//! `report` pay one predictable branch per change.

use super::Model;
use crate::{Transition, VcpuState};

#[derive(Clone, Default)]
pub(super) struct TransitionLog {
    on: bool,
    buf: Vec<Transition>,
}

impl TransitionLog {
    #[inline]
    pub(super) fn push(&mut self, t: impl FnOnce() -> Transition) {
        if self.on {
            self.buf.push(t());
        }
    }

    #[inline]
    pub(super) fn state(&mut self, ts: u64, thread: usize, state: VcpuState, pcpu: Option<u32>) {
        self.push(|| Transition::State {
            ts,
            thread: thread as u32,
            state,
            pcpu,
        });
    }
}

impl Model {
    /// Starts (or stops) logging [`Transition`]s; they accumulate until taken.
    pub fn record_transitions(&mut self, on: bool) {
        self.log.on = on;
        if !on {
            self.log.buf = Vec::new();
        }
    }

    /// Moves the transitions logged so far to the end of `out`.
    pub fn take_transitions(&mut self, out: &mut Vec<Transition>) {
        out.append(&mut self.log.buf);
    }
}
