//! `kvmscope qemu list`: QEMU VMs using KVM, with each vCPU's host thread and how it was
//! found (QMP, thread names, kvm_entry ids).
//!
//! VMs that QMP and thread names cannot map are watched for up to [`KVM_ENTRY_WATCH`] on
//! hosts where `kvm:kvm_entry` fires (VT-x/AMD-V) when the probes can be loaded: the vCPU id
//! each thread's `kvm_entry` events carry maps it (method `kvm_entry`). Where that cannot
//! work (PVM, no privileges, vCPUs that never entered the guest meanwhile), each such VM
//! says why in `kvm_entry_error`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use probes::loader::{ProbeOptions, Probes};
use probes::qemu::{KvmEntryMapper, MapMethod, QemuMappings, QemuVm};

use crate::cli::{QemuArgs, QemuCommand};

/// How long `qemu list` watches `kvm_entry` for VMs nothing else maps. A running guest
/// enters on every timer tick; a vCPU silent for this long is idle in the host or not
/// started by its guest yet (an AP waiting for its startup IPI).
const KVM_ENTRY_WATCH: Duration = Duration::from_secs(1);

pub fn run(args: QemuArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QemuCommand::List { json, qmp } => {
            let mut mappings = QemuMappings::default();
            let mut vms = mappings
                .discover(qmp.as_deref())
                .context("cannot list QEMU VMs")?;
            if vms.iter().any(|vm| !vm.is_mapped()) {
                map_from_kvm_entry(&mut vms);
            }
            let text = if json {
                serde_json::to_string_pretty(&vms)? + "\n"
            } else {
                table(&vms)
            };
            super::print_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The third method for the VMs still unmapped: watch their threads' `kvm_entry` events, or
/// note in each VM why that is not possible here.
fn map_from_kvm_entry(vms: &mut [QemuVm]) {
    let flavour = probes::host::kvm_flavour();
    let outcome = if !flavour.fires_entry_exit() {
        Err(format!(
            "kvm_entry does not fire on this host (its KVM is {}, not VT-x/AMD-V)",
            flavour.as_str()
        ))
    } else if !probes::host::may_load_bpf() {
        Err("watching kvm_entry needs root (or CAP_BPF and CAP_PERFMON)".to_string())
    } else {
        watch_kvm_entry(vms).map_err(|e| format!("cannot watch kvm_entry: {e:#}"))
    };
    if let Err(why) = outcome {
        for vm in vms.iter_mut().filter(|vm| !vm.is_mapped()) {
            vm.kvm_entry_error = Some(why.clone());
        }
    }
}

/// Load the probes, track every thread of the unmapped VMs and map them from the vCPU ids
/// of their `kvm_entry` events, for up to [`KVM_ENTRY_WATCH`].
fn watch_kvm_entry(vms: &mut [QemuVm]) -> anyhow::Result<()> {
    let mut probes = Probes::load(ProbeOptions {
        ring_bytes: 1 << 20,
        cross_calls: false,
        ..Default::default()
    })
    .context("cannot load the eBPF probes")?;
    let mut mapper = KvmEntryMapper::default();
    for vm in vms.iter().filter(|vm| !vm.is_mapped()) {
        // A VM that exits meanwhile has no threads left to list: it simply stays unmapped.
        for (tid, _) in probes::targets::list_threads(vm.pid).unwrap_or_default() {
            probes.track(tid)?;
            mapper.watch(vm.pid, tid);
        }
    }
    let started = Instant::now();
    let mut batch = Vec::new();
    while started.elapsed() < KVM_ENTRY_WATCH {
        batch.clear();
        probes.poll(&mut batch, Duration::from_millis(100))?;
        mapper.observe(&batch);
        let all_seen = vms
            .iter()
            .filter(|vm| !vm.is_mapped())
            .all(|vm| mapper.seen_in(vm.pid).len() as u32 >= vm.vcpu_fds);
        if all_seen {
            break;
        }
    }
    let watched_ms = started.elapsed().as_millis();
    for vm in vms.iter_mut().filter(|vm| !vm.is_mapped()) {
        let seen = mapper.seen_in(vm.pid);
        if !vm.map_from_kvm_entry(&seen) {
            vm.kvm_entry_error = Some(format!(
                "in {watched_ms} ms, kvm_entry showed {} of its {} vCPUs (the others are idle \
                 or not started by the guest yet)",
                seen.len(),
                vm.vcpu_fds
            ));
        }
    }
    Ok(())
}

/// The `qemu list` table, one line per VM and notes for each VM not mapped by QMP.
fn table(vms: &[QemuVm]) -> String {
    if vms.is_empty() {
        return "no QEMU VMs using KVM found\n".to_string();
    }
    let mut out = String::new();
    let name_w = vms.iter().map(|vm| vm.name.len()).max().unwrap_or(4).max(4);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:>8}  {:<name_w$}  {:>5}  {:<12}  vCPU threads (index:tid)",
        "PID", "NAME", "VCPUS", "MAPPED BY"
    );
    let pad = "";
    for vm in vms {
        let threads = vm
            .vcpus
            .iter()
            .map(|v| match v.tid {
                Some(tid) => format!("{}:{tid}", v.index),
                None => format!("{}:?", v.index),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:>8}  {:<name_w$}  {:>5}  {:<12}  {threads}",
            vm.pid, vm.name, vm.vcpu_fds, vm.method
        );
        let qmp = vm.qmp_error.as_deref().unwrap_or("no QMP socket");
        let _ = match vm.method {
            MapMethod::None => {
                let _ = writeln!(
                    out,
                    "{pad:>8}  not mapped: {qmp}; threads not named `CPU n/KVM`"
                );
                if let Some(why) = &vm.kvm_entry_error {
                    let _ = writeln!(out, "{pad:>8}  {why}");
                }
                writeln!(
                    out,
                    "{pad:>8}  (start QEMU with -qmp unix:PATH,server=on,wait=off or -name \
                     NAME,debug-threads=on)"
                )
            }
            MapMethod::KvmEntry => writeln!(
                out,
                "{pad:>8}  mapped from the vCPU ids of kvm_entry events; QMP not used: {qmp}; \
                 threads not named `CPU n/KVM`"
            ),
            MapMethod::Qmp | MapMethod::ThreadNames => match &vm.qmp_error {
                Some(why) => writeln!(out, "{pad:>8}  QMP not used: {why}"),
                None => Ok(()),
            },
        };
    }
    out
}
