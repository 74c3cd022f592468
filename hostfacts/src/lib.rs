//! The host-facts layer: what kvmscope reads about the host it runs on, written once and used
//! by `probes`, `vmm` and the binary (`model` stays free of it: it is pure, see tests/tidy.rs).
//!
//! - [`task_files`]: a thread's `/proc/<pid>/task/<tid>/schedstat` and `sched`, exactly;
//! - [`process`]: processes and threads (which exist, `stat`, `status`, names, command lines,
//!   descriptors), on the `procfs` crate;
//! - [`task_group`]: the task group the fair scheduler puts a task in (autogroup or cgroup);
//! - [`system`]: system-wide `/proc` facts (CPU flags, kernel release, sysctls, mounts);
//! - [`monotonic_ns`]: CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns` and of every event;
//! - [`gettid`], [`euid`]: who is asking; [`clock_ticks_per_second`]: USER_HZ;
//! - [`allowed_cpus`]: the CPUs a thread may run on (its affinity mask);
//! - [`privilege`]: the effective capabilities, and whether they let this process load BPF.
//!
//! It is the only place that reads `/proc` (tests/tidy.rs). Syscalls go through `rustix` and
//! `caps`, so this crate has no `unsafe`.

#![forbid(unsafe_code)]

pub mod privilege;
pub mod process;
pub mod system;
pub mod task_files;
pub mod task_group;

pub use task_files::{ProcSched, SchedStat, TaskFileError};

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, so events stamped in the kernel
/// and readings taken here compare directly.
pub fn monotonic_ns() -> u64 {
    clock_ns(rustix::time::ClockId::Monotonic)
}

/// The calling thread's CPU time, ns (`CLOCK_THREAD_CPUTIME_ID`): what benchmarks and tests on
/// a shared machine measure instead of wall time.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(rustix::time::ClockId::ThreadCPUTime)
}

/// This process's CPU time, all threads, ns (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_ns() -> u64 {
    clock_ns(rustix::time::ClockId::ProcessCPUTime)
}

fn clock_ns(clock: rustix::time::ClockId) -> u64 {
    let ts = rustix::time::clock_gettime(clock);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The calling thread's kernel thread id.
pub fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// This process's effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The CPUs thread `tid` (0 = the caller) may run on, in order: its affinity mask
/// (`sched_getaffinity`). An error when the thread is gone or `tid` is not a thread id.
pub fn allowed_cpus(tid: u32) -> std::io::Result<Vec<u32>> {
    use rustix::thread::{sched_getaffinity, CpuSet};
    let raw = i32::try_from(tid).map_err(|_| rustix::io::Errno::INVAL)?;
    // 0 (`None`) is the calling thread, as in the syscall.
    let set = sched_getaffinity(rustix::process::Pid::from_raw(raw))?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .map(|c| c as u32)
        .collect())
}

/// USER_HZ: the unit of the tick counts in `/proc/stat` and `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_moves_forward_with_std_instant() {
        let a = monotonic_ns();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(2) {}
        let b = monotonic_ns();
        assert!(b - a >= 2_000_000, "{a} -> {b}");
        assert_eq!(gettid(), gettid());
        assert_ne!(gettid(), 0);
    }

    #[test]
    fn the_callers_allowed_cpus_are_its_own_and_a_bad_tid_is_an_error() {
        let mine = allowed_cpus(0).unwrap();
        assert!(!mine.is_empty());
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        assert_eq!(allowed_cpus(gettid()).unwrap(), mine);
        assert!(allowed_cpus(u32::MAX).is_err());
    }
}
