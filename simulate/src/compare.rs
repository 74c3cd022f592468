//! The side-by-side view: the recorded host and each simulated policy, measured the same way
//! (each event stream folded by one `model::Model`, whose transitions `model::demand` folds
//! for the wake-to-run latency as served), against each
//! vCPU's fair share (weighted max-min over its demand). Text on one screen or one JSON
//! document; the same input gives the same bytes.

use serde::Serialize;

use model::demand::{fold_events, Demand};
use model::{Event, Snapshot};

/// One vCPU under one schedule.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VcpuFigures {
    pub tid: u32,
    pub label: String,
    pub cpu_share: f64,
    pub wait_p50_us: f64,
    pub wait_p99_us: f64,
    pub wake_to_run_p50_us: f64,
    pub wake_to_run_p99_us: f64,
    pub preemptions_per_s: f64,
    pub migrations_per_s: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VmFigures {
    pub vm: String,
    pub cpu_share: f64,
    pub fair_share: f64,
}

/// One column: the recording, or one policy.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Column {
    pub name: String,
    pub describe: String,
    pub events: u64,
    pub vcpus: Vec<VcpuFigures>,
    pub vms: Vec<VmFigures>,
    /// Jain's index over each vCPU's share divided by its fair share.
    pub fairness: f64,
}

/// What a vCPU wanted and was entitled to.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VcpuDemand {
    pub tid: u32,
    pub label: String,
    pub weight: u32,
    pub demand: f64,
    pub fair_share: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Comparison {
    pub source: String,
    pub pcpus: u32,
    pub recorded_pcpus: u32,
    pub span_s: f64,
    pub open_loop: String,
    /// Where the replay's affinities come from.
    pub affinity: String,
    /// Which tick the Linux policies use, and where it comes from.
    pub tick: String,
    /// The dispatch delay charged at each wakeup, and the recorded wakeups it comes from.
    pub dispatch: String,
    /// Which pCPU count the fair shares are for ([`fair_note`]).
    pub fair: String,
    /// The vCPUs that never slept, and what their replay can give them ([`cpu_bound_note`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_bound: Option<String>,
    /// The task groups the recording names ([`groups_note`]); none before format 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
    /// Other sessions' load, when it was enough to make the waits differ
    /// ([`crate::others_load::others_note`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub others: Option<String>,
    pub wake_cost: crate::wake_cost::WakeCostSummary,
    pub params: Vec<String>,
    pub demand: Vec<VcpuDemand>,
    pub columns: Vec<Column>,
}

fn label(d: &model::demand::ThreadDemand) -> String {
    match d.vcpu {
        Some(i) => format!("{}/vcpu{i}", d.vm),
        None => format!("{}/{}", d.vm, d.comm),
    }
}

/// Weighted max-min fair shares: s_i = min(d_i, λ·w_i) with Σ s_i = min(P, Σ d_i).
pub fn fair_shares(demand: &[f64], weight: &[f64], pcpus: f64) -> Vec<f64> {
    let n = demand.len();
    let mut share = vec![0.0; n];
    let mut open: Vec<usize> = (0..n).filter(|&i| demand[i] > 0.0).collect();
    let mut left = pcpus.min(demand.iter().sum());
    while !open.is_empty() && left > 1e-12 {
        let wsum: f64 = open.iter().map(|&i| weight[i]).sum();
        let lambda = left / wsum;
        let (capped, rest): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| demand[i] - share[i] <= lambda * weight[i]);
        if capped.is_empty() {
            for &i in &rest {
                share[i] += lambda * weight[i];
            }
            break;
        }
        for &i in &capped {
            left -= demand[i] - share[i];
            share[i] = demand[i];
        }
        open = rest;
    }
    share
}

/// Folds one event stream into its column.
pub fn measure(
    name: &str,
    describe: &str,
    events: &[Event],
    demand: &Demand,
    fair: &[VcpuDemand],
) -> Column {
    let (m, served) = fold_events(events, 0);
    let snap = m.snapshot();
    column(
        name,
        describe,
        &snap,
        &served,
        demand,
        fair,
        events.len() as u64,
    )
}

