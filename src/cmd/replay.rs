//! `kvmscope replay FILE [--simulate POLICY]`: the dashboard over a recording, with play/pause,
//! speed and seek, and optionally a simulated run of its demand to switch to.
//! The recording is read a chunk at a time through the file's chunk index (`tui::Track`):
//! memory does not grow with the file's length, and a backward seek refolds from the
//! nearest model checkpoint. With `--simulate`, the events are also read in full once, for
//! the simulation.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use model::Source;

use super::demo::dashboard_options;
use crate::cli::ReplayArgs;
use crate::file_source::{no_tracked_thread, FileSource};

pub fn run(args: ReplayArgs, log_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    // A wrong policy or parameter fails before the file is read or the screen taken.
    let simulate = match &args.simulate {
        Some(policy) => Some((
            simulate::PolicyKind::parse(policy)?,
            simulate::Params::parse(&args.param)?,
        )),
        None => None,
    };
    let source = FileSource::open(&args.file)?;
    let label = source.describe();
    let mut reader = source.into_reader();
    let index = reader
        .scan()
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if index.iter().all(|c| c.events == 0) {
        bail!("{} holds no events to replay", args.file.display());
    }
    if !announces_a_thread(&args.file)? {
        // The dashboard would wait for vCPUs forever, its table empty.
        return Err(no_tracked_thread(&args.file, "replay"));
    }
    let mut opts = dashboard_options("replay", 10.0, log_file)?;
    opts.notes = reader.stats().problems();
    opts.clock = false;
    log::info!(
        "replaying {} events in {} chunks from {}",
        index.iter().map(|c| u64::from(c.events)).sum::<u64>(),
        index.len(),
        args.file.display()
    );
    let host = reader.header().host.clone();
    let simulated = match simulate {
        Some((kind, params)) => {
            let mut source = FileSource::open(&args.file)?;
            let mut events = Vec::new();
            while source
                .poll(&mut events, Duration::ZERO)
                .map_err(anyhow::Error::from_boxed)
                .with_context(|| format!("cannot read {}", args.file.display()))?
            {}
            Some(
                super::simulate::simulated_run(&events, &host, kind, params)
                    .with_context(|| args.file.display().to_string())?,
            )
        }
        None => None,
    };
    let recorded = tui::Track::from_file(reader, index);
    super::demo::stop_dashboard_on_signals(&opts.stop)?;
    tui::run_replay(recorded, host, label, args.speed, simulated, opts)
        .context("dashboard failed")?;
    Ok(ExitCode::SUCCESS)
}

/// Whether the recording announces a tracked thread (a `TaskInfo`), read up to the first
/// announcement: the first chunk of any recording of a target, the whole file only when
/// there is none.
fn announces_a_thread(file: &Path) -> anyhow::Result<bool> {
    let mut source = FileSource::open(file)?;
    let mut events = Vec::new();
    loop {
        events.clear();
        let more = source
            .poll(&mut events, Duration::ZERO)
            .map_err(anyhow::Error::from_boxed)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if events
            .iter()
            .any(|e| matches!(e, model::Event::TaskInfo(_)))
        {
            return Ok(true);
        }
        if !more {
            return Ok(false);
        }
    }
}
