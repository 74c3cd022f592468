//! The kernel's own per-thread scheduling figures, without BPF: perf software counters
//! (task-clock, context-switches, cpu-migrations) and the `/proc` readers for `schedstat` and
//! `sched`.
//!
//! Two jobs: the degraded `--no-bpf` mode reads them periodically, and tests use
//! [`SchedStat`] and [`ProcSched`] as oracles for what the eBPF probes report. Both readers
//! therefore parse exactly (integer nanoseconds, no float rounding).

use std::fs;
use std::io;
use std::path::PathBuf;

use perf_event::events::Software;
use perf_event::{Builder, Counter, Group};

/// A `/proc` file or perf counter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("thread {tid} of process {pid} does not exist")]
    NoSuchThread { pid: u32, tid: u32 },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("unexpected format in {}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    #[error(
        "cannot open perf counters for thread {tid}: {source} (needs root, CAP_PERFMON or \
         kernel.perf_event_paranoid <= 1)"
    )]
    PerfOpen { tid: u32, source: io::Error },
    #[error("cannot read perf counters of thread {tid}: {source}")]
    PerfRead { tid: u32, source: io::Error },
}

fn task_path(pid: u32, tid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/task/{tid}/{file}"))
}

fn read_task_file(pid: u32, tid: u32, file: &str) -> Result<(PathBuf, String), CounterError> {
    let path = task_path(pid, tid, file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Err(CounterError::NoSuchThread { pid, tid })
        }
        Err(source) => Err(CounterError::Read { path, source }),
    }
}

/// `/proc/<pid>/task/<tid>/schedstat`: three numbers kept even without CONFIG_SCHEDSTATS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SchedStat {
    /// Time on CPU, ns (task clock: equals `se.sum_exec_runtime`, excludes steal).
    pub run_ns: u64,
    /// Time runnable but waiting in a run queue, ns.
    pub wait_ns: u64,
    /// Number of times the thread was put on a CPU.
    pub timeslices: u64,
}

impl SchedStat {
    pub fn read(pid: u32, tid: u32) -> Result<Self, CounterError> {
        let (path, text) = read_task_file(pid, tid, "schedstat")?;
        Self::parse(&text).ok_or_else(|| CounterError::Format {
            path,
            what: format!("expected three numbers, got {:?}", text.trim()),
        })
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut it = text.split_whitespace().map(|v| v.parse::<u64>());
        let s = SchedStat {
            run_ns: it.next()?.ok()?,
            wait_ns: it.next()?.ok()?,
            timeslices: it.next()?.ok()?,
        };
        it.next().is_none().then_some(s)
    }
}

/// The scheduler fields of `/proc/<pid>/task/<tid>/sched` kvmscope checks against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProcSched {
    /// `se.vruntime`, ns.
    pub vruntime: u64,
    /// `se.sum_exec_runtime`, ns.
    pub sum_exec_runtime: u64,
    pub nr_migrations: u64,
    /// `nr_switches` = voluntary + involuntary: how many times the thread left a CPU.
    pub nr_switches: u64,
    pub nr_voluntary_switches: u64,
    pub nr_involuntary_switches: u64,
    /// `se.load.weight` as the file prints it (scaled by 1024 on 64-bit kernels).
    pub load_weight: u64,
    /// `se.slice`, ns (EEVDF kernels only).
    pub slice: Option<u64>,
    /// `se.deadline`, ns (EEVDF kernels that print it).
    pub deadline: Option<u64>,
}

impl ProcSched {
    pub fn read(pid: u32, tid: u32) -> Result<Self, CounterError> {
        let (path, text) = read_task_file(pid, tid, "sched")?;
        Self::parse(&text).map_err(|what| CounterError::Format { path, what })
    }

    /// Parse the file's text; the error names the first field missing or malformed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = |key: &str| -> Option<&str> {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim())
            })
        };
        let required = |key: &str, parse: fn(&str) -> Option<u64>| -> Result<u64, String> {
            let v = value(key).ok_or_else(|| format!("no {key} line"))?;
            parse(v).ok_or_else(|| format!("{key} is {v:?}"))
        };
        let count = |v: &str| v.parse::<u64>().ok();
        let ns = |v: &str| parse_split_ns(v).and_then(|n| u64::try_from(n).ok());
        Ok(ProcSched {
            vruntime: required("se.vruntime", ns)?,
            sum_exec_runtime: required("se.sum_exec_runtime", ns)?,
            nr_migrations: required("se.nr_migrations", count)?,
            nr_switches: required("nr_switches", count)?,
            nr_voluntary_switches: required("nr_voluntary_switches", count)?,
            nr_involuntary_switches: required("nr_involuntary_switches", count)?,
            load_weight: required("se.load.weight", count)?,
            slice: value("se.slice").and_then(|v| {
                // Printed as plain ns on current kernels, as ms.ns where it was a PN field.
                if v.contains('.') {
                    ns(v)
                } else {
                    count(v)
                }
            }),
            deadline: value("se.deadline").and_then(ns),
        })
    }

    /// Weight on the textbook scale (nice 0 = 1024). 64-bit kernels print `se.load.weight`
    /// scaled up by `SCHED_FIXEDPOINT_SHIFT` (10 bits); kvmscope only runs on 64-bit hosts.
    pub fn weight(&self) -> u32 {
        u32::try_from(self.load_weight >> 10).unwrap_or(u32::MAX)
    }
}

