//! The live dashboard's latency summaries, refreshed once a second of event time instead of
//! every frame. They are whole-run percentiles (each vCPU's wait, the all-vCPU resume
//! figures), which a tenth of a second barely moves, and at 512 vCPUs they were most of a
//! snapshot's cost: every vCPU's wait histogram read three times and every vCPU's resume
//! histograms merged. Between refreshes each frame gets the model's last figures, never
//! figures of its own making.

use std::collections::HashMap;

use model::{Model, Percentiles, ResumeLatency, Snapshot, SnapshotOptions};

use crate::run::dashboard_options;

/// How long, in event time, the summaries stand before the model is asked again.
pub const REFRESH_NS: u64 = 1_000_000_000;

/// The last summaries the model gave, and the event time they are from.
#[derive(Default)]
pub struct SummaryCache {
    at: Option<u64>,
    wait: HashMap<u32, Percentiles>,
    resume: ResumeLatency,
}

impl SummaryCache {
    /// The dashboard's snapshot of `model`: everything its panels read, the summaries fresh
    /// from the model at most [`REFRESH_NS`] of event time ago (and whenever time went back).
    pub fn snapshot(&mut self, model: &Model) -> Snapshot {
        self.snapshot_charting(model, None)
    }

    /// [`SummaryCache::snapshot`] with the vruntime series of the vCPUs `charted` only (tids;
    /// `None`: every vCPU's), those the chart draws.
    pub fn snapshot_charting(&mut self, model: &Model, charted: Option<&[u32]>) -> Snapshot {
        let now = model.now();
        let fresh = self.at.is_some_and(|at| now >= at && now - at < REFRESH_NS);
        let all_series = SnapshotOptions {
            vruntime_series: charted.is_none(),
            ..dashboard_options(model)
        };
        let mut s = if fresh {
            let mut s = model.snapshot_with(SnapshotOptions {
                wait_percentiles: false,
                resume_all: false,
                ..all_series
            });
            for v in &mut s.vcpus {
                // A thread first seen since the refresh has no figures yet: empty, as the
                // model gives for one that never waited.
                v.wait = self.wait.get(&v.tid).copied().unwrap_or_default();
            }
            s.resume = self.resume.clone();
            s
        } else {
            let s = model.snapshot_with(all_series);
            self.at = Some(now);
            self.wait = s.vcpus.iter().map(|v| (v.tid, v.wait)).collect();
            self.resume = s.resume.clone();
            s
        };
        if let Some(tids) = charted {
            s.vruntime = model.vruntime_series_of(tids);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::dashboard_snapshot;
    use model::{synth, ModelConfig};

    #[test]
    fn summaries_are_the_models_within_a_second_and_refreshed_after() {
        let events = synth::demo_stream(3.0);
        let mut model = Model::new(ModelConfig::default());
        let mut cache = SummaryCache::default();
        let t0 = events[0].ts();
        let upto = |ns: u64| events.partition_point(|e| e.ts() < t0 + ns);
        let exact = |m: &Model| dashboard_snapshot(m);

        model.ingest_batch(&events[..upto(1_000_000_000)]);
        let first = cache.snapshot(&model);
        assert_eq!(first, exact(&model), "the first snapshot asks the model");

        // 0.5 s later: counters move, the summaries are the ones from before.
        model.ingest_batch(&events[upto(1_000_000_000)..upto(1_500_000_000)]);
        let held = cache.snapshot(&model);
        let now = exact(&model);
        assert_eq!(held.resume, first.resume);
        assert_ne!(held.resume, now.resume, "the demo resumes all the time");
        for (h, f) in held.vcpus.iter().zip(&first.vcpus) {
            assert_eq!(h.wait, f.wait);
        }
        assert_eq!(held.ts, now.ts);
        assert_eq!(
            held.vcpus.iter().map(|v| v.run_ns).collect::<Vec<_>>(),
            now.vcpus.iter().map(|v| v.run_ns).collect::<Vec<_>>()
        );

        // Past a second of event time: the model's figures again.
        model.ingest_batch(&events[upto(1_500_000_000)..upto(2_100_000_000)]);
        assert_eq!(cache.snapshot(&model), exact(&model));
    }

    #[test]
    fn a_charted_snapshot_is_the_whole_one_with_only_the_charted_series() {
        let mut model = Model::new(ModelConfig::default());
        model.ingest_batch(&synth::demo_stream(2.0));
        let whole = dashboard_snapshot(&model);
        let charted = [whole.vcpus[1].tid, whole.vcpus[3].tid];
        let mut cache = SummaryCache::default();
        for _ in 0..2 {
            // The refresh, then a frame between refreshes.
            let mut s = cache.snapshot_charting(&model, Some(&charted));
            let series: Vec<_> = whole
                .vruntime
                .iter()
                .filter(|r| charted.contains(&r.tid))
                .cloned()
                .collect();
            assert_eq!(series.len(), 2, "the demo's vCPUs all have series");
            assert_eq!(s.vruntime, series);
            s.vruntime = whole.vruntime.clone();
            assert_eq!(s, whole);
        }
    }
}
