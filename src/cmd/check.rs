//! `kvmscope check`: one line per capability kvmscope needs and what this host offers;
//! exit 0 when the live features can run, non-zero with the reasons otherwise.

use std::process::ExitCode;

use probes::host::{check_host, Status};

use crate::cli::CheckArgs;

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let check = check_host();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&check)?);
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
