//! What a caller asks of the probes ([`ProbeOptions`], [`ExitMode`]) and what loading or
//! reading them can fail with ([`ProbeError`]).

use crate::abi;
use crate::programs::ProgramFailure;
use crate::tracefs;

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes: a power of two and a multiple of the page size. The
    /// per-CPU rings of switch records get up to as much again, shared among the CPUs (from
    /// 1 152 to 9 216 records per CPU).
    pub ring_bytes: u32,
    /// Attach the `kvm:*` tracepoints (entry, exit, userspace exit, pio).
    pub kvm: bool,
    /// Attach the optional `csd:*` tracepoints (VMCLEAR cross-call attribution).
    pub cross_calls: bool,
    /// Wake the reader once this many bytes of records wait (clamped to `ring_bytes / 2`).
    /// Waking per record would let a reader sharing CPUs with tracked threads trigger the
    /// switches it then reads about. Switch records go to per-CPU rings read at every
    /// [`Probes::poll`](super::Probes::poll); they wake the reader when a quarter of a CPU's ring waits (see
    /// `switch_wakeups`); overflows are counted as `Lost` as ever.
    pub wakeup_bytes: u32,
    /// Wake the reader when a quarter of a CPU's switch ring waits (default). Off, switch
    /// records are read only when `events` wakes the reader or at the poll timeout: what the
    /// bench measures as the baseline.
    pub switch_wakeups: bool,
    /// How `kvm_exit`/`kvm_entry` reach user space (see [`ExitMode`]).
    pub exits: ExitMode,
}

/// How guest exits reach user space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitMode {
    /// Every `kvm_exit` and `kvm_entry` as an event (`trace`, `record`).
    #[default]
    Stream,
    /// Counted in the kernel per vCPU thread and reason, with log2 histograms of handling
    /// time, read by [`Probes::take_exit_aggregates`](super::Probes::take_exit_aggregates); only the entries the model needs for
    /// resume latency (the first after a switch-in, the one after a userspace exit) are
    /// events.
    Aggregate,
    /// Both: every event, and the aggregates of the same exits (the equality check).
    Both,
}

impl ExitMode {
    pub(super) fn bits(self) -> u32 {
        match self {
            ExitMode::Stream => abi::EXITS_STREAM,
            ExitMode::Aggregate => abi::EXITS_AGGREGATE,
            ExitMode::Both => abi::EXITS_STREAM | abi::EXITS_AGGREGATE,
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ring_bytes: 16 << 20,
            kvm: true,
            cross_calls: true,
            wakeup_bytes: 64 << 10,
            switch_wakeups: true,
            exits: ExitMode::Stream,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "loading eBPF probes needs root or CAP_BPF and CAP_PERFMON (run with sudo, or use --no-bpf)"
    )]
    NotPrivileged,
    #[error(
        "no kernel BTF at /sys/kernel/btf/vmlinux: the probes need a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (or use --no-bpf)"
    )]
    NoBtf,
    #[error("cannot read kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    Btf(String),
    #[error("{0}")]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("ring buffer size {0} is not a power of two of at least the page size ({1} bytes)")]
    BadRingSize(u32, usize),
    #[error("cannot load the eBPF object on Linux {release}: {reason}")]
    Load { release: String, reason: String },
    #[error("{0}")]
    Program(ProgramFailure),
    #[error("eBPF object has no {0} map (object and loader out of step)")]
    MissingMap(&'static str),
    #[error("cannot track thread {tid}: {reason}")]
    Track { tid: u32, reason: String },
    #[error("cannot wait on the ring buffer: {0}")]
    Poll(std::io::Error),
    #[error("cannot read the lost-event counters: {0}")]
    Lost(String),
    #[error("cannot set up or read the sched_switch rings: {0}")]
    SwitchRings(String),
    #[error("cannot read the exit aggregates: {0}")]
    ExitAggs(String),
}

impl ProbeError {
    /// The verifier's whole log when a program was refused (for `-v` and log files).
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            ProbeError::Program(f) => f.verifier_log.as_deref(),
            _ => None,
        }
    }
}

/// A load-time failure, named with the kernel release it happened on.
pub(crate) fn load_error(reason: String) -> ProbeError {
    ProbeError::Load {
        release: crate::host::kernel_release(),
        reason,
    }
}
