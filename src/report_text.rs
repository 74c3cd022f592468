//! `kvmscope report` as a sink: drive any [`Source`] into the model, then render one screen of
//! text or one JSON document from the snapshot.
//!
//! Kept apart from `cmd/report.rs` (which only picks the source) so the same function serves
//! live targets, trace files and synthetic streams in tests.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use model::{
    Health, HealthFigure, HealthUnit, HostInfo, Model, ModelConfig, Percentiles, ResumeLatency,
    Snapshot, SnapshotOptions, Source,
};
use serde::Serialize;

/// Where the events came from, for the report header and the JSON `source` section.
#[derive(Clone, Debug, Serialize)]
pub struct SourceSection {
    /// "live" or "file".
    pub kind: String,
    /// The source's own description ("live", "replay: FILE").
    pub describe: String,
    /// Anything a source wants to add (a trace file's header and event counts, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The whole report: what `--json` prints and what the text is rendered from.
#[derive(Clone, Debug, Serialize)]
pub struct ReportDoc {
    pub report_version: u32,
    pub source: SourceSection,
    pub host: HostInfo,
    /// Event time covered, seconds.
    pub duration_s: f64,
    /// The model's snapshot over the whole observation (lanes and chart series left out).
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// How long to drive the source.
pub struct DriveLimits<'a> {
    /// Wall-clock observation time (live sources); `None`: until the source ends.
    pub wall: Option<Duration>,
    /// Event-time limit from the first event (trace files), ns.
    pub event_span_ns: Option<u64>,
    /// Set by Ctrl-C or the caller; the source is then drained and the report printed.
    pub stop: &'a AtomicBool,
}

/// Folds everything `source` yields (within `limits`) into a fresh model.
pub fn drive(source: &mut dyn Source, limits: &DriveLimits<'_>) -> anyhow::Result<Model> {
    let mut model = Model::new(ModelConfig::report());
    let mut batch = Vec::with_capacity(8192);
    let mut aggregates = model::ExitAggregates::default();
    let began = Instant::now();
    let mut first_ts: Option<u64> = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        if limits.wall.is_some_and(|w| began.elapsed() >= w) {
            // Tell a live source to wind down; keep polling to drain what it still holds.
            limits.stop.store(true, Ordering::SeqCst);
        }
        batch.clear();
        let more = source
            .poll(&mut batch, Duration::from_millis(100))
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading events from {}", source.describe()))?;
        if let (Some(span), Some(first)) = (
            limits.event_span_ns,
            first_ts.or(batch.first().map(|e| e.ts())),
        ) {
            first_ts = Some(first);
            let end = first.saturating_add(span);
            if let Some(cut) = batch.iter().position(|e| e.ts() > end) {
                batch.truncate(cut);
                model.ingest_batch(&batch);
                break;
            }
        }
        if first_ts.is_none() {
            first_ts = batch.first().map(|e| e.ts());
        }
        model.ingest_batch(&batch);
        aggregates.clear();
        source.take_exit_aggregates(&mut aggregates);
        model.fold_aggregates(&aggregates);
        if !more {
            break;
        }
        if limits.stop.load(Ordering::SeqCst) {
            // A stopped source drains and ends by itself; if it does not within 5 s, report
            // what we have.
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(5) {
                break;
            }
        }
    }
    model.finish();
    Ok(model)
}

