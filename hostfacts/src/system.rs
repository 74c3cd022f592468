//! System-wide `/proc` facts: the CPU's flags, the kernel's release, host name, tick rate
//! and stolen time, sysctls kvmscope reads, the mount table and the kernel's symbols.

use std::path::Path;

use procfs::{Current, CurrentSI};

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

/// Time stolen from this (virtual) machine by its hypervisor, summed over all CPUs, ns
/// (`/proc/stat`'s steal, counted in clock ticks of `USER_HZ`), if readable.
pub fn steal_ns() -> Option<u64> {
    let stat = procfs::KernelStats::current().ok()?;
    let ticks = stat.total.steal?;
    Some(ticks.saturating_mul(1_000_000_000) / procfs::ticks_per_second())
}

/// CPU time all CPUs spent running tasks since boot (`/proc/stat`'s user + nice + system;
/// guest time is inside user), in clock ticks, if readable.
pub fn task_busy_ticks() -> Option<u64> {
    let t = procfs::KernelStats::current().ok()?.total;
    Some(t.user + t.nice + t.system)
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

/// The kernel's tick rate (`CONFIG_HZ`): from its build configuration (`/proc/config.gz`,
/// else `/boot/config-$(uname -r)`), else measured from the jiffies count in
/// `/proc/timer_list` over [`HZ_MEASURE`] (kernels built without `IKCONFIG`, such as
/// Debian's, booted without their `/boot`). `None` when neither is readable.
pub fn kernel_hz() -> Option<u32> {
    config_hz().or_else(measured_hz)
}

/// How long [`kernel_hz`] watches the jiffies count when the configuration is not readable:
/// 10 ticks at HZ=100, enough to tell 100, 250, 300 and 1000 apart.
pub const HZ_MEASURE: std::time::Duration = std::time::Duration::from_millis(100);

fn config_hz() -> Option<u32> {
    match procfs::kernel_config().ok()?.get("CONFIG_HZ")? {
        procfs::ConfigSetting::Value(v) => v.parse().ok().filter(|&hz| hz > 0),
        _ => None,
    }
}

fn measured_hz() -> Option<u32> {
    let (ns0, j0) = timer_list_clock(&std::fs::read_to_string("/proc/timer_list").ok()?)?;
    std::thread::sleep(HZ_MEASURE);
    let (ns1, j1) = timer_list_clock(&std::fs::read_to_string("/proc/timer_list").ok()?)?;
    hz_from_ticks(j1.checked_sub(j0)?, ns1.checked_sub(ns0)?)
}

/// `now at NS nsecs` and the first `jiffies: N` of a `/proc/timer_list`.
fn timer_list_clock(text: &str) -> Option<(u64, u64)> {
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .trim()
            .parse()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies:")?.trim().parse().ok())?;
    Some((now, jiffies))
}

/// The configurable tick rate nearest to `ticks` over `ns`, if one is within 20% (a tick
/// can be late by a fraction of a tick period; a rate off every choice is not a tick).
fn hz_from_ticks(ticks: u64, ns: u64) -> Option<u32> {
    if ns == 0 {
        return None;
    }
    let rate = ticks as f64 * 1e9 / ns as f64;
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - rate)
                .abs()
                .total_cmp(&(f64::from(*b) - rate).abs())
        })
        .filter(|&hz| (f64::from(hz) - rate).abs() <= 0.2 * f64::from(hz))
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
        // Steal only grows (a kernel without it reads 0).
        let before = steal_ns().expect("/proc/stat has a steal column since 2.6.11");
        assert!(steal_ns().is_some_and(|after| after >= before));
    }

    #[test]
    fn tick_rate_from_the_configuration_or_the_jiffies_count_agree() {
        let measured = measured_hz();
        // Either source may be missing (no root for timer_list, no IKCONFIG), not both
        // wrong: where both are read they agree.
        if let (Some(config), Some(measured)) = (config_hz(), measured) {
            assert_eq!(config, measured, "CONFIG_HZ vs the jiffies count");
        }
        assert_eq!(kernel_hz(), config_hz().or(measured));
    }

    #[test]
    fn tick_rate_is_read_from_timer_list_text() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 1014440424569 nsecs\n\ncpu: 0\n  .last_jiffies   : 4295091524\njiffies: 4295145843\n";
        assert_eq!(
            timer_list_clock(text),
            Some((1_014_440_424_569, 4_295_145_843))
        );
        assert_eq!(timer_list_clock("now at 5 nsecs\n"), None);
        assert_eq!(hz_from_ticks(25, 100_000_000), Some(250));
        assert_eq!(hz_from_ticks(24, 100_000_000), Some(250));
        assert_eq!(hz_from_ticks(10, 100_000_000), Some(100));
        assert_eq!(hz_from_ticks(101, 100_000_000), Some(1000));
        assert_eq!(hz_from_ticks(60, 100_000_000), None);
        assert_eq!(hz_from_ticks(3, 0), None);
    }
}
