//! kvmscope's pure core: the event types every source yields, the scheduling model that folds
//! them, and the snapshots every view reads.
//!
//! Architecture invariant: this crate touches no kernel interface, terminal or clock. Time
//! comes only from event timestamps, so the same code runs live, on a recording and in tests.

pub mod demand;
pub mod event;
pub mod exit_aggregate;
pub mod exit_names;
pub mod health;
pub mod host;
mod latency;
mod reorder;
mod sched;
pub mod snapshot;
pub mod source;
#[cfg(any(test, feature = "synth"))]
pub mod synth;
pub mod task_state;
pub mod trace_file;
pub mod transition;
pub mod vcpu_thread_name;

pub use event::*;
pub use exit_aggregate::{ExitAggregate, ExitAggregates, PortIoAggregate, EXIT_HIST_BUCKETS};
pub use health::{Health, HealthFigure, HealthKind, HealthMetric, HealthUnit, HEALTH_FIGURES};
pub use host::{HostInfo, KvmFlavour};
pub use latency::Latency;
pub use sched::{
    jain, nice_to_weight, Model, ModelConfig, SnapshotOptions, MAX_CPUS, NICE_TO_WEIGHT,
    RETIRE_ENDED_AFTER_NS,
};
pub use snapshot::*;
pub use source::{Source, SourceError};
pub use task_state::{SwitchOut, TaskState};
pub use transition::{PcpuHolder, Transition};
pub use vcpu_thread_name::{VcpuThreadName, VmNames, VM_NAMES_MEMFD};
