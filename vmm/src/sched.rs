//! The host-side scheduling knobs and oracles for vCPU threads: thread ids, nice values,
//! CPU affinity (thread ids, allowed CPUs and `schedstat` come from the host-facts layer,
//! `hostfacts`).

use std::io;

use rustix::io::Errno;
use rustix::process::{getpriority_process, setpriority_process, Pid};
use rustix::thread::{sched_setaffinity, CpuSet};

/// The calling thread's kernel thread id, from the host-facts layer.
pub use hostfacts::gettid;

/// Sets the nice value of thread `tid` (on Linux `setpriority(PRIO_PROCESS, tid)` acts on
/// that one thread, which is what sets its scheduler weight).
pub fn set_nice(tid: u32, nice: i32) -> io::Result<()> {
    Ok(setpriority_process(pid_of(tid)?, nice)?)
}

/// The nice value of thread `tid` (rustix tells a nice of -1 from an error).
pub fn get_nice(tid: u32) -> io::Result<i32> {
    Ok(getpriority_process(pid_of(tid)?)?)
}

/// Restricts thread `tid` to `cpus`.
pub fn set_affinity(tid: u32, cpus: &[u32]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        if c as usize >= CpuSet::MAX_CPU {
            return Err(Errno::INVAL.into());
        }
        set.set(c as usize);
    }
    Ok(sched_setaffinity(pid_of(tid)?, &set)?)
}

/// The CPUs thread `tid` (0 = the caller) may run on, from the host-facts layer.
pub use hostfacts::allowed_cpus as get_affinity;

/// A thread id as rustix takes it: `None` (0) is the calling thread, as in the syscalls.
fn pid_of(tid: u32) -> io::Result<Option<Pid>> {
    let tid = i32::try_from(tid).map_err(|_| Errno::INVAL)?;
    Ok(Pid::from_raw(tid))
}

/// A thread's `/proc/<pid>/task/<tid>/schedstat`, from the host-facts layer.
pub use hostfacts::SchedStat;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_and_nice_round_trip_on_this_thread() {
        let tid = gettid();
        let allowed = get_affinity(0).unwrap();
        set_affinity(tid, &allowed[..1]).unwrap();
        assert_eq!(get_affinity(tid).unwrap(), allowed[..1]);
        set_affinity(tid, &allowed).unwrap();
        let before = get_nice(tid).unwrap();
        // Raising nice needs no privilege.
        set_nice(tid, 19).unwrap();
        assert_eq!(get_nice(tid).unwrap(), 19);
        let _ = set_nice(tid, before);
    }
}
