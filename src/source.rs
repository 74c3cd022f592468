//! Where events come from. Live probes (plus the in-process VMM's guest gaps) and trace files
//! are both a `Source`, so every sink works the same on either.

use std::time::Duration;

use model::{Event, HostInfo};

/// Yields events in batches. Batches are roughly time-ordered; the model's reorder window
/// absorbs small inversions between CPUs.
pub trait Source {
    /// Append the next events to `out`, waiting at most `timeout` for the first one.
    /// Returns `Ok(false)` once the source is exhausted (file end, duration over, stopped).
    fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> anyhow::Result<bool>;

    /// The host the events come from (live: this one; file: the recorded header).
    fn host(&self) -> &HostInfo;

    /// Where the events come from, for headers: "live" or "replay: FILE".
    fn describe(&self) -> String;
}
