//! The kernel's own per-thread scheduling figures, without BPF: perf software counters
//! (task-clock, context-switches, cpu-migrations), beside the `/proc` readers for `schedstat`
//! and `sched` (re-exported from their home, the host-facts layer `hostfacts::task_files`).
//!
//! Two jobs: the degraded `--no-bpf` mode reads them periodically, and tests use
//! [`SchedStat`] and [`ProcSched`] as oracles for what the eBPF probes report.

use std::io;

use perf_event::events::Software;
use perf_event::{Builder, Counter, Group};

pub use hostfacts::task_files::{parse_split_ns, ProcSched, SchedStat, TaskFileError};

/// A perf counter could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error(
        "cannot open perf counters for thread {tid}: {source} (needs root, CAP_PERFMON or \
         kernel.perf_event_paranoid <= 1)"
    )]
    PerfOpen { tid: u32, source: io::Error },
    #[error("cannot read perf counters of thread {tid}: {source}")]
    PerfRead { tid: u32, source: io::Error },
}

/// One reading of a thread's perf software counters (cumulative since they were opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CounterReading {
    /// task-clock: ns the thread spent on a CPU.
    pub task_clock_ns: u64,
    pub context_switches: u64,
    pub cpu_migrations: u64,
}

impl CounterReading {
    /// Growth since an earlier reading.
    pub fn since(&self, earlier: &CounterReading) -> CounterReading {
        CounterReading {
            task_clock_ns: self.task_clock_ns.saturating_sub(earlier.task_clock_ns),
            context_switches: self
                .context_switches
                .saturating_sub(earlier.context_switches),
            cpu_migrations: self.cpu_migrations.saturating_sub(earlier.cpu_migrations),
        }
    }
}

/// perf software counters of one thread, read together as one group so all three cover the
/// same interval. Counting stops when this is dropped.
pub struct ThreadCounters {
    tid: u32,
    group: Group,
    task_clock: Counter,
    context_switches: Counter,
    cpu_migrations: Counter,
}

impl std::fmt::Debug for ThreadCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadCounters")
            .field("tid", &self.tid)
            .finish_non_exhaustive()
    }
}

impl ThreadCounters {
    /// Open and start the counters of thread `tid` (any CPU, this thread only).
    pub fn open(tid: u32) -> Result<Self, CounterError> {
        let perf_err = |source| CounterError::PerfOpen { tid, source };
        let pid = i32::try_from(tid).map_err(|_| {
            perf_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tid out of range",
            ))
        })?;
        let mut group = Group::builder()
            .observe_pid(pid)
            .any_cpu()
            .build_group()
            .map_err(perf_err)?;
        // Switches and migrations are counted from inside the scheduler, in kernel mode: with
        // the builder's default `exclude_kernel` they would always read 0.
        let counter = |group: &mut Group, event: Software| {
            group.add(
                Builder::new(event)
                    .observe_pid(pid)
                    .any_cpu()
                    .include_kernel()
                    .include_hv(),
            )
        };
        let task_clock = counter(&mut group, Software::TASK_CLOCK).map_err(perf_err)?;
        let context_switches = counter(&mut group, Software::CONTEXT_SWITCHES).map_err(perf_err)?;
        let cpu_migrations = counter(&mut group, Software::CPU_MIGRATIONS).map_err(perf_err)?;
        group.enable().map_err(perf_err)?;
        Ok(ThreadCounters {
            tid,
            group,
            task_clock,
            context_switches,
            cpu_migrations,
        })
    }

    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// Current cumulative values. Still works after the thread exited (final values).
    pub fn read(&mut self) -> Result<CounterReading, CounterError> {
        let data = self.group.read().map_err(|source| CounterError::PerfRead {
            tid: self.tid,
            source,
        })?;
        let get = |c: &Counter| data.get(c).map(|e| e.value()).unwrap_or(0);
        Ok(CounterReading {
            task_clock_ns: get(&self.task_clock),
            context_switches: get(&self.context_switches),
            cpu_migrations: get(&self.cpu_migrations),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_counters_open_or_say_why() {
        let tid = hostfacts::gettid();
        match ThreadCounters::open(tid) {
            Ok(mut c) => assert_eq!(c.read().map(|_| c.tid()).unwrap(), tid),
            Err(e) => assert!(e.to_string().contains("perf"), "{e}"),
        }
    }
}
