//! Reading: [`Probes::poll`] waits for the kernel side, drains and decodes every ring at
//! real-time priority, and appends what was lost and the exit aggregates.

use std::time::Duration;

use model::Event;

use super::options::ProbeError;
use super::Probes;
use crate::reader_guard::ReaderPriority;

impl Probes {
    /// Appends the available events to `out`. Sleeps first, until the kernel side wakes the
    /// reader (`wakeup_bytes` of records in the shared ring, or a quarter of a CPU's switch
    /// ring) or until `timeout` has passed since the previous drain, then drains every ring:
    /// `timeout` is the latency bound for sparse events (use the consumer's tick, e.g.
    /// 100 ms), and a busy stream is read in batches rather than a few records per call.
    /// `Duration::ZERO` drains at once.
    /// Records lost to a full ring buffer since the last call are appended as `Event::Lost`
    /// (one per CPU that lost some).
    pub fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<(), ProbeError> {
        let before = out.len();
        self.rings.wait(timeout)?;
        // The reads' bpf() calls must not let a traced thread run on this CPU meanwhile.
        let guard = self.raise_priority();
        self.drain(out)?;
        // The rings are read one after the other: put the batch back in time order (stable,
        // so each CPU's order stays as written).
        out[before..].sort_by_key(Event::ts);
        self.collect_lost(out)?;
        self.collect_missed(out);
        // After the records: an entry sent for a resume is never older than the exits
        // counted before it.
        if let Some(a) = &mut self.exit_aggs {
            a.read(&mut self.exit_aggs_read)
                .map_err(ProbeError::ExitAggs)?;
        }
        drop(guard);
        Ok(())
    }

    /// [`ReaderPriority::raise`] unless the kernel refused it before.
    pub(super) fn raise_priority(&mut self) -> Option<ReaderPriority> {
        if !self.reader_rt {
            return None;
        }
        match ReaderPriority::raise() {
            Ok(guard) => Some(guard),
            Err(e) => {
                log::debug!("reads stay at normal priority: {e}");
                self.reader_rt = false;
                None
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> Result<(), ProbeError> {
        let (decoder, warnings, undecodable) =
            (&self.decoder, &mut self.warnings, &mut self.undecodable);
        self.rings
            .drain(|record: &[u8]| match decoder.decode(record) {
                Ok(event) => out.push(event),
                Err(e) => {
                    if *undecodable == 0 {
                        warnings.push(format!("undecodable records: {e}"));
                    }
                    *undecodable += 1;
                }
            })
    }
}
