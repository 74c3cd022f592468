//! What kvmscope did not observe or could not use, as one labelled list.
//!
//! [`Health`] is the serde-able record (`report --json`'s `health`); [`Health::figures`] is
//! the one list every sink renders (report text, `trace`'s summary, the dashboard's health
//! line, the Prometheus exporter), so a new counter is named, labelled, classed and
//! documented once, here, and no view can leave it out.

use serde::{Deserialize, Serialize};

/// Anything odd the model noticed; views show it so numbers are never silently wrong.
/// Each counter is described in [`Health::figures`].
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Health {
    pub events: u64,
    pub lost_events: u64,
    pub out_of_order: u64,
    pub unknown_tids: u64,
    pub tid_reuse: u64,
    pub uncertain_ns: u64,
    #[serde(default)]
    pub malformed: u64,
    #[serde(default)]
    pub unpaired_switch_outs: u64,
    #[serde(default)]
    pub counter_samples: u64,
    #[serde(default)]
    pub retired_threads: u64,
    #[serde(default)]
    pub aggregated_exits: u64,
    #[serde(default)]
    pub aggregated_port_io: u64,
    #[serde(default)]
    pub missed_counter_samples: u64,
    #[serde(default)]
    pub track_failures: u64,
    /// Human-readable notes ("no guest entry/exit events seen on this host", ...).
    pub notes: Vec<String>,
}

/// What a figure says about the numbers beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthKind {
    /// Something happened that kvmscope did not see: figures are missing part of the run.
    Unobserved,
    /// Input the model could not take at face value: late, unknown, odd or malformed.
    Anomaly,
    /// How the figures were made (how many events, from counters, aggregated): nothing lost.
    Info,
}

/// The unit of a figure's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthUnit {
    Count,
    Nanoseconds,
}

/// How the Prometheus exporter publishes a figure. A public metric contract: once a name is
/// published it never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthMetric {
    /// Its own counter family, `kvmscope_<name>_total` (`_seconds_total` for nanoseconds),
    /// with the figure's `about` as help.
    Family(&'static str),
    /// A `kind` label value in its kind's family: `kvmscope_unobserved_total` for
    /// [`HealthKind::Unobserved`], `kvmscope_model_anomalies_total` for
    /// [`HealthKind::Anomaly`]. (An [`HealthKind::Info`] figure has a family of its own.)
    Kind(&'static str),
}

/// One health counter, with everything a view needs to show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthFigure {
    /// The field's name in [`Health`] and `report --json` (stable).
    pub name: &'static str,
    /// What people read: the same words in every view.
    pub label: &'static str,
    pub value: u64,
    pub unit: HealthUnit,
    pub kind: HealthKind,
    pub metric: HealthMetric,
    /// The stream's size and its loss: every view shows them first, zero included (a zero
    /// there is the claim that nothing was lost). Every other figure is shown when non-zero.
    pub headline: bool,
    /// What it counts and why it matters, one sentence (the exporter's help text).
    pub about: &'static str,
}

impl HealthFigure {
    fn new(
        name: &'static str,
        label: &'static str,
        value: u64,
        kind: HealthKind,
        metric: HealthMetric,
        about: &'static str,
    ) -> Self {
        HealthFigure {
            name,
            label,
            value,
            unit: HealthUnit::Count,
            kind,
            metric,
            headline: false,
            about,
        }
    }

    fn headline(self) -> Self {
        HealthFigure {
            headline: true,
            ..self
        }
    }

    fn in_ns(self) -> Self {
        HealthFigure {
            unit: HealthUnit::Nanoseconds,
            ..self
        }
    }

    /// Whether a view shows it: headline figures always, the others when non-zero.
    pub fn shown(&self) -> bool {
        self.headline || self.value > 0
    }
}

/// How many figures [`Health::figures`] lists.
pub const HEALTH_FIGURES: usize = 14;

