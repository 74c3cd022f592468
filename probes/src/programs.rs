//! The programs of kvmscope's eBPF object: which tracepoint each attaches to, what is lost
//! without it, which build of the object suits this kernel (fallbacks decided from BTF), and
//! how a program that fails to load is reported: one line naming the program, the kernel
//! release and the verifier's decisive line, with the whole log kept beside it.

use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Btf, Ebpf};
use aya_obj::btf::BtfKind;
use serde::Serialize;

/// The object built with task-local storage for the waker (`build.rs`).
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kvmscope.bpf.o"));
/// The same object with the waker in an LRU hash (`-DKS_WAKER_HASH`).
pub(crate) static OBJECT_WAKER_HASH: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kvmscope-waker-hash.bpf.o"));

#[derive(Clone, Copy, Debug)]
pub(crate) enum Hook {
    /// `tp_btf/<name>` (vmlinux tracepoints).
    Btf(&'static str),
    /// Classic `tracepoint/<category>/<name>` (works for module tracepoints).
    Classic(&'static str, &'static str),
}

pub(crate) struct Spec {
    pub(crate) program: &'static str,
    /// `category:event`, as listed by [`Probes::attached`].
    pub(crate) event: &'static str,
    pub(crate) hook: Hook,
    /// What users lose when it cannot be attached.
    pub(crate) feature: &'static str,
}

pub(crate) const SCHED: [Spec; 5] = [
    Spec {
        program: "handle_sched_switch",
        event: "sched:sched_switch",
        hook: Hook::Btf("sched_switch"),
        feature: "context switches",
    },
    Spec {
        program: "handle_sched_waking",
        event: "sched:sched_waking",
        hook: Hook::Btf("sched_waking"),
        feature: "who woke a thread on remote wakeups",
    },
    Spec {
        program: "handle_sched_wakeup",
        event: "sched:sched_wakeup",
        hook: Hook::Btf("sched_wakeup"),
        feature: "wakeup events",
    },
    Spec {
        program: "handle_sched_migrate_task",
        event: "sched:sched_migrate_task",
        hook: Hook::Btf("sched_migrate_task"),
        feature: "migration events",
    },
    Spec {
        program: "handle_sched_process_exit",
        event: "sched:sched_process_exit",
        hook: Hook::Btf("sched_process_exit"),
        feature: "thread exit events",
    },
];

pub(crate) const KVM: [Spec; 4] = [
    Spec {
        program: "handle_kvm_entry",
        event: "kvm:kvm_entry",
        hook: Hook::Classic("kvm", "kvm_entry"),
        feature: "guest entry events",
    },
    Spec {
        program: "handle_kvm_exit",
        event: "kvm:kvm_exit",
        hook: Hook::Classic("kvm", "kvm_exit"),
        feature: "guest exit reasons",
    },
    Spec {
        program: "handle_kvm_userspace_exit",
        event: "kvm:kvm_userspace_exit",
        hook: Hook::Classic("kvm", "kvm_userspace_exit"),
        feature: "exits to the VMM",
    },
    Spec {
        program: "handle_kvm_pio",
        event: "kvm:kvm_pio",
        hook: Hook::Classic("kvm", "kvm_pio"),
        feature: "port I/O exit details",
    },
];

pub(crate) const CSD: [Spec; 3] = [
    Spec {
        program: "handle_csd_queue_cpu",
        event: "csd:csd_queue_cpu",
        hook: Hook::Btf("csd_queue_cpu"),
        feature: "cross-CPU call (VMCLEAR IPI) attribution",
    },
    Spec {
        program: "handle_csd_function_entry",
        event: "csd:csd_function_entry",
        hook: Hook::Btf("csd_function_entry"),
        feature: "cross-CPU call (VMCLEAR IPI) attribution",
    },
    Spec {
        program: "handle_csd_function_exit",
        event: "csd:csd_function_exit",
        hook: Hook::Btf("csd_function_exit"),
        feature: "cross-CPU call (VMCLEAR IPI) attribution",
    },
];

/// Programs whose runs the kernel skips cost no record: only an interrupt can run one again on
/// its CPU while it runs, and it sends nothing for a run in an interrupt
/// (`handle_csd_queue_cpu` in `ebpf/kvmscope.bpf.c`). Their skipped runs are not lost events.
pub(crate) const SKIPS_COST_NOTHING: [&str; 1] = ["csd:csd_queue_cpu"];

/// A way the probes work differently on this kernel, and what it costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fallback {
    /// The programs concerned.
    pub programs: &'static str,
    /// What is used instead, and why.
    pub detail: String,
    /// The figure lost, or "none" and the price.
    pub lost: &'static str,
}

