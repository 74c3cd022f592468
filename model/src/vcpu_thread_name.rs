//! The bundled VMM's vCPU thread-name contract, `vm<V>-vcpu<C>`: the VMM names its threads
//! with it and `--pid` recognises them by it, so both sides use this one definition.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
