use std::process::ExitCode;

use crate::cli::ExportArgs;

pub fn run(_args: ExportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope export` is being built (placeholder during development)")
}