impl Health {
    /// Every counter, in the order views show them: the headline, what was not observed,
    /// anomalies, then how the figures were made.
    pub fn figures(&self) -> [HealthFigure; HEALTH_FIGURES] {
        use HealthKind::{Anomaly, Info, Unobserved};
        use HealthMetric::{Family, Kind};
        // Named one by one (no `..`), so a new field does not compile until it is listed.
        let Health {
            events,
            lost_events,
            out_of_order,
            unknown_tids,
            tid_reuse,
            uncertain_ns,
            malformed,
            unpaired_switch_outs,
            counter_samples,
            retired_threads,
            aggregated_exits,
            aggregated_port_io,
            missed_counter_samples,
            track_failures,
            notes: _,
        } = *self;
        [
            HealthFigure::new(
                "events",
                "events",
                events,
                Info,
                Family("events"),
                "Events the model folded in",
            )
            .headline(),
            HealthFigure::new(
                "lost_events",
                "lost",
                lost_events,
                Unobserved,
                Family("events_lost"),
                "Events lost before the model saw them: records the kernel found no room for \
                 (a ring buffer full), and events a recorder's writer or the bundled VMM \
                 could not keep",
            )
            .headline(),
            HealthFigure::new(
                "uncertain_ns",
                "uncertain",
                uncertain_ns,
                Unobserved,
                Family("uncertain"),
                "Time made uncertain by lost events: from each loss back to the last event seen \
                 from its CPU",
            )
            .in_ns(),
            HealthFigure::new(
                "missed_counter_samples",
                "missed samples",
                missed_counter_samples,
                Unobserved,
                Kind("counter_samples"),
                "Counter samples (counters mode) not taken because the thread's /proc files \
                 were gone (it was ending): its figures stop at its previous sample",
            ),
            HealthFigure::new(
                "track_failures",
                "untracked threads",
                track_failures,
                Unobserved,
                Kind("threads"),
                "Threads a rescan found and could not track, each counted once while it keeps \
                 failing (again if it fails after being tracked): their events are left out",
            ),
            HealthFigure::new(
                "out_of_order",
                "late",
                out_of_order,
                Anomaly,
                Kind("out_of_order"),
                "Events older than the reorder window allows, folded in late or dropped",
            ),
            HealthFigure::new(
                "unknown_tids",
                "unknown tids",
                unknown_tids,
                Anomaly,
                Kind("unknown_tid"),
                "Threads the model was never told of whose events came (scheduler entities, \
                 exit aggregates, counter samples, affinity records), each counted once",
            ),
            HealthFigure::new(
                "tid_reuse",
                "tid reuse",
                tid_reuse,
                Anomaly,
                Kind("tid_reuse"),
                "Thread ids announced again for another thread: the old thread ends there and \
                 the new one starts its own row",
            ),
            HealthFigure::new(
                "malformed",
                "malformed",
                malformed,
                Anomaly,
                Kind("malformed"),
                "Events the model could not use (CPU number out of range, impossible intervals)",
            ),
            HealthFigure::new(
                "unpaired_switch_outs",
                "unpaired switch-outs",
                unpaired_switch_outs,
                Anomaly,
                Kind("unpaired_switch_out"),
                "Switch-outs of a tracked thread with no switch-in since its previous \
                 switch-out: switch events missing without a lost count (the kernel's \
                 tracepoint skips a few on some hosts)",
            ),
            HealthFigure::new(
                "counter_samples",
                "counter samples",
                counter_samples,
                Info,
                Family("thread_samples"),
                "Counter samples folded in: non-zero when the figures come from the kernel's \
                 counters (no BPF), where views that need switch events (lanes, resume \
                 latency) have nothing",
            ),
            HealthFigure::new(
                "aggregated_exits",
                "aggregated exits",
                aggregated_exits,
                Info,
                Family("aggregated_exits"),
                "Guest exits counted in the kernel and folded in as counts (--exits aggregate), \
                 not as events: exit to switch-out and in-guest states need streamed exits",
            ),
            HealthFigure::new(
                "aggregated_port_io",
                "aggregated port I/O",
                aggregated_port_io,
                Info,
                Family("aggregated_port_io"),
                "Port I/O exits (kvm_pio) counted in the kernel per vCPU, port and direction \
                 (--exits aggregate), not as events",
            ),
            HealthFigure::new(
                "retired_threads",
                "retired threads",
                retired_threads,
                Info,
                Family("threads_retired"),
                "Ended threads the model let go once they had ended long enough (an always-on \
                 model): gone from the per-thread figures, their counters kept in their VM's",
            ),
        ]
    }

    /// The figures a view shows: the headline, then every non-zero one.
    pub fn shown(&self) -> impl Iterator<Item = HealthFigure> {
        self.figures().into_iter().filter(HealthFigure::shown)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    #[test]
    fn every_counter_of_health_is_listed_once_with_its_value() {
        // Found through serde, not by hand: a counter added to `Health` and not to
        // `figures()` is a field here and no figure there.
        let health = crate::synth::health_with_every_figure();
        let json = serde_json::to_value(&health).expect("serialize");
        let fields: BTreeMap<String, u64> = json
            .as_object()
            .expect("an object")
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
        let back: Health = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, health);
        let listed: BTreeMap<String, u64> = back
            .figures()
            .iter()
            .map(|f| (f.name.to_string(), f.value))
            .collect();
        assert_eq!(listed, fields);
        let values: HashSet<u64> = fields.values().copied().collect();
        assert_eq!(values.len(), fields.len(), "distinct values: {fields:?}");
        assert!(values.iter().all(|&v| v > 0), "{fields:?}");
    }

    #[test]
    fn labels_and_metric_names_are_distinct_and_kinds_have_their_family() {
        let figures = Health::default().figures();
        let labels: HashSet<_> = figures.iter().map(|f| f.label).collect();
        assert_eq!(labels.len(), figures.len());
        let metrics: HashSet<_> = figures.iter().map(|f| (f.kind, f.metric)).collect();
        assert_eq!(metrics.len(), figures.len());
        for f in &figures {
            assert!(
                !(f.kind == HealthKind::Info && matches!(f.metric, HealthMetric::Kind(_))),
                "{}: an info figure has a family of its own",
                f.name
            );
        }
    }

    #[test]
    fn views_show_the_headline_and_every_non_zero_figure() {
        let shown: Vec<_> = Health::default().shown().map(|f| f.name).collect();
        assert_eq!(shown, ["events", "lost_events"]);
        let every = crate::synth::health_with_every_figure();
        assert_eq!(every.shown().count(), HEALTH_FIGURES);
        let one = Health {
            tid_reuse: 2,
            ..Health::default()
        };
        let shown: Vec<_> = one.shown().map(|f| (f.label, f.value)).collect();
        assert_eq!(shown, [("events", 0), ("lost", 0), ("tid reuse", 2)]);
    }
}
