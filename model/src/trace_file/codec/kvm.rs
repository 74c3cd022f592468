//! KVM and VMM events: guest entry and exit, userspace exits, port I/O, cross-CPU calls, guest
//! gaps. Each kind's encode and decode sit side by side.

use super::{ChunkDecoder, ChunkEncoder, DResult, DecodeError, ID, TAG, TS, VAL};
use super::{K_CROSS_CALL, K_GUEST_GAP, K_KVM_ENTRY, K_KVM_EXIT, K_PIO, K_USERSPACE_EXIT};
use crate::event::{
    CrossCall, CrossCallPhase, ExitIsa, GuestGap, KvmEntry, KvmExit, Pio, UserspaceExit,
};

/// Entry and exit: the tid is the task current on the CPU.
const VCPU_TID_IS_CURRENT: u8 = 1;
/// Entry and exit: the vCPU id is the tid's previous one.
const VCPU_ID_SAME: u8 = 2;
const VCPU_FLAGS: u8 = VCPU_TID_IS_CURRENT | VCPU_ID_SAME;

/// Exit: the instruction set whose exit-reason table `reason` indexes (two bits).
const EXIT_ISA_MASK: u8 = 12;
const EXIT_ISA_VMX: u8 = 0;
const EXIT_ISA_SVM: u8 = 4;
const EXIT_ISA_UNKNOWN: u8 = 8;

const USERSPACE_TID_IS_CURRENT: u8 = 1;
const USERSPACE_ERRNO_ZERO: u8 = 2;

const PIO_TID_IS_CURRENT: u8 = 1;
/// (rw, port, size, val) equal the tid's previous port I/O.
const PIO_SAME_AS_LAST: u8 = 2;

/// Cross-call: the phase (two bits).
const CROSS_CALL_PHASE_MASK: u8 = 3;
const CROSS_CALL_QUEUE: u8 = 0;
const CROSS_CALL_ENTRY: u8 = 1;
const CROSS_CALL_EXIT: u8 = 2;
const CROSS_CALL_VMCLEAR: u8 = 4;
const CROSS_CALL_TARGET_IS_CPU: u8 = 8;
const CROSS_CALL_TID_IS_CURRENT: u8 = 16;

/// Guest gap: (VM, vCPU) equal the tid's previous gap's.
const GAP_OWNER_SAME: u8 = 1;

impl ChunkEncoder {
    fn vcpu_flags(&self, cpu: u32, tid: u32, vcpu_id: u32) -> u8 {
        let mut flags = 0u8;
        if tid == self.st.current(cpu) {
            flags |= VCPU_TID_IS_CURRENT;
        }
        if vcpu_id == self.st.memo(tid).vcpu_id {
            flags |= VCPU_ID_SAME;
        }
        flags
    }
    fn vcpu_fields(&mut self, flags: u8, tid: u32, vcpu_id: u32) {
        if flags & VCPU_TID_IS_CURRENT == 0 {
            self.u(ID, tid as u64);
        }
        if flags & VCPU_ID_SAME == 0 {
            self.u(ID, vcpu_id as u64);
        }
        self.st.memo_mut(tid).vcpu_id = vcpu_id;
    }

    pub(super) fn kvm_entry(&mut self, e: &KvmEntry) {
        self.tag(K_KVM_ENTRY, Some(e.cpu));
        self.ts(e.ts);
        let flags = self.vcpu_flags(e.cpu, e.tid, e.vcpu_id);
        self.byte(TAG, flags);
        self.vcpu_fields(flags, e.tid, e.vcpu_id);
    }

    pub(super) fn kvm_exit(&mut self, e: &KvmExit) {
        self.tag(K_KVM_EXIT, Some(e.cpu));
        self.ts(e.ts);
        let mut flags = self.vcpu_flags(e.cpu, e.tid, e.vcpu_id);
        flags |= match e.isa {
            ExitIsa::Vmx => EXIT_ISA_VMX,
            ExitIsa::Svm => EXIT_ISA_SVM,
            ExitIsa::Unknown => EXIT_ISA_UNKNOWN,
        };
        self.byte(TAG, flags);
        self.vcpu_fields(flags, e.tid, e.vcpu_id);
        self.u(VAL, e.reason as u64);
    }

