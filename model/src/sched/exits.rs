//! A thread's exits by reason: counts and the latency from each exit to the next entry.

use crate::exit_names::{hw_exit_name, userspace_exit_name};
use crate::latency::Latency;
use crate::{ExitAggregate, ExitIsa, ExitStats, Percentiles};

/// Distinct exit reasons kept per thread; the last bucket then takes every other reason.
const MAX_EXIT_REASONS: usize = 64;
/// Reason code of that bucket.
const OTHER_REASONS: u32 = u32::MAX;

#[derive(Clone)]
struct ExitEntry {
    /// `false`: kvm_exit (hardware reason), `true`: userspace exit.
    userspace: bool,
    isa: ExitIsa,
    reason: u32,
    count: u64,
    latency: Latency,
}

/// The exits of one thread.
#[derive(Clone, Default)]
pub(super) struct ExitTracker {
    entries: Vec<ExitEntry>,
    /// The last exit not yet followed by an entry: its bucket and time.
    pending: Option<(usize, u64)>,
}

impl ExitTracker {
    /// Counts an exit at `ts`; the next [`ExitTracker::entered`] closes its latency.
    pub(super) fn exited(&mut self, userspace: bool, isa: ExitIsa, reason: u32, ts: u64) {
        let i = self.index(userspace, isa, reason);
        self.entries[i].count = self.entries[i].count.saturating_add(1);
        self.pending = Some((i, ts));
    }

    /// The guest was entered at `ts`.
    pub(super) fn entered(&mut self, ts: u64) {
        if let Some((i, from)) = self.pending.take() {
            if let Some(x) = self.entries.get_mut(i) {
                x.latency.record(ts.saturating_sub(from));
            }
        }
    }

    /// Folds exits counted in the kernel: `count` more of this reason, and handling times by
    /// log2 bucket (at each bucket's middle value).
    pub(super) fn aggregated(&mut self, a: &ExitAggregate) {
        let i = self.index(false, a.isa, a.reason);
        let x = &mut self.entries[i];
        x.count = x.count.saturating_add(a.count);
        for (b, &n) in a.handling_log2.iter().enumerate() {
            x.latency.record_n(ExitAggregate::bucket_ns(b), n);
        }
    }

    fn index(&mut self, userspace: bool, isa: ExitIsa, reason: u32) -> usize {
        if let Some(i) = self
            .entries
            .iter()
            .position(|x| x.userspace == userspace && x.isa == isa && x.reason == reason)
        {
            return i;
        }
        if self.entries.len() >= MAX_EXIT_REASONS {
            // Garbage or exotic reason codes must not grow memory: one bucket takes the rest.
            if let Some(i) = self.entries.iter().position(|x| x.reason == OTHER_REASONS) {
                return i;
            }
            if let Some(last) = self.entries.last_mut() {
                last.reason = OTHER_REASONS;
                last.isa = ExitIsa::Unknown;
            }
            return self.entries.len() - 1;
        }
        self.entries.push(ExitEntry {
            userspace,
            isa,
            reason,
            count: 0,
            latency: Latency::default(),
        });
        self.entries.len() - 1
    }

    /// Exits by reason, most frequent first; rates over `elapsed_ns` of observation; latency
    /// percentiles only with `percentiles` (else left empty).
    pub(super) fn stats(&self, elapsed_ns: u64, percentiles: bool) -> Vec<ExitStats> {
        let secs = elapsed_ns as f64 / 1e9;
        let mut exits: Vec<ExitStats> = self
            .entries
            .iter()
            .map(|x| ExitStats {
                reason: if x.reason == OTHER_REASONS {
                    "(other reasons)".to_string()
                } else if x.userspace {
                    userspace_exit_name(x.reason)
                } else {
                    hw_exit_name(x.isa, x.reason)
                },
                count: x.count,
                per_second: if secs > 0.0 {
                    x.count as f64 / secs
                } else {
                    0.0
                },
                latency: if percentiles {
                    x.latency.percentiles()
                } else {
                    Percentiles::default()
                },
            })
            .collect();
        exits.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        exits
    }
}
