use std::process::ExitCode;

use crate::cli::DemoArgs;

pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope demo` is being built (placeholder during development)")
}