    pub(super) fn userspace_exit(&mut self, e: &UserspaceExit) {
        self.tag(K_USERSPACE_EXIT, Some(e.cpu));
        self.ts(e.ts);
        let mut flags = 0u8;
        if e.tid == self.st.current(e.cpu) {
            flags |= USERSPACE_TID_IS_CURRENT;
        }
        if e.errno == 0 {
            flags |= USERSPACE_ERRNO_ZERO;
        }
        self.byte(TAG, flags);
        if flags & USERSPACE_TID_IS_CURRENT == 0 {
            self.u(ID, e.tid as u64);
        }
        self.u(VAL, e.reason as u64);
        if flags & USERSPACE_ERRNO_ZERO == 0 {
            self.i(VAL, e.errno as i64);
        }
    }

    pub(super) fn pio(&mut self, e: &Pio) {
        self.tag(K_PIO, Some(e.cpu));
        self.ts(e.ts);
        let mut flags = 0u8;
        if e.tid == self.st.current(e.cpu) {
            flags |= PIO_TID_IS_CURRENT;
        }
        let pio = (e.rw, e.port, e.size, e.val);
        if pio == self.st.memo(e.tid).pio {
            flags |= PIO_SAME_AS_LAST;
        }
        self.byte(TAG, flags);
        if flags & PIO_TID_IS_CURRENT == 0 {
            self.u(ID, e.tid as u64);
        }
        if flags & PIO_SAME_AS_LAST == 0 {
            self.u(VAL, e.rw as u64);
            self.u(VAL, e.port as u64);
            self.u(VAL, e.size as u64);
            self.u(VAL, e.val as u64);
        }
        self.st.memo_mut(e.tid).pio = pio;
    }

    pub(super) fn cross_call(&mut self, e: &CrossCall) {
        self.tag(K_CROSS_CALL, Some(e.cpu));
        self.ts(e.ts);
        let mut flags = match e.phase {
            CrossCallPhase::Queue => CROSS_CALL_QUEUE,
            CrossCallPhase::Entry => CROSS_CALL_ENTRY,
            CrossCallPhase::Exit => CROSS_CALL_EXIT,
        };
        if e.is_vmclear {
            flags |= CROSS_CALL_VMCLEAR;
        }
        if e.target_cpu == e.cpu {
            flags |= CROSS_CALL_TARGET_IS_CPU;
        }
        if e.tid == self.st.current(e.cpu) {
            flags |= CROSS_CALL_TID_IS_CURRENT;
        }
        self.byte(TAG, flags);
        self.u(VAL, e.func);
        self.u(VAL, e.csd);
        if flags & CROSS_CALL_TARGET_IS_CPU == 0 {
            self.u(ID, e.target_cpu as u64);
        }
        if flags & CROSS_CALL_TID_IS_CURRENT == 0 {
            self.u(ID, e.tid as u64);
        }
    }

    /// A guest gap has no CPU and its own time base (`prev_gap_end`): the end as a delta
    /// from the previous gap's end, then the length.
    pub(super) fn guest_gap(&mut self, e: &GuestGap) {
        self.tag(K_GUEST_GAP, None);
        let owner = (e.vm, e.vcpu);
        let mut flags = 0u8;
        if owner == self.st.memo(e.tid).gap_owner {
            flags |= GAP_OWNER_SAME;
        }
        self.byte(TAG, flags);
        self.i(TS, e.end.wrapping_sub(self.st.prev_gap_end) as i64);
        self.st.prev_gap_end = e.end;
        self.u(TS, e.end.wrapping_sub(e.start));
        self.u(ID, e.tid as u64);
        if flags & GAP_OWNER_SAME == 0 {
            self.u(ID, e.vm as u64);
            self.u(ID, e.vcpu as u64);
        }
        self.st.memo_mut(e.tid).gap_owner = owner;
    }
}

