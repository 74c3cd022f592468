//! What a command does before it opens the live source: refuse in one line when the probes
//! cannot run here, and arm the stop flag on Ctrl-C/SIGTERM.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::target::Target;

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

/// Refuse early, in one line, when the eBPF probes cannot be loaded on this host. Without
/// the capabilities counters mode starts instead (see [`crate::target::Reading`]).
pub fn require_privileges(target: &Target) -> anyhow::Result<()> {
    if target.counters_mode() {
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
