//! The metric set as a scraper sees it: OpenMetrics structure, values equal to the model's,
//! series of ended VMs retired, and `promtool check metrics` clean on the classic text.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use metrics::{openmetrics_text, registry, Board, SourceFacts};
use model::synth::*;
use model::{Event, Model, Snapshot};

fn snapshot_of(events: &[Event]) -> Snapshot {
    let mut m = Model::new(metrics::exporter_model_config());
    m.ingest_batch(events);
    m.finish();
    m.snapshot()
}

fn facts() -> SourceFacts {
    SourceFacts {
        version: "0.1.0-test".into(),
        probes_attached: true,
    }
}

fn exposition(snap: Snapshot) -> String {
    let board = Arc::new(Board::new());
    board.publish(snap);
    openmetrics_text(&registry(board, facts())).expect("encode")
}

/// Sample lines: full series text (name and labels) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", s.keys().collect::<Vec<_>>()))
}

#[test]
fn openmetrics_structure_holds_for_every_family() {
    let text = exposition(snapshot_of(&demo_stream(3.0)));
    assert!(text.ends_with("# EOF\n"), "the exposition ends with # EOF");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.splitn(4, ' ');
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(ty)) => {
                assert!(
                    types.insert(name.into(), ty.into()).is_none(),
                    "{name} twice"
                );
            }
            (Some("#"), Some("HELP"), Some(name), Some(help)) => {
                assert!(!help.is_empty());
                helps.insert(name.to_string());
            }
            (Some("#"), Some("UNIT"), Some(name), Some(unit)) => {
                assert!(
                    name.ends_with(&format!("_{unit}")),
                    "{name}: unit {unit} must be its suffix"
                );
                units.insert(name.into(), unit.into());
            }
            _ => {}
        }
    }
    assert!(types.len() >= 20, "{types:?}");
    for (name, ty) in &types {
        assert!(name.starts_with("kvmscope_"), "{name}");
        assert!(helps.contains(name), "{name} has no HELP");
        assert!(
            !name.ends_with("_total"),
            "family {name} must not carry _total"
        );
        if name.ends_with("_seconds") {
            assert_eq!(
                units.get(name).map(String::as_str),
                Some("seconds"),
                "{name}"
            );
        }
        let _ = ty;
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().expect("name");
        let family = types
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{name} belongs to no family"));
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match types[family].as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "info" => &["_info"],
            "histogram" => &["_bucket", "_sum", "_count"],
            other => panic!("unexpected type {other}"),
        };
        assert!(
            allowed.contains(&suffix),
            "{name}: suffix {suffix:?} in a {}",
            types[family]
        );
    }
}

#[test]
fn what_the_source_could_not_observe_is_the_models_health_by_kind() {
    let mut events = demo_stream(1.0);
    let end = events.iter().map(Event::ts).max().unwrap_or(0);
    events.push(unobserved(end, model::UnobservedKind::CounterSamples, 3));
    events.push(unobserved(end, model::UnobservedKind::Threads, 1));
    let snap = snapshot_of(&events);
    assert_eq!(
        (
            snap.health.missed_counter_samples,
            snap.health.track_failures
        ),
        (3, 1)
    );
    let s = samples(&exposition(snap));
    let kind = |k: &str| value(&s, &format!("kvmscope_unobserved_total{{kind=\"{k}\"}}"));
    assert_eq!((kind("counter_samples"), kind("threads")), (3.0, 1.0));
}

