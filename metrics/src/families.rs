//! The metric set: every family kvmscope exports, built from one model [`Snapshot`] at scrape
//! time (a prometheus-client [`Collector`]), with the labels the libvirt exporters use
//! (`domain`, `vcpu`) so the series join theirs one to one.
//!
//! Architecture invariant: this module only renames and converts units (ns → s). Every figure
//! is the model's; if one is missing it goes into `Snapshot` first.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use model::{
    HealthKind, HealthMetric, HealthUnit, LatencyBuckets, Snapshot, VcpuSnapshot,
    LATENCY_BUCKET_BOUNDS_NS,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::board::Board;

/// Prefix of every family.
pub const PREFIX: &str = "kvmscope";

/// Facts about the exporter and its source that the model does not hold.
#[derive(Clone, Debug)]
pub struct SourceFacts {
    /// `kvmscope --version`.
    pub version: String,
    /// The eBPF probes are attached (false with `--no-bpf`: counters only).
    pub probes_attached: bool,
}

/// Builds the families from the board's latest snapshot on every scrape.
#[derive(Debug)]
pub struct SnapshotCollector {
    board: Arc<Board>,
    facts: SourceFacts,
}

impl SnapshotCollector {
    pub fn new(board: Arc<Board>, facts: SourceFacts) -> Self {
        SnapshotCollector { board, facts }
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        encode_snapshot(&self.board.latest(), &self.facts, encoder)
    }
}

/// A registry (prefix `kvmscope`) whose only collector reads `board` at scrape time.
pub fn registry(board: Arc<Board>, facts: SourceFacts) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(SnapshotCollector::new(board, facts)));
    registry
}

/// OpenMetrics 1.0 text of `registry` (ends with `# EOF`).
pub fn openmetrics_text(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

type Labels<'a> = [(&'static str, &'a str); 2];
/// The label set of a family with one series.
const NO_LABELS: [(&str, &str); 0] = [];

/// One exported vCPU: its labels and its figures.
struct Row<'a> {
    domain: String,
    vcpu: String,
    v: &'a VcpuSnapshot,
}

impl Row<'_> {
    fn labels(&self) -> Labels<'_> {
        [("domain", &self.domain), ("vcpu", &self.vcpu)]
    }
}

/// The vCPUs to export: live threads with a vCPU index. A VM name shared by two live
/// processes (two bundled VMMs both call theirs `vm0`) would give duplicate series, so every
/// process after the first (by pid) gets `NAME-PID` as its domain.
fn rows<'a>(snap: &'a Snapshot, owner_of_name: &HashMap<&str, u32>) -> (Vec<Row<'a>>, usize) {
    let mut unlabelled = 0;
    let mut rows = Vec::with_capacity(snap.vcpus.len());
    for v in snap.vcpus.iter().filter(|v| !v.ended) {
        let Some(index) = v.vcpu else {
            unlabelled += 1;
            continue;
        };
        rows.push(Row {
            domain: domain_name(owner_of_name, &v.vm, v.pid),
            vcpu: index.to_string(),
            v,
        });
    }
    (rows, unlabelled)
}

/// The first (lowest) pid of the live vCPU threads per VM name.
fn name_owners(snap: &Snapshot) -> HashMap<&str, u32> {
    let mut owners: HashMap<&str, u32> = HashMap::new();
    for v in snap.vcpus.iter().filter(|v| !v.ended) {
        let pid = owners.entry(v.vm.as_str()).or_insert(v.pid);
        *pid = (*pid).min(v.pid);
    }
    owners
}

