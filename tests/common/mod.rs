//! Helpers shared by the end-to-end tests of the `kvmscope` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The binary under test.
pub fn kvmscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvmscope"))
}

/// Whether a privileged test may run. Returns `false` (after printing why) when the host
/// lacks `what`; with `KVMSCOPE_REQUIRE_PRIVILEGED=1` a missing privilege fails the test.
pub fn privileged(what: Privilege) -> bool {
    let missing = match what {
        Privilege::Kvm => missing_kvm(),
        Privilege::Bpf => missing_kvm().or_else(missing_bpf),
    };
    match missing {
        None => true,
        Some(reason) => {
            if std::env::var("KVMSCOPE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("privileged test cannot run: {reason} (KVMSCOPE_REQUIRE_PRIVILEGED=1)");
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Privilege {
    /// Read/write `/dev/kvm`.
    Kvm,
    /// KVM plus root, BTF and tracefs for the eBPF probes.
    Bpf,
}

fn missing_kvm() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/kvm: {e}")),
    }
}

fn missing_bpf() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (BPF tests need root)".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("no /sys/kernel/btf/vmlinux".into());
    }
    None
}
