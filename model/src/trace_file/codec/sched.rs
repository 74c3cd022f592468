//! Scheduler events: switch, wakeup, migration, task exit. Each kind's encode and decode sit
//! side by side; a flag bit says a field is predicted from the coder state instead of stored.

use super::{ChunkDecoder, ChunkEncoder, DResult, DecodeError, ID, TAG, VAL};
use super::{K_MIGRATE, K_SCHED_SWITCH, K_TASK_EXIT, K_WAKEUP};
use crate::event::{Migrate, SchedSwitch, TaskExit, Wakeup};
use crate::TaskState;

/// `prev_tid` is the task last switched in on this CPU.
const SWITCH_PREV_IS_CURRENT: u8 = 1;
const SWITCH_PREV_PID_SAME: u8 = 2;
const SWITCH_PREV_COMM_SAME: u8 = 4;
const SWITCH_NEXT_PID_SAME: u8 = 8;
const SWITCH_NEXT_COMM_SAME: u8 = 16;
const SWITCH_HAS_PREV_SE: u8 = 32;
const SWITCH_HAS_NEXT_SE: u8 = 64;
/// `prev_state` is 0 (preempted while running), the common case.
const SWITCH_PREV_STATE_ZERO: u8 = 128;

const WAKEUP_PID_SAME: u8 = 1;
/// The target CPU is the CPU the wakeup ran on.
const WAKEUP_TARGET_IS_CPU: u8 = 2;
/// The waker is the task current on the CPU.
const WAKEUP_WAKER_IS_CURRENT: u8 = 4;

impl ChunkEncoder {
    pub(super) fn sched_switch(&mut self, e: &SchedSwitch) {
        let prev = self.st.memo(e.prev_tid);
        let mut flags = 0u8;
        if e.prev_tid == self.st.current(e.cpu) {
            flags |= SWITCH_PREV_IS_CURRENT;
        }
        if e.prev_pid == prev.pid {
            flags |= SWITCH_PREV_PID_SAME;
        }
        if e.prev_comm == prev.comm {
            flags |= SWITCH_PREV_COMM_SAME;
        }
        if e.prev_se.is_some() {
            flags |= SWITCH_HAS_PREV_SE;
        }
        if e.next_se.is_some() {
            flags |= SWITCH_HAS_NEXT_SE;
        }
        if e.prev_state == 0 {
            flags |= SWITCH_PREV_STATE_ZERO;
        }
        // next's memo is read after prev's is updated: prev and next may be one tid.
        self.tag(K_SCHED_SWITCH, Some(e.cpu));
        self.ts(e.ts);
        {
            let m = self.st.memo_mut(e.prev_tid);
            m.pid = e.prev_pid;
            m.comm = e.prev_comm;
        }
        let next = self.st.memo(e.next_tid);
        if e.next_pid == next.pid {
            flags |= SWITCH_NEXT_PID_SAME;
        }
        if e.next_comm == next.comm {
            flags |= SWITCH_NEXT_COMM_SAME;
        }
        self.byte(TAG, flags);
        if flags & SWITCH_PREV_IS_CURRENT == 0 {
            self.u(ID, e.prev_tid as u64);
        }
        if flags & SWITCH_PREV_PID_SAME == 0 {
            self.u(ID, e.prev_pid as u64);
        }
        if flags & SWITCH_PREV_COMM_SAME == 0 {
            self.comm(&e.prev_comm);
        }
        if flags & SWITCH_PREV_STATE_ZERO == 0 {
            self.u(VAL, e.prev_state);
        }
        self.u(ID, e.next_tid as u64);
        if flags & SWITCH_NEXT_PID_SAME == 0 {
            self.u(ID, e.next_pid as u64);
        }
        if flags & SWITCH_NEXT_COMM_SAME == 0 {
            self.comm(&e.next_comm);
        }
        {
            let m = self.st.memo_mut(e.next_tid);
            m.pid = e.next_pid;
            m.comm = e.next_comm;
        }
        if let Some(se) = &e.prev_se {
            self.sched_entity(e.prev_tid, se);
        }
        if let Some(se) = &e.next_se {
            self.sched_entity(e.next_tid, se);
        }
        self.st
            .note_switch(e.ts, e.prev_tid, e.prev_preempted(), e.next_tid);
        self.st.current.insert(e.cpu, e.next_tid);
    }

    pub(super) fn wakeup(&mut self, e: &Wakeup) {
        self.tag(K_WAKEUP, Some(e.cpu));
        self.ts(e.ts);
        let mut flags = 0u8;
        if e.pid == self.st.memo(e.tid).pid {
            flags |= WAKEUP_PID_SAME;
        }
        if e.target_cpu == e.cpu {
            flags |= WAKEUP_TARGET_IS_CPU;
        }
        if e.waker_tid == self.st.current(e.cpu) {
            flags |= WAKEUP_WAKER_IS_CURRENT;
        }
        self.byte(TAG, flags);
        self.u(ID, e.tid as u64);
        if flags & WAKEUP_PID_SAME == 0 {
            self.u(ID, e.pid as u64);
        }
        if flags & WAKEUP_TARGET_IS_CPU == 0 {
            self.u(ID, e.target_cpu as u64);
        }
        if flags & WAKEUP_WAKER_IS_CURRENT == 0 {
            self.u(ID, e.waker_tid as u64);
        }
        self.st.memo_mut(e.tid).pid = e.pid;
        self.st.note_wakeup(e.ts, e.tid);
    }

