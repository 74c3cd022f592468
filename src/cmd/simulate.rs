//! `kvmscope simulate FILE`: the recording's demand replayed through other schedulers, side by
//! side with what the host did (text or one JSON document), or one simulated run recorded as
//! a trace file (`--record OUT`) that `replay`, `report` and `export` read like any other.
//! With a live target instead of FILE, the target is first recorded for `--duration` into a
//! temporary trace file, which then goes the same way.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use model::demand::{fold_events, Demand};
use model::trace_file::{ProcessMap, TraceHeader, TraceWriter, FORMAT_VERSION};
use model::{Event, Snapshot, Source};
use simulate::compare::{self, Comparison};
use simulate::{Params, PolicyKind, RecordedDefaults, WakeCost};

use super::record::session::{record_live, LiveRecording};
use crate::cli::SimulateArgs;
use crate::file_source::{create_output, FileSource};
use crate::target::Target;

/// Events per trace-file chunk of a simulated recording.
const CHUNK_EVENTS: usize = 100_000;

/// The recording's events, its demand (with its wakeups) and what the model made of it, from
/// one fold.
pub struct Recorded {
    pub events: Vec<Event>,
    pub demand: Demand,
    /// The snapshot of the model the demand was folded from: the recorded column's figures.
    pub snapshot: Snapshot,
    pub header: TraceHeader,
}

/// Reads a trace file whole and folds it once: its demand and its model's snapshot.
pub fn load(path: &std::path::Path) -> anyhow::Result<Recorded> {
    let mut src = FileSource::open(path)?;
    let mut events = Vec::new();
    while src
        .poll(&mut events, std::time::Duration::ZERO)
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("reading {}", path.display()))?
    {}
    src.warn_problems();
    let header = src.header().clone();
    let (model, demand) = fold_events(&events, src.host().cpus);
    Ok(Recorded {
        events,
        demand,
        snapshot: model.snapshot(),
        header,
    })
}

/// What the recording says that stands in for parameter defaults (its host's HZ, the
/// dispatch delay of its wakeups, which its demand's fold sorted), and the wakeups that delay
/// was measured from.
pub fn recorded_defaults<'a>(
    demand: &'a Demand,
    host: &model::HostInfo,
) -> (RecordedDefaults, WakeCost<'a>) {
    let cost = WakeCost::of(demand);
    let recorded = RecordedDefaults {
        hz: host.hz.map(u64::from),
        dispatch: cost.dispatch_delay(),
    };
    (recorded, cost)
}

