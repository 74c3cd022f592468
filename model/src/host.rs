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
    /// "EEVDF" or "CFS" (told from the kernel's BTF: `sched_entity` has `deadline` on EEVDF),
    /// "unknown" without BTF.
    pub scheduler: String,
    pub cpus: u32,
    pub kvm_flavour: KvmFlavour,
    /// Always "CLOCK_MONOTONIC" today; stored so a reader can refuse a clock it does not know.
    pub clock: String,
    /// Host TSC rate, if known (the bundled VMM measures it).
    pub tsc_hz: Option<f64>,
    /// Whether the kernel has the `csd:*` tracepoints (Linux 6.4 on), from its BTF; `None`
    /// when not known (no BTF, or a recording made before this was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csd_tracepoints: Option<bool>,
    /// The kernel's tick rate (`CONFIG_HZ`): from its build configuration, else measured from
    /// the jiffies count. `None` when neither could be read, or in a recording made before
    /// this was stored; `simulate` then uses each policy's default tick and says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hz: Option<u32>,
}

impl HostInfo {
    /// Why VMCLEAR IPIs cannot be attributed on this host, if they cannot. Only VT-x has
    /// them (a vCPU loaded on another pCPU has its VMCS cleared on the old one first), and
    /// the `csd:*` tracepoints that show them arrived in Linux 6.4. Decided by whether the
    /// kernel has them, not by its release.
    pub fn vmclear_unattributable(&self) -> Option<&'static str> {
        (self.kvm_flavour == KvmFlavour::Vmx && self.csd_tracepoints == Some(false)).then_some(
            "VMCLEAR attribution needs Linux 6.4 (csd:* tracepoints); everything else works",
        )
    }
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
    fn vmclear_attribution_needs_vtx_and_the_csd_tracepoints() {
        let host = |csd: Option<bool>, kvm: KvmFlavour| HostInfo {
            // The release is not looked at: a backport may have csd:* on an older one.
            kernel: "6.1.0-50-amd64".into(),
            kvm_flavour: kvm,
            csd_tracepoints: csd,
            ..HostInfo::default()
        };
        assert!(host(Some(false), KvmFlavour::Vmx)
            .vmclear_unattributable()
            .is_some_and(|w| w.contains("Linux 6.4")));
        assert_eq!(
            host(Some(true), KvmFlavour::Vmx).vmclear_unattributable(),
            None
        );
        assert_eq!(
            host(Some(false), KvmFlavour::Svm).vmclear_unattributable(),
            None
        );
        assert_eq!(host(None, KvmFlavour::Vmx).vmclear_unattributable(), None);
        // A recording from before the field existed reads as "not known".
        let old: HostInfo = serde_json::from_str(
            r#"{"hostname":"h","kernel":"6.1.0","scheduler":"CFS","cpus":2,"kvm_flavour":"vmx","clock":"CLOCK_MONOTONIC","tsc_hz":null}"#,
        )
        .unwrap();
        assert_eq!(old.csd_tracepoints, None);
        assert_eq!(old.hz, None);
    }

    #[test]
    fn hz_round_trips_and_is_left_out_when_unknown() {
        let host = HostInfo {
            hz: Some(250),
            ..HostInfo::default()
        };
        let json = serde_json::to_string(&host).unwrap();
        assert!(json.contains(r#""hz":250"#), "{json}");
        assert_eq!(serde_json::from_str::<HostInfo>(&json).unwrap(), host);
        let unknown = serde_json::to_string(&HostInfo::default()).unwrap();
        assert!(!unknown.contains(r#""hz""#), "{unknown}");
    }
}
