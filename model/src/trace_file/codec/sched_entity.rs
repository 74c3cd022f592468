//! A [`SchedEntity`] carried by a switch: one flag byte, then the fields that changed, each as
//! a residual from what the tid's previous entity and the scheduler's own arithmetic predict.

use super::state::{exec_from_vruntime, predicted_deadline};
use super::{ChunkDecoder, ChunkEncoder, DResult, DecodeError, SE, TAG};
use crate::event::SchedEntity;

/// The weight is the tid's previous one.
const WEIGHT_SAME: u8 = 1;
const HAS_DEADLINE: u8 = 2;
const HAS_VLAG: u8 = 4;
const HAS_SLICE: u8 = 8;
/// The slice is the tid's previous one (only with [`HAS_SLICE`]).
const SLICE_SAME: u8 = 16;
/// The deadline is `vruntime + slice * 1024 / weight` (only with [`HAS_DEADLINE`]).
const DEADLINE_PREDICTED: u8 = 32;
/// Alone: the whole entity equals the tid's previous one, nothing follows.
const UNCHANGED: u8 = 64;
/// A `run_delay` residual ends the entity. Files written before run_delay existed never set
/// it, so they still read; older readers never misread it, but skip the chunk that holds it
/// as corrupt ("unknown sched entity flags"), hence format version 2.
const HAS_RUN_DELAY: u8 = 128;

impl ChunkEncoder {
    pub(super) fn sched_entity(&mut self, tid: u32, se: &SchedEntity) {
        let old = self.st.memo(tid).se;
        if *se == old {
            // The usual switch-in: nothing changed while the task was off the CPU.
            self.byte(TAG, UNCHANGED);
            return;
        }
        let mut flags = 0u8;
        if se.weight == old.weight {
            flags |= WEIGHT_SAME;
        }
        if se.deadline.is_some() {
            flags |= HAS_DEADLINE;
        }
        if se.vlag.is_some() {
            flags |= HAS_VLAG;
        }
        if se.slice.is_some() {
            flags |= HAS_SLICE;
            if se.slice == old.slice {
                flags |= SLICE_SAME;
            }
        }
        let predicted = predicted_deadline(se.vruntime, se.slice, se.weight);
        if se.deadline.is_some() && se.deadline == predicted {
            flags |= DEADLINE_PREDICTED;
        }
        if se.run_delay.is_some() {
            flags |= HAS_RUN_DELAY;
        }
        self.byte(TAG, flags);
        if flags & WEIGHT_SAME == 0 {
            self.u(SE, se.weight as u64);
        }
        let vr_delta = se.vruntime.wrapping_sub(old.vruntime) as i64;
        self.i(SE, vr_delta);
        let exec_delta = se.sum_exec_runtime.wrapping_sub(old.sum_exec_runtime) as i64;
        self.i(
            SE,
            exec_delta.wrapping_sub(exec_from_vruntime(vr_delta, se.weight)),
        );
        if let Some(l) = se.vlag {
            self.i(SE, l);
        }
        if let (Some(s), true) = (se.slice, flags & SLICE_SAME == 0) {
            self.u(SE, s);
        }
        if let (Some(d), true) = (se.deadline, flags & DEADLINE_PREDICTED == 0) {
            self.i(
                SE,
                d.wrapping_sub(old.deadline.unwrap_or(se.vruntime)) as i64,
            );
        }
        if let Some(r) = se.run_delay {
            let predicted = self.st.predicted_run_delay(tid);
            self.i(SE, r.wrapping_sub(predicted) as i64);
        }
        self.st.memo_mut(tid).se = *se;
    }
}

impl ChunkDecoder<'_> {
    pub(super) fn sched_entity(&mut self, tid: u32) -> DResult<SchedEntity> {
        let old = self.st.memo(tid).se;
        let flags = self.byte(TAG)?;
        if flags == UNCHANGED {
            return Ok(old);
        }
        let known = WEIGHT_SAME
            | HAS_DEADLINE
            | HAS_VLAG
            | HAS_SLICE
            | SLICE_SAME
            | DEADLINE_PREDICTED
            | HAS_RUN_DELAY;
        if flags & !known != 0 || (flags & DEADLINE_PREDICTED != 0 && flags & HAS_DEADLINE == 0) {
            return Err(DecodeError("unknown sched entity flags"));
        }
        let weight = if flags & WEIGHT_SAME != 0 {
            old.weight
        } else {
            self.u32(SE)?
        };
        let vr_delta = self.i(SE)?;
        let vruntime = old.vruntime.wrapping_add(vr_delta as u64);
        let exec_delta = self
            .i(SE)?
            .wrapping_add(exec_from_vruntime(vr_delta, weight));
        let sum_exec_runtime = old.sum_exec_runtime.wrapping_add(exec_delta as u64);
        let vlag = if flags & HAS_VLAG != 0 {
            Some(self.i(SE)?)
        } else {
            None
        };
        let slice = match (flags & HAS_SLICE != 0, flags & SLICE_SAME != 0) {
            (false, false) => None,
            (false, true) => return Err(DecodeError("slice flags")),
            (true, true) => Some(old.slice.ok_or(DecodeError("no previous slice"))?),
            (true, false) => Some(self.u(SE)?),
        };
        let deadline = match (flags & HAS_DEADLINE != 0, flags & DEADLINE_PREDICTED != 0) {
            (false, _) => None,
            (true, true) => Some(
                predicted_deadline(vruntime, slice, weight)
                    .ok_or(DecodeError("deadline predicted without a slice"))?,
            ),
            (true, false) => Some(
                old.deadline
                    .unwrap_or(vruntime)
                    .wrapping_add(self.i(SE)? as u64),
            ),
        };
        let run_delay = if flags & HAS_RUN_DELAY != 0 {
            let predicted = self.st.predicted_run_delay(tid);
            Some(predicted.wrapping_add(self.i(SE)? as u64))
        } else {
            None
        };
        let se = SchedEntity {
            vruntime,
            weight,
            sum_exec_runtime,
            deadline,
            vlag,
            slice,
            run_delay,
        };
        self.st.memo_mut(tid).se = se;
        Ok(se)
    }
}
