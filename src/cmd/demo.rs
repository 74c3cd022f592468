//! `kvmscope demo`: the bundled VMM with an overcommitted scenario, the probes on its vCPU
//! threads, and the dashboard over both. Also holds the set-up `top` and `replay` share
//! (terminal check, log file, options).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::DemoArgs;
use crate::live::{stop_on_signals, LiveSource};
use crate::target::Target;

pub fn run(args: DemoArgs, log_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut opts = dashboard_options("demo", args.tick_hz, log_file)?;
    opts.duration = args.duration;
    let target = Target::demo(args.scenario.as_deref(), args.no_bpf, args.sample_every)?;
    let stop = stop_on_signals()?;
    opts.stop = stop.clone();
    eprintln!(
        "kvmscope: starting the demo VMs and {}…",
        if target.counters_mode() {
            "sampling their counters"
        } else {
            "attaching the probes"
        }
    );
    let source = LiveSource::open(target, stop).context("cannot start the demo")?;
    run_live(source, opts)
}

/// Open the dashboard on a live source; the source (probes, VMM) is dropped when it closes.
pub(super) fn run_live(source: LiveSource, mut opts: tui::RunOptions) -> anyhow::Result<ExitCode> {
    opts.notes = source.warnings().to_vec();
    for w in &opts.notes {
        log::warn!("{w}");
    }
    stop_dashboard_on_signals(&opts.stop)?;
    tui::run_live(Box::new(source), opts).context("dashboard failed")?;
    log::info!("dashboard closed");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT, SIGTERM and SIGHUP set the dashboard's stop flag: without it they would kill the
/// process with the terminal still raw. Only the binary installs signal handlers.
pub(super) fn stop_dashboard_on_signals(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install the dashboard's signal handler")?;
    }
    Ok(())
}

/// Checks and options every dashboard command shares: stdout must be a terminal, and stderr
/// goes to `log_file` (the logger already writes there, see `crate::logging`), never the
/// screen. The tick rate was checked by clap (`cli::parse_tick_hz`).
pub(super) fn dashboard_options(
    command: &str,
    tick_hz: f64,
    log_file: Option<&Path>,
) -> anyhow::Result<tui::RunOptions> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "{command} draws a dashboard and needs a terminal on stdout \
             (for text output use `kvmscope report` or `kvmscope trace`)"
        );
    }
    let mut opts = tui::RunOptions::new(tick_hz);
    if let Some(path) = log_file {
        opts.stderr_to = Some(crate::logging::open(path)?);
    }
    Ok(opts)
}