    pub(super) fn migrate(&mut self, e: &Migrate) {
        self.tag(K_MIGRATE, Some(e.cpu));
        self.ts(e.ts);
        self.u(ID, e.tid as u64);
        self.u(ID, e.pid as u64);
        self.u(ID, e.orig_cpu as u64);
        self.u(ID, e.dest_cpu as u64);
        self.st.memo_mut(e.tid).pid = e.pid;
    }

    pub(super) fn task_exit(&mut self, e: &TaskExit) {
        self.tag(K_TASK_EXIT, Some(e.cpu));
        self.ts(e.ts);
        self.u(ID, e.tid as u64);
        self.u(ID, e.pid as u64);
    }
}

impl ChunkDecoder<'_> {
    pub(super) fn sched_switch(&mut self, cpu: u32) -> DResult<SchedSwitch> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        let prev_tid = if flags & SWITCH_PREV_IS_CURRENT != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        let prev = self.st.memo(prev_tid);
        let prev = (prev.pid, prev.comm);
        let prev_pid = if flags & SWITCH_PREV_PID_SAME != 0 {
            prev.0
        } else {
            self.u32(ID)?
        };
        let prev_comm = if flags & SWITCH_PREV_COMM_SAME != 0 {
            prev.1
        } else {
            self.comm()?
        };
        let prev_state = if flags & SWITCH_PREV_STATE_ZERO != 0 {
            0
        } else {
            self.u(VAL)?
        };
        {
            let m = self.st.memo_mut(prev_tid);
            m.pid = prev_pid;
            m.comm = prev_comm;
        }
        let next_tid = self.u32(ID)?;
        let next = self.st.memo(next_tid);
        let next = (next.pid, next.comm);
        let next_pid = if flags & SWITCH_NEXT_PID_SAME != 0 {
            next.0
        } else {
            self.u32(ID)?
        };
        let next_comm = if flags & SWITCH_NEXT_COMM_SAME != 0 {
            next.1
        } else {
            self.comm()?
        };
        {
            let m = self.st.memo_mut(next_tid);
            m.pid = next_pid;
            m.comm = next_comm;
        }
        let prev_se = if flags & SWITCH_HAS_PREV_SE != 0 {
            Some(self.sched_entity(prev_tid)?)
        } else {
            None
        };
        let next_se = if flags & SWITCH_HAS_NEXT_SE != 0 {
            Some(self.sched_entity(next_tid)?)
        } else {
            None
        };
        let preempted = TaskState(prev_state).is_preempted();
        self.st.note_switch(ts, prev_tid, preempted, next_tid);
        self.st.current.insert(cpu, next_tid);
        Ok(SchedSwitch {
            ts,
            cpu,
            prev_tid,
            prev_pid,
            prev_comm,
            prev_state,
            next_tid,
            next_pid,
            next_comm,
            prev_se,
            next_se,
        })
    }

    pub(super) fn wakeup(&mut self, cpu: u32) -> DResult<Wakeup> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        if flags & !(WAKEUP_PID_SAME | WAKEUP_TARGET_IS_CPU | WAKEUP_WAKER_IS_CURRENT) != 0 {
            return Err(DecodeError("unknown wakeup flags"));
        }
        let tid = self.u32(ID)?;
        let pid = if flags & WAKEUP_PID_SAME != 0 {
            self.st.memo(tid).pid
        } else {
            self.u32(ID)?
        };
        let target_cpu = if flags & WAKEUP_TARGET_IS_CPU != 0 {
            cpu
        } else {
            self.u32(ID)?
        };
        let waker_tid = if flags & WAKEUP_WAKER_IS_CURRENT != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        self.st.memo_mut(tid).pid = pid;
        self.st.note_wakeup(ts, tid);
        Ok(Wakeup {
            ts,
            cpu,
            tid,
            pid,
            target_cpu,
            waker_tid,
        })
    }

    pub(super) fn migrate(&mut self, cpu: u32) -> DResult<Migrate> {
        let ts = self.ts()?;
        let tid = self.u32(ID)?;
        let pid = self.u32(ID)?;
        let orig_cpu = self.u32(ID)?;
        let dest_cpu = self.u32(ID)?;
        self.st.memo_mut(tid).pid = pid;
        Ok(Migrate {
            ts,
            cpu,
            tid,
            pid,
            orig_cpu,
            dest_cpu,
        })
    }

    pub(super) fn task_exit(&mut self, cpu: u32) -> DResult<TaskExit> {
        let ts = self.ts()?;
        let tid = self.u32(ID)?;
        let pid = self.u32(ID)?;
        Ok(TaskExit { ts, cpu, tid, pid })
    }
}