/// The waker fallback: task-local storage for tracing programs came with Linux 5.12 (its
/// helper, `bpf_task_storage_get`, with 5.11, for LSM programs only).
pub(crate) fn waker_hash_fallback(why: &str) -> Fallback {
    Fallback {
        programs: "handle_sched_waking, handle_sched_wakeup",
        detail: format!("the waker goes from sched_waking to sched_wakeup through an LRU hash keyed by tid ({why})"),
        lost: "none (each tracked wakeup costs a hash lookup more)",
    }
}

/// The object for this kernel: task-local storage where BTF has its helper, else the
/// LRU-hash build. The loader also falls back when the `wakers` map cannot be created (5.11).
pub(crate) fn object_for(btf: &Btf) -> (&'static [u8], Vec<Fallback>) {
    if btf
        .id_by_type_name_kind("bpf_task_storage_get", BtfKind::Func)
        .is_ok()
    {
        (OBJECT, Vec::new())
    } else {
        let why = "no bpf_task_storage_get in this kernel's BTF";
        (OBJECT_WAKER_HASH, vec![waker_hash_fallback(why)])
    }
}

/// Why one program could not be loaded or attached.
#[derive(Clone, Debug)]
pub struct ProgramFailure {
    /// One line: program, event, kernel release and the decisive reason.
    pub line: String,
    /// The verifier's whole log, when the verifier rejected it.
    pub verifier_log: Option<String>,
}

impl std::fmt::Display for ProgramFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// The line of a verifier log that says why it refused: the last one that is not a
/// statistic. Earlier lines can be informational (6.1 begins with `reg type unsupported for
/// arg#0 function handle_sched_switch`, which is not the reason).
pub fn decisive_line(log: &str) -> &str {
    log.lines()
        .map(str::trim)
        .rev()
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with("max_states_per_insn")
        })
        .unwrap_or("(empty verifier log)")
}

fn failure(spec: &Spec, what: &str, e: ProgramError) -> ProgramFailure {
    let release = crate::host::kernel_release();
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let line = format!(
                "{} ({}) cannot be {what} on Linux {release}: {} (verifier: {io_error})",
                spec.program,
                spec.event,
                decisive_line(&log)
            );
            // The whole log goes to the logger at the one place every rejection passes
            // (`--log-file`); callers keep the line.
            log::warn!("{line}; the verifier's whole log:\n{log}");
            ProgramFailure {
                line,
                verifier_log: Some(log),
            }
        }
        e => ProgramFailure {
            line: format!(
                "{} ({}) cannot be {what} on Linux {release}: {e}",
                spec.program, spec.event
            ),
            verifier_log: None,
        },
    }
}

pub(crate) fn attach(ebpf: &mut Ebpf, spec: &Spec, btf: &Btf) -> Result<(), ProgramFailure> {
    let simple = |line: String| ProgramFailure {
        line,
        verifier_log: None,
    };
    let program = ebpf.program_mut(spec.program).ok_or_else(|| {
        simple(format!(
            "program {} missing from the eBPF object",
            spec.program
        ))
    })?;
    match spec.hook {
        Hook::Btf(name) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(|e| simple(format!("{e}")))?;
            p.load(name, btf).map_err(|e| failure(spec, "loaded", e))?;
            p.attach().map_err(|e| failure(spec, "attached", e))?;
        }
        Hook::Classic(category, name) => {
            let p: &mut TracePoint = program.try_into().map_err(|e| simple(format!("{e}")))?;
            p.load().map_err(|e| failure(spec, "loaded", e))?;
            p.attach(category, name)
                .map_err(|e| failure(spec, "attached", e))?;
        }
    }
    Ok(())
}

