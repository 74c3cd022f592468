//! The bundled VMM's naming contract, defined once for both sides: the VMM names its vCPU
//! threads `vm<V>-vcpu<C>` and publishes its VM names ([`VmNames`]) in a memfd named
//! [`VM_NAMES_MEMFD`]; `--pid` recognises the threads by their names and reads the VMs' names
//! from that memfd, so a VM is called what its scenario calls it whether kvmscope started the
//! VMM (`--demo`, `--scenario`) or watches one started elsewhere (`--pid`).

use std::collections::BTreeMap;
use std::fmt;

/// The name of the memfd in which the bundled VMM publishes its VM names. A watcher finds it
/// among the VMM's descriptors (`/proc/<pid>/fd/N` -> `/memfd:kvmscope-vm-names (deleted)`);
/// it lives exactly as long as the VMM, so it is never stale and never another pid's.
pub const VM_NAMES_MEMFD: &str = "kvmscope-vm-names";

/// A bundled-VMM vCPU thread's name: VM index `vm`, vCPU index `vcpu`. Fits the kernel's
/// 15-byte comm for any index below 10,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuThreadName {
    pub vm: u32,
    pub vcpu: u32,
}

impl VcpuThreadName {
    /// `vm<V>-vcpu<C>` with decimal indices, nothing else.
    pub fn parse(comm: &str) -> Option<VcpuThreadName> {
        let rest = comm.strip_prefix("vm")?;
        let (vm, vcpu) = rest.split_once("-vcpu")?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(vm) || !all_digits(vcpu) {
            return None;
        }
        Some(VcpuThreadName {
            vm: vm.parse().ok()?,
            vcpu: vcpu.parse().ok()?,
        })
    }

    /// The VM's default name, `vm<V>`.
    pub fn vm_name(self) -> String {
        format!("vm{}", self.vm)
    }
}

impl fmt::Display for VcpuThreadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vm{}-vcpu{}", self.vm, self.vcpu)
    }
}

/// The bundled VMM's VM names by VM index, as published in [`VM_NAMES_MEMFD`]: one
/// `<index>\t<name>` line per VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmNames(BTreeMap<u32, String>);

impl VmNames {
    pub fn new(names: impl IntoIterator<Item = (u32, String)>) -> Self {
        VmNames(names.into_iter().collect())
    }

    /// The published text. A name is one line without tabs (the scenario refuses others).
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|(v, name)| format!("{v}\t{name}\n"))
            .collect()
    }

    /// Reads published text; a line that is not `<index>\t<name>` is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut names = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let parsed = line
                .split_once('\t')
                .and_then(|(v, name)| Some((v.parse().ok()?, name)))
                .filter(|(_, name)| !name.is_empty());
            let Some((v, name)) = parsed else {
                return Err(format!("not `<index>\\t<name>`: {line:?}"));
            };
            names.insert(v, name.to_string());
        }
        Ok(VmNames(names))
    }

    /// The name of the VM a vCPU thread belongs to: the published one, else `vm<V>`.
    pub fn vm_of(&self, thread: VcpuThreadName) -> String {
        self.0
            .get(&thread.vm)
            .cloned()
            .unwrap_or_else(|| thread.vm_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_round_trip_and_fall_back_to_the_index() {
        let names = VmNames::new([(0, "batch".to_string()), (1, "web server".to_string())]);
        assert_eq!(names.to_text(), "0\tbatch\n1\tweb server\n");
        assert_eq!(VmNames::parse(&names.to_text()), Ok(names.clone()));
        let thread = |vm| VcpuThreadName { vm, vcpu: 0 };
        assert_eq!(names.vm_of(thread(1)), "web server");
        assert_eq!(names.vm_of(thread(2)), "vm2");
        assert!(VmNames::parse("0 batch\n").is_err());
        assert!(VmNames::parse("x\tbatch\n").is_err());
        assert!(VmNames::parse("0\t\n").is_err());
    }

    #[test]
    fn names_round_trip_and_others_are_refused() {
        let n = VcpuThreadName { vm: 12, vcpu: 30 };
        assert_eq!(n.to_string(), "vm12-vcpu30");
        assert_eq!(VcpuThreadName::parse("vm12-vcpu30"), Some(n));
        assert_eq!(VcpuThreadName::parse("vm0-vcpu1").unwrap().vm_name(), "vm0");
        for other in [
            "vm-vcpu1",
            "vm0-vcpu",
            "vm0-vcpu1x",
            "CPU 0/KVM",
            "vmx-vcpu0",
        ] {
            assert_eq!(VcpuThreadName::parse(other), None, "{other}");
        }
        // The longest index the VMM allows still fits a comm (15 bytes).
        assert!(
            VcpuThreadName {
                vm: 9999,
                vcpu: 9999
            }
            .to_string()
            .len()
                <= 15
        );
    }
}
