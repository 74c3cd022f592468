//! Attaching the loaded programs, each group with its fallback: without `sched_switch`
//! nothing works (an error), any other program missing is a warning naming the feature lost;
//! `kvm:*` programs only where tracefs gave a usable layout, `csd:*` all or none.

use aya::{Btf, Ebpf};

use super::options::{ProbeError, ProbeOptions};
use crate::programs::{attach, CSD, KVM, SCHED};
use crate::tracefs;

/// What [`attach_programs`] attached.
pub(super) struct Attached {
    /// `category:event` of each attached program.
    pub(super) events: Vec<&'static str>,
    /// Address of KVM's `__loaded_vmcs_clear`, when the `csd:*` programs are attached.
    pub(super) vmclear_func: Option<u64>,
}

/// Attaches every program this host supports. `kvm_usable` says, per kvm program, whether
/// this kernel's tracefs layout is usable, or why not; each lost feature becomes one line of
/// `warnings`.
pub(super) fn attach_programs(
    ebpf: &mut Ebpf,
    btf: &Btf,
    opts: &ProbeOptions,
    kvm_usable: Vec<(&'static str, Result<(), String>)>,
    warnings: &mut Vec<String>,
) -> Result<Attached, ProbeError> {
    let kvm_usable: Vec<&'static str> = kvm_usable
        .into_iter()
        .filter_map(|(program, usable)| match usable {
            Ok(()) => Some(program),
            Err(why) => {
                let feature = KVM
                    .iter()
                    .find(|s| s.program == program)
                    .map_or("", |s| s.feature);
                warnings.push(format!("{feature} lost: {why}"));
                None
            }
        })
        .collect();

    let mut events = Vec::new();
    for spec in &SCHED {
        match attach(ebpf, spec, btf) {
            Ok(()) => events.push(spec.event),
            Err(failure) if spec.program == "handle_sched_switch" => {
                return Err(ProbeError::Program(failure));
            }
            Err(reason) => warnings.push(format!("{} lost: {reason}", spec.feature)),
        }
    }
    for spec in KVM.iter().filter(|s| kvm_usable.contains(&s.program)) {
        match attach(ebpf, spec, btf) {
            Ok(()) => events.push(spec.event),
            Err(reason) => warnings.push(format!("{} lost: {reason}", spec.feature)),
        }
    }
    let mut vmclear_func = None;
    if opts.cross_calls {
        let mut csd_failed = None;
        for spec in &CSD {
            match attach(ebpf, spec, btf) {
                Ok(()) => events.push(spec.event),
                Err(reason) => csd_failed = csd_failed.or(Some(reason)),
            }
        }
        if let Some(reason) = csd_failed {
            warnings.push(format!("{} lost: {reason}", CSD[0].feature));
        } else {
            vmclear_func = hostfacts::system::kallsyms()
                .and_then(|k| tracefs::kallsyms_lookup(&k, "__loaded_vmcs_clear"));
        }
    }
    Ok(Attached {
        events,
        vmclear_func,
    })
}