/// One column from a stream already folded (the recording, whose fold gave the demand):
/// `snap` is its model's snapshot, `served` its demand as served, `events` its length.
pub fn column(
    name: &str,
    describe: &str,
    snap: &Snapshot,
    served: &Demand,
    demand: &Demand,
    fair: &[VcpuDemand],
    events: u64,
) -> Column {
    let span = (demand.span_ns() as f64 / 1e9).max(1e-9);
    let us = |ns: u64| ns as f64 / 1e3;
    let mut vcpus = Vec::new();
    let mut ratios = Vec::new();
    for f in fair {
        let v = snap.vcpus.iter().find(|v| v.tid == f.tid);
        let w = served.tracked().find(|t| t.tid == f.tid);
        let share = v.map_or(0.0, |v| v.task_clock_ns.max(v.run_ns) as f64 / 1e9 / span);
        if f.fair_share > 0.0 {
            ratios.push(share / f.fair_share);
        }
        vcpus.push(VcpuFigures {
            tid: f.tid,
            label: f.label.clone(),
            cpu_share: round(share),
            wait_p50_us: round(v.map_or(0.0, |v| us(v.wait.p50))),
            wait_p99_us: round(v.map_or(0.0, |v| us(v.wait.p99))),
            wake_to_run_p50_us: round(w.map_or(0.0, |w| us(w.wake_to_run.p50))),
            wake_to_run_p99_us: round(w.map_or(0.0, |w| us(w.wake_to_run.p99))),
            preemptions_per_s: round(v.map_or(0.0, |v| v.involuntary_switches as f64 / span)),
            migrations_per_s: round(v.map_or(0.0, |v| v.pcpu_changes as f64 / span)),
        });
    }
    let mut vms: Vec<VmFigures> = Vec::new();
    for (d, f) in demand.tracked().zip(fair) {
        let share = vcpus
            .iter()
            .find(|v| v.tid == f.tid)
            .map_or(0.0, |v| v.cpu_share);
        match vms.iter_mut().find(|v| v.vm == d.vm) {
            Some(v) => {
                v.cpu_share = round(v.cpu_share + share);
                v.fair_share = round(v.fair_share + f.fair_share);
            }
            None => vms.push(VmFigures {
                vm: d.vm.clone(),
                cpu_share: share,
                fair_share: f.fair_share,
            }),
        }
    }
    Column {
        name: name.to_string(),
        describe: describe.to_string(),
        events,
        vcpus,
        vms,
        fairness: round(model::jain(&ratios)),
    }
}

/// Six significant decimals: stable text and JSON, finer than any figure means.
fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        0.0
    }
}

/// Each tracked vCPU's demand (CPU wanted over the span: the CPU time it got, or with
/// `open_bursts` (`crate::open_bursts`) an open burst's whole runnable time, as the replay
/// gives it) and fair share on `pcpus`.
pub fn demand_rows(demand: &Demand, pcpus: u32, open_bursts: bool) -> Vec<VcpuDemand> {
    let span = demand.span_ns().max(1) as f64;
    let all: Vec<&model::demand::ThreadDemand> = demand.threads.iter().collect();
    let want: Vec<f64> = all
        .iter()
        .map(|t| {
            let ns = if open_bursts {
                t.wanted_ns()
            } else {
                t.run_ns()
            };
            (ns as f64 / span).min(1.0)
        })
        .collect();
    let weight: Vec<f64> = all.iter().map(|t| f64::from(t.weight.max(1))).collect();
    // Background load is a party to the fill on its own pCPU's share.
    let fair = fair_shares(&want, &weight, f64::from(pcpus));
    all.iter()
        .zip(want.iter().zip(&fair))
        .filter(|(t, _)| !t.background)
        .map(|(t, (&d, &f))| VcpuDemand {
            tid: t.tid,
            label: label(t),
            weight: t.weight,
            demand: round(d),
            fair_share: round(f),
        })
        .collect()
}

/// What the fair shares of [`demand_rows`] on `pcpus` are: the table's `fair` figures, and
/// what every column's fairness index divides by, the recorded column's included.
pub fn fair_note(pcpus: u32, recorded_pcpus: u32) -> String {
    let plural = if pcpus == 1 { "" } else { "s" };
    let base = format!(
        "fair: weighted max-min of each vCPU's recorded demand over the {pcpus} simulated \
         pCPU{plural}"
    );
    if pcpus == recorded_pcpus {
        format!("{base} (as recorded)")
    } else {
        format!(
            "{base}, not the recording's {recorded_pcpus}: the recorded column's shares and \
             fairness are measured against these too"
        )
    }
}

