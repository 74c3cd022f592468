//! `kvmscope vmm`: run the bundled VMM until `--duration` or Ctrl-C, then print its
//! summary. A thin front over the `vmm` crate: flags become a [`vmm::Scenario`].

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::VmmArgs;

pub fn run(args: VmmArgs) -> anyhow::Result<ExitCode> {
    let scenario = scenario_from_args(&args)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("cannot install the Ctrl-C handler")?;
    }

    let running = vmm::start(&scenario).context("cannot start the VMM")?;
    let vcpus = running.vcpus();
    eprintln!(
        "kvmscope vmm: pid {}, {} VMs, {} vCPUs, KVM {} (guest code {}): {}",
        running.pid(),
        scenario.vms.len(),
        vcpus.len(),
        running.flavour(),
        running.guest_execution(),
        vcpus
            .iter()
            .map(|v| format!("{}={}", v.thread, v.tid))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if args.duration.is_none() {
        eprintln!("kvmscope vmm: running until Ctrl-C");
    }

    let deadline = args.duration.map(|d| Instant::now() + d);
    loop {
        if interrupted.load(Ordering::Relaxed) || running.failure().is_some() {
            break;
        }
        let now = Instant::now();
        let step = match deadline {
            Some(d) if now >= d => break,
            Some(d) => (d - now).min(Duration::from_millis(50)),
            None => Duration::from_millis(50),
        };
        std::thread::sleep(step);
    }

    // A crashed guest's error already names the VM, vCPU and exit.
    let summary = running.stop()?;
    if args.json {
        super::print_stdout(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
    } else {
        super::print_stdout(&summary.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The scenario the flags describe: a file, or `--vms × --vcpus` of one workload, with
/// `--pin`, `--nice`, `--migrate-every`, `--exit-every` and `--gap-threshold-us` on top.
fn scenario_from_args(args: &VmmArgs) -> anyhow::Result<vmm::Scenario> {
    let mut scenario = match &args.scenario {
        Some(path) => vmm::Scenario::from_toml_file(path)?,
        None => vmm::Scenario::uniform(args.vms, args.vcpus, args.workload.0),
    };
    // The knobs are set as given; `Scenario::plan` below is their one validator, for the
    // command line and scenario files alike.
    if let Some(k) = args.exit_every {
        scenario.set_exit_every(k);
    }
    scenario.set_sleepy(args.burst_us, args.sleep_us);
    if let Some(us) = args.gap_threshold_us {
        scenario.gap_threshold_us = us;
    }
    if let Some(ms) = args.migrate_every {
        scenario.migrate_every_ms = Some(ms);
    }
    for spec in &args.pin {
        scenario.apply_pin_spec(spec)?;
    }
    for spec in &args.nice {
        scenario.apply_nice_spec(spec)?;
    }
    // Checks everything, including combinations (e.g. a threshold out of range).
    scenario.plan()?;
    Ok(scenario)
}
