//! Ring-buffer records (`abi`) → `model::Event`. The only place raw kernel bytes are read.
//!
//! Unit conversions happen here: `se.load.weight` arrives in the kernel's 64-bit fixed point
//! (`scale_load`, nice 0 = 1024 << 10) and leaves on the textbook scale (nice 0 = 1024).
//! A `kvm_exit` from a kernel whose tracepoint has no `vcpu_id` (before ~5.10) carries
//! `vcpu_id == u32::MAX`; one without `isa` decodes as `ExitIsa::Unknown`.

use model::{
    Comm, CrossCall, CrossCallPhase, Event, ExitIsa, KvmEntry, KvmExit, Migrate, Pio, SchedEntity,
    SchedSwitch, TaskExit, UserspaceExit, Wakeup,
};

use crate::abi::{self, Record};

/// `SCHED_FIXEDPOINT_SHIFT`: how far 64-bit kernels scale task weights up. kvmscope's eBPF is
/// built for x86-64 only (`-D__TARGET_ARCH_x86`), where the scaling is always on.
pub const WEIGHT_SHIFT: u32 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {len} bytes is shorter than its header")]
    NoHeader { len: usize },
    #[error("ring buffer record of kind {kind} is {len} bytes, expected {want}")]
    Short { kind: u32, len: usize, want: usize },
    #[error("cross-call record with unknown phase {0}")]
    BadCsdPhase(u32),
    #[error("ring buffer record of unknown kind {0} (eBPF object and decoder out of step)")]
    UnknownKind(u32),
}

/// Decodes records of one loaded object. Knows the host facts records are judged against.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    /// Address of KVM's `__loaded_vmcs_clear` (VT-x hosts with kvm_intel loaded).
    pub vmclear_func: Option<u64>,
}

fn read<T: Record>(kind: u32, rec: &[u8]) -> Result<T, DecodeError> {
    T::read(rec).ok_or(DecodeError::Short {
        kind,
        len: rec.len(),
        want: std::mem::size_of::<T>(),
    })
}

fn sched_entity(se: &abi::Se) -> SchedEntity {
    let has = |bit: u32| se.present & bit != 0;
    SchedEntity {
        vruntime: se.vruntime,
        weight: u32::try_from(se.weight >> WEIGHT_SHIFT).unwrap_or(u32::MAX),
        sum_exec_runtime: se.sum_exec_runtime,
        deadline: has(abi::SE_HAS_DEADLINE).then_some(se.deadline),
        vlag: has(abi::SE_HAS_VLAG).then_some(se.vlag),
        slice: has(abi::SE_HAS_SLICE).then_some(se.slice),
        run_delay: has(abi::SE_HAS_RUN_DELAY).then_some(se.run_delay),
    }
}

pub(crate) fn exit_isa(isa: u32) -> ExitIsa {
    match isa {
        abi::KVM_ISA_VMX => ExitIsa::Vmx,
        abi::KVM_ISA_SVM => ExitIsa::Svm,
        _ => ExitIsa::Unknown,
    }
}

impl Decoder {
    /// One ring-buffer record → one event.
    pub fn decode(&self, rec: &[u8]) -> Result<Event, DecodeError> {
        let hdr = abi::Hdr::read(rec).ok_or(DecodeError::NoHeader { len: rec.len() })?;
        let (ts, cpu, kind) = (hdr.ts, hdr.cpu, hdr.kind);
        Ok(match kind {
            abi::KIND_SWITCH => {
                let r: abi::Switch = read(kind, rec)?;
                Event::SchedSwitch(SchedSwitch {
                    ts,
                    cpu,
                    prev_tid: r.prev_tid,
                    prev_pid: r.prev_pid,
                    prev_comm: Comm(r.prev_comm),
                    prev_state: r.prev_state,
                    next_tid: r.next_tid,
                    next_pid: r.next_pid,
                    next_comm: Comm(r.next_comm),
                    prev_se: (r.se_present & abi::SWITCH_PREV_SE != 0)
                        .then(|| sched_entity(&r.prev_se)),
                    next_se: (r.se_present & abi::SWITCH_NEXT_SE != 0)
                        .then(|| sched_entity(&r.next_se)),
                })
            }
            abi::KIND_WAKEUP => {
                let r: abi::Wakeup = read(kind, rec)?;
                Event::Wakeup(Wakeup {
                    ts,
                    cpu,
                    tid: r.tid,
                    pid: r.pid,
                    target_cpu: r.target_cpu,
                    waker_tid: r.waker_tid,
                })
            }
            abi::KIND_MIGRATE => {
                let r: abi::Migrate = read(kind, rec)?;
                Event::Migrate(Migrate {
                    ts,
                    cpu,
                    tid: r.tid,
                    pid: r.pid,
                    orig_cpu: r.orig_cpu,
                    dest_cpu: r.dest_cpu,
                })
            }
            abi::KIND_TASK_EXIT => {
                let r: abi::TaskExit = read(kind, rec)?;
                Event::TaskExit(TaskExit {
                    ts,
                    cpu,
                    tid: r.tid,
                    pid: r.pid,
                })
            }
            abi::KIND_KVM_ENTRY => {
                let r: abi::KvmEntry = read(kind, rec)?;
                Event::KvmEntry(KvmEntry {
                    ts,
                    cpu,
                    tid: r.tid,
                    vcpu_id: r.vcpu_id,
                })
            }
            abi::KIND_KVM_EXIT => {
                let r: abi::KvmExit = read(kind, rec)?;
                Event::KvmExit(KvmExit {
                    ts,
                    cpu,
                    tid: r.tid,
                    vcpu_id: r.vcpu_id,
                    reason: r.reason,
                    isa: exit_isa(r.isa),
                })
            }
            abi::KIND_USERSPACE_EXIT => {
                let r: abi::UserspaceExit = read(kind, rec)?;
                Event::UserspaceExit(UserspaceExit {
                    ts,
                    cpu,
                    tid: r.tid,
                    reason: r.reason,
                    errno: r.err,
                })
            }
            abi::KIND_PIO => {
                let r: abi::Pio = read(kind, rec)?;
                Event::Pio(Pio {
                    ts,
                    cpu,
                    tid: r.tid,
                    rw: r.rw,
                    port: r.port,
                    size: r.size,
                    val: r.val,
                })
            }
            abi::KIND_CSD => {
                let r: abi::Csd = read(kind, rec)?;
                let phase = match r.phase {
                    abi::CSD_QUEUE => CrossCallPhase::Queue,
                    abi::CSD_ENTRY => CrossCallPhase::Entry,
                    abi::CSD_EXIT => CrossCallPhase::Exit,
                    other => return Err(DecodeError::BadCsdPhase(other)),
                };
                Event::CrossCall(CrossCall {
                    ts,
                    cpu,
                    phase,
                    func: r.func,
                    csd: r.csd,
                    target_cpu: r.target_cpu,
                    tid: r.tid,
                    is_vmclear: self.vmclear_func == Some(r.func),
                })
            }
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}