/// `events`' demand replayed through one policy on the recording host's pCPUs, for the
/// dashboard to show beside the recording (`replay FILE --simulate POLICY`).
pub fn simulated_run(
    events: &[Event],
    host: &model::HostInfo,
    kind: PolicyKind,
    params: Params,
) -> anyhow::Result<tui::SimulatedRun> {
    let pcpus = host.cpus;
    let (_, demand) = fold_events(events, pcpus);
    simulate::check_inputs(&demand, pcpus)?;
    let params = params.with_recorded(recorded_defaults(&demand, host).0);
    let (events, _) = simulate::simulate(kind, &demand, pcpus, &params)?;
    Ok(tui::SimulatedRun {
        label: format!("simulated {} ({})", kind.name(), kind.describe()),
        events,
    })
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let demand_from = DemandFrom::of(&args)?;
    let kinds = PolicyKind::parse_list(&args.policy)?;
    let params = Params::parse(&args.param)?;
    if args.record.is_some() && kinds.len() != 1 {
        bail!(
            "--record writes one simulated run: give one --policy, not {}",
            args.policy
        );
    }
    if let Some(out) = &args.record {
        if !args.force && out.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; pass --force to overwrite it or choose another path",
                out.display()
            );
        }
    }
    let (rec, source, named, live) = match demand_from {
        DemandFrom::File(path) => {
            let name = path.display().to_string();
            (load(path)?, name.clone(), name, None)
        }
        DemandFrom::Live(target, duration) => {
            let (rec, live) = observe(target, duration)?;
            let named = format!("the target ({})", live.target);
            let source = format!(
                "of a live target observed for {:.1} s ({}; {} events, {} lost)",
                live.seconds,
                live.target.strip_prefix("live: ").unwrap_or(&live.target),
                live.events,
                live.lost
            );
            (rec, source, named, Some(live))
        }
    };
    let (recorded, wake_cost) = recorded_defaults(&rec.demand, &rec.header.host);
    let params = params.with_recorded(recorded);
    let pcpus = match args.pcpus {
        Some(n) => u32::try_from(n).map_err(|_| simulate::SimError::Pcpus(n))?,
        None => rec.demand.pcpus,
    };
    simulate::check_inputs(&rec.demand, pcpus).with_context(|| named)?;
    // Build every policy first so a bad parameter fails before any work.
    let mut built = Vec::new();
    for &k in &kinds {
        built.push((k, simulate::build(k, &rec.demand, pcpus, &params)?));
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    params.check_all_used(&names)?;
    let charged: Vec<(PolicyKind, simulate::DispatchDelay)> = built
        .iter()
        .map(|(k, b)| (*k, b.dispatch_delay()))
        .collect();

    if let Some(out) = &args.record {
        let (kind, b) = built.pop().expect("one policy");
        return record(&rec, kind, b, pcpus, out, args.force);
    }

    let open_bursts = simulate::open_bursts(&params)?;
    let fair = compare::demand_rows(&rec.demand, pcpus, open_bursts);
    let mut columns = vec![compare::column(
        "recorded",
        &format!("the recording ({})", rec.header.host.scheduler),
        &rec.snapshot,
        &rec.demand,
        &rec.demand,
        &fair,
        rec.events.len() as u64,
    )];
    for (kind, b) in built {
        let mut events = Vec::new();
        simulate::run(b, &rec.demand, pcpus, &mut |e| events.push(e.clone()));
        columns.push(compare::measure(
            kind.name(),
            kind.describe(),
            &events,
            &rec.demand,
            &fair,
        ));
    }
    let doc = Comparison {
        source,
        pcpus,
        recorded_pcpus: rec.demand.pcpus,
        span_s: rec.demand.span_ns() as f64 / 1e9,
        open_loop: simulate::OPEN_LOOP_NOTE.to_string(),
        affinity: simulate::affinity_note(&rec.demand, pcpus),
        tick: simulate::tick_note(
            rec.header.host.hz,
            &params,
            &simulate::tick_phases(&rec.demand, &params),
        )?,
        dispatch: simulate::wake_cost::dispatch_note(&wake_cost, &charged),
        fair: compare::fair_note(pcpus, rec.demand.pcpus),
        cpu_bound: compare::cpu_bound_note(&rec.demand, open_bursts),
        groups: compare::groups_note(&rec.demand),
        others: simulate::others_load::others_note(&rec.demand),
        wake_cost: wake_cost.summary(charged.first().map_or_else(Default::default, |c| c.1)),
        params: args.param.clone(),
        demand: fair,
        columns,
    };
    if args.json {
        let doc = Document {
            comparison: &doc,
            live: live.as_ref(),
        };
        let json = serde_json::to_string_pretty(&doc).context("encoding the comparison as JSON")?;
        super::print_stdout(&(json + "\n"))?;
    } else {
        super::print_stdout(&compare::render_text(&doc))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the demand comes from: a trace file, or a live target observed for a duration.
enum DemandFrom<'a> {
    File(&'a std::path::Path),
    Live(Target, Duration),
}

impl<'a> DemandFrom<'a> {
    /// The one source the flags name, or one line saying what is missing or too much.
    fn of(args: &'a SimulateArgs) -> anyhow::Result<DemandFrom<'a>> {
        const LIVE: &str = "a live target (--demo, --pid PID, --all-kvm, --qemu) with --duration N";
        match (&args.file, args.target.given()) {
            (Some(_), true) => {
                bail!("give either a trace FILE or a live target (--demo, --pid, --all-kvm, --qemu), not both")
            }
            (None, false) => bail!("nothing to simulate: give a trace FILE or {LIVE}"),
            (Some(path), false) => match args.duration {
                Some(_) => bail!(
                    "--duration is for a live target: the demand of {} is replayed whole",
                    path.display()
                ),
                None => Ok(DemandFrom::File(path)),
            },
            (None, true) => match args.duration {
                Some(d) => {
                    let target = args.target.resolve()?;
                    if target.counters_mode() {
                        bail!(
                            "simulate replays the switches, bursts and sleeps the eBPF probes \
                             see; counters mode (--no-bpf, or no BPF capabilities) has none"
                        );
                    }
                    Ok(DemandFrom::Live(target, d))
                }
                None => bail!(
                    "a live target needs --duration N: simulate replays the whole demand, so \
                     it observes the target for N seconds first"
                ),
            },
        }
    }
}

/// Observes `target` for `duration` as `record` does, into a trace file in a temporary
/// directory, and loads that as any recording: the demand holds exactly what a recording
/// holds (task groups, host facts, process map). What the session lost is said on stderr
/// and in the output's header.
fn observe(target: Target, duration: Duration) -> anyhow::Result<(Recorded, LiveRecording)> {
    let dir = tempfile::Builder::new()
        .prefix("kvmscope-simulate-")
        .tempdir()
        .context("cannot create a temporary directory for the live recording (set TMPDIR?)")?;
    let path = dir.path().join("live.trace");
    let live = record_live(target, Some(duration), &path, false, "simulate")?;
    live.warn_losses();
    let rec = load(&path)?;
    Ok((rec, live))
}

/// `simulate --json`: the comparison, and with a live target what its session observed.
#[derive(serde::Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    comparison: &'a Comparison,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<&'a LiveRecording>,
}

fn record(
    rec: &Recorded,
    kind: PolicyKind,
    built: simulate::Built,
    pcpus: u32,
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let mut events = Vec::new();
    simulate::run(built, &rec.demand, pcpus, &mut |e| events.push(e.clone()));
    let mut processes = ProcessMap::default();
    for e in &events {
        if let Event::TaskInfo(t) = e {
            processes.note(t);
        }
    }
    let mut host = rec.header.host.clone();
    host.scheduler = format!("simulated {} ({})", kind.name(), kind.describe());
    host.cpus = pcpus;
    let header = TraceHeader {
        format_version: FORMAT_VERSION,
        host,
        processes: processes.processes(),
        command_line: std::env::args().collect(),
        recorder: format!("kvmscope {} simulate", env!("CARGO_PKG_VERSION")),
        started_unix_secs: rec.header.started_unix_secs,
    };
    let file = create_output(out, force)?;
    let name = out.display().to_string();
    let err = |e: std::io::Error| anyhow::Error::new(e).context(format!("cannot write {name}"));
    let mut w = TraceWriter::new(std::io::BufWriter::new(file), &header).map_err(err)?;
    for chunk in events.chunks(CHUNK_EVENTS) {
        for e in chunk {
            w.write(e).map_err(err)?;
        }
        w.end_chunk().map_err(err)?;
    }
    w.finish().map_err(err)?;
    eprintln!(
        "{}: {} simulated events of {} ({}); {}",
        name,
        events.len(),
        kind.name(),
        kind.describe(),
        simulate::OPEN_LOOP_NOTE
    );
    Ok(ExitCode::SUCCESS)
}
