//! `kvmscope check`: one line per capability kvmscope needs and what this host offers, then
//! one line per eBPF program: whether it loads and attaches on this kernel, and which
//! fallback it uses; exit 0 when the live features can run, non-zero with the reasons
//! otherwise.

use std::process::ExitCode;

use probes::host::{check_host, may_load_bpf, Status};
use probes::programs::{check_programs, ProgramCheck};

use crate::cli::CheckArgs;

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut check = check_host();
    // Loading needs what the host lines check first; without it, say why there is no list.
    let programs: Result<Vec<ProgramCheck>, String> = if !check.live_ok {
        Err("not loaded: live tracing cannot run here (see above)".into())
    } else if !may_load_bpf() {
        Err("not loaded: needs root or CAP_BPF and CAP_PERFMON".into())
    } else {
        check_programs().map_err(|e| e.to_string())
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
    if args.json {
        let mut doc = serde_json::to_value(&check)?;
        doc["programs"] = match &programs {
            Ok(list) => serde_json::to_value(list)?,
            Err(why) => serde_json::Value::String(why.clone()),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let h = &check.host;
        println!(
            "kvmscope check: host {} (Linux {}, {} CPUs, KVM {}, scheduler {})",
            h.hostname, h.kernel, h.cpus, h.kvm_flavour, h.scheduler
        );
        let width = check.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        for item in &check.items {
            // Upper case for what blocks live tracing, so it stands out.
            let mark = match item.status {
                Status::Missing | Status::Unknown if item.required => {
                    item.status.as_str().to_uppercase()
                }
                s => s.as_str().to_string(),
            };
            println!("{mark:<8} {:<width$}  {}", item.name, item.detail);
        }
        match &programs {
            Ok(list) => {
                let width = list.iter().map(|p| p.program.len()).max().unwrap_or(0);
                for p in list {
                    let mark = if p.loads { "ok" } else { "missing" };
                    println!("{mark:<8} {:<width$}  {}", p.program, p.detail);
                }
            }
            Err(why) => println!("{:<8} {:<width$}  {why}", "unknown", "eBPF programs"),
        }
        if check.live_ok {
            println!("live tracing: can run here");
        } else {
            println!("live tracing: cannot run here");
        }
    }
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
