//! `kvmscope report`: pick the source (a trace file, or a live target), fold it into the model
//! and print one screen of text or one JSON document (see `report_text`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{ExitsArg, ReportArgs};
use crate::file_source::FileSource;
use crate::report_text::{self, DriveLimits, ReportDoc, SourceSection};
use crate::target::Target;

/// Live observation time when `--duration` is not given.
const DEFAULT_LIVE_SPAN: Duration = Duration::from_secs(5);

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let doc = match &args.file {
        Some(path) => {
            if args.target.given() {
                anyhow::bail!("give either a trace FILE or a live target (--demo, --pid, --all-kvm, --qemu), not both");
            }
            report_file(path, args.duration)?
        }
        None => {
            if !args.target.given() {
                anyhow::bail!("nothing to report on: give a trace FILE or a live target (--demo, --pid PID, --all-kvm, --qemu)");
            }
            // Live reports need exit counts and latencies, not each exit: counted in the
            // kernel unless asked otherwise.
            let mut target = args.target.resolve()?;
            target.exits.get_or_insert(ExitsArg::Aggregate);
            report_live(target, args.duration.unwrap_or(DEFAULT_LIVE_SPAN))?
        }
    };
    if args.json {
        let out = serde_json::to_string_pretty(&doc).context("encoding the report as JSON")?;
        super::print_stdout(&(out + "\n"))?;
    } else {
        super::print_stdout(&report_text::render_text(&doc))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_file(path: &std::path::Path, duration: Option<Duration>) -> anyhow::Result<ReportDoc> {
    // FileSource errors already name the file and what is wrong with it.
    let mut src = FileSource::open(path)?;
    let stop = AtomicBool::new(false);
    let limits = DriveLimits {
        wall: None,
        event_span_ns: duration.map(|d| d.as_nanos() as u64),
        stop: &stop,
    };
    let model = report_text::drive(&mut src, &limits)?;
    // Hook for the trace-file side: what the recording says about itself.
    let mut extra = serde_json::Map::new();
    extra.insert("file".into(), path.display().to_string().into());
    if let Ok(header) = serde_json::to_value(src.header()) {
        extra.insert("header".into(), header);
    }
    // Events folded into the report (fewer than the file holds with --duration).
    extra.insert("events_read".into(), model.events().into());
    // trace_file (issue 6): the events the file holds (complete chunks read), its trailer and
    // what the reader met (corrupt chunks, truncated bytes).
    extra.insert("events".into(), src.stats().events.into());
    if let Some(Ok(t)) = src.trailer().map(serde_json::to_value) {
        extra.insert("trailer".into(), t);
    }
    if let Ok(read) = serde_json::to_value(src.stats()) {
        extra.insert("read".into(), read);
    }
    let problems = src.problems();
    // trace_file (issue 6): say on stderr what was lost, in text and JSON mode alike.
    src.warn_problems();
    src.require_events("report")?;
    if model.thread_slots() == 0 {
        return Err(crate::file_source::no_tracked_thread(path, "report"));
    }
    if !problems.is_empty() {
        extra.insert("problems".into(), problems.into());
    }
    let host = model::Source::host(&src).clone();
    let section = SourceSection {
        kind: "file".into(),
        describe: model::Source::describe(&src),
        extra,
    };
    Ok(report_text::document(&model, section, host))
}

fn report_live(target: Target, span: Duration) -> anyhow::Result<ReportDoc> {
    crate::live::require_privileges(&target)?;
    // Ctrl-C ends the observation early; the report still prints.
    let stop = crate::live::stop_on_signals()?;
    let mut src = crate::live::LiveSource::open(target, Arc::clone(&stop))?;
    src.stop_after(span);
    let limits = DriveLimits {
        wall: None,
        event_span_ns: None,
        stop: &stop,
    };
    let model = report_text::drive(&mut src, &limits)?;
    let mut extra = serde_json::Map::new();
    extra.insert("probes".into(), src.has_probes().into());
    if src.has_probes() {
        extra.insert("exits".into(), src.exit_mode().into());
    }
    extra.insert("lost_events".into(), src.lost_total().into());
    extra.insert(
        "dropped_after_close".into(),
        src.dropped_after_close().into(),
    );
    if let Some(summary) = src.vmm_summary().and_then(|v| serde_json::to_value(v).ok()) {
        // --demo: the in-process VMM's own view (work done, exits, gaps, schedstat).
        extra.insert("vmm".into(), summary);
    }
    if !src.warnings().is_empty() {
        extra.insert("warnings".into(), src.warnings().to_vec().into());
    }
    let host = model::Source::host(&src).clone();
    let section = SourceSection {
        kind: "live".into(),
        describe: model::Source::describe(&src),
        extra,
    };
    let mut doc = report_text::document(&model, section, host);
    for w in src.warnings() {
        doc.snapshot.health.notes.push(w.clone());
    }
    Ok(doc)
}
