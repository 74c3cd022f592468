//! `kvmscope export FILE --format perfetto|chrome-json -o OUT`: a recording for other tools.

use std::io::BufWriter;
use std::process::ExitCode;

use anyhow::Context;
use export::{ChromeWriter, PerfettoWriter};
use model::Source;

use crate::cli::{ExportArgs, ExportFormat};
use crate::file_source::{create_output, FileSource};

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut src = FileSource::open(&args.file)?;
    let header = src.header().clone();
    let out_name = args.output.display().to_string();
    let out = BufWriter::with_capacity(1 << 20, create_output(&args.output, args.force)?);
    let ctx = || format!("exporting {} to {out_name}", args.file.display());
    let mut batch = Vec::new();
    let summary = match args.format {
        ExportFormat::Perfetto => {
            let mut w = PerfettoWriter::new(out, &header).with_context(ctx)?;
            while next_batch(&mut src, &mut batch)? {
                for e in &batch {
                    w.push(e).with_context(ctx)?;
                }
            }
            let (_, s) = w.finish().with_context(ctx)?;
            format!(
                "{} events -> {} packets: {} ftrace sched events on {} CPU tracks, {} vCPU \
                 tracks, {} track events, {} VMCLEAR IPI flows",
                s.events_in,
                s.packets,
                s.ftrace_events,
                s.cpus,
                s.vcpu_tracks,
                s.track_events,
                s.vmclear_flows
            )
        }
        ExportFormat::ChromeJson => {
            let mut w = ChromeWriter::new(out, &header).with_context(ctx)?;
            while next_batch(&mut src, &mut batch)? {
                for e in &batch {
                    w.push(e).with_context(ctx)?;
                }
            }
            let (_, s) = w.finish().with_context(ctx)?;
            format!("{} events -> {} trace events", s.events_in, s.trace_events)
        }
    };
    src.warn_problems();
    if let Err(e) = src.require_events("export") {
        // Not an empty trace left behind to be mistaken for a result; but only a file this
        // command wrote: `-o /dev/null --force` (or a link) is not ours to unlink, as root.
        let ours = std::fs::symlink_metadata(&args.output).is_ok_and(|m| m.file_type().is_file());
        if ours {
            let _ = std::fs::remove_file(&args.output);
        }
        return Err(e);
    }
    eprintln!("exported {}: {summary} to {out_name}", args.file.display());
    Ok(ExitCode::SUCCESS)
}

fn next_batch(src: &mut FileSource, batch: &mut Vec<model::Event>) -> anyhow::Result<bool> {
    batch.clear();
    src.poll(batch, std::time::Duration::ZERO)
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("reading {}", src.path().display()))
}