/// Parse the kernel's `SPLIT_NS` format (`<ms>.<6-digit ns remainder>`, maybe negative) into
/// nanoseconds, exactly.
pub fn parse_split_ns(v: &str) -> Option<i128> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (ms, frac) = v.split_once('.')?;
    if ms.is_empty() || frac.is_empty() || frac.len() > 6 {
        return None;
    }
    if !ms.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = 10i128.pow(6 - frac.len() as u32);
    let ms: i128 = ms.parse().ok()?;
    let frac: i128 = frac.parse::<i128>().ok()? * scale;
    let n = ms * 1_000_000 + frac;
    Some(if neg { -n } else { n })
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

    const SCHED: &str = "\
cat (9886, #threads: 1)
-------------------------------------------------------------------
se.exec_start                                :        465818.909178
se.vruntime                                  :           258.601655
se.sum_exec_runtime                          :             0.842882
se.nr_migrations                             :                    3
nr_switches                                  :                   12
nr_voluntary_switches                        :                    7
nr_involuntary_switches                      :                    5
se.load.weight                               :              1048576
se.avg.load_sum                              :                47260
policy                                       :                    0
prio                                         :                  120
se.slice                                     :              1400000
";

    #[test]
    fn proc_sched_parses_exactly() {
        let s = ProcSched::parse(SCHED).unwrap();
        assert_eq!(s.vruntime, 258_601_655);
        assert_eq!(s.sum_exec_runtime, 842_882);
        assert_eq!(s.nr_migrations, 3);
        assert_eq!(s.nr_switches, 12);
        assert_eq!(s.nr_voluntary_switches, 7);
        assert_eq!(s.nr_involuntary_switches, 5);
        assert_eq!(s.load_weight, 1_048_576);
        assert_eq!(s.weight(), 1024);
        assert_eq!(s.slice, Some(1_400_000));
        assert_eq!(s.deadline, None);
    }

    #[test]
    fn proc_sched_names_a_missing_field() {
        let err = ProcSched::parse("se.vruntime : 1.000000\n").unwrap_err();
        assert!(err.contains("se.sum_exec_runtime"), "{err}");
    }

    #[test]
    fn split_ns_handles_sign_and_short_fractions() {
        assert_eq!(parse_split_ns("0.000001"), Some(1));
        assert_eq!(parse_split_ns("-1.500000"), Some(-1_500_000));
        assert_eq!(parse_split_ns("2.5"), Some(2_500_000));
        assert_eq!(parse_split_ns("12"), None);
        assert_eq!(parse_split_ns("1.x"), None);
    }

    #[test]
    fn weights_read_on_the_textbook_scale() {
        let w = |load_weight| {
            ProcSched {
                load_weight,
                ..Default::default()
            }
            .weight()
        };
        assert_eq!(w(1024 << 10), 1024);
        assert_eq!(w(335 << 10), 335);
        assert_eq!(w(88761 << 10), 88761);
    }

    #[test]
    fn schedstat_parses() {
        let s = SchedStat::parse("123 456 7\n").unwrap();
        assert_eq!((s.run_ns, s.wait_ns, s.timeslices), (123, 456, 7));
        assert_eq!(SchedStat::parse("1 2"), None);
    }

    #[test]
    fn own_thread_figures_are_consistent() {
        let pid = std::process::id();
        // The thread running this test.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let before = SchedStat::read(pid, tid).unwrap();
        let sched = ProcSched::read(pid, tid).unwrap();
        let after = SchedStat::read(pid, tid).unwrap();
        assert!(before.run_ns <= sched.sum_exec_runtime);
        assert!(sched.sum_exec_runtime <= after.run_ns);
        assert!(matches!(
            SchedStat::read(pid, 4_194_305),
            Err(CounterError::NoSuchThread { .. })
        ));
    }
}