#[test]
fn every_health_figure_is_a_series_under_its_published_name() {
    let mut snap = snapshot_of(&demo_stream(1.0));
    snap.health = health_with_every_figure();
    let s = samples(&exposition(snap.clone()));
    let mut seen = BTreeSet::new();
    for f in snap.health.figures() {
        let (series, want) = match (f.metric, f.unit) {
            (model::HealthMetric::Family(name), model::HealthUnit::Count) => {
                (format!("kvmscope_{name}_total"), f.value as f64)
            }
            (model::HealthMetric::Family(name), model::HealthUnit::Nanoseconds) => (
                format!("kvmscope_{name}_seconds_total"),
                f.value as f64 / 1e9,
            ),
            (model::HealthMetric::Kind(kind), _) => {
                let family = match f.kind {
                    model::HealthKind::Unobserved => "unobserved",
                    model::HealthKind::Anomaly => "model_anomalies",
                    model::HealthKind::Info => panic!("{}: info has its own family", f.name),
                };
                (
                    format!("kvmscope_{family}_total{{kind=\"{kind}\"}}"),
                    f.value as f64,
                )
            }
        };
        assert_eq!(value(&s, &series), want, "{}", f.name);
        assert!(seen.insert(series));
    }
    // The names published before the figures were one list: a public contract.
    for series in [
        "kvmscope_events_total",
        "kvmscope_events_lost_total",
        "kvmscope_uncertain_seconds_total",
        "kvmscope_threads_retired_total",
        "kvmscope_unobserved_total{kind=\"counter_samples\"}",
        "kvmscope_unobserved_total{kind=\"threads\"}",
        "kvmscope_model_anomalies_total{kind=\"out_of_order\"}",
        "kvmscope_model_anomalies_total{kind=\"unknown_tid\"}",
        "kvmscope_model_anomalies_total{kind=\"tid_reuse\"}",
        "kvmscope_model_anomalies_total{kind=\"malformed\"}",
    ] {
        assert!(seen.contains(series), "{series} is no longer published");
    }
}

#[test]
fn values_are_the_models_per_vcpu_in_base_units() {
    let snap = snapshot_of(&demo_stream(3.0));
    let s = samples(&exposition(snap.clone()));
    for v in snap.vcpus.iter().filter(|v| v.vcpu.is_some()) {
        let l = format!("domain=\"{}\",vcpu=\"{}\"", v.vm, v.vcpu.unwrap_or(0));
        let run = value(&s, &format!("kvmscope_vcpu_run_seconds_total{{{l}}}"));
        assert!((run - v.task_clock_ns as f64 / 1e9).abs() < 1e-9, "{l}");
        let wait = value(
            &s,
            &format!("kvmscope_vcpu_runqueue_wait_seconds_total{{{l}}}"),
        );
        let want = v.run_delay_ns.unwrap_or(v.wait_ns) as f64 / 1e9;
        assert!((wait - want).abs() < 1e-9, "{l}");
        assert!(run > 0.1, "{l}: a demo vCPU runs");
        let migrations = value(&s, &format!("kvmscope_vcpu_migrations_total{{{l}}}"));
        assert_eq!(migrations, v.migrations as f64);
        let invol = value(
            &s,
            &format!("kvmscope_vcpu_context_switches_total{{{l},kind=\"involuntary\"}}"),
        );
        assert_eq!(invol, v.involuntary_switches as f64);
        // Histograms: cumulative buckets, +Inf equal to the count.
        for (migrated, p) in [("false", &v.resume.same_pcpu), ("true", &v.resume.migrated)] {
            let hl = format!("{l},migrated=\"{migrated}\"");
            let count = value(
                &s,
                &format!("kvmscope_vcpu_resume_latency_seconds_count{{{hl}}}"),
            );
            assert_eq!(count, p.count as f64, "{hl}");
            let buckets = buckets(&s, "kvmscope_vcpu_resume_latency_seconds", &hl);
            assert_eq!(
                buckets.len(),
                model::LATENCY_BUCKET_BOUNDS_NS.len() + 1,
                "{hl}"
            );
            assert_eq!(
                buckets.last(),
                Some(&(f64::INFINITY, count)),
                "{hl}: +Inf = count"
            );
            for (i, (le, n)) in buckets.iter().enumerate().skip(1) {
                assert!(
                    *n >= buckets[i - 1].1,
                    "{hl} le={le}: buckets are cumulative"
                );
            }
            for ((le, _), ns) in buckets.iter().zip(model::LATENCY_BUCKET_BOUNDS_NS) {
                assert!((le - ns as f64 / 1e9).abs() < 1e-15, "{hl}: bound {le}");
            }
            if p.count > 0 {
                let sum = value(
                    &s,
                    &format!("kvmscope_vcpu_resume_latency_seconds_sum{{{hl}}}"),
                );
                let mean = sum / count * 1e9;
                assert!(
                    (mean - p.mean).abs() <= p.mean * 0.02,
                    "{hl}: mean {mean} vs {}",
                    p.mean
                );
            }
        }
    }
    // The demo's vm0 resumes in 39 µs on the same pCPU: in the (25, 50] µs bucket.
    let same = buckets(
        &s,
        "kvmscope_vcpu_resume_latency_seconds",
        "domain=\"vm0\",vcpu=\"0\",migrated=\"false\"",
    );
    let at = |le: f64| same.iter().find(|b| (b.0 - le).abs() < 1e-12).map(|b| b.1);
    assert_eq!(at(25e-6), Some(0.0));
    assert!(at(50e-6) > Some(0.0));
    let pcpu_total: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("kvmscope_pcpu_seconds_total{cpu=\"0\""))
        .map(|(_, v)| *v)
        .sum();
    assert!(
        pcpu_total > 2.5 && pcpu_total < 3.5,
        "pCPU 0 time adds up to the run: {pcpu_total}"
    );
    assert_eq!(
        value(&s, "kvmscope_build_info{version=\"0.1.0-test\"}"),
        1.0
    );
    assert_eq!(value(&s, "kvmscope_probes_attached"), 1.0);
}

