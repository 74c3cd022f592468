//! Where events come from. Live probes (plus the in-process VMM's guest gaps), trace files and
//! synthetic test streams are all a `Source`, so every sink works the same on either.
//!
//! The trait lives here (not in the binary) so the dashboard crate can drive any source; it
//! has no kernel dependency of its own.

use std::time::Duration;

use crate::{Event, HostInfo};

/// Errors a source reports. Boxed so live and file sources can carry their own error types;
/// `anyhow::Error` converts into it with `?`/`.into()`.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Yields events in batches. Batches are roughly time-ordered; the model's reorder window
/// absorbs small inversions between CPUs.
pub trait Source {
    /// Append the next events to `out`, waiting at most `timeout` for the first one.
    /// Returns `Ok(false)` once the source is exhausted (file end, duration over, stopped).
    fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<bool, SourceError>;

    /// The host the events come from (live: this one; file: the recorded header).
    fn host(&self) -> &HostInfo;

    /// Where the events come from, for headers: "live" or "replay: FILE".
    fn describe(&self) -> String;

    /// Moves the exit and port I/O aggregates read since the last call to `out` (a live
    /// source with exits aggregated in the kernel); callers fold them with
    /// [`crate::Model::fold_aggregates`] after each poll's events. Sources that stream
    /// every exit have none.
    fn take_exit_aggregates(&mut self, out: &mut crate::ExitAggregates) {
        let _ = out;
    }
}