/// Builds the report document from a finished model.
pub fn document(model: &Model, source: SourceSection, host: HostInfo) -> ReportDoc {
    let mut snapshot = model.snapshot_with(SnapshotOptions::figures());
    if let Some(why) = host.vmclear_unattributable() {
        snapshot.health.notes.push(why.to_string());
    }
    let duration_s = snapshot.ts.saturating_sub(snapshot.start) as f64 / 1e9;
    ReportDoc {
        report_version: 1,
        source,
        host,
        duration_s,
        snapshot,
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn pct(p: &Percentiles) -> String {
    if p.count == 0 {
        "-".to_string()
    } else {
        format!("{:.0}/{:.0}/{:.0}", us(p.p50), us(p.p90), us(p.p99))
    }
}

/// One screen of text.
pub fn render_text(doc: &ReportDoc) -> String {
    let s = &doc.snapshot;
    let h = &doc.host;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "kvmscope report: {} | {:.2} s | {} {} | {} pCPUs | kvm {}",
        doc.source.describe, doc.duration_s, h.scheduler, h.kernel, h.cpus, h.kvm_flavour
    );
    let _ = writeln!(o);
    let mut shown: Vec<_> = s
        .vcpus
        .iter()
        .filter(|v| v.vcpu.is_some() || v.run_ns > 0)
        .collect();
    // By VM, then vCPU, as the dashboard lists them.
    shown.sort_by(|a, b| a.listing_key().cmp(&b.listing_key()));
    // Columns as wide as their longest name: a VM name or a tid cut short names another.
    let vm_width = shown
        .iter()
        .map(|v| v.vm.chars().count())
        .fold(8, usize::max);
    let _ = writeln!(
        o,
        "{:<vm_width$} {:>4} {:>8} {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>10} {:>8} {:>5} {:>5}",
        "VM", "vCPU", "tid", "state", "run ms", "tclk ms", "wait ms", "kwait ms", "sleep ms", "share", "entit", "weight", "vrt ms", "lag ms", "migr", "sw"
    );
    for v in &shown {
        let _ = writeln!(
            o,
            "{:<vm_width$} {:>4} {:>8} {:<8} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9.1} {:>5.1}% {:>5.1}% {:>6} {:>10} {:>8} {:>5} {:>5}",
            v.vm,
            v.vcpu.map_or("-".to_string(), |i| i.to_string()),
            v.tid,
            v.state_name(),
            ms(v.run_ns),
            ms(v.task_clock_ns),
            ms(v.wait_ns),
            v.run_delay_ns
                .map_or_else(|| "-".to_string(), |k| format!("{:.1}", ms(k))),
            ms(v.sleep_ns),
            v.cpu_share * 100.0,
            v.entitled_share * 100.0,
            v.weight,
            // Not told yet (asleep since tracking began): `-`, not 0.
            if v.vruntime_seen {
                format!("{:.1}", ms(v.vruntime))
            } else {
                "-".into()
            },
            if v.vruntime_seen {
                format!("{:.2}", v.lag as f64 / 1e6)
            } else {
                "-".into()
            },
            v.migrations,
            v.switches,
        );
    }
    let _ = writeln!(
        o,
        "(tclk: the kernel's task clock; wait: run-queue wait from tracepoints; kwait: the same \
         by the kernel's schedstat counter, '-' where the kernel has none)"
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Resume latency, µs p50/p90/p99 (switch-in → guest runs; source: {})",
        s.resume.source
    );
    let labels: Vec<String> = shown
        .iter()
        .map(|v| {
            let vcpu = v.vcpu.map_or("-".into(), |i| i.to_string());
            format!("{}/{} {}", v.vm, vcpu, v.tid)
        })
        .collect();
    let label_width = labels
        .iter()
        .map(|l| l.chars().count())
        .fold(14, usize::max);
    let _ = writeln!(
        o,
        "{:<label_width$} {:>18} {:>18} {:>18} {:>10}",
        "", "same pCPU", "migrated", "last instr → out", "wait p50"
    );
    for (v, label) in shown.iter().zip(&labels) {
        let r = &v.resume;
        let _ = writeln!(
            o,
            "{:<label_width$} {:>18} {:>18} {:>18} {:>10}",
            label,
            format!("{} (n={})", pct(&r.same_pcpu), r.same_pcpu.count),
            format!("{} (n={})", pct(&r.migrated), r.migrated.count),
            pct(&r.to_switch_out),
            if v.wait.count > 0 {
                format!("{:.0}", us(v.wait.p50))
            } else {
                "-".into()
            },
        );
    }
    let r = &s.resume;
    if r.same_pcpu.count > 0 && r.migrated.count > 0 {
        let _ = writeln!(
            o,
            "all vCPUs: same {} | migrated {} | migration cost p50 {:+.1} µs, p99 {:+.1} µs",
            pct(&r.same_pcpu),
            pct(&r.migrated),
            r.migration_cost_p50 as f64 / 1e3,
            r.migration_cost_p99 as f64 / 1e3
        );
    }
    vmclear_lines(&mut o, r);
    let _ = writeln!(o);
    let _ = writeln!(o, "pCPU occupancy (whole run)");
    for p in &s.pcpus {
        let occ = &p.occupancy_run;
        let mut parts: Vec<String> = occ
            .vms
            .iter()
            .map(|(n, f)| format!("{n} {:.1}%", f * 100.0))
            .collect();
        for (n, f) in occ.others.iter().take(3) {
            parts.push(format!("{n} {:.1}%", f * 100.0));
        }
        parts.push(format!("idle {:.1}%", occ.idle * 100.0));
        let _ = writeln!(o, "  cpu{:<3} {}", p.cpu, parts.join(", "));
    }
    let _ = writeln!(o);
    let name_width = s
        .vms
        .iter()
        .map(|vm| vm.name.chars().count())
        .fold(10, usize::max);
    for vm in &s.vms {
        let _ = writeln!(
            o,
            "{:<name_width$} pid {:<7} vCPUs {} run {:.1} ms wait {:.1} ms share {:.2} CPUs (entitled {:.2}) fairness {:.3}{}",
            vm.name,
            vm.pid,
            vm.vcpus,
            ms(vm.run_ns),
            ms(vm.wait_ns),
            vm.cpu_share,
            vm.entitled_share,
            vm.fairness,
            if vm.ended { " (ended)" } else { "" }
        );
    }
    let _ = writeln!(
        o,
        "fairness across VMs (Jain, weight-normalised): {:.3}",
        s.fairness
    );
    let mut culprits = s.wait_culprits.clone();
    culprits.sort_by_key(|c| std::cmp::Reverse(c.ns));
    if !culprits.is_empty() {
        let top: Vec<String> = culprits
            .iter()
            .take(4)
            .map(|c| {
                // Named as the culprits are (`vm/vcpuN`), not as a bare tid to look up.
                let waiter = s.vcpus.iter().find(|v| v.tid == c.tid).map_or_else(
                    || format!("tid {}", c.tid),
                    |v| {
                        format!(
                            "{} ({})",
                            model::thread_label(&v.vm, v.vcpu, &v.comm),
                            c.tid
                        )
                    },
                );
                format!("{waiter} behind {} {:.1} ms", c.culprit, ms(c.ns))
            })
            .collect();
        let _ = writeln!(o, "top wait culprits: {}", top.join("; "));
    }
    let hl = &s.health;
    health_lines(&mut o, hl);
    for n in &hl.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    o
}

/// Where the health lines wrap, so the report stays one screen wide.
const HEALTH_LINE_COLUMNS: usize = 100;

/// `health: 49400 events, 0 lost, 3 late`: the headline and every non-zero figure, in the
/// model's order and words, wrapped under the first.
fn health_lines(o: &mut String, h: &Health) {
    const FIRST: &str = "health: ";
    let mut line = FIRST.to_string();
    for (i, f) in h.shown().enumerate() {
        let item = format!("{} {}", health_value(&f), f.label);
        if i > 0 {
            if line.len() + 2 + item.len() > HEALTH_LINE_COLUMNS {
                let _ = writeln!(o, "{},", line);
                line = " ".repeat(FIRST.len());
            } else {
                line.push_str(", ");
            }
        }
        line.push_str(&item);
    }
    let _ = writeln!(o, "{line}");
}

/// A health figure's value as the text views (`report`, `trace`'s summary) print it.
pub fn health_value(f: &HealthFigure) -> String {
    match f.unit {
        HealthUnit::Count => f.value.to_string(),
        HealthUnit::Nanoseconds => format!("{:.3} ms", ms(f.value)),
    }
}

/// VT-x: the VMCLEAR IPIs migrated vCPUs waited for, their two parts and the share of the
/// migration cost they explain. (Where they cannot be attributed, a health note says why.)
fn vmclear_lines(o: &mut String, r: &ResumeLatency) {
    if r.vmclear_calls > 0 {
        let _ = writeln!(
            o,
            "VMCLEAR IPIs: {} | queue → done {} µs (delivery {}, VMCLEAR {})",
            r.vmclear_calls,
            pct(&r.vmclear),
            pct(&r.vmclear_delivery),
            pct(&r.vmclear_run)
        );
        if let Some(share) = r.vmclear_explains {
            let _ = writeln!(
                o,
                "  they account for {:.0}% of the migrated − same mean resume latency",
                share * 100.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synth::{demo_config, demo_stream, stream, SynthSource};

    fn demo_doc() -> ReportDoc {
        doc_of(demo_stream(3.0))
    }

    fn doc_of(events: Vec<model::Event>) -> ReportDoc {
        let mut src = SynthSource::new(events);
        let stop = AtomicBool::new(false);
        let model = drive(
            &mut src,
            &DriveLimits {
                wall: None,
                event_span_ns: None,
                stop: &stop,
            },
        )
        .expect("synthetic source never fails");
        let host = src.host().clone();
        document(
            &model,
            SourceSection {
                kind: "synthetic".into(),
                describe: src.describe(),
                extra: Default::default(),
            },
            host,
        )
    }

    #[test]
    fn json_carries_the_per_vcpu_headline_fields() {
        let doc = demo_doc();
        let v: serde_json::Value = serde_json::to_value(&doc).expect("serialises");
        let vcpus = v["vcpus"].as_array().expect("vcpus array");
        assert_eq!(vcpus.len(), 4);
        for c in vcpus {
            for key in [
                "tid",
                "run_ns",
                "wait_ns",
                "sleep_ns",
                "vruntime",
                "weight",
                "migrations",
            ] {
                assert!(c.get(key).is_some(), "missing {key}");
            }
            assert!(c["resume"]["same_pcpu"]["p50"].is_u64());
            assert!(c["resume"]["migrated"]["p99"].is_u64());
        }
        assert!((doc.duration_s - 3.0).abs() < 0.01, "{}", doc.duration_s);
        assert!(v["pcpus"][0]["lane"]
            .as_array()
            .is_some_and(|l| l.is_empty()));
        assert_eq!(v["source"]["kind"], "synthetic");
    }

    #[test]
    fn event_span_limits_a_file_report() {
        let mut src = SynthSource::new(demo_stream(3.0));
        let stop = AtomicBool::new(false);
        let model = drive(
            &mut src,
            &DriveLimits {
                wall: None,
                event_span_ns: Some(1_000_000_000),
                stop: &stop,
            },
        )
        .expect("drive");
        let s = model.snapshot();
        assert!(s.ts - s.start <= 1_000_000_000, "{}", s.ts - s.start);
        assert!(s.ts - s.start > 900_000_000);
    }

    #[test]
    fn text_fits_one_screen_and_names_everything() {
        let text = render_text(&demo_doc());
        assert!(text.lines().count() <= 40, "{text}");
        for needle in [
            "vm0",
            "vm1",
            "same pCPU",
            "migrated",
            "cpu0",
            "fairness",
            "health",
        ] {
            assert!(text.contains(needle), "no {needle} in:\n{text}");
        }
        assert!(!text.contains("missed samples"), "{text}");
    }

    #[test]
    fn a_vruntime_no_switch_has_told_reads_as_a_dash() {
        use model::synth::{se, task_info, Switch};
        let doc = doc_of(vec![
            task_info(0, 11, 100, "vm0", Some(0), 0),
            task_info(0, 12, 100, "vm0", Some(1), 0),
            Switch::new(1_000, 0, 0, 11)
                .next_se(se(5_000_000, 1024, 0))
                .build(),
            Switch::new(2_000_000, 0, 11, 0)
                .prev_se(se(7_000_000, 1024, 2_000_000))
                .build(),
        ]);
        let text = render_text(&doc);
        let row = |tid: &str| {
            text.lines()
                .find(|l| l.split_whitespace().nth(2) == Some(tid))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        // VM vCPU tid state run tclk wait kwait sleep share entit weight vrt lag ...
        assert_eq!(row("11")[12], "7.0", "{text}");
        assert_eq!(&row("12")[12..14], ["-", "-"], "{text}");
    }

    #[test]
    fn vcpu_rows_are_listed_by_vm_then_vcpu_whatever_order_they_were_announced_in() {
        use model::synth::task_info;
        let doc = doc_of(vec![
            task_info(0, 12, 100, "vm0", Some(0), 0),
            task_info(1, 14, 100, "vm1", Some(0), 0),
            task_info(2, 13, 100, "vm0", Some(1), 0),
            task_info(3, 11, 100, "vm1", Some(1), 0),
        ]);
        let text = render_text(&doc);
        let rows: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("vm"))
            .take(4)
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            rows,
            ["vm0 0 12", "vm0 1 13", "vm1 0 14", "vm1 1 11"],
            "{text}"
        );
    }

    #[test]
    fn wait_culprits_name_the_waiting_vcpu_as_they_name_the_culprit() {
        let doc = demo_doc();
        let text = render_text(&doc);
        let line = text
            .lines()
            .find(|l| l.starts_with("top wait culprits: "))
            .expect("the demo waits");
        let mut culprits = doc.snapshot.wait_culprits.clone();
        culprits.sort_by_key(|c| std::cmp::Reverse(c.ns));
        let top = &culprits[0];
        let v = doc
            .snapshot
            .vcpus
            .iter()
            .find(|v| v.tid == top.tid)
            .unwrap();
        let waiter = model::thread_label(&v.vm, v.vcpu, &v.comm);
        assert!(
            line.contains(&format!("{waiter} ({}) behind {}", top.tid, top.culprit)),
            "{line}"
        );
    }

    #[test]
    fn every_non_zero_health_figure_is_in_the_health_lines() {
        let mut doc = demo_doc();
        doc.snapshot.health = model::synth::health_with_every_figure();
        let text = render_text(&doc);
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("health: "))
            .take_while(|l| !l.starts_with("  note: "))
            .collect();
        for line in &lines {
            assert!(line.chars().count() <= HEALTH_LINE_COLUMNS + 1, "{line}");
        }
        let health = lines.join(" ");
        for f in doc.snapshot.health.figures() {
            let item = format!("{} {}", health_value(&f), f.label);
            assert!(health.contains(&item), "no {item:?} in:\n{text}");
        }
    }

    #[test]
    fn a_clean_run_shows_its_events_and_lost_only() {
        let text = render_text(&demo_doc());
        let line = text
            .lines()
            .find(|l| l.starts_with("health: "))
            .expect("a health line");
        assert!(line.ends_with(" events, 0 lost"), "{line}");
    }

    #[test]
    fn long_vm_names_and_tids_are_shown_whole() {
        // The demo's VM names and tids on a real host: "interactive", five-digit tids.
        let mut cfg = demo_config();
        for t in cfg.tasks.iter_mut().filter(|t| t.tracked) {
            t.vm = if t.vm == "vm0" {
                "batch"
            } else {
                "interactive"
            }
            .into();
            t.tid += 17_000;
        }
        let text = render_text(&doc_of(stream(cfg, 2.0)));
        for row in [
            "interactive/0 19001",
            "interactive/1 19002",
            "batch/0 18001",
        ] {
            assert!(text.contains(row), "no {row:?} in:\n{text}");
        }
        let table_row = text
            .lines()
            .find(|l| l.contains("19002") && !l.contains('/'))
            .expect("vCPU table row of tid 19002");
        assert!(table_row.starts_with("interactive "), "{table_row}");
        // The VM lines line up however long a name is.
        let pid_at: Vec<usize> = text
            .lines()
            .filter(|l| l.contains(" pid ") && l.contains(" vCPUs "))
            .map(|l| l.find(" pid ").unwrap())
            .collect();
        assert_eq!(pid_at.len(), 2, "{text}");
        assert!(
            pid_at.iter().all(|&p| p == pid_at[0]),
            "{pid_at:?} in:\n{text}"
        );
    }
}