impl ChunkDecoder<'_> {
    fn vcpu_fields(&mut self, flags: u8, cpu: u32) -> DResult<(u32, u32)> {
        let tid = if flags & VCPU_TID_IS_CURRENT != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        let vcpu_id = if flags & VCPU_ID_SAME != 0 {
            self.st.memo(tid).vcpu_id
        } else {
            self.u32(ID)?
        };
        self.st.memo_mut(tid).vcpu_id = vcpu_id;
        Ok((tid, vcpu_id))
    }

    pub(super) fn kvm_entry(&mut self, cpu: u32) -> DResult<KvmEntry> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        if flags & !VCPU_FLAGS != 0 {
            return Err(DecodeError("unknown kvm_entry flags"));
        }
        let (tid, vcpu_id) = self.vcpu_fields(flags, cpu)?;
        Ok(KvmEntry {
            ts,
            cpu,
            tid,
            vcpu_id,
        })
    }

    pub(super) fn kvm_exit(&mut self, cpu: u32) -> DResult<KvmExit> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        let isa = match flags & EXIT_ISA_MASK {
            EXIT_ISA_VMX => ExitIsa::Vmx,
            EXIT_ISA_SVM => ExitIsa::Svm,
            EXIT_ISA_UNKNOWN => ExitIsa::Unknown,
            _ => return Err(DecodeError("unknown exit isa")),
        };
        if flags & !(VCPU_FLAGS | EXIT_ISA_MASK) != 0 {
            return Err(DecodeError("unknown kvm_exit flags"));
        }
        let (tid, vcpu_id) = self.vcpu_fields(flags, cpu)?;
        let reason = self.u32(VAL)?;
        Ok(KvmExit {
            ts,
            cpu,
            tid,
            vcpu_id,
            reason,
            isa,
        })
    }

    pub(super) fn userspace_exit(&mut self, cpu: u32) -> DResult<UserspaceExit> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        if flags & !(USERSPACE_TID_IS_CURRENT | USERSPACE_ERRNO_ZERO) != 0 {
            return Err(DecodeError("unknown userspace_exit flags"));
        }
        let tid = if flags & USERSPACE_TID_IS_CURRENT != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        let reason = self.u32(VAL)?;
        let errno = if flags & USERSPACE_ERRNO_ZERO != 0 {
            0
        } else {
            i32::try_from(self.i(VAL)?).map_err(|_| DecodeError("errno out of range"))?
        };
        Ok(UserspaceExit {
            ts,
            cpu,
            tid,
            reason,
            errno,
        })
    }

    pub(super) fn pio(&mut self, cpu: u32) -> DResult<Pio> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        if flags & !(PIO_TID_IS_CURRENT | PIO_SAME_AS_LAST) != 0 {
            return Err(DecodeError("unknown pio flags"));
        }
        let tid = if flags & PIO_TID_IS_CURRENT != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        let (rw, port, size, val) = if flags & PIO_SAME_AS_LAST != 0 {
            self.st.memo(tid).pio
        } else {
            (
                self.u32(VAL)?,
                self.u32(VAL)?,
                self.u32(VAL)?,
                self.u32(VAL)?,
            )
        };
        self.st.memo_mut(tid).pio = (rw, port, size, val);
        Ok(Pio {
            ts,
            cpu,
            tid,
            rw,
            port,
            size,
            val,
        })
    }

    pub(super) fn cross_call(&mut self, cpu: u32) -> DResult<CrossCall> {
        let ts = self.ts()?;
        let flags = self.byte(TAG)?;
        let phase = match flags & CROSS_CALL_PHASE_MASK {
            CROSS_CALL_QUEUE => CrossCallPhase::Queue,
            CROSS_CALL_ENTRY => CrossCallPhase::Entry,
            CROSS_CALL_EXIT => CrossCallPhase::Exit,
            _ => return Err(DecodeError("unknown cross-call phase")),
        };
        let known = CROSS_CALL_PHASE_MASK
            | CROSS_CALL_VMCLEAR
            | CROSS_CALL_TARGET_IS_CPU
            | CROSS_CALL_TID_IS_CURRENT;
        if flags & !known != 0 {
            return Err(DecodeError("unknown cross-call flags"));
        }
        let func = self.u(VAL)?;
        let csd = self.u(VAL)?;
        let target_cpu = if flags & CROSS_CALL_TARGET_IS_CPU != 0 {
            cpu
        } else {
            self.u32(ID)?
        };
        let tid = if flags & CROSS_CALL_TID_IS_CURRENT != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        Ok(CrossCall {
            ts,
            cpu,
            phase,
            func,
            csd,
            target_cpu,
            tid,
            is_vmclear: flags & CROSS_CALL_VMCLEAR != 0,
        })
    }

    pub(super) fn guest_gap(&mut self) -> DResult<GuestGap> {
        let flags = self.byte(TAG)?;
        if flags & !GAP_OWNER_SAME != 0 {
            return Err(DecodeError("unknown guest gap flags"));
        }
        let end = self.st.prev_gap_end.wrapping_add(self.i(TS)? as u64);
        self.st.prev_gap_end = end;
        let start = end.wrapping_sub(self.u(TS)?);
        let tid = self.u32(ID)?;
        let (vm, vcpu) = if flags & GAP_OWNER_SAME != 0 {
            self.st.memo(tid).gap_owner
        } else {
            (self.u32(ID)?, self.u32(ID)?)
        };
        self.st.memo_mut(tid).gap_owner = (vm, vcpu);
        Ok(GuestGap {
            start,
            end,
            tid,
            vm,
            vcpu,
        })
    }
}
