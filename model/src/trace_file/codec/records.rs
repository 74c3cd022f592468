//! Bookkeeping records: lost-event counts, task info, affinity, task groups, VM end,
//! observation end. Each kind's encode and decode sit side by side.

use super::{ChunkDecoder, ChunkEncoder, DResult, DecodeError, ID, SE, TAG, VAL};
use super::{K_AFFINITY, K_LOST, K_OBSERVATION_END, K_TASK_INFO, K_VM_ENDED};
use crate::event::{Affinity, Lost, ObservationEnd, Schedstat, TaskInfo, Unobserved};
use crate::event::{SchedGroup, TaskGroup, ThreadStart, UnobservedKind, VmEnded};
use crate::TaskState;

/// Most CPUs an affinity record may list (the model's bound on CPU numbers); more is
/// corruption.
const MAX_AFFINITY_CPUS: u64 = crate::MAX_CPUS as u64;

/// Task-info tag bit (high nibble, where other kinds keep their CPU): the thread's schedstat
/// at tracking start follows. Older files never set it.
pub(super) const TASK_INFO_HAS_SCHEDSTAT: u8 = 0x10;
/// Task-info tag bit: the thread's state and pCPU at tracking start follow (format version 3
/// on; older files never set it, and older readers refuse the version).
pub(super) const TASK_INFO_HAS_START: u8 = 0x20;

/// An [`Unobserved`] record's tag: the affinity code escaped by its high nibble (see
/// `K_AFFINITY`). Its kind code and count follow the timestamp.
pub(super) const UNOBSERVED_TAG: u8 = K_AFFINITY | 0x10;
/// A [`TaskGroup`] record's tag: the affinity code escaped by another high nibble (format
/// version 4 on). Tid, pid, then the group's weight plus one (0: not read) and its name: the
/// index plus one of a name the chunk already holds, or 0 and the name (many tasks share a
/// group, and the names are long).
pub(super) const TASK_GROUP_TAG: u8 = K_AFFINITY | 0x20;

impl ChunkEncoder {
    pub(super) fn lost(&mut self, e: &Lost) {
        self.tag(K_LOST, Some(e.cpu));
        self.ts(e.ts);
        self.u(VAL, e.count);
    }

    pub(super) fn unobserved(&mut self, e: &Unobserved) {
        self.byte(TAG, UNOBSERVED_TAG);
        self.ts(e.ts);
        self.u(VAL, u64::from(e.what.code()));
        self.u(VAL, e.count);
    }

    pub(super) fn task_info(&mut self, e: &TaskInfo) {
        // A task-info record has no CPU: the tag's high nibble says whether the thread's
        // schedstat and its state at tracking start follow.
        let mut tag = K_TASK_INFO;
        if e.schedstat.is_some() {
            tag |= TASK_INFO_HAS_SCHEDSTAT;
        }
        if e.start.is_some() {
            tag |= TASK_INFO_HAS_START;
        }
        self.byte(TAG, tag);
        self.ts(e.ts);
        self.u(ID, e.tid as u64);
        self.u(ID, e.pid as u64);
        self.comm(&e.comm);
        self.string(&e.vm);
        self.u(ID, e.vcpu.map_or(0, |v| v as u64 + 1));
        self.i(VAL, e.nice as i64);
        if let Some(s) = e.schedstat {
            self.u(SE, s.run_ns);
            self.u(SE, s.wait_ns);
        }
        if let Some(s) = e.start {
            self.u(VAL, s.state.0);
            self.u(ID, u64::from(s.cpu));
        }
        let m = self.st.memo_mut(e.tid);
        m.pid = e.pid;
        m.comm = e.comm;
    }

    /// Tid, the CPU count, then each CPU as its distance from the one before (ascending lists
    /// of neighbours cost a byte each).
    pub(super) fn affinity(&mut self, e: &Affinity) {
        self.tag(K_AFFINITY, None);
        self.ts(e.ts);
        self.u(ID, e.tid as u64);
        self.u(VAL, e.cpus.len() as u64);
        let mut prev = 0u32;
        for &c in &e.cpus {
            self.u(VAL, u64::from(c.wrapping_sub(prev)));
            prev = c;
        }
    }

    pub(super) fn task_group(&mut self, e: &TaskGroup) {
        self.byte(TAG, TASK_GROUP_TAG);
        self.ts(e.ts);
        self.u(ID, u64::from(e.tid));
        self.u(ID, u64::from(e.pid));
        match &e.group {
            None => self.u(VAL, 0),
            Some(g) => {
                self.u(VAL, u64::from(g.weight) + 1);
                match self.st.group_index.get(&g.name) {
                    Some(&i) => self.u(ID, u64::from(i) + 1),
                    None => {
                        self.u(ID, 0);
                        self.string(&g.name);
                        let i = self.st.group_index.len() as u32;
                        self.st.group_index.insert(g.name.clone(), i);
                    }
                }
            }
        }
    }

