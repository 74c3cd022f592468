//! System-wide `/proc` facts: the CPU's flags, the kernel's release and host name, sysctls
//! kvmscope reads, the mount table and the kernel's symbols.

use std::path::Path;

use procfs::Current;

/// The flags of the first CPU in `/proc/cpuinfo` (`vmx`, `svm`, ...); none if unreadable.
pub fn cpu_flags() -> Vec<String> {
    procfs::CpuInfo::current()
        .ok()
        .and_then(|info| Some(info.flags(0)?.into_iter().map(String::from).collect()))
        .unwrap_or_default()
}

/// `uname -r`, or "unknown".
pub fn kernel_release() -> String {
    read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".to_string())
}

/// The host name, or "unknown".
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".to_string())
}

/// `kernel.pid_max`, if readable.
pub fn pid_max() -> Option<u32> {
    procfs::sys::kernel::pid_max()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// `kernel.bpf_stats_enabled` as the file says it, if readable.
pub fn bpf_stats_enabled() -> Option<String> {
    read_trimmed(BPF_STATS_ENABLED)
}

/// Where [`bpf_stats_enabled`] reads, for messages.
pub const BPF_STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The mount table (`/proc/mounts`) as text; empty if unreadable.
pub fn mounts() -> String {
    std::fs::read_to_string("/proc/mounts").unwrap_or_default()
}

/// The kernel's symbol table (`/proc/kallsyms`), if readable.
pub fn kallsyms() -> Option<String> {
    std::fs::read_to_string("/proc/kallsyms").ok()
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_facts_are_read() {
        assert_ne!(kernel_release(), "unknown");
        assert!(pid_max().is_some_and(|n| n > 0));
        assert!(!mounts().is_empty());
        // A CPU always reports some flags (fpu at least).
        assert!(!cpu_flags().is_empty());
    }
}
