use std::process::ExitCode;

use crate::cli::QemuArgs;

pub fn run(_args: QemuArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`kvmscope qemu` is being built (placeholder during development)")
}