    pub(super) fn vm_ended(&mut self, e: &VmEnded) {
        self.tag(K_VM_ENDED, None);
        self.ts(e.ts);
        self.u(ID, e.pid as u64);
        self.string(&e.vm);
    }

    pub(super) fn observation_end(&mut self, e: &ObservationEnd) {
        self.tag(K_OBSERVATION_END, None);
        self.ts(e.ts);
    }
}

impl ChunkDecoder<'_> {
    pub(super) fn lost(&mut self, cpu: u32) -> DResult<Lost> {
        let ts = self.ts()?;
        let count = self.u(VAL)?;
        Ok(Lost { ts, cpu, count })
    }

    pub(super) fn unobserved(&mut self) -> DResult<Unobserved> {
        let ts = self.ts()?;
        let what = UnobservedKind::from_code(self.u(VAL)?)
            .ok_or(DecodeError("unknown kind of unobserved record"))?;
        let count = self.u(VAL)?;
        Ok(Unobserved { ts, what, count })
    }

    /// `tag` is the whole tag byte: its high nibble carries [`TASK_INFO_HAS_SCHEDSTAT`] and
    /// [`TASK_INFO_HAS_START`].
    pub(super) fn task_info(&mut self, tag: u8) -> DResult<TaskInfo> {
        let ts = self.ts()?;
        let tid = self.u32(ID)?;
        let pid = self.u32(ID)?;
        let comm = self.comm()?;
        let vm = self.string()?;
        let vcpu = match self.u(ID)? {
            0 => None,
            v => Some(u32::try_from(v - 1).map_err(|_| DecodeError("vcpu index"))?),
        };
        let nice = i32::try_from(self.i(VAL)?).map_err(|_| DecodeError("nice"))?;
        let schedstat = if tag & TASK_INFO_HAS_SCHEDSTAT != 0 {
            Some(Schedstat {
                run_ns: self.u(SE)?,
                wait_ns: self.u(SE)?,
            })
        } else {
            None
        };
        let start = if tag & TASK_INFO_HAS_START != 0 {
            Some(ThreadStart {
                state: TaskState(self.u(VAL)?),
                cpu: self.u32(ID)?,
            })
        } else {
            None
        };
        let m = self.st.memo_mut(tid);
        m.pid = pid;
        m.comm = comm;
        Ok(TaskInfo {
            ts,
            tid,
            pid,
            comm,
            vm,
            vcpu,
            nice,
            schedstat,
            start,
        })
    }

    pub(super) fn affinity(&mut self) -> DResult<Affinity> {
        let ts = self.ts()?;
        let tid = self.u32(ID)?;
        let n = self.u(VAL)?;
        if n > MAX_AFFINITY_CPUS {
            return Err(DecodeError("affinity lists too many CPUs"));
        }
        let mut cpus = Vec::with_capacity(n as usize);
        let mut prev = 0u32;
        for _ in 0..n {
            prev = prev.wrapping_add(self.u32(VAL)?);
            cpus.push(prev);
        }
        Ok(Affinity { ts, tid, cpus })
    }

    pub(super) fn task_group(&mut self) -> DResult<TaskGroup> {
        let ts = self.ts()?;
        let tid = self.u32(ID)?;
        let pid = self.u32(ID)?;
        let group = match self.u(VAL)? {
            0 => None,
            w => Some(SchedGroup {
                weight: u32::try_from(w - 1).map_err(|_| DecodeError("group weight"))?,
                name: match self.u(ID)? {
                    0 => {
                        let name = self.string()?;
                        self.st.group_list.push(name.clone());
                        name
                    }
                    i => usize::try_from(i - 1)
                        .ok()
                        .and_then(|i| self.st.group_list.get(i))
                        .cloned()
                        .ok_or(DecodeError("unknown task-group name index"))?,
                },
            }),
        };
        Ok(TaskGroup {
            ts,
            tid,
            pid,
            group,
        })
    }

    pub(super) fn vm_ended(&mut self) -> DResult<VmEnded> {
        let ts = self.ts()?;
        let pid = self.u32(ID)?;
        let vm = self.string()?;
        Ok(VmEnded { ts, pid, vm })
    }

    pub(super) fn observation_end(&mut self) -> DResult<ObservationEnd> {
        Ok(ObservationEnd { ts: self.ts()? })
    }
}
