//! Facts about the host a trace was taken on, shown in headers and stored in trace files.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which KVM backs `/dev/kvm`: the one decoding of the host's KVM backend, stored in trace
/// files by its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvmFlavour {
    /// Intel VT-x (`vmx` CPU flag).
    Vmx,
    /// AMD-V (`svm` CPU flag).
    Svm,
    /// PVM, a software KVM (`/sys/module/kvm_pvm`): no VMCS, kvm_entry/kvm_exit do not fire.
    Pvm,
    /// No `/dev/kvm`, or no backend kvmscope recognises.
    None,
    /// Not recorded (a synthetic stream), or a name this version does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

impl KvmFlavour {
    /// The name stored in trace files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            KvmFlavour::Vmx => "vmx",
            KvmFlavour::Svm => "svm",
            KvmFlavour::Pvm => "pvm",
            KvmFlavour::None => "none",
            KvmFlavour::Unknown => "unknown",
        }
    }

    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            KvmFlavour::Vmx => "Intel VT-x",
            KvmFlavour::Svm => "AMD-V",
            KvmFlavour::Pvm => "PVM (software KVM, /sys/module/kvm_pvm)",
            KvmFlavour::None => "no hardware or PVM backend found",
            KvmFlavour::Unknown => "not recorded",
        }
    }

    /// Whether `kvm:kvm_entry`/`kvm:kvm_exit` fire on this flavour. PVM switches to the
    /// guest on its own path and never calls them.
    pub fn fires_entry_exit(self) -> bool {
        matches!(self, KvmFlavour::Vmx | KvmFlavour::Svm)
    }
}

impl fmt::Display for KvmFlavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// "EEVDF" (Linux >= 6.6) or "CFS".
    pub scheduler: String,
    pub cpus: u32,
    pub kvm_flavour: KvmFlavour,
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
        (self.kvm_flavour == KvmFlavour::Vmx && (major, minor) < (6, 4)).then_some(
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
    fn flavour_names_round_trip_and_unknown_names_read() {
        for f in [
            KvmFlavour::Vmx,
            KvmFlavour::Svm,
            KvmFlavour::Pvm,
            KvmFlavour::None,
        ] {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert_eq!(serde_json::from_str::<KvmFlavour>(&json).unwrap(), f);
        }
        assert_eq!(
            serde_json::from_str::<KvmFlavour>("\"tdx\"").unwrap(),
            KvmFlavour::Unknown
        );
    }

    #[test]
    fn vmclear_attribution_needs_vtx_and_linux_6_4() {
        let host = |kernel: &str, kvm: KvmFlavour| HostInfo {
            kernel: kernel.into(),
            kvm_flavour: kvm,
            ..HostInfo::default()
        };
        assert!(host("6.1.0-50-amd64", KvmFlavour::Vmx)
            .vmclear_unattributable()
            .is_some_and(|w| w.contains("Linux 6.4")));
        assert_eq!(
            host("6.12.117+deb12-amd64", KvmFlavour::Vmx).vmclear_unattributable(),
            None
        );
        assert_eq!(
            host("6.4.0", KvmFlavour::Vmx).vmclear_unattributable(),
            None
        );
        assert_eq!(
            host("6.1.0-50-amd64", KvmFlavour::Svm).vmclear_unattributable(),
            None
        );
        assert_eq!(
            host("unknown", KvmFlavour::Vmx).vmclear_unattributable(),
            None
        );
        assert_eq!(kernel_series("6.12.117+deb12-amd64"), Some((6, 12)));
    }
}
