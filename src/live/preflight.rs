//! What a command does before it opens the live source: refuse in one line when the probes
//! cannot run here, decide counters mode, and arm the stop flag on Ctrl-C/SIGTERM.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::cli::TargetArgs;

/// A stop flag set by the first Ctrl-C or SIGTERM; a second one exits at once (status 130),
/// in case stopping itself hangs.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the exit is armed only once the flag below has been set once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    Ok(stop)
}

/// Refuse early, in one line, when the eBPF probes cannot be loaded by this user.
/// `command` names the subcommand in the message (`trace`, `report`, ...).
/// Without the capabilities counters mode starts instead (see [`counters_mode`]).
pub fn require_privileges(command: Option<&str>, target: &TargetArgs) -> anyhow::Result<()> {
    let _ = command;
    if counters_mode(target) {
        return Ok(());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "no BTF at /sys/kernel/btf/vmlinux: this kernel was built without \
             CONFIG_DEBUG_INFO_BTF, which the probes need (try --no-bpf for counters only)"
        );
    }
    Ok(())
}

/// Whether this session reads counters instead of loading BPF: asked for (`--no-bpf`), or
/// this process lacks the capabilities to load it (CAP_BPF with CAP_PERFMON, or
/// CAP_SYS_ADMIN), whatever its uid.
pub fn counters_mode(target: &TargetArgs) -> bool {
    target.no_bpf || !probes::host::may_load_bpf()
}
