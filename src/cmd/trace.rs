//! `kvmscope trace`: the live event stream, one decoded event per line (readable text or
//! JSON lines), closed by a summary line with per-kind counts and the lost-event count.
//!
//! In counters mode (`--no-bpf`) the kernel events are replaced by one `counter_sample` line
//! per tracked thread every `--sample-every`: schedstat, perf task-clock and `/proc` sched.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use model::{exit_names, Event, Model, ModelConfig, SnapshotOptions, Source};
use serde::Serialize;

use crate::cli::{TraceArgs, TraceFormat as Format};
use crate::live::{self, LiveSource};
use crate::report_text::health_value;

/// The closing line (`"type": "summary"` first, `"lost"` last, as people read it).
#[derive(Serialize)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    source: String,
    duration_s: f64,
    /// False with `--no-bpf`: then there are no kernel events and nothing can be lost.
    bpf: bool,
    /// Every thread announced by a `task_info` line.
    threads: Vec<ThreadLine>,
    warnings: Vec<String>,
    /// The in-process VMM's own summary (`--demo`): its exit and gap counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    vmm: Option<vmm::Summary>,
    /// The model's health figures by name (`unpaired_switch_outs`, `missed_counter_samples`,
    /// `track_failures`, ...: `model::Health::figures`), all but its headline: `events` and
    /// `lost` below count the stream this command printed.
    #[serde(flatten)]
    health: BTreeMap<&'static str, u64>,
    events: u64,
    counts: BTreeMap<&'static str, u64>,
    lost: u64,
    /// The kernel's part of `lost` by where the records were going (which ring was full).
    lost_by_cause: probes::LostByCause,
    /// `--exits`: "stream" (every exit is a line above), "aggregate" or "both".
    exits: &'static str,
    /// With `--exits aggregate|both`: the kernel's totals per vCPU thread, isa and reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exit_aggregates: Vec<AggregateLine>,
    /// With `--exits aggregate|both`: the kernel's port I/O totals per vCPU thread, port and
    /// direction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    port_io_aggregates: Vec<PortIoLine>,
    /// Each attached program's run time and runs (zero unless `kernel.bpf_stats_enabled=1`).
    bpf_stats: Vec<BpfStatLine>,
}

#[derive(Serialize)]
struct AggregateLine {
    tid: u32,
    isa: model::ExitIsa,
    reason: u32,
    count: u64,
    handling_log2: Vec<u64>,
}

#[derive(Serialize)]
struct PortIoLine {
    tid: u32,
    port: u32,
    rw: u32,
    count: u64,
}

#[derive(Serialize)]
struct BpfStatLine {
    event: &'static str,
    run_time_ns: u64,
    run_count: u64,
}

#[derive(Serialize)]
struct ThreadLine {
    pid: u32,
    tid: u32,
    comm: String,
    vm: String,
    vcpu: Option<u32>,
    nice: i32,
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    // Privileges first: everything else would fail later with a less helpful message.
    let mut target = args.target.resolve()?;
    // What `record` would write, task groups included.
    target.task_groups = true;
    live::require_privileges(&target)?;
    let sample_every = target.sample_every;
    let format = args.format;
    let stop = live::stop_on_signals()?;
    let mut source = LiveSource::open(target, stop)?;
    if let Some(d) = args.duration {
        source.stop_after(d);
    }
    for w in source.warnings() {
        super::warn(w);
    }
    if !source.has_probes() {
        eprintln!(
            "kvmscope: counters mode: per-thread schedstat, perf task-clock and /proc sched \
             every {:?}. Missing without BPF: individual switches with vruntime/weight at \
             each one, wakeups (and who woke whom), migrations with source and target CPU, \
             KVM exits and guest entries, and lost-event accounting.",
            sample_every
        );
    }

    let mut out = io::BufWriter::new(io::stdout().lock());

    let start_ns = source.start_ns();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut lost_in_stream = 0u64;
    let mut threads = Vec::new();
    // Only for its health counters: the trace lines are the events themselves.
    let mut model = Model::new(ModelConfig::report());
    let mut batch = Vec::new();
    let mut pipe_closed = false;
    let mut aggregates = model::ExitAggregates::default();
    let mut agg_totals: BTreeMap<(u32, u32, u32), AggregateLine> = BTreeMap::new();
    let mut port_io_totals: BTreeMap<(u32, u32, u32), PortIoLine> = BTreeMap::new();

