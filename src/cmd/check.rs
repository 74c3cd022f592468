//! `kvmscope check`: one line per capability kvmscope needs and what this host offers, then
//! one line per eBPF program: whether it loads and attaches on this kernel, and which
//! fallback it uses; exit 0 when the live features can run, non-zero with the reasons
//! otherwise. Last, which of the two modes this host allows and what each shows.

use std::fmt::Write as _;
use std::process::ExitCode;

use probes::host::{check_host, may_load_bpf, Status};
use probes::programs::{check_programs, ProgramCheck};

use crate::cli::CheckArgs;

/// What each mode shows (for `check`'s closing lines).
const BPF_SHOWS: &str = "every view: switches, wakeups, migrations with their pCPUs, \
    KVM exits, pCPU lanes, resume latency split by placement, wait culprits";
const COUNTERS_SHOWS: &str = "run, wait, shares, fairness, switches, migrations, vruntime and \
    lag at sample points (per vCPU and per VM), from schedstat, perf and /proc every \
    --sample-every; no lanes, culprits or resume latency";

/// One mode's verdict on this host.
#[derive(serde::Serialize)]
struct ModeCheck {
    available: bool,
    detail: String,
    shows: &'static str,
}

/// Whether counters mode can read this host's per-thread counters, tried on this thread.
fn counters_mode_check() -> ModeCheck {
    use probes::counters::{ProcSched, SchedStat, ThreadCounters};
    let pid = std::process::id();
    let tid = hostfacts::gettid();
    let mut missing = Vec::new();
    if let Err(e) = SchedStat::read(pid, tid) {
        missing.push(format!("schedstat: {e}"));
    }
    if let Err(e) = ProcSched::read(pid, tid) {
        missing.push(format!("the sched file (CONFIG_SCHED_DEBUG): {e}"));
    }
    let perf = match ThreadCounters::open(tid) {
        Ok(_) => "perf task-clock too".to_string(),
        Err(e) => format!("without perf task-clock ({e}); schedstat gives the same run time"),
    };
    ModeCheck {
        available: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("schedstat and /proc sched readable, {perf}")
        } else {
            missing.join("; ")
        },
        shows: COUNTERS_SHOWS,
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut check = check_host();
    // Loading needs what the host lines check first; without it, say why there is no list.
    let programs: Result<Vec<ProgramCheck>, String> = if !check.live_ok {
        Err("not loaded: live tracing cannot run here (see above)".into())
    } else if !may_load_bpf() {
        Err("not loaded: needs root or CAP_BPF and CAP_PERFMON".into())
    } else {
        // The whole chain: the loader's error and what the kernel said under it.
        check_programs().map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    };
    match &programs {
        Ok(list) => {
            if let Some(p) = list
                .iter()
                .find(|p| p.program == "handle_sched_switch" && !p.loads)
            {
                check.live_ok = false;
                check.reasons.push(p.detail.clone());
            }
        }
        Err(why) if check.live_ok => {
            check.live_ok = false;
            check.reasons.push(format!("the eBPF object: {why}"));
        }
        Err(_) => {}
    }
    let bpf_mode = ModeCheck {
        available: check.live_ok,
        detail: if check.live_ok {
            "the probes load here".to_string()
        } else {
            check.reasons.join("; ")
        },
        shows: BPF_SHOWS,
    };
    let counters_mode = counters_mode_check();
    let mut out = String::new();
    if args.json {
        let mut doc = serde_json::to_value(&check)?;
        doc["modes"] = serde_json::json!({ "bpf": bpf_mode, "counters": counters_mode });
        doc["programs"] = match &programs {
            Ok(list) => serde_json::to_value(list)?,
            Err(why) => serde_json::Value::String(why.clone()),
        };
        out = serde_json::to_string_pretty(&doc)? + "\n";
    } else {
        let h = &check.host;
        writeln!(
            out,
            "kvmscope check: host {} (Linux {}, {} CPUs, KVM {}, scheduler {})",
            h.hostname, h.kernel, h.cpus, h.kvm_flavour, h.scheduler
        )?;
        let width = check.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for item in &check.items {
            // Upper case for what blocks live tracing, so it stands out.
            let mark = match item.status {
                Status::Missing | Status::Unknown if item.required => {
                    item.status.as_str().to_uppercase()
                }
                s => s.as_str().to_string(),
            };
            writeln!(out, "{mark:<8} {:<width$}  {}", item.name, item.detail)?;
        }
        match &programs {
            Ok(list) => {
                let width = list.iter().map(|p| p.program.len()).max().unwrap_or(0);
                for p in list {
                    let mark = if p.loads { "ok" } else { "missing" };
                    writeln!(out, "{mark:<8} {:<width$}  {}", p.program, p.detail)?;
                }
            }
            Err(why) => writeln!(out, "{:<8} {:<width$}  {why}", "unknown", "eBPF programs")?,
        }
        if check.live_ok {
            writeln!(out, "live tracing: can run here")?;
        } else {
            writeln!(out, "live tracing: cannot run here")?;
        }
        for (name, mode) in [("bpf", &bpf_mode), ("counters", &counters_mode)] {
            let verdict = if mode.available {
                "available"
            } else {
                "NOT AVAILABLE"
            };
            writeln!(out, "mode {name}: {verdict}: {}", mode.detail)?;
            writeln!(out, "  shows {}", mode.shows)?;
        }
        if !check.live_ok && counters_mode.available {
            writeln!(
                out,
                "live commands start in counters mode here (as with --no-bpf)"
            )?;
        }
    }
    super::print_stdout(&out)?;
    if check.live_ok {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "kvmscope: live tracing cannot run here: {}",
            check.reasons.join("; ")
        );
        Ok(ExitCode::FAILURE)
    }
}
