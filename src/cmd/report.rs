use std::process::ExitCode;

use crate::cli::ReportArgs;

pub fn run(_args: ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope report` is being built (placeholder during development)")
}