    loop {
        batch.clear();
        let more = source
            .poll(&mut batch, Duration::from_millis(100))
            .map_err(anyhow::Error::from_boxed)?;
        model.ingest_batch(&batch);
        aggregates.clear();
        source.take_exit_aggregates(&mut aggregates);
        model.fold_aggregates(&aggregates);
        for a in &aggregates.port_io {
            port_io_totals
                .entry((a.tid, a.port, a.rw))
                .or_insert(PortIoLine {
                    tid: a.tid,
                    port: a.port,
                    rw: a.rw,
                    count: 0,
                })
                .count += a.count;
        }
        for a in &aggregates.exits {
            let line = agg_totals
                .entry((a.tid, a.isa as u32, a.reason))
                .or_insert_with(|| AggregateLine {
                    tid: a.tid,
                    isa: a.isa,
                    reason: a.reason,
                    count: 0,
                    handling_log2: vec![0; a.handling_log2.len()],
                });
            line.count += a.count;
            for (t, n) in line.handling_log2.iter_mut().zip(a.handling_log2.iter()) {
                *t += n;
            }
        }
        for event in &batch {
            *counts.entry(event.kind()).or_default() += 1;
            match event {
                Event::Lost(l) => lost_in_stream += l.count,
                Event::TaskInfo(i) => {
                    // A thread announced again (its vCPU index learnt mid-session) is
                    // listed once, as last announced.
                    threads.retain(|t: &ThreadLine| (t.pid, t.tid) != (i.pid, i.tid));
                    threads.push(ThreadLine {
                        pid: i.pid,
                        tid: i.tid,
                        comm: i.comm.to_string(),
                        vm: i.vm.clone(),
                        vcpu: i.vcpu,
                        nice: i.nice,
                    });
                }
                _ => {}
            }
            pipe_closed = super::reader_gone(write_event(&mut out, format, event, start_ns))?;
            if pipe_closed {
                break;
            }
        }
        if pipe_closed || !more {
            break;
        }
        pipe_closed = super::reader_gone(out.flush())?;
        if pipe_closed {
            break;
        }
    }
    if pipe_closed {
        // A reader such as `head` went away: stop quietly (dropping the source detaches).
        return Ok(ExitCode::SUCCESS);
    }

    let lost = lost_in_stream.max(source.lost_total());
    let events: u64 = counts.values().sum();
    let mut warnings = source.warnings().to_vec();
    model.finish();
    let snapshot = model.snapshot_with(SnapshotOptions::figures());
    // The interval the events cover, as `report` gives it: the command's wall time would add
    // the probes' loading and the final drain.
    let covered_s = snapshot.ts.saturating_sub(snapshot.start) as f64 / 1e9;
    let health = snapshot.health;
    let unpaired = health.unpaired_switch_outs;
    if unpaired > 0 {
        // Nothing may go missing silently. On the hosts measured, the kernel's own
        // sched_switch tracepoint skips a few switch-ins (a classic-tracepoint reader sees the
        // same gaps), so this is not a ring-buffer loss; say so rather than hide it.
        let why = if lost == 0 {
            "the kernel reported no sched_switch for those switch-ins".to_string()
        } else {
            format!("some may be among the {lost} lost events")
        };
        warnings.push(format!(
            "{} switch-outs of tracked threads came with no switch-in since their previous \
             switch-out: {why}",
            unpaired
        ));
    }
    for w in warnings.iter().skip(source.warnings().len()) {
        super::warn(w);
    }
    let summary = Summary {
        kind: "summary",
        source: source.describe(),
        duration_s: covered_s,
        bpf: source.has_probes(),
        threads,
        warnings,
        vmm: source.vmm_summary().cloned(),
        health: health_fields(&health),
        events,
        counts: counts.clone(),
        lost,
        lost_by_cause: source.lost_by_cause(),
        exits: source.exit_mode(),
        exit_aggregates: agg_totals.into_values().collect(),
        port_io_aggregates: port_io_totals.into_values().collect(),
        bpf_stats: source
            .program_stats()
            .into_iter()
            .map(|s| BpfStatLine {
                event: s.event,
                run_time_ns: s.run_time_ns,
                run_count: s.run_count,
            })
            .collect(),
    };
    let written = match format {
        Format::Jsonl => serde_json::to_writer(&mut out, &summary)
            .map_err(io::Error::from)
            .and_then(|_| out.write_all(b"\n")),
        Format::Text => {
            let kinds: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
            let causes = if lost == 0 {
                String::new()
            } else {
                format!(" ({})", source.lost_by_cause())
            };
            writeln!(
                out,
                "summary: {events} events in {covered_s:.3} s ({}), lost {lost}{causes}{}",
                if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(" ")
                },
                health_text(&health)
            )
        }
    };
    super::reader_gone(written.and_then(|_| out.flush()))?;
    Ok(ExitCode::SUCCESS)
}

