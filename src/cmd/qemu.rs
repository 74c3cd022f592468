//! `kvmscope qemu list`: QEMU VMs using KVM, with each vCPU's host thread and how it was
//! found (QMP, thread names, kvm_entry ids).

use std::process::ExitCode;

use anyhow::Context;
use probes::qemu::{discover, MapMethod, QemuVm};

use crate::cli::{QemuArgs, QemuCommand};

pub fn run(args: QemuArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QemuCommand::List { json, qmp } => {
            let vms = discover(qmp.as_deref()).context("cannot list QEMU VMs")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print_table(&vms);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_table(vms: &[QemuVm]) {
    if vms.is_empty() {
        println!("no QEMU VMs using KVM found");
        return;
    }
    let name_w = vms.iter().map(|vm| vm.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:>8}  {:<name_w$}  {:>5}  {:<12}  vCPU threads (index:tid)",
        "PID", "NAME", "VCPUS", "MAPPED BY"
    );
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
        println!(
            "{:>8}  {:<name_w$}  {:>5}  {:<12}  {threads}",
            vm.pid, vm.name, vm.vcpu_fds, vm.method
        );
        match (&vm.qmp_error, vm.method) {
            (Some(why), MapMethod::None) => println!(
                "{:>8}  not mapped: {why}; threads not named `CPU n/KVM` (start QEMU with \
                 -qmp unix:PATH,server=on,wait=off or -name NAME,debug-threads=on)",
                ""
            ),
            (Some(why), _) => println!("{:>8}  QMP not used: {why}", ""),
            (None, _) => {}
        }
    }
}
