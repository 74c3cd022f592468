//! `kvmscope replay FILE [--simulate POLICY]`: the dashboard over a recording, with play/pause,
//! speed and seek, and optionally a simulated run of its demand to switch to.
//! The file is read into memory first (events are small and `Copy`-sized), so seeking is a
//! refold of the model rather than file I/O.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use model::Source;

use super::demo::dashboard_options;
use crate::cli::ReplayArgs;
use crate::file_source::FileSource;

pub fn run(args: ReplayArgs, log_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", args.speed);
    }
    // A wrong policy or parameter fails before the file is read or the screen taken.
    let simulate = match &args.simulate {
        Some(policy) => Some((
            simulate::PolicyKind::parse(policy)?,
            simulate::Params::parse(&args.param)?,
        )),
        None => None,
    };
    let mut source = FileSource::open(&args.file)?;
    let mut events = Vec::new();
    while source
        .poll(&mut events, Duration::ZERO)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot read {}", args.file.display()))?
    {}
    if events.is_empty() {
        bail!("{} holds no events to replay", args.file.display());
    }
    let mut opts = dashboard_options("replay", 10.0, log_file)?;
    opts.notes = source.problems();
    opts.clock = false;
    log::info!(
        "replaying {} events from {}",
        events.len(),
        args.file.display()
    );
    let host = source.host().clone();
    let label = source.describe();
    let simulated = match &simulate {
        Some((kind, params)) => Some(
            super::simulate::simulated_run(&events, host.cpus, *kind, params)
                .with_context(|| args.file.display().to_string())?,
        ),
        None => None,
    };
    super::demo::stop_dashboard_on_signals(&opts.stop)?;
    tui::run_replay(events, host, label, args.speed, simulated, opts)
        .context("dashboard failed")?;
    Ok(ExitCode::SUCCESS)
}
