//! Facts about the host a trace was taken on, shown in headers and stored in trace files.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// "EEVDF" (Linux >= 6.6) or "CFS".
    pub scheduler: String,
    pub cpus: u32,
    /// "vmx", "svm", "pvm" or "none".
    pub kvm_flavour: String,
    /// Always "CLOCK_MONOTONIC" today; stored so a reader can refuse a clock it does not know.
    pub clock: String,
    /// Host TSC rate, if known (the bundled VMM measures it).
    pub tsc_hz: Option<f64>,
}

impl HostInfo {
    /// Why VMCLEAR IPIs cannot be attributed on this host, if they cannot. Only VT-x has
    /// them (a vCPU loaded on another pCPU has its VMCS cleared on the old one first), and
    /// the `csd:*` tracepoints that show them arrived in Linux 6.4.
    pub fn vmclear_unattributable(&self) -> Option<&'static str> {
        let (major, minor) = kernel_series(&self.kernel)?;
        (self.kvm_flavour == "vmx" && (major, minor) < (6, 4)).then_some(
            "VMCLEAR attribution needs Linux 6.4 (csd:* tracepoints); everything else works",
        )
    }
}

/// (major, minor) of a kernel release such as `6.1.0-50-amd64`; `None` if it has no
/// leading `N.M`.
pub fn kernel_series(release: &str) -> Option<(u32, u32)> {
    let mut nums = release.split(['.', '-', '+']);
    let major = nums.next()?.parse().ok()?;
    let minor = nums.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmclear_attribution_needs_vtx_and_linux_6_4() {
        let host = |kernel: &str, kvm: &str| HostInfo {
            kernel: kernel.into(),
            kvm_flavour: kvm.into(),
            ..HostInfo::default()
        };
        assert!(host("6.1.0-50-amd64", "vmx")
            .vmclear_unattributable()
            .is_some_and(|w| w.contains("Linux 6.4")));
        assert_eq!(
            host("6.12.117+deb12-amd64", "vmx").vmclear_unattributable(),
            None
        );
        assert_eq!(host("6.4.0", "vmx").vmclear_unattributable(), None);
        assert_eq!(host("6.1.0-50-amd64", "svm").vmclear_unattributable(), None);
        assert_eq!(host("unknown", "vmx").vmclear_unattributable(), None);
        assert_eq!(kernel_series("6.12.117+deb12-amd64"), Some((6, 12)));
    }
}
