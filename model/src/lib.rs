//! kvmscope's pure core: the event types every source yields, the scheduling model that folds
//! them, and the snapshots every view reads.
//!
//! Architecture invariant: this crate touches no kernel interface, terminal or clock. Time
//! comes only from event timestamps, so the same code runs live, on a recording and in tests.

pub mod event;
pub mod host;
pub mod snapshot;
pub mod source;

pub use event::*;
pub use host::HostInfo;
pub use snapshot::*;
pub use source::{Source, SourceError};
