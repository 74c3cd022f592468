use std::process::ExitCode;

use crate::cli::TopArgs;

pub fn run(_args: TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope top` is being built (placeholder during development)")
}