/// The `(le, cumulative count)` pairs of histogram `family` for the series with `labels`,
/// in bound order.
fn buckets(s: &BTreeMap<String, f64>, family: &str, labels: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{family}_bucket{{le=\"");
    let tail = format!("\",{labels}}}");
    let mut out: Vec<(f64, f64)> = s
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix(&tail)?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, *v))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[test]
fn a_vm_that_ended_has_no_series_and_a_shared_name_gets_its_pid() {
    let mut events = demo_stream(1.0);
    let end = events.last().map_or(0, Event::ts) + 1;
    events.push(vm_ended(end, 2000, "vm1"));
    // A second process that also calls its VM vm0.
    events.push(task_info(end + 1, 3001, 3000, "vm0", Some(0), 0));
    events.push(switch(end + 2, 1, 0, 3001));
    let s = samples(&exposition(snapshot_of(&events)));
    assert!(
        !s.keys().any(|k| k.contains("domain=\"vm1\"")),
        "vm1 ended: {:#?}",
        s.keys().filter(|k| k.contains("vm1")).collect::<Vec<_>>()
    );
    value(
        &s,
        "kvmscope_vcpu_run_seconds_total{domain=\"vm0\",vcpu=\"0\"}",
    );
    value(
        &s,
        "kvmscope_vcpu_run_seconds_total{domain=\"vm0-3000\",vcpu=\"0\"}",
    );
    value(
        &s,
        "kvmscope_vcpu_info{domain=\"vm0-3000\",vcpu=\"0\",tid=\"3001\",pid=\"3000\"}",
    );
    // The model keys VMs by name, so its per-VM figures for vm0 take in both processes.
    assert_eq!(value(&s, "kvmscope_vm_vcpus{domain=\"vm0\"}"), 3.0);
}

#[test]
fn promtool_finds_nothing_to_lint_in_the_classic_text() {
    let board = Arc::new(Board::new());
    board.publish(snapshot_of(&demo_stream(2.0)));
    let reg = registry(board, facts());
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &reg).expect("encode");
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            panic!("cannot run promtool ({e}): run scripts/setup.sh, which installs prometheus")
        }
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The series names in `exprs` (recording-rule names, `kvmscope:…`, are not series).
fn queried_names(exprs: impl Iterator<Item = String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("kvmscope_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

fn deploy(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Every series name a scrape of the synthetic demo (VT-x flavour for exits) carries.
fn scraped_names() -> BTreeSet<String> {
    let mut events = demo_stream(2.0);
    events.extend(demo_stream_vmx(2.0));
    events.sort_by_key(Event::ts);
    samples(&exposition(snapshot_of(&events)))
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k).to_string())
        .collect()
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_in_a_scrape() {
    let text = std::fs::read_to_string(deploy("grafana/kvmscope.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        serde_json::Value::String(s) if k == "expr" || k == "query" => {
                            out.push(s.clone())
                        }
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    let queried = queried_names(exprs.into_iter());
    assert!(queried.len() >= 15, "{queried:?}");
    let scraped = scraped_names();
    let missing: Vec<_> = queried.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which no scrape has"
    );
}

fn promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): run scripts/setup.sh"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests_and_query_scraped_metrics() {
    let dir = deploy("prometheus");
    promtool(&["check", "rules", "kvmscope.rules.yml"], &dir);
    let out = promtool(&["test", "rules", "kvmscope.rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = std::fs::read_to_string(dir.join("kvmscope.rules.yml")).expect("rules");
    let queried = queried_names(rules.lines().map(str::to_string));
    let scraped = scraped_names();
    let missing: Vec<_> = queried.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "the rules query {missing:?}, which no scrape has"
    );
}
