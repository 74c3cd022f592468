//! kvmscope's terminal dashboard: ratatui views over model snapshots.
//!
//! - [`app`]: dashboard state and key handling (no drawing);
//! - [`view`]: one widget per panel, and [`view::Dashboard`] that lays them out;
//! - [`replay`]: the replay reader (a recording, and a simulated run beside it);
//! - [`run`](mod@run): the loop that folds a [`model::Source`] into a [`model::Model`] on one
//!   thread and draws snapshots on a tick from another.
//!
//! Architecture invariant: this crate knows sources only through `model::Source`; it never
//! reads probes or starts VMs itself, so live, replayed and synthetic streams look the same.

pub mod app;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
pub mod fmt;
pub mod replay;
mod replay_keys;
mod replay_track;
pub mod run;
mod screen;
mod stderr;
mod summary_cache;
pub mod theme;
pub mod view;

pub use app::{App, Mode};
pub use replay::{SimulatedRun, Track};
pub use run::{run_live, run_replay, RunOptions, TuiError};
pub use theme::Theme;

#[cfg(test)]
mod replay_snapshot_tests;
#[cfg(test)]
mod scale_snapshot_tests;
#[cfg(test)]
mod snapshot_tests;