fn domain_name(owner_of_name: &HashMap<&str, u32>, vm: &str, pid: u32) -> String {
    match owner_of_name.get(vm) {
        Some(&first) if first != pid => format!("{vm}-{pid}"),
        _ => vm.to_string(),
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Writes one family: its descriptor, then whatever `body` encodes into it.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    body: impl FnOnce(&mut MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, ty)?;
    body(&mut m)
}

fn counter<L: EncodeLabelSet>(m: &mut MetricEncoder, labels: &L, v: f64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, f64>(&v, None)
}

fn gauge<L: EncodeLabelSet>(m: &mut MetricEncoder, labels: &L, v: f64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn histogram<L: EncodeLabelSet>(
    m: &mut MetricEncoder,
    labels: &L,
    b: &LatencyBuckets,
) -> fmt::Result {
    let mut buckets = [(0.0f64, 0u64); LATENCY_BUCKET_BOUNDS_NS.len() + 1];
    for (i, slot) in buckets.iter_mut().enumerate() {
        let le = LATENCY_BUCKET_BOUNDS_NS
            .get(i)
            .map_or(f64::INFINITY, |&ns| secs(ns));
        *slot = (le, b.counts[i]);
    }
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        secs(b.sum_ns),
        b.count(),
        &buckets,
        None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
    )
}

/// The whole metric set of one snapshot.
pub fn encode_snapshot(
    snap: &Snapshot,
    facts: &SourceFacts,
    mut enc: DescriptorEncoder,
) -> fmt::Result {
    let owner_of_name = name_owners(snap);
    let (rows, unlabelled) = rows(snap, &owner_of_name);
    let s = Some(&Unit::Seconds);
    let ratio = Unit::Other("ratio".into());
    use MetricType::{Counter, Gauge, Histogram, Info};

    // ----- per vCPU -----
    let per_vcpu_counter =
        |enc: &mut DescriptorEncoder,
         name: &str,
         help: &str,
         unit: Option<&Unit>,
         value: &dyn Fn(&VcpuSnapshot) -> Option<f64>| {
            family(enc, name, help, unit, Counter, |m| {
                for r in &rows {
                    if let Some(x) = value(r.v) {
                        counter(m, &r.labels(), x)?;
                    }
                }
                Ok(())
            })
        };
    per_vcpu_counter(
        &mut enc,
        "vcpu_run",
        "Time the vCPU thread ran on a pCPU: the kernel's se.sum_exec_runtime (schedstat field 1)",
        s,
        &|v| Some(secs(v.task_clock_ns)),
    )?;
    per_vcpu_counter(
        &mut enc,
        "vcpu_runqueue_wait",
        "Time the vCPU thread was runnable but not running: the kernel's run delay (schedstat field 2), libvirt's vcpu delay, the steal time a paravirtual guest sees",
        s,
        &|v| Some(secs(v.run_delay_ns.unwrap_or(v.wait_ns))),
    )?;
    per_vcpu_counter(
        &mut enc,
        "vcpu_sleep",
        "Time the vCPU thread was blocked (switched out voluntarily)",
        s,
        &|v| Some(secs(v.sleep_ns)),
    )?;
    family(
        &mut enc,
        "vcpu_context_switches",
        "Switches out of the vCPU thread, by kind: voluntary (it blocked) or involuntary (preempted)",
        None,
        Counter,
        |m| {
            for r in &rows {
                for (kind, n) in [
                    ("voluntary", r.v.voluntary_switches),
                    ("involuntary", r.v.involuntary_switches),
                ] {
                    counter(m, &(r.labels(), [("kind", kind)]), n as f64)?;
                }
            }
            Ok(())
        },
    )?;
    per_vcpu_counter(
        &mut enc,
        "vcpu_migrations",
        "Moves of the vCPU thread to another pCPU",
        None,
        &|v| Some(v.migrations as f64),
    )?;
    per_vcpu_counter(
        &mut enc,
        "vcpu_guest_gap",
        "Off-CPU time the guest itself saw (gap records of the bundled VMM's guests): guest-seen steal",
        s,
        &|v| (v.guest_gaps > 0).then(|| secs(v.guest_gap_ns)),
    )?;
    per_vcpu_counter(
        &mut enc,
        "vcpu_guest_gaps",
        "Off-CPU gaps the guest recorded",
        None,
        &|v| (v.guest_gaps > 0).then_some(v.guest_gaps as f64),
    )?;
    family(
        &mut enc,
        "vcpu_wait_latency",
        "Run-queue waits of the vCPU thread, wakeup or preemption to running again",
        s,
        Histogram,
        |m| {
            for r in &rows {
                histogram(m, &r.labels(), &r.v.latency_buckets.wait)?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vcpu_resume_latency",
        "Switch-in of the vCPU thread to the guest running again, by whether it came back on another pCPU (migrated: VMCS/VMCB reload)",
        s,
        Histogram,
        |m| {
            for r in &rows {
                let b = &r.v.latency_buckets;
                histogram(m, &(r.labels(), [("migrated", "false")]), &b.resume_same_pcpu)?;
                histogram(m, &(r.labels(), [("migrated", "true")]), &b.resume_migrated)?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vcpu_vruntime_lag",
        "vruntime of the vCPU thread minus the smallest vruntime on its run queue (positive: it has run ahead)",
        s,
        Gauge,
        |m| {
            for r in &rows {
                gauge(m, &r.labels(), r.v.lag as f64 / 1e9)?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vcpu_weight",
        "Scheduler weight of the vCPU thread (1024 at nice 0)",
        None,
        Gauge,
        |m| {
            for r in &rows {
                gauge(m, &r.labels(), f64::from(r.v.weight))?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vcpu_entitled_share",
        "Share of one pCPU the vCPU's weight entitles it to among the tracked threads",
        Some(&ratio),
        Gauge,
        |m| {
            for r in &rows {
                gauge(m, &r.labels(), r.v.entitled_share)?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vcpu",
        "Host thread of each vCPU (value 1)",
        None,
        Info,
        |m| {
            for r in &rows {
                let (tid, pid) = (r.v.tid.to_string(), r.v.pid.to_string());
                let labels = (r.labels(), [("tid", tid.as_str()), ("pid", pid.as_str())]);
                m.encode_info(&labels)?;
            }
            Ok(())
        },
    )?;

    // ----- per VM -----
    let live_vms: Vec<(String, &model::VmSnapshot)> = snap
        .vms
        .iter()
        .filter(|vm| !vm.ended && vm.vcpus > 0)
        .map(|vm| (domain_name(&owner_of_name, &vm.name, vm.pid), vm))
        .collect();
    family(
        &mut enc,
        "vm_exits",
        "VM exits by reason, summed over the VM's threads (also those that have exited)",
        None,
        Counter,
        |m| {
            for (domain, vm) in &live_vms {
                for (reason, n) in &vm.exits {
                    counter(
                        m,
                        &[("domain", domain.as_str()), ("reason", reason.as_str())],
                        *n as f64,
                    )?;
                }
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vm_fairness",
        "Jain's index over the weight-normalised CPU shares of the VM's vCPUs since tracking began (1: each got what its weight entitles it to)",
        None,
        Gauge,
        |m| {
            for (domain, vm) in &live_vms {
                gauge(m, &[("domain", domain.as_str())], vm.fairness)?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "vm_vcpus",
        "vCPU threads of the VM",
        None,
        Gauge,
        |m| {
            for (domain, vm) in &live_vms {
                gauge(m, &[("domain", domain.as_str())], f64::from(vm.vcpus))?;
            }
            Ok(())
        },
    )?;
    family(
        &mut enc,
        "host_vm_fairness",
        "Jain's index over the weight-normalised CPU shares of all tracked VMs",
        None,
        Gauge,
        |m| gauge(m, &NO_LABELS, snap.fairness),
    )?;

    // ----- per pCPU -----
    family(
        &mut enc,
        "pcpu",
        "Time of each pCPU by who ran: a tracked vCPU thread, any other task, or nobody (idle)",
        s,
        Counter,
        |m| {
            for p in &snap.pcpus {
                let cpu = p.cpu.to_string();
                for (owner, ns) in [
                    ("vcpu", p.time.vcpu_ns),
                    ("other", p.time.other_ns),
                    ("idle", p.time.idle_ns),
                ] {
                    counter(m, &[("cpu", cpu.as_str()), ("owner", owner)], secs(ns))?;
                }
            }
            Ok(())
        },
    )?;

    // ----- the exporter itself: every health figure, as the model lists them -----
    let figures = snap.health.figures();
    for f in &figures {
        if let HealthMetric::Family(name) = f.metric {
            let (unit, value) = match f.unit {
                HealthUnit::Count => (None, f.value as f64),
                HealthUnit::Nanoseconds => (s, secs(f.value)),
            };
            family(&mut enc, name, f.about, unit, Counter, |m| {
                counter(m, &NO_LABELS, value)
            })?;
        }
    }
    for (kind, name, help) in [
        (
            HealthKind::Unobserved,
            "unobserved",
            "What the live source could not observe, by kind (kvmscope's health figures)",
        ),
        (
            HealthKind::Anomaly,
            "model_anomalies",
            "Events the model could not use as they came, by kind (kvmscope's health figures)",
        ),
    ] {
        family(&mut enc, name, help, None, Counter, |m| {
            for f in figures.iter().filter(|f| f.kind == kind) {
                if let HealthMetric::Kind(label) = f.metric {
                    counter(m, &[("kind", label)], f.value as f64)?;
                }
            }
            Ok(())
        })?;
    }
    family(
        &mut enc,
        "threads_without_vcpu_index",
        "Tracked threads whose vCPU index is not known (left out of the per-vCPU series)",
        None,
        Gauge,
        |m| gauge(m, &NO_LABELS, unlabelled as f64),
    )?;
    family(
        &mut enc,
        "probes_attached",
        "1 when the eBPF probes are attached, 0 in counters-only mode (--no-bpf)",
        None,
        Gauge,
        |m| gauge(m, &NO_LABELS, if facts.probes_attached { 1.0 } else { 0.0 }),
    )?;
    family(
        &mut enc,
        "build",
        "kvmscope version (value 1)",
        None,
        Info,
        |m| m.encode_info(&[("version", facts.version.as_str())]),
    )?;
    Ok(())
}
