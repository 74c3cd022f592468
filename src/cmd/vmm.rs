use std::process::ExitCode;

use crate::cli::VmmArgs;

pub fn run(_args: VmmArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope vmm` is being built (placeholder during development)")
}
