use std::process::ExitCode;

use crate::cli::ReplayArgs;

pub fn run(_args: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope replay` is being built (placeholder during development)")
}
