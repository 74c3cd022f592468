//! `kvmscope vmm`: run the bundled VMM until `--duration` or Ctrl-C, then print its
//! summary. A thin front over the `vmm` crate: flags become a [`vmm::Scenario`].

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::VmmArgs;

pub fn run(args: VmmArgs) -> anyhow::Result<ExitCode> {
    let scenario = scenario_from_args(&args)?;
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0 && d < 1e7) {
            bail!("invalid --duration `{d}`: expected a positive number of seconds");
        }
    }

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

    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
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
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The scenario the flags describe: a file, or `--vms × --vcpus` of one workload, with
/// `--pin`, `--nice`, `--migrate-every`, `--exit-every` and `--gap-threshold-us` on top.
fn scenario_from_args(args: &VmmArgs) -> anyhow::Result<vmm::Scenario> {
    let mut scenario = match &args.scenario {
        Some(path) => vmm::Scenario::from_toml_file(path)?,
        None => {
            let workload: vmm::Workload = args
                .workload
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid --workload: {e}"))?;
            if args.vms == 0 || args.vms > 64 {
                bail!("invalid --vms `{}`: expected 1 to 64", args.vms);
            }
            if args.vcpus == 0 || args.vcpus > vmm::guest::MAX_VCPUS_PER_VM {
                bail!(
                    "invalid --vcpus `{}`: expected 1 to {}",
                    args.vcpus,
                    vmm::guest::MAX_VCPUS_PER_VM
                );
            }
            vmm::Scenario::uniform(args.vms, args.vcpus, workload)
        }
    };
    if let Some(k) = args.exit_every {
        if k == 0 {
            bail!("invalid --exit-every `0`: expected at least 1");
        }
        scenario.set_exit_every(k);
    }
    for (flag, value, max) in [
        ("--burst-us", args.burst_us, 10_000_000),
        ("--sleep-us", args.sleep_us, vmm::scenario::MAX_SLEEP_US),
    ] {
        if let Some(v) = value {
            if v == 0 || v > max {
                bail!("invalid {flag} `{v}`: expected 1 to {max}");
            }
        }
    }
    scenario.set_sleepy(args.burst_us, args.sleep_us);
    if let Some(us) = args.gap_threshold_us {
        if us == 0 || us > 1_000_000 {
            bail!("invalid --gap-threshold-us `{us}`: expected 1 to 1000000");
        }
        scenario.gap_threshold_us = us;
    }
    if let Some(ms) = args.migrate_every {
        if ms == 0 {
            bail!("invalid --migrate-every `0`: expected at least 1 ms");
        }
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
