//! The host-facts layer: what kvmscope reads about the host it runs on, written once and used
//! by `probes`, `vmm` and the binary (`model` stays free of it: it is pure, see tests/tidy.rs).
//!
//! - [`task_files`]: a thread's `/proc/<pid>/task/<tid>/schedstat` and `sched`, exactly;
//! - [`process`]: processes and threads (which exist, `stat`, `status`, names, command lines,
//!   descriptors), on the `procfs` crate;
//! - [`system`]: system-wide `/proc` facts (CPU flags, kernel release, sysctls, mounts);
//! - [`monotonic_ns`]: CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns` and of every event;
//! - [`gettid`], [`euid`]: who is asking;
//! - [`privilege`]: the effective capabilities, and whether they let this process load BPF.
//!
//! It is the only place that reads `/proc` (tests/tidy.rs). Syscalls go through `rustix` and
//! `caps`, so this crate has no `unsafe`.

#![forbid(unsafe_code)]

pub mod privilege;
pub mod process;
pub mod system;
pub mod task_files;

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
}
