//! `kvmscope top`: the dashboard over VMs already running (QEMU, other VMMs, or `--demo`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::demo::{dashboard_options, run_live};
use crate::cli::{ExitsArg, TopArgs};
use crate::live::{stop_on_signals, LiveSource};

pub fn run(args: TopArgs, log_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut opts = dashboard_options("top", args.tick_hz, log_file)?;
    // With no target, every KVM process: what `top` users expect.
    let mut target = args.target.resolve()?;
    // The dashboard shows exit counts and latencies, not each exit: counted in the kernel.
    target.exits.get_or_insert(ExitsArg::Aggregate);
    let stop = stop_on_signals()?;
    opts.stop = stop.clone();
    let source = LiveSource::open(target, stop).context("cannot start watching")?;
    run_live(source, opts)
}
