//! The VMM's errors: one line each, naming what failed and what to do.

use std::io;
use std::time::Duration;

use crate::exit::ExitFault;
use crate::scenario::ScenarioError;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot open /dev/kvm: no such device (this host has no KVM; enable virtualisation or load kvm_intel/kvm_amd)")]
    NoKvm,
    #[error(
        "cannot open /dev/kvm: permission denied (run as root or add your user to the kvm group)"
    )]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(io::Error),
    #[error("KVM API version {0} is not the stable version 12 this VMM speaks")]
    ApiVersion(i32),
    #[error("KVM capability {0} is missing on this host (the VMM needs it)")]
    MissingCapability(&'static str),
    #[error(
        "cpu {cpu} in the pin of {vcpu} is not available (this process may use cpus {allowed})"
    )]
    NoSuchCpu {
        cpu: u32,
        vcpu: String,
        allowed: String,
    },
    // `err`, not `source`: the message already carries it, and anyhow's chain would
    // print it twice.
    #[error("cannot {what} for {vm}: {err}")]
    Setup {
        vm: String,
        what: &'static str,
        err: io::Error,
    },
    #[error("cannot {what} for vCPU thread {thread}: {err}{hint}")]
    Thread {
        thread: String,
        what: &'static str,
        err: io::Error,
        hint: &'static str,
    },
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(
        "guest fault in {vm} vCPU {vcpu} (thread {thread}): {fault}; the other vCPUs were stopped"
    )]
    Guest {
        vm: String,
        vcpu: u32,
        thread: String,
        fault: ExitFault,
    },
    #[error("vCPU thread(s) {threads} did not stop within {timeout:?} of being kicked")]
    StopTimeout { threads: String, timeout: Duration },
}

impl VmmError {
    /// libc names the raw errno kvm-ioctls' errors carry.
    pub(crate) fn from_kvm_open(e: vmm_sys_util::errno::Error) -> VmmError {
        match e.errno() {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => VmmError::NoKvm,
            libc::EACCES | libc::EPERM => VmmError::KvmPermission,
            n => VmmError::KvmOpen(io::Error::from_raw_os_error(n)),
        }
    }

    pub(crate) fn setup(vm: &str, what: &'static str, e: vmm_sys_util::errno::Error) -> VmmError {
        VmmError::Setup {
            vm: vm.to_string(),
            what,
            err: io::Error::from_raw_os_error(e.errno()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::errno::Error;

    #[test]
    fn kvm_open_errors_say_what_to_do() {
        let m = VmmError::from_kvm_open(Error::new(libc::ENOENT)).to_string();
        assert!(m.starts_with("cannot open /dev/kvm: no such device"), "{m}");
        let m = VmmError::from_kvm_open(Error::new(libc::EACCES)).to_string();
        assert!(m.contains("permission denied (run as root or add your user to the kvm group)"));
        let m = VmmError::from_kvm_open(Error::new(libc::EBUSY)).to_string();
        assert!(m.starts_with("cannot open /dev/kvm: "), "{m}");
    }
}
