use std::process::ExitCode;

use crate::cli::RecordArgs;

pub fn run(_args: RecordArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope record` is being built (placeholder during development)")
}
