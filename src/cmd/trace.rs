use std::process::ExitCode;

use crate::cli::TraceArgs;

pub fn run(_args: TraceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope trace` is being built (placeholder during development)")
}