/// The summary's `health` fields: every figure of the model's past its headline.
fn health_fields(h: &model::Health) -> BTreeMap<&'static str, u64> {
    h.figures()
        .iter()
        .filter(|f| !f.headline)
        .map(|f| (f.name, f.value))
        .collect()
}

/// The summary line's tail: the model's non-zero health figures past its headline (the line
/// counts its own events and lost), empty when there are none.
fn health_text(h: &model::Health) -> String {
    h.shown()
        .filter(|f| !f.headline)
        .map(|f| format!(", {} {}", f.label, health_value(&f)))
        .collect()
}

fn write_event(out: &mut impl Write, format: Format, e: &Event, start_ns: u64) -> io::Result<()> {
    match format {
        Format::Jsonl => {
            serde_json::to_writer(&mut *out, e).map_err(io::Error::from)?;
            out.write_all(b"\n")
        }
        Format::Text => writeln!(out, "{}", text_line(e, start_ns)),
    }
}

/// Milliseconds since the trace started (negative for a guest gap that began earlier).
fn rel_ms(ts: u64, start_ns: u64) -> f64 {
    (ts as i128 - start_ns as i128) as f64 / 1e6
}

fn se_text(se: &model::SchedEntity) -> String {
    let mut s = format!(
        "vruntime={:.6}ms weight={} runtime={:.6}ms",
        se.vruntime as f64 / 1e6,
        se.weight,
        se.sum_exec_runtime as f64 / 1e6
    );
    if let Some(d) = se.deadline {
        s.push_str(&format!(" deadline={:.6}ms", d as f64 / 1e6));
    }
    if let Some(l) = se.slice {
        s.push_str(&format!(" slice={}us", l / 1000));
    }
    if let Some(v) = se.vlag {
        s.push_str(&format!(" vlag={v}"));
    }
    s
}