/// The vCPUs that never slept in the recording (runnable from their first wakeup to the
/// end or to their exit: CPU-bound), if any, and what the replay can give them. Their one
/// burst is open ([`model::demand::OpenBurst`]). By default it replays as the CPU time it was
/// given: no policy and no `--pcpus` gives it more, and one that serves it sooner ends it
/// early. With `open_bursts` it wants the CPU for all the time it was runnable, so a policy
/// with pCPUs to spare gives it up to a whole one; past its exit it wants nothing.
pub fn cpu_bound_note(demand: &Demand, open_bursts: bool) -> Option<String> {
    let never_slept: Vec<&model::demand::ThreadDemand> = demand
        .tracked()
        .filter(|t| matches!(t.bursts.as_slice(), [burst] if burst.open.is_some()))
        .collect();
    if never_slept.is_empty() {
        return None;
    }
    let names: Vec<String> = never_slept.iter().map(|t| label(t)).collect();
    let exited = never_slept
        .iter()
        .any(|t| t.bursts[0].open.is_some_and(|o| !o.at_recording_end));
    let end = if exited {
        "the end or its exit"
    } else {
        "the end"
    };
    // One sentence without brackets of its own: it is printed after `note: ` and read in one
    // go, and a bracket inside a bracket read as a stray one.
    let what = if open_bursts {
        format!(
            "each wants the CPU from its first wakeup to {end}, as --param open_bursts=true \
             asks, and gets what the policy gives a thread runnable all along, up to a whole \
             pCPU"
        )
    } else {
        format!(
            "each replays as the CPU time it was given, so no policy or --pcpus gives it \
             more and one that serves it sooner ends it early; --param open_bursts=true \
             replays it as wanting the CPU to {end}"
        )
    };
    Some(format!(
        "cpu-bound: {} never slept: {what}",
        names.join(", ")
    ))
}

/// What the recording says of task groups, if anything: how many groups its tracked threads
/// and other tasks' load ran in, and how many tasks' groups could not be read.
pub fn groups_note(demand: &Demand) -> Option<String> {
    let records = demand.group_records;
    if records.is_empty() {
        return None;
    }
    let mut names: Vec<&str> = demand
        .threads
        .iter()
        .filter_map(|t| t.group.as_ref())
        .map(|g| g.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let others: Vec<&str> = names
        .iter()
        .map(|n| if n.is_empty() { "root" } else { n })
        .collect();
    // A cgroup below another one (`/a/b`; an autogroup never is): the kernel weighs each of
    // its ancestors against their siblings too, which one task's record cannot hold.
    let nested: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.trim_matches('/').contains('/'))
        .collect();
    let nesting = if nested.is_empty() {
        String::new()
    } else {
        format!(
            "; nested cgroups ({}) are replayed each as a group of its own weight beside the \
             others, while the kernel also weighs each of their ancestors against its \
             siblings",
            nested.join(", ")
        )
    };
    Some(format!(
        "task groups: {} tasks recorded, {} groups ran ({}); {} tasks had exited before their \
         group could be read (their load is a group of its own); the fair policies schedule \
         them with --param groups=auto (the default; groups=false for the flat model){nesting}",
        records.read + records.unread,
        names.len(),
        others.join(", "),
        records.unread
    ))
}

/// The text table: one block per figure, one row per vCPU, one column per schedule.
pub fn render_text(c: &Comparison) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "kvmscope simulate {}: {} vCPUs on {} pCPUs (recorded on {}), {:.1} s",
        c.source,
        c.demand.len(),
        c.pcpus,
        c.recorded_pcpus,
        c.span_s
    );
    let _ = writeln!(s, "note: {}", c.open_loop);
    let _ = writeln!(s, "note: {}", c.affinity);
    let _ = writeln!(s, "note: {}", c.tick);
    let _ = writeln!(s, "note: {}", c.dispatch);
    let _ = writeln!(s, "note: {}", c.fair);
    if let Some(note) = &c.cpu_bound {
        let _ = writeln!(s, "note: {note}");
    }
    if let Some(note) = &c.groups {
        let _ = writeln!(s, "note: {note}");
    }
    if let Some(note) = &c.others {
        let _ = writeln!(s, "note: {note}");
    }
    if !c.params.is_empty() {
        let _ = writeln!(s, "params: {}", c.params.join(" "));
    }
    let mut table = Table::default();
    let names: Vec<String> = c.columns.iter().map(|col| col.name.clone()).collect();
    type Pick = fn(&VcpuFigures) -> String;
    let blocks: [(&str, Pick); 5] = [
        ("CPU share %", |v| format!("{:.1}", v.cpu_share * 100.0)),
        ("run-queue wait p50/p99 us", |v| {
            format!("{:.0}/{:.0}", v.wait_p50_us, v.wait_p99_us)
        }),
        ("wake-to-run p50/p99 us", |v| {
            format!("{:.0}/{:.0}", v.wake_to_run_p50_us, v.wake_to_run_p99_us)
        }),
        ("preemptions/s", |v| format!("{:.1}", v.preemptions_per_s)),
        ("migrations/s", |v| format!("{:.1}", v.migrations_per_s)),
    ];
    for (i, (title, pick)) in blocks.iter().enumerate() {
        table.heading(title, names.clone());
        for (k, d) in c.demand.iter().enumerate() {
            let name = if i == 0 {
                format!("{} (fair {:.1})", d.label, d.fair_share * 100.0)
            } else {
                d.label.clone()
            };
            let cells = c
                .columns
                .iter()
                .map(|col| col.vcpus.get(k).map_or("-".into(), pick));
            table.row(name, cells.collect());
        }
    }
    table.heading("VM CPU share % (fair)", names);
    if let Some(first) = c.columns.first() {
        for (k, vm) in first.vms.iter().enumerate() {
            let cells = c.columns.iter().map(|col| {
                col.vms
                    .get(k)
                    .map_or("-".into(), |v| format!("{:.1}", v.cpu_share * 100.0))
            });
            let name = format!("{} ({:.1})", vm.vm, vm.fair_share * 100.0);
            table.row(name, cells.collect());
        }
    }
    let fairness = c.columns.iter().map(|col| format!("{:.3}", col.fairness));
    table.heading("fairness (Jain, share/fair)", fairness.collect());
    s.push_str(&table.render());
    s
}