/// What `kvmscope check` says about one program.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramCheck {
    pub program: &'static str,
    pub event: &'static str,
    /// Loaded and attached on this kernel.
    pub loads: bool,
    /// Why not (the one-line failure), or the fallback in use.
    pub detail: String,
    /// The full verifier log of a rejected program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier_log: Option<String>,
    /// What users lose without it.
    pub feature: &'static str,
}

/// Every program of the object, loaded and attached one by one (then detached).
pub fn check_programs() -> Result<Vec<ProgramCheck>, crate::loader::ProbeError> {
    let crate::loader::Loaded {
        mut ebpf,
        btf,
        fallbacks,
        kvm_usable,
        ..
    } = crate::loader::load_ebpf(&crate::loader::ProbeOptions::default(), None)?;
    let mut checks = Vec::new();
    for spec in SCHED.iter().chain(KVM.iter()).chain(CSD.iter()) {
        let fallback = fallbacks
            .iter()
            .find(|f| f.programs.contains(spec.program))
            .map(|f| format!("fallback: {}; lost: {}", f.detail, f.lost));
        let result = match (
            &spec.hook,
            kvm_usable.iter().find(|(p, _)| *p == spec.program),
        ) {
            (Hook::Classic(..), Some((_, Err(why)))) => Err(ProgramFailure {
                line: why.clone(),
                verifier_log: None,
            }),
            _ => attach(&mut ebpf, spec, &btf),
        };
        checks.push(match result {
            Ok(()) => ProgramCheck {
                program: spec.program,
                event: spec.event,
                loads: true,
                detail: fallback.unwrap_or_else(|| "loads and attaches".into()),
                verifier_log: None,
                feature: spec.feature,
            },
            Err(f) => ProgramCheck {
                program: spec.program,
                event: spec.event,
                loads: false,
                detail: f.line,
                verifier_log: f.verifier_log,
                feature: spec.feature,
            },
        });
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decisive_line_is_the_last_that_is_not_a_statistic() {
        // The shape of 6.1's log for the unbounded switch-ring index.
        let log = "reg type unsupported for arg#0 function handle_sched_switch#5\n\
                   0: R1=ctx(off=0,imm=0) R10=fp0\n\
                   ; int handle_sched_switch(unsigned long long *ctx)\n\
                   123: (0f) r1 += r2\n\
                   R2 unbounded memory access, make sure to bounds check any such access\n\
                   processed 412 insns (limit 1000000) max_states_per_insn 1 total_states 30\n\n";
        assert_eq!(
            decisive_line(log),
            "R2 unbounded memory access, make sure to bounds check any such access"
        );
        assert_eq!(decisive_line(""), "(empty verifier log)");
    }

    #[test]
    fn both_builds_are_embedded_and_differ_in_the_waker_map() {
        assert_ne!(OBJECT, OBJECT_WAKER_HASH);
        let btf_here = Btf::from_sys_fs();
        if let Ok(btf) = btf_here {
            // This machine (6.18) has task-local storage for tracing programs.
            let (object, fallbacks) = object_for(&btf);
            assert_eq!(object.as_ptr(), OBJECT.as_ptr());
            assert!(fallbacks.is_empty());
        }
    }

    /// Records what `failure` logs (this test binary's only logger).
    struct Capture(std::sync::Mutex<Vec<(log::Level, String)>>);
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }
    static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

    #[test]
    fn a_rejection_keeps_one_line_and_logs_the_whole_verifier_log() {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        let log = "reg type unsupported for arg#0 function handle_sched_switch#5\n\
                   R2 unbounded memory access, make sure to bounds check any such access\n\
                   processed 120 insns (limit 1000000)";
        let e = ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            verifier_log: aya_obj::VerifierLog::new(log.into()),
        };
        let f = failure(&SCHED[0], "loaded", e);
        assert!(!f.line.contains('\n'), "{}", f.line);
        assert!(f.line.contains(SCHED[0].program) && f.line.contains("R2 unbounded memory access"));
        assert_eq!(f.verifier_log.as_deref(), Some(log));
        let records = CAPTURE.0.lock().unwrap();
        let (level, text) = records
            .iter()
            .find(|(_, t)| t.contains(SCHED[0].program))
            .expect("the rejection was logged");
        assert_eq!(*level, log::Level::Warn);
        assert!(text.ends_with(log), "the whole log: {text}");
    }
}
