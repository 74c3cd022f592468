//! A thread's `/proc/<pid>/task/<tid>/` scheduling files, parsed exactly (integer
//! nanoseconds, no float rounding): `schedstat` ([`SchedStat`]) and `sched` ([`ProcSched`]).
//! They are the kernel's own figures: the `--no-bpf` source reads them, the VMM summarises its
//! threads with them, and tests use them as oracles for what the eBPF probes report.

use std::fs;
use std::io;
use std::path::PathBuf;

/// A thread's `/proc` file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    #[error("thread {tid} of process {pid} does not exist")]
    NoSuchThread { pid: u32, tid: u32 },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected format in {}: {what}", path.display())]
    Format { path: PathBuf, what: String },
}

pub(crate) fn task_path(pid: u32, tid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/task/{tid}/{file}"))
}

fn read_task_file(pid: u32, tid: u32, file: &str) -> Result<(PathBuf, String), TaskFileError> {
    let path = task_path(pid, tid, file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(e) if is_gone(&e) => Err(TaskFileError::NoSuchThread { pid, tid }),
        Err(source) => Err(TaskFileError::Read { path, source }),
    }
}

/// Whether a read failed because the thread is gone (no such file, or it exited between the
/// open and the read).
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
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
    pub fn read(pid: u32, tid: u32) -> Result<Self, TaskFileError> {
        let (path, text) = read_task_file(pid, tid, "schedstat")?;
        Self::parse(&text).ok_or_else(|| TaskFileError::Format {
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

    /// Growth since an earlier reading.
    pub fn since(&self, earlier: &SchedStat) -> SchedStat {
        SchedStat {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            wait_ns: self.wait_ns.saturating_sub(earlier.wait_ns),
            timeslices: self.timeslices.saturating_sub(earlier.timeslices),
        }
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
    pub fn read(pid: u32, tid: u32) -> Result<Self, TaskFileError> {
        let (path, text) = read_task_file(pid, tid, "sched")?;
        Self::parse(&text).map_err(|what| TaskFileError::Format { path, what })
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
        let expected = ProcSched {
            vruntime: 258_601_655,
            sum_exec_runtime: 842_882,
            nr_migrations: 3,
            nr_switches: 12,
            nr_voluntary_switches: 7,
            nr_involuntary_switches: 5,
            load_weight: 1_048_576,
            slice: Some(1_400_000),
            deadline: None,
        };
        assert_eq!(s, expected);
        assert_eq!(s.weight(), 1024);
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
        let tid = crate::gettid();
        let before = SchedStat::read(pid, tid).unwrap();
        let sched = ProcSched::read(pid, tid).unwrap();
        let after = SchedStat::read(pid, tid).unwrap();
        assert!(before.run_ns <= sched.sum_exec_runtime);
        assert!(sched.sum_exec_runtime <= after.run_ns);
        assert!(matches!(
            SchedStat::read(pid, 4_194_305),
            Err(TaskFileError::NoSuchThread { .. })
        ));
    }
}