/// Least width of a figure column (right-aligned), so that narrow tables keep their look.
const MIN_CELL_WIDTH: usize = 13;
/// Spaces at least between a cell and the one before it.
const CELL_GAP: usize = 2;

/// The blocks of the text table, laid out once every cell is known: each column as wide as
/// its widest cell (or heading) plus a gap, so a wide figure never runs into its neighbour.
#[derive(Default)]
struct Table {
    /// (label, cells) in print order; rows are indented under their heading.
    lines: Vec<(String, Vec<String>)>,
}

impl Table {
    fn heading(&mut self, title: &str, cells: Vec<String>) {
        self.lines.push((title.to_string(), cells));
    }

    fn row(&mut self, label: String, cells: Vec<String>) {
        self.lines.push((format!("  {label}"), cells));
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        // Wide enough for the share block's "LABEL (fair 100.0)" rows, and for every label.
        let lw = self
            .lines
            .iter()
            .map(|(label, _)| label.chars().count())
            .max()
            .unwrap_or(0)
            .max(24);
        let ncols = self.lines.iter().map(|l| l.1.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..ncols)
            .map(|k| {
                let widest = self
                    .lines
                    .iter()
                    .filter_map(|l| l.1.get(k))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0);
                (widest + CELL_GAP).max(MIN_CELL_WIDTH)
            })
            .collect();
        let mut s = String::new();
        for (label, cells) in &self.lines {
            let _ = write!(s, "{label:<lw$}");
            for (cell, w) in cells.iter().zip(&widths) {
                let _ = write!(s, "{cell:>w$}");
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(label: &str, wake_to_run_us: f64) -> VcpuFigures {
        VcpuFigures {
            tid: 1,
            label: label.into(),
            cpu_share: 0.5,
            wait_p50_us: 10.0,
            wait_p99_us: 20.0,
            wake_to_run_p50_us: wake_to_run_us,
            wake_to_run_p99_us: wake_to_run_us,
            preemptions_per_s: 1.0,
            migrations_per_s: 0.0,
        }
    }

    #[test]
    fn a_wide_cell_keeps_a_space_from_its_neighbours() {
        // The figures that ran together before columns were sized to their content:
        // `1827101188/101188`.
        let column = |name: &str, us: f64| Column {
            name: name.into(),
            describe: String::new(),
            events: 0,
            vcpus: vec![figures("batch/vcpu2", us)],
            vms: vec![],
            fairness: 1.0,
        };
        let c = Comparison {
            source: "t.trace".into(),
            pcpus: 2,
            recorded_pcpus: 2,
            span_s: 1.0,
            open_loop: String::new(),
            affinity: String::new(),
            tick: String::new(),
            dispatch: String::new(),
            groups: None,
            others: None,
            fair: String::new(),
            cpu_bound: None,
            wake_cost: Default::default(),
            params: vec![],
            demand: vec![VcpuDemand {
                tid: 1,
                label: "batch/vcpu2".into(),
                weight: 1024,
                demand: 1.0,
                fair_share: 0.5,
            }],
            columns: vec![
                column("recorded", 1827.0),
                column("o1", 101_188_123_456.0),
                column("on", 7.0),
            ],
        };
        let text = render_text(&c);
        let row = text
            .lines()
            .skip_while(|l| !l.starts_with("wake-to-run"))
            .nth(1)
            .unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "batch/vcpu2",
                "1827/1827",
                "101188123456/101188123456",
                "7/7"
            ],
            "{text}"
        );
        // Every block's columns line up: a heading's right edge is its cells'.
        let heading = text.lines().find(|l| l.starts_with("wake-to-run")).unwrap();
        assert_eq!(heading.len(), row.len(), "{text}");
    }