/// One readable line: time since start, CPU, kind and what matters about the event.
fn text_line(e: &Event, start_ns: u64) -> String {
    let t = rel_ms(e.ts(), start_ns);
    let cpu = |c: u32| {
        if c == u32::MAX {
            "cpu-".to_string()
        } else {
            format!("cpu{c}")
        }
    };
    let body = match e {
        Event::SchedSwitch(s) => {
            let mut line = format!(
                "{:<5} sched_switch    {}[{}] {} -> {}[{}]",
                cpu(s.cpu),
                s.prev_comm,
                s.prev_tid,
                s.prev_task_state(),
                s.next_comm,
                s.next_tid
            );
            if let Some(se) = &s.prev_se {
                line.push_str(&format!("  out: {}", se_text(se)));
            }
            if let Some(se) = &s.next_se {
                line.push_str(&format!("  in: {}", se_text(se)));
            }
            line
        }
        Event::Wakeup(w) => format!(
            "{:<5} wakeup          tid {} (pid {}) on cpu{} by tid {}",
            cpu(w.cpu),
            w.tid,
            w.pid,
            w.target_cpu,
            w.waker_tid
        ),
        Event::Migrate(m) => format!(
            "{:<5} migrate         tid {} cpu{} -> cpu{}",
            cpu(m.cpu),
            m.tid,
            m.orig_cpu,
            m.dest_cpu
        ),
        Event::TaskExit(x) => format!(
            "{:<5} task_exit       tid {} (pid {})",
            cpu(x.cpu),
            x.tid,
            x.pid
        ),
        Event::KvmEntry(k) => format!(
            "{:<5} kvm_entry       tid {} vcpu {}",
            cpu(k.cpu),
            k.tid,
            k.vcpu_id
        ),
        Event::KvmExit(k) => format!(
            "{:<5} kvm_exit        tid {} vcpu {} {} ({})",
            cpu(k.cpu),
            k.tid,
            k.vcpu_id,
            exit_names::hw_exit_name(k.isa, k.reason),
            k.reason
        ),
        Event::UserspaceExit(u) => format!(
            "{:<5} userspace_exit  tid {} {} ({}){}",
            cpu(u.cpu),
            u.tid,
            exit_names::kvm_exit_name(u.reason).unwrap_or("?"),
            u.reason,
            if u.errno != 0 {
                format!(" errno {}", u.errno)
            } else {
                String::new()
            }
        ),
        Event::Pio(p) => format!(
            "{:<5} pio             tid {} {} port 0x{:x} size {} value 0x{:x}",
            cpu(p.cpu),
            p.tid,
            if p.rw == 0 { "in" } else { "out" },
            p.port,
            p.size,
            p.val
        ),
        Event::CrossCall(c) => format!(
            "{:<5} cross_call      {:?} func 0x{:x} target cpu{} tid {}{}",
            cpu(c.cpu),
            c.phase,
            c.func,
            c.target_cpu,
            c.tid,
            if c.is_vmclear { " (VMCLEAR)" } else { "" }
        ),
        Event::GuestGap(g) => format!(
            "{:<5} guest_gap       vm{} vcpu {} tid {} off CPU {:.1} us (from {:.3} ms)",
            "-",
            g.vm,
            g.vcpu,
            g.tid,
            g.end.saturating_sub(g.start) as f64 / 1e3,
            rel_ms(g.start, start_ns)
        ),
        Event::Lost(l) => format!("{:<5} lost            {} events", cpu(l.cpu), l.count),
        Event::Unobserved(u) => format!(
            "{:<5} unobserved      {} {}",
            "-",
            u.count,
            match u.what {
                model::UnobservedKind::CounterSamples => "counter samples not taken",
                model::UnobservedKind::Threads => "threads could not be tracked",
            }
        ),
        Event::TaskInfo(i) => format!(
            "{:<5} task_info       tid {} pid {} {} vm {} vcpu {} nice {}",
            "-",
            i.tid,
            i.pid,
            i.comm,
            i.vm,
            i.vcpu.map_or("-".to_string(), |v| v.to_string()),
            i.nice
        ),
        Event::Affinity(a) => format!(
            "{:<5} affinity        tid {} may run on {:?}",
            "-", a.tid, a.cpus
        ),
        Event::TaskGroup(g) => format!(
            "{:<5} task_group      tid {} pid {} {}",
            "-",
            g.tid,
            g.pid,
            match &g.group {
                None => "exited before its group was read".to_string(),
                Some(g) if g.is_root() => format!("root task group (weight {})", g.weight),
                Some(g) => format!("{} weight {}", g.name, g.weight),
            }
        ),
        Event::VmEnded(v) => format!("{:<5} vm_ended        {} (pid {})", "-", v.vm, v.pid),
        Event::ObservationEnd(_) => format!("{:<5} observation_end (VMs still running)", "-"),
        Event::CounterSample(c) => format!(
            "{:<5} counter_sample  tid {}: run {:.3} ms wait {:.3} ms slices {} task-clock {} \
             switches {}+{} migrations {} vruntime {:.6} ms weight {}",
            cpu(c.cpu),
            c.tid,
            c.run_ns as f64 / 1e6,
            c.wait_ns as f64 / 1e6,
            c.timeslices,
            c.task_clock_ns
                .map_or("n/a".to_string(), |t| format!("{:.3} ms", t as f64 / 1e6)),
            c.voluntary_switches,
            c.involuntary_switches,
            c.migrations,
            c.vruntime as f64 / 1e6,
            c.weight
        ),
    };
    format!("{t:>12.3} ms {body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Comm, SchedEntity, SchedSwitch};

    #[test]
    fn switch_lines_carry_the_essentials() {
        let e = Event::SchedSwitch(SchedSwitch {
            ts: 1_002_500_000,
            cpu: 1,
            prev_tid: 42,
            prev_pid: 40,
            prev_comm: Comm::new("vm0-vcpu0"),
            prev_state: 0,
            next_tid: 0,
            next_pid: 0,
            next_comm: Comm::new("swapper/1"),
            prev_se: Some(SchedEntity {
                vruntime: 5_000_000,
                weight: 1024,
                sum_exec_runtime: 3_000_000,
                ..Default::default()
            }),
            next_se: None,
        });
        let line = text_line(&e, 1_000_000_000);
        assert!(line.contains("2.500 ms"), "{line}");
        assert!(line.contains("cpu1"), "{line}");
        assert!(line.contains("vm0-vcpu0[42] R -> swapper/1[0]"), "{line}");
        assert!(line.contains("vruntime=5.000000ms weight=1024"), "{line}");
    }

    #[test]
    fn the_summary_shows_every_health_figure_past_the_headline_it_counts_itself() {
        let h = model::synth::health_with_every_figure();
        let text = health_text(&h);
        let fields = health_fields(&h);
        for f in h.figures() {
            let item = format!(", {} {}", f.label, health_value(&f));
            assert_eq!(text.contains(&item), !f.headline, "{item:?} in {text:?}");
            assert_eq!(fields.get(f.name), (!f.headline).then_some(&f.value));
        }
        assert_eq!(health_text(&model::Health::default()), "");
    }
}