    #[test]
    fn water_fill_caps_small_demands_and_splits_the_rest_by_weight() {
        let s = fair_shares(&[0.1, 1.0, 1.0], &[1.0, 1.0, 3.0], 1.0);
        assert!((s[0] - 0.1).abs() < 1e-9);
        assert!((s[1] - 0.225).abs() < 1e-9, "{s:?}");
        assert!((s[2] - 0.675).abs() < 1e-9, "{s:?}");
        // The schedbench oracle: 4 pCPUs, 6 CPU-bound workers -> 2/3 each.
        let s = fair_shares(&[1.0; 6], &[1.0; 6], 4.0);
        assert!(s.iter().all(|x| (x - 2.0 / 3.0).abs() < 1e-9), "{s:?}");
    }

    /// A vCPU that ran and then slept to the end of the recording (halted for good) slept:
    /// only the one runnable to the end is named CPU-bound, with what the replay gives it;
    /// one that never slept until its exit is named as wanting the CPU to its exit.
    #[test]
    fn the_cpu_bound_note_names_only_vcpus_that_never_slept() {
        let events = model::synth::one_halted_one_running();
        let (_, d) = model::demand::fold_events(&events, 2);
        assert_eq!(
            cpu_bound_note(&d, true).unwrap(),
            "cpu-bound: vm0/vcpu1 never slept: each wants the CPU from its first wakeup to the \
             end, as --param open_bursts=true asks, and gets what the policy gives a thread \
             runnable all along, up to a whole pCPU"
        );
        let note = cpu_bound_note(&d, false).unwrap();
        assert_eq!(
            note,
            "cpu-bound: vm0/vcpu1 never slept: each replays as the CPU time it was given, so \
             no policy or --pcpus gives it more and one that serves it sooner ends it early; \
             --param open_bursts=true replays it as wanting the CPU to the end"
        );
        let mut exiting = events.clone();
        let last = exiting.len() - 1;
        exiting.insert(last, model::synth::task_exit(4_000, 1, 11));
        exiting.insert(last + 1, model::synth::switch_sleep(4_100, 1, 11, 0));
        let (_, d) = model::demand::fold_events(&exiting, 2);
        // Neither note nests or doubles a bracket, with an exit or without.
        let note = cpu_bound_note(&d, true).unwrap();
        assert!(
            note.contains("from its first wakeup to the end or its exit, as --param"),
            "{note}"
        );
        for note in [note, cpu_bound_note(&d, false).unwrap()] {
            assert!(!note.contains(['(', ')']), "{note}");
        }
    }

    /// The task-groups note names the nested cgroups, whose ancestors' weights the replay
    /// leaves out, and says nothing of nesting when every group is a child of the root.
    #[test]
    fn the_groups_note_names_nested_cgroups() {
        use model::synth::{switch, task_info};
        let group = |ts, tid, name: &str| {
            model::Event::TaskGroup(model::TaskGroup {
                ts,
                tid,
                pid: tid,
                group: Some(model::SchedGroup {
                    name: name.into(),
                    weight: 1024,
                }),
            })
        };
        let note_of = |vcpu_group: &str| {
            let events = vec![
                task_info(0, 10, 1, "vm0", Some(0), 0),
                group(100, 10, vcpu_group),
                switch(100, 0, 0, 10),
                group(200, 77, "/autogroup-3"),
                switch(200, 0, 10, 77),
                switch(300, 0, 77, 10),
            ];
            groups_note(&model::demand::fold_events(&events, 1).1).unwrap()
        };
        let note = note_of("/machine.slice/vm0.scope");
        assert!(
            note.ends_with(
                "; nested cgroups (/machine.slice/vm0.scope) are replayed each as a group of \
                 its own weight beside the others, while the kernel also weighs each of their \
                 ancestors against its siblings"
            ),
            "{note}"
        );
        let note = note_of("/vm0");
        assert!(!note.contains("nested"), "{note}");
    }
}
